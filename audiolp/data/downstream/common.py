"""Shared pieces of the downstream adapters: task definitions, split rules, the registry writer.

An adapter reads one evaluation dataset from a local folder in its published layout and returns a
``DownstreamLoad``: the clips it found (a ``SourceLoad`` of the caption-corpus adapters, so rows without audio,
malformed rows and unreadable files are counted and listed the same way) and one or more ``TaskDef``s that say
which clips go to which split of which task. ``write_tasks`` then writes the split manifests and merges the tasks
into ``DIR/tasks.json`` (``audiolp.data.tasks``), exactly the format MiniStew's task registry has.

Every clip is a 16 kHz MonoCut (``schema.make_caption_cut``: resampled on load, multi-channel files downmixed)
whose supervision ``custom`` holds ``labels`` (list of strings), ``source`` (the dataset name), ``domain``,
``caption`` (the labels joined: the schema requires one; it is not a real caption), ``media_id`` and, where the
dataset has them, ``split`` (the dataset's own split name), ``fold`` or ``events`` ([[label, onset_s,
offset_s], ...], for SED tasks, as MiniStew's event_detection task).

Rows without audio are skipped and counted (``missing_audio.txt`` in the output folder lists them); when more than
half of a dataset's rows, or all of them, find no audio, nothing is written and a FileNotFoundError names the
folders searched, the path expected for an example row and the fix.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from lhotse.cut import Cut

from audiolp.data.schema import cut_captions, cut_labels, save_manifest
from audiolp.data.sources.common import SPLIT, SourceLoad, add_clip, resolve_pending
from audiolp.data.tasks import TaskSpec, load_task_registry, write_task_registry

SPLITS = ("train", "val", "test")
MISSING_LIMIT = 0.5  # more than this share of rows without audio: an error, not a task


@dataclass
class TaskDef:
    """One registry task built from a dataset's clips; ``assign(cut)`` gives the cut's split or None."""

    name: str
    kind: str
    metric: str
    labels: list[str]
    domain: str
    description: str
    assign: Callable[[Cut], str | None]


@dataclass
class DownstreamLoad:
    dataset: str
    load: SourceLoad
    tasks: list[TaskDef] = field(default_factory=list)
    layout: str = ""  # the expected layout, with an example path (for the no-audio error)


def custom(cut: Cut) -> dict:
    return cut.supervisions[0].custom or {}


def by_split(cut: Cut) -> str | None:
    """The dataset's own split stored in ``custom['split']`` (train/val/test)."""
    s = custom(cut).get(SPLIT)
    return s if s in SPLITS else None


def fold_assign(test_fold: int, folds: int) -> Callable[[Cut], str]:
    """Cross-validation by fold: test = ``test_fold``, val = the next fold (wrapping round), train = the rest."""
    val_fold = test_fold % folds + 1

    def assign(cut: Cut) -> str:
        f = int(custom(cut)["fold"])
        return "test" if f == test_fold else "val" if f == val_fold else "train"

    return assign


def stable_unit(key: str) -> float:
    """A number in [0, 1) fixed by ``key`` (sha1): the basis of every deterministic hash split."""
    return int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:12], 16) / float(1 << 48)


def hash_split(key: str, val: float = 0.1, test: float = 0.1) -> str:
    """train / val / test by the hash of ``key`` (shares ``1 - val - test`` / ``val`` / ``test``)."""
    u = stable_unit(key)
    return "test" if u < test else "val" if u < test + val else "train"


def stratified_hash_split(items: Sequence[tuple[str, str]], val: float = 0.1, test: float = 0.1) -> dict[str, str]:
    """{key: split} for (key, class) items: within each class the keys are ordered by their hash and the first
    ``test`` share (rounded, at least one; classes of fewer than 3 items: ``hash_split`` per key) goes to test, the next ``val`` share to
    val, the rest to train. Deterministic and independent of the listing order."""
    groups: dict[str, list[str]] = {}
    for key, cls in items:
        groups.setdefault(cls, []).append(key)
    out = {}
    for cls, keys in groups.items():
        keys = sorted(set(keys), key=lambda k: (stable_unit(k), k))
        n = len(keys)
        if n < 3:  # too few to stratify: each key by its own hash
            out.update({k: hash_split(k, val, test) for k in keys})
            continue
        n_test = max(1, round(n * test)) if test > 0 else 0
        n_val = max(1, round(n * val)) if val > 0 else 0
        for i, k in enumerate(keys):
            out[k] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return out


def label_caption(labels: Sequence[str]) -> str:
    return ", ".join(labels)


def add_labelled(load: SourceLoad, *, where: str, cut_id: str, audio_path: Path | None, labels: Sequence[str],
                 source: str, domain: str, media_id: str, expected=None, split: str | None = None,
                 extra: dict | None = None, caption: str | None = None, **kw):
    """``sources.common.add_clip`` for a labelled clip (the caption is the labels, see the module docstring)."""
    return add_clip(load, where=where, cut_id=cut_id, audio_path=audio_path,
                    captions=caption or label_caption(labels) or "unlabelled", source=source, domain=domain,
                    media_id=media_id, split=split, labels=list(labels), extra=extra, expected=expected, **kw)


def check_audio(dl: DownstreamLoad) -> None:
    """Raise FileNotFoundError when no clip, or at most half of the rows, found audio."""
    load = dl.load
    resolve_pending(load)
    searched = ", ".join(load.searched) or "(nowhere)"
    example = load.missing[0] if load.missing else ""
    if not load.cuts:
        raise FileNotFoundError(
            f"{dl.dataset}: no audio found ({load.rows} metadata rows, {load.missing_audio} without a file, "
            f"{len(load.malformed)} malformed or unreadable). Looked in: {searched}. Expected layout: {dl.layout}. "
            + (f"First missing: {example}. " if example else "")
            + "Fix: point --source at the dataset's root folder in its published layout (audio unpacked there).")
    if load.rows and load.missing_audio > MISSING_LIMIT * load.rows:
        raise FileNotFoundError(
            f"{dl.dataset}: {load.missing_audio} of {load.rows} rows have no audio file. Looked in: {searched}. "
            f"Expected layout: {dl.layout}. First missing: {example}. Fix: unpack the dataset's audio where the "
            f"layout says (or point --source at the folder that holds it).")


def _merge_registry(path: Path) -> dict[str, TaskSpec]:
    return load_task_registry(path) if path.exists() else {}


def write_tasks(dl: DownstreamLoad, out_dir: str | os.PathLike) -> tuple[dict[str, TaskSpec], list[str]]:
    """Write each task's split manifests (``tasks/<task>/<split>.jsonl.gz``), merge the tasks into
    ``out_dir/tasks.json`` (other tasks there are kept; a task of the same name is replaced) and list the rows
    without audio in ``out_dir/missing_audio.txt`` (appended per dataset). Returns the specs and one summary line
    per task (clips per split, classes) plus one line of skipped rows when there were any."""
    check_audio(dl)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    load = dl.load
    specs: dict[str, TaskSpec] = {}
    lines = []
    for t in dl.tasks:
        parts: dict[str, list] = {s: [] for s in SPLITS}
        for cut in load.cuts:
            s = t.assign(cut)
            if s is not None:
                parts.setdefault(s, []).append(cut)
        if not parts.get("test"):
            raise ValueError(f"{dl.dataset}: task {t.name!r} has no test clips (all its test rows lack audio?); "
                             f"expected layout: {dl.layout}. Fix: give some clips split 'test' (or none, for the automatic split)")
        label_set = set(t.labels)
        for cut in (c for cs in parts.values() for c in cs):
            unknown = [x for x in cut_labels(cut) if x not in label_set]
            if unknown:
                raise ValueError(f"{dl.dataset}: clip {cut.id!r} has labels {unknown} outside task {t.name!r}'s label set")
        splits = {}
        for s, cuts in parts.items():
            if cuts:
                rel = f"tasks/{t.name}/{s}.jsonl.gz"
                save_manifest(cuts, out_dir / rel)
                splits[s] = rel
        specs[t.name] = TaskSpec(name=t.name, kind=t.kind, metric=t.metric, labels=list(t.labels), splits=splits,
                                 description=t.description, domain=t.domain)
        counts = " / ".join(f"{s} {len(parts[s])}" for s in parts if parts[s])
        what = (f"{sum(len(cut_captions(c)) for c in parts['test'])} test captions" if t.kind == "retrieval"
                else f"{len(t.labels)} classes")
        lines.append(f"{t.name}: {counts} clips, {what} ({t.kind}, {t.metric})")
    registry = out_dir / "tasks.json"
    merged = _merge_registry(registry)
    merged.update(specs)
    write_task_registry(merged, registry)
    skipped = load.missing_audio + len(load.malformed)
    if load.missing:
        with open(out_dir / "missing_audio.txt", "a", encoding="utf-8") as f:
            f.writelines(m + "\n" for m in load.missing)
    if load.malformed:
        with open(out_dir / "malformed.txt", "a", encoding="utf-8") as f:
            f.writelines(m + "\n" for m in load.malformed)
    if skipped or load.excluded:
        lines.append(f"{dl.dataset}: {load.rows} rows, {len(load.cuts)} clips kept, {load.missing_audio} without "
                     f"audio (missing_audio.txt), {len(load.malformed)} malformed/unreadable (malformed.txt)"
                     + (f", {load.excluded} excluded by the task definition" if load.excluded else ""))
    return specs, lines


def scan_audio(folder: Path) -> list[Path]:
    """Audio files under ``folder`` (recursive, sorted), for datasets whose metadata is the file names."""
    from audiolp.data.sources.common import AUDIO_EXTENSIONS

    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        found += [Path(dirpath) / fn for fn in sorted(filenames) if os.path.splitext(fn)[1].lower() in AUDIO_EXTENSIONS]
    return found
