"""Language-involved evaluation of a frozen encoder: audio-text retrieval and zero-shot classification, scored with
a contrastive run's own heads or with heads aligned LiT-style on the frozen encoder.

    recs = evaluate_retrieval("runs/c1", "data/ministew_full/tasks.json", "retrieval", lit=LiTConfig(steps=200))
    recs = evaluate_zero_shot("runs/c1", "data/ministew_full/tasks.json")     # every multiclass task

Protocols (one results record per encoder x task x protocol):
- ``own_heads``: a contrastive pretraining run scored with its own text tower and projections (its last checkpoint).
- ``lit``: LiT-style alignment (``lit_align``). The audio encoder is frozen; a text tower (any HF path, default the
  offline "minilm") and both projection MLPs are trained with the contrastive loss THROUGH THE ONE TRAINER
  (``audiolp.train.trainer.train`` with ``freeze_encoder=True`` and ``init_from`` = the encoder's weights, or no
  weights for a random-init reference). The alignment data default to the task's train split; on MiniStew that is
  small (150 clips in the full profile, 8 in the tiny one), so pass ``alignment_data`` (any caption manifest, e.g.
  a CaptionStew subset) for a stronger alignment. The text tower is trained or frozen as the preset says (demo_cpu:
  frozen, for CPU speed; paper: trained), unless ``LiTConfig.text_trainable`` says otherwise.

Retrieval metrics (``retrieval_scores``) follow the authors' rules (AudenAI/Auden ``auden/models/clap/utils.py``):
every query ranks every candidate of the test split (global negatives). Audio->text: R@1/5/10 take the best rank
among the clip's captions; AP@10 sums precision at each of the clip's captions found in the top 10, divided by
min(10, #captions). Text->audio: one relevant clip per caption; R@1/5/10 and mAP@10, which for one relevant item is
the reciprocal rank within the top 10 (MRR@10, reported under both names). Scores are fractions (the authors print
percent). Two departures, both where their code is not what its docstring says: AP@10 takes the caption positions
in rank order (their loop takes them in caption order, which is not an average precision when they are not
sorted), and MRR@10 counts a caption whose clip is not in the top 10 as 0 (their 1-to-1 helper averages over the
hits only). Ties are broken against the query: a candidate that scores the same as a relevant one ranks before it
(so a constant similarity matrix scores as badly as possible, never by the order of the manifest).

Intervals: 95% percentile bootstrap over test clips (a resampled clip brings all its captions), of the metric
averaged over LiT seeds, as ``audiolp.eval.probe.bootstrap_interval`` does for one item per clip.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from audiolp.data.schema import clean_captions, cut_captions
from audiolp.data.tasks import TaskSpec, load_task_registry, load_task_split
from audiolp.eval.embed import EmbeddingCache, Embeddings
from audiolp.eval.probe import bootstrap_interval, class_indices
from audiolp.configs import deep_merge
from audiolp.files import atomic_write, record_path, write_record
from audiolp.models.io import run_encoder_weights

RECALL_KS = (1, 5, 10)
MAP_K = 10
PROTOCOLS = ("own_heads", "lit")
DEFAULT_TEMPLATE = "the sound of {label}"


# ------------------------------------------------------------------------------------------------------------------
# Metrics
# ------------------------------------------------------------------------------------------------------------------
@dataclass
class RetrievalScores:
    """Retrieval metrics of one similarity matrix, with what the bootstrap needs.

    ``metrics``: name -> value ("a2t_R@1", ..., "a2t_mAP@10", "t2a_R@1", ..., "t2a_mAP@10", "t2a_MRR@10"), and the
    1-based median / mean rank of each direction ("a2t_medr", "a2t_meanr", "t2a_medr", "t2a_meanr").
    ``items``: name -> per-query scores (a2t: one per clip with captions; t2a: one per caption) for every metric
    that is a mean over queries; ``item_clip``: direction -> the clip index of each query."""

    metrics: dict[str, float]
    items: dict[str, np.ndarray] = field(repr=False)
    item_clip: dict[str, np.ndarray] = field(repr=False)
    n_clips: int = 0
    n_captions: int = 0


def _check_inputs(sim, caption_clip) -> tuple[np.ndarray, np.ndarray]:
    sim = np.asarray(sim, dtype=np.float64)
    caption_clip = np.asarray(caption_clip, dtype=np.int64)
    if sim.ndim != 2:
        raise ValueError(f"similarity matrix must be (clips, captions); got shape {sim.shape}")
    if caption_clip.shape != (sim.shape[1],):
        raise ValueError(f"caption_clip has {caption_clip.shape} entries; it must name the clip of each of the "
                         f"{sim.shape[1]} captions (columns of the similarity matrix)")
    if sim.shape[1] and (caption_clip.min() < 0 or caption_clip.max() >= sim.shape[0]):
        raise ValueError(f"caption_clip holds clip indices outside 0..{sim.shape[0] - 1}")
    if not np.isfinite(sim).all():
        raise ValueError("the similarity matrix holds NaN or infinite values (a collapsed embedding?)")
    return sim, caption_clip


def audio_to_text_positions(sim, caption_clip) -> list[np.ndarray]:
    """For each clip, the sorted 1-based positions of its captions when its row ranks every caption (ties
    against the query, see the module docstring); an empty array for a clip without captions."""
    sim, caption_clip = _check_inputs(sim, caption_clip)
    out = []
    for i in range(sim.shape[0]):
        pos_mask = caption_clip == i
        if not pos_mask.any():
            out.append(np.zeros(0, dtype=np.int64))
            continue
        row = sim[i]
        # negatives first among equal scores, then positives in caption order (lexsort: last key is primary)
        order = np.lexsort((np.arange(row.size), pos_mask, -row))
        out.append(np.flatnonzero(pos_mask[order]) + 1)
    return out


def text_to_audio_ranks(sim, caption_clip) -> np.ndarray:
    """For each caption, the 1-based rank of its clip among all clips (ties against the query)."""
    sim, caption_clip = _check_inputs(sim, caption_clip)
    target = sim[caption_clip, np.arange(sim.shape[1])]
    return (sim >= target[None, :]).sum(axis=0).astype(np.int64)  # its own clip counts once: rank >= 1


def average_precision_at_k(positions: np.ndarray, k: int = MAP_K) -> float:
    """AP@k of one query from the sorted 1-based positions of its relevant items, divided by min(k, #relevant)."""
    if positions.size == 0:
        return 0.0
    hits = positions[positions <= k]
    return float((np.arange(1, hits.size + 1) / hits).sum() / min(k, positions.size))


def retrieval_scores(sim, caption_clip, ks=RECALL_KS, map_k: int = MAP_K) -> RetrievalScores:
    """Both directions' metrics from a (clips x captions) similarity matrix and each caption's clip index."""
    sim, caption_clip = _check_inputs(sim, caption_clip)
    positions = audio_to_text_positions(sim, caption_clip)
    has_caps = np.array([p.size > 0 for p in positions])
    if not has_caps.any():
        raise ValueError("no clip has a caption: nothing to retrieve")
    best = np.array([p[0] for p in positions if p.size])
    items: dict[str, np.ndarray] = {}
    for k in ks:
        items[f"a2t_R@{k}"] = (best <= k).astype(np.float64)
    items[f"a2t_mAP@{map_k}"] = np.array([average_precision_at_k(p, map_k) for p in positions if p.size])
    ranks = text_to_audio_ranks(sim, caption_clip)
    for k in ks:
        items[f"t2a_R@{k}"] = (ranks <= k).astype(np.float64)
    rr = np.where(ranks <= map_k, 1.0 / ranks, 0.0)
    items[f"t2a_mAP@{map_k}"] = rr
    items[f"t2a_MRR@{map_k}"] = rr.copy()
    metrics = {name: float(v.mean()) for name, v in items.items()}
    metrics.update({"a2t_medr": float(np.median(best)), "a2t_meanr": float(best.mean()),
                    "t2a_medr": float(np.median(ranks)), "t2a_meanr": float(ranks.mean())})
    item_clip = {"a2t": np.flatnonzero(has_caps), "t2a": caption_clip}
    return RetrievalScores(metrics=metrics, items=items, item_clip=item_clip, n_clips=int(sim.shape[0]),
                           n_captions=int(sim.shape[1]))


def clip_bootstrap_interval(item_scores, item_clip, n_clips: int, n_boot: int = 2000, seed: int = 0,
                            alpha: float = 0.05) -> tuple[float, float]:
    """Percentile interval of the mean item score, resampling clips (with replacement): a drawn clip brings all
    its items (a clip may hold several captions, or none). With one item per clip it is exactly
    ``audiolp.eval.probe.bootstrap_interval`` of the items (the same draws for the same seed)."""
    item_scores = np.asarray(item_scores, dtype=np.float64)
    item_clip = np.asarray(item_clip, dtype=np.int64)
    if item_scores.size == 0:
        raise ValueError("clip_bootstrap_interval: no items")
    sums = np.bincount(item_clip, weights=item_scores, minlength=n_clips)
    counts = np.bincount(item_clip, minlength=n_clips).astype(np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_clips, size=(n_boot, n_clips))
    n = counts[idx].sum(axis=1)
    reps = np.divide(sums[idx].sum(axis=1), n, out=np.full(n_boot, np.nan), where=n > 0)
    reps = reps[~np.isnan(reps)]  # a draw of only caption-less clips has no query
    return float(np.quantile(reps, alpha / 2)), float(np.quantile(reps, 1 - alpha / 2))


def retrieval_intervals(scores: list[RetrievalScores], n_boot: int = 2000, seed: int = 0,
                        alpha: float = 0.05) -> dict[str, tuple[float, float]]:
    """Interval of each mean metric, averaged over the given scores (LiT seeds of the same test split)."""
    first = scores[0]
    out = {}
    for name in first.items:
        direction = name.split("_", 1)[0]
        avg = np.mean([s.items[name] for s in scores], axis=0)
        out[name] = clip_bootstrap_interval(avg, first.item_clip[direction], first.n_clips, n_boot, seed, alpha)
    return out


# ------------------------------------------------------------------------------------------------------------------
# Heads: a run's own, or LiT-aligned through the trainer
# ------------------------------------------------------------------------------------------------------------------
@dataclass
class LiTConfig:
    """LiT-style alignment on a frozen encoder (see the module docstring); every field is a parameter of the study.

    ``preset``: the TrainConfig preset the alignment run starts from (None: "demo_cpu" without a GPU, else "paper");
    ``text_trainable`` None keeps the preset's choice; ``overrides``: any other TrainConfig fields (e.g.
    ``{"optim": {"lr": 0.02}, "loader": {"max_duration": 120}}``). ``seeds``: one alignment run per seed; metrics
    are their mean."""

    steps: int = 200
    text_model: str = "minilm"
    text_trainable: bool | None = None
    preset: str | None = None
    seeds: tuple[int, ...] = (0,)
    overrides: dict = field(default_factory=dict)

    def __post_init__(self):
        self.seeds = tuple(int(s) for s in self.seeds)
        if self.steps < 1 or not self.seeds:
            raise ValueError(f"LiTConfig: steps={self.steps}, seeds={self.seeds}; need steps >= 1 and a seed")

    def preset_name(self) -> str:
        return self.preset or ("paper" if torch.cuda.is_available() else "demo_cpu")


def load_run_objective(run_dir: str | os.PathLike, checkpoint: str = "latest") -> nn.Module:
    """A training run's whole objective (encoder + heads) from its config.json and a checkpoint's
    model.safetensors, in eval mode without gradients."""
    from audiolp.models.io import build_encoder_from_dict, load_weights
    from audiolp.objectives import build_objective
    from audiolp.train.checkpoint import CHECKPOINT_DIR, latest_checkpoint
    from audiolp.train.config import TrainConfig

    run_dir = Path(run_dir)
    for need in ("config.json", "encoder_config.json"):
        if not (run_dir / need).is_file():
            raise FileNotFoundError(f"{run_dir / need} does not exist: give the run dir of an audiolp training run")
    cfg = TrainConfig.load(run_dir / "config.json")
    root = run_dir / CHECKPOINT_DIR
    ckpt = latest_checkpoint(root) if checkpoint == "latest" else root / checkpoint
    if ckpt is None or not (ckpt / "model.safetensors").is_file():
        raise FileNotFoundError(f"{run_dir / CHECKPOINT_DIR} holds no checkpoint with model.safetensors; the heads of "
                                "a run live there (train it first, or keep at least one checkpoint)")
    encoder = build_encoder_from_dict(json.loads((run_dir / "encoder_config.json").read_text()))
    obj = build_objective(cfg.objective, encoder, cfg.objective_config)
    obj.load_state_dict(load_weights(ckpt / "model.safetensors"), strict=True)
    obj.eval().requires_grad_(False)
    return obj


def run_objective_name(run_dir: str | os.PathLike) -> str | None:
    """The objective a run trained ("contrastive", ...), from its config.json; None when it has none."""
    path = Path(run_dir) / "config.json"
    return json.loads(path.read_text()).get("objective") if path.is_file() else None


def lit_train_config(init_from: str | None, encoder_config: dict, data: str | os.PathLike, run_dir: str | os.PathLike,
                     lit: LiTConfig, seed: int):
    """The TrainConfig of one LiT alignment run: contrastive objective, frozen encoder of exactly the architecture
    ``encoder_config`` (an encoder_config.json dict) started from ``init_from`` (None: random init with ``seed``).

    The optimizer decides the Zipformer's attention scaling; when the preset's optimizer would change the frozen
    encoder's (e.g. AdamW on a ScaledAdam-trained encoder), the optimizer that matches the encoder is used."""
    from audiolp.train.config import TrainConfig
    from audiolp.train.optim import attention_scaling_for

    arch = dict(encoder_config.get("config", encoder_config))
    scaling = bool(arch.pop("attention_scaling", False))
    objective_config = {} if lit.text_trainable is None else {"text_trainable": bool(lit.text_trainable)}
    if lit.text_trainable:  # a trained tower cannot keep a caption cache
        objective_config["text_cache_size"] = 0
    overrides = {"objective": "contrastive", "data": str(data), "init_from": init_from, "freeze_encoder": True,
                 "max_steps": lit.steps, "seed": int(seed), "run_dir": str(run_dir), "progress": False,
                 "text_model": lit.text_model, "model_overrides": arch, "checkpoint_every": lit.steps,
                 "keep_last": 1, "log_every": max(1, min(50, lit.steps // 5)), "objective_config": objective_config}
    overrides = deep_merge(overrides, lit.overrides)
    cfg = TrainConfig.from_preset(lit.preset_name(), overrides)
    if attention_scaling_for(cfg.optim.name) != scaling:
        cfg.optim.name = "adamw" if scaling else "scaled_adam"
    return cfg


def _hash(obj) -> str:
    return hashlib.blake2b(json.dumps(obj, sort_keys=True, default=str).encode(), digest_size=6).hexdigest()


def lit_align(encoder: str | os.PathLike | nn.Module | None, data: str | os.PathLike, work_dir: str | os.PathLike,
              lit: LiTConfig | None = None, seed: int = 0, encoder_config: dict | None = None,
              log=print) -> nn.Module:
    """Train text tower + projections on the frozen ``encoder`` with ``audiolp.train.trainer.train`` (one trainer),
    on the caption manifest ``data``; returns the aligned contrastive objective (eval mode).

    ``encoder``: a run dir (its final encoder weights), an encoder module (its weights are written once under
    ``work_dir/init/``), or None for a random-init reference (then ``encoder_config``, an encoder_config.json dict,
    gives the architecture). The run lives in ``work_dir/lit-<hash of its config and the encoder weights>``; a
    finished run there is loaded, not retrained."""
    from audiolp.eval.embed import encoder_fingerprint
    from audiolp.models.io import encoder_config_dict, save_weights
    from audiolp.train.trainer import train

    lit = lit or LiTConfig()
    work_dir = Path(work_dir)
    if isinstance(encoder, nn.Module):
        config = getattr(encoder, "config", None)
        if not dataclasses.is_dataclass(config):
            raise TypeError(f"LiT needs a Zipformer encoder (with .config); got {type(encoder).__name__}")
        fp = encoder_fingerprint(encoder)
        weights = work_dir / "init" / f"{fp}.safetensors"
        if not weights.is_file():
            state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
            atomic_write(weights, lambda tmp: save_weights(state, tmp))
        init, arch = str(weights), encoder_config_dict(config)
    elif encoder is not None:
        run = Path(encoder)
        if not (run / "encoder_config.json").is_file():
            raise FileNotFoundError(f"{run / 'encoder_config.json'} does not exist: give the run dir of a "
                                    "pretraining run, an encoder module, or None for a random-init reference")
        weights = run_encoder_weights(run)
        init, arch = str(weights), json.loads((run / "encoder_config.json").read_text())
        fp = hashlib.blake2b(weights.read_bytes(), digest_size=10).hexdigest()
    else:
        if encoder_config is None:
            raise ValueError("a random-init LiT reference needs encoder_config (an encoder_config.json dict)")
        init, arch, fp = None, dict(encoder_config), "random"
    cfg = lit_train_config(init, arch, data, work_dir / "pending", lit, seed)
    cfg.loader.num_buckets = min(cfg.loader.num_buckets, _count_up_to(data, cfg.loader.num_buckets))
    key = {k: v for k, v in cfg.to_dict().items() if k not in ("run_dir", "progress")}
    run_dir = work_dir / f"lit-{_hash({'config': key, 'weights': fp})}"
    cfg.run_dir = str(run_dir)
    done = run_dir / "results.json"
    if not (done.is_file() and json.loads(done.read_text()).get("completed")):
        what = "module" if isinstance(encoder, nn.Module) else encoder or "random init"
        log(f"[lit] aligning {lit.text_model} + heads on the frozen encoder ({what}, "
            f"seed {seed}, {lit.steps} steps, data {data}) in {run_dir}")
        train(cfg)
    return load_run_objective(run_dir)


def _count_up_to(manifest: str | os.PathLike, limit: int) -> int:
    """The number of cuts in ``manifest``, counted lazily up to ``limit`` (a small alignment split, e.g. MiniStew
    tiny's 8 clips, needs fewer duration buckets than the preset's)."""
    from lhotse import CutSet

    from audiolp.data.schema import load_manifest, shar_metadata

    path = Path(manifest)
    cuts = CutSet.from_jsonl_lazy(path) if path.is_file() else (shar_metadata(path) or load_manifest(path))
    n = 0
    for _ in cuts:
        n += 1
        if n >= limit:
            break
    if n == 0:
        raise ValueError(f"alignment data {path} holds no clips; give a caption cut manifest")
    return n


# ------------------------------------------------------------------------------------------------------------------
# Embedding with heads
# ------------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def embed_audio(objective: nn.Module, frames: Embeddings, batch_clips: int = 64) -> np.ndarray:
    """(N, proj_dim) L2-normalised audio embeddings: the objective's pooling + projection on cached encoder frames."""
    objective.eval()
    dev = next(objective.parameters()).device
    out = []
    for start in range(0, len(frames), batch_clips):
        idx = range(start, min(start + batch_clips, len(frames)))
        lens = torch.tensor([frames.offsets[i + 1] - frames.offsets[i] for i in idx], dtype=torch.long)
        x = torch.zeros(len(idx), int(lens.max()), frames.dim)
        for j, i in enumerate(idx):
            x[j, :lens[j]] = torch.from_numpy(frames.frames_of(i).astype(np.float32))
        out.append(F.normalize(objective.pool_audio(x.to(dev), lens.to(dev)), dim=-1).float().cpu())
    return torch.cat(out).numpy()


@torch.no_grad()
def embed_texts(objective: nn.Module, texts: list[str], batch_size: int = 256, progress: bool = True,
                desc: str = "text") -> np.ndarray:
    """(M, proj_dim) L2-normalised text embeddings (text tower + projection), with a progress bar."""
    from tqdm.auto import tqdm

    objective.eval()
    out = []
    with tqdm(total=len(texts), desc=desc, unit="text", disable=not progress, dynamic_ncols=True) as bar:
        for start in range(0, len(texts), batch_size):
            chunk = texts[start:start + batch_size]
            out.append(objective.embed_text(chunk).float().cpu())
            bar.update(len(chunk))
    return torch.cat(out).numpy() if out else np.zeros((0, objective.config.proj_dim), np.float32)


def caption_index(cuts, frames: Embeddings) -> tuple[list[str], np.ndarray]:
    """The captions of the embedded clips (in ``frames`` order) and each caption's clip index."""
    by_id = {c.id: c for c in cuts}
    texts, clip_of = [], []
    for i, cid in enumerate(frames.ids):
        for cap in clean_captions(cut_captions(by_id[cid])):
            texts.append(cap)
            clip_of.append(i)
    return texts, np.asarray(clip_of, dtype=np.int64)


def score_retrieval(objective: nn.Module, frames: Embeddings, cuts, progress: bool = True) -> RetrievalScores:
    """Retrieval metrics of the test clips (their cached frames) against all their captions."""
    texts, clip_of = caption_index(cuts, frames)
    audio = embed_audio(objective, frames)
    text = embed_texts(objective, texts, progress=progress, desc="captions")
    return retrieval_scores(audio @ text.T, clip_of)


def zero_shot_correct(objective: nn.Module, frames: Embeddings, labels: list[str], template: str = DEFAULT_TEMPLATE,
                      task: str = "") -> np.ndarray:
    """(N,) 1/0: the class whose prompt (``template`` with {label}) is nearest to the clip is its first label."""
    if "{label}" not in template:
        raise ValueError(f"zero-shot template {template!r} has no '{{label}}' placeholder")
    y = class_indices(frames.labels, labels, task, "test")
    audio = embed_audio(objective, frames)
    text = embed_texts(objective, [template.format(label=lab) for lab in labels], progress=False)
    return ((audio @ text.T).argmax(1) == y).astype(np.float64)


# ------------------------------------------------------------------------------------------------------------------
# Records
# ------------------------------------------------------------------------------------------------------------------
@dataclass
class _Source:
    """What is evaluated: a run dir, an encoder module, or a random-init reference (encoder None)."""

    name: str
    desc: str
    fingerprint: str
    module: nn.Module | None = None  # the frozen encoder (None: random init, drawn by each LiT seed)
    run_dir: Path | None = None
    encoder_config: dict | None = None


def _source(encoder, name: str | None, cache: EmbeddingCache, encoder_config) -> _Source:
    import audiolp

    if isinstance(encoder, nn.Module):
        return _Source(name or "module", "encoder module", cache.fingerprint(encoder), module=encoder)
    if encoder is None:
        if encoder_config is not None and not isinstance(encoder_config, dict):
            path = Path(encoder_config)
            path = path / "encoder_config.json" if path.is_dir() else path
            if not path.is_file():
                raise FileNotFoundError(f"{path} does not exist: give encoder_config as a dict or a run dir")
            encoder_config = json.loads(path.read_text())
        if encoder_config is None:
            raise ValueError("encoder=None (a random-init LiT reference) needs encoder_config: a run dir to copy the "
                             "architecture from, or an encoder_config.json dict")
        return _Source(name or "random_init", "random init (drawn by each LiT seed)",
                       f"random:{_hash(encoder_config)}", encoder_config=encoder_config)
    run = Path(encoder)
    if not run.is_dir():
        raise FileNotFoundError(f"run dir {run} does not exist; give the run dir of a pretraining run")
    final = (run / "encoder.safetensors").is_file()
    module = audiolp.load_encoder(run, checkpoint="final" if final else "latest", use_ema=False)
    return _Source(name or run.name, str(run), cache.fingerprint(module), module=module, run_dir=run)


def _protocols(src: _Source, protocols, log) -> list[str]:
    bad = sorted(set(protocols) - set(PROTOCOLS))
    if bad:
        raise ValueError(f"unknown protocol(s) {bad}; use {list(PROTOCOLS)}")
    out = []
    for p in protocols:
        if p == "own_heads" and (src.run_dir is None or run_objective_name(src.run_dir) != "contrastive"):
            log(f"[{p}] {src.name}: skipped (only a contrastive run has its own text heads)")
            continue
        out.append(p)
    return out


def _alignment_data(registry_path: Path, registry: dict[str, TaskSpec], task: str, alignment_data) -> Path:
    if alignment_data is not None:
        path = Path(alignment_data)
        if not path.exists():
            raise FileNotFoundError(f"alignment data {path} does not exist; give a caption cut manifest")
        return path
    spec = registry.get(task)
    if spec is None or "train" not in spec.splits:
        have = "no task " + repr(task) if spec is None else f"task {task!r} has no train split"
        raise ValueError(f"{registry_path}: {have} to align LiT heads on; pass alignment_data=MANIFEST (a caption "
                         "cut manifest, e.g. a CaptionStew subset or MiniStew's cuts.jsonl.gz)")
    return registry_path.parent / spec.splits["train"]


class _Heads:
    """The objectives that score a source under one protocol (one per LiT seed), built on first use."""

    def __init__(self, src: _Source, lit: LiTConfig, data: Path | None, lit_dir: Path, log):
        self.src, self.lit, self.data, self.lit_dir, self.log = src, lit, data, lit_dir, log
        self._built: dict[str, list[nn.Module]] = {}

    def params(self, protocol: str) -> dict:
        if protocol == "own_heads":
            return {"heads": f"own ({self.src.run_dir})", "seeds": [0]}
        return {"heads": "lit", "lit": {**dataclasses.asdict(self.lit), "preset": self.lit.preset_name()},
                "alignment_data": str(self.data), "seeds": list(self.lit.seeds)}

    def get(self, protocol: str) -> list[nn.Module]:
        if protocol not in self._built:
            if protocol == "own_heads":
                self._built[protocol] = [load_run_objective(self.src.run_dir)]
            else:
                init = self.src.run_dir if self.src.run_dir is not None else self.src.module
                self._built[protocol] = [lit_align(init, self.data, self.lit_dir, self.lit, seed,
                                                   encoder_config=self.src.encoder_config, log=self.log)
                                         for seed in self.lit.seeds]
        return self._built[protocol]


def _cached_record(path: Path, params: dict) -> dict | None:
    if path.exists():
        rec = json.loads(path.read_text())
        if rec.get("params") == params:
            return rec
    return None


def _registry(registry) -> tuple[Path, dict[str, TaskSpec]]:
    path = Path(registry)
    path = path / "tasks.json" if path.is_dir() else path
    return path, load_task_registry(path)


def _common(encoder, registry, name, protocols, lit, out_dir, cache, lit_dir, encoder_config, log):
    registry_path, reg = _registry(registry)
    out_dir = Path(out_dir)
    if cache is None or isinstance(cache, (str, os.PathLike)):
        cache = EmbeddingCache(cache or out_dir / ".embeddings")
    src = _source(encoder, name, cache, encoder_config)
    return registry_path, reg, out_dir, cache, src, _protocols(src, protocols, log), lit or LiTConfig(), \
        Path(lit_dir or out_dir / ".lit")


def _frames(cache: EmbeddingCache, objective: nn.Module, cuts, name: str) -> Embeddings:
    return cache.get(objective.encoder, cuts, name=name)


def evaluate_retrieval(encoder: str | os.PathLike | nn.Module | None, registry: str | os.PathLike,
                       task: str = "retrieval", *, name: str | None = None, protocols=PROTOCOLS,
                       lit: LiTConfig | None = None, alignment_data: str | os.PathLike | None = None,
                       out_dir: str | os.PathLike = "papermill_runs/records/eval",
                       cache: EmbeddingCache | str | os.PathLike | None = None,
                       lit_dir: str | os.PathLike | None = None,
                       encoder_config: dict | str | os.PathLike | None = None, n_boot: int = 2000,
                       progress: bool = True, log=print) -> list[dict]:
    """Audio-text retrieval on the test split of registry task ``task`` (kind retrieval), one record per protocol
    (``<out_dir>/retrieval__<name>__<task>__<protocol>.json``); a record with identical params is read back.

    ``encoder``: a pretraining run dir (a contrastive run is also scored with its own heads), an encoder module
    (LiT only), or None with ``encoder_config`` (a run dir or encoder_config.json dict) for a random-init LiT
    reference. ``alignment_data``: LiT's caption manifest (default: the task's train split). Metrics: see the module
    docstring; each with its 95% bootstrap interval over test clips (``<metric>_interval``)."""
    registry_path, reg, out_dir, cache, src, protos, lit, lit_dir = _common(
        encoder, registry, name, protocols, lit, out_dir, cache, lit_dir, encoder_config, log)
    if task not in reg:
        raise ValueError(f"unknown task {task!r}; {registry_path} has {sorted(reg)}")
    spec = reg[task]
    if spec.kind != "retrieval":
        raise ValueError(f"task {task!r} is {spec.kind}, not retrieval; give a retrieval task of {registry_path}")
    data = _alignment_data(registry_path, reg, task, alignment_data) if "lit" in protos else None
    heads = _Heads(src, lit, data, lit_dir, log)
    cuts = None
    records = []
    for protocol in protos:
        params = {"encoder": src.name, "source": src.desc, "encoder_fingerprint": src.fingerprint, "task": task,
                  "kind": "retrieval", "protocol": protocol, "pooling": protocol, "registry": str(registry_path),
                  "n_boot": n_boot, **heads.params(protocol)}
        params = json.loads(json.dumps(params, default=str))
        path = record_path(out_dir, "retrieval", f"{src.name}__{task}__{protocol}")
        rec = _cached_record(path, params)
        if rec is None:
            cuts = cuts if cuts is not None else list(load_task_split(spec, "test", registry_path.parent))
            per_seed = []
            unreadable = 0
            for obj in heads.get(protocol):
                frames = _frames(cache, obj, cuts, f"{task}/test")
                unreadable = len(frames.unreadable)
                per_seed.append(score_retrieval(obj, frames, cuts, progress=progress))
            intervals = retrieval_intervals(per_seed, n_boot=n_boot)
            metrics = {k: float(np.mean([s.metrics[k] for s in per_seed])) for k in per_seed[0].metrics}
            metrics.update({f"{k}_interval": list(v) for k, v in intervals.items()})
            head = "t2a_R@1"
            metrics = {"metric": head, "test": metrics[head], "interval": metrics[f"{head}_interval"], **metrics,
                       "per_seed": {k: [s.metrics[k] for s in per_seed] for k in per_seed[0].items},
                       "n_clips": per_seed[0].n_clips, "n_captions": per_seed[0].n_captions,
                       "unreadable": unreadable}
            path.parent.mkdir(parents=True, exist_ok=True)
            rec = json.loads(write_record(out_dir, "retrieval", f"{src.name}__{task}__{protocol}", params,
                                          metrics).read_text())
        m = rec["metrics"]
        log(f"[retrieval] {src.name:>16} {task:>14} {protocol:>9}: R@1 a2t {m['a2t_R@1']:.3f} t2a {m['t2a_R@1']:.3f}"
            f" [{m['interval'][0]:.3f}, {m['interval'][1]:.3f}], mAP@10 a2t {m['a2t_mAP@10']:.3f} "
            f"t2a {m['t2a_mAP@10']:.3f}")
        records.append(rec)
    return records


def evaluate_zero_shot(encoder: str | os.PathLike | nn.Module | None, registry: str | os.PathLike,
                       tasks: list[str] | None = None, *, name: str | None = None, protocols=PROTOCOLS,
                       template: str = DEFAULT_TEMPLATE, lit: LiTConfig | None = None,
                       alignment_data: str | os.PathLike | None = None, alignment_task: str = "retrieval",
                       out_dir: str | os.PathLike = "papermill_runs/records/eval",
                       cache: EmbeddingCache | str | os.PathLike | None = None,
                       lit_dir: str | os.PathLike | None = None,
                       encoder_config: dict | str | os.PathLike | None = None, n_boot: int = 2000,
                       log=print) -> list[dict]:
    """Zero-shot classification from class-name prompts (``template``, e.g. "the sound of {label}") on every
    multiclass task of the registry (or ``tasks``): accuracy on the test split with a 95% bootstrap interval over
    test clips; one record per task and protocol (``<out_dir>/zeroshot__<name>__<task>__<protocol>.json``).

    ``encoder`` as in :func:`evaluate_retrieval`. LiT heads are aligned on ``alignment_data`` (default: the train
    split of the registry's ``alignment_task``), the same runs :func:`evaluate_retrieval` trains and reuses."""
    registry_path, reg, out_dir, cache, src, protos, lit, lit_dir = _common(
        encoder, registry, name, protocols, lit, out_dir, cache, lit_dir, encoder_config, log)
    names = tasks or [n for n, s in reg.items() if s.kind == "multiclass"]
    for t in names:
        if t not in reg:
            raise ValueError(f"unknown task {t!r}; {registry_path} has {sorted(reg)}")
        if reg[t].kind != "multiclass":
            raise ValueError(f"task {t!r} is {reg[t].kind}; zero-shot classification covers multiclass tasks")
    if "{label}" not in template:
        raise ValueError(f"zero-shot template {template!r} has no '{{label}}' placeholder")
    data = _alignment_data(registry_path, reg, alignment_task, alignment_data) if "lit" in protos else None
    heads = _Heads(src, lit, data, lit_dir, log)
    records = []
    for t in names:
        spec = reg[t]
        for protocol in protos:
            params = {"encoder": src.name, "source": src.desc, "encoder_fingerprint": src.fingerprint, "task": t,
                      "kind": "zeroshot", "protocol": protocol, "pooling": protocol, "registry": str(registry_path),
                      "template": template, "n_boot": n_boot, **heads.params(protocol)}
            params = json.loads(json.dumps(params, default=str))
            path = record_path(out_dir, "zeroshot", f"{src.name}__{t}__{protocol}")
            rec = _cached_record(path, params)
            if rec is None:
                cuts = list(load_task_split(spec, "test", registry_path.parent))
                per_seed = []
                for obj in heads.get(protocol):
                    frames = _frames(cache, obj, cuts, f"{t}/test")
                    per_seed.append(zero_shot_correct(obj, frames, spec.labels, template, task=t))
                avg = np.mean(per_seed, axis=0)
                lo, hi = bootstrap_interval([avg], n_boot=n_boot)
                metrics = {"metric": "accuracy", "test": float(avg.mean()), "interval": [lo, hi],
                           "test_per_seed": [float(c.mean()) for c in per_seed], "chance": 1.0 / len(spec.labels),
                           "n_test": int(avg.size), "unreadable": len(frames.unreadable)}
                path.parent.mkdir(parents=True, exist_ok=True)
                rec = json.loads(write_record(out_dir, "zeroshot", f"{src.name}__{t}__{protocol}", params,
                                              metrics).read_text())
            m = rec["metrics"]
            log(f"[zero-shot] {src.name:>16} {t:>18} {protocol:>9}: accuracy {m['test']:.3f} "
                f"[{m['interval'][0]:.3f}, {m['interval'][1]:.3f}] (chance {m['chance']:.3f})")
            records.append(rec)
    return records
