"""Clip-level pooling of frame-level encoder output: masked mean, or multi-head attention with a learned query.

Both take ``(frames (N, T, D), lengths (N,))`` and return ``(N, D)``; padded frames never influence the result.
Used by the contrastive / tagging objectives and by linear probing.
"""
from __future__ import annotations

import torch
from torch import nn


def valid_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(N, max_len) bool, True where the frame index is < length."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


class MeanPooling(nn.Module):
    """Masked mean over the valid frames."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = int(dim)
        self.output_dim = self.dim

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = valid_mask(lengths, frames.shape[1]).unsqueeze(-1).to(frames.dtype)
        # where() rather than multiply, so that inf/nan in padded frames cannot leak in.
        summed = torch.where(mask.bool(), frames, torch.zeros_like(frames)).sum(1)
        return summed / mask.sum(1).clamp(min=1.0)


class AttentionPooling(nn.Module):
    """Multi-head attention pooling (MAP): one learned query attends over the layer-normed valid frames.

    Padded frames are excluded through the key padding mask, so their values never change the output.
    """

    def __init__(self, dim: int, num_heads: int = 8, dropout: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"AttentionPooling: dim={dim} is not divisible by num_heads={num_heads}; "
                             "pick a head count that divides the encoder output dim")
        self.dim = int(dim)
        self.output_dim = self.dim
        self.num_heads = int(num_heads)
        self.query = nn.Parameter(torch.randn(1, 1, dim) * dim ** -0.5)
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        n, t, _ = frames.shape
        pad = ~valid_mask(lengths.clamp(min=1), t)  # a clip with 0 frames still attends to frame 0, not to nothing
        kv = self.norm(torch.where(pad.unsqueeze(-1), torch.zeros_like(frames), frames))
        out, _ = self.attn(self.query.expand(n, -1, -1), kv, kv, key_padding_mask=pad, need_weights=False)
        return out[:, 0]


POOLINGS = {"mean": MeanPooling, "attention": AttentionPooling}


def build_pooling(kind: str, dim: int, num_heads: int = 8) -> nn.Module:
    """``kind`` is "mean" or "attention" (alias "attn", "map")."""
    k = kind.lower()
    if k in ("attn", "map", "mha"):
        k = "attention"
    if k == "mean":
        return MeanPooling(dim)
    if k == "attention":
        return AttentionPooling(dim, num_heads=num_heads)
    raise ValueError(f"pooling={kind!r}; use one of {sorted(POOLINGS)}")
