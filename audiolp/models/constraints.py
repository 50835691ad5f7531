"""Gradient-only activation constraints of the Zipformer recipe: Balancer and Whiten.

Both are the identity in the forward pass and own no parameters or buffers (checkpoints and parameter counts are the
same with or without them). In the backward pass they add a small extra gradient that pushes the activations towards
a healthy range, the way a penalty term in the loss would, but with a size set relative to the incoming gradient so
that it never dominates the task gradient:

- ``Balancer`` keeps, per channel, the proportion of positive values within [min_positive, max_positive] and the RMS
  within [min_abs, max_abs] (dead or saturated channels get pushed back).
- ``Whiten`` keeps the channel covariance from collapsing onto a few directions: when the whitening metric
  ``c * tr(C^2) / tr(C)^2`` (1 for a white covariance, c for rank one) exceeds ``whitening_limit``, the gradient of the
  excess is added.
- ``AbsValuePenalty`` adds the gradient of ``penalty * sum(relu(|x| - limit))``: it keeps attention scores from
  growing so large that the softmax saturates.

Each is applied to a random subset of batches (``prob``, a function of the batch counter) to keep its cost low.
Statistics are taken over every row of the tensor, padded frames included (as in icefall); with per-clip padding of a
few percent this only slightly blurs the statistics.
"""
from __future__ import annotations

from typing import Callable, Optional, Union

import torch
from torch import Tensor, nn

Value = Union[float, Callable[[Optional[float]], float]]  # a constant or a Schedule of the batch count

__all__ = ["Balancer", "Whiten", "AbsValuePenalty", "whitening_metric"]


def _value(v: Value, batch_count: Optional[float]) -> float:
    return float(v(batch_count)) if callable(v) else float(v)


def _host_rand() -> float:
    # Drawn from torch's CPU generator: seeded by torch.manual_seed and saved in checkpoints (exact resume).
    return float(torch.rand(()))


class _GradientOnly(torch.autograd.Function):
    """Identity forward that keeps ``x`` and the settings (``ctx.args``) for a backward that adds a push."""

    @staticmethod
    def forward(ctx, x: Tensor, *args) -> Tensor:
        ctx.save_for_backward(x)
        ctx.args = args
        return x.view_as(x)


class _BalancerFunction(_GradientOnly):
    # args: channel_dim, (min_positive, max_positive, min_abs, max_abs), grad_scale

    @staticmethod
    def backward(ctx, g: Tensor):
        (x,) = ctx.saved_tensors
        channel_dim, (min_pos, max_pos, min_abs, max_abs), grad_scale = ctx.args
        dims = [d for d in range(x.dim()) if d != channel_dim % x.dim()]
        xf = x.detach().float()
        positive = (xf > 0).float().mean(dim=dims, keepdim=True)
        rms = xf.pow(2).mean(dim=dims, keepdim=True).sqrt().clamp(min=1e-20)
        # Sign balance: +1 (every value pushed down) when too many are positive, -1 when too few; scaled by how
        # far outside the range the channel is, relative to the room on that side, capped at 1.
        too_pos = ((positive - max_pos) / max(1.0 - max_pos, 1e-3)).clamp(0.0, 1.0)
        too_neg = ((min_pos - positive) / max(min_pos, 1e-3)).clamp(0.0, 1.0)
        sign_push = too_pos - too_neg
        # Magnitude: +sign(x) (shrink) when the RMS is above max_abs, -sign(x) (grow) below min_abs; the log-ratio
        # of the violation sets the strength, capped at 1.
        too_big = torch.log(rms / max_abs).clamp(0.0, 1.0) if max_abs > 0 else torch.zeros_like(rms)
        too_small = torch.log(min_abs / rms).clamp(0.0, 1.0) if min_abs > 0 else torch.zeros_like(rms)
        size_push = (too_big - too_small) * torch.sign(xf)
        # Where the size push opposes the sign push (a dead, all-negative channel: "grow |x|" pushes x further down
        # while the sign push raises it) the two would cancel element by element; the sign push wins.
        size_push = torch.where(sign_push * size_push < 0, torch.zeros_like(size_push), size_push)
        gf = g.float()
        # The push is a fixed small fraction (grad_scale) of the task gradient's magnitude at each element, so it
        # never dominates the task and vanishes where the task gradient does; healthy channels get exactly zero.
        extra = grad_scale * gf.abs() * (sign_push + size_push)
        return (gf + extra).to(g.dtype), None, None, None


class _Constraint(nn.Module):
    """What the three constraints share: the on/off switch and batch counter set by the owning model, and the
    per-batch draw of whether to act at all (with probability ``prob``)."""

    def __init__(self, prob: Value):
        super().__init__()
        self.prob = prob
        self.constraints = False  # set by the owning model (ZipformerConfig.activation_constraints)
        self.batch_count: Optional[float] = None

    def acts_on(self, x: Tensor) -> bool:
        if not (self.training and self.constraints and x.requires_grad):
            return False
        return _host_rand() < _value(self.prob, self.batch_count)


class Balancer(_Constraint):
    """Identity forward; in training, pushes per-channel sign balance and RMS into range through the gradient.

    Args are constants or ``Schedule``s of the batch counter. ``min_abs`` / ``max_abs`` bound the channel RMS.
    """

    def __init__(self, num_channels: int, channel_dim: int = -1, min_positive: Value = 0.05,
                 max_positive: Value = 0.95, min_abs: Value = 0.2, max_abs: Value = 100.0,
                 grad_scale: Value = 0.04, prob: Value = 0.25):
        super().__init__(prob)
        self.num_channels, self.channel_dim = num_channels, channel_dim
        self.min_positive, self.max_positive = min_positive, max_positive
        self.min_abs, self.max_abs = min_abs, max_abs
        self.grad_scale = grad_scale

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[self.channel_dim] != self.num_channels:
            raise ValueError(f"Balancer expects {self.num_channels} channels on dim {self.channel_dim}; "
                             f"got shape {tuple(x.shape)}")
        if not self.acts_on(x):
            return x
        bc = self.batch_count
        limits = (_value(self.min_positive, bc), _value(self.max_positive, bc),
                  _value(self.min_abs, bc), _value(self.max_abs, bc))
        return _BalancerFunction.apply(x, self.channel_dim, limits, _value(self.grad_scale, bc))


def whitening_metric(x: Tensor, num_groups: int = 1) -> Tensor:
    """Mean over channel groups of c * tr(C^2) / tr(C)^2 for the covariance C of ``x`` (rows, channels).

    Equals 1 when C is a multiple of the identity and c (the group's channel count) when C has rank one.
    """
    rows, channels = x.shape
    if channels % num_groups:
        raise ValueError(f"whitening_metric: {channels} channels do not split into {num_groups} groups")
    c = channels // num_groups
    xg = x.reshape(rows, num_groups, c).transpose(0, 1)  # (G, rows, c)
    xg = xg - xg.mean(dim=1, keepdim=True)
    cov = torch.matmul(xg.transpose(1, 2), xg)  # (G, c, c)
    trace = cov.diagonal(dim1=1, dim2=2).sum(-1)
    return (c * cov.pow(2).sum(dim=(1, 2)) / trace.pow(2).clamp(min=1e-20)).mean()


class _WhitenFunction(_GradientOnly):
    # args: num_groups, whitening_limit, grad_scale

    @staticmethod
    def backward(ctx, g: Tensor):
        (x,) = ctx.saved_tensors
        num_groups, limit, grad_scale = ctx.args
        with torch.enable_grad(), torch.autocast(x.device.type, enabled=False):
            xf = x.detach().float().reshape(-1, x.shape[-1]).requires_grad_(True)
            metric = whitening_metric(xf, num_groups)
            if float(metric.detach()) <= limit:
                return g, None, None, None
            (pg,) = torch.autograd.grad(metric, xf)
        gf = g.float()
        extra = pg.reshape(g.shape) * (grad_scale * gf.norm() / pg.norm().clamp(min=1e-20))
        return (gf + extra).to(g.dtype), None, None, None


class Whiten(_Constraint):
    """Identity forward; in training, when the channels' whitening metric exceeds ``whitening_limit``, adds the
    gradient of the metric scaled to ``grad_scale`` times the norm of the incoming gradient. Channels last."""

    def __init__(self, num_groups: int = 1, whitening_limit: Value = 5.0, grad_scale: Value = 0.01,
                 prob: Value = 0.25):
        super().__init__(prob)
        self.num_groups = num_groups
        self.whitening_limit, self.grad_scale = whitening_limit, grad_scale

    def forward(self, x: Tensor) -> Tensor:
        if not self.acts_on(x):
            return x
        bc = self.batch_count
        return _WhitenFunction.apply(x, self.num_groups, _value(self.whitening_limit, bc),
                                     _value(self.grad_scale, bc))


class _AbsValuePenaltyFunction(_GradientOnly):
    # args: limit, penalty

    @staticmethod
    def backward(ctx, g: Tensor):
        (x,) = ctx.saved_tensors
        limit, penalty = ctx.args
        extra = (x.abs() > limit).to(g.dtype) * torch.sign(x).to(g.dtype) * penalty
        return g + extra, None, None


class AbsValuePenalty(_Constraint):
    """Identity forward; in training (on a ``prob`` share of batches) values with ``|x| > limit`` get the extra
    gradient ``penalty * sign(x)``, which gradient descent turns into a pull back towards the limit."""

    def __init__(self, limit: Value = 25.0, penalty: Value = 1e-4, prob: Value = 0.1):
        super().__init__(prob)
        self.limit, self.penalty = limit, penalty

    def forward(self, x: Tensor) -> Tensor:
        if not self.acts_on(x):
            return x
        bc = self.batch_count
        return _AbsValuePenaltyFunction.apply(x, _value(self.limit, bc), _value(self.penalty, bc))
