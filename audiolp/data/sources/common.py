"""Shared pieces of the source adapters: the load result, audio lookup, media ids and row accounting.

Every adapter reads one corpus in its own published layout and turns each (clip, captions) row into a
CaptionStew cut. Problems in the data never stop a load: a missing audio file, a malformed row, an empty
caption or an unreadable audio file is counted (malformed rows and unreadable audio are named with file and
line; rows without audio are listed in ``SourceLoad.missing``) and the row is skipped. Only a root without any
of the corpus' expected files is an error. When most rows of a source find no audio (the audio unpacked
somewhere the adapter does not look), ``check_missing_audio`` adds a warning naming the folders searched and
the path expected for an example row.

Recordings store absolute file paths (a manifest built from a relative ``--source`` loads from anywhere).
The header probe also reads the last frames the header declares, so a file whose data is cut short (an
interrupted download) is skipped and listed, not found in the middle of training. Multi-channel files are
downmixed to mono, the mean of the channels (``schema.mono_recording``), as users of these corpora expect.
"""
from __future__ import annotations

import contextlib
import contextvars
import csv
import json
import os
import re
import unicodedata
import warnings
import zlib
from collections import Counter
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
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
# written by the stew on a clip that absorbed a duplicate's captions: the source of each caption, a list
# parallel to ``caption`` (absent on clips that were not merged: then every caption is the clip's source)
CAPTION_SOURCES = "caption_sources"


@dataclass
class SourceLoad:
    """What one adapter read from one corpus copy."""

    name: str
    cuts: list[MonoCut] = field(default_factory=list)
    missing_audio: int = 0
    malformed: list[str] = field(default_factory=list)  # 'file:line: reason'
    empty_captions: int = 0  # clips (records) with no non-empty caption at all
    # caption rows dropped because empty while their clip kept other captions (AudioCaps: one row per caption)
    empty_caption_rows: int = 0
    # csv lines that were the continuation of the previous row's caption (an unquoted line break) and were
    # joined back to it instead of being reported malformed
    repaired_line_breaks: int = 0
    # clips whose audio file turned out to be the whole (YouTube) media: the clip's span was cut out of it
    cut_from_full_media: int = 0
    # problems that do not skip a row but may change the result (e.g. a default blacklist that is absent)
    warnings: list[str] = field(default_factory=list)
    # media ids (see MEDIA_ID) of this corpus' evaluation clips, read from the metadata whether or not the
    # audio is present, so the stew can drop overlapping clips of *other* corpora too.
    eval_ids: set[str] = field(default_factory=set)
    rows: int = 0  # clip records considered (kept or skipped for any reason), malformed rows included
    # clips the corpus itself says to leave out (WavCaps' blacklist of clips overlapping other corpora's
    # evaluation sets): skipped by the adapter, never applied to other corpora
    excluded: int = 0
    # one line per row without audio: 'where: <cut id>: no audio file (expected e.g. <path>)'
    missing: list[str] = field(default_factory=list, repr=False)
    searched: list[str] = field(default_factory=list)  # audio folders the adapter looked in, in order
    # rows whose audio header is read later in parallel (see ``parallel_headers``); empty once resolved
    pending: list = field(default_factory=list, repr=False)

    def bad(self, where: str, reason: str) -> None:
        """Record a malformed row (skipped)."""
        self.rows += 1
        self.malformed.append(f"{where}: {reason}")

    def look_in(self, dirs: Iterable[str | os.PathLike]) -> None:
        """Record audio folders searched (for the missing-audio warning)."""
        for d in dirs:
            d = os.path.abspath(d)
            if d not in self.searched:
                self.searched.append(d)

    def warn(self, message: str) -> None:
        """Record a warning (kept in the load report) and emit it as a Python warning."""
        self.warnings.append(message)
        warnings.warn(message, stacklevel=3)

    def summary(self) -> dict:
        """Counts; ``rows == loaded + missing_audio + malformed + empty_captions + excluded`` (all per clip
        record)."""
        return {
            "rows": self.rows,
            "loaded": len(self.cuts),
            "missing_audio": self.missing_audio,
            "malformed": len(self.malformed),
            "empty_captions": self.empty_captions,
            "excluded": self.excluded,
            "eval_ids": len(self.eval_ids),
            "empty_caption_rows": self.empty_caption_rows,
            "repaired_line_breaks": self.repaired_line_breaks,
            "cut_from_full_media": self.cut_from_full_media,
            "warnings": len(self.warnings),
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


def nfc(name: str) -> str:
    """Unicode NFC form: archives made on macOS store names decomposed (NFD) while the csvs are composed."""
    return name if name.isascii() else unicodedata.normalize("NFC", name)


# ---------------------------------------------------------------------------------------------------------
# Audio lookup
class AudioFinder:
    """Find audio files by stem under one or more folders (searched recursively, indexed once).

    Corpora are distributed with many folder variants (flat, per split, per shard); indexing by stem keeps
    the adapters independent of them. When two files share a stem the first found (sorted walk) wins. Names
    are compared in Unicode NFC, so a composed name in a csv finds a decomposed (NFD) name on disk.
    """

    def __init__(self, dirs: Iterable[str | os.PathLike], extensions: Sequence[str] = AUDIO_EXTENSIONS):
        self.dirs = [Path(os.path.abspath(d)) for d in dirs if d is not None]  # absolute: see read_recording
        self.extensions = tuple(e.lower() for e in extensions)
        self._index: dict[str, Path] | None = None
        self._youtube: dict[str, list[tuple[float | None, float | None, Path]]] | None = None

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
                        key = nfc(fn)
                        index.setdefault(os.path.splitext(key)[0], p)
                        index.setdefault(key, p)
        return index

    def find(self, candidates: Iterable[str]) -> Path | None:
        hit = self.find_match(candidates)
        return hit[0] if hit else None

    def find_match(self, candidates: Iterable[str]) -> tuple[Path, str] | None:
        """(file, the candidate that found it) for the first candidate with a file, else None."""
        if self._index is None:
            self._index = self._build()
        for c in candidates:
            if not c:
                continue
            key = nfc(str(c))
            hit = self._index.get(key)
            if hit is None and Path(key).suffix.lower() in self.extensions:
                hit = self._index.get(Path(key).stem)
            if hit is not None:
                return hit, str(c)
        return None

    def find_youtube(self, ytid: str, start: float | None = None) -> tuple[Path, float | None, float | None] | None:
        """Any file whose name is a clip of YouTube video ``ytid`` (``Y<ytid>_30.000_40.000``,
        ``<ytid>_000030``, ...; see ``parse_youtube_clip``) starting at ``start`` (within 1 ms), or, with
        ``start=None``, the first such file with a time in its name. Returns (file, start, second number) as
        parsed from the name, for names the exact candidates of an adapter cannot spell (e.g. AudioSet's
        segments that end before start + 10 s)."""
        if self._youtube is None:
            if self._index is None:
                self._index = self._build()
            self._youtube = {}
            for p in dict.fromkeys(self._index.values()):  # each file once, in walk order
                yt = parse_youtube_clip(p.stem)
                if yt and yt[1] is not None:
                    self._youtube.setdefault(yt[0], []).append((yt[1], yt[2], p))
        for s, e, p in self._youtube.get(ytid, ()):
            if start is None or abs(s - float(start)) < 1e-3:
                return p, s, e
        return None

    def __len__(self) -> int:
        if self._index is None:
            self._index = self._build()
        return len({str(p) for p in self._index.values()})


@dataclass
class UnpackReport:
    """What :func:`unpack_parquet_audio` did."""

    written: int = 0
    existing: int = 0  # already on disk from an earlier run: left untouched
    problems: list[str] = field(default_factory=list)  # 'file.parquet:row: reason'


def _sniff_audio_suffix(data: bytes) -> str | None:
    if data[:4] == b"RIFF":
        return ".wav"
    if data[:4] == b"fLaC":
        return ".flac"
    if data[:4] == b"OggS":
        return ".ogg"
    if data[:3] == b"ID3" or (len(data) > 1 and data[0] == 0xFF and (data[1] & 0xE0) == 0xE0):
        return ".mp3"
    return None


def unpack_parquet_audio(parquet_files: Iterable[str | os.PathLike], out_dir: str | os.PathLike,
                         column: str = "audio", id_columns: Sequence[str] = ("id", "track_id"),
                         batch_rows: int = 64) -> UnpackReport:
    """Write the audio embedded in Hugging Face parquet shards (an ``Audio`` column: struct {bytes, path}) to files.

    Files are named by the struct's ``path`` (its base name), or by an id column plus a suffix sniffed from the bytes.
    Shards are streamed a few rows at a time (they hold hundreds of MB each). Files already in ``out_dir`` are kept
    (a rerun resumes), and each file is written to a temporary name first, so an interrupted run never leaves a
    truncated file behind. Rows without bytes or without a usable name are reported, not fatal.
    """
    import pyarrow.parquet as pq

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = UnpackReport()
    for shard in parquet_files:
        shard = Path(shard)
        pf = pq.ParquetFile(shard)
        names = pf.schema_arrow.names
        if column not in names:
            raise ValueError(f"{shard}: no audio column {column!r} (columns: {names}); pass the right column name")
        ids = [c for c in id_columns if c in names][:1]
        row = 0
        for batch in pf.iter_batches(batch_size=batch_rows, columns=[column] + ids):
            cells = batch.column(column).to_pylist()
            id_values = batch.column(ids[0]).to_pylist() if ids else [None] * len(cells)
            for cell, ident in zip(cells, id_values):
                row += 1
                where = f"{shard}:{row}"
                data = cell.get("bytes") if isinstance(cell, dict) else cell if isinstance(cell, bytes) else None
                if not data:
                    report.problems.append(f"{where}: no audio bytes in column {column!r}")
                    continue
                name = Path(str(cell.get("path") or "")).name if isinstance(cell, dict) else ""
                if not name and ident not in (None, ""):
                    suffix = _sniff_audio_suffix(data)
                    name = f"{ident}{suffix}" if suffix else ""
                if not name or os.path.splitext(name)[1].lower() not in AUDIO_EXTENSIONS:
                    report.problems.append(f"{where}: cannot name the audio file (path {name!r}, id {ident!r})")
                    continue
                target = out / name
                if target.exists() and target.stat().st_size > 0:
                    report.existing += 1
                    continue
                tmp = target.with_name(f".{name}.partial")
                tmp.write_bytes(data)
                os.replace(tmp, target)
                report.written += 1
    return report


def resolve_audio(path: Path) -> Path | None:
    """``path`` itself, or the same stem with another audio extension (corpora get re-encoded)."""
    if path.is_file():
        return path
    for ext in AUDIO_EXTENSIONS:
        alt = path.with_suffix(ext)
        if alt.is_file():
            return alt
    return None


def find_youtube_audio(
    finder: AudioFinder, names: Sequence[tuple[str, bool]], ytid: str, start: float | None, end: float | None,
) -> tuple[Path | None, tuple[float, float] | None]:
    """Audio of a YouTube clip: the first of ``names`` (candidate, whether that name may be the whole video,
    i.e. it carries no time) with a file, else any file named as a clip of ``ytid`` starting at ``start``
    (``AudioFinder.find_youtube``). Returns (file or None, media window for ``add_clip``: the clip's
    (start, end) when the file was found under a whole-video name and the span is known, else None)."""
    hit = finder.find_match([n for n, _ in names])
    if hit is not None:
        path, name = hit
        whole = next(w for n, w in names if n == name)
        return path, ((float(start), float(end)) if whole and start is not None and end is not None else None)
    if start is not None:
        found = finder.find_youtube(ytid, start)
        if found is not None:
            return found[0], None
    return None, None


class TruncatedAudioError(ValueError):
    """The header declares more audio than the file holds (e.g. an interrupted download)."""


PROBE_FRAMES = 1024  # frames read at the end of each file to prove the declared length is there


def read_recording(path: Path, recording_id: str) -> Recording:
    """A lhotse Recording from the file header, with the last ``PROBE_FRAMES`` frames the header declares
    read back (raises TruncatedAudioError when they are not there). The path is stored absolute.

    Formats libsndfile reads (wav, flac, ogg, mp3 with libsndfile >= 1.1) are described from
    ``soundfile.info`` directly, the same numbers ``Recording.from_file`` would take, at a third of its cost
    (it re-checks which optional backends are installed for every file); anything else goes through
    ``Recording.from_file`` and its other backends (not probed: their decoders have no cheap seek).
    """
    path = os.path.abspath(path)  # a relative --source must not make the manifest depend on the cwd
    try:
        # SoundFile's attributes are the numbers sf.info reports, without sf.info's format-string building
        # (a third of its Python time); the C open releases the GIL, so thread pools overlap the file I/O.
        f = sf.SoundFile(path)
    except Exception:
        return Recording.from_file(path, recording_id=recording_id)
    with f:
        frames, samplerate, channels = f.frames, f.samplerate, f.channels
        if frames > 0 and samplerate > 0:
            k = min(frames, PROBE_FRAMES)
            try:  # a truncated FLAC fails the seek; other formats may return fewer frames
                f.seek(frames - k)
                got = len(f.read(k, dtype="float32", always_2d=True))
            except Exception as e:
                raise TruncatedAudioError(
                    f"truncated audio: the header declares {frames} frames ({frames / samplerate:.2f} s) but "
                    f"reading the last of them failed ({str(e).strip() or type(e).__name__}); re-download the file"
                ) from None
            if got < k:
                raise TruncatedAudioError(
                    f"truncated audio: the header declares {frames} frames ({frames / samplerate:.2f} s) but the "
                    f"file ends {k - got} frames early; re-download the file")
    if frames <= 0 or samplerate <= 0:
        return Recording.from_file(path, recording_id=recording_id)
    return Recording(
        id=recording_id,
        sources=[AudioSource(type="file", channels=list(range(channels)), source=path)],
        sampling_rate=int(samplerate),
        num_samples=int(frames),
        duration=frames / samplerate,
    )


def _other_files(dirs: Sequence[str], limit: int = 10_000) -> Counter:
    """Suffixes of the files under ``dirs`` that are not audio (the first ``limit`` files: enough to say
    'these are .mp4 videos')."""
    seen: Counter = Counter()
    n = 0
    for d in dirs:
        for _, _, filenames in os.walk(d):
            for fn in filenames:
                suffix = os.path.splitext(fn)[1].lower()
                if suffix not in AUDIO_EXTENSIONS:
                    seen[suffix or "(no suffix)"] += 1
                n += 1
                if n >= limit:
                    return seen
    return seen


MISSING_SHARE = 0.5  # warn when more than this share of a source's rows found no audio file


def check_missing_audio(load: SourceLoad, share: float = MISSING_SHARE) -> None:
    """Warn (``load.warnings``) when more than ``share`` of the rows found no audio: the audio is most likely
    somewhere the adapter does not look. Names the folders searched, the path expected for the first such
    row and any non-audio files there (e.g. VGGSound's .mp4 videos)."""
    if not load.rows or load.missing_audio <= share * load.rows:
        return
    searched = ", ".join(load.searched) if load.searched else "(no folder recorded)"
    example = load.missing[0] if load.missing else ""
    others = ", ".join(f"{n} {suffix}" for suffix, n in _other_files(load.searched).most_common(3))
    load.warn(
        f"{load.name}: {load.missing_audio:,} of {load.rows:,} rows found no audio file. Searched: {searched}. "
        f"Example: {example}."
        + (f" Files there that are not audio ({', '.join(AUDIO_EXTENSIONS)}): {others}; extract their audio "
           f"(e.g. ffmpeg -i x.mp4 -vn x.flac)." if others else "")
        + " Point the adapter's audio option at the folder holding the files; every row is listed in missing_audio.txt"
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
    media_window: tuple[float, float] | None = None,
    expected: str | os.PathLike | None = None,
) -> MonoCut | None:
    """Turn one metadata row into a cut, or count why it cannot be one. Checks, in order: empty caption,
    missing audio, unreadable audio, schema problems (e.g. a segment past the end of the file). Inside
    ``parallel_headers`` the header read and the cut are deferred to ``resolve_pending`` (returns None).

    ``media_window`` = (clip start, clip end) inside the media, for a file found under a name that may be the
    whole video (a bare YouTube id): if the file is longer than the clip by more than ``WHOLE_MEDIA_SLACK``
    seconds it is the whole video and the cut is the clip's span of it (counted in ``cut_from_full_media``);
    otherwise the file is the clip itself and is used as is.

    ``expected``: where the audio of this row would be (one example path), listed in ``load.missing`` when
    no file was found."""
    load.rows += 1
    caps = clean_captions(captions)
    if not caps:
        load.empty_captions += 1
        return None
    if audio_path is None:
        load.missing_audio += 1
        load.missing.append(f"{where}: {cut_id}: no audio file" + (f" (expected e.g. {os.path.abspath(expected)})" if expected else ""))
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
    row = _PendingRow(where, cut_id, audio_path, caps, source, domain, labels, start, duration, custom,
                      len(load.malformed), media_window)
    if _HEADER_POOL.get() is not None:
        load.pending.append(row)  # header read and cut made by resolve_pending, in this order
        if len(load.pending) >= PENDING_BATCH:  # bounded: queued rows weigh as much as cuts
            resolve_pending(load)
        return None
    return _finish_row(load, row, _header(audio_path, cut_id), load.malformed)


@dataclass
class _PendingRow:
    where: str
    cut_id: str
    audio_path: Path
    caps: list
    source: str
    domain: str
    labels: Sequence[str] | None
    start: float
    duration: float | None
    custom: dict
    malformed_at: int  # len(load.malformed) when the row was read: where its error goes to keep file order
    window: tuple[float, float] | None = None  # see add_clip(media_window=...)


# A downloaded clip may be a little longer than its nominal span (encoder padding, rounding of the cut
# points); only a file longer than the clip by more than this is taken for the whole video.
WHOLE_MEDIA_SLACK = 1.0


def _header(path: Path, cut_id: str) -> tuple[Recording | None, str | None]:
    """(recording, None) or (None, reason): runs in pool workers, so errors come back as text."""
    try:
        return read_recording(path, cut_id), None
    except Exception as e:  # lhotse raises several types; all mean "cannot read this file"
        # lhotse lists one failure per backend; the first backend's line says what is wrong with the file.
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or [type(e).__name__]
        return None, next((ln for ln in lines[1:] if ln.startswith("Exception #0")), lines[0])[:240]


def _header_chunk(jobs: list[tuple[Path, str]]) -> list[tuple[Recording | None, str | None]]:
    return [_header(path, cut_id) for path, cut_id in jobs]


def _finish_row(load: SourceLoad, row: _PendingRow, header: tuple, errors: list) -> MonoCut | None:
    recording, reason = header
    if recording is None:
        what = reason if reason.startswith("truncated audio") else f"unreadable audio header ({reason})"
        errors.append(f"{row.audio_path}: {what} [row {row.where}]")
        return None
    start, duration, whole = row.start, row.duration, False
    if row.window is not None:
        w_start, w_end = row.window
        if recording.duration > (w_end - w_start) + WHOLE_MEDIA_SLACK:  # the whole video, not the clip
            if w_start >= recording.duration:
                errors.append(
                    f"{row.where}: audio {row.audio_path} is {recording.duration:.2f} s, longer than the "
                    f"{w_end - w_start:g} s clip, so it would be the whole video, but the clip starts at "
                    f"{w_start:g} s, after its end; put the clip file (or the complete video) there")
                return None
            start, duration, whole = w_start, w_end - w_start, True
    try:
        cut = make_caption_cut(
            row.cut_id, recording, row.caps, source=row.source, domain=row.domain, labels=row.labels,
            start=start, duration=duration, extra=row.custom,
        )
    except SchemaError as e:
        errors.append(f"{row.where}: {e}")
        return None
    load.cut_from_full_media += whole
    load.cuts.append(PackedCut(cut) if _PACK.get() else cut)
    return cut


# ---------------------------------------------------------------------------------------------------------
# Compact cuts
# A MonoCut with its Recording, AudioSource, SupervisionSegment and custom dict is ~1.6 KB of Python
# objects; the stew holds every clip of every corpus (9.3M) until it writes, so inside ``packed_cuts``
# adapters keep each cut as its JSON instead and the stew materialises cuts only while writing.
_PACK: contextvars.ContextVar[bool] = contextvars.ContextVar("audiolp_pack_cuts", default=False)


@contextlib.contextmanager
def packed_cuts():
    """Within this block ``SourceLoad.cuts`` collects ``PackedCut``s instead of MonoCuts."""
    token = _PACK.set(True)
    try:
        yield
    finally:
        _PACK.reset(token)


class PackedCut:
    """One CaptionStew cut as its zlib-compressed lhotse JSON (~300 bytes), with what the stew's dedupe
    reads kept apart: ``media_id`` and ``span`` (media start, end). ``id``, ``source``, ``captions``,
    ``caption_sources`` and ``merged_from`` decode the JSON; assigning ``captions`` / ``caption_sources`` /
    ``merged_from`` (a merged duplicate) keeps the new values beside it. ``cut()`` gives back the MonoCut,
    equal to the original but for those edits."""

    __slots__ = ("media_id", "_start", "_end", "_blob", "_edit")
    EDITABLE = ("caption", "merged_from", CAPTION_SOURCES)  # custom keys an edit may set, in written order

    def __init__(self, cut: MonoCut):
        custom = cut.supervisions[0].custom or {}
        self.media_id = custom.get(MEDIA_ID)
        self._start, self._end = custom.get(MEDIA_START), custom.get(MEDIA_END)
        # level 1: 2.3x smaller for ~10 us a clip, against ~300 us for the header read
        self._blob = zlib.compress(json.dumps(cut.to_dict(), ensure_ascii=False).encode("utf-8"), 1)
        self._edit: dict | None = None  # custom key -> new value, once edited

    def _decode(self) -> dict:
        return json.loads(zlib.decompress(self._blob))

    def _get(self, key: str):
        if self._edit is not None and key in self._edit:
            return self._edit[key]
        return self._decode()["supervisions"][0]["custom"].get(key)

    def _set(self, key: str, value) -> None:
        if self._edit is None:
            self._edit = {}
        self._edit[key] = None if value is None else list(value)

    @property
    def id(self) -> str:
        return self._decode()["id"]

    @property
    def source(self) -> str:
        return self._decode()["supervisions"][0]["custom"].get("source", "unknown")

    @property
    def span(self) -> tuple[float | None, float | None]:
        return self._start, self._end

    @property
    def captions(self) -> list[str]:
        return self._get("caption")

    @captions.setter
    def captions(self, value: list[str]) -> None:
        self._set("caption", value)

    @property
    def merged_from(self) -> list[str] | None:
        return self._get("merged_from")

    @merged_from.setter
    def merged_from(self, value: list[str] | None) -> None:
        self._set("merged_from", value)

    @property
    def caption_sources(self) -> list[str] | None:
        return self._get(CAPTION_SOURCES)

    @caption_sources.setter
    def caption_sources(self, value: list[str] | None) -> None:
        self._set(CAPTION_SOURCES, value)

    def to_dict(self) -> dict:
        d = self._decode()
        if self._edit is not None:
            custom = d["supervisions"][0]["custom"]
            for key in self.EDITABLE:  # assigning an existing key keeps its place; new keys go last
                if self._edit.get(key) is not None:
                    custom[key] = list(self._edit[key])
        return d

    def cut(self) -> MonoCut:
        return MonoCut.from_dict(self.to_dict())

    def __sizeof__(self) -> int:
        return object.__sizeof__(self) + len(self._blob)


# ---------------------------------------------------------------------------------------------------------
# Parallel header reads
# Reading the audio header is the expensive part of a load (~0.3 ms a file, ~45 min for 9M clips on one
# core). Inside ``parallel_headers`` add_clip only queues the row; ``resolve_pending`` then reads all queued
# headers with the pool and makes the cuts in row order, so the result is the same as the serial path.
_HEADER_POOL: contextvars.ContextVar[Executor | None] = contextvars.ContextVar("audiolp_header_pool", default=None)
PENDING_BATCH = 8192  # rows queued before add_clip resolves them (memory bound)
HEADER_CHUNK = 256  # rows per pool task: amortises task overhead (pickling, for processes)


def default_num_workers() -> int:
    return min(8, os.cpu_count() or 1)


@contextlib.contextmanager
def parallel_headers(num_workers: int | None = None, kind: str = "thread"):
    """Within this block add_clip defers header reads to a pool of ``num_workers`` (default
    ``min(8, cpu_count)``); call ``resolve_pending(load)`` on each load made inside it. ``num_workers <= 1``
    keeps the serial path. ``kind``: 'thread' (default: libsndfile's open and read release the GIL, so
    threads overlap the file I/O that dominates on a real disk, with no pickling; see BENCHMARKS.md) or
    'process'."""
    n = default_num_workers() if num_workers is None else int(num_workers)
    if n <= 1:
        yield None
        return
    if kind not in ("process", "thread"):
        raise ValueError(f"parallel_headers: kind={kind!r}; use 'process' or 'thread'")
    pool = ProcessPoolExecutor(n) if kind == "process" else ThreadPoolExecutor(n)
    token = _HEADER_POOL.set(pool)
    try:
        yield pool
    finally:
        _HEADER_POOL.reset(token)
        pool.shutdown(wait=True, cancel_futures=True)


def resolve_pending(load: SourceLoad, pool: Executor | None = None) -> SourceLoad:
    """Read the headers of ``load``'s queued rows (with ``pool``, default the one of the enclosing
    ``parallel_headers``, else serially) and add their cuts / errors exactly as the serial path would."""
    rows, load.pending = load.pending, []
    if not rows:
        return load
    pool = pool if pool is not None else _HEADER_POOL.get()
    jobs = [(r.audio_path, r.cut_id) for r in rows]
    if pool is None:
        headers = _header_chunk(jobs)
    else:  # one task per chunk: a Future per file costs as much as a cached header read
        chunk = max(1, min(HEADER_CHUNK, len(jobs) // (4 * getattr(pool, "_max_workers", 1)) or 1))
        results = pool.map(_header_chunk, [jobs[i:i + chunk] for i in range(0, len(jobs), chunk)])
        headers = (h for part in results for h in part)
    inserts: list[tuple[int, str]] = []
    for row, header in zip(rows, headers):
        errs: list[str] = []
        _finish_row(load, row, header, errs)
        inserts += [(row.malformed_at, m) for m in errs]
    if inserts:  # put each error where the serial path would have appended it
        merged, j = [], 0
        for i, m in enumerate(load.malformed):
            while j < len(inserts) and inserts[j][0] == i:
                merged.append(inserts[j][1])
                j += 1
            merged.append(m)
        merged += [m for _, m in inserts[j:]]
        load.malformed = merged
    return load


def iter_csv(path: Path, required: Sequence[str], load: SourceLoad,
             continuation_column: str | None = None) -> Iterator[tuple[str, dict]]:
    """Yield (where, row) for each well-formed CSV row; malformed rows (wrong field count, missing required
    values) are recorded in ``load.malformed`` as 'file:line: reason' and skipped.

    ``continuation_column``: the last column of the file, whose values may hold a line break that was not
    quoted (AudioCaps 2.0's train.csv before cdjkim/audiocaps PR #31): a one-field line right after a good
    row is then the rest of that row's value, joined back with a space (counted in
    ``load.repaired_line_breaks``) instead of a truncated caption plus a malformed line.

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
        joinable = continuation_column is not None and len(header) > 1 and header[-1] == continuation_column
        held: tuple[str, list[str]] | None = None  # the last good row, held back one line for a continuation
        for values in progress(reader, desc=path.name):
            line = reader.line_num
            where = f"{path}:{line}"
            if not values or all(not v.strip() for v in values):
                continue
            if joinable and held is not None and len(values) == 1:
                held[1][-1] = f"{held[1][-1].rstrip()} {values[0].strip()}"
                load.repaired_line_breaks += 1
                continue
            if held is not None:  # yielded before this line's problems are recorded: file order is kept
                yield held[0], dict(zip(header, held[1]))
                held = None
            if len(values) != len(header):
                load.bad(where, f"{len(values)} fields, expected {len(header)} ({', '.join(header)})")
                continue
            if joinable:
                held = (where, values)
            else:
                yield where, dict(zip(header, values))
        if held is not None:
            yield held[0], dict(zip(header, held[1]))


def parse_float(value, field_name: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"field {field_name!r}={value!r} is not a number") from None
