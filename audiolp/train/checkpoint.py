"""Checkpoints without pickle: tensors in safetensors files, everything else in JSON.

Layout of a run dir:
  config.json                      TrainConfig (audiolp.train.config)
  encoder_config.json              {"class": "zipformer", "config": {...ZipformerConfig fields}}
  checkpoints/step-00001000/       one checkpoint, written to a temp dir and renamed into place
      model.safetensors            the objective's state_dict (encoder.* + text side / decoder / head)
      ema.safetensors              EMA of the same (when ema_decay > 0)
      optimizer.safetensors/.json  optimizer state (tensors / structure)
      trainer.safetensors/.json    scheduler, sampler position, RNG states of every rank, step, epoch, loss history
  checkpoints/latest               name of the newest whole checkpoint (replaced atomically)
  encoder.safetensors              final encoder weights (bare keys); encoder_ema.safetensors with EMA
  results.json, tb/                results record and TensorBoard logs

A crash at any point leaves the previous checkpoint and ``latest`` intact: a checkpoint dir only appears under its
final name once every file in it is written and flushed, and ``latest`` is replaced by os.replace.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest"
_STEP_PREFIX = "step-"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, incomplete or does not match the run."""


# ---------------------------------------------------------------------------------------------------------------
# Arbitrary nested state (optimizer, scheduler, RNG) <-> JSON + named tensors.
# ---------------------------------------------------------------------------------------------------------------
def flatten_state(obj: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """Split a nested state (dicts, lists, tuples, tensors, numbers, strings) into JSON and a tensor dict.

    Tensors become {"__tensor__": key}; tuples and non-string dict keys are tagged so that
    :func:`unflatten_state` gives back exactly the same structure (optimizer states key params by int).
    """
    tensors: dict[str, torch.Tensor] = {}

    def enc(x: Any, path: str) -> Any:
        if isinstance(x, torch.Tensor):
            key = path or "root"
            tensors[key] = x.detach().to("cpu").contiguous().clone()
            return {"__tensor__": key}
        if isinstance(x, dict):
            if all(isinstance(k, str) for k in x):
                if any(k.startswith("__") and k.endswith("__") for k in x):
                    raise TypeError(f"state key at {path!r} uses the reserved __name__ form: {list(x)}")
                return {k: enc(v, f"{path}.{k}" if path else k) for k, v in x.items()}
            items = []
            for k, v in x.items():
                if not isinstance(k, (int, str, float, bool)) and k is not None:
                    raise TypeError(f"state at {path!r}: dict key {k!r} of type {type(k).__name__} is not supported")
                items.append([k, enc(v, f"{path}.{k}" if path else str(k))])
            return {"__items__": items}
        if isinstance(x, tuple):
            return {"__tuple__": [enc(v, f"{path}.{i}") for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [enc(v, f"{path}.{i}") for i, v in enumerate(x)]
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        # numpy scalars / arrays (numpy RNG state) -> plain Python / tensors
        if hasattr(x, "dtype") and hasattr(x, "tolist"):
            if getattr(x, "ndim", 0) == 0:
                return x.item()
            return enc(torch.from_numpy(x.copy()), path)
        raise TypeError(f"state at {path!r} holds a {type(x).__name__}, which cannot be stored without pickle")

    return enc(obj, ""), tensors


def unflatten_state(meta: Any, tensors: dict[str, torch.Tensor]) -> Any:
    def dec(x: Any) -> Any:
        if isinstance(x, dict):
            if "__tensor__" in x:
                return tensors[x["__tensor__"]]
            if "__tuple__" in x:
                return tuple(dec(v) for v in x["__tuple__"])
            if "__items__" in x:
                return {k: dec(v) for k, v in x["__items__"]}
            return {k: dec(v) for k, v in x.items()}
        if isinstance(x, list):
            return [dec(v) for v in x]
        return x

    return dec(meta)


def save_state(obj: Any, stem: Path) -> None:
    """Write ``stem``.json (+ ``stem``.safetensors when the state holds tensors)."""
    meta, tensors = flatten_state(obj)
    if tensors:
        save_file(tensors, str(stem) + ".safetensors")
    _write_json(Path(str(stem) + ".json"), {"format": "audiolp-state-v1", "has_tensors": bool(tensors), "state": meta})


def load_state(stem: Path) -> Any:
    jpath = Path(str(stem) + ".json")
    if not jpath.exists():
        raise CheckpointError(f"{jpath} is missing; the checkpoint is incomplete — resume from an earlier one")
    doc = json.loads(jpath.read_text())
    tensors = load_file(str(stem) + ".safetensors") if doc.get("has_tensors") else {}
    return unflatten_state(doc["state"], tensors)


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
        raise CheckpointError(f"weights file {path} does not exist")
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
# Checkpoint directories.
# ---------------------------------------------------------------------------------------------------------------
def step_dir_name(step: int) -> str:
    return f"{_STEP_PREFIX}{step:08d}"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_json(path: Path, obj: Any) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())


def _write_pointer(root: Path, name: str) -> None:
    tmp = root / f".{LATEST}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(name + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, root / LATEST)
    _fsync_dir(root)


_OLD_PREFIX = ".tmp-old-"


def remove_stale_temp(root: Path) -> None:
    """Temp dirs of checkpoints that a crash interrupted are removed, except a re-saved step's previous copy
    (``.tmp-old-<step>-<pid>``) whose replacement never arrived: that one is put back in place."""
    if not root.exists():
        return
    for p in root.glob(_OLD_PREFIX + "*"):
        final = root / p.name[len(_OLD_PREFIX):].rsplit("-", 1)[0]
        if not final.exists() and (p / "COMPLETE.json").exists():
            os.replace(p, final)
    for p in root.glob(".tmp-*"):
        shutil.rmtree(p, ignore_errors=True)


def write_checkpoint(root: Path, step: int, parts: dict[str, Any]) -> Path:
    """Write one checkpoint atomically and point ``latest`` at it.

    ``parts``: name -> either a state_dict of tensors (written as ``name``.safetensors via :func:`save_weights`;
    use keys ending in "weights") or any nested state (``name``.json + .safetensors via :func:`save_state`).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dir_name(step)
    tmp = root / f".tmp-{step_dir_name(step)}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    old = root / f"{_OLD_PREFIX}{step_dir_name(step)}-{os.getpid()}"
    try:
        for name, value in parts.items():
            if name in ("model", "ema"):
                save_weights(value, tmp / f"{name}.safetensors")
            else:
                save_state(value, tmp / name)
        _write_json(tmp / "COMPLETE.json", {"step": step, "parts": sorted(parts)})
        for p in tmp.iterdir():  # safetensors does not fsync; do it before the rename publishes the dir
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(tmp)
        if final.exists():  # re-saving the same step (e.g. a resumed run that stops where it started)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(root)
    except BaseException:
        if old.exists() and not final.exists():  # interrupted between the two renames: the old copy goes back
            os.replace(old, final)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _write_pointer(root, final.name)
    return final


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


def prune_checkpoints(root: Path, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` checkpoints (never the one ``latest`` names)."""
    root = Path(root)
    ckpts = list_checkpoints(root)
    protected = latest_checkpoint(root)
    removed = []
    for p in ckpts[:-keep_last] if keep_last > 0 else ckpts:
        if protected is not None and p.resolve() == protected.resolve():
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed


def read_checkpoint(path: Path, parts: tuple[str, ...]) -> dict[str, Any]:
    path = Path(path)
    if not (path / "COMPLETE.json").exists():
        raise CheckpointError(f"{path} is not a complete checkpoint (no COMPLETE.json)")
    out = {}
    for name in parts:
        if name in ("model", "ema"):
            f = path / f"{name}.safetensors"
            out[name] = load_weights(f) if f.exists() else None
        else:
            out[name] = load_state(path / name) if (path / f"{name}.json").exists() else None
    return out


# ---------------------------------------------------------------------------------------------------------------
# Encoders.
# ---------------------------------------------------------------------------------------------------------------
ENCODER_CONFIG = "encoder_config.json"


def encoder_config_dict(encoder_cfg) -> dict:
    import dataclasses

    return {"class": "zipformer", "config": dataclasses.asdict(encoder_cfg)}


def build_encoder_from_dict(d: dict):
    """The encoder described by an encoder_config.json (randomly initialised; load weights next)."""
    if d.get("class") != "zipformer":
        raise CheckpointError(f"encoder class {d.get('class')!r} is not known; only 'zipformer' is")
    from audiolp.models.zipformer import Zipformer, ZipformerConfig

    try:
        return Zipformer(ZipformerConfig.from_dict(d["config"]))
    except ValueError as e:
        raise CheckpointError(f"encoder config does not fit this version of audiolp: {e}") from e


def load_encoder_weights(encoder: torch.nn.Module, path: str | os.PathLike) -> torch.nn.Module:
    """Load an encoder from a weights file holding either the bare encoder (encoder.safetensors) or a whole
    objective (model.safetensors, keys "encoder.*"); the objectives' reader, with checkpoint errors."""
    from audiolp.objectives.base import init_encoder_from

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"weights file {path} does not exist")
    try:
        return init_encoder_from(encoder, path)
    except ValueError as e:
        raise CheckpointError(f"{e} ({ENCODER_CONFIG} of the run that wrote {path.name} describes the encoder)") \
            from e


def save_encoder_config(run_dir: Path, encoder_cfg) -> Path:
    path = Path(run_dir) / ENCODER_CONFIG
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(encoder_config_dict(encoder_cfg), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def save_final_encoder(run_dir: Path, encoder_state: dict, ema_encoder_state: dict | None, step: int) -> None:
    run_dir = Path(run_dir)
    for name, sd in (("encoder", encoder_state), ("encoder_ema", ema_encoder_state)):
        if sd is None:
            continue
        tmp = run_dir / f".{name}.tmp{os.getpid()}.safetensors"
        save_weights(sd, tmp, metadata={"step": str(step)})
        os.replace(tmp, run_dir / f"{name}.safetensors")


def load_encoder(run_dir: str | os.PathLike, checkpoint: str | os.PathLike = "latest", use_ema: bool | None = None,
                 device: str = "cpu") -> torch.nn.Module:
    """The audio encoder of a run, frozen (eval mode, requires_grad False).

    checkpoint: "latest" (checkpoints/latest), "final" (run_dir/encoder*.safetensors written at the end of
    training), a checkpoint dir, or a .safetensors file (keys "encoder.*" or bare).
    use_ema: True = the EMA weights (error if the run kept none), False = the raw weights,
    None = EMA when the run kept one.
    """
    run_dir = Path(run_dir)
    cfg_path = run_dir / ENCODER_CONFIG
    if cfg_path.exists():
        encoder = build_encoder_from_dict(json.loads(cfg_path.read_text()))
    elif (run_dir / "config.json").exists():  # rebuild from the training config (preset + overrides + optimizer)
        from audiolp.models.zipformer import Zipformer
        from audiolp.train.config import TrainConfig
        from audiolp.train.trainer import build_encoder_config

        encoder = Zipformer(build_encoder_config(TrainConfig.load(run_dir / "config.json")))
    else:
        raise CheckpointError(f"{run_dir} has neither {ENCODER_CONFIG} nor config.json: it is not a training run dir")

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
        if cdir.is_file():
            path = cdir
        else:
            path = pick(cdir / "model.safetensors", cdir / "ema.safetensors")
    load_encoder_weights(encoder, path)
    encoder.to(device).eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    return encoder
