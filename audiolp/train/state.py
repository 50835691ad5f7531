"""The state a run carries from step to step and across a resume: RNG streams, the sampler's position, the batch
stream across epochs, the EMA of the weights. The trainer saves and restores it; nothing here trains."""
from __future__ import annotations

import copy
import random

import numpy as np
import torch
from torch import nn


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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


