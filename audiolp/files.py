"""Writing files so that a crash never leaves a half-written one: every JSON, config and results record of the
package goes through ``atomic_write_*``; every results record (a run's results.json, the study's records) through
``write_results_json``, which stamps where and when it was made."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any, Callable


def read_json(path: str | os.PathLike, fix: str, what: str = "", error: type[Exception] = ValueError) -> Any:
    """The JSON in ``path``; a file that does not parse raises ``error`` naming the file (after ``what``, e.g.
    "preset") and ``fix``."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise error(f"{what + ' ' if what else ''}{path}: not valid JSON ({e}); {fix}") from e


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """``write(tmp)`` fills a temporary file beside ``path``, which then replaces ``path`` in one rename: readers
    see the old file or the new one, never a part. The temporary file is removed if ``write`` fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2, sort_keys: bool = True) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys, default=str) + "\n")


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def provenance() -> dict[str, Any]:
    """Where and when a result was made: package version, git commit, host, UTC time."""
    from audiolp import __version__

    return {"audiolp_version": __version__, "git_commit": _git_commit(), "host": platform.node(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def write_results_json(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """The one writer of results records: ``payload`` plus :func:`provenance`, written atomically."""
    return atomic_write_json(path, {**payload, **provenance()})


def record_path(out_dir: str | os.PathLike, kind: str, name: str) -> Path:
    """Where the record of ``kind`` and ``name`` lives: ``out_dir/<kind>__<name>.json`` (unsafe characters -> _)."""
    if not kind or not name:
        raise ValueError("a results record needs a non-empty kind and name")
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in f"{kind}__{name}")
    return Path(out_dir) / f"{safe}.json"


def write_record(out_dir: str | os.PathLike, kind: str, name: str, params: dict[str, Any],
                 metrics: dict[str, Any], config: dict[str, Any] | None = None,
                 artifacts: dict[str, str] | None = None) -> Path:
    """Write the results record ``out_dir/<kind>__<name>.json`` (what was run, what came out) atomically."""
    return write_results_json(record_path(out_dir, kind, name), {
        "kind": kind, "name": name, "params": params, "metrics": metrics, "config": config or {},
        "artifacts": artifacts or {}})
