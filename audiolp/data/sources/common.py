"""Shared pieces of the source adapters: the load result, audio lookup, media ids and row accounting.

Every adapter reads one corpus in its own published layout and turns each (clip, captions) row into a
CaptionStew cut. Problems in the data never stop a load: a missing audio file, a malformed row, an empty
caption or an unreadable audio file is counted (malformed rows and unreadable audio are named with file and
line) and the row is skipped. Only a root without any of the corpus' expected files is an error.
"""
from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import soundfile as sf
from tqdm.auto import tqdm
from lhotse import MonoCut, Recording
from lhotse.audio import AudioSource

from audiolp.data.schema import SchemaError, clean_captions, make_caption_cut

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".aiff", ".aif")

# custom fields every adapter fills so the stew can filter eval overlap and dedupe across corpora
MEDIA_ID = "media_id"  # the underlying media: "yt:<11-char YouTube id>" or "<corpus>:<file id>"
MEDIA_START = "media_start"  # where the clip starts inside that media (s); absent when unknown
MEDIA_END = "media_end"  # where it ends (s); absent when unknown
SPLIT = "split"  # the corpus' own split name


@dataclass
class SourceLoad:
    """What one adapter read from one corpus copy."""

    name: str
    cuts: list[MonoCut] = field(default_factory=list)
    missing_audio: int = 0
    malformed: list[str] = field(default_factory=list)  # 'file:line: reason'
    empty_captions: int = 0
    # media ids (see MEDIA_ID) of this corpus' evaluation clips, read from the metadata whether or not the
    # audio is present, so the stew can drop overlapping clips of *other* corpora too.
    eval_ids: set[str] = field(default_factory=set)
    rows: int = 0  # clip records considered (kept or skipped for any reason), malformed rows included

    def bad(self, where: str, reason: str) -> None:
        """Record a malformed row (skipped)."""
        self.rows += 1
        self.malformed.append(f"{where}: {reason}")

    def summary(self) -> dict:
        return {
            "rows": self.rows,
            "loaded": len(self.cuts),
            "missing_audio": self.missing_audio,
            "malformed": len(self.malformed),
            "empty_captions": self.empty_captions,
            "eval_ids": len(self.eval_ids),
        }


def progress(iterable, desc: str, total: int | None = None):
    """A tqdm bar over metadata rows; silent when stderr is not a terminal (tests, batch logs)."""
    return tqdm(iterable, desc=desc, total=total, unit="row", disable=None, leave=False)


def require_root(root: str | os.PathLike, corpus: str, expected: Sequence[str]) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"{corpus}: root {root} does not exist or is not a directory; expected it to hold {', '.join(expected)}"
        )
    return root


def no_expected_files(root: Path, corpus: str, expected: Sequence[str]) -> FileNotFoundError:
    return FileNotFoundError(
        f"{corpus}: none of the expected files were found under {root}; expected {', '.join(expected)} "
        f"(point the root at a local copy of the corpus in its published layout)"
    )


# ---------------------------------------------------------------------------------------------------------
# Media ids
_YT_RE = re.compile(r"^Y?([A-Za-z0-9_-]{11})((?:_-?\d+(?:\.\d+)?){0,2})$")


def parse_youtube_clip(name: str) -> tuple[str, float | None, float | None] | None:
    """Parse the common YouTube-clip file names: ``<ytid>``, ``Y<ytid>``, ``<ytid>_<start>``,
    ``<ytid>_<start>_<end>`` (VGGSound's ``<ytid>_000030``; extensions are stripped). Returns
    (ytid, start, end) or None when the name is not one of those forms."""
    stem = Path(str(name).strip()).name
    if Path(stem).suffix.lower() in AUDIO_EXTENSIONS:
        stem = Path(stem).stem
    m = _YT_RE.match(stem)
    if not m:
        return None
    ytid, rest = m.group(1), m.group(2)
    nums = [float(x) for x in rest.split("_")[1:]] if rest else []
    start = nums[0] if nums else None
    end = nums[1] if len(nums) > 1 else None
    return ytid, start, end


def youtube_media_id(ytid: str) -> str:
    return f"yt:{ytid}"


_NAMESPACED_RE = re.compile(r"^[A-Za-z][\w./-]*:[^/\\]")


def normalize_media_key(raw: str) -> set[str]:
    """All keys a user-given id may match: itself, its stem, and ``yt:<ytid>`` when it names a YouTube clip."""
    raw = str(raw).strip()
    if _NAMESPACED_RE.match(raw):
        return {raw}  # a full media id ("yt:<ytid>", "jamendo:1001"): match exactly, never by its bare part
    keys = {raw}
    stem = Path(raw).stem if Path(raw).suffix.lower() in AUDIO_EXTENSIONS else raw
    keys.add(stem)
    yt = parse_youtube_clip(stem)
    if yt:
        keys.add(youtube_media_id(yt[0]))
        keys.add(yt[0])
    return keys


def fmt_time(t: float) -> str:
    """Seconds as used in ids: '30' for 30.0, '30.5' otherwise."""
    t = float(t)
    return str(int(t)) if t.is_integer() else f"{t:g}"


# ---------------------------------------------------------------------------------------------------------
# Audio lookup
class AudioFinder:
    """Find audio files by stem under one or more folders (searched recursively, indexed once).

    Corpora are distributed with many folder variants (flat, per split, per shard); indexing by stem keeps
    the adapters independent of them. When two files share a stem the first found (sorted walk) wins.
    """

    def __init__(self, dirs: Iterable[str | os.PathLike], extensions: Sequence[str] = AUDIO_EXTENSIONS):
        self.dirs = [Path(d) for d in dirs if d is not None]
        self.extensions = tuple(e.lower() for e in extensions)
        self._index: dict[str, Path] | None = None

    def _build(self) -> dict[str, Path]:
        index: dict[str, Path] = {}
        for d in self.dirs:
            if not d.is_dir():
                continue
            for dirpath, dirnames, filenames in os.walk(d):
                dirnames.sort()
                for fn in sorted(filenames):
                    suffix = os.path.splitext(fn)[1].lower()
                    if suffix in self.extensions:
                        p = Path(dirpath) / fn
                        index.setdefault(os.path.splitext(fn)[0], p)
                        index.setdefault(fn, p)
        return index

    def find(self, candidates: Iterable[str]) -> Path | None:
        if self._index is None:
            self._index = self._build()
        for c in candidates:
            if not c:
                continue
            c = str(c)
            hit = self._index.get(c)
            if hit is None and Path(c).suffix.lower() in self.extensions:
                hit = self._index.get(Path(c).stem)
            if hit is not None:
                return hit
        return None

    def __len__(self) -> int:
        if self._index is None:
            self._index = self._build()
        return len({str(p) for p in self._index.values()})


def resolve_audio(path: Path) -> Path | None:
    """``path`` itself, or the same stem with another audio extension (corpora get re-encoded)."""
    if path.is_file():
        return path
    for ext in AUDIO_EXTENSIONS:
        alt = path.with_suffix(ext)
        if alt.is_file():
            return alt
    return None


def read_recording(path: Path, recording_id: str) -> Recording:
    """A lhotse Recording from the file header only.

    Formats libsndfile reads (wav, flac, ogg, mp3 with libsndfile >= 1.1) are described from
    ``soundfile.info`` directly, the same numbers ``Recording.from_file`` would take, at a third of its cost
    (it re-checks which optional backends are installed for every file); anything else goes through
    ``Recording.from_file`` and its other backends.
    """
    try:
        info = sf.info(str(path))
    except Exception:
        return Recording.from_file(path, recording_id=recording_id)
    if info.frames <= 0 or info.samplerate <= 0:
        return Recording.from_file(path, recording_id=recording_id)
    return Recording(
        id=recording_id,
        sources=[AudioSource(type="file", channels=list(range(info.channels)), source=str(path))],
        sampling_rate=int(info.samplerate),
        num_samples=int(info.frames),
        duration=info.frames / info.samplerate,
    )


# ---------------------------------------------------------------------------------------------------------
# Rows -> cuts
def add_clip(
    load: SourceLoad,
    *,
    where: str,
    cut_id: str,
    audio_path: Path | None,
    captions: str | Sequence[str] | None,
    source: str,
    domain: str,
    media_id: str,
    media_start: float | None = None,
    media_end: float | None = None,
    split: str | None = None,
    labels: Sequence[str] | None = None,
    extra: dict | None = None,
    start: float = 0.0,
    duration: float | None = None,
) -> MonoCut | None:
    """Turn one metadata row into a cut, or count why it cannot be one. Checks, in order: empty caption,
    missing audio, unreadable audio, schema problems (e.g. a segment past the end of the file)."""
    load.rows += 1
    caps = clean_captions(captions)
    if not caps:
        load.empty_captions += 1
        return None
    if audio_path is None:
        load.missing_audio += 1
        return None
    try:
        recording = read_recording(audio_path, cut_id)
    except Exception as e:  # lhotse raises several types; all mean "cannot read this file"
        # lhotse lists one failure per backend; the first backend's line says what is wrong with the file.
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or [type(e).__name__]
        reason = next((ln for ln in lines[1:] if ln.startswith("Exception #0")), lines[0])[:240]
        load.malformed.append(f"{audio_path}: unreadable audio header ({reason}) [row {where}]")
        return None
    custom = {MEDIA_ID: media_id}
    if media_start is not None:  # unknown positions are left out, not stored as null
        custom[MEDIA_START] = float(media_start)
    if media_end is not None:
        custom[MEDIA_END] = float(media_end)
    if split is not None:
        custom[SPLIT] = split
    if extra:
        custom.update({k: v for k, v in extra.items() if v is not None})
    try:
        cut = make_caption_cut(
            cut_id, recording, caps, source=source, domain=domain, labels=labels,
            start=start, duration=duration, extra=custom,
        )
    except SchemaError as e:
        load.malformed.append(f"{where}: {e}")
        return None
    load.cuts.append(cut)
    return cut


def iter_csv(path: Path, required: Sequence[str], load: SourceLoad) -> Iterator[tuple[str, dict]]:
    """Yield (where, row) for each well-formed CSV row; malformed rows (wrong field count, missing required
    values) are recorded in ``load.malformed`` as 'file:line: reason' and skipped.

    Raises ValueError naming the file and the columns when the header lacks a required column: then no row
    of the file can be read and silently skipping it all would hide the problem.
    """
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            return
        missing = [c for c in required if c not in header]
        if missing:
            raise ValueError(
                f"{path}: header {header} lacks column(s) {missing}; this file does not follow the corpus' published layout"
            )
        for values in progress(reader, desc=path.name):
            line = reader.line_num
            where = f"{path}:{line}"
            if not values or all(not v.strip() for v in values):
                continue
            if len(values) != len(header):
                load.bad(where, f"{len(values)} fields, expected {len(header)} ({', '.join(header)})")
                continue
            yield where, dict(zip(header, values))


def parse_float(value, field_name: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"field {field_name!r}={value!r} is not a number") from None
