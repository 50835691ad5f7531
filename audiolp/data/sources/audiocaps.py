"""AudioCaps (v1 or v2): ``train.csv``, ``val.csv``, ``test.csv`` with columns
``audiocap_id,youtube_id,start_time,caption`` and a folder of 10 s clips.

One row is one caption; the rows of a clip (same youtube_id and start_time; 5 per clip in val/test) become
one cut with the caption list. Clip files are found by stem anywhere under ``audio_dir`` (flat or per-split
folders) using ``file_patterns``; the defaults cover the common download scripts: ``<youtube_id>``,
``Y<youtube_id>``, ``<youtube_id>_<start_time>``, AudioSet's own ``Y<youtube_id>_<start>.000_<end>.000``
and ``<audiocap_id>``; failing those, any file named as a clip of the video starting at start_time (e.g. an
AudioSet segment cut short by the end of the video). A pattern may use ``{youtube_id}``, ``{audiocap_id}``,
``{start_time}`` / ``{end_time}`` (formatted like '30' or '30.5') and ``{start}`` / ``{end}`` (floats, for
format specs like ``{start:.3f}``); the clip is start_time .. start_time + 10 s. A file found under a name
without a time (the bare id) that is longer than the clip by more than 1 s is the whole video: the cut is the
clip's 10 s of it. The split is kept in ``custom['split']``; the test clips' YouTube ids are reported as
evaluation ids (the stew drops them and any clip of another corpus cut from the same video).

Counts: ``empty_captions`` counts clips without any non-empty caption (so ``rows`` = loaded + missing_audio +
malformed + empty_captions, all per clip); ``empty_caption_rows`` counts every empty caption row. A caption
broken by an unquoted line break (AudioCaps 2.0 train.csv before cdjkim/audiocaps PR #31) is joined back
(``repaired_line_breaks``).
"""
from __future__ import annotations

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

NAME = "audiocaps"
DOMAIN = "sound"
SPLITS = ("train", "val", "test")
EVAL_SPLITS = ("test",)
COLUMNS = ("audiocap_id", "youtube_id", "start_time", "caption")
FILE_PATTERNS = ("{youtube_id}", "Y{youtube_id}", "{youtube_id}_{start_time}", "Y{youtube_id}_{start:.3f}_{end:.3f}",
                 "{audiocap_id}")
# placeholders that make a name specific to one clip (a name without them may be the whole video)
CLIP_FIELDS = ("start", "end", "audiocap_id")
CLIP_SECONDS = 10.0


def load(
    root: str | Path,
    *,
    audio_dir: str | Path | None = None,
    csv_dir: str | Path | None = None,
    splits: Sequence[str] = SPLITS,
    file_patterns: Sequence[str] = FILE_PATTERNS,
) -> SourceLoad:
    """Read AudioCaps from ``root`` (csv files in ``csv_dir`` or root; audio under ``audio_dir``, default
    ``root/audio`` when it exists, else root)."""
    expected = [f"{s}.csv" for s in splits]
    root = require_root(root, NAME, expected)
    csv_dir = Path(csv_dir) if csv_dir else root
    audio_dir = Path(audio_dir) if audio_dir else (root / "audio" if (root / "audio").is_dir() else root)
    csvs = [(s, csv_dir / f"{s}.csv") for s in splits if (csv_dir / f"{s}.csv").is_file()]
    if not csvs:
        raise no_expected_files(csv_dir, NAME, expected)

    out = SourceLoad(name=NAME)
    finder = AudioFinder([audio_dir])
    out.look_in(finder.dirs)
    for split, path in csvs:
        # (youtube_id, start) -> first row's location, audiocap ids, captions; insertion order = file order
        clips: dict[tuple[str, float], dict] = {}
        for where, row in iter_csv(path, COLUMNS, out, continuation_column="caption"):
            ytid = row["youtube_id"].strip()
            if not ytid:
                out.bad(where, "field 'youtube_id' is empty")
                continue
            try:
                start = parse_float(row["start_time"], "start_time")
            except ValueError as e:
                out.bad(where, str(e))
                continue
            clip = clips.setdefault((ytid, start), {"where": where, "ids": [], "captions": []})
            clip["ids"].append(row["audiocap_id"].strip())
            caption = row["caption"].strip()
            if not caption:
                out.empty_caption_rows += 1  # this caption is dropped; the clip keeps any other captions
                continue
            clip["captions"].append(caption)
        for (ytid, start), clip in clips.items():
            media_id = youtube_media_id(ytid)
            if split in EVAL_SPLITS:
                out.eval_ids.add(media_id)
            end = start + CLIP_SECONDS
            fields = dict(youtube_id=ytid, start_time=fmt_time(start), end_time=fmt_time(end), start=start, end=end)
            names: list[tuple[str, bool]] = []  # (file name, may be the whole video)
            for pattern in file_patterns:
                whole = not any("{" + f in pattern for f in CLIP_FIELDS)
                ids = clip["ids"] if "{audiocap_id}" in pattern else [""]
                names += [(pattern.format(**fields, audiocap_id=i), whole) for i in ids]
            # no lookup for a clip without captions: add_clip counts it as empty first
            audio_path, window = (find_youtube_audio(finder, names, ytid, start, end) if clip["captions"]
                                  else (None, None))
            add_clip(  # a clip whose captions are all empty is counted in empty_captions there
                out,
                where=clip["where"],
                cut_id=f"{NAME}/{ytid}_{fmt_time(start)}",
                audio_path=audio_path,
                media_window=window,
                captions=clip["captions"],
                source=NAME,
                domain=DOMAIN,
                media_id=media_id,
                media_start=start,
                media_end=end,
                split=split,
                extra={"audiocap_ids": clip["ids"]},
                expected=finder.dirs[0] / f"{names[0][0]}.wav",
            )
    return out
