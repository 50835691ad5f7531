"""Optimisers and LR schedules for the Zipformer: ScaledAdam + Eden (what the architecture was tuned with) and
AdamW + cosine-with-warmup (the standard alternative; needs the 1/sqrt(d) attention scaling).

``build_optimizer(model, OptimConfig(...)) -> (optimizer, scheduler)``; the scheduler has one interface for both:
``step_batch(batch=None)``, ``step_epoch(epoch=None)``, ``get_last_lr()``, ``state_dict()``, ``load_state_dict()``.
Optimizer + scheduler state round-trips exactly: a resumed run continues bit-for-bit (tests/test_optim.py).
Per-group LR scales: a model may define ``param_groups()`` returning ``[{"params", "lr_scale", "name"}, ...]``
(e.g. 0.1 for a pretrained text tower); every group's lr is base_lr x schedule factor x lr_scale.

ScaledAdam (after Yao et al. 2024, written from the description, not from icefall's code):
- each tensor's update is Adam's normalised gradient times the tensor's RMS ("param_rms", refreshed every
  ``size_update_period`` steps), so every tensor changes by about the same *relative* amount per step;
- the tensor's overall scale is learned separately: every ``size_update_period`` steps the accumulated gradient
  w.r.t. log-scale, sum(grad * param), takes an Adam-normalised step of lr * scalar_lr_scale; RMS is kept within
  [param_min_rms, param_max_rms];
- scalars (numel 1) take plain Adam steps at lr * scalar_lr_scale, clamped to +-scalar_max;
- gradients are clipped to ``clipping_scale`` x the median of the last ``clipping_update_period`` gradient norms
  (the norm is measured in update space: grad * param_rms), re-estimated at steps 10, 20, 40 and every period;
  no clipping in the first 10 steps;
- for speed, tensors of identical shape are stacked and updated together (state lives with the first tensor of
  each shape bucket; bucket membership depends only on parameter order, so state_dicts restore exactly);
- a parameter without a gradient in a step is treated as having a zero gradient (its momentum keeps moving it);
- no weight decay (the RMS bound plays that role).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

import torch
from torch import Tensor, nn

__all__ = [
    "OptimConfig",
    "ScaledAdam",
    "AdamWClipped",
    "Eden",
    "CosineWithWarmup",
    "build_optimizer",
    "attention_scaling_for",
]

_NAMES = ("scaled_adam", "adamw")
_DEFAULT_LR = {"scaled_adam": 0.045, "adamw": 5e-4}
_EDEN_SCHEDULES = ("step", "epoch")


@dataclass
class OptimConfig:
    """Optimiser + schedule settings (JSON-serialisable with dataclasses.asdict)."""

    name: str = "scaled_adam"  # "scaled_adam" (with Eden) | "adamw" (with cosine + warmup)
    lr: Optional[float] = None  # base LR; None -> 0.045 (scaled_adam) / 5e-4 (adamw)
    weight_decay: float = 0.01  # AdamW only (biases, norms and scalars excluded); ScaledAdam has none
    betas: Tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-8
    clipping_scale: float = 2.0  # ScaledAdam: clip at clipping_scale x median recent grad norm
    max_grad_norm: Optional[float] = 1.0  # AdamW: global grad-norm clip (None = off)
    eden_lr_batches: float = 7500.0
    eden_lr_epochs: float = 3.5  # used only with eden_schedule="epoch"
    # "step" (the authors' setting, Auden's Eden2 on an infinite stream): the lr depends on the batch count and
    # warm-up only, so runs on corpora of different size see the same lr at the same step (scaling comparisons
    # are not confounded by how many passes a small subset makes). "epoch": icefall's Eden, whose epoch term
    # (e^2 + E^2)/E^2)^-0.25 also decays with each completed pass over the data.
    eden_schedule: str = "step"
    warmup_batches: int = 500  # Eden: 0.5 -> 1 (warmup_start); cosine: 0 -> 1
    warmup_start: float = 0.5
    total_steps: Optional[int] = None  # cosine only: schedule length in batches
    min_lr_ratio: float = 0.0  # cosine only: final lr / base lr

    def __post_init__(self) -> None:
        if self.name not in _NAMES:
            raise ValueError(f"OptimConfig.name={self.name!r}: choose one of {_NAMES}")
        if self.eden_schedule not in _EDEN_SCHEDULES:
            raise ValueError(f"OptimConfig.eden_schedule={self.eden_schedule!r}: choose one of {_EDEN_SCHEDULES} "
                             "('step' = batch term + warm-up only, independent of corpus size; 'epoch' = also decay "
                             "per completed epoch)")
        self.betas = tuple(float(b) for b in self.betas)  # JSON gives a list back
        if len(self.betas) != 2:
            raise ValueError(f"OptimConfig.betas must have 2 values, got {self.betas}")

    @property
    def base_lr(self) -> float:
        return float(self.lr) if self.lr is not None else _DEFAULT_LR[self.name]


def attention_scaling_for(optim_name: str) -> bool:
    """Whether the Zipformer should scale q.k by 1/sqrt(d): True for AdamW, False for ScaledAdam."""
    if optim_name not in _NAMES:
        raise ValueError(f"unknown optimiser {optim_name!r}; choose one of {_NAMES}")
    return optim_name == "adamw"


# ----------------------------------------------------------------------------------------------------------------
# ScaledAdam
# ----------------------------------------------------------------------------------------------------------------


class ScaledAdam(torch.optim.Optimizer):
    def __init__(
        self,
        params: Iterable,
        lr: float = 0.045,
        clipping_scale: Optional[float] = 2.0,
        betas: Tuple[float, float] = (0.9, 0.98),
        scalar_lr_scale: float = 0.1,
        eps: float = 1e-8,
        param_min_rms: float = 1e-5,
        param_max_rms: float = 3.0,
        scalar_max: float = 10.0,
        size_update_period: int = 4,
        clipping_update_period: int = 100,
    ):
        if lr <= 0:
            raise ValueError(f"ScaledAdam: lr must be > 0, got {lr}")
        defaults = dict(lr=lr, betas=tuple(betas), scalar_lr_scale=scalar_lr_scale, eps=eps,
                        param_min_rms=param_min_rms, param_max_rms=param_max_rms, scalar_max=scalar_max,
                        size_update_period=size_update_period)
        super().__init__(params, defaults)
        self.clipping_scale = clipping_scale
        self.clipping_update_period = clipping_update_period
        self.last_clipping_scale: Tensor = torch.ones(())  # for logging
        self._bucket_cache: Dict[int, List[List[Tensor]]] = {}

    # -- bucketing -------------------------------------------------------------------------------------------
    def _buckets(self, gi: int, group: dict) -> List[List[Tensor]]:
        if gi not in self._bucket_cache:
            buckets: Dict[tuple, List[Tensor]] = {}
            for p in group["params"]:
                if p.requires_grad:
                    buckets.setdefault((tuple(p.shape), p.dtype, p.device), []).append(p)
            self._bucket_cache[gi] = list(buckets.values())
        return self._bucket_cache[gi]

    @staticmethod
    def _stack(ts: List[Tensor]) -> Tensor:
        # One tensor: a view, so in-place updates land in the parameter without a copy back.
        return ts[0].unsqueeze(0) if len(ts) == 1 else torch.stack(ts)

    def _init_state(self, group: dict, p: Tensor, state: dict) -> None:
        state["step"] = 0
        state["delta"] = torch.zeros_like(p)
        state["exp_avg_sq"] = torch.zeros_like(p)
        if p[0].numel() > 1:
            dims = tuple(range(1, p.ndim))
            state["param_rms"] = (p ** 2).mean(dim=dims, keepdim=True).sqrt()
            state["scale_exp_avg_sq"] = torch.zeros_like(state["param_rms"])
            state["scale_grads"] = torch.zeros((group["size_update_period"],) + tuple(state["param_rms"].shape),
                                               dtype=p.dtype, device=p.device)

    # -- clipping --------------------------------------------------------------------------------------------
    def _clipping_factor(self, work: list) -> Tensor:
        first = work[0]
        cs = self.state[first[1][0]]  # clipping state lives with the very first parameter
        device = first[3].device
        sumsq = torch.zeros((), device=device, dtype=torch.float32)
        for group, params, state, p, g in work:
            if p[0].numel() > 1:
                sumsq = sumsq + ((g * state["param_rms"]).float() ** 2).sum()
            else:
                sumsq = sumsq + (g.float() ** 2).sum()
        norm = sumsq.sqrt()
        if self.clipping_scale is None:
            return torch.ones((), device=device)
        period = self.clipping_update_period
        if "clip_norms" not in cs:
            cs["clip_step"] = 0
            cs["clip_norms"] = torch.zeros(period, device=device, dtype=torch.float32)
            cs["clip_threshold"] = torch.full((), float("inf"), device=device, dtype=torch.float32)
            cs["clip_num_clipped"] = torch.zeros((), device=device, dtype=torch.float32)
        step = cs["clip_step"]
        cs["clip_norms"][step % period] = norm
        if step in (10, 20, 40) or (step > 0 and step % period == 0):
            n = min(step + 1, period)
            cs["clip_threshold"] = self.clipping_scale * cs["clip_norms"][:n].median()
        cs["clip_step"] = step + 1
        if step < 10:  # no estimate yet
            return torch.ones((), device=device)
        factor = (cs["clip_threshold"] / (norm + 1e-20)).clamp(max=1.0)
        cs["clip_num_clipped"] = cs["clip_num_clipped"] + (factor < 1.0).float()
        return factor

    # -- the step --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work = []
        for gi, group in enumerate(self.param_groups):
            for params in self._buckets(gi, group):
                state = self.state[params[0]]
                p = self._stack(params)
                g = self._stack([q.grad if q.grad is not None else torch.zeros_like(q) for q in params])
                if g.is_sparse:
                    raise RuntimeError("ScaledAdam does not support sparse gradients")
                if len(state) == 0 or "delta" not in state:
                    self._init_state(group, p, state)
                work.append((group, params, state, p, g))
        if not work:
            return loss
        factor = self._clipping_factor(work)
        self.last_clipping_scale = factor
        for group, params, state, p, g in work:
            self._step_bucket(group, state, p, (g * factor.to(g.dtype)))
            if len(params) > 1:
                torch._foreach_copy_(params, list(p.unbind(0)))
        return loss

    def _step_bucket(self, group: dict, state: dict, p: Tensor, g: Tensor) -> None:
        lr = group["lr"]
        beta1, beta2 = group["betas"]
        eps = group["eps"]
        step = state["step"]
        delta = state["delta"]
        delta.mul_(beta1)
        exp_avg_sq = state["exp_avg_sq"]
        exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
        bias_correction2 = 1.0 - beta2 ** (step + 1)
        denom = (exp_avg_sq / bias_correction2).sqrt_().add_(eps)
        if p[0].numel() > 1:
            period = group["size_update_period"]
            dims = tuple(range(1, p.ndim))
            state["scale_grads"][step % period] = (p * g).sum(dim=dims, keepdim=True)
            if step % period == period - 1:
                state["param_rms"].copy_((p ** 2).mean(dim=dims, keepdim=True).sqrt())
                if step > 0:
                    self._size_update(group, state, p)
            scale = state["param_rms"].clamp(min=group["param_min_rms"])
            delta.add_(g / denom * scale, alpha=-lr * (1.0 - beta1))
        else:
            delta.add_(g / denom, alpha=-lr * group["scalar_lr_scale"] * (1.0 - beta1))
        p.add_(delta)
        if p[0].numel() == 1:
            # After the update, so a scalar never ends outside +-scalar_max (clamping first let the step overshoot).
            p.clamp_(min=-group["scalar_max"], max=group["scalar_max"])
        state["step"] = step + 1

    def _size_update(self, group: dict, state: dict, p: Tensor) -> None:
        """Adam step on each tensor's log-scale, using the gradients accumulated over the last period."""
        beta1, beta2 = group["betas"]
        scale_grads = state["scale_grads"]  # (period, B, 1, ...)
        period = scale_grads.shape[0]
        sq = state["scale_exp_avg_sq"]
        # Updated once per period, so decay by beta2**period: the average then spans the same number of steps
        # as the per-element second moment.
        beta2_period = beta2 ** period
        sq.mul_(beta2_period).add_((scale_grads ** 2).mean(dim=0), alpha=1.0 - beta2_period)
        n_updates = (state["step"] + 1) // period
        denom = (sq / (1.0 - beta2_period ** n_updates)).sqrt() + group["eps"]
        size_lr = group["lr"] * group["scalar_lr_scale"]
        scale_step = -size_lr * scale_grads.sum(dim=0) / denom
        rms = state["param_rms"]
        # Too small: never shrink further. Too large: shrink steadily.
        scale_step = torch.where(rms < group["param_min_rms"], scale_step.clamp(min=0.0), scale_step)
        scale_step = torch.where(rms > group["param_max_rms"], torch.full_like(scale_step, -size_lr * period),
                                 scale_step)
        state["delta"].add_(p * scale_step, alpha=1.0 - beta1)

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._bucket_cache = {}


class AdamWClipped(torch.optim.AdamW):
    """torch AdamW that clips the global gradient norm to ``max_grad_norm`` inside step() (like ScaledAdam does)."""

    def __init__(self, params, max_grad_norm: Optional[float] = 1.0, **kwargs):
        super().__init__(params, **kwargs)
        self.max_grad_norm = max_grad_norm
        self.last_grad_norm: Optional[Tensor] = None

    @torch.no_grad()
    def step(self, closure=None):
        if self.max_grad_norm is not None:
            params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
            if params:
                self.last_grad_norm = torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
        return super().step(closure)


# ----------------------------------------------------------------------------------------------------------------
# Schedules (one interface)
# ----------------------------------------------------------------------------------------------------------------


class _Schedule:
    """Sets group['lr'] = base_lr * factor(batch, epoch) * group['lr_scale'] after every step_batch/step_epoch.

    ``lr_scale`` (default 1.0) is a fixed per-group multiplier, e.g. 0.1 for a pretrained text tower that the
    encoder's rate would wreck; ``get_last_lr()`` lists every group's lr, in group order (index 0 = first group).
    """

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.optimizer = optimizer
        self.base_lrs = [float(g.get("base_lr", g["lr"])) for g in optimizer.param_groups]
        self.lr_scales = [float(g.get("lr_scale", 1.0)) for g in optimizer.param_groups]
        for g, b, s in zip(optimizer.param_groups, self.base_lrs, self.lr_scales):
            g["base_lr"], g["lr_scale"] = b, s
        self.batch = 0
        self.epoch = 0
        self._last_lr: List[float] = []
        self._apply()

    def factor(self) -> float:
        raise NotImplementedError

    def _apply(self) -> None:
        f = self.factor()
        self._last_lr = [b * f * s for b, s in zip(self.base_lrs, self.lr_scales)]
        for g, lr in zip(self.optimizer.param_groups, self._last_lr):
            g["lr"] = lr

    def step_batch(self, batch: Optional[int] = None) -> None:
        """Call after each optimiser step; ``batch`` = number of batches done (default: previous + 1)."""
        self.batch = self.batch + 1 if batch is None else batch
        self._apply()

    def step_epoch(self, epoch: Optional[float] = None) -> None:
        """Call at the start of each epoch with the number of completed epochs (default: previous + 1)."""
        self.epoch = self.epoch + 1 if epoch is None else epoch
        self._apply()

    def get_last_lr(self) -> List[float]:
        return list(self._last_lr)

    def state_dict(self) -> dict:
        return {"batch": self.batch, "epoch": self.epoch, "base_lrs": list(self.base_lrs),
                "lr_scales": list(self.lr_scales)}

    def load_state_dict(self, sd: dict) -> None:
        n = len(self.optimizer.param_groups)
        base_lrs = list(sd["base_lrs"])
        # Checkpoints from before per-group scales have no "lr_scales": every group ran at scale 1.0.
        lr_scales = list(sd.get("lr_scales", [1.0] * len(base_lrs)))
        if len(base_lrs) != n or len(lr_scales) != n:
            raise ValueError(f"scheduler state has {len(base_lrs)} lr group(s) but the optimizer has {n}: the "
                             "checkpoint was written with different parameter groups (model.param_groups(), "
                             "optimiser name or frozen parts changed); resume with the same model and config")
        self.batch, self.epoch, self.base_lrs, self.lr_scales = sd["batch"], sd["epoch"], base_lrs, lr_scales
        for g, b, s in zip(self.optimizer.param_groups, self.base_lrs, self.lr_scales):
            g["base_lr"], g["lr_scale"] = b, s
        self._apply()


class Eden(_Schedule):
    """lr = base * ((b^2+B^2)/B^2)^-0.25 * ((e^2+E^2)/E^2)^-0.25 * warmup, warmup linear warmup_start -> 1.

    ``schedule="step"`` drops the epoch term (its factor is 1 whatever ``step_epoch`` was told): Auden's "Eden2"
    for an infinite stream, so the lr at a step does not depend on the corpus size. ``"epoch"``: the full formula.
    """

    def __init__(self, optimizer, lr_batches: float = 7500.0, lr_epochs: float = 3.5, warmup_batches: float = 500.0,
                 warmup_start: float = 0.5, schedule: str = "step"):
        if schedule not in _EDEN_SCHEDULES:
            raise ValueError(f"Eden: schedule={schedule!r}; choose one of {_EDEN_SCHEDULES}")
        self.lr_batches, self.lr_epochs = float(lr_batches), float(lr_epochs)
        self.warmup_batches, self.warmup_start = float(warmup_batches), float(warmup_start)
        self.schedule = schedule
        super().__init__(optimizer)

    def factor(self) -> float:
        b, e = float(self.batch), float(self.epoch)
        f = ((b ** 2 + self.lr_batches ** 2) / self.lr_batches ** 2) ** -0.25
        if self.schedule == "epoch":
            f *= ((e ** 2 + self.lr_epochs ** 2) / self.lr_epochs ** 2) ** -0.25
        if b < self.warmup_batches:
            f *= self.warmup_start + (1.0 - self.warmup_start) * b / self.warmup_batches
        return f

    def state_dict(self) -> dict:
        return dict(super().state_dict(), schedule=self.schedule)

    def load_state_dict(self, sd: dict) -> None:
        saved = sd.get("schedule")
        if saved is not None and saved != self.schedule:
            raise ValueError(f"Eden state was written with eden_schedule={saved!r} but this run has "
                             f"eden_schedule={self.schedule!r}; resume with OptimConfig.eden_schedule={saved!r} "
                             "(switching mid-run would jump the lr)")
        if saved is None and self.schedule == "step" and float(sd.get("epoch", 0)) > 0:
            # A state dict from before eden_schedule existed (those runs had the epoch term): it loads, but the lr
            # from here on follows this run's step-only schedule.
            warnings.warn(f"Eden: loading a scheduler state without 'schedule' (written before eden_schedule "
                          f"existed, epoch={sd['epoch']}) into a step-only schedule: the epoch term is dropped from "
                          "now on; set OptimConfig.eden_schedule='epoch' to keep the old lr curve", stacklevel=2)
        super().load_state_dict(sd)


class CosineWithWarmup(_Schedule):
    """Linear warm-up 0 -> 1 over warmup_batches, then cosine down to min_lr_ratio at total_steps (epochs ignored)."""

    def __init__(self, optimizer, total_steps: int, warmup_batches: int = 500, min_lr_ratio: float = 0.0):
        if total_steps is None or total_steps <= 0:
            raise ValueError("CosineWithWarmup needs OptimConfig.total_steps > 0 (the schedule length in batches)")
        self.total_steps, self.warmup_batches, self.min_lr_ratio = int(total_steps), int(warmup_batches), min_lr_ratio
        super().__init__(optimizer)

    def factor(self) -> float:
        b = self.batch
        if b < self.warmup_batches:
            return (b + 1) / (self.warmup_batches + 1)
        span = max(1, self.total_steps - self.warmup_batches)
        progress = min(1.0, (b - self.warmup_batches) / span)
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


# ----------------------------------------------------------------------------------------------------------------
# Builder
# ----------------------------------------------------------------------------------------------------------------


def _set_attention_scaling(model: nn.Module, enabled: bool) -> int:
    n = 0
    for m in model.modules():
        if hasattr(m, "set_attention_scaling") and callable(m.set_attention_scaling):
            m.set_attention_scaling(enabled)
            n += 1
    return n


def _param_groups(model: nn.Module) -> List[dict]:
    """The model's LR groups: ``model.param_groups()`` if it defines one, else one group at scale 1.0.

    The hook returns ``[{"params": [...], "lr_scale": float, "name": str}, ...]`` covering every trainable
    parameter exactly once; the first group's lr is the one the trainer logs, so put the main (scale 1.0) group
    first. Empty groups are dropped (e.g. a frozen tower).
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    hook = getattr(model, "param_groups", None)
    if hook is None or isinstance(hook, nn.Module) or not callable(hook):
        return [{"params": trainable, "lr_scale": 1.0, "name": "all"}]
    where = f"{type(model).__name__}.param_groups()"
    names = {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}
    groups = list(hook())
    seen: Dict[int, str] = {}
    out: List[dict] = []
    for i, g in enumerate(groups):
        if not isinstance(g, dict) or "params" not in g:
            raise ValueError(f"{where}: group {i} must be a dict with 'params', 'lr_scale' and 'name', got {g!r}")
        gname = str(g.get("name", f"group{i}"))
        scale = float(g.get("lr_scale", 1.0))
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"{where}: group {gname!r} has lr_scale={scale}; it must be a finite number > 0 "
                             "(freeze parameters with requires_grad=False instead of a zero scale)")
        params = list(g["params"])
        for p in params:
            pname = names.get(id(p))
            if pname is None:
                raise ValueError(f"{where}: group {gname!r} holds a parameter of shape {tuple(p.shape)} that is "
                                 "not one of the model's parameters")
            if not p.requires_grad:
                raise ValueError(f"{where}: group {gname!r} holds {pname!r}, which is frozen (requires_grad=False); "
                                 "list only trainable parameters")
            if id(p) in seen:
                raise ValueError(f"{where}: parameter {pname!r} is in group {seen[id(p)]!r} and again in group "
                                 f"{gname!r}; each trainable parameter must be in exactly one group")
            seen[id(p)] = gname
        if params:
            out.append({"params": params, "lr_scale": scale, "name": gname})
    missing = [names[id(p)] for p in trainable if id(p) not in seen]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ValueError(f"{where}: {len(missing)} trainable parameter(s) are in no group: {shown}; add them to a "
                         "group (lr_scale 1.0 for the from-scratch parts) or freeze them")
    return out


def build_optimizer(model: nn.Module, cfg: OptimConfig):
    """(optimizer, scheduler) for ``model``; also sets the Zipformer's attention scaling to match the optimiser.

    Parameter groups come from ``model.param_groups()`` when the model defines it (see :func:`_param_groups`);
    each group's lr is base_lr x schedule factor x its ``lr_scale``.
    """
    _set_attention_scaling(model, attention_scaling_for(cfg.name))
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("build_optimizer: the model has no trainable parameters")
    groups = _param_groups(model)
    if cfg.name == "scaled_adam":
        opt = ScaledAdam(groups, lr=cfg.base_lr, clipping_scale=cfg.clipping_scale, betas=cfg.betas, eps=cfg.eps)
        sched = Eden(opt, cfg.eden_lr_batches, cfg.eden_lr_epochs, cfg.warmup_batches, cfg.warmup_start,
                     schedule=cfg.eden_schedule)
    else:
        split = []
        for g in groups:  # each LR group splits into decayed weights and undecayed biases / norms / scalars
            decay = [p for p in g["params"] if p.ndim >= 2]
            no_decay = [p for p in g["params"] if p.ndim < 2]
            split += [dict(g, params=decay, weight_decay=cfg.weight_decay),
                      dict(g, params=no_decay, weight_decay=0.0, name=f"{g['name']}.no_decay")]
        split = [g for g in split if g["params"]]
        opt = AdamWClipped(split, max_grad_norm=cfg.max_grad_norm, lr=cfg.base_lr, betas=cfg.betas, eps=cfg.eps)
        sched = CosineWithWarmup(opt, cfg.total_steps, cfg.warmup_batches, cfg.min_lr_ratio)
    return opt, sched
