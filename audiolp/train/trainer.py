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
import json
import math
import os
import resource
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from audiolp.files import write_results_json
from audiolp.models.io import ENCODER_CONFIG, save_encoder_config, save_final_encoder
from audiolp.objectives.base import ObjectiveOutput
from audiolp.train.checkpoint import (CHECKPOINT_DIR, latest_checkpoint, prune_checkpoints, read_checkpoint,
                                      remove_stale_temp, write_checkpoint)
from audiolp.train.config import RESUMABLE_CHANGES, TrainConfig
from audiolp.train.data import load_training_cuts, objective_config_for
from audiolp.train.distributed import DistInfo, all_gather_object, all_reduce_sum, barrier, cleanup, init_distributed
from audiolp.train.state import (EMA, BatchStream, capture_rng, restore_rng, restore_sampler, sampler_position,
                                 seed_everything)


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



def _check_frozen_attention_scaling(cfg, encoder_cfg) -> None:
    """A frozen encoder must compute what it was trained to: build_optimizer sets the Zipformer's q.k scaling from
    the optimiser, so a frozen encoder from a ScaledAdam run trained on with AdamW (or the reverse) would change its
    features silently. The source's encoder_config.json says how it was trained."""
    if not cfg.init_from:
        return
    src = Path(cfg.init_from)
    # a run dir, its encoder.safetensors, or checkpoints/step-N/model.safetensors: the run dir is at most 3 up
    saved = next((f / ENCODER_CONFIG for f in (src, *src.parents[:3]) if (f / ENCODER_CONFIG).is_file()), None)
    if saved is None:
        return
    trained = json.loads(saved.read_text()).get("config", {}).get("attention_scaling")
    if trained is not None and bool(trained) != bool(encoder_cfg.attention_scaling):
        fix = "adamw" if trained else "scaled_adam"
        raise ValueError(f"TrainConfig.freeze_encoder: the encoder in {src} was trained with attention_scaling="
                         f"{bool(trained)} ({saved}), but optim.name={cfg.optim.name!r} would switch it to "
                         f"{bool(encoder_cfg.attention_scaling)} and change its features; set optim.name={fix!r}")


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
@dataclass
class StepOutcome:
    """What one optimizer step's forward/backward passes leave for the rest of the step."""
    micro: list[tuple[dict, ObjectiveOutput, float]]  # (batch, objective output, loss weight) per micro-batch
    total_weight: float  # loss weight of the whole global batch (0: no clip of it could be read)
    stop_agreed: bool  # some rank got a stop signal: every rank stops after this step


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
        self.stopped_by_agreement = False  # some rank got a stop signal (known after a step's all-reduce)

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
            # Fields the first start derived from the corpus (tagging's label set) are kept.
            derived = {k: v for k, v in saved.objective_config.items() if k not in self.cfg.objective_config}
            if derived and saved.objective == self.cfg.objective:
                self.cfg.objective_config = {**self.cfg.objective_config, **derived}
            bad = {k: v for k, v in saved.diff(self.cfg).items() if k not in RESUMABLE_CHANGES}
            if bad:
                lines = "; ".join(f"{k}: saved {a!r} vs now {b!r}" for k, (a, b) in sorted(bad.items()))
                raise ValueError(f"{self.run_dir} holds a run with another config ({lines}); resume with the same "
                                 f"config (only {sorted(RESUMABLE_CHANGES)} may change) or use a new run_dir")
        return ckpt

    def setup(self) -> None:
        cfg, info = self.cfg, self.info
        if info.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_temp(self.ckpt_root)
        barrier(info)
        self.resume_from = self._resolve_resume()
        all_cuts, cuts, self.scale_info, self.left_out_clips = load_training_cuts(cfg, log=self.log)
        # The objective's config, completed from the whole corpus (not the scale subset), is stored in config.json.
        cfg.objective_config = objective_config_for(cfg, all_cuts)
        if info.is_main:
            cfg.save(self.run_dir / "config.json")
            self.log(f"[audiolp] TrainConfig (preset {cfg.preset!r}; every value this run uses):\n" + cfg.to_json())
        self._build_model()
        self._build_data(cuts)

    def _build_model(self) -> None:
        from audiolp.models.io import load_encoder_weights, resolve_weights
        from audiolp.models.zipformer import Zipformer
        from audiolp.objectives import build_objective
        from audiolp.train.optim import build_optimizer

        cfg, info = self.cfg, self.info
        seed_everything(cfg.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
        self.encoder_cfg = cfg.encoder_config()
        self.objective = build_objective(cfg.objective, Zipformer(self.encoder_cfg), cfg.objective_config)
        if cfg.init_from and self.resume_from is None:
            # A run dir's final encoder, a bare encoder file, or a whole objective's model.safetensors.
            src = resolve_weights(cfg.init_from)
            load_encoder_weights(self.objective, src)
            self.log(f"[audiolp] encoder initialised from {src}")
        if cfg.freeze_encoder:
            _check_frozen_attention_scaling(cfg, self.encoder_cfg)
            self.objective.encoder.requires_grad_(False)
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

    def _build_data(self, cuts) -> None:
        from audiolp.data.loader import make_dataloader

        cfg, info = self.cfg, self.info
        self.step, self.epoch, self.consumed = 0, 0, 0
        self.history: list[dict] = []
        self.audio_seconds_total, self.wall_total = 0.0, 0.0
        self.unreadable_clips = 0  # clips the loader left out because their audio could not be read
        rng_state = self._load(self.resume_from) if self.resume_from is not None else None
        self.loader = make_dataloader(cuts, cfg.loader, seed=cfg.seed, rank=info.rank, world_size=info.world_size,
                                      epoch=self.epoch, train=True, pin_memory=self.device.type == "cuda",
                                      custom_fields=tuple(self.objective.batch_fields))
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
        st = parts["trainer"]
        if st["world_size"] != self.info.world_size:
            raise ValueError(
                f"{path} was written by {st['world_size']} rank(s), this run has {self.info.world_size}: the data "
                "order and the per-rank RNG streams are tied to the rank count. Resume with "
                f"{st['world_size']} process(es) (torchrun --nproc_per_node={st['world_size']} ...), or start a new "
                "run dir from its encoder with --init-from "
                f"{self.run_dir} (a new schedule)")
        self.objective.load_state_dict(parts["model"], strict=True)
        if self.ema is not None:
            if parts["ema"] is None:
                raise ValueError(f"{path} has no ema.safetensors but ema_decay={self.cfg.ema_decay}")
            self.ema.module.load_state_dict(parts["ema"], strict=True)
        self.optimizer.load_state_dict(parts["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
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
        if self.cfg.freeze_encoder:
            self.objective.encoder.eval()  # a frozen encoder runs as at evaluation: no dropout, no layer skipping
        limit = cfg.max_steps if stop_after is None else min(cfg.max_steps, stop_after)
        self.stop_signal, self.stopped_by_agreement = None, False
        with _stop_signals(self):  # kept through the final checkpoint: a second SIGTERM must not cut it short
            try:
                self.stopped_by_agreement = self._loop(limit, bar)
                if bar is not None:
                    bar.close()
                if self._last_saved != self.step:
                    self.save_checkpoint()  # before close(): it records whether the epoch's iterator exists
            finally:
                # Workers ignore SIGTERM (the loader's worker_init_fn) so that a pre-emption reaches this process
                # only; they are shut down here, on every exit path.
                self.stream.close()
        completed = self.step >= cfg.max_steps or self.stream.exhausted
        if self.stopped_by_agreement:
            self.log(f"[audiolp] stopped by a signal after step {self.step}; checkpoint written. Rerun the same "
                     f"command to resume (run_dir {self.run_dir}).")
        self.wall_total += self._elapsed()
        if info.is_main:
            if completed:
                self._export_encoder()
            self._write_results(completed)
        barrier(info)
        return self.run_dir

    def _next_micro_batches(self) -> list[dict]:
        micro = []
        for _ in range(self.cfg.grad_accum):
            b = self.stream.next()
            if b is None:
                break
            micro.append(b)
        return micro

    def _loop(self, limit: int, bar) -> bool:
        """Optimizer steps until ``limit``, the end of the data, or an agreed stop; returns whether it stopped."""
        cfg = self.cfg
        window = _LogWindow(self.device)
        set_batch_count = getattr(self.objective.encoder, "set_batch_count", None)  # the Zipformer's schedules
        batch_seconds = cfg.loader.max_duration * self.info.world_size * cfg.grad_accum  # audio per step, nominal
        stopped = False
        while self.step < limit:
            micro = self._next_micro_batches()
            if not micro:
                break  # max_epochs reached (on every rank at once: lhotse gives each rank the same batch count)
            if set_batch_count is not None:
                set_batch_count(self.step * batch_seconds / cfg.ref_duration)
            outcome = self.accumulate_gradients(micro)
            for batch, out, weight in outcome.micro:
                window.add(batch, out, weight)
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_([p for p in self.objective.parameters() if p.requires_grad],
                                               cfg.max_grad_norm)
            if outcome.total_weight > 0:  # not when no clip of the whole global batch could be read
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            self.scheduler.step_batch(self.step)  # batches done
            if self.ema is not None and self.step % cfg.ema_every == 0:
                self.ema.update(self.objective)
            if bar is not None:
                bar.update(1)
            stopped = outcome.stop_agreed
            done = self.step >= limit or stopped
            ckpt_due = self.step % cfg.checkpoint_every == 0 and not done
            # A checkpoint closes the log window too, so that its totals (audio seconds) are whole.
            if self.step % cfg.log_every == 0 or done or ckpt_due:
                self._close_window(window, bar)
            if ckpt_due:
                self.save_checkpoint()
            if stopped:
                break
        if window.micro:  # the data ran out in the middle of a log window
            self._close_window(window, bar)
        return stopped

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

    def accumulate_gradients(self, micro: list[dict]) -> StepOutcome:
        """Forward + backward of one optimizer step's micro-batches on this rank; gradients add up in ``.grad``
        (DDP all-reduces on the last micro-batch)."""
        info = self.info
        weights, step_total, stop_agreed = self._micro_weights(micro)
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
        return StepOutcome(done, step_total, stop_agreed)

    def _stand_in(self) -> dict:
        """One second of silence captioned "silence", unlabelled: the input of an empty micro-batch (loss weight 0).
        Under contrastive DDP the other ranks see it as one extra negative in that step."""
        frames = int(round(self.cfg.loader.feature_config.frames_per_second))
        return {"features": torch.zeros(1, frames, self.cfg.loader.feature_config.num_mel_bins),
                "feature_lens": torch.tensor([frames]), "captions": [["silence"]], "labels": [[]],
                "sources": ["stand-in"], "domains": ["sound"], "cut_ids": ["stand-in"], "audio_seconds": 0.0,
                "skipped_cut_ids": [], **{name: [None] for name in self.objective.batch_fields}}

    def _micro_weights(self, micro: list[dict]) -> tuple[list[float], float, bool]:
        """Each micro-batch's loss weight, the step's total weight over all ranks (see ``loss_weighting``), and
        whether any rank was asked to stop (it stops after this step)."""
        def weight(b: dict) -> float:
            if not _num_clips(b):  # every clip of it was unreadable: its stand-in counts for nothing
                return 0.0
            if self.cfg.loss_weighting == "micro_batches":
                return 1.0
            return float(self.objective.loss_weight(b, self.step))

        weights = [weight(b) for b in micro]
        # One all-reduce carries both: the weight total and the stop request.
        total, stops = all_reduce_sum([sum(weights), float(self.stop_signal is not None)], self.info)
        return weights, total, stops > 0

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
        ema_enc = self.ema.module.encoder.state_dict() if self.ema is not None else None
        save_final_encoder(self.run_dir, self.objective.encoder.state_dict(), ema_enc, self.step)

    def _write_results(self, completed: bool) -> None:
        losses = [h["loss"] for h in self.history]
        tail = losses[-max(1, len(losses) // 10):] if losses else []
        peak, peak_kind = _peak_memory(self.device)
        res = {
            "completed": completed,
            "stopped_by_signal": (self.stop_signal or "on another rank") if self.stopped_by_agreement else None,
            "steps": self.step,
            "epoch": self.stream.epoch,
            "objective": self.cfg.objective,
            "model": self.cfg.model,
            "preset": self.cfg.preset,
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
            "left_out_clips": self.left_out_clips,  # left out before the start (too short / long, no caption)
            "wall_time_s": self.wall_total,
            "throughput_audio_s_per_s": self.audio_seconds_total / self.wall_total if self.wall_total > 0 else 0.0,
            "peak_memory_bytes": peak,
            "peak_memory_kind": peak_kind,
            "scale": self.cfg.scale,
            "scale_info": _jsonable(self.scale_info),
            "config": self.cfg.to_dict(),
        }
        write_results_json(self.run_dir / "results.json", res)
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
