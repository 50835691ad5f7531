"""MiniBench reference baseline: logistic regression on mean+std log-mel fbank (80 mel, 25 ms / 10 ms).

It calibrates the tasks: a useful task sits clearly above chance and clearly below 100% for this baseline.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from audiolp.data.schema import cut_labels
from audiolp.data.tasks import load_task_registry, load_task_split
from audiolp.features import FeatureConfig, compute_fbank


@dataclass
class BaselineConfig:
    features: FeatureConfig = field(default_factory=FeatureConfig)  # the encoders' own fbank
    C: float = 1.0
    max_iter: int = 2000


def fbank_stats(cuts, cfg: BaselineConfig = BaselineConfig()) -> np.ndarray:
    """Clip features: per-bin mean and std of the log-mel fbank the encoders see (audiolp.features)."""
    feats = []
    for c in cuts:
        f = compute_fbank(c.load_audio(), c.sampling_rate, cfg.features).numpy()
        feats.append(np.concatenate([f.mean(axis=0), f.std(axis=0)]))
    return np.stack(feats)


def baseline_probe(registry_path, task: str, cfg: BaselineConfig = BaselineConfig()) -> dict:
    """Train on ``train``, report accuracy on ``val`` and ``test`` and chance (1 / #classes) for a multiclass task."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    registry_path = Path(registry_path)
    spec = load_task_registry(registry_path)[task]
    if spec.kind != "multiclass":
        raise ValueError(f"task {task!r} is {spec.kind}; the fbank baseline covers multiclass tasks")
    root = registry_path.parent
    data = {}
    for split in ("train", "val", "test"):
        cuts = list(load_task_split(spec, split, root))
        data[split] = (fbank_stats(cuts, cfg), np.array([spec.labels.index(cut_labels(c)[0]) for c in cuts]))
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=cfg.C, max_iter=cfg.max_iter))
    clf.fit(*data["train"])
    out = {"task": task, "chance": 1.0 / len(spec.labels), "n_train": len(data["train"][1])}
    for split in ("val", "test"):
        x, y = data[split]
        out[f"{split}_acc"] = float((clf.predict(x) == y).mean())
        out[f"n_{split}"] = len(y)
    return out
