"""Sound event detection on frozen frames: a frame-wise linear head, scored with sed_eval.

Protocol (``evaluate_sed``): each frame of the frozen encoder (25 Hz for a Zipformer; its centre time from
``audiolp.eval.export.frame_grid``) gets a multi-label target, 1 for every event whose [onset, offset) holds the
frame's centre. A linear layer on standardised frames, sigmoid per class, is trained with BCE on the train split.
The decision threshold and the median-filter length (on the binary decisions, per class) are chosen on val by
segment-based F1; test is scored with

* segment-based F1: 1 s segments, micro (overall) over classes and clips (sed_eval ``SegmentBasedMetrics``);
* event-based F1, onset only: an estimate matches a reference of its class whose onset is within 200 ms; offsets
  are ignored (sed_eval ``EventBasedMetrics(evaluate_offset=False)``), micro;
* event-based F1, onset + offset (DCASE 2016-2019 style): also the offset within max(200 ms, 20 % of the
  reference's length).

Intervals are percentile bootstraps over test clips of the micro F1 (resampled clips' counts summed, then F1),
averaged over seeds with the same resampled clips.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from audiolp.eval.embed import Embeddings
from audiolp.eval.export import FrameGrid, frame_grid

SEGMENT_S = 1.0
COLLAR_S = 0.2
OFFSET_PCT = 0.2
DEFAULT_THRESHOLDS = tuple(np.round(np.arange(0.1, 0.91, 0.1), 2).tolist())
DEFAULT_MEDIAN = (1, 3, 5, 7)  # frames (1 = no filter); 7 frames = 280 ms at 25 Hz

Event = tuple  # (label, onset_s, offset_s)


def _sed_eval():
    with warnings.catch_warnings():  # dcase_util imports pkg_resources, which warns on import
        warnings.simplefilter("ignore")
        try:
            import sed_eval
        except ImportError as e:
            raise ImportError(f"SED metrics need sed_eval ({e}); install the eval extra: "
                              "pip install torch==2.13.0 -e '.[eval]' (it pins setuptools<81, which dcase_util "
                              "needs for pkg_resources)") from e
    return sed_eval


# ---------------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Counts:
    """Per-clip true positives and the numbers of estimated (sys) and reference (ref) items; micro F1 sums them
    over clips. F1 = 2 tp / (sys + ref), sed_eval's precision tp / sys and recall tp / ref: in the event-based
    metric an estimate with the wrong label counts as a substitution, which sed_eval keeps out of its fp / fn
    counts, so those cannot be used."""

    tp: np.ndarray
    sys: np.ndarray
    ref: np.ndarray

    def f1(self, idx: np.ndarray | None = None) -> float:
        tp, n_sys, n_ref = ((a if idx is None else a[idx]).sum() for a in (self.tp, self.sys, self.ref))
        return float(2 * tp / (n_sys + n_ref)) if n_sys + n_ref else 1.0  # nothing to find, nothing found


def _as_items(events, filename: str) -> list[dict]:
    return [{"event_label": str(lab), "onset": float(on), "offset": float(off), "filename": filename}
            for lab, on, off in events]


def sed_counts(reference_events: list[list[Event]], estimated_events: list[list[Event]], labels: list[str],
               durations: list[float] | None = None, segment_s: float = SEGMENT_S, collar_s: float = COLLAR_S,
               offset_pct: float = OFFSET_PCT, metrics=("segment", "event", "event_onoff")) -> dict[str, Counts]:
    """Per-clip counts of the three metrics (keys "segment", "event", "event_onoff") from sed_eval, or of those
    named in ``metrics`` (the event-based ones cost most of the time).

    ``reference_events[i]`` / ``estimated_events[i]``: the events of clip i as (label, onset_s, offset_s).
    ``durations[i]``: clip i's length (segments past the last event count as empty; F1 is unaffected).
    """
    sed_eval = _sed_eval()
    if len(reference_events) != len(estimated_events):
        raise ValueError(f"{len(reference_events)} clips of reference events but {len(estimated_events)} of "
                         "estimates; give one list per clip in both, in the same order")
    known = set(labels)
    for name, clips in (("reference", reference_events), ("estimated", estimated_events)):
        bad = sorted({str(e[0]) for evs in clips for e in evs} - known)
        if bad:
            raise ValueError(f"{name} events have label(s) {bad} outside the task's labels {labels}")
    unknown = sorted(set(metrics) - {"segment", "event", "event_onoff"})
    if unknown:
        raise ValueError(f"unknown SED metric(s) {unknown}; use segment, event and/or event_onoff")
    wanted = set(metrics)
    metrics = {
        "segment": sed_eval.sound_event.SegmentBasedMetrics(list(labels), time_resolution=float(segment_s)),
        "event": sed_eval.sound_event.EventBasedMetrics(list(labels), t_collar=float(collar_s),
                                                        evaluate_onset=True, evaluate_offset=False),
        "event_onoff": sed_eval.sound_event.EventBasedMetrics(list(labels), t_collar=float(collar_s),
                                                              percentage_of_length=float(offset_pct),
                                                              evaluate_onset=True, evaluate_offset=True),
    }
    metrics = {k: m for k, m in metrics.items() if k in wanted}
    n = len(reference_events)
    out = {k: Counts(np.zeros(n), np.zeros(n), np.zeros(n)) for k in metrics}
    for i, (ref, est) in enumerate(zip(reference_events, estimated_events)):
        fname = f"clip{i}"
        ref_items, est_items = _as_items(ref, fname), _as_items(est, fname)
        for key, m in metrics.items():
            # sed_eval accumulates over evaluate() calls: the per-clip counts are the differences.
            before = (m.overall["Ntp"], m.overall["Nsys"], m.overall["Nref"])
            if key == "segment":
                length = None if durations is None else float(durations[i])
                m.evaluate(ref_items, est_items, evaluated_length_seconds=length)
            else:
                m.evaluate(ref_items, est_items)
            c = out[key]
            c.tp[i], c.sys[i], c.ref[i] = (m.overall[k] - b for k, b in zip(("Ntp", "Nsys", "Nref"), before))
    for key, m in metrics.items():  # the summed counts give sed_eval's own overall F1
        got, lib = out[key].f1(), m.overall_f_measure()["f_measure"]
        if out[key].tp.sum() and not np.isclose(got, lib):
            raise AssertionError(f"{key} F1 from per-clip counts {got} != sed_eval's {lib}")
    return out


def sed_metrics(reference_events: list[list[Event]], estimated_events: list[list[Event]], labels: list[str],
                durations: list[float] | None = None, segment_s: float = SEGMENT_S, collar_s: float = COLLAR_S,
                offset_pct: float = OFFSET_PCT, metrics=("segment", "event", "event_onoff")) -> dict[str, float]:
    """Micro F1s over clips: ``segment_f1`` (1 s segments), ``event_f1`` (200 ms onset collar, offset ignored)
    and ``event_f1_onoff`` (onset collar + offset within max(200 ms, 20 % of the reference's length)); only
    those named in ``metrics``."""
    counts = sed_counts(reference_events, estimated_events, labels, durations, segment_s, collar_s, offset_pct,
                        metrics)
    return {f"{k}_f1": c.f1() for k, c in counts.items()}


# ---------------------------------------------------------------------------------------------------------------
# Frames <-> events
# ---------------------------------------------------------------------------------------------------------------
def frame_targets(events: list[Event], labels: list[str], n_frames: int, grid: FrameGrid) -> np.ndarray:
    """(n_frames, C) float32: 1 where the frame's centre lies in an event of that class. An event shorter than a
    frame hop that holds no centre marks the frame nearest its middle, so no reference event is invisible."""
    index = {lab: j for j, lab in enumerate(labels)}
    y = np.zeros((n_frames, len(labels)), dtype=np.float32)
    centres = grid.centres_ms(n_frames) / 1000.0
    for lab, on, off in events:
        if lab not in index:
            raise ValueError(f"event label {lab!r} is not one of the task's labels {labels}")
        hit = (centres >= on) & (centres < off)
        if hit.any():
            y[hit, index[lab]] = 1.0
        elif n_frames:
            y[int(np.argmin(np.abs(centres - (on + off) / 2))), index[lab]] = 1.0
    return y


def decode_events(active: np.ndarray, labels: list[str], grid: FrameGrid,
                  duration: float | None = None) -> list[Event]:
    """Runs of active frames -> events; a run of frames a..b spans [centre(a) - hop/2, centre(b) + hop/2],
    clipped to [0, duration]."""
    half = grid.hop_ms / 2000.0
    centres = grid.centres_ms(active.shape[0]) / 1000.0
    events = []
    for j, lab in enumerate(labels):
        a = np.concatenate([[0], active[:, j].astype(np.int8), [0]])
        starts, ends = np.flatnonzero(np.diff(a) == 1), np.flatnonzero(np.diff(a) == -1) - 1
        for s, e in zip(starts, ends):
            on, off = max(0.0, centres[s] - half), centres[e] + half
            if duration is not None:
                off = min(off, float(duration))
            if off > on:
                events.append((lab, round(float(on), 4), round(float(off), 4)))
    return sorted(events, key=lambda ev: (ev[1], ev[0]))


def postprocess(probs: np.ndarray, threshold: float, median: int) -> np.ndarray:
    """Threshold per frame, then a median filter of ``median`` frames along time on each class's decisions."""
    active = probs >= threshold
    if median > 1:
        from scipy.ndimage import median_filter

        active = median_filter(active.astype(np.uint8), size=(median, 1), mode="nearest").astype(bool)
    return active


# ---------------------------------------------------------------------------------------------------------------
# The head
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class SedHeadConfig:
    epochs: int = 30
    min_steps: int = 300  # small splits (a few thousand frames) still get enough updates
    batch_frames: int = 4096
    lr: float = 1e-2
    weight_decay: float = 1e-4
    thresholds: tuple = DEFAULT_THRESHOLDS
    median_filters: tuple = DEFAULT_MEDIAN


class SedHead(torch.nn.Module):
    """Standardise each channel (train statistics), then one Linear to C logits per frame."""

    def __init__(self, mean: np.ndarray, std: np.ndarray, n_classes: int):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))
        self.linear = torch.nn.Linear(len(mean), n_classes)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.linear((frames - self.mean) / self.std)


def train_sed_head(train: Embeddings, targets: np.ndarray, seed: int = 0,
                   config: SedHeadConfig | None = None) -> SedHead:
    """BCE on every train frame (``targets`` (sum of T_i, C), the clips' frame targets concatenated); the head is
    frame-wise, so no padding is needed."""
    cfg = config or SedHeadConfig()
    if targets.shape[0] != train.frames.shape[0]:
        raise ValueError(f"{targets.shape[0]} target frames for {train.frames.shape[0]} embedding frames")
    x_all = train.frames
    mean = x_all.astype(np.float32).mean(0)
    std = x_all.astype(np.float32).std(0) + 1e-5
    torch.manual_seed(seed)
    head = SedHead(mean, std, targets.shape[1])
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(seed)
    n = x_all.shape[0]
    x32 = torch.from_numpy(x_all.astype(np.float32))  # once, not per batch
    y_all = torch.from_numpy(targets.astype(np.float32))
    epochs = max(cfg.epochs, -(-cfg.min_steps // max(1, -(-n // cfg.batch_frames))))
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, cfg.batch_frames):
            idx = torch.from_numpy(np.sort(order[start:start + cfg.batch_frames]))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(head(x32[idx]), y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return head.eval()


@torch.no_grad()
def predict(head: SedHead, emb: Embeddings) -> list[np.ndarray]:
    probs = torch.sigmoid(head(torch.from_numpy(emb.frames.astype(np.float32)))).numpy()
    return [probs[emb.offsets[i]:emb.offsets[i + 1]] for i in range(len(emb))]


def _estimates(probs: list[np.ndarray], labels, grid, durations, threshold, median) -> list[list[Event]]:
    return [decode_events(postprocess(p, threshold, median), labels, grid, d) for p, d in zip(probs, durations)]


def choose_postprocessing(probs: list[np.ndarray], reference: list[list[Event]], labels: list[str], grid: FrameGrid,
                          durations: list[float], config: SedHeadConfig | None = None) -> dict:
    """The (threshold, median filter) with the best val segment F1; ties keep the first (lower threshold, then
    shorter filter)."""
    cfg = config or SedHeadConfig()
    best = None
    for t in cfg.thresholds:
        for k in cfg.median_filters:
            f1 = sed_metrics(reference, _estimates(probs, labels, grid, durations, t, k), labels, durations,
                             metrics=("segment",))["segment_f1"]  # the event-based metrics are not needed here
            if best is None or f1 > best["val_segment_f1"]:
                best = {"threshold": float(t), "median_filter": int(k), "val_segment_f1": f1}
    return best


# ---------------------------------------------------------------------------------------------------------------
# A task of a registry
# ---------------------------------------------------------------------------------------------------------------
def cut_events(cut) -> list[Event]:
    """A cut's timed events: ``supervision.custom['events'] = [[label, onset_s, offset_s], ...]``."""
    sup = cut.supervisions[0] if cut.supervisions else None
    custom = (sup.custom if sup is not None else None) or {}
    if "events" not in custom:
        raise ValueError(f"cut {cut.id}: supervision.custom has no 'events' ([[label, onset_s, offset_s], ...]); "
                         "an SED task needs timed events on every clip")
    return [(str(lab), float(on), float(off)) for lab, on, off in custom["events"]]


def _bootstrap(counts: list[Counts], n_boot: int, seed: int, alpha: float) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    n = len(counts[0].tp)
    reps = np.empty(n_boot)
    for b in range(n_boot):
        idx = rng.integers(0, n, size=n)
        reps[b] = np.mean([c.f1(idx) for c in counts])
    return float(np.quantile(reps, alpha / 2)), float(np.quantile(reps, 1 - alpha / 2))


def evaluate_sed_embeddings(emb: dict[str, Embeddings], events: dict[str, list[list[Event]]],
                            durations: dict[str, list[float]], labels: list[str], grid: FrameGrid,
                            seeds=(0, 1, 2), config: SedHeadConfig | None = None, task: str = "",
                            n_boot: int = 1000, alpha: float = 0.05, threads: int | None = 1) -> dict:
    """The protocol on embeddings already extracted (splits "train", "val", "test"; events and durations per
    clip in the embeddings' order). Returns plain data (see ``evaluate_sed``). ``threads``: torch intra-op
    threads while the heads train (None: torch's current setting; see ``audiolp.eval.linear``)."""
    from audiolp.eval.linear import torch_threads

    with torch_threads(threads):
        return _evaluate_sed_embeddings(emb, events, durations, labels, grid, seeds, config or SedHeadConfig(), task,
                                        n_boot, alpha)


def _evaluate_sed_embeddings(emb, events, durations, labels, grid, seeds, cfg: SedHeadConfig, task: str,
                             n_boot: int, alpha: float) -> dict:
    targets = np.concatenate([frame_targets(ev, labels, n, grid)
                              for ev, n in zip(events["train"], emb["train"].lengths())])
    per_seed, test_counts = [], []
    for seed in seeds:
        head = train_sed_head(emb["train"], targets, seed=seed, config=cfg)
        chosen = choose_postprocessing(predict(head, emb["val"]), events["val"], labels, grid, durations["val"], cfg)
        est = _estimates(predict(head, emb["test"]), labels, grid, durations["test"], chosen["threshold"],
                         chosen["median_filter"])
        counts = sed_counts(events["test"], est, labels, durations["test"])
        test_counts.append(counts)
        per_seed.append({"seed": int(seed), **chosen, **{f"{k}_f1": c.f1() for k, c in counts.items()}})
    out = {"task": task, "metric": "segment_f1", "labels": list(labels), "seeds": [int(s) for s in seeds],
           "per_seed": per_seed, "frame_hop_ms": grid.hop_ms, "first_frame_centre_ms": grid.first_centre_ms,
           "n_train": len(emb["train"]), "n_val": len(emb["val"]), "n_test": len(emb["test"]),
           "protocol": {"segment_s": SEGMENT_S, "collar_s": COLLAR_S, "offset_pct": OFFSET_PCT,
                        "event_f1": "onset within collar, offset ignored",
                        "event_onoff_f1": "onset within collar and offset within max(collar, pct x length)",
                        "averaging": "micro", "library": "sed_eval", "head": "linear on standardised frames, BCE",
                        "epochs": cfg.epochs, "min_steps": cfg.min_steps, "lr": cfg.lr, "weight_decay": cfg.weight_decay}}
    for key in ("segment", "event", "event_onoff"):
        out[f"{key}_f1"] = float(np.mean([r[f"{key}_f1"] for r in per_seed]))
        out[f"{key}_f1_interval"] = _bootstrap([c[key] for c in test_counts], n_boot, seed=0, alpha=alpha)
    return out


def evaluate_sed(encoder, registry_path, task: str = "event_detection", cache=None, seeds=(0, 1, 2),
                 config: SedHeadConfig | None = None, n_boot: int = 1000) -> dict:
    """SED of a frozen ``encoder`` on an "sed" task of a registry (e.g. MiniStew's event_detection); embeddings
    come from (and go to) ``cache`` (an ``EmbeddingCache``). Returns plain data: ``segment_f1``, ``event_f1``,
    ``event_onoff_f1`` (means over seeds) with ``*_interval`` (95 % bootstrap over test clips), ``per_seed``
    (threshold and median filter chosen on val, val and test scores) and the protocol."""
    from pathlib import Path

    from audiolp.data.tasks import load_task_registry, load_task_split

    if cache is None:
        raise ValueError("evaluate_sed needs cache=EmbeddingCache(root): embeddings are extracted once and reused")
    registry_path = Path(registry_path)
    registry = load_task_registry(registry_path)
    if task not in registry:
        raise ValueError(f"unknown task {task!r} in {registry_path}; it has {sorted(registry)}")
    spec = registry[task]
    if spec.kind != "sed":
        raise ValueError(f"task {task!r} is {spec.kind}; evaluate_sed needs an 'sed' task (timed events per clip)")
    emb, events, durations = {}, {}, {}
    for split in ("train", "val", "test"):
        cuts = {c.id: c for c in load_task_split(spec, split, registry_path.parent)}
        emb[split] = cache.get(encoder, list(cuts.values()), name=f"{task}/{split}")
        kept = [cuts[i] for i in emb[split].ids]  # unreadable clips were left out of the embeddings
        events[split] = [cut_events(c) for c in kept]
        durations[split] = [float(c.duration) for c in kept]
    return evaluate_sed_embeddings(emb, events, durations, spec.labels, frame_grid(encoder), seeds=seeds,
                                   config=config, task=task, n_boot=n_boot)
