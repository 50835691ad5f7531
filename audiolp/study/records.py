"""Results records: one JSON file per run or evaluation, the only input of the report's figures.

A record holds what was run (kind, parameters, the full config), what came out (metrics), and where/when
(package version, git commit, host, time), so a figure can always be traced back to the run behind it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from audiolp.files import write_results_json


def write_record(out_dir: str | os.PathLike, kind: str, name: str, params: dict[str, Any],
                 metrics: dict[str, Any], config: dict[str, Any] | None = None,
                 artifacts: dict[str, str] | None = None) -> Path:
    """Write ``out_dir/<kind>__<name>.json`` atomically and return its path."""
    if not kind or not name:
        raise ValueError("a results record needs a non-empty kind and name")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "kind": kind,
        "name": name,
        "params": params,
        "metrics": metrics,
        "config": config or {},
        "artifacts": artifacts or {},
    }
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in f"{kind}__{name}")
    return write_results_json(out_dir / f"{safe}.json", record)


def read_records(root: str | os.PathLike, kind: str | None = None) -> list[dict]:
    """Every record under ``root`` (recursively), optionally of one kind, sorted by name."""
    records = []
    for path in sorted(Path(root).rglob("*.json")):
        try:
            rec = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"results record {path} is not valid JSON ({e}); delete or regenerate it") from e
        if not isinstance(rec, dict) or "kind" not in rec or "metrics" not in rec:
            continue  # other JSON files (configs, stats) may live beside records
        if kind is None or rec["kind"] == kind:
            rec["_path"] = str(path)
            records.append(rec)
    return sorted(records, key=lambda r: (r["kind"], r["name"]))
