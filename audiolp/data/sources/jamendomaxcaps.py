"""JamendoMaxCaps (HF ``amaai-lab/JamendoMaxCaps``): captions in ``final_caption30sec.jsonl`` at the repo
root, one JSON object per line ``{"id": <Jamendo track id>, "caption": ..., "start_time": s, "end_time": s}``
(Qwen2-Audio captions of 30 s segments; a track may have several), track metadata in the date-named files
(``2008-03-21.jsonl``: ``{"id", "duration", "musicinfo": {"tags": {"genres", "instruments", "vartags"}}}``),
and the tracks themselves (``<id>.mp3``, in any sub-folder layout since files are found by stem). The HF repo
ships the tracks inside ``data/train-*.parquet`` (an ``audio`` column of {bytes, path}); with
``unpack_audio_to=DIR`` they are written out to DIR once (resumable; existing files are kept) and read from there.

Each caption row becomes one cut: the ``[start_time, end_time)`` segment of the track (the whole track when
the row has no times). The metadata tags (genres, instruments, vartags) become the cut's labels when the
date-named files are present. Other key names can be given with ``id_key``/``caption_key``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Sequence

from audiolp.data.sources.common import (
    AudioFinder,
    SourceLoad,
    unpack_parquet_audio,
    add_clip,
    fmt_time,
    no_expected_files,
    progress,
    require_root,
)

NAME = "jamendomaxcaps"
DOMAIN = "music"
CAPTION_FILE = "final_caption30sec.jsonl"
METADATA_RE = re.compile(r"^\d{4}-\d{2}-\d{2}\.jsonl$")
ID_KEYS = ("id", "track_id")
CAPTION_KEYS = ("caption", "captions", "text")
START_KEYS = ("start_time", "start")
END_KEYS = ("end_time", "end")


def _first(row: dict, keys: Sequence[str]):
    return next((row[k] for k in keys if k in row and row[k] is not None), None)


def read_metadata_tags(files: Sequence[Path]) -> dict[str, list[str]]:
    """track id -> genres + instruments + vartags from the date-named metadata files (bad lines skipped:
    they only decorate cuts with labels)."""
    tags: dict[str, list[str]] = {}
    for path in files:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if not isinstance(row, dict) or row.get("id") in (None, ""):
                    continue
                t = ((row.get("musicinfo") or {}).get("tags") or {}) if isinstance(row.get("musicinfo"), dict) else {}
                labels = [str(x) for k in ("genres", "instruments", "vartags") for x in (t.get(k) or [])]
                tags[str(row["id"])] = labels
    return tags


def load(
    root: str | Path,
    *,
    caption_file: str | Path | None = None,
    audio_dir: str | Path | None = None,
    id_key: str | None = None,
    caption_key: str | None = None,
    with_metadata: bool = True,
    unpack_audio_to: str | Path | None = None,
) -> SourceLoad:
    """Read JamendoMaxCaps: captions from ``caption_file`` (default root/final_caption30sec.jsonl or
    root/data/...), audio under ``audio_dir`` (default root/audio when it exists, else root).

    ``unpack_audio_to``: first write the tracks embedded in ``root/data/*.parquet`` to this folder, then look for
    audio there too. Rows whose audio cannot be unpacked are listed with the clip problems (file:row)."""
    expected = [CAPTION_FILE]
    root = require_root(root, NAME, expected)
    if caption_file is not None:
        path = Path(caption_file)
        if not path.is_file():
            raise FileNotFoundError(f"{NAME}: caption_file {path} does not exist (expected {CAPTION_FILE})")
    else:
        path = next((p for p in (root / CAPTION_FILE, root / "data" / CAPTION_FILE) if p.is_file()), None)
        if path is None:
            raise no_expected_files(root, NAME, expected)
    tags = read_metadata_tags(sorted(p for p in root.iterdir() if METADATA_RE.match(p.name))) if with_metadata else {}
    audio_dir = Path(audio_dir) if audio_dir else (root / "audio" if (root / "audio").is_dir() else root)
    out = SourceLoad(name=NAME)
    dirs = [audio_dir]
    if unpack_audio_to is not None:
        shards = sorted((root / "data").glob("*.parquet"))
        if not shards:
            raise FileNotFoundError(f"{NAME}: unpack_audio_to is set but {root / 'data'} has no .parquet shards; "
                                    "drop the option when the tracks are already files")
        report = unpack_parquet_audio(progress(shards, desc="unpack parquet audio"), unpack_audio_to)
        out.malformed.extend(report.problems)
        dirs.append(Path(unpack_audio_to))
    finder = AudioFinder(dirs)
    out.look_in(finder.dirs)
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(progress(f, desc=path.name), start=1):
            if not line.strip():
                continue
            where = f"{path}:{i}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                out.bad(where, f"invalid JSON ({e.msg})")
                continue
            if not isinstance(row, dict):
                out.bad(where, "row is not a JSON object")
                continue
            raw = row.get(id_key) if id_key else _first(row, ID_KEYS)
            if raw in (None, ""):
                out.bad(where, f"no track id (key {id_key or '/'.join(ID_KEYS)})")
                continue
            caption = row.get(caption_key) if caption_key else _first(row, CAPTION_KEYS)
            raw = str(raw).strip()
            track = Path(raw).stem if Path(raw).suffix else raw
            try:
                start = _first(row, START_KEYS)
                end = _first(row, END_KEYS)
                start = float(start) if start is not None else None
                end = float(end) if end is not None else None
            except (TypeError, ValueError):
                out.bad(where, f"start/end times {_first(row, START_KEYS)!r}/{_first(row, END_KEYS)!r} are not numbers")
                continue
            seg = f"_{fmt_time(start)}" if start is not None else ""
            add_clip(
                out,
                where=where,
                cut_id=f"{NAME}/{track}{seg}",
                audio_path=finder.find([track, raw]),
                expected=(finder.dirs or [Path(".")])[0] / f"{track}.mp3",
                captions=caption,
                source=NAME,
                domain=DOMAIN,
                media_id=f"jamendo:{track}",
                media_start=start,
                media_end=end,
                labels=tags.get(track),
                start=start or 0.0,
                duration=(end - (start or 0.0)) if end is not None else None,
            )
    return out
