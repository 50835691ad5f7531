"""Typed configs from JSON-like dicts, with errors that name the unknown field and list the known ones."""
from __future__ import annotations

import dataclasses
from typing import Any


def dataclass_from(cls, value: Any, source: str | None = None):
    """None -> cls(); an instance of cls -> itself; another dataclass or a dict -> cls(**fields).

    Unknown fields and wrong types raise ValueError naming ``source`` (a file or section) and the class.
    """
    where = f"{source}: " if source else ""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if not isinstance(value, dict):
        raise ValueError(f"{where}{cls.__name__} must be given as a dict (JSON object), a {cls.__name__} or None, "
                         f"got {type(value).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(f"{where}unknown field(s) {unknown} for {cls.__name__}; known fields: {sorted(known)}")
    try:
        return cls(**value)
    except TypeError as e:
        raise ValueError(f"{where}cannot build {cls.__name__}: {e}") from e


def deep_merge(base: dict, update: dict) -> dict:
    """``base`` with ``update`` laid over it; nested dicts merge key by key (neither input is changed)."""
    out = dict(base)
    for k, v in update.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
