"""Zipformer encoder (non-causal), faithful to Zipformer-M of Yao et al. (ICLR 2024) / the icefall AudioSet recipe.

Input 80-dim fbank at 100 Hz, ``Zipformer.forward(features (N,T,80), lengths (N,)) -> (frames (N,T',D), out_lengths)``
with T' = ceil(((T-7)//2) / 2): 25 Hz frames (40 ms hop), D = max(encoder_dim) (512 for M).

Layout: batch-first (N, T, C) everywhere. Parameter names mirror icefall's (``encoder_embed.*``, ``encoder.encoders.*``)
so that a public icefall checkpoint maps onto this module with ``load_state_dict(strict=False)`` (only the unused
per-layer ``bypass_scale`` differs, see ``include_unused_bypass_scale``).

Padding never influences valid frames: attention keys beyond a clip's length get -1000 before the softmax, padded
frames are zeroed before every depthwise convolution (the ConvNeXt of the front-end included), every
SimpleDownsample pads each clip with *its own* last valid frame (as an unpadded clip would be padded), and output
frames beyond ``out_lengths`` are zero.

Training-only regularisers (``ZipformerConfig.regularizers=True``, default off; all keyed to the batch counter given by
``model.set_batch_count(n)``, icefall's schedules): layer skipping (per-layer bypass skip 0.5 -> 0.035*sqrt(ds) during
a staggered warm-up per stack), module skipping (attention/conv/ff2/ff3 sequence dropout), constant-attention
substitution, positional-score skipping, feature masks above ``encoder_unmasked_dim``, ConvNeXt layer drop, dropout
schedule 0.3 -> 0.1, bypass-scale minimum schedule 0.9 -> 0.2. Always active in training (gradient-only, as in icefall):
ScaleGrad(0.2) after the first conv, value limits on BiasNorm log-scale [-1.5, 1.5] and bypass scales [min, 1].
Gradient-only activation constraints (``ZipformerConfig.activation_constraints=True``, default off; no parameters, so
checkpoints are unchanged; see ``audiolp.models.constraints``): Balancers on the feed-forward hidden pre-activations,
the NonlinAttention tanh input, both gates of the convolution modules, the attention keys and the layer output
around the BiasNorm; Whiten on the feed-forward, NonlinAttention and convolution outputs, the attention keys (per head)
and the layer output; a penalty on attention scores beyond +-25. Their ranges follow icefall's choices as we read them;
limits and probabilities are schedules of the batch counter. NOT implemented: the fp16 memory-saving custom autograd
functions (use bf16 autocast).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiolp.models.constraints import AbsValuePenalty, Balancer, Whiten

__all__ = [
    "ZipformerConfig",
    "Zipformer",
    "zipformer_m",
    "zipformer_s",
    "zipformer_tiny",
    "swoosh_r",
    "swoosh_l",
    "BiasNorm",
    "count_parameters",
    "load_icefall_state_dict",
]

# ----------------------------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------------------------

_PER_STACK = (
    "downsampling_factor",
    "num_encoder_layers",
    "encoder_dim",
    "encoder_unmasked_dim",
    "num_heads",
    "feedforward_dim",
    "cnn_module_kernel",
)


@dataclass
class ZipformerConfig:
    """All hyper-parameters of the encoder. Defaults = Zipformer-M of the icefall AudioSet recipe."""

    feature_dim: int = 80
    downsampling_factor: Tuple[int, ...] = (1, 2, 4, 8, 4, 2)
    num_encoder_layers: Tuple[int, ...] = (2, 2, 3, 4, 3, 2)
    encoder_dim: Tuple[int, ...] = (192, 256, 384, 512, 384, 256)
    encoder_unmasked_dim: Tuple[int, ...] = (192, 192, 256, 256, 256, 192)
    num_heads: Tuple[int, ...] = (4, 4, 4, 8, 4, 4)
    feedforward_dim: Tuple[int, ...] = (512, 768, 1024, 1536, 1024, 768)
    cnn_module_kernel: Tuple[int, ...] = (31, 31, 15, 15, 15, 31)
    query_head_dim: int = 32
    value_head_dim: int = 12
    pos_head_dim: int = 4
    pos_dim: int = 48
    embed_channels: Tuple[int, ...] = (8, 32, 128)  # conv2d front-end channels (layer1, layer2, layer3)
    output_downsampling_factor: int = 2
    dropout: float = 0.1  # feed-forward hidden and front-end output dropout (fixed value unless regularizers)
    pos_dropout: float = 0.15  # dropout on the relative positional encodings (icefall default)
    # Multiply q.k by query_head_dim**-0.5. False for ScaledAdam (the in_proj init already scales by d**-0.25 and
    # ScaledAdam keeps parameter scales in check); True for AdamW. build_optimizer sets it.
    attention_scaling: bool = False
    regularizers: bool = False  # training-only schedules keyed to set_batch_count (see module docstring)
    activation_constraints: bool = False  # Balancer + Whiten gradient constraints (see module docstring)
    warmup_batches: float = 4000.0  # stack warm-up span of the layer-skip schedule
    include_unused_bypass_scale: bool = False  # icefall layers hold an unused 'bypass_scale'; only for key parity

    def __post_init__(self) -> None:
        # JSON round-trips turn tuples into lists; normalise so configs compare equal.
        for name in _PER_STACK + ("embed_channels",):
            v = getattr(self, name)
            if isinstance(v, int):
                v = (v,) * len(self.downsampling_factor) if name != "embed_channels" else (v,)
            setattr(self, name, tuple(int(x) for x in v))
        n = len(self.downsampling_factor)
        for name in _PER_STACK:
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"ZipformerConfig.{name} has {len(getattr(self, name))} entries but downsampling_factor has {n}; "
                    f"give one value per stack"
                )
        if len(self.embed_channels) != 3:
            raise ValueError("ZipformerConfig.embed_channels must have 3 entries (layer1, layer2, layer3 channels)")
        for i, (u, d) in enumerate(zip(self.encoder_unmasked_dim, self.encoder_dim)):
            if u > d:
                raise ValueError(f"ZipformerConfig.encoder_unmasked_dim[{i}]={u} exceeds encoder_dim[{i}]={d}")
        for i, k in enumerate(self.cnn_module_kernel):
            if k % 2 != 1:
                raise ValueError(f"ZipformerConfig.cnn_module_kernel[{i}]={k} must be odd")
        if self.pos_dim % 2:
            raise ValueError(f"ZipformerConfig.pos_dim={self.pos_dim} must be even")
        if self.feature_dim < 7:
            raise ValueError(f"ZipformerConfig.feature_dim={self.feature_dim} must be >= 7 for the conv front-end")

    @property
    def output_dim(self) -> int:
        return max(self.encoder_dim)

    @property
    def frame_hop_ms(self) -> float:
        # 10 ms fbank hop, x2 in the conv front-end, x output_downsampling_factor at the end.
        return 10.0 * 2 * self.output_downsampling_factor

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ZipformerConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"ZipformerConfig: unknown field(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)

    @classmethod
    def preset(cls, name: str, **overrides) -> "ZipformerConfig":
        if name not in _PRESETS:
            raise ValueError(f"unknown Zipformer preset {name!r}; choose one of {sorted(_PRESETS)}")
        return dataclasses.replace(_PRESETS[name](), **overrides)


def zipformer_m(**overrides) -> ZipformerConfig:
    """Zipformer-M (AudioSet recipe defaults); embed+encoder = 63,988,343 params."""
    return ZipformerConfig(**overrides)


def zipformer_s(**overrides) -> ZipformerConfig:
    """Zipformer-S: 2 layers per stack, narrower; embed+encoder = 21,986,835 params."""
    kw = dict(
        num_encoder_layers=(2, 2, 2, 2, 2, 2),
        encoder_dim=(192, 256, 256, 256, 256, 256),
        encoder_unmasked_dim=(192, 192, 192, 192, 192, 192),
        feedforward_dim=(512, 768, 768, 768, 768, 768),
    )
    kw.update(overrides)
    return ZipformerConfig(**kw)


def zipformer_tiny(**overrides) -> ZipformerConfig:
    """CPU test config: 4 stacks of 1 layer; 200 input frames -> 96 -> 48 output frames of 64 dims."""
    kw = dict(
        downsampling_factor=(1, 2, 4, 2),
        num_encoder_layers=(1, 1, 1, 1),
        encoder_dim=(32, 48, 64, 48),
        encoder_unmasked_dim=(32, 32, 48, 32),
        num_heads=(4, 4, 4, 4),
        feedforward_dim=(64, 96, 128, 96),
        cnn_module_kernel=(7, 7, 5, 7),
        query_head_dim=8,
        value_head_dim=4,
        pos_head_dim=2,
        pos_dim=16,
        embed_channels=(4, 8, 16),
    )
    kw.update(overrides)
    return ZipformerConfig(**kw)


def zipformer_xs(**overrides) -> ZipformerConfig:
    """CPU pretraining config between tiny and S: the M/S layout of six stacks (50 -> 6.25 -> 25 Hz), one layer
    each, narrower; 256-d output (tiny's 64 is too narrow to keep what downstream tasks need)."""
    kw = dict(
        num_encoder_layers=(1, 1, 1, 1, 1, 1),
        encoder_dim=(96, 128, 192, 256, 192, 128),
        encoder_unmasked_dim=(64, 96, 128, 128, 128, 96),
        num_heads=(4, 4, 4, 4, 4, 4),
        feedforward_dim=(256, 384, 512, 768, 512, 384),
        cnn_module_kernel=(15, 15, 15, 15, 15, 15),
        query_head_dim=16,
        value_head_dim=8,
        pos_head_dim=4,
        pos_dim=32,
        embed_channels=(8, 16, 64),
    )
    kw.update(overrides)
    return ZipformerConfig(**kw)


_PRESETS = {"zipformer_m": zipformer_m, "zipformer_s": zipformer_s, "zipformer_xs": zipformer_xs,
            "zipformer_tiny": zipformer_tiny}

# ----------------------------------------------------------------------------------------------------------------
# Small building blocks
# ----------------------------------------------------------------------------------------------------------------


def swoosh_r(x: Tensor) -> Tensor:
    """SwooshR(x) = log(1+exp(x-1)) - 0.08x - 0.313261687  (SwooshR(0) = 0)."""
    return F.softplus(x - 1.0) - 0.08 * x - 0.313261687


def swoosh_l(x: Tensor) -> Tensor:
    """SwooshL(x) = log(1+exp(x-4)) - 0.08x - 0.035."""
    return F.softplus(x - 4.0) - 0.08 * x - 0.035


class SwooshR(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return swoosh_r(x)


class SwooshL(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return swoosh_l(x)


class Schedule:
    """Piecewise-linear function of the batch count; ``default`` when the count is unknown (eval, inference)."""

    def __init__(self, *points: Tuple[float, float], default: float = 0.0):
        self.points = [(float(x), float(y)) for x, y in points]
        self.default = float(default)

    def __call__(self, batch_count: Optional[float]) -> float:
        if batch_count is None:
            return self.default
        pts = self.points
        if batch_count <= pts[0][0]:
            return pts[0][1]
        for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
            if batch_count <= x1:
                return y0 + (y1 - y0) * (batch_count - x0) / (x1 - x0)
        return pts[-1][1]


def _host_rand() -> float:
    # A per-batch random decision drawn from torch's CPU generator: seeded by torch.manual_seed, no GPU sync.
    return float(torch.rand(()))


def _settled(*points: Tuple[float, float]) -> Schedule:
    """A constraint schedule; without a batch counter it takes its final (settled) value."""
    return Schedule(*points, default=points[-1][1])


def _whitening_limit(start: float) -> Schedule:
    # Whitening limits relax to twice their start over the first 20k batches (loose once the model has settled).
    return _settled((0.0, start), (20000.0, 2.0 * start))


_WHITEN_PROB = _settled((0.0, 0.25), (20000.0, 0.025))  # applied less often as training settles
_BALANCE_PROB = _settled((0.0, 0.5), (8000.0, 0.125))


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, alpha: float) -> Tensor:
        ctx.alpha = alpha
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g: Tensor):
        return g * ctx.alpha, None


class ScaleGrad(nn.Module):
    """Identity forward; gradient multiplied by ``alpha`` in training (slows the first conv layer down)."""

    def __init__(self, alpha: float):
        super().__init__()
        self.alpha = alpha

    def forward(self, x: Tensor) -> Tensor:
        return _ScaleGrad.apply(x, self.alpha) if self.training and x.requires_grad else x


class _LimitValue(torch.autograd.Function):
    """Identity forward; in backward, a gradient that would push a value further outside [lo, hi] is reversed.

    Keeps a parameter inside its range without clamping it (a clamp would zero its gradient at the edge).
    """

    @staticmethod
    def forward(ctx, x: Tensor, lo: float, hi: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.lo, ctx.hi = lo, hi
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g: Tensor):
        (x,) = ctx.saved_tensors
        # gradient descent moves x by -g: g > 0 lowers x, g < 0 raises it.
        flip = ((g > 0) & (x < ctx.lo)) | ((g < 0) & (x > ctx.hi))
        return torch.where(flip, -g, g), None, None


def limit_value(x: Tensor, lo: float, hi: float, training: bool) -> Tensor:
    return _LimitValue.apply(x, lo, hi) if training and x.requires_grad else x


def scaled_linear(in_f: int, out_f: int, bias: bool = True, initial_scale: float = 1.0) -> nn.Linear:
    """nn.Linear whose initial weights are scaled (output projections start small); bias ~ U(+-0.1*scale)."""
    lin = nn.Linear(in_f, out_f, bias=bias)
    with torch.no_grad():
        lin.weight.mul_(initial_scale)
        if lin.bias is not None:
            nn.init.uniform_(lin.bias, -0.1 * initial_scale, 0.1 * initial_scale)
    return lin


def shared_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Dropout with the mask shared along time: one keep/drop decision per (clip, channel). x: (N, T, C)."""
    if not training or p <= 0.0:
        return x
    mask = torch.empty(x.shape[0], 1, x.shape[2], device=x.device, dtype=x.dtype).bernoulli_(1.0 - p)
    return x * mask / (1.0 - p)


class BiasNorm(nn.Module):
    """y = x * exp(log_scale) / sqrt(mean_c((x - bias)^2)); the bias enters only the RMS (per frame, no mean removal).

    Computed in float32 (the RMS of bf16 activations is too coarse), returned in the input dtype.
    """

    def __init__(self, num_channels: int, log_scale: float = 1.0, log_scale_min: float = -1.5,
                 log_scale_max: float = 1.5):
        super().__init__()
        self.num_channels = num_channels
        self.log_scale = nn.Parameter(torch.tensor(float(log_scale)))
        self.bias = nn.Parameter(torch.empty(num_channels).normal_(mean=0.0, std=1e-4))
        self.log_scale_min, self.log_scale_max = log_scale_min, log_scale_max

    def forward(self, x: Tensor) -> Tensor:
        log_scale = limit_value(self.log_scale, self.log_scale_min, self.log_scale_max, self.training)
        xf = x.float()
        scales = torch.rsqrt(((xf - self.bias.float()) ** 2).mean(dim=-1, keepdim=True)) * log_scale.float().exp()
        return (xf * scales).to(x.dtype)


class BypassModule(nn.Module):
    """out = x_orig + c * (x - x_orig), c per channel (init 0.5), kept in [min, 1] in training.

    With regularizers, a whole layer is skipped for a random subset of clips (c = 0 there) at ``skip_rate``.
    """

    def __init__(self, embed_dim: int, skip_rate: Optional[Schedule] = None):
        super().__init__()
        self.bypass_scale = nn.Parameter(torch.full((embed_dim,), 0.5))
        self.skip_rate = skip_rate
        self.scale_min = Schedule((0.0, 0.9), (20000.0, 0.2), default=0.0)
        self.regularizers = False
        self.batch_count: Optional[float] = None

    def forward(self, x_orig: Tensor, x: Tensor) -> Tensor:
        c = self.bypass_scale
        if self.training:
            lo = self.scale_min(self.batch_count) if self.regularizers else 0.0
            c = limit_value(c, lo, 1.0, True)
            if self.regularizers and self.skip_rate is not None:
                rate = self.skip_rate(self.batch_count)
                if rate > 0.0:
                    keep = (torch.rand(x.shape[0], 1, 1, device=x.device) > rate).to(c.dtype)
                    c = c * keep
        return x_orig + (x - x_orig) * c.to(x.dtype)


def fill_padding_with_last(x: Tensor, lengths: Optional[Tensor]) -> Tensor:
    """Replace frames at/after each clip's length by its last valid frame (what an unpadded clip is padded with)."""
    if lengths is None:
        return x
    T = x.shape[1]
    t = torch.arange(T, device=x.device)
    idx = torch.minimum(t.unsqueeze(0), (lengths - 1).clamp(min=0).unsqueeze(1))  # (N, T)
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[2]))


class SimpleDownsample(nn.Module):
    """Downsample time by ``ds``: repeat-last pad to a multiple of ds, then a softmax-weighted sum (init: average)."""

    def __init__(self, downsample: int):
        super().__init__()
        self.downsample = downsample
        self.bias = nn.Parameter(torch.zeros(downsample))

    def forward(self, x: Tensor, lengths: Optional[Tensor] = None) -> Tensor:
        ds = self.downsample
        x = fill_padding_with_last(x, lengths)
        N, T, C = x.shape
        T_out = (T + ds - 1) // ds
        pad = T_out * ds - T
        if pad:
            x = torch.cat((x, x[:, -1:].expand(N, pad, C)), dim=1)
        w = self.bias.softmax(dim=0).to(x.dtype)
        return torch.einsum("ntdc,d->ntc", x.reshape(N, T_out, ds, C), w)


class SimpleUpsample(nn.Module):
    """Upsample time by repetition."""

    def __init__(self, upsample: int):
        super().__init__()
        self.upsample = upsample

    def forward(self, x: Tensor) -> Tensor:
        N, T, C = x.shape
        return x.unsqueeze(2).expand(N, T, self.upsample, C).reshape(N, T * self.upsample, C)


def compact_rel_pos_encoding(T: int, dim: int, device, dtype) -> Tensor:
    """Encodings for the 2T-1 offsets -(T-1)..(T-1), shape (2T-1, dim).

    Offsets are log-compressed beyond ~sqrt(dim) then squashed by atan so that all offsets fit a small basis:
    xc = c*sign(x)*(ln(|x|+c) - ln c), c = sqrt(dim); theta = atan(xc / (dim/2pi)); cos/sin(k*theta), k=1..dim/2;
    the last entry is a constant 1.
    """
    x = torch.arange(-(T - 1), T, device=device, dtype=torch.float32).unsqueeze(1)
    c = dim ** 0.5
    xc = c * x.sign() * ((x.abs() + c).log() - math.log(c))
    theta = torch.atan(xc / (dim / (2.0 * math.pi)))
    k = torch.arange(1, dim // 2 + 1, device=device, dtype=torch.float32)
    ang = theta * k
    pe = torch.stack((ang.cos(), ang.sin()), dim=-1).reshape(2 * T - 1, dim)  # interleaved cos, sin
    pe[:, -1] = 1.0
    return pe.to(dtype)


# ----------------------------------------------------------------------------------------------------------------
# Layer modules
# ----------------------------------------------------------------------------------------------------------------


class RelPositionMultiheadAttentionWeights(nn.Module):
    """Attention weights A (N, H, T, T) from q.k + p.(W_pos pe(j-i)); shared by NonlinAttention and both
    SelfAttentions of a layer."""

    def __init__(self, embed_dim: int, pos_dim: int, num_heads: int, query_head_dim: int, pos_head_dim: int):
        super().__init__()
        self.num_heads, self.query_head_dim, self.pos_head_dim = num_heads, query_head_dim, pos_head_dim
        in_proj_dim = (2 * query_head_dim + pos_head_dim) * num_heads
        # d**-0.25 on both q and k gives O(1) scores at init without an explicit 1/sqrt(d).
        self.in_proj = scaled_linear(embed_dim, in_proj_dim, bias=True, initial_scale=query_head_dim ** -0.25)
        self.linear_pos = scaled_linear(pos_dim, num_heads * pos_head_dim, bias=False, initial_scale=0.05)
        self.attention_scaling = False
        self.regularizers = False
        self.batch_count: Optional[float] = None
        self.pos_emb_skip_rate = Schedule((0.0, 0.5), (4000.0, 0.0))
        # Keys: sign-balanced channels, and no head whose keys collapse onto a few directions.
        self.balance_keys = Balancer(num_heads * query_head_dim, min_positive=0.4, max_positive=0.6,
                                     min_abs=0.0, max_abs=100.0, prob=0.025)
        self.whiten_keys = Whiten(num_groups=num_heads, whitening_limit=_whitening_limit(2.0), grad_scale=0.025,
                                  prob=_WHITEN_PROB)
        self.score_penalty = AbsValuePenalty(limit=25.0, penalty=1e-4, prob=0.1)  # no saturated softmax

    def forward(self, x: Tensor, pos_emb: Tensor, key_padding_mask: Optional[Tensor]) -> Tensor:
        N, T, _ = x.shape
        H, dq, dp = self.num_heads, self.query_head_dim, self.pos_head_dim
        proj = self.in_proj(x)
        q = proj[..., : H * dq].reshape(N, T, H, dq).transpose(1, 2)  # (N,H,T,dq)
        k = self.whiten_keys(self.balance_keys(proj[..., H * dq: 2 * H * dq]))
        k = k.reshape(N, T, H, dq).permute(0, 2, 3, 1)  # (N,H,dq,T)
        p = proj[..., 2 * H * dq:].reshape(N, T, H, dp).transpose(1, 2)  # (N,H,T,dp)
        if self.attention_scaling:
            q = q * dq ** -0.5
        scores = torch.matmul(q, k)  # (N,H,T,T)

        use_pos = not (self.training and self.regularizers
                       and _host_rand() < self.pos_emb_skip_rate(self.batch_count))
        if use_pos:
            pos = self.linear_pos(pos_emb.to(proj.dtype))  # (2T-1, H*dp)
            pos = pos.reshape(2 * T - 1, H, dp).permute(1, 2, 0)  # (H, dp, 2T-1)
            pos_scores = torch.matmul(p, pos)  # (N,H,T,2T-1): column c <-> offset c-(T-1)
            # rel-shift: out[.., i, j] = pos_scores[.., i, (T-1) - i + j] (offset j - i). In the flattened rows that
            # is element (T-1) + i*(2T-2) + j, so one slice + reshape + slice does it: views only (cheap backward,
            # no as_strided, torch.compile friendly).
            if T > 1:
                flat = pos_scores.reshape(N, H, T * (2 * T - 1))
                pos_scores = flat[..., T - 1: T - 1 + T * (2 * T - 2)].reshape(N, H, T, 2 * T - 2)[..., :T]
            scores = scores + pos_scores
        else:
            # Skipped: a zero term keeps linear_pos in the graph, so DDP with find_unused_parameters=False (the
            # default) still receives its (zero) gradient instead of failing at the next step.
            scores = scores + 0.0 * self.linear_pos.weight.sum()

        scores = self.score_penalty(scores)
        if key_padding_mask is not None:
            scores = scores.masked_fill(key_padding_mask[:, None, None, :], -1000.0)
        # Under autocast softmax runs in fp32; cast back once here rather than in each of the three consumers.
        return scores.softmax(dim=-1).to(scores.dtype)


class SelfAttention(nn.Module):
    """v = Linear(D, H*dv); A.v per head; Linear(H*dv, D) (small init)."""

    def __init__(self, embed_dim: int, num_heads: int, value_head_dim: int):
        super().__init__()
        self.in_proj = nn.Linear(embed_dim, num_heads * value_head_dim, bias=True)
        self.out_proj = scaled_linear(num_heads * value_head_dim, embed_dim, bias=True, initial_scale=0.05)

    def forward(self, x: Tensor, attn: Tensor) -> Tensor:
        N, T, _ = x.shape
        H = attn.shape[1]
        v = self.in_proj(x).reshape(N, T, H, -1).transpose(1, 2)  # (N,H,T,dv)
        out = torch.matmul(attn.to(v.dtype), v).transpose(1, 2).reshape(N, T, -1)
        return self.out_proj(out)


class NonlinAttention(nn.Module):
    """s, x, y = Linear(D, 3h); x = x*tanh(s); x = A0.x (head 0 weights); x = x*y; Linear(h, D)."""

    def __init__(self, channels: int, hidden_channels: int):
        super().__init__()
        self.hidden_channels = hidden_channels
        self.in_proj = nn.Linear(channels, hidden_channels * 3, bias=True)
        self.out_proj = scaled_linear(hidden_channels, channels, bias=True, initial_scale=0.05)
        # Keep the tanh gate out of saturation.
        self.balancer = Balancer(hidden_channels, min_positive=_settled((0.0, 0.25), (20000.0, 0.05)),
                                 max_positive=_settled((0.0, 0.75), (20000.0, 0.95)), min_abs=0.5, max_abs=5.0,
                                 prob=_BALANCE_PROB)
        self.whiten = Whiten(whitening_limit=_whitening_limit(5.0), grad_scale=0.01, prob=_WHITEN_PROB)

    def forward(self, x: Tensor, attn0: Tensor) -> Tensor:
        # attn0: (N, 1, T, T)
        s, x, y = self.in_proj(x).chunk(3, dim=-1)
        x = x * torch.tanh(self.balancer(s))
        x = torch.matmul(attn0[:, 0].to(x.dtype), x)
        return self.whiten(self.out_proj(x * y))


class FeedforwardModule(nn.Module):
    """Linear(D, F) -> SwooshL -> dropout (mask shared along time) -> Linear(F, D) (init scale 0.1)."""

    def __init__(self, embed_dim: int, feedforward_dim: int):
        super().__init__()
        self.in_proj = nn.Linear(embed_dim, feedforward_dim)
        self.out_proj = scaled_linear(feedforward_dim, embed_dim, bias=True, initial_scale=0.1)
        self.dropout = 0.0  # set by Zipformer (fixed or scheduled)
        # No dead hidden units (>= 30% positive) and no runaway ones (RMS <= 5).
        self.hidden_balancer = Balancer(feedforward_dim, min_positive=0.3, max_positive=1.0, min_abs=0.75,
                                        max_abs=5.0, prob=_BALANCE_PROB)
        self.out_whiten = Whiten(whitening_limit=_whitening_limit(7.5), grad_scale=0.01, prob=_WHITEN_PROB)

    def forward(self, x: Tensor) -> Tensor:
        h = swoosh_l(self.hidden_balancer(self.in_proj(x)))
        h = shared_dropout(h, self.dropout, self.training)
        return self.out_whiten(self.out_proj(h))


class ConvolutionModule(nn.Module):
    """Linear(D, 2D) -> x*sigmoid(s) -> zero padded frames -> depthwise Conv1d(K) -> SwooshR -> Linear(D, D)."""

    def __init__(self, channels: int, kernel_size: int):
        super().__init__()
        self.in_proj = nn.Linear(channels, 2 * channels)
        self.depthwise_conv = nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2,
                                        groups=channels, bias=True)
        self.out_proj = scaled_linear(channels, channels, bias=True, initial_scale=0.05)
        # The sigmoid gate must not saturate shut; the conv output must stay in SwooshR's useful range.
        self.gate_balancer = Balancer(channels, min_positive=_settled((0.0, 0.05), (8000.0, 0.025)),
                                      max_positive=1.0, min_abs=1.5, max_abs=_settled((0.0, 5.0), (8000.0, 10.0)),
                                      prob=_BALANCE_PROB)
        self.conv_balancer = Balancer(channels, min_positive=_settled((0.0, 0.1), (20000.0, 0.05)),
                                      max_positive=1.0, min_abs=_settled((0.0, 0.2), (20000.0, 0.5)), max_abs=10.0,
                                      prob=_BALANCE_PROB)
        self.out_whiten = Whiten(whitening_limit=_whitening_limit(7.5), grad_scale=0.01, prob=_WHITEN_PROB)

    def forward(self, x: Tensor, key_padding_mask: Optional[Tensor]) -> Tensor:
        x, s = self.in_proj(x).chunk(2, dim=-1)
        x = x * torch.sigmoid(self.gate_balancer(s))
        if key_padding_mask is not None:
            x = x.masked_fill(key_padding_mask.unsqueeze(-1), 0.0)
        x = self.depthwise_conv(x.transpose(1, 2)).transpose(1, 2)
        return self.out_whiten(self.out_proj(swoosh_r(self.conv_balancer(x))))


class Zipformer2EncoderLayer(nn.Module):
    """One Zipformer block (see ZIPFORMER.md): attention weights computed once from the block input and shared."""

    def __init__(self, embed_dim: int, pos_dim: int, num_heads: int, query_head_dim: int, pos_head_dim: int,
                 value_head_dim: int, feedforward_dim: int, cnn_module_kernel: int,
                 include_unused_bypass_scale: bool = False):
        super().__init__()
        self.embed_dim = embed_dim
        self.bypass = BypassModule(embed_dim)
        self.bypass_mid = BypassModule(embed_dim)
        self.self_attn_weights = RelPositionMultiheadAttentionWeights(
            embed_dim, pos_dim, num_heads, query_head_dim, pos_head_dim)
        self.self_attn1 = SelfAttention(embed_dim, num_heads, value_head_dim)
        self.self_attn2 = SelfAttention(embed_dim, num_heads, value_head_dim)
        self.feed_forward1 = FeedforwardModule(embed_dim, (feedforward_dim * 3) // 4)
        self.feed_forward2 = FeedforwardModule(embed_dim, feedforward_dim)
        self.feed_forward3 = FeedforwardModule(embed_dim, (feedforward_dim * 5) // 4)
        self.nonlin_attention = NonlinAttention(embed_dim, hidden_channels=3 * embed_dim // 4)
        self.conv_module1 = ConvolutionModule(embed_dim, cnn_module_kernel)
        self.conv_module2 = ConvolutionModule(embed_dim, cnn_module_kernel)
        if include_unused_bypass_scale:
            # icefall keeps this never-used parameter ("TODO: remove it"); only for parameter-count/key parity.
            # Frozen: it never gets a gradient, and DDP (find_unused_parameters=False) must not wait for one.
            self.bypass_scale = nn.Parameter(torch.full((embed_dim,), 0.5), requires_grad=False)
        self.norm = BiasNorm(embed_dim)
        # Module-skip schedules (icefall values), active only with regularizers in training.
        self.attention_skip_rate = Schedule((0.0, 0.2), (4000.0, 0.05), (16000.0, 0.0))
        self.conv_skip_rate = Schedule((0.0, 0.2), (4000.0, 0.05), (16000.0, 0.0))
        self.const_attention_rate = Schedule((0.0, 0.25), (4000.0, 0.025))
        self.ff2_skip_rate = Schedule((0.0, 0.1), (4000.0, 0.01), (50000.0, 0.0))
        self.ff3_skip_rate = Schedule((0.0, 0.1), (4000.0, 0.01), (50000.0, 0.0))
        # Layer output: balanced signs and bounded RMS before and after the BiasNorm, and a well-spread covariance.
        self.balancer1 = Balancer(embed_dim, min_positive=0.45, max_positive=0.55, min_abs=0.2, max_abs=4.0,
                                  prob=_BALANCE_PROB)
        self.balancer2 = Balancer(embed_dim, min_positive=0.45, max_positive=0.55, min_abs=0.1, max_abs=4.0,
                                  prob=_BALANCE_PROB)
        self.whiten = Whiten(whitening_limit=_whitening_limit(4.0), grad_scale=0.025, prob=_WHITEN_PROB)
        self.regularizers = False
        self.batch_count: Optional[float] = None

    def _seq_mask(self, x: Tensor, rate: Schedule) -> Optional[Tensor]:
        """Per-clip keep mask (N,1,1) for module skipping, or None when inactive."""
        if not (self.training and self.regularizers):
            return None
        r = rate(self.batch_count)
        if r <= 0.0:
            return None
        return (torch.rand(x.shape[0], 1, 1, device=x.device) > r).to(x.dtype)

    @staticmethod
    def _masked(y: Tensor, m: Optional[Tensor]) -> Tensor:
        return y if m is None else y * m

    def forward(self, x: Tensor, pos_emb: Tensor, key_padding_mask: Optional[Tensor]) -> Tensor:
        x_orig = x
        attn = self.self_attn_weights(x, pos_emb, key_padding_mask)  # (N,H,T,T), from the block input
        x = x + self.feed_forward1(x)

        attn_skip = self._seq_mask(x, self.attention_skip_rate)
        attn0 = attn[:, 0:1]
        if self.training and self.regularizers and _host_rand() < self.const_attention_rate(self.batch_count):
            # Replace head-0 weights by uniform attention over the unmasked keys (icefall's const-attention).
            attn0 = (attn0 > 0.0).to(attn0.dtype)
            attn0 = attn0 / attn0.sum(dim=-1, keepdim=True)
        x = x + self._masked(self.nonlin_attention(x, attn0), attn_skip)
        x = x + self._masked(self.self_attn1(x, attn), attn_skip)
        x = x + self._masked(self.conv_module1(x, key_padding_mask), self._seq_mask(x, self.conv_skip_rate))
        x = x + self._masked(self.feed_forward2(x), self._seq_mask(x, self.ff2_skip_rate))
        x = self.bypass_mid(x_orig, x)
        x = x + self._masked(self.self_attn2(x, attn), attn_skip)
        x = x + self._masked(self.conv_module2(x, key_padding_mask), self._seq_mask(x, self.conv_skip_rate))
        x = x + self._masked(self.feed_forward3(x), self._seq_mask(x, self.ff3_skip_rate))
        x = self.norm(self.balancer1(x))
        return self.whiten(self.balancer2(self.bypass(x_orig, x)))


class Zipformer2Encoder(nn.Module):
    """A stack of layers at one frame rate, sharing one positional encoding."""

    def __init__(self, layers: List[Zipformer2EncoderLayer], pos_dim: int, pos_dropout: float,
                 warmup_begin: float, warmup_end: float, initial_layerdrop_rate: float = 0.5,
                 final_layerdrop_rate: float = 0.05):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.num_layers = len(layers)
        self.pos_dim = pos_dim
        self.pos_dropout = pos_dropout
        # Layer-skip schedule: layers of later stacks warm up later; each layer's skip rate decays in its slot.
        delta = (warmup_end - warmup_begin) / len(layers)
        for i, layer in enumerate(self.layers):
            begin = warmup_begin + i * delta
            layer.bypass.skip_rate = Schedule((begin, initial_layerdrop_rate), (begin + delta, final_layerdrop_rate),
                                              default=0.0)

    def forward(self, x: Tensor, key_padding_mask: Optional[Tensor], feature_mask=None) -> Tensor:
        pos_emb = compact_rel_pos_encoding(x.shape[1], self.pos_dim, x.device, torch.float32)
        pos_emb = F.dropout(pos_emb, self.pos_dropout, self.training)
        if feature_mask is not None:
            x = x * feature_mask
        for layer in self.layers:
            x = layer(x, pos_emb, key_padding_mask)
            if feature_mask is not None:
                x = x * feature_mask
        return x


class DownsampledZipformer2Encoder(nn.Module):
    """Runs a stack at 1/ds of the frame rate: SimpleDownsample -> layers -> SimpleUpsample -> bypass."""

    def __init__(self, encoder: Zipformer2Encoder, dim: int, downsample: int):
        super().__init__()
        self.downsample_factor = downsample
        self.downsample = SimpleDownsample(downsample)
        self.encoder = encoder
        self.upsample = SimpleUpsample(downsample)
        self.out_combiner = BypassModule(dim)

    def forward(self, x: Tensor, key_padding_mask: Optional[Tensor], lengths: Optional[Tensor],
                feature_mask=None) -> Tensor:
        ds = self.downsample_factor
        x_orig = x
        x = self.downsample(x, lengths)
        mask = None if key_padding_mask is None else key_padding_mask[:, ::ds]
        x = self.encoder(x, mask, feature_mask)
        x = self.upsample(x)[:, : x_orig.shape[1]]
        return self.out_combiner(x_orig, x)


class Zipformer2(nn.Module):
    """The multi-rate stacks + channel combination + output downsampling (icefall's ``encoder``)."""

    def __init__(self, cfg: ZipformerConfig):
        super().__init__()
        self.cfg = cfg
        n = len(cfg.downsampling_factor)
        encoders = []
        for i in range(n):
            layers = [
                Zipformer2EncoderLayer(
                    cfg.encoder_dim[i], cfg.pos_dim, cfg.num_heads[i], cfg.query_head_dim, cfg.pos_head_dim,
                    cfg.value_head_dim, cfg.feedforward_dim[i], cfg.cnn_module_kernel[i],
                    cfg.include_unused_bypass_scale)
                for _ in range(cfg.num_encoder_layers[i])
            ]
            enc = Zipformer2Encoder(
                layers, cfg.pos_dim, cfg.pos_dropout,
                warmup_begin=cfg.warmup_batches * (i + 1) / (n + 1),
                warmup_end=cfg.warmup_batches * (i + 2) / (n + 1),
                final_layerdrop_rate=0.035 * (cfg.downsampling_factor[i] ** 0.5))
            if cfg.downsampling_factor[i] != 1:
                enc = DownsampledZipformer2Encoder(enc, cfg.encoder_dim[i], cfg.downsampling_factor[i])
            encoders.append(enc)
        self.encoders = nn.ModuleList(encoders)
        self.downsample_output = SimpleDownsample(cfg.output_downsampling_factor)

    def _feature_masks(self, x: Tensor) -> List[Optional[Tensor]]:
        """Per-clip masks zeroing the channels above encoder_unmasked_dim (two halves, p=0.125 each)."""
        cfg = self.cfg
        if not (self.training and cfg.regularizers):
            return [None] * len(cfg.encoder_dim)
        N, p = x.shape[0], 0.125
        m1 = (torch.rand(N, 1, 1, device=x.device) > p).to(x.dtype)
        m2 = m1 * (torch.rand(N, 1, 1, device=x.device) > p).to(x.dtype)
        masks = []
        for d, u1 in zip(cfg.encoder_dim, cfg.encoder_unmasked_dim):
            u2 = u1 + (d - u1) // 2
            fm = torch.ones(N, 1, d, device=x.device, dtype=x.dtype)
            fm[:, :, u1:u2] = m1[:, :, 0:1].expand(N, 1, u2 - u1)
            fm[:, :, u2:] = m2[:, :, 0:1].expand(N, 1, d - u2)
            masks.append(fm)
        return masks

    @staticmethod
    def _convert_num_channels(x: Tensor, c: int) -> Tensor:
        if c <= x.shape[-1]:
            return x[..., :c]
        return F.pad(x, (0, c - x.shape[-1]))

    def forward(self, x: Tensor, lengths: Optional[Tensor]) -> Tensor:
        cfg = self.cfg
        key_padding_mask = None
        if lengths is not None:
            key_padding_mask = torch.arange(x.shape[1], device=x.device).unsqueeze(0) >= lengths.unsqueeze(1)
        feature_masks = self._feature_masks(x)
        outputs = []
        for i, module in enumerate(self.encoders):
            x = self._convert_num_channels(x, cfg.encoder_dim[i])
            if isinstance(module, DownsampledZipformer2Encoder):
                x = module(x, key_padding_mask, lengths, feature_masks[i])
            else:
                x = module(x, key_padding_mask, feature_masks[i])
            outputs.append(x)
        # Output = last stack, then the extra channels of wider earlier stacks (latest first).
        pieces, cur = [outputs[-1]], cfg.encoder_dim[-1]
        for i in range(len(outputs) - 2, -1, -1):
            d = cfg.encoder_dim[i]
            if d > cur:
                pieces.append(outputs[i][..., cur:d])
                cur = d
        x = torch.cat(pieces, dim=-1)
        return self.downsample_output(x, lengths)


class ConvNeXt(nn.Module):
    """Residual ConvNeXt block on (N, C, T, F): depthwise 7x7 -> 1x1 (x3) -> SwooshL -> 1x1 (init scale 0.01)."""

    def __init__(self, channels: int, hidden_ratio: int = 3, kernel_size: Tuple[int, int] = (7, 7)):
        super().__init__()
        pad = ((kernel_size[0] - 1) // 2, (kernel_size[1] - 1) // 2)
        self.depthwise_conv = nn.Conv2d(channels, channels, kernel_size, padding=pad, groups=channels)
        self.pointwise_conv1 = nn.Conv2d(channels, channels * hidden_ratio, 1)
        self.pointwise_conv2 = nn.Conv2d(channels * hidden_ratio, channels, 1)
        with torch.no_grad():
            self.pointwise_conv2.weight.mul_(0.01)
            nn.init.uniform_(self.pointwise_conv2.bias, -0.001, 0.001)
        self.layerdrop_rate = Schedule((0.0, 0.2), (20000.0, 0.015))
        self.regularizers = False
        self.batch_count: Optional[float] = None

    def forward(self, x: Tensor, time_mask: Optional[Tensor] = None) -> Tensor:
        # time_mask (N, 1, T, 1): zero the padded frames so the 7-frame kernel sees what an unpadded clip sees.
        y = x if time_mask is None else x * time_mask
        y = self.pointwise_conv2(swoosh_l(self.pointwise_conv1(self.depthwise_conv(y))))
        if self.training and self.regularizers:
            rate = self.layerdrop_rate(self.batch_count)
            if rate > 0.0:
                y = y * (torch.rand(x.shape[0], 1, 1, 1, device=x.device) > rate).to(y.dtype)
        return x + y


class Conv2dSubsampling(nn.Module):
    """(N, T, 80) at 100 Hz -> (N, (T-7)//2, dim0) at 50 Hz; freq 80 -> 19 before the output Linear."""

    def __init__(self, in_channels: int, out_channels: int, layer1: int = 8, layer2: int = 32, layer3: int = 128):
        super().__init__()
        # Indices mirror icefall's Sequential (Balancer slots are identities) so its checkpoints load by name.
        self.conv = nn.Sequential(
            nn.Conv2d(1, layer1, kernel_size=3, padding=(0, 1)),
            ScaleGrad(0.2),
            nn.Identity(),
            SwooshR(),
            nn.Conv2d(layer1, layer2, kernel_size=3, stride=2, padding=0),
            nn.Identity(),
            SwooshR(),
            nn.Conv2d(layer2, layer3, kernel_size=3, stride=(1, 2)),
            nn.Identity(),
            SwooshR(),
        )
        self.convnext = ConvNeXt(layer3)
        self.out_width = (((in_channels - 1) // 2) - 1) // 2
        self.out = nn.Linear(self.out_width * layer3, out_channels)
        self.out_norm = BiasNorm(out_channels)
        self.dropout = 0.1

    def forward(self, x: Tensor, lengths: Tensor) -> Tuple[Tensor, Tensor]:
        out_lengths = (lengths - 7) // 2
        # channels_last: oneDNN's (depthwise) conv backward is ~10x faster in NHWC on CPU; cuDNN prefers it too.
        x = self.conv(x.unsqueeze(1).contiguous(memory_format=torch.channels_last))  # (N, C, T', F')
        N, C, T, Fq = x.shape
        time_mask = (torch.arange(T, device=x.device).unsqueeze(0) < out_lengths.unsqueeze(1)).to(x.dtype)
        x = self.convnext(x, time_mask[:, None, :, None])
        x = x.transpose(1, 2).reshape(N, T, C * Fq)
        x = self.out_norm(self.out(x))
        x = shared_dropout(x, self.dropout, self.training)
        return x, out_lengths


# ----------------------------------------------------------------------------------------------------------------
# Public model
# ----------------------------------------------------------------------------------------------------------------


class Zipformer(nn.Module):
    """Conv2d front-end + multi-rate Zipformer stacks. forward(features (N,T,F), lengths (N,)) -> (N,T',D), lengths'."""

    MIN_INPUT_FRAMES = 9  # the conv front-end's (T - 7) // 2 must leave at least one frame

    def __init__(self, config: Optional[ZipformerConfig] = None):
        super().__init__()
        cfg = config if config is not None else ZipformerConfig()
        if isinstance(cfg, dict):
            cfg = ZipformerConfig.from_dict(cfg)
        self.config = cfg = dataclasses.replace(cfg)  # own copy: set_attention_scaling must not leak to the caller
        c1, c2, c3 = cfg.embed_channels
        self.encoder_embed = Conv2dSubsampling(cfg.feature_dim, cfg.encoder_dim[0], c1, c2, c3)
        self.encoder = Zipformer2(cfg)
        self.batch_count: Optional[float] = None
        self._propagate()

    # -- attributes used by objectives / evaluation -------------------------------------------------------------
    @property
    def output_dim(self) -> int:
        return self.config.output_dim

    @property
    def frame_hop_ms(self) -> float:
        return self.config.frame_hop_ms

    def out_lengths(self, lengths: Tensor) -> Tensor:
        od = self.config.output_downsampling_factor
        return (((lengths - 7) // 2) + od - 1) // od

    # -- schedules ---------------------------------------------------------------------------------------------
    def set_batch_count(self, batch_count: Optional[float]) -> None:
        """Drive the training-only schedules (dropout, skips, bypass minimum) from the trainer's batch counter."""
        self.batch_count = None if batch_count is None else float(batch_count)
        self._propagate()

    def set_attention_scaling(self, enabled: bool) -> None:
        """Multiply q.k by query_head_dim**-0.5 (for AdamW); ScaledAdam runs without it."""
        self.config.attention_scaling = bool(enabled)
        self._propagate()

    def _dropout_value(self) -> float:
        cfg = self.config
        if cfg.regularizers and self.batch_count is not None:
            return Schedule((0.0, 0.3), (20000.0, 0.1))(self.batch_count)
        return cfg.dropout

    def _propagate(self) -> None:
        cfg = self.config
        p = self._dropout_value()
        for m in self.modules():
            if m is self:
                continue
            if hasattr(m, "batch_count"):
                m.batch_count = self.batch_count
            if hasattr(m, "regularizers"):
                m.regularizers = cfg.regularizers
            if isinstance(m, (Balancer, Whiten, AbsValuePenalty)):
                m.constraints = cfg.activation_constraints
            if isinstance(m, RelPositionMultiheadAttentionWeights):
                m.attention_scaling = cfg.attention_scaling
            if isinstance(m, FeedforwardModule):
                m.dropout = p
        self.encoder_embed.dropout = p

    def forward(self, features: Tensor, lengths: Tensor) -> Tuple[Tensor, Tensor]:
        if features.dim() != 3 or features.shape[-1] != self.config.feature_dim:
            raise ValueError(f"Zipformer expects features (N, T, {self.config.feature_dim}); got "
                             f"{tuple(features.shape)}")
        if lengths.shape != (features.shape[0],):
            raise ValueError(f"Zipformer: lengths must have shape ({features.shape[0]},); got {tuple(lengths.shape)}")
        compiling = torch.compiler.is_compiling() if hasattr(torch, "compiler") else False
        if not compiling and int(lengths.max()) > features.shape[1]:
            raise ValueError(f"Zipformer: lengths go up to {int(lengths.max())} but features have {features.shape[1]} "
                             "frames; give lengths in fbank frames (not samples or seconds)")
        if features.shape[1] < self.MIN_INPUT_FRAMES or (not compiling and int(lengths.min()) < self.MIN_INPUT_FRAMES):
            raise ValueError(f"Zipformer needs at least {self.MIN_INPUT_FRAMES} input frames (~0.1 s) per clip; pad "
                             "or drop shorter clips")
        lengths = lengths.to(features.device).long()
        x, emb_lengths = self.encoder_embed(features, lengths)
        x = self.encoder(x, emb_lengths)
        od = self.config.output_downsampling_factor
        out_lengths = (emb_lengths + od - 1) // od
        # Zero the padded output frames so naive pooling downstream cannot pick up garbage.
        valid = torch.arange(x.shape[1], device=x.device).unsqueeze(0) < out_lengths.unsqueeze(1)
        x = x * valid.unsqueeze(-1).to(x.dtype)
        return x, out_lengths


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def load_icefall_state_dict(model: Zipformer, state_dict: dict, strict: bool = True):
    """Load the encoder part of an icefall Zipformer checkpoint (e.g. the AudioSet AT recipe's ``model`` dict).

    Keeps the ``encoder_embed.*`` / ``encoder.*`` entries (the classifier and anything else are ignored) and drops
    the unused per-layer ``bypass_scale`` when ``model`` does not hold it. Reading the checkpoint file itself
    (a pickle) is the caller's responsibility. Returns torch's (missing_keys, unexpected_keys).
    """
    own = set(model.state_dict().keys())
    picked = {}
    for k, v in state_dict.items():
        if k.startswith("module."):  # DDP-saved checkpoints
            k = k[len("module."):]
        if not (k.startswith("encoder_embed.") or k.startswith("encoder.")):
            continue
        if k.endswith(".bypass_scale") and k not in own and ".layers." in k:
            continue
        picked[k] = v
    return model.load_state_dict(picked, strict=strict)
