"""One trainer for every objective: DDP (torchrun, or local gloo processes), bf16 autocast, gradient accumulation,
EMA, crash-safe checkpoints and exact resume.

    python -m audiolp.train.trainer --config cfg.json                    # one process
    torchrun --nproc_per_node=2 -m audiolp.train.trainer --config cfg.json

The objective is an nn.Module ``forward(batch, step) -> ObjectiveOutput``; the trainer never looks inside it.

Exactness. One optimizer step consumes ``grad_accum`` micro-batches per rank; the sampler hands rank r every
world_size-th batch of one global stream, so 2 ranks x 1 micro-batch see the same data per step as 1 rank x 2
micro-batches, and the step's gradient is the same in both. By default (``loss_weighting="global_mean"``) each
micro-batch loss is weighted by its share of the clips of the whole global batch (one small all-reduce of the clip
count per step), so uneven max-duration batches average like one big batch; an objective whose loss is a mean over
other units says how many with ``loss_weight(batch, step)`` (captioning: its target tokens).
Pre-emption. SIGTERM or SIGUSR1 (what SLURM and most schedulers send before killing a job) makes every rank finish
the current step, write a checkpoint and return; rerunning the same command resumes exactly. Ranks agree on the
stop through the all-reduce each step already makes, so no rank stops alone.
A checkpoint records the number of batches consumed in the current epoch (not the sampler's own counter, which runs
ahead when DataLoader workers prefetch), the RNG states of every rank, optimizer, scheduler and EMA; a resumed run continues bit for bit on CPU (tested with
SpecAugment, dropout, EMA, accumulation, 1 and 2 ranks), with or without DataLoader workers: SpecAugment is seeded
per batch (see ``audiolp.data.loader``), so no RNG stream lives in the workers.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import random
import resource
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from audiolp.train.checkpoint import (CHECKPOINT_DIR, latest_checkpoint, prune_checkpoints, read_checkpoint,
                                      remove_stale_temp, save_encoder_config, save_final_encoder, write_checkpoint)
from audiolp.train.config import RESUMABLE_CHANGES, TrainConfig
from audiolp.train.distributed import DistInfo, all_gather_object, all_reduce_sum, barrier, cleanup, init_distributed

if TYPE_CHECKING:
    from audiolp.objectives.base import ObjectiveOutput


# ---------------------------------------------------------------------------------------------------------------
# Building blocks (importable: notebooks and load_encoder use the same functions)
# ---------------------------------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_encoder_config(cfg: TrainConfig):
    """The preset, with attention scaling chosen for the optimizer, then the user's overrides (which win)."""
    import dataclasses

    from audiolp.models.zipformer import ZipformerConfig
    from audiolp.train.optim import attention_scaling_for

    base = ZipformerConfig.preset(cfg.model)
    known = {f.name for f in dataclasses.fields(ZipformerConfig)}
    unknown = sorted(set(cfg.model_overrides) - known)
    if unknown:
        raise ValueError(f"TrainConfig.model_overrides: unknown ZipformerConfig field(s) {unknown}; known: "
                         f"{sorted(known)}")
    scaling = bool(attention_scaling_for(cfg.optim.name))
    if "attention_scaling" in cfg.model_overrides and bool(cfg.model_overrides["attention_scaling"]) != scaling:
        # build_optimizer sets the encoder's scaling to match the optimizer; a different value here would be ignored
        # in training and then misdescribe the run in encoder_config.json.
        raise ValueError(f"TrainConfig.model_overrides.attention_scaling={cfg.model_overrides['attention_scaling']} "
                         f"contradicts optim.name={cfg.optim.name!r} (which implies {scaling}); drop the override")
    d = base.to_dict()
    d.update(cfg.model_overrides)
    d["attention_scaling"] = scaling
    return ZipformerConfig.from_dict(d)


def objective_config_for(cfg: TrainConfig) -> dict:
    """cfg.objective_config, with the run-wide seed and text model filled in where the objective has such fields."""
    import dataclasses

    from audiolp.objectives import objective_config_class

    fields = {f.name for f in dataclasses.fields(objective_config_class(cfg.objective))}
    out = dict(cfg.objective_config)
    if "seed" in fields and "seed" not in out:
        out["seed"] = cfg.seed
    if cfg.text_model is not None:
        for name in ("text_model", "tokenizer"):
            if name in fields:
                if name in out and out[name] != cfg.text_model:
                    raise ValueError(f"TrainConfig.text_model={cfg.text_model!r} but objective_config.{name}="
                                     f"{out[name]!r}; give the text model in one place")
                out[name] = cfg.text_model
    return out


def derive_label_set(cuts) -> list[str]:
    """Every label of the manifest, sorted (the tagging head's classes; independent of the scale subset)."""
    from audiolp.data.schema import cut_labels

    labels = sorted({lab for c in cuts for lab in cut_labels(c)})
    if not labels:
        raise ValueError("objective 'tagging' needs labels, but no cut in the manifest has "
                         "supervision.custom['labels']; give TrainConfig.label_set or use a labelled manifest")
    return labels


def min_clip_seconds(cfg: TrainConfig) -> float:
    """The shortest clip the encoder accepts: lhotse gives a clip round(duration / hop) fbank frames, so one of
    MIN_INPUT_FRAMES hops always has enough."""
    from audiolp.models.zipformer import Zipformer

    return Zipformer.MIN_INPUT_FRAMES * cfg.loader.feature_config.frame_shift_s


def screen_training_cuts(cuts, needs_captions: bool, min_seconds: float, log=print):
    """Clips that would stop a run mid-way are left out before it starts: shorter than ``min_seconds`` (the
    encoder's minimum), or without a non-empty caption when the objective needs one. One pass over the manifest
    (lazy ones stay lazy). Returns (the ids to leave out, {reason: count}); each reason is logged with examples
    (id, file)."""
    from audiolp.data.schema import clean_captions

    bad: dict[str, list] = {"too_short": [], "no_caption": []}
    for c in cuts:
        if c.duration < min_seconds:
            bad["too_short"].append(c)
        elif needs_captions and not clean_captions((c.supervisions[0].custom or {}).get("caption")
                                                   if c.supervisions else None):
            bad["no_caption"].append(c)
    counts = {k: len(v) for k, v in bad.items()}
    if not any(counts.values()):
        return set(), counts

    def where(c) -> str:
        src = c.recording.sources[0].source if getattr(c, "has_recording", False) and c.recording.sources else "?"
        return f"{c.id} ({src})"

    why = {"too_short": f"shorter than {min_seconds:.3f} s, the encoder's minimum",
           "no_caption": "without a caption in supervision.custom['caption']"}
    for reason, items in bad.items():
        if items:
            log(f"[audiolp] leaving out {len(items)} clip(s) {why[reason]}: "
                + ", ".join(where(c) for c in items[:3]) + (", ..." if len(items) > 3 else ""))
    return {c.id for items in bad.values() for c in items}, counts


class _IdFilter:
    """A picklable cut filter (lhotse's lazy filter may travel to DataLoader workers): the cuts whose id is in
    ``ids`` (``keep=True``) or not in it."""

    def __init__(self, ids: set[str], keep: bool):
        self.ids, self.keep = ids, keep

    def __call__(self, cut) -> bool:
        return (cut.id in self.ids) == self.keep


def load_training_cuts(cfg: TrainConfig, log=print):
    """The manifest without the clips a run cannot use (see ``screen_training_cuts``), cut down to ``cfg.scale``
    (nested subsets; small corpora map the paper's scale to the same fraction of PAPER_FULL_PAIRS).
    Returns (all cuts, training cuts, scale info or None, {reason: clips left out})."""
    from audiolp.data.schema import load_manifest, shar_metadata
    from audiolp.objectives import OBJECTIVES

    if not cfg.data:
        raise ValueError("TrainConfig.data is empty; give the path of a cut manifest (cuts.jsonl.gz) or Shar dir")
    cuts = load_manifest(cfg.data)
    # The scans below (screen, scale, the tagging label set) read metadata only: for a Shar corpus, its cut
    # shards without the audio tars; training then reads the audio of the chosen clips.
    meta = shar_metadata(cfg.data) or cuts
    needs_captions = getattr(OBJECTIVES[cfg.objective][0], "requires_captions", False)
    left_ids, left_out = screen_training_cuts(meta, needs_captions, min_clip_seconds(cfg), log=log)
    usable = meta.filter(_IdFilter(left_ids, keep=False)) if left_ids else meta
    if cfg.scale is None:
        return meta, (cuts.filter(_IdFilter(left_ids, keep=False)) if left_ids else cuts), None, left_out
    from audiolp.data.scale import PAPER_FULL_PAIRS, select_scale

    subset, info = select_scale(usable, cfg.scale, seed=cfg.seed, reference_total=PAPER_FULL_PAIRS)
    log(f"[audiolp] scale {cfg.scale!r}: " + (info.describe() if hasattr(info, "describe") else str(info)))
    if meta is not cuts:  # Shar: the chosen clips, read with their audio, in manifest order
        subset = cuts.filter(_IdFilter({c.id for c in subset}, keep=True))
    return meta, subset, info, left_out


class EMA:
    """Exponential moving average of every floating tensor of the state dict (buffers are copied).

    The effective decay ramps up as min(decay, (1 + n) / (10 + n)) so that early averages are not dominated by
    the random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        src, dst = model.state_dict(), self.module.state_dict()
        ema_t, cur_t = [], []
        for k, v in dst.items():
            if v.dtype.is_floating_point:
                ema_t.append(v)
                cur_t.append(src[k].detach())
            else:
                v.copy_(src[k])
        if ema_t:
            torch._foreach_lerp_(ema_t, cur_t, 1.0 - d)


def capture_rng(device: torch.device) -> dict:
    np_state = np.random.get_state()
    py = random.getstate()
    out = {
        "torch_cpu": torch.get_rng_state(),
        "numpy": [np_state[0], [int(x) for x in np_state[1]], int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py[0], list(py[1]), py[2]],
    }
    if device.type == "cuda":
        out["torch_cuda"] = torch.cuda.get_rng_state(device)
    return out


def restore_rng(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch_cpu"].to(torch.uint8))
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    if device.type == "cuda" and "torch_cuda" in state:
        torch.cuda.set_rng_state(state["torch_cuda"].to(torch.uint8), device)


def sampler_position(sampler, epoch: int, consumed: int) -> dict:
    """lhotse's sampler state, with the epoch's batch count set to what the trainer consumed.

    lhotse fast-forwards by the number of batches its diagnostics counted; with DataLoader workers the sampler runs
    ahead of training by the prefetched batches, so its own count would skip data on resume.
    """
    sd = sampler.state_dict()
    sd["epoch"] = epoch
    sd["diagnostics"] = {"current_epoch": epoch, "stats_per_epoch": {str(epoch): {
        "epoch": epoch, "kept_cuts": 0, "discarded_cuts": 0, "kept_batches": consumed, "discarded_batches": 0}}}
    return sd


def restore_sampler(sampler, state: dict) -> None:
    state = copy.deepcopy(state)
    diag = state["diagnostics"]
    diag["stats_per_epoch"] = {int(k): v for k, v in diag["stats_per_epoch"].items()}  # JSON made the keys str
    sampler.load_state_dict(state)  # fast-forwards to the recorded batch


class BatchStream:
    """Batches across epoch boundaries, counting what training consumed so that a checkpoint knows the position."""

    def __init__(self, loader, epoch: int, consumed: int, max_epochs: int | None, on_new_epoch, restored: bool):
        self.loader, self.epoch, self.consumed = loader, epoch, consumed
        self.max_epochs, self.on_new_epoch = max_epochs, on_new_epoch
        self._restored = restored
        self._it = None
        self.closed = False
        self.exhausted = max_epochs is not None and epoch >= max_epochs

    def start(self) -> None:
        """Create the iterator now: DataLoader draws a base seed from the global RNG when iterated, so on resume this
        must happen before the saved RNG state is restored."""
        if self._it is None and not self.exhausted:
            if not self._restored:
                self.loader.sampler.set_epoch(self.epoch)
            if hasattr(self.loader.dataset, "epoch"):
                self.loader.dataset.epoch = self.epoch  # seeds SpecAugment (copied into the epoch's workers)
            self._restored = False
            self._it = iter(self.loader)

    def next(self) -> dict | None:
        while not self.exhausted:
            self.start()
            try:
                batch = next(self._it)
            except StopIteration:
                self._it = None
                if self.consumed == 0:
                    raise RuntimeError(f"epoch {self.epoch} yielded no batch: the manifest is smaller than one batch "
                                       "per rank, or every cut was filtered out")
                self.epoch += 1
                self.consumed = 0
                self.exhausted = self.max_epochs is not None and self.epoch >= self.max_epochs
                # Also at the last epoch: a resume with a larger max_epochs then continues as one long run would.
                self.on_new_epoch(self.epoch)
                continue
            self.consumed += 1
            return batch
        return None

    @property
    def started(self) -> bool:
        """Whether the current epoch's iterator exists (recorded in checkpoints: see ``Trainer.__init__``)."""
        return self._it is not None

    def close(self) -> None:
        """Drop the iterator, which shuts its DataLoader workers down. The stream cannot be read again."""
        self._it = None
        self.closed = True


STOP_SIGNALS = ("SIGTERM", "SIGUSR1")


@contextlib.contextmanager
def _stop_signals(trainer: "Trainer"):
    """While training, SIGTERM / SIGUSR1 only record a stop request (the loop checkpoints and returns); the previous
    handlers come back afterwards. Signal handlers can only be set from the main thread: elsewhere this is a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum, frame):
        trainer.stop_signal = signal.Signals(signum).name

    previous = {}
    for name in STOP_SIGNALS:
        sig = getattr(signal, name, None)
        if sig is not None:
            previous[sig] = signal.signal(sig, request_stop)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _LogWindow:
    """Sums over the micro-batches since the last log record (this rank's; all-reduced when the window closes)."""

    def __init__(self, device: torch.device):
        self.loss = torch.zeros((), dtype=torch.float64, device=device)  # sum of weight * loss, kept on the device
        self.reset()

    def reset(self) -> None:
        self.loss.zero_()
        self.micro, self.logged, self.weight, self.audio, self.items, self.skipped = 0, 0, 0.0, 0.0, 0, 0
        self.logs: dict[str, float] = {}
        self.t0 = time.perf_counter()

    def add(self, batch: dict, out, weight: float) -> None:
        self.micro += 1  # every micro-batch, so that all ranks agree on whether a window is open
        self.skipped += len(batch.get("skipped_cut_ids", ()))
        if not _num_clips(batch):  # the stand-in of an all-unreadable batch: nothing to log
            return
        self.logged += 1
        self.loss += out.loss.detach().double() * weight
        self.weight += weight
        self.audio += float(batch.get("audio_seconds", 0.0))
        self.items += int(out.num_items)
        for k, v in (out.logs or {}).items():
            self.logs[k] = self.logs.get(k, 0.0) + float(v)


def _move(batch: dict, device: torch.device) -> dict:
    if device.type == "cpu":
        return batch
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def _num_clips(batch: dict) -> int:
    if "cut_ids" in batch:
        return len(batch["cut_ids"])
    return int(batch["features"].shape[0])


def _peak_memory(device: torch.device) -> tuple[int, str]:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_memory_allocated"
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "cpu_max_rss"


# ---------------------------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------------------------
class Trainer:
    def __init__(self, cfg: TrainConfig, info: DistInfo):
        self.cfg, self.info = cfg, info
        self.run_dir = Path(cfg.run_dir)
        self.ckpt_root = self.run_dir / CHECKPOINT_DIR
        self.device = info.device
        self.log = print if info.is_main else (lambda *a, **k: None)
        precision = cfg.precision
        if precision == "auto":
            precision = "bf16" if self.device.type == "cuda" else "fp32"
        self.precision = precision
        self.stop_signal: str | None = None  # set by the SIGTERM/SIGUSR1 handler on this rank
        self._stop_agreed = False  # some rank got a stop signal (known after the step's all-reduce)

    # -- setup ----------------------------------------------------------------------------------------------------
    def _resolve_resume(self) -> Path | None:
        ckpt = latest_checkpoint(self.ckpt_root) if self.ckpt_root.exists() else None
        saved_path = self.run_dir / "config.json"
        if ckpt is not None and saved_path.exists():
            try:
                saved = TrainConfig.load(saved_path)
            except ValueError as e:  # e.g. written by an audiolp version with other config fields
                raise ValueError(f"{self.run_dir} holds a run whose {saved_path.name} this audiolp cannot read ({e}); "
                                 "use a new run_dir, or the audiolp version that started that run") from e
            if self.cfg.label_set is None and saved.label_set is not None:
                self.cfg.label_set = saved.label_set  # it was derived from the manifest on the first start
            bad = {k: v for k, v in saved.diff(self.cfg).items() if k not in RESUMABLE_CHANGES}
            if bad:
                lines = "; ".join(f"{k}: saved {a!r} vs now {b!r}" for k, (a, b) in sorted(bad.items()))
                raise ValueError(f"{self.run_dir} holds a run with another config ({lines}); resume with the same "
                                 f"config (only {sorted(RESUMABLE_CHANGES)} may change) or use a new run_dir")
        return ckpt

    def setup(self) -> None:
        cfg, info = self.cfg, self.info
        from audiolp.data.loader import make_dataloader
        from audiolp.models.zipformer import Zipformer
        from audiolp.objectives import build_objective, init_encoder_from
        from audiolp.train.optim import build_optimizer

        if info.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_temp(self.ckpt_root)
        barrier(info)
        self.resume_from = self._resolve_resume()

        all_cuts, cuts, self.scale_info, self.left_out_clips = load_training_cuts(cfg, log=self.log)
        self.label_set = None
        if cfg.objective == "tagging":
            self.label_set = (cfg.label_set or cfg.objective_config.get("label_set") or derive_label_set(all_cuts))
            cfg.label_set = list(self.label_set)
        elif cfg.label_set is not None:
            raise ValueError(f"TrainConfig.label_set is only used by objective 'tagging', not {cfg.objective!r}")
        if info.is_main:
            cfg.save(self.run_dir / "config.json")
            self.log("[audiolp] TrainConfig:\n" + cfg.to_json())

        seed_everything(cfg.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
        self.encoder_cfg = build_encoder_config(cfg)
        encoder = Zipformer(self.encoder_cfg)
        obj_cfg = objective_config_for(cfg)
        self.objective = build_objective(cfg.objective, encoder, obj_cfg,
                                         **({"label_set": self.label_set} if cfg.objective == "tagging" else {}))
        if cfg.init_from and self.resume_from is None:
            src = Path(cfg.init_from)
            if src.is_dir():
                src = src / "encoder.safetensors"
            init_encoder_from(self.objective, src)  # a bare encoder file or a whole objective's model.safetensors
            self.log(f"[audiolp] encoder initialised from {src}")
        self.objective.to(self.device)
        if info.is_main:
            save_encoder_config(self.run_dir, self.encoder_cfg)
        self.num_params = sum(p.numel() for p in self.objective.parameters())
        self.num_trainable = sum(p.numel() for p in self.objective.parameters() if p.requires_grad)
        self.ema = EMA(self.objective, cfg.ema_decay) if (cfg.ema_decay > 0 and info.is_main) else None

        self.model: nn.Module = self.objective
        if info.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.model = DDP(self.objective, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                             find_unused_parameters=cfg.ddp_find_unused_parameters)
        self.optimizer, self.scheduler = build_optimizer(self.objective, cfg.optim)

        self.step, self.epoch, self.consumed = 0, 0, 0
        self.history: list[dict] = []
        self.audio_seconds_total, self.wall_total = 0.0, 0.0
        self.unreadable_clips = 0  # clips the loader left out because their audio could not be read
        rng_state = None
        if self.resume_from is not None:
            rng_state = self._load(self.resume_from)
        self.loader = make_dataloader(cuts, cfg.loader, seed=cfg.seed, rank=info.rank, world_size=info.world_size,
                                      epoch=self.epoch, train=True, pin_memory=self.device.type == "cuda")
        if self.resume_from is not None:
            restore_sampler(self.loader.sampler, self._sampler_state)
        self.stream = BatchStream(self.loader, self.epoch, self.consumed, cfg.max_epochs,
                                  on_new_epoch=lambda e: self.scheduler.step_epoch(e),  # e = epochs completed
                                  restored=self.resume_from is not None)
        # The epoch's iterator draws from the global RNG when created. A checkpoint taken with the iterator already
        # made (mid-epoch) restores the RNG after making it; one taken between epochs (the iterator not made yet)
        # makes it from the restored RNG, as the uninterrupted run would.
        if self.resume_from is None or self._iterator_started:
            self.stream.start()
        if rng_state is not None:
            restore_rng(rng_state, self.device)
        else:
            seed_everything(cfg.seed + info.rank)  # different dropout / augmentation draws on each rank

    def _load(self, path: Path) -> dict:
        parts = read_checkpoint(path, ("model", "ema", "optimizer", "trainer"))
        self.objective.load_state_dict(parts["model"], strict=True)
        if self.ema is not None:
            if parts["ema"] is None:
                raise ValueError(f"{path} has no ema.safetensors but ema_decay={self.cfg.ema_decay}")
            self.ema.module.load_state_dict(parts["ema"], strict=True)
        self.optimizer.load_state_dict(parts["optimizer"])
        st = parts["trainer"]
        self.scheduler.load_state_dict(st["scheduler"])
        if st["world_size"] != self.info.world_size:
            raise ValueError(f"{path} was written by {st['world_size']} ranks, this run has {self.info.world_size}: "
                             "the data order would change; resume with the same number of processes")
        self.step, self.epoch, self.consumed = st["step"], st["epoch"], st["consumed"]
        self.history = list(st["history"])
        self.audio_seconds_total, self.wall_total = st["audio_seconds_total"], st["wall_time_s"]
        self.unreadable_clips = st.get("unreadable_clips", 0)
        if self.ema is not None:
            self.ema.updates = st["ema_updates"]
        self._sampler_state = st["sampler"]
        self._iterator_started = st.get("iterator_started", True)
        self.log(f"[audiolp] resumed from {path} at step {self.step} (epoch {self.epoch}, batch {self.consumed})")
        return st["rng"][self.info.rank]

    # -- checkpoints ----------------------------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        rngs = all_gather_object(capture_rng(self.device), self.info)
        if self.info.is_main:
            trainer_state = {
                "step": self.step, "epoch": self.stream.epoch, "consumed": self.stream.consumed,
                "sampler": sampler_position(self.loader.sampler, self.stream.epoch, self.stream.consumed),
                "scheduler": self.scheduler.state_dict(), "rng": rngs, "history": self.history,
                "audio_seconds_total": self.audio_seconds_total, "wall_time_s": self.wall_total + self._elapsed(),
                "unreadable_clips": self.unreadable_clips, "iterator_started": self.stream.started,
                "world_size": self.info.world_size, "ema_updates": self.ema.updates if self.ema else 0,
            }
            parts = {"model": self.objective.state_dict(), "optimizer": self.optimizer.state_dict(),
                     "trainer": trainer_state}
            if self.ema is not None:
                parts["ema"] = self.ema.module.state_dict()
            write_checkpoint(self.ckpt_root, self.step, parts)
            prune_checkpoints(self.ckpt_root, self.cfg.keep_last)
        barrier(self.info)
        self._last_saved = self.step

    def _elapsed(self) -> float:
        return time.perf_counter() - self._t_start

    # -- the loop -------------------------------------------------------------------------------------------------
    def run(self, stop_after: int | None = None) -> Path:
        cfg, info = self.cfg, self.info
        if self.stream.closed:  # its loader position is gone; a new Trainer resumes from the checkpoint
            raise RuntimeError("Trainer.run() was already called on this trainer; build a new one (or call "
                               f"audiolp.train.trainer.train again) to continue from the checkpoint in {self.run_dir}")
        self._t_start = time.perf_counter()
        self._last_saved = self.step if self.resume_from is not None else -1
        set_batch_count = getattr(self.objective.encoder, "set_batch_count", None)
        bar = None
        if info.is_main and cfg.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.max_steps, initial=self.step, desc=f"{cfg.objective}", dynamic_ncols=True,
                       file=sys.stderr)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            # float32 work left outside bf16 autocast (losses, norms, the optimizer) may use TF32 tensor cores.
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.model.train()
        limit = cfg.max_steps if stop_after is None else min(cfg.max_steps, stop_after)
        self.stop_signal, self._stop_agreed = None, False
        with _stop_signals(self):  # kept through the final checkpoint: a second SIGTERM must not cut it short
            try:
                self._loop(limit, set_batch_count, bar)
                if bar is not None:
                    bar.close()
                if self._last_saved != self.step:
                    self.save_checkpoint()  # before close(): it records whether the epoch's iterator exists
            finally:
                # Workers ignore SIGTERM (the loader's worker_init_fn) so that a pre-emption reaches this process
                # only; they are shut down here, on every exit path.
                self.stream.close()
        completed = self.step >= cfg.max_steps or self.stream.exhausted
        if self._stop_agreed:
            self.log(f"[audiolp] stopped by a signal after step {self.step}; checkpoint written. Rerun the same "
                     f"command to resume (run_dir {self.run_dir}).")
        self.wall_total += self._elapsed()
        if info.is_main:
            if completed:
                self._export_encoder()
            self._write_results(completed)
        barrier(info)
        return self.run_dir

    def _loop(self, limit: int, set_batch_count, bar) -> None:
        cfg = self.cfg
        window = _LogWindow(self.device)
        while self.step < limit:
            micro = []
            for _ in range(cfg.grad_accum):
                b = self.stream.next()
                if b is None:
                    break
                micro.append(b)
            if not micro:
                break  # max_epochs reached (on every rank at once: lhotse gives each rank the same batch count)
            if set_batch_count is not None:
                set_batch_count(self.step)
            for batch, out, weight in self.accumulate_gradients(micro):
                window.add(batch, out, weight)
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_([p for p in self.objective.parameters() if p.requires_grad],
                                               cfg.max_grad_norm)
            if self._step_weight > 0:  # not when no clip of the whole global batch could be read
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            self.scheduler.step_batch(self.step)  # batches done
            if self.ema is not None and self.step % cfg.ema_every == 0:
                self.ema.update(self.objective)
            if bar is not None:
                bar.update(1)

            done = self.step >= limit or self._stop_agreed
            ckpt_due = self.step % cfg.checkpoint_every == 0 and not done
            # A checkpoint closes the log window too, so that its totals (audio seconds) are whole.
            if self.step % cfg.log_every == 0 or done or ckpt_due:
                self._close_window(window, bar)
            if ckpt_due:
                self.save_checkpoint()
            if self._stop_agreed:
                break
        if window.micro:  # the data ran out in the middle of a log window
            self._close_window(window, bar)

    def _close_window(self, window: "_LogWindow", bar) -> None:
        """All-reduce the window's sums, append a history record, log it, and start a new window."""
        cfg, info = self.cfg, self.info
        loss_sum, weight_sum, audio, items, skipped = all_reduce_sum(
            [float(window.loss.item()), window.weight, window.audio, window.items, window.skipped], info)
        self.unreadable_clips += int(skipped)
        self.audio_seconds_total += audio
        if weight_sum == 0:  # no clip of the window could be read (on any rank): no loss to log
            window.reset()
            return
        dt = time.perf_counter() - window.t0
        loss = loss_sum / weight_sum
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"loss is {loss} at step {self.step} ({cfg.objective}, precision {self.precision}); lower "
                f"optim.lr, try precision='fp32', or check the batch data (run_dir {self.run_dir})")
        lr = float(self.scheduler.get_last_lr()[0])
        rec = {"step": self.step, "epoch": self.stream.epoch, "loss": loss, "lr": lr,
               "audio_s_per_s": audio / dt if dt > 0 else 0.0, "items": int(items)}
        # The objective's own logs are this rank's means; its "loss" must not replace the all-rank loss.
        rec.update({k: v / max(window.logged, 1) for k, v in window.logs.items() if k not in rec})
        self.history.append(rec)
        if info.is_main:
            self._tb_log(rec)
            if bar is not None:
                bar.set_postfix(loss=f"{loss:.4f}", audio_s_per_s=f"{rec['audio_s_per_s']:.0f}")
        window.reset()

    def accumulate_gradients(self, micro: list[dict]) -> list[tuple[dict, "ObjectiveOutput", float]]:
        """Forward + backward of one optimizer step's micro-batches on this rank; gradients add up in ``.grad``
        (DDP all-reduces on the last micro-batch). Returns (batch, objective output, loss weight) per micro-batch."""
        info = self.info
        weights, step_total = self._micro_weights(micro)
        self._step_weight = step_total
        done = []
        for i, batch in enumerate(micro):
            # A micro-batch whose clips were all unreadable forwards a stand-in with weight 0: this rank still joins
            # DDP's gradient all-reduce, and the step is the mean over the clips that were read.
            inputs = _move(batch if _num_clips(batch) else self._stand_in(), self.device)
            last = i == len(micro) - 1
            sync_ctx = self.model.no_sync() if (info.distributed and not last) else contextlib.nullcontext()
            autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if self.precision == "bf16"
                        else contextlib.nullcontext())
            with sync_ctx:
                with autocast:
                    out = self.model(inputs, step=self.step)
                # DDP averages gradients over ranks: the world_size factor turns that average into the sum.
                scale = weights[i] * info.world_size / step_total if step_total > 0 else 0.0
                (out.loss.float() * scale).backward()
            done.append((batch, out, weights[i]))
        return done

    def _stand_in(self) -> dict:
        """One second of silence captioned "silence", unlabelled: the input of an empty micro-batch (loss weight 0).
        Under contrastive DDP the other ranks see it as one extra negative in that step."""
        frames = int(round(self.cfg.loader.feature_config.frames_per_second))
        return {"features": torch.zeros(1, frames, self.cfg.loader.feature_config.num_mel_bins),
                "feature_lens": torch.tensor([frames]), "captions": [["silence"]], "labels": [[]],
                "sources": ["stand-in"], "domains": ["sound"], "cut_ids": ["stand-in"], "audio_seconds": 0.0,
                "skipped_cut_ids": []}

    def _micro_weights(self, micro: list[dict]) -> tuple[list[float], float]:
        """Each micro-batch's loss weight and the step's total weight over all ranks (see ``loss_weighting``)."""
        # Objectives whose loss is a mean over other units than clips (captioning: tokens) say how many.
        count = getattr(self.objective, "loss_weight", None)

        def weight(b: dict) -> float:
            if not _num_clips(b):  # every clip of it was unreadable: its stand-in counts for nothing
                return 0.0
            if self.cfg.loss_weighting == "micro_batches":
                return 1.0
            return float(count(b, self.step) if count is not None else _num_clips(b))

        weights = [weight(b) for b in micro]
        # The same all-reduce tells every rank whether any of them was asked to stop (it stops after this step).
        total, stops = all_reduce_sum([sum(weights), float(self.stop_signal is not None)], self.info)
        self._stop_agreed = stops > 0
        return weights, total

    # -- outputs --------------------------------------------------------------------------------------------------
    def _tb_log(self, rec: dict) -> None:
        if not hasattr(self, "_tb"):
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tb"))
        for k, v in rec.items():
            if k not in ("step", "epoch") and isinstance(v, (int, float)):
                self._tb.add_scalar(f"train/{k}", v, rec["step"])
        self._tb.flush()

    def _export_encoder(self) -> None:
        enc = self.objective.encoder.state_dict()
        ema_enc = None
        if self.ema is not None:
            ema_enc = self.ema.module.encoder.state_dict()
        save_final_encoder(self.run_dir, enc, ema_enc, self.step)

    def _write_results(self, completed: bool) -> None:
        losses = [h["loss"] for h in self.history]
        tail = losses[-max(1, len(losses) // 10):] if losses else []
        peak, peak_kind = _peak_memory(self.device)
        res = {
            "completed": completed,
            "stopped_by_signal": (self.stop_signal or "on another rank") if self._stop_agreed else None,
            "steps": self.step,
            "epoch": self.stream.epoch,
            "objective": self.cfg.objective,
            "model": self.cfg.model,
            "world_size": self.info.world_size,
            "device": str(self.device),
            "precision": self.precision,
            "num_params": self.num_params,
            "num_trainable_params": self.num_trainable,
            "final_loss": losses[-1] if losses else None,
            "final_loss_mean_last_10pct": float(np.mean(tail)) if tail else None,
            "first_loss": losses[0] if losses else None,
            "min_loss": min(losses) if losses else None,
            "loss_curve": [[h["step"], h["loss"]] for h in self.history],
            "history": self.history,
            "audio_seconds_total": self.audio_seconds_total,
            "unreadable_clips": self.unreadable_clips,  # left out by the loader (see the warnings naming them)
            "left_out_clips": self.left_out_clips,  # left out before the start (too short, no caption)
            "wall_time_s": self.wall_total,
            "throughput_audio_s_per_s": self.audio_seconds_total / self.wall_total if self.wall_total > 0 else 0.0,
            "peak_memory_bytes": peak,
            "peak_memory_kind": peak_kind,
            "scale": self.cfg.scale,
            "scale_info": _jsonable(self.scale_info),
            "config": self.cfg.to_dict(),
        }
        tmp = self.run_dir / f".results.tmp{os.getpid()}"
        tmp.write_text(json.dumps(res, indent=1) + "\n")
        os.replace(tmp, self.run_dir / "results.json")
        if hasattr(self, "_tb"):
            self._tb.close()


def _jsonable(x: Any) -> Any:
    import dataclasses

    if x is None:
        return None
    if dataclasses.is_dataclass(x):
        return json.loads(json.dumps(dataclasses.asdict(x), default=str))
    return json.loads(json.dumps(x, default=str))


def train(cfg: TrainConfig | dict, stop_after: int | None = None) -> Path:
    """Train (or resume, when run_dir holds checkpoints) and return run_dir.

    stop_after: stop after this many optimizer steps (counted from 0, not from the resume point), as a pre-emption
    would; a checkpoint is written and a later ``train(cfg)`` continues exactly.
    Works the same under torchrun / :func:`audiolp.train.distributed.spawn_local` (one call per rank).
    """
    if isinstance(cfg, dict):
        cfg = TrainConfig.from_dict(cfg)
    else:
        cfg = TrainConfig.from_dict(cfg.to_dict())  # own copy: setup fills derived fields (label_set)
    info = init_distributed(cfg.device)
    ok = False
    try:
        trainer = Trainer(cfg, info)
        trainer.setup()
        out = trainer.run(stop_after=stop_after)
        ok = True
        return out
    finally:
        cleanup(info, wait_for_others=ok)  # after an error, a barrier could wait forever for a dead rank


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="audiolp pretraining (one process, or one per rank under torchrun)")
    p.add_argument("--config", required=True, help="TrainConfig JSON file")
    p.add_argument("--run-dir", help="override TrainConfig.run_dir")
    p.add_argument("--max-steps", type=int, help="override TrainConfig.max_steps")
    p.add_argument("--stop-after", type=int, help="stop (with a checkpoint) after this many steps")
    args = p.parse_args(argv)
    cfg = TrainConfig.load(args.config)
    if args.run_dir:
        cfg.run_dir = args.run_dir
    if args.max_steps:
        cfg.max_steps = args.max_steps
    run_dir = train(cfg, stop_after=args.stop_after)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"[audiolp] run dir: {run_dir}")


if __name__ == "__main__":
    main()
