"""Clotho v2: ``clotho_captions_{development,validation,evaluation}.csv`` with columns
``file_name,caption_1,...,caption_5`` and the audio in ``development/``, ``validation/``, ``evaluation/``.

Clotho's evaluation split is a retrieval benchmark here, so its clips are reported as evaluation ids (the
stew drops them, like AudioCaps test).

File names are compared in Unicode NFC: a name composed in the csv (``Café``) finds the file stored
decomposed (NFD, as archives made on macOS do).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from audiolp.data.sources.common import (
    AudioFinder,
    SourceLoad,
    add_clip,
    iter_csv,
    no_expected_files,
    require_root,
    resolve_audio,
)

NAME = "clotho"
DOMAIN = "sound"
SPLITS = ("development", "validation", "evaluation")
EVAL_SPLITS = ("evaluation",)
N_CAPTIONS = 5


def load(
    root: str | Path,
    *,
    splits: Sequence[str] = SPLITS,
    audio_dirs: Mapping[str, str | Path] | None = None,
) -> SourceLoad:
    """Read Clotho from ``root``; ``audio_dirs`` overrides the per-split audio folders (default root/<split>)."""
    expected = [f"clotho_captions_{s}.csv" for s in splits]
    root = require_root(root, NAME, expected)
    csvs = [(s, root / f"clotho_captions_{s}.csv") for s in splits if (root / f"clotho_captions_{s}.csv").is_file()]
    if not csvs:
        raise no_expected_files(root, NAME, expected)
    audio_dirs = dict(audio_dirs or {})
    caption_cols = [f"caption_{i}" for i in range(1, N_CAPTIONS + 1)]
    out = SourceLoad(name=NAME)
    for split, path in csvs:
        audio_dir = Path(audio_dirs.get(split, root / split))
        finder = AudioFinder([audio_dir])  # indexed only on the first name not found as spelled
        out.look_in(finder.dirs)
        for where, row in iter_csv(path, ["file_name", *caption_cols], out):
            file_name = row["file_name"].strip()
            if not file_name:
                out.bad(where, "field 'file_name' is empty")
                continue
            stem = Path(file_name).stem
            media_id = f"{NAME}:{stem}"
            if split in EVAL_SPLITS:
                out.eval_ids.add(media_id)
            add_clip(
                out,
                where=where,
                cut_id=f"{NAME}/{split}/{stem}",
                audio_path=resolve_audio(audio_dir / file_name) or finder.find([file_name]),
                expected=finder.dirs[0] / file_name,
                captions=[row[c] for c in caption_cols],
                source=NAME,
                domain=DOMAIN,
                media_id=media_id,
                split=split,
            )
    return out
