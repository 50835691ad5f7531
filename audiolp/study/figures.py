"""Figures rebuilt from results records only (never by hand)."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are files; no display needed (papermill, CI)
import matplotlib.pyplot as plt  # noqa: E402

from audiolp.study.analysis import parse_run_name  # noqa: E402


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


# -- the study's figures: each reads results records only -----------------------------------------------------------
REFERENCES = ("random_init", "fbank")


def save_figure(fig, path_stem: str | os.PathLike) -> list[Path]:
    """Write ``<stem>.png`` and ``<stem>.pdf``; returns both paths."""
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    fig.tight_layout()
    for p in paths:
        fig.savefig(p, dpi=130, metadata={"CreationDate": None} if p.suffix == ".pdf" else None)
    plt.close(fig)
    return paths


def _task_order(records: list[dict]) -> list[str]:
    """Tasks by name (a figure must not depend on the order its records were read in)."""
    return sorted({r["params"]["task"] for r in records if r.get("kind") == "probe"})


def plot_probe_bars(records: list[dict], encoders: list[str], path_stem, pooling: str = "mean",
                    title: str = "") -> list[Path]:
    """Grouped bars: one group per task, one bar per encoder (the references included), 95% intervals."""
    from audiolp.study.analysis import probe_scores

    tasks = _task_order(records)
    encoders = [e for e in encoders if probe_scores(records, e, pooling)]
    if not tasks or not encoders:
        raise ValueError("no probe records for these encoders: run the notebook's evaluation first")
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(tasks) * max(1, len(encoders)) / 3), 3.6))
    width = 0.8 / len(encoders)
    for i, enc in enumerate(encoders):
        sc = probe_scores(records, enc, pooling)
        xs = [j + (i - (len(encoders) - 1) / 2) * width for j, t in enumerate(tasks) if t in sc]
        vals = [sc[t] for t in tasks if t in sc]
        ax.bar(xs, [s.value for s in vals], width, label=enc,
               yerr=[[s.value - s.lo for s in vals], [s.hi - s.value for s in vals]], capsize=2,
               color="0.75" if enc == "fbank" else ("0.5" if enc == "random_init" else None))
    ax.set_xticks(range(len(tasks)))
    ax.set_xticklabels(tasks, rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("test score (accuracy / mAP / segment F1)")
    ax.set_title(title or f"Linear probe, {pooling} pooling (95% intervals)", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path_stem)


def plot_pooling_gap(records: list[dict], a: str, b: str, path_stem, title: str = "") -> list[Path]:
    """Per task, the score difference a - b under mean and under attention pooling, with 95% intervals."""
    from audiolp.study.analysis import gap

    fig, ax = plt.subplots(figsize=(7.0, 3.4))
    tasks = [t for t in _task_order(records) if t in gap(records, a, b, "attention")[0]]
    for i, pooling in enumerate(("mean", "attention")):
        per_task, _ = gap(records, a, b, pooling, tasks)
        xs = [j + (i - 0.5) * 0.38 for j, t in enumerate(tasks) if t in per_task]
        vals = [per_task[t] for t in tasks if t in per_task]
        ax.bar(xs, [s.value for s in vals], 0.38, label=f"{pooling} pooling",
               yerr=[[s.value - s.lo for s in vals], [s.hi - s.value for s in vals]], capsize=2)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(range(len(tasks)))
    ax.set_xticklabels(tasks, rotation=25, ha="right", fontsize=8)
    ax.set_ylabel(f"{parse_run_name(a)[0]} - {parse_run_name(b)[0]}")
    ax.set_title(title or f"Objective gap by pooling ({a} vs {b}, 95% intervals)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path_stem)


def plot_scaling(records: list[dict], path_stem, objectives=("contrastive", "captioning"), init: str | None = None,
                 title: str = "", fits: bool = True) -> list[Path]:
    """One panel per task and one for the mean over tasks: score against caption pairs (log axis), one line per
    objective (dashed: initialised from ``init``), 95% intervals, fitted log-linear lines, random init level."""
    import numpy as np

    from audiolp.study.analysis import classification_tasks, fit_scaling, mean_score, probe_scores, scale_size

    tasks = _task_order(records)
    scored = set(classification_tasks(records))
    in_mean = [t for t in tasks if t in scored]  # SED's F1 is another scale
    series: dict[tuple[str, str | None], dict[str, dict]] = {}
    for enc in dict.fromkeys(r["params"]["encoder"] for r in records if r.get("kind") == "probe"):
        objective, enc_init, scale = parse_run_name(enc)
        if scale and objective in objectives and enc_init in (None, init):
            series.setdefault((objective, enc_init), {})[scale] = probe_scores(records, enc)
    if not series:
        raise ValueError("no probe records of runs at a scale: run 03_scaling / 04_init_ablation first")
    panels = tasks + ["mean over tasks"]
    cols = min(4, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.7 * rows), squeeze=False)
    ref = probe_scores(records, "random_init")
    for ax, panel in zip(axes.flat, panels):
        for k, ((objective, enc_init), by_scale) in enumerate(sorted(series.items(), key=lambda kv: (kv[0][0], kv[0][1] or ""))):
            pts = []
            for scale, sc in by_scale.items():
                if panel == "mean over tasks":
                    if in_mean and all(t in sc for t in in_mean):
                        pts.append((scale_size(scale), mean_score([sc[t] for t in in_mean])))
                elif panel in sc:
                    pts.append((scale_size(scale), sc[panel]))
            if not pts:
                continue
            pts.sort(key=lambda p: p[0])
            color = f"C{OBJECTIVE_COLORS.get(objective, k)}"
            style = "--" if enc_init else "-"
            ax.errorbar([p[0] for p in pts], [p[1].value for p in pts],
                        yerr=[[p[1].value - p[1].lo for p in pts], [p[1].hi - p[1].value for p in pts]],
                        fmt="o", color=color, ms=4, capsize=2,
                        label=objective + (f" (from {enc_init})" if enc_init else ""))
            if fits and len({p[0] for p in pts}) >= 2:
                f = fit_scaling(objective, panel, pts)
                xs = np.geomspace(min(f.sizes), max(f.sizes), 20)
                ax.plot(xs, f.intercept + f.slope * np.log10(xs), style, color=color, lw=1.2)
            else:
                ax.plot([p[0] for p in pts], [p[1].value for p in pts], style, color=color, lw=1.0)
        if panel in ref:
            ax.axhline(ref[panel].value, color="0.5", ls=":", lw=1, label="random init")
        elif panel == "mean over tasks" and in_mean and all(t in ref for t in in_mean):
            ax.axhline(mean_score([ref[t] for t in in_mean]).value, color="0.5", ls=":", lw=1, label="random init")
        ax.set_xscale("log")
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel("caption pairs (paper scale)", fontsize=8)
        ax.set_ylabel("test score", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title or "Linear probe (mean pooling) against pretraining data (95% intervals)", fontsize=10)
    return save_figure(fig, path_stem)


OBJECTIVE_COLORS = {"contrastive": 0, "captioning": 1, "tagging": 2}


def plot_tsne_record(record: dict, path_stem, title: str = "") -> list[Path]:
    """The 2-D map stored in a ``tsne`` record, one colour per label, silhouettes in the title."""
    pts, m = record["metrics"]["points"], record["metrics"]
    labels = pts["label"]
    fig, ax = plt.subplots(figsize=(6.2, 4.8))
    for i, lab in enumerate(sorted(set(labels))):
        idx = [j for j, v in enumerate(labels) if v == lab]
        ax.scatter([pts["x"][j] for j in idx], [pts["y"][j] for j in idx], s=5, alpha=0.7, label=lab,
                   color=plt.cm.tab20(i % 20))
    sil = m.get("silhouette_cosine")
    ax.set_title(title or f"{record['name']}: silhouette {sil if sil is None else round(sil, 3)} (cosine), "
                          f"{m['silhouette_2d']:.3f} (2-D)", fontsize=9)
    ax.set_xlabel("t-SNE 1")
    ax.set_ylabel("t-SNE 2")
    ax.legend(fontsize=6, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return save_figure(fig, path_stem)


# -- each notebook's figures, by name; `make figures` redraws them all from the records -----------------------------
def objective_gap_figures(records: list[dict], figdir, scale: str, objectives) -> list[Path]:
    encs = [f"{o}@{scale}" for o in objectives] + list(REFERENCES)
    return plot_probe_bars(records, encs, Path(figdir) / f"01_objective_gap_{scale}",
                           title=f"Objectives at {scale}: linear probe, mean pooling (95% intervals)")


def pooling_figures(records: list[dict], figdir, scale: str, objectives) -> list[Path]:
    a, b = (f"{o}@{scale}" for o in objectives[:2])
    encs = [f"{o}@{scale}" for o in objectives] + list(REFERENCES)
    return (plot_pooling_gap(records, a, b, Path(figdir) / f"02_pooling_gap_{scale}")
            + plot_probe_bars(records, encs, Path(figdir) / f"02_attention_probe_{scale}", pooling="attention",
                              title=f"Objectives at {scale}: linear probe, attention pooling (95% intervals)"))


def scaling_figures(records: list[dict], figdir, objectives) -> list[Path]:
    return plot_scaling(records, Path(figdir) / "03_scaling", objectives=tuple(objectives))


def init_figures(records: list[dict], figdir, objectives, init: str = "tagging") -> list[Path]:
    paths = []
    for o in objectives:
        paths += plot_scaling(records, Path(figdir) / f"04_init_ablation_{o}", objectives=(o,), init=init,
                              title=f"{o}: from scratch (solid) vs from the {init} encoder (dashed), 95% intervals")
    return paths


def tsne_figures(records: list[dict], figdir) -> list[Path]:
    paths = []
    for r in records:
        if r.get("kind") == "tsne":
            paths += plot_tsne_record(r, Path(figdir) / f"05_tsne_{r['name']}")
    return paths


FIGURES = {}  # name -> figure function (records, figdir, **params); filled below


def draw(records_dir, figdir, figure: str, **params) -> list[Path]:
    """Draw one of the report's figures from every record under ``records_dir`` and remember the call as a
    ``figure`` record, so that `make figures` redraws exactly the figures the notebooks drew."""
    from audiolp.files import write_record
    from audiolp.study.records import read_records

    if figure not in FIGURES:
        raise ValueError(f"unknown figure {figure!r}; use one of {sorted(FIGURES)}")
    records = [r for r in read_records(records_dir) if r.get("kind") != "figure"]
    paths = FIGURES[figure](records, figdir, **params)
    key = "__".join([figure] + [f"{k}-{params[k]}" for k in sorted(params)])
    write_record(Path(records_dir) / "figures", "figure", key, {"figure": figure, **params},
                 {"files": [p.name for p in paths]})
    return paths


def rebuild_figures(records_dir, figdir) -> list[Path]:
    """Every figure the notebooks drew, redrawn from the records now stored (no training, no evaluation), plus the
    pretraining losses. A figure whose records grew since (e.g. 03's curves after 04 added a scale point) shows them."""
    from audiolp.study.records import read_records

    records = read_records(records_dir)
    if not records:
        raise ValueError(f"no results records under {records_dir}; run the notebooks (or `make demo`) first")
    calls = [r["params"] for r in records if r.get("kind") == "figure"]
    data = [r for r in records if r.get("kind") != "figure"]
    paths: list[Path] = []
    pre = [r for r in data if r.get("kind") == "pretrain"]
    if pre:
        paths.append(plot_pretrain_losses(pre, Path(figdir) / "pretrain_losses.png", title="Pretraining loss"))
    if not calls:
        calls = inferred_figures(data)
    for call in calls:
        call = dict(call)
        paths += FIGURES[call.pop("figure")](data, figdir, **call)
    return paths


def inferred_figures(records: list[dict]) -> list[dict]:
    """The figure calls records allow when no notebook recorded its own (records made by `audiolp evaluate`)."""
    probes = [r for r in records if r.get("kind") == "probe"]
    runs = [parse_run_name(e) for e in dict.fromkeys(r["params"]["encoder"] for r in probes)]
    calls: list[dict] = []
    by_scale: dict[str, list[str]] = {}
    for o, init, s in runs:
        if s and init is None:
            by_scale.setdefault(s, []).append(o)
    for s, objs in by_scale.items():
        objs = [o for o in ("contrastive", "captioning", "tagging") if o in objs]
        if len(objs) >= 2:
            calls.append({"figure": "objective_gap", "scale": s, "objectives": objs})
            if any(r["params"]["pooling"] == "attention" and r["params"]["encoder"] == f"{objs[0]}@{s}" for r in probes):
                calls.append({"figure": "pooling", "scale": s, "objectives": objs})
    if len(by_scale) >= 2:
        calls.append({"figure": "scaling", "objectives": ["contrastive", "captioning"]})
    for init in sorted({i for _, i, _ in runs if i}):
        calls.append({"figure": "init", "objectives": sorted({o for o, i, _ in runs if i == init}), "init": init})
    if any(r.get("kind") == "tsne" for r in records):
        calls.append({"figure": "tsne"})
    if any(r.get("kind") in ("retrieval", "captioning", "qa") for r in records):
        calls.append({"figure": "language"})
    return calls


def language_figures(records: list[dict], figdir) -> list[Path]:
    """06: one panel per language protocol (retrieval R@1, CIDEr-D, QA exact match), one bar per encoder with its
    95% interval; QA panels also show each encoder's text-only control (hatched)."""
    from audiolp.study.analysis import language_score

    panels: dict[str, dict[str, object]] = {}
    blind: dict[str, object] = {}
    for r in records:
        scored = language_score(r)
        if scored:
            enc = str(r["params"].get("encoder", r["name"]))
            panels.setdefault(scored[0], {})[enc] = scored[1]
            if r["kind"] == "qa" and "text_only" in r["metrics"]:
                from audiolp.study.analysis import Score

                t = r["metrics"]["text_only"]
                blind[enc] = Score(t["test"], *t["interval"])
    if not panels:
        raise ValueError("no retrieval / captioning / QA records: run 06_language_tasks first")
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), squeeze=False)
    for ax, (panel, by_enc) in zip(axes[0], sorted(panels.items())):
        encs = list(by_enc)
        vals = [by_enc[e] for e in encs]
        ax.bar(range(len(encs)), [v.value for v in vals], 0.6,
               yerr=[[v.value - v.lo for v in vals], [v.hi - v.value for v in vals]], capsize=2)
        if panel.startswith("QA"):
            xs = [i for i, e in enumerate(encs) if e in blind]
            ax.bar([x + 0.3 for x in xs], [blind[encs[x]].value for x in xs], 0.25, hatch="//", fill=False,
                   label="text-only control")
            if xs:
                ax.legend(fontsize=7)
        ax.set_xticks(range(len(encs)))
        ax.set_xticklabels(encs, rotation=25, ha="right", fontsize=7)
        ax.set_title(panel, fontsize=8)
        ax.set_ylabel("test score")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Language-involved tasks on frozen encoders (95% intervals)", fontsize=10)
    return save_figure(fig, Path(figdir) / "06_language_tasks")


FIGURES.update({"objective_gap": objective_gap_figures, "pooling": pooling_figures, "scaling": scaling_figures,
                "init": init_figures, "tsne": tsne_figures, "language": language_figures})
