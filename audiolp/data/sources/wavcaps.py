"""WavCaps: ``json_files/<Subset>/*.json`` (the HF repo's folder; ``json/`` is accepted too), each
``{"num_captions_per_audio": 1, "data": [{"id", "caption", "audio", "duration", ...}, ...]}``, and the audio
of each subset unzipped from ``Zip_files/<Subset>/`` (files named ``<id>.flac``; AudioSet_SL ids are
``Y<ytid>.wav`` with audio ``Y<ytid>.flac``).

Subsets: BBC_Sound_Effects, SoundBible, FreeSound, AudioSet_SL. The cut source is ``wavcaps/<subset>``
(lower case). AudioSet_SL clips carry their YouTube id as media id, so they are dropped when the same video
is in AudioCaps test and merged with the AudioCaps/AudioSetCaps clip of the same video.

WavCaps' blacklist (``json_files/blacklist/blacklist_exclude_test_ac.json``) names the WavCaps clips to leave
out: under "AudioSet" the videos of AudioCaps val (494) and test (957), under "FreeSound" the Freesound
copies of Clotho validation and evaluation (2,090). It is applied to WavCaps only (rows skipped, counted in
``SourceLoad.excluded``): it is not an evaluation list, and applying it build-wide would drop AudioCaps' own
validation clips from the stew. The evaluation sets proper are dropped build-wide by their own corpora. Their ids carry no
time, so the file is used as is (WavCaps ships the 10 s clips); when only a file in AudioSet's own naming
(``Y<ytid>_30.000_40.000``) is there, it is used and its name's times become the media span.

JSON has no per-row lines; malformed entries are reported as ``file:<entry number>`` (1-based within
``data``), a file that is not valid JSON as ``file:<line>`` of the parse error.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

from audiolp.data.sources.common import (
    AudioFinder,
    SourceLoad,
    add_clip,
    no_expected_files,
    parse_youtube_clip,
    progress,
    require_root,
    youtube_media_id,
)

NAME = "wavcaps"
DOMAIN = "sound"
SUBSETS = ("BBC_Sound_Effects", "SoundBible", "FreeSound", "AudioSet_SL")
JSON_DIRS = ("json_files", "json")
BLACKLISTS = ("blacklist_exclude_test_ac.json",)


def _default_audio_dirs(root: Path, subset: str) -> list[Path]:
    # Layouts seen in the wild after unzipping: audio/<Subset>, Zip_files/<Subset>, <Subset>, Audio/<Subset>
    return [root / "audio" / subset, root / "Zip_files" / subset, root / subset, root / "Audio" / subset]


def read_blacklist(path: Path) -> set[str]:
    """WavCaps media ids (see ``load``) from a WavCaps blacklist file ``{"AudioSet": ["Y<ytid>.wav", ...],
    "FreeSound": [id, ...]}``."""
    with open(path, encoding="utf-8") as f:
        blob = json.load(f)
    if not isinstance(blob, dict):
        raise ValueError(f"{path}: expected an object with 'AudioSet'/'FreeSound' id lists")
    ids: set[str] = set()
    for raw in blob.get("AudioSet") or []:
        yt = parse_youtube_clip(str(raw))
        if yt:
            ids.add(youtube_media_id(yt[0]))
    for raw in blob.get("FreeSound") or []:
        raw = str(raw)
        ids.add(f"{NAME}/freesound:{Path(raw).stem if Path(raw).suffix else raw}")
    return ids


def load(
    root: str | Path,
    *,
    subsets: Sequence[str] = SUBSETS,
    audio_dirs: Mapping[str, str | Path | Sequence[str | Path]] | None = None,
    blacklists: Sequence[str | Path] = BLACKLISTS,
) -> SourceLoad:
    """Read WavCaps from ``root``; ``audio_dirs`` maps a subset to its audio folder(s).

    ``blacklists``: WavCaps' own lists of its clips that overlap AudioCaps val/test and Clotho
    val/evaluation (``json_files/blacklist/``; a name is looked up there, a path is used as is). Listed clips
    are skipped here (``SourceLoad.excluded``) and nowhere else. An absent default list is not fatal (not every
    copy has ``json_files/blacklist``) but is a warning naming the folder (``SourceLoad.warnings``): without
    it the FreeSound copies of Clotho evaluation clips stay in (Clotho names files by title, so media ids
    cannot match them).
    """
    expected = [f"{d}/{s}/*.json" for d in JSON_DIRS[:1] for s in subsets]
    root = require_root(root, NAME, expected)
    audio_dirs = dict(audio_dirs or {})
    files: list[tuple[str, Path]] = []
    for subset in subsets:
        for jd in JSON_DIRS:
            found = sorted((root / jd / subset).glob("*.json"))
            if found:
                files += [(subset, f) for f in found]
                break
    if not files:
        raise no_expected_files(root, NAME, [f"{{{','.join(JSON_DIRS)}}}/{s}/*.json" for s in subsets])

    out = SourceLoad(name=NAME)
    blacklisted: set[str] = set()
    for entry in blacklists:
        given = Path(entry)
        candidates = [given] if given.is_absolute() or given.parent != Path(".") else [
            root / jd / "blacklist" / entry for jd in JSON_DIRS]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            if tuple(blacklists) == BLACKLISTS:
                where = " or ".join(str(c.parent) for c in candidates)
                out.warn(
                    f"{NAME}: default blacklist {entry!r} not found in {where}; "
                    f"the FreeSound copies of Clotho evaluation clips are NOT excluded (the AudioSet clips of "
                    f"AudioCaps test are, by YouTube id, only when AudioCaps is built too). Download "
                    f"json_files/blacklist/ from the WavCaps repository, or pass blacklists=() to build without it")
                continue
            raise FileNotFoundError(f"{NAME}: blacklist {entry!r} not found (looked in {[str(c) for c in candidates]})")
        blacklisted |= read_blacklist(found)
    finders: dict[str, AudioFinder] = {}
    for subset, path in files:
        if subset not in finders:
            dirs = audio_dirs.get(subset)
            if dirs is None:
                dirs = _default_audio_dirs(root, subset)
            elif isinstance(dirs, (str, Path)):
                dirs = [dirs]
            finders[subset] = AudioFinder(dirs)
            out.look_in(finders[subset].dirs)
        source = f"{NAME}/{subset.lower()}"
        try:
            with open(path, encoding="utf-8") as f:
                blob = json.load(f)
        except json.JSONDecodeError as e:
            out.bad(f"{path}:{e.lineno}", f"invalid JSON ({e.msg}); file skipped")
            continue
        entries = blob.get("data") if isinstance(blob, dict) else None
        if not isinstance(entries, list):
            out.bad(f"{path}:1", "no 'data' list at the top level; file skipped")
            continue
        for i, entry in enumerate(progress(entries, desc=f"{subset}/{path.name}"), start=1):
            where = f"{path}:{i}"
            if not isinstance(entry, dict):
                out.bad(where, f"entry is {type(entry).__name__}, expected an object")
                continue
            raw_id = str(entry.get("id") or "").strip()
            if not raw_id:
                out.bad(where, "field 'id' is missing or empty")
                continue
            stem = Path(raw_id).stem if Path(raw_id).suffix else raw_id
            media_id = f"{source}:{stem}"
            media_start = media_end = None
            if subset == "AudioSet_SL":
                yt = parse_youtube_clip(raw_id)
                if yt is None:
                    out.bad(where, f"field 'id'={raw_id!r} is not an AudioSet clip name (Y<11-char YouTube id>.wav)")
                    continue
                media_id = youtube_media_id(yt[0])
                media_start, media_end = yt[1], yt[2]
            if media_id in blacklisted:  # WavCaps' own exclusion; other corpora keep their clips
                out.rows += 1
                out.excluded += 1
                continue
            audio_path = finders[subset].find([stem, raw_id])
            if audio_path is None and subset == "AudioSet_SL" and media_start is None:
                found = finders[subset].find_youtube(yt[0])  # AudioSet's own naming, Y<ytid>_30.000_40.000
                if found is not None:
                    audio_path, media_start, second = found
                    media_end = second if second is not None and second > media_start else media_start + 10.0
            add_clip(
                out,
                where=where,
                cut_id=f"{source}/{stem}",
                audio_path=audio_path,
                captions=entry.get("caption"),
                source=source,
                domain=DOMAIN,
                media_id=media_id,
                media_start=media_start,
                media_end=media_end,
                expected=finders[subset].dirs[0] / f"{stem}.flac",
            )
    return out
