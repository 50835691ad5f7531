"""MusicCaps: ``musiccaps-public.csv`` (ytid, start_s, end_s, audioset_positive_labels, aspect_list, caption,
author_id, is_balanced_subset, is_audioset_eval) and a folder of the downloaded 10 s clips.

Clip files are found by stem anywhere under ``audio_dir`` using ``file_patterns``; the defaults cover the
usual download scripts: ``<ytid>``, ``[<ytid>]-[<start>-<end>]``, ``<ytid>_<start>``,
``<ytid>_<start>-<end>``, ``Y<ytid>``, AudioSet's ``Y<ytid>_<start>.000_<end>.000``; failing those, any file
named as a clip of the video starting at start_s. A pattern may use ``{ytid}``, ``{start}`` / ``{end}``
(formatted like '30' or '30.5') and ``{start_s}`` / ``{end_s}`` (floats, for format specs like
``{start_s:.3f}``). A file found under a name without a time (the bare id) that is longer than the clip by
more than 1 s is the whole video: the cut is its start_s .. end_s. ``aspect_list`` becomes the cut's
labels. Rows with ``is_audioset_eval`` true are the evaluation split (``custom['split'] = 'eval'``) and
their YouTube ids are reported as evaluation ids.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Sequence

from audiolp.data.sources.common import (
    AudioFinder,
    SourceLoad,
    add_clip,
    find_youtube_audio,
    fmt_time,
    iter_csv,
    no_expected_files,
    parse_float,
    require_root,
    youtube_media_id,
)

NAME = "musiccaps"
DOMAIN = "music"
CSV_NAME = "musiccaps-public.csv"
COLUMNS = ("ytid", "start_s", "end_s", "aspect_list", "caption", "is_audioset_eval")
FILE_PATTERNS = ("{ytid}", "[{ytid}]-[{start}-{end}]", "{ytid}_{start}", "{ytid}_{start}-{end}", "Y{ytid}",
                 "Y{ytid}_{start_s:.3f}_{end_s:.3f}")
TIME_FIELDS = ("start", "end")  # "{start" also matches {start_s}: a name with a time is one clip's file
TRUE = {"true", "1", "yes", "t"}
FALSE = {"false", "0", "no", "f", ""}


def _aspects(value: str) -> list[str]:
    value = (value or "").strip()
    if not value:
        return []
    try:
        parsed = ast.literal_eval(value)  # published as a Python list literal: "['pop', 'mellow piano']"
    except (ValueError, SyntaxError):
        return [v.strip() for v in value.strip("[]").split(",") if v.strip().strip("'\"")]
    return [str(v).strip() for v in parsed] if isinstance(parsed, (list, tuple)) else [str(parsed)]


def load(
    root: str | Path,
    *,
    csv_path: str | Path | None = None,
    audio_dir: str | Path | None = None,
    file_patterns: Sequence[str] = FILE_PATTERNS,
    include_eval: bool = True,
) -> SourceLoad:
    """Read MusicCaps from ``root`` (csv at root/musiccaps-public.csv; audio under ``audio_dir``, default
    the whole root). ``include_eval=False`` leaves the eval clips out of the cuts (still reported as ids)."""
    root = require_root(root, NAME, [CSV_NAME])
    csv_path = Path(csv_path) if csv_path else root / CSV_NAME
    if not csv_path.is_file():
        raise no_expected_files(root, NAME, [CSV_NAME])
    finder = AudioFinder([Path(audio_dir) if audio_dir else root])
    out = SourceLoad(name=NAME)
    out.look_in(finder.dirs)
    for where, row in iter_csv(csv_path, COLUMNS, out):
        ytid = row["ytid"].strip()
        if not ytid:
            out.bad(where, "field 'ytid' is empty")
            continue
        try:
            start = parse_float(row["start_s"], "start_s")
            end = parse_float(row["end_s"], "end_s")
        except ValueError as e:
            out.bad(where, str(e))
            continue
        flag = row["is_audioset_eval"].strip().lower()
        if flag not in TRUE | FALSE:
            out.bad(where, f"field 'is_audioset_eval'={row['is_audioset_eval']!r} is not a boolean")
            continue
        is_eval = flag in TRUE
        media_id = youtube_media_id(ytid)
        if is_eval:
            out.eval_ids.add(media_id)
            if not include_eval:
                continue
        s, e = fmt_time(start), fmt_time(end)
        names = [(p.format(ytid=ytid, start=s, end=e, start_s=start, end_s=end),
                  not any("{" + f in p for f in TIME_FIELDS)) for p in file_patterns]
        audio_path, window = find_youtube_audio(finder, names, ytid, start, end)
        add_clip(
            out,
            where=where,
            cut_id=f"{NAME}/{ytid}_{s}",
            audio_path=audio_path,
            expected=finder.dirs[0] / f"{names[0][0]}.wav",
            media_window=window,
            captions=row["caption"],
            source=NAME,
            domain=DOMAIN,
            media_id=media_id,
            media_start=start,
            media_end=end,
            split="eval" if is_eval else "train",
            labels=_aspects(row["aspect_list"]),
        )
    return out
