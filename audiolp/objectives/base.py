"""What every pretraining objective shares: the contract with the trainer (:class:`Objective`), the output record,
seeded per-sample choices and config coercion."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from audiolp.configs import dataclass_from


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor  # scalar, differentiable
    logs: dict[str, float] = field(default_factory=dict)
    num_items: int = 0  # clips in the (local) batch


class Objective(nn.Module):
    """The contract between an objective and the trainer, which knows nothing else about it.

    A subclass sets ``config_class`` (its config dataclass), keeps the audio encoder as ``self.encoder`` and
    implements ``forward(batch, step) -> ObjectiveOutput``. The hooks below have defaults that fit an objective
    whose loss is a mean over clips and whose parameters all train at the base learning rate.
    """

    config_class: ClassVar[type]
    # Clips without a non-empty caption are left out before a run starts (they would stop it mid-way).
    requires_captions: ClassVar[bool] = False
    # Supervision custom fields the objective reads: the loader passes each as ``batch[name]`` (one value per clip,
    # None where a clip lacks it).
    batch_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, encoder: nn.Module, config: Any = None):
        super().__init__()
        self.encoder = encoder
        self.config = coerce_config(self.config_class, config)

    @classmethod
    def prepare(cls, config: dict, cuts, label_field: str | None = None) -> dict:
        """The objective's config completed from the training corpus before the objective is built (e.g. tagging's
        label set; ``label_field`` names the manifest field holding labels). Runs once, on the whole manifest
        (not the scale subset), so every scale of a corpus gets the same config. Default: unchanged."""
        return dict(config)

    def param_groups(self) -> list[dict]:
        """Learning-rate groups ``[{"params", "lr_scale", "name"}]`` covering every trainable parameter once."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr_scale": 1.0, "name": "all"}]

    def loss_weight(self, batch: dict, step: int = 0) -> float:
        """How many units the batch loss is a mean over (clips by default): micro-batches and ranks are weighted
        by it so that a step averages over every unit of the global batch."""
        return float(len(batch["cut_ids"]) if "cut_ids" in batch else batch["features"].shape[0])

    def forward(self, batch: dict, step: int = 0) -> ObjectiveOutput:
        raise NotImplementedError


def seeded_uniform(seed: int, step: int, key: str, purpose: str) -> float:
    """A uniform number in [0, 1) that depends only on (seed, step, key, purpose).

    Per-sample choices use this instead of a global RNG so that a resumed run, a 2-rank DDP run and an
    uninterrupted 1-rank run make the same choice for the same clip at the same step.
    """
    h = hashlib.blake2b(f"{seed}|{step}|{key}|{purpose}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2.0 ** 64


def seeded_choice(n: int, seed: int, step: int, key: str, purpose: str) -> int:
    if n <= 0:
        raise ValueError(f"clip {key!r}: nothing to choose from for {purpose!r} (empty list)")
    return min(int(seeded_uniform(seed, step, key, purpose) * n), n - 1)


def pick_captions(batch: dict, seed: int, step: int) -> list[str]:
    """One caption per clip, chosen deterministically from all of its captions."""
    caps, ids = batch.get("captions"), batch.get("cut_ids")
    if caps is None or ids is None:
        raise KeyError("batch lacks 'captions' or 'cut_ids'; the objective needs both (see audiolp.data.loader)")
    out = []
    for cid, c in zip(ids, caps):
        if isinstance(c, str):
            c = [c]
        if not c:
            raise ValueError(f"clip {cid!r}: field 'captions' is empty; every training clip needs >= 1 caption")
        out.append(c[seeded_choice(len(c), seed, step, cid, "caption")])
    return out


def module_device(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def audio_inputs(batch: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        feats, lens = batch["features"], batch["feature_lens"]
    except KeyError as e:
        raise KeyError(f"batch lacks {e.args[0]!r}; expected keys 'features' (N,T,80) and 'feature_lens' (N,)") from e
    return feats.to(device, non_blocking=True).float(), lens.to(device, non_blocking=True).long()


def coerce_config(cls, config: Any):
    """None -> defaults; dict -> cls(**dict) with a clear error naming unknown fields; dataclass of cls -> itself."""
    return dataclass_from(cls, config)
