"""AudioSetCaps: the caption csvs of the HF repo's ``Dataset/`` folder (``AudioSetCaps_caption.csv``,
``VGGSound_AudioSetCaps_caption.csv``, ``YouTube-8M_AudioSetCaps_caption.csv``; the ``*_Q&A.csv`` files are
not captions and are ignored), one row per 10 s clip: a clip id and a caption.

The clip id names a YouTube clip: ``Y<ytid>`` in the AudioSet file, ``<ytid>_<start, 6 digits>`` in the
VGGSound file, ``<ytid>_<start>_<duration>`` in the YouTube-8M file (plain ``<ytid>`` and audio extensions are
accepted too); the id and caption columns are detected from the header (``id``/``audio_id``/``ytid``/
``youtube_id``/``file_name``/``audio``/``path`` and ``caption``/``captions``/``text``) or named with
``id_column``/``caption_column``. Audio is looked up by stem under the subset's folder
(``audio_dirs[subset]``, default ``root/audio/<subset>``, ``root/<subset>``, then ``root/audio``): the id
itself, ``Y<id>``, the bare YouTube id, and for ids with a time ``<ytid>_<start, 6 digits>``,
``<ytid>_<start>`` and AudioSet's ``Y<ytid>_<start>.000_<end>.000``; failing those, any file named as a clip
of the video (starting at the id's start when it has one; for the AudioSet file's ``Y<ytid>`` ids, whose
rows carry no time, the file name's time becomes the clip's media span). A file found under the bare YouTube
id for an id with a time, longer than the clip by more than 1 s, is the whole video: the cut is the clip's
span of it.

VGGSound test clips: give VGGSound's own ``vggsound.csv`` (rows ``ytid,start,label,split``, no header) as
``vggsound_csv`` or put it in root; its ``test`` rows become evaluation ids (the stew drops them everywhere).
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Mapping, Sequence

from audiolp.data.sources.common import (
    AudioFinder,
    SourceLoad,
    add_clip,
    find_youtube_audio,
    fmt_time,
    iter_csv,
    no_expected_files,
    parse_youtube_clip,
    require_root,
    youtube_media_id,
)

NAME = "audiosetcaps"
DOMAIN = "sound"
SUBSET_FILES = {
    "AudioSet": "AudioSetCaps_caption.csv",
    "VGGSound": "VGGSound_AudioSetCaps_caption.csv",
    "YouTube-8M": "YouTube-8M_AudioSetCaps_caption.csv",
}
SUBSET_SOURCE = {"AudioSet": "audioset", "VGGSound": "vggsound", "YouTube-8M": "youtube8m"}
ID_COLUMNS = ("id", "audio_id", "ytid", "youtube_id", "youtube id", "file_name", "filename", "audio", "path")
CAPTION_COLUMNS = ("caption", "captions", "text")
CLIP_SECONDS = 10.0


def _pick(header: list[str], wanted: str | None, candidates: Sequence[str], path: Path, what: str) -> str:
    if wanted:
        if wanted not in header:
            raise ValueError(f"{path}: {what} column {wanted!r} not in header {header}")
        return wanted
    lowered = {h.lower(): h for h in header}
    for c in candidates:
        if c in lowered:
            return lowered[c]
    raise ValueError(
        f"{path}: no {what} column in header {header}; expected one of {list(candidates)} "
        f"(or pass {what}_column=...)"
    )


def read_vggsound_test_ids(path: str | Path) -> set[str]:
    """YouTube ids of the VGGSound test split from VGGSound's ``vggsound.csv`` (ytid,start,label,split)."""
    ids: set[str] = set()
    with open(path, newline="", encoding="utf-8-sig") as f:
        for row in csv.reader(f):
            if len(row) >= 4 and row[3].strip().lower() == "test" and row[0].strip():
                ids.add(youtube_media_id(row[0].strip()))
    return ids


def load(
    root: str | Path,
    *,
    subsets: Sequence[str] = tuple(SUBSET_FILES),
    audio_dirs: Mapping[str, str | Path] | None = None,
    id_column: str | None = None,
    caption_column: str | None = None,
    vggsound_csv: str | Path | None = None,
) -> SourceLoad:
    unknown = [s for s in subsets if s not in SUBSET_FILES]
    if unknown:
        raise ValueError(f"{NAME}: unknown subset(s) {unknown}; known: {list(SUBSET_FILES)}")
    expected = [SUBSET_FILES[s] for s in subsets]
    root = require_root(root, NAME, expected)
    files = []
    for s in subsets:
        for d in (root, root / "Dataset"):
            if (d / SUBSET_FILES[s]).is_file():
                files.append((s, d / SUBSET_FILES[s]))
                break
    if not files:
        raise no_expected_files(root, NAME, expected + ["(in root or root/Dataset)"])

    out = SourceLoad(name=NAME)
    vgg_test: set[str] = set()
    vggsound_csv = Path(vggsound_csv) if vggsound_csv else (root / "vggsound.csv" if (root / "vggsound.csv").is_file() else None)
    if vggsound_csv is not None:
        if not vggsound_csv.is_file():
            raise FileNotFoundError(f"{NAME}: vggsound_csv={vggsound_csv} does not exist (VGGSound's vggsound.csv)")
        vgg_test = read_vggsound_test_ids(vggsound_csv)
        out.eval_ids |= vgg_test

    audio_dirs = dict(audio_dirs or {})
    for subset, path in files:
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = [h.strip() for h in next(csv.reader(f), [])]
        id_col = _pick(header, id_column, ID_COLUMNS, path, "id")
        cap_col = _pick(header, caption_column, CAPTION_COLUMNS, path, "caption")
        dirs = audio_dirs.get(subset)
        dirs = [dirs] if dirs is not None else [root / "audio" / subset, root / subset]
        if not any(Path(d).is_dir() for d in dirs):
            dirs = [root / "audio"]
        finder = AudioFinder(dirs)
        out.look_in(finder.dirs)
        source = f"{NAME}/{SUBSET_SOURCE[subset]}"
        for where, row in iter_csv(path, [id_col, cap_col], out):
            raw = row[id_col].strip()
            yt = parse_youtube_clip(raw)
            if yt is None:
                out.bad(where, f"field {id_col!r}={raw!r} does not name a YouTube clip (<ytid>[_<start>[_<end>]])")
                continue
            ytid, start, second = yt
            if subset == "YouTube-8M" and second is not None:
                end = start + second  # YouTube-8M ids are <ytid>_<start>_<duration>
            elif start is not None:
                end = second if second is not None else start + CLIP_SECONDS
            else:
                end = None
            media_id = youtube_media_id(ytid)
            stem = Path(raw).stem if Path(raw).suffix else raw
            # (name, may be the whole video): the bare YouTube id names the video, the rest one clip of it
            names = [(stem, start is None), (f"Y{stem}", start is None), (ytid, True), (f"Y{ytid}", True)]
            if start is not None:
                names += [(f"{ytid}_{int(start):06d}", False), (f"{ytid}_{fmt_time(start)}", False)]
                if end is not None:
                    names.append((f"Y{ytid}_{start:.3f}_{end:.3f}", False))
            audio_path, window = find_youtube_audio(finder, names, ytid, start, end)
            if audio_path is None and start is None:  # AudioSet ids carry no time: any clip file of the video
                found = finder.find_youtube(ytid)
                if found is not None:
                    audio_path, start, second = found
                    end = second if second is not None and second > start else start + CLIP_SECONDS
            split = "test" if (subset == "VGGSound" and media_id in vgg_test) else None
            add_clip(
                out,
                where=where,
                cut_id=f"{source}/{stem}",
                audio_path=audio_path,
                media_window=window,
                captions=row[cap_col],
                source=source,
                domain=DOMAIN,
                media_id=media_id,
                media_start=start,
                media_end=end,
                split=split,
                expected=finder.dirs[0] / f"{names[0][0]}.flac",
            )
    return out
