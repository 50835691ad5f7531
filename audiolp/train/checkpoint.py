"""Checkpoints without pickle: tensors in safetensors files, everything else in JSON.

Layout of a run dir (reading encoders back from it is audiolp.models.io's):
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
from safetensors.torch import load_file, save_file

# The run-dir layout, the weights files and reading an encoder back are the model library's (audiolp.models.io):
# evaluation loads encoders without importing the training package.
from audiolp.models.io import (CHECKPOINT_DIR, LATEST, CheckpointError, latest_checkpoint,  # noqa: F401
                               list_checkpoints, load_encoder, load_weights, save_weights, step_dir_name)


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
# Checkpoint directories.
# ---------------------------------------------------------------------------------------------------------------
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


