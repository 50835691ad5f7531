"""Results records: one JSON file per run or evaluation, the only input of the report's figures.

A record holds what was run (kind, parameters, the full config), what came out (metrics), and where/when
(package version, git commit, host, time), so a figure can always be traced back to the run behind it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from audiolp.files import write_record  # noqa: F401  (the one writer of records; read_records reads them)


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
