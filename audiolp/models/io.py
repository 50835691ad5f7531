"""Weights on disk and encoders read back from them, without the training package (evaluation and export load
encoders from here; open_clip's factory keeps model loading in the model library the same way).

A run dir (written by ``audiolp.train``):
  encoder_config.json              {"class": "zipformer", "config": {...ZipformerConfig fields}}
  checkpoints/step-00001000/       model.safetensors (the whole objective, keys "encoder.*" + heads), ema.safetensors
  checkpoints/latest               the name of the newest whole checkpoint
  encoder.safetensors              final encoder weights (bare keys); encoder_ema.safetensors with EMA

One reader, :func:`load_encoder_weights`, takes both weights layouts: a bare encoder state dict, or a whole
objective whose encoder keys start with "encoder.".
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from audiolp.files import atomic_write, atomic_write_json

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest"
_STEP_PREFIX = "step-"
ENCODER_CONFIG = "encoder_config.json"


class CheckpointError(ValueError):
    """A checkpoint or weights file that is missing, incomplete or does not fit the model."""


class WeightsNotFound(CheckpointError, FileNotFoundError):
    """A weights file that does not exist."""


# ---------------------------------------------------------------------------------------------------------------
# Module weights (shared tensors stored once, their other names kept as aliases).
# ---------------------------------------------------------------------------------------------------------------
def save_weights(state_dict: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """safetensors refuses tensors that share memory (tied embeddings); store each once and record aliases.

    Of each group of names for one tensor, the ``encoder.*`` one (else the first in sorted order) is kept, so an
    encoder can always be read from the file without the rest of the model.
    """
    groups: dict[tuple, list[str]] = {}
    for name, t in state_dict.items():
        key = (t.device.type, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype) \
            if t.numel() > 0 else ("empty", name)
        groups.setdefault(key, []).append(name)
    tensors, aliases = {}, {}
    for names in groups.values():
        names = sorted(names, key=lambda n: (not n.startswith("encoder."), n))
        keep = names[0]
        tensors[keep] = state_dict[keep].detach().to("cpu").contiguous().clone()
        for other in names[1:]:
            aliases[other] = keep
    meta = dict(metadata or {})
    meta["aliases"] = json.dumps(aliases, sort_keys=True)
    save_file(tensors, str(path), metadata=meta)


def load_weights(path: Path, prefix: str | None = None, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Read a weights file written by :func:`save_weights`; with ``prefix`` only those keys, prefix removed."""
    path = Path(path)
    if not path.exists():
        raise WeightsNotFound(f"weights file {path} does not exist")
    with safe_open(str(path), framework="pt", device=device) as f:
        meta = f.metadata() or {}
        aliases = json.loads(meta.get("aliases", "{}"))
        names = list(f.keys())
        wanted = [n for n in names if prefix is None or n.startswith(prefix)]
        out = {n: f.get_tensor(n) for n in wanted}
        for alias, target in aliases.items():
            if prefix is None or alias.startswith(prefix):
                out[alias] = out[target] if target in out else f.get_tensor(target)
    if prefix is not None:
        out = {n[len(prefix):]: t for n, t in out.items()}
    return out


# ---------------------------------------------------------------------------------------------------------------
# Checkpoint directories of a run.
# ---------------------------------------------------------------------------------------------------------------
def step_dir_name(step: int) -> str:
    return f"{_STEP_PREFIX}{step:08d}"


def list_checkpoints(root: Path) -> list[Path]:
    root = Path(root)
    if not root.exists():
        return []
    out = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(_STEP_PREFIX)
           and (p / "COMPLETE.json").exists()]
    return sorted(out, key=lambda p: int(p.name[len(_STEP_PREFIX):]))


def latest_checkpoint(root: Path) -> Path | None:
    """The checkpoint ``latest`` names (falling back to the newest complete one if the pointer is missing)."""
    root = Path(root)
    ptr = root / LATEST
    if ptr.exists():
        name = ptr.read_text().strip()
        path = root / name
        if not (path / "COMPLETE.json").exists():
            raise CheckpointError(f"{ptr} names {name!r}, which is missing or incomplete; delete {ptr} to fall back "
                                  "to the newest complete checkpoint")
        return path
    ckpts = list_checkpoints(root)
    return ckpts[-1] if ckpts else None


# ---------------------------------------------------------------------------------------------------------------
# Encoders.
# ---------------------------------------------------------------------------------------------------------------
def encoder_config_dict(encoder_cfg) -> dict:
    return {"class": "zipformer", "config": dataclasses.asdict(encoder_cfg)}


def save_encoder_config(run_dir: str | os.PathLike, encoder_cfg) -> Path:
    return atomic_write_json(Path(run_dir) / ENCODER_CONFIG, encoder_config_dict(encoder_cfg))


def build_encoder_from_dict(d: dict):
    """The encoder described by an encoder_config.json (randomly initialised; load weights next)."""
    if d.get("class") != "zipformer":
        raise CheckpointError(f"encoder class {d.get('class')!r} is not known; only 'zipformer' is")
    from audiolp.models.zipformer import Zipformer, ZipformerConfig

    try:
        return Zipformer(ZipformerConfig.from_dict(d["config"]))
    except ValueError as e:
        raise CheckpointError(f"encoder config does not fit this version of audiolp: {e}") from e


def save_final_encoder(run_dir: str | os.PathLike, encoder_state: dict, ema_encoder_state: dict | None,
                       step: int) -> None:
    for name, sd in (("encoder", encoder_state), ("encoder_ema", ema_encoder_state)):
        if sd is not None:
            atomic_write(Path(run_dir) / f"{name}.safetensors",
                         lambda tmp, sd=sd: save_weights(sd, tmp, metadata={"step": str(step)}))


def _encoder_of(module: torch.nn.Module) -> torch.nn.Module:
    # An encoder is recognised by the encoder contract's `output_dim` (a Zipformer also has a `.encoder` submodule).
    return module if hasattr(module, "output_dim") or not hasattr(module, "encoder") else module.encoder


def load_encoder_weights(module: torch.nn.Module, path: str | os.PathLike) -> torch.nn.Module:
    """Load encoder weights from a safetensors file into ``module.encoder`` (an objective) or ``module`` (a bare
    encoder); returns the encoder.

    The file holds either a whole objective (keys "encoder.*" are taken; heads and text towers are ignored) or a
    bare encoder state dict. Every encoder key must be present with the same shape; a mismatch raises
    CheckpointError naming the file, the keys and the fix.
    """
    encoder = _encoder_of(module)
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFound(f"encoder weights {str(path)!r} do not exist; pass a .safetensors file written by the "
                              "trainer (encoder.safetensors, or a checkpoint's model.safetensors) or a run dir")
    state = load_weights(path)
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
        raise CheckpointError(
            f"encoder weights {str(path)!r} do not fit this encoder "
            f"(read as {'an objective, keys encoder.*' if is_prefixed else 'a bare encoder'}): "
            f"missing {few(missing)}, unexpected {few(unexpected)}, shape mismatches {few(shape)}. "
            f"Fix: build the encoder with the config the weights were trained with ({ENCODER_CONFIG} of their run)."
        )
    encoder.load_state_dict(src, strict=True)
    return encoder


def run_encoder_weights(run_dir: str | os.PathLike) -> Path:
    """The encoder weights of a run dir: its final encoder.safetensors, else its latest checkpoint's model."""
    run_dir = Path(run_dir)
    if (run_dir / "encoder.safetensors").is_file():
        return run_dir / "encoder.safetensors"
    ckpt = latest_checkpoint(run_dir / CHECKPOINT_DIR)
    if ckpt is None:
        raise CheckpointError(f"{run_dir} holds neither encoder.safetensors nor a checkpoint; give a run dir that "
                              "trained at least to its first checkpoint")
    return ckpt / "model.safetensors"


def resolve_weights(source: str | os.PathLike) -> Path:
    """A weights file from a file path or a run dir (its final encoder.safetensors)."""
    src = Path(source)
    return src / "encoder.safetensors" if src.is_dir() else src


def load_encoder(run_dir: str | os.PathLike, checkpoint: str | os.PathLike = "latest", use_ema: bool | None = None,
                 device: str = "cpu", encoder_config=None) -> torch.nn.Module:
    """The audio encoder of a run, frozen (eval mode, requires_grad False).

    checkpoint: "latest" (checkpoints/latest), "final" (run_dir/encoder*.safetensors written at the end of
    training), a checkpoint dir, or a .safetensors file (keys "encoder.*" or bare).
    use_ema: True = the EMA weights (error if the run kept none), False = the raw weights,
    None = EMA when the run kept one.
    encoder_config: the encoder's config (a ZipformerConfig) when the run dir has no encoder_config.json
    (``audiolp.load_encoder`` derives it from the run's config.json).
    """
    run_dir = Path(run_dir)
    cfg_path = run_dir / ENCODER_CONFIG
    if encoder_config is not None:
        encoder = build_encoder_from_dict(encoder_config_dict(encoder_config))
    elif cfg_path.exists():
        encoder = build_encoder_from_dict(json.loads(cfg_path.read_text()))
    else:
        raise CheckpointError(f"{run_dir} has no {ENCODER_CONFIG}: it is not a training run dir (the trainer writes "
                              "it when a run starts); give the run dir of an audiolp pretraining run")

    def pick(raw: Path, ema: Path) -> Path:
        if use_ema is False:
            return raw
        if ema.exists():
            return ema
        if use_ema:
            raise CheckpointError(f"use_ema=True but {ema} does not exist (the run had ema_decay=0); "
                                  "pass use_ema=False")
        return raw

    ckpt = str(checkpoint)
    if ckpt == "final":
        path = pick(run_dir / "encoder.safetensors", run_dir / "encoder_ema.safetensors")
        if not path.exists():
            raise CheckpointError(f"{path} does not exist: the run has not finished; use checkpoint='latest'")
    else:
        if ckpt == "latest":
            cdir = latest_checkpoint(run_dir / CHECKPOINT_DIR)
            if cdir is None:
                raise CheckpointError(f"{run_dir / CHECKPOINT_DIR} holds no checkpoint yet")
        else:
            cdir = Path(ckpt)
            if not cdir.is_absolute() and not cdir.exists():
                cdir = run_dir / CHECKPOINT_DIR / ckpt
        path = cdir if cdir.is_file() else pick(cdir / "model.safetensors", cdir / "ema.safetensors")
    load_encoder_weights(encoder, path)
    encoder.to(device).eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    return encoder
