"""What every pretraining objective shares: the output record, seeded per-sample choices, config coercion,
and loading encoder weights from a checkpoint."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from audiolp.configs import dataclass_from


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor  # scalar, differentiable
    logs: dict[str, float] = field(default_factory=dict)
    num_items: int = 0  # clips in the (local) batch


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


def init_encoder_from(objective_or_encoder: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load encoder weights from a safetensors file into ``objective.encoder`` (or into a bare encoder).

    The file holds either a whole objective (keys "encoder.*" are taken, heads and text towers ignored) or a
    bare encoder state dict. Every encoder key must be present with the same
    shape; a mismatch raises ValueError naming the file and the keys. Returns the encoder.
    """
    from safetensors.torch import load_file

    # An encoder is recognised by the encoder contract's `output_dim` (a Zipformer also has a `.encoder` submodule).
    m = objective_or_encoder
    encoder = m if hasattr(m, "output_dim") or not hasattr(m, "encoder") else m.encoder
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"encoder checkpoint {str(path)!r} does not exist; pass a .safetensors file "
                                "written by the trainer (model.safetensors)")
    state = load_file(str(path), device="cpu")
    own = encoder.state_dict()
    # The prefix alone is ambiguous (the Zipformer's own keys include "encoder.encoders.*"), so take the reading
    # of the file -- whole objective ("encoder.*") or bare encoder -- that covers more of the encoder's keys.
    prefixed = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    is_prefixed = len(set(own) & set(prefixed)) > len(set(own) & set(state))
    src = prefixed if is_prefixed else state
    missing = sorted(set(own) - set(src))
    unexpected = sorted(set(src) - set(own))
    shape = sorted(f"{k}: checkpoint {tuple(src[k].shape)} vs model {tuple(own[k].shape)}"
                   for k in set(own) & set(src) if tuple(src[k].shape) != tuple(own[k].shape))
    if missing or unexpected or shape:
        def few(xs):
            return xs[:10] + ([f"... {len(xs) - 10} more"] if len(xs) > 10 else [])
        raise ValueError(
            f"encoder checkpoint {str(path)!r} does not fit this encoder "
            f"(read as {'an objective, keys encoder.*' if is_prefixed else 'a bare encoder'}): "
            f"missing {few(missing)}, unexpected {few(unexpected)}, shape mismatches {few(shape)}. "
            "Fix: build the encoder with the config the "
            "checkpoint was trained with (see the JSON beside it)."
        )
    encoder.load_state_dict(src, strict=True)
    return encoder
