"""CaptionStew: merge the caption corpora into one manifest, leak-free and deduplicated, with statistics.

``build_captionstew`` loads each source with its adapter (``audiolp.data.sources``), then, in the order the
sources are given:

1. drops every clip whose underlying media (``custom['media_id']``: the YouTube id for AudioSet-derived
   clips, the corpus file id otherwise) is in an evaluation set: AudioCaps test, MusicCaps eval
   (``is_audioset_eval``), VGGSound test (when its csv is given), Clotho evaluation. Matching is by media id
   regardless of the time segment: a different 10 s of the same video is still dropped, the conservative
   choice against leakage. So a WavCaps AudioSet_SL clip of an AudioCaps-test video goes too. A corpus' own
   exclusion list (WavCaps' blacklist, which also names AudioCaps *val*) is applied by its adapter to that
   corpus only, so it never removes another corpus' training or validation clips;
2. drops clips named in ``exclude_ids`` (an iterable, a text file with one id per line, or a .csv whose
   first column holds the ids; an id matches a clip's media id, its YouTube id, its cut id or its audio
   file stem);
3. merges duplicates: a clip with the same media id as an already kept clip and an overlapping time span
   (unknown spans overlap everything) adds its captions to the kept clip's caption list (exact repeats
   skipped) and is not kept itself. The first source listed wins, so list the human-written corpora first.
   A clip that absorbed captions gets ``custom['caption_sources']``, the source of each caption (a list
   parallel to ``caption``; clips that merged nothing have no such key: all their captions are the clip's
   source), so per-source caption statistics count each caption under the corpus that wrote it.

It writes ``out_dir/cuts.jsonl.gz`` (lhotse, atomically), ``out_dir/stats.json`` (per-source and overall
statistics plus the per-input build counts and warnings, atomically), ``out_dir/malformed.txt`` (every
skipped malformed row, truncated or unreadable audio included, with its reason), ``out_dir/missing_audio.txt``
(every row whose audio file was not found, with an expected path) and, with ``shar=True``, a Shar copy with
audio under ``out_dir/shar``. A build that would keep no clip raises ``EmptyBuildError`` and writes nothing.
"""
from __future__ import annotations

import csv
import io
import json
import os
import random
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from lhotse import CutSet, MonoCut
from lhotse.cut import Cut

from audiolp.data.schema import export_shar, load_manifest
from audiolp.data.sources import MEDIA_END, MEDIA_ID, MEDIA_START, SourceLoad, load_source, normalize_media_key
from audiolp.data.sources.common import PackedCut, packed_cuts, parallel_headers, parse_youtube_clip
from audiolp.data.text_stats import caption_statistics, stats_table, tokenize  # noqa: F401  (re-exported)

MANIFEST_NAME = "cuts.jsonl.gz"
STATS_NAME = "stats.json"
MALFORMED_NAME = "malformed.txt"
MISSING_NAME = "missing_audio.txt"


class EmptyBuildError(ValueError):
    """A build that ends with no clip at all (the message says, per source, where audio was looked for)."""

SourceSpec = (
    Mapping[str, "str | os.PathLike | Mapping"]
    | Sequence["tuple[str, str | os.PathLike] | tuple[str, str | os.PathLike, Mapping]"]
)


@dataclass
class StewReport:
    out_dir: Path
    manifest: Path
    stats_path: Path
    stats: dict
    inputs: dict[str, dict]  # per input: rows, loaded, missing_audio, malformed, empty_captions, dropped_*, kept
    num_cuts: int
    shar_dir: Path | None = None
    malformed: dict[str, list[str]] = field(default_factory=dict)

    def table(self) -> str:
        return stats_table(self.stats)


def _normalize_specs(sources: SourceSpec) -> list[tuple[str, str, Path, dict]]:
    """-> [(input label, adapter name, root, options)]; a dict value may be a root or {'root': ..., **options}."""
    items = list(sources.items()) if isinstance(sources, Mapping) else list(sources)
    if not items:
        raise ValueError("build_captionstew: no sources given; pass e.g. {'audiocaps': '/data/audiocaps'}")
    specs, seen = [], defaultdict(int)
    for item in items:
        if isinstance(item, (str, bytes)) or len(item) not in (2, 3):
            raise ValueError(f"build_captionstew: source entry {item!r} must be (name, root) or (name, root, options)")
        name, value = item[0], item[1]
        options = dict(item[2]) if len(item) == 3 else {}
        if isinstance(value, Mapping):
            options = {**{k: v for k, v in value.items() if k != "root"}, **options}
            if "root" not in value:
                raise ValueError(f"build_captionstew: options for source {name!r} lack 'root'")
            value = value["root"]
        seen[name] += 1
        label = name if seen[name] == 1 else f"{name}#{seen[name]}"
        # absolute, so stats.json says where the corpus was whichever directory the build ran in
        specs.append((label, name, Path(os.path.abspath(value)), options))
    return specs


def read_id_list(exclude_ids: Iterable[str] | str | os.PathLike) -> list[str]:
    """An id iterable, or a file: a text file with one id per line (the whole line, commas and '#' included:
    Freesound / Clotho titles hold both), or a ``.csv`` whose first column is the id (csv quoting
    honoured). Blank lines and lines starting with '#' are skipped in both."""
    if isinstance(exclude_ids, (str, os.PathLike)):
        path = Path(exclude_ids)
        if not path.is_file():
            raise FileNotFoundError(f"exclude_ids file {path} does not exist; give a text file with one id per line")
        text = path.read_text(encoding="utf-8-sig")
        if path.suffix.lower() == ".csv":
            rows = csv.reader(io.StringIO(text, newline=""))
            lines = [row[0] for row in rows if row and not row[0].lstrip().startswith("#")]
        else:
            lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
        return [ln.strip() for ln in lines if ln.strip()]
    return [str(x) for x in exclude_ids]


def cut_media_keys(cut: Cut) -> set[str]:
    custom = cut.supervisions[0].custom or {}
    keys = {cut.id, cut.id.rsplit("/", 1)[-1]}
    media = custom.get(MEDIA_ID)
    if media:
        keys.add(media)
        keys.add(media.split(":", 1)[-1])
    if cut.has_recording and cut.recording.sources and cut.recording.sources[0].type == "file":
        stem = Path(cut.recording.sources[0].source).stem
        keys.add(stem)
        yt = parse_youtube_clip(stem)
        if yt:
            keys.add(yt[0])
    return keys


def _span(cut: Cut) -> tuple[float | None, float | None]:
    custom = cut.supervisions[0].custom or {}
    return custom.get(MEDIA_START), custom.get(MEDIA_END)


def _overlap(a: tuple, b: tuple) -> bool:
    (s1, e1), (s2, e2) = a, b
    if s1 is None or s2 is None:
        return True  # unknown position inside the media: assume the same clip
    e1 = float("inf") if e1 is None else e1
    e2 = float("inf") if e2 is None else e2
    return s1 < e2 and s2 < e1


def merge_duplicate(kept: PackedCut, dup: PackedCut) -> None:
    """Add ``dup``'s captions (exact repeats skipped) to ``kept``, recording each caption's source in
    ``caption_sources`` and ``dup``'s id in ``merged_from``."""
    have = kept.captions
    added = [c for c in dup.captions if c not in have]
    kept.caption_sources = (kept.caption_sources or [kept.source] * len(have)) + [dup.source] * len(added)
    kept.captions = have + added
    kept.merged_from = (kept.merged_from or []) + [dup.id]


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def build_captionstew(
    sources: SourceSpec,
    out_dir: str | os.PathLike,
    exclude_ids: Iterable[str] | str | os.PathLike = (),
    seed: int = 0,
    shar: bool = False,
    drop_eval: bool = True,
    shar_shard_size: int = 1000,
    num_workers: int | None = None,
) -> StewReport:
    """Build CaptionStew from local corpus copies (see the module docstring).

    ``sources``: ``{name: root}``, ``{name: {"root": root, **adapter_options}}`` or a list of
    ``(name, root[, options])`` (a name may repeat, e.g. two WavCaps copies). ``seed`` shuffles the output
    order (so Shar shards mix sources); the kept set does not depend on it. ``drop_eval=False`` keeps the
    evaluation clips (only for building evaluation manifests). Nothing is written unless every source loads.
    ``num_workers``: threads reading audio headers (default ``min(8, cpu_count)``; 1 = serial); the
    output does not depend on it.
    """
    out_dir = Path(out_dir)
    specs = _normalize_specs(sources)
    loads: list[tuple[str, SourceLoad]] = []
    # one header pool for all sources; cuts kept packed (JSON) until written, see PackedCut
    with parallel_headers(num_workers), packed_cuts():
        for label, name, root, options in specs:
            loads.append((label, load_source(name, root, **options)))

    eval_ids: set[str] = set()
    for _, ld in loads:
        eval_ids |= ld.eval_ids
    raw_keys = {raw: normalize_media_key(raw) for raw in read_id_list(exclude_ids)}
    exclude_keys: set[str] = set().union(*raw_keys.values())
    matched_keys: set[str] = set()  # to report exclude ids that match no clip (a list in another format?)

    inputs: dict[str, dict] = {}
    kept: list[PackedCut] = []
    by_media: dict[str, list[PackedCut]] = defaultdict(list)
    for label, ld in loads:
        counts = {**ld.summary(), "dropped_eval_overlap": 0, "dropped_excluded": 0, "duplicates_merged": 0, "kept": 0}
        for rec in ld.cuts:
            media = rec.media_id or rec.id
            excluded = cut_media_keys(rec.cut()) & exclude_keys if exclude_keys else set()
            matched_keys |= excluded
            if drop_eval and media in eval_ids:
                counts["dropped_eval_overlap"] += 1
                continue
            if excluded:
                counts["dropped_excluded"] += 1
                continue
            twin = next((k for k in by_media[media] if _overlap(k.span, rec.span)), None)
            if twin is not None:
                merge_duplicate(twin, rec)
                counts["duplicates_merged"] += 1
                continue
            by_media[media].append(rec)
            kept.append(rec)
            counts["kept"] += 1
        inputs[label] = counts
        ld.cuts = []  # the dropped and merged clips are no longer needed
    del by_media

    if not kept:
        raise EmptyBuildError(_empty_build_message(specs, loads, inputs))
    # "kept" above counts clips that survived; merged captions do not change it.
    random.Random(seed).shuffle(kept)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Cuts are materialised one at a time: written to a temp manifest and counted in the same pass.
    manifest = out_dir / MANIFEST_NAME
    tmp = manifest.with_name(MANIFEST_NAME + ".partial.jsonl.gz")
    with CutSet.open_writer(tmp) as writer:
        def written():
            for rec in kept:
                d = rec.to_dict()
                writer.write(d)  # the dict is what cut.to_dict() gives (tested), so skip that round trip
                yield MonoCut.from_dict(d)

        stats = caption_statistics(written())
    os.replace(tmp, manifest)
    stats["inputs"] = inputs
    stats["build"] = {
        "seed": seed,
        "drop_eval": drop_eval,
        "sources": {label: {"adapter": name, "root": str(root), "options": {k: str(v) for k, v in opts.items()}}
                    for label, name, root, opts in specs},
        "eval_ids": len(eval_ids),
        "exclude_ids": len(exclude_keys),
        "pairs_counted_as": "clips",
        # per-source statistics: clips and hours under the kept clip's source; captions, vocabulary and
        # Distinct-n under each caption's own source (custom['caption_sources'] on merged clips)
        "captions_counted_by": "caption source",
    }
    warned = {label: list(ld.warnings) for label, ld in loads if ld.warnings}
    unmatched = [raw for raw, keys in raw_keys.items() if not keys & matched_keys]
    stats["build"]["exclude_ids_unmatched"] = len(unmatched)
    if unmatched:  # e.g. "id  # comment" lines of a list written for another tool: nothing would be excluded
        message = (f"{len(unmatched)} of {len(raw_keys)} exclude ids match no clip, e.g. {unmatched[:3]}; give one "
                   "id per line (a clip id, media id, YouTube id or audio file stem) or a .csv with the ids first")
        warnings.warn(message, stacklevel=2)
        warned["exclude_ids"] = [message]
    if warned:  # e.g. WavCaps without its blacklist: the build is valid but may keep evaluation clips
        stats["build"]["warnings"] = warned

    stats_path = out_dir / STATS_NAME
    _write_atomic(stats_path, json.dumps(stats, indent=2, sort_keys=False) + "\n")
    malformed = {label: list(ld.malformed) for label, ld in loads}
    _write_atomic(
        out_dir / MALFORMED_NAME,
        "".join(f"[{label}] {m}\n" for label, ms in malformed.items() for m in ms),
    )
    _write_atomic(
        out_dir / MISSING_NAME,
        "".join(f"[{label}] {m}\n" for label, ld in loads for m in ld.missing),
    )
    shar_dir = None
    if shar:
        shar_dir = out_dir / "shar"
        export_shar(CutSet.from_jsonl_lazy(manifest), shar_dir, shard_size=shar_shard_size)
    return StewReport(
        out_dir=out_dir,
        manifest=manifest,
        stats_path=stats_path,
        stats=stats,
        inputs=inputs,
        num_cuts=len(kept),
        shar_dir=shar_dir,
        malformed=malformed,
    )


def _empty_build_message(specs, loads, inputs) -> str:
    lines = ["build_captionstew: no clip left to write; nothing was written. Per source:"]
    for (label, name, root, _), (_, ld) in zip(specs, loads):
        c = inputs[label]
        lines.append(
            f"  {label} ({name}, root {root}): {c['rows']} rows, {c['loaded']} with audio, {c['missing_audio']} "
            f"without audio, {c['malformed']} malformed/unreadable, {c['dropped_eval_overlap']} evaluation, "
            f"{c['dropped_excluded']} excluded; audio searched in {', '.join(ld.searched) or '(none)'}"
            + (f"; e.g. {ld.missing[0]}" if ld.missing else "")
            + (f"; e.g. {ld.malformed[0]}" if ld.malformed and not c["loaded"] else ""))
    lines.append("Point each source at its corpus copy (and its audio options at the audio folders).")
    return "\n".join(lines)


def manifest_statistics(path: str | os.PathLike) -> dict:
    """``caption_statistics`` of any manifest (a jsonl(.gz) file, a stew folder or a Shar folder). When the
    folder holds a stew ``stats.json``, its build counts (``inputs``) and build warnings are attached."""
    path = Path(path)
    stats = caption_statistics(load_manifest(path))
    built = path / STATS_NAME if path.is_dir() else None
    if built is not None and built.is_file():
        try:
            blob = json.loads(built.read_text(encoding="utf-8"))
            stats["inputs"] = blob.get("inputs", {})
            if (blob.get("build") or {}).get("warnings"):
                stats["build"] = {"warnings": blob["build"]["warnings"]}
        except json.JSONDecodeError:
            pass  # a hand-edited stats.json must not stop the recomputation
    return stats
