"""Contrastive audio-text pretraining: pooled audio and text embeddings, symmetric InfoNCE (or SigLIP).

Paper / authors' setting (the config defaults): bert-base-uncased [CLS] (30 tokens incl. specials), Linear-ReLU-Linear
to 1024-d on both sides, the audio side projecting each frame and then taking the masked mean (Auden clap/model.py),
fixed temperature 0.07, one learning rate for everything (text tower included), negatives gathered across GPUs. Under torch.distributed the embeddings of all ranks are
gathered *with gradients* and each rank computes the loss over its own rows of the global similarity matrix
(open_clip's local-loss form); ranks may hold different batch sizes (dynamic bucketing).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from audiolp.models.pooling import MeanPooling, build_pooling
from audiolp.models.text import PAPER_TEXT_MODEL, TextEncoder
from audiolp.objectives.base import Objective, ObjectiveOutput, audio_inputs, module_device, pick_captions


AUDIO_POOLINGS = ("frame_proj_mean", "mean", "attention")


@dataclass
class ContrastiveConfig:
    # HF hub id or local folder; offline runs pass "minilm" (models.text.OFFLINE_TEXT_MODEL, --text-model).
    text_model: str = PAPER_TEXT_MODEL  # "bert-base-uncased"
    max_text_tokens: int = 30  # incl. [CLS] and [SEP]
    text_pooling: str = "cls"  # "cls" | "mean"
    text_trainable: bool = True  # False freezes the text tower (no gradient, eval mode); text_lr_scale then unused
    text_cache_size: int = 0  # frozen tower only: keep this many captions' text vectors (0 = recompute each step)
    # LR multiplier for the pretrained text tower (the projection heads start from scratch and run at 1.0).
    # 1.0 = the authors' setting (one ScaledAdam rate for everything). ScaledAdam moves each tensor by ~lr
    # relative to its RMS, so < 1 (e.g. 0.1) fine-tunes the pretrained weights more gently.
    text_lr_scale: float = 1.0
    proj_dim: int = 1024
    proj_hidden_dim: int = 0  # 0 -> proj_dim
    # How the audio side becomes one vector (see AUDIO_POOLINGS):
    #   "frame_proj_mean": project every frame with the MLP, then masked mean (the authors' setting);
    #   "mean": masked mean of the frames, then project;  "attention": attention pooling, then project.
    audio_pooling: str = "frame_proj_mean"
    pooling_heads: int = 8
    temperature: float = 0.07
    learnable_temperature: bool = False
    min_temperature: float = 0.01  # clamp of a learnable temperature (logit scale <= 100)
    loss: str = "infonce"  # "infonce" | "siglip"
    siglip_bias_init: float = -10.0
    gather: bool = True  # gather negatives across ranks when torch.distributed is initialised
    seed: int = 0  # drives the per-step caption choice

    def __post_init__(self):
        if not str(self.text_model).strip():
            raise ValueError("ContrastiveConfig.text_model is empty; give an HF hub id ('bert-base-uncased'), a local "
                             "folder, or 'minilm' for the offline MiniLM")
        if str(self.audio_pooling).lower() in ("attn", "map", "mha"):  # build_pooling's aliases
            self.audio_pooling = "attention"
        if self.audio_pooling not in AUDIO_POOLINGS:
            raise ValueError(f"ContrastiveConfig.audio_pooling={self.audio_pooling!r}; use one of {AUDIO_POOLINGS} "
                             "('frame_proj_mean' = project each frame, then masked mean: the authors' setting)")
        if self.loss not in ("infonce", "siglip"):
            raise ValueError(f"ContrastiveConfig.loss={self.loss!r}; use 'infonce' or 'siglip'")
        if not 0 < self.min_temperature <= self.temperature:
            raise ValueError(f"ContrastiveConfig: need 0 < min_temperature ({self.min_temperature}) <= temperature "
                             f"({self.temperature})")
        if not (math.isfinite(self.text_lr_scale) and self.text_lr_scale > 0):
            raise ValueError(f"ContrastiveConfig.text_lr_scale={self.text_lr_scale}: must be > 0 (to freeze the text "
                             "tower use text_trainable=False)")


class ProjectionMLP(nn.Sequential):
    """Linear-ReLU-Linear."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int):
        super().__init__(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim))


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


class _GatherBlocks(torch.autograd.Function):
    """all_gather of equal-shape row blocks, one per rank; backward gives each rank the sum over ranks of the
    gradient reaching its own block (every rank's local loss scores this rank's rows).

    Written here rather than torch.distributed.nn.all_gather, whose gloo backward emulates reduce-scatter with a
    loop of scatters: the same all_reduce DDP uses is simpler and sturdier on CPU.
    """

    @staticmethod
    def forward(ctx, block: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(block) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, block.contiguous())
        return torch.cat(parts, 0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        world, rank = dist.get_world_size(), dist.get_rank()
        n = grad.shape[0] // world
        grad = grad.contiguous()
        if dist.get_backend() == dist.Backend.NCCL:  # each rank receives only its own summed block
            out = grad.new_empty((n,) + tuple(grad.shape[1:]))
            dist.reduce_scatter_tensor(out, grad)
            return out
        summed = grad.clone()
        dist.all_reduce(summed)
        return summed[rank * n:(rank + 1) * n]


def gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All ranks' rows of ``x`` concatenated in rank order, differentiable; and this rank's row offset.

    Without torch.distributed this is ``(x, 0)``. Ranks may hold different row counts: sizes are exchanged
    first and the rows padded to the largest, because all_gather needs equal shapes.
    """
    if not _distributed():
        return x, 0
    world, rank = dist.get_world_size(), dist.get_rank()
    n = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    sizes = [int(s.item()) for s in sizes]
    m = max(sizes)
    padded = F.pad(x, (0, 0, 0, m - x.shape[0])) if x.shape[0] < m else x
    gathered = _GatherBlocks.apply(padded)
    return torch.cat([gathered[r * m: r * m + s] for r, s in enumerate(sizes)], 0), sum(sizes[:rank])


def infonce_loss(audio: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor | float,
                 gather: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Symmetric InfoNCE of normalised (n, d) embeddings, pair i <-> i.

    Returns (loss, audio->text logits of the local rows (n, N_global), their target columns (n,)).
    Summed over ranks' local losses (as DDP's gradient averaging does) this is the global-batch loss.
    """
    all_audio, off = gather_with_grad(audio) if gather else (audio, 0)
    all_text, _ = gather_with_grad(text) if gather else (text, 0)
    labels = torch.arange(audio.shape[0], device=audio.device) + off
    logits_a2t = logit_scale * audio @ all_text.t()
    logits_t2a = logit_scale * text @ all_audio.t()
    loss = 0.5 * (F.cross_entropy(logits_a2t, labels) + F.cross_entropy(logits_t2a, labels))
    return loss, logits_a2t, labels


def siglip_loss(audio: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor | float,
                logit_bias: torch.Tensor | float, gather: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sigmoid loss (Zhai et al. 2023): every (audio, text) pair is a binary problem, positive iff matched.

    Local audio rows against all texts; each pair is counted on exactly one rank. Normalised by local batch size.
    """
    all_text, off = gather_with_grad(text) if gather else (text, 0)
    labels = torch.arange(audio.shape[0], device=audio.device) + off
    logits = logit_scale * audio @ all_text.t() + logit_bias
    sign = -torch.ones_like(logits)
    sign[torch.arange(audio.shape[0], device=audio.device), labels] = 1.0
    loss = -F.logsigmoid(sign * logits).sum() / audio.shape[0]
    return loss, logits, labels


class ContrastiveObjective(Objective):
    config_class = ContrastiveConfig
    requires_captions = True

    def __init__(self, encoder: nn.Module, config: ContrastiveConfig | dict | None = None):
        super().__init__(encoder, config)
        cfg = self.config
        self.text = TextEncoder(cfg.text_model, max_tokens=cfg.max_text_tokens, pooling=cfg.text_pooling,
                                trainable=cfg.text_trainable, cache_size=cfg.text_cache_size)
        hidden = cfg.proj_hidden_dim or cfg.proj_dim
        # frame_proj_mean pools the projected frames (proj_dim wide); the others pool encoder frames, then project.
        self.project_frames = cfg.audio_pooling == "frame_proj_mean"
        self.pooling = (MeanPooling(cfg.proj_dim) if self.project_frames
                        else build_pooling(cfg.audio_pooling, encoder.output_dim, cfg.pooling_heads))
        self.audio_proj = ProjectionMLP(encoder.output_dim, hidden, cfg.proj_dim)
        self.text_proj = ProjectionMLP(self.text.output_dim, hidden, cfg.proj_dim)
        init = torch.tensor(math.log(1.0 / cfg.temperature))
        if cfg.learnable_temperature:
            self.log_logit_scale = nn.Parameter(init)
        else:
            self.register_buffer("log_logit_scale", init)
        if cfg.loss == "siglip":
            self.logit_bias = nn.Parameter(torch.tensor(float(cfg.siglip_bias_init)))

    def param_groups(self) -> list[dict]:
        """LR groups for build_optimizer: everything from scratch at scale 1.0 (first, so the trainer's logged lr
        is the encoder's), the pretrained text tower at ``text_lr_scale``. Trainable parameters only."""
        text_ids = {id(p) for p in self.text.parameters()}
        trainable = [p for p in self.parameters() if p.requires_grad]
        groups = [{"params": [p for p in trainable if id(p) not in text_ids], "lr_scale": 1.0, "name": "main"},
                  {"params": [p for p in trainable if id(p) in text_ids], "lr_scale": float(self.config.text_lr_scale),
                   "name": "text_tower"}]
        return [g for g in groups if g["params"]]

    def logit_scale(self) -> torch.Tensor:
        # Clamped in log space: a learnable temperature never falls below min_temperature. Straight-through: the
        # value is the clamped one, but the gradient reaches the parameter as if unclamped; a plain clamp would give
        # it zero gradient once past the bound, so it could never come back. ``s - s.detach()`` is exactly 0, so the
        # forward value is bit-identical to ``s.clamp(max=...)``.
        s = self.log_logit_scale
        return (s.clamp(max=math.log(1.0 / self.config.min_temperature)).detach() + (s - s.detach())).exp()

    def embed_audio(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(N, T, 80) features -> L2-normalised (N, proj_dim) audio embeddings."""
        dev = module_device(self)
        frames, out_lens = self.encoder(features.to(dev).float(), lengths.to(dev).long())
        return F.normalize(self.pool_audio(frames, out_lens), dim=-1)

    def pool_audio(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Encoder frames (N, T, D) + lengths -> unnormalised (N, proj_dim), padded frames ignored.

        frame_proj_mean: the MLP is non-linear, so mean(MLP(frames)) != MLP(mean(frames)); padded frames are
        projected too (one batched matmul) but masked out of the mean."""
        if self.project_frames:
            return self.pooling(self.audio_proj(frames), lengths)
        return self.audio_proj(self.pooling(frames, lengths))

    def embed_text(self, captions: list[str]) -> torch.Tensor:
        """Captions -> L2-normalised (N, proj_dim) text embeddings."""
        return F.normalize(self.text_proj(self.text(list(captions))), dim=-1)

    def forward(self, batch: dict, step: int = 0) -> ObjectiveOutput:
        feats, lens = audio_inputs(batch, module_device(self))
        captions = pick_captions(batch, self.config.seed, step)
        audio = self.embed_audio(feats, lens)
        text = self.embed_text(captions)
        scale = self.logit_scale()
        if self.config.loss == "infonce":
            loss, logits, labels = infonce_loss(audio, text, scale, gather=self.config.gather)
        else:
            loss, logits, labels = siglip_loss(audio, text, scale, self.logit_bias, gather=self.config.gather)
        with torch.no_grad():
            r1 = (logits.argmax(-1) == labels).float().mean().item()
        logs = {"loss": float(loss.detach()), "temperature": float(1.0 / scale.detach()), "r1_a2t": r1}
        if self.config.loss == "siglip":
            logs["logit_bias"] = float(self.logit_bias.detach())
        return ObjectiveOutput(loss=loss, logs=logs, num_items=int(feats.shape[0]))
