"""The CaptionStew manifest schema on lhotse.

One MonoCut per clip at 16 kHz with one supervision spanning the cut. The supervision's ``custom`` holds
``caption`` (a list of strings, as the paper authors' released manifests do), ``source`` (corpus or
sub-source name), ``domain`` (sound / music / speech) and, optionally, ``labels`` (list of strings).
Multi-channel audio is downmixed to mono (the mean of the channels, see ``mono_recording``).

Readers accept the authors' layout too (AudenAI/Auden's uts / audio_tag / clap data modules): captions in
``custom['caption']`` as a list or a single string, tags in ``custom['audio_tag']`` as a list or a
';'-joined string, either also as a plain supervision attribute (see ``cut_captions`` / ``cut_labels``). A clip into
which ``build_captionstew`` merged a duplicate from another corpus also holds ``caption_sources`` (the source of
each caption, a list parallel to ``caption``) and ``merged_from`` (the merged clips' ids).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment
from lhotse.augmentation import AudioTransform
from lhotse.cut import Cut
from lhotse.utils import fastcopy

from audiolp.features import SAMPLING_RATE  # every clip is stored at the rate the features expect

DOMAINS = ("sound", "music", "speech")


class SchemaError(ValueError):
    """A cut or manifest entry that does not follow the CaptionStew schema."""


def clean_captions(captions: str | Sequence[str] | None) -> list[str]:
    """Strip captions and drop empty ones; a single string becomes a one-element list."""
    if captions is None:
        return []
    if isinstance(captions, str):
        captions = [captions]
    return [c.strip() for c in captions if isinstance(c, str) and c.strip()]


@dataclass
class DownmixMono(AudioTransform):
    """Mean of all channels -> 1 x T. lhotse 1.33 has no file-backed mean downmix (``MultiCut.to_mono`` and
    ``MixedCut.to_mono`` sum the channels and keep the result in memory), so this transform is registered with
    lhotse's ``AudioTransform`` registry and stored in the manifest; reading such a manifest needs
    ``audiolp.data.schema`` imported (any audiolp loader does)."""

    def __call__(self, samples: np.ndarray, sampling_rate: int) -> np.ndarray:
        return samples.mean(axis=0, keepdims=True) if samples.shape[0] > 1 else samples

    def reverse_timestamps(self, offset, duration, sampling_rate):
        return offset, duration  # the time axis is untouched


def mono_recording(recording: Recording) -> Recording:
    """``recording`` as one channel that reads as the mean of the file's channels (unchanged when mono).

    The single source is declared as channel 0 so a MonoCut selects it; lhotse then reads every channel of
    the file (it removes only channels the source declares) and ``DownmixMono`` averages them."""
    if recording.num_channels <= 1 or len(recording.sources) != 1:
        return recording  # multi-file recordings (one file per channel) are not produced by the adapters
    source = fastcopy(recording.sources[0], channels=[0])
    return fastcopy(recording, sources=[source], transforms=[DownmixMono()] + list(recording.transforms or []))


def make_caption_cut(
    cut_id: str,
    recording: Recording,
    captions: str | Sequence[str],
    source: str,
    domain: str,
    labels: Sequence[str] | None = None,
    start: float = 0.0,
    duration: float | None = None,
    extra: dict | None = None,
) -> MonoCut:
    """Build one CaptionStew cut; the audio is resampled to 16 kHz on load when the file is not, and a
    multi-channel file is downmixed to mono (channel mean, ``mono_recording``).

    Raises SchemaError naming the field when captions are empty or the domain is unknown.
    """
    caps = clean_captions(captions)
    if not caps:
        raise SchemaError(f"cut {cut_id!r}: field 'caption' is empty; give at least one non-empty caption")
    if domain not in DOMAINS:
        raise SchemaError(f"cut {cut_id!r}: field 'domain'={domain!r}; use one of {DOMAINS}")
    if not source:
        raise SchemaError(f"cut {cut_id!r}: field 'source' is empty; name the corpus the clip comes from")
    recording = mono_recording(recording)
    if duration is None:
        duration = recording.duration - start
    duration = min(duration, recording.duration - start)
    if duration <= 0:
        raise SchemaError(
            f"cut {cut_id!r}: start={start} is past the end of recording {recording.id!r} ({recording.duration:.2f} s)"
        )
    custom = {"caption": caps, "source": source, "domain": domain}
    if labels:
        custom["labels"] = [str(x) for x in labels]
    if extra:
        custom.update(extra)
    sup = SupervisionSegment(
        id=cut_id,
        recording_id=recording.id,
        start=start,
        duration=duration,
        channel=0,
        custom=custom,
    )
    cut = MonoCut(id=cut_id, start=start, duration=duration, channel=0, recording=recording, supervisions=[sup])
    # Supervision times are relative to the cut.
    cut.supervisions[0].start = 0.0
    if recording.sampling_rate != SAMPLING_RATE:
        cut = cut.resample(SAMPLING_RATE)
    return cut


def _custom(cut: Cut) -> dict:
    if not cut.supervisions or cut.supervisions[0].custom is None:
        raise SchemaError(f"cut {cut.id!r}: no supervision with 'custom' fields; it is not a CaptionStew cut")
    return cut.supervisions[0].custom


def _field(cut: Cut, name: str):
    """``name`` from the first supervision's custom dict, else a supervision attribute of that name (lhotse
    keeps unknown keys of a supervision dict in ``custom``; an object attribute covers hand-made cuts)."""
    if not cut.supervisions:
        return None
    sup = cut.supervisions[0]
    custom = sup.custom or {}
    if name in custom:
        return custom[name]
    return getattr(sup, name, None) if name not in ("custom", "id", "recording_id") else None


def _as_labels(value) -> list[str]:
    parts = value.split(";") if isinstance(value, str) else [str(v) for v in value]
    return [p.strip() for p in parts if p and p.strip()]


def cut_captions(cut: Cut) -> list[str]:
    """The captions: ``caption`` as a list or one string (the authors' manifests), in the supervision's
    custom dict or as its attribute. Returned as stored (``caption_sources`` is parallel to this list)."""
    if not cut.supervisions:
        raise SchemaError(f"cut {cut.id!r}: no supervision; it is not a CaptionStew cut")
    caps = _field(cut, "caption")
    if caps is None:
        return []
    return [caps] if isinstance(caps, str) else list(caps)


def cut_source(cut: Cut) -> str:
    return _custom(cut).get("source", "unknown")


def cut_domain(cut: Cut) -> str:
    return _custom(cut).get("domain", "sound")


LABEL_FIELDS = ("labels", "audio_tag")  # audiolp's field, then the authors' (Auden audio_tag data module)


def cut_labels(cut: Cut, field: str | None = None) -> list[str]:
    """The clip's tags. ``field=None``: ``labels``, else ``audio_tag``; a name: that field only. Either is
    read from the supervision's custom dict, else its attribute, as a list or a ';'-joined string."""
    for name in LABEL_FIELDS if field is None else (field,):
        value = _field(cut, name)
        if value is not None:
            return _as_labels(value)
    return []


def validate_cut(cut: Cut) -> None:
    """Raise SchemaError naming the field when ``cut`` does not follow the schema."""
    custom = _custom(cut)
    if not clean_captions(custom.get("caption")):
        raise SchemaError(f"cut {cut.id!r}: field 'caption' is empty")
    if custom.get("domain", "sound") not in DOMAINS:
        raise SchemaError(f"cut {cut.id!r}: field 'domain'={custom.get('domain')!r} not in {DOMAINS}")
    if cut.sampling_rate != SAMPLING_RATE:
        raise SchemaError(f"cut {cut.id!r}: sampling rate {cut.sampling_rate} Hz; resample to {SAMPLING_RATE}")


def save_manifest(cuts: Iterable[Cut], path: str | os.PathLike) -> Path:
    """Write a lhotse jsonl(.gz) cut manifest atomically: a crash never leaves a half-written file in place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".jsonl.gz" if str(path).endswith(".gz") else ".jsonl"
    tmp = path.with_name(path.name + ".partial" + suffix)
    with CutSet.open_writer(tmp) as writer:  # streamed: a lazy manifest never has to fit in memory
        for cut in cuts:
            writer.write(cut)
    os.replace(tmp, path)
    return path


def load_manifest(path: str | os.PathLike) -> CutSet:
    """Read a lhotse cut manifest (jsonl / jsonl.gz) or a Shar directory."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"manifest {path} does not exist; build it with `audiolp prepare ...`")
    if path.is_dir():
        if any(path.glob("cuts.*.jsonl*")):
            return CutSet.from_shar(in_dir=path)
        candidates = sorted(path.glob("*cuts*.jsonl*"))
        if len(candidates) == 1:
            return CutSet.from_file(candidates[0])
        raise FileNotFoundError(
            f"{path} is a directory without a Shar index (cuts.*.jsonl*) or a single *cuts*.jsonl.gz; pass the manifest file"
        )
    return CutSet.from_file(path)


def shar_metadata(path: str | os.PathLike) -> CutSet | None:
    """For a Shar directory, its cuts without their audio (only the ``cuts.*.jsonl*`` shards are read): scanning
    these costs no audio I/O. None for any other manifest."""
    path = Path(path)
    shards = sorted(path.glob("cuts.*.jsonl*")) if path.is_dir() else []
    return CutSet.from_shar(fields={"cuts": shards}) if shards else None


def export_shar(cuts: CutSet, out_dir: str | os.PathLike, shard_size: int = 1000, audio_format: str = "flac") -> list:
    """Write cuts with their audio as lhotse Shar (tar shards), the format for streaming large corpora."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return cuts.to_shar(out_dir, fields={"recording": audio_format}, shard_size=shard_size)
