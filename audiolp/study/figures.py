"""Figures rebuilt from results records only (never by hand)."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are files; no display needed (papermill, CI)
import matplotlib.pyplot as plt  # noqa: E402


def moving_average(values, window: int):
    """Trailing mean over ``window`` points (shorter at the start), so the curve keeps its length."""
    import numpy as np

    v = np.asarray(values, dtype=float)
    c = np.cumsum(np.insert(v, 0, 0.0))
    idx = np.arange(1, len(v) + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


def plot_pretrain_losses(records: list[dict], out_path: str | os.PathLike, title: str = "Pretraining loss",
                         smooth: int = 10) -> Path:
    """One panel per pretraining record: loss against optimizer step (objectives' losses have different units).

    Raw per-step losses are drawn faintly; the line is their trailing mean over ``smooth`` steps (per-batch losses
    swing with the batch: InfoNCE grows with the number of clips in a duration-bucketed batch)."""
    curves = [(r["name"], r["metrics"].get("loss_curve") or []) for r in records if r.get("kind") == "pretrain"]
    curves = [(n, c) for n, c in curves if c]
    if not curves:
        raise ValueError("no pretraining record with a loss curve: run pretraining first (audiolp pretrain / make demo)")
    fig, axes = plt.subplots(1, len(curves), figsize=(3.6 * len(curves), 3.0), squeeze=False)
    for ax, (name, curve) in zip(axes[0], curves):
        steps, losses = zip(*curve)
        ax.plot(steps, losses, lw=0.8, alpha=0.3, color="C0")
        ax.plot(steps, moving_average(losses, smooth), lw=1.8, color="C0")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("training loss")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return out_path
