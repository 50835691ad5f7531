"""User tasks without package code: (a) ``folder``: a folder of audio plus a csv ``file,label[,split]``;
(b) ``manifest``: an existing labelled lhotse cut manifest. Both give the same registry format as the dataset
adapters (one task, 16 kHz MonoCuts, ``custom['labels']``).

Labels: one per row for multiclass; ``;``-separated for multilabel (the kind defaults to multilabel when any clip
has more than one label). Split: the csv's ``split`` column / the cut's ``custom['split']`` (train, val, test;
valid / validation / dev count as val, eval as test; a manifest without any test cut is split as if it had no
split field, since its ``split`` is then a corpus' own train-only split); rows without one are split deterministically: multiclass
80/10/10 stratified by class (sha1 of the file name / cut id within each class), multilabel 80/10/10 by the
sha1 alone.
"""
from __future__ import annotations

import re
from pathlib import Path

from audiolp.data.downstream.common import (DownstreamLoad, TaskDef, add_labelled, by_split, hash_split,
                                            stratified_hash_split)
from audiolp.data.schema import DOMAINS, cut_captions, cut_labels, load_manifest, make_caption_cut
from audiolp.data.sources.common import SPLIT, SourceLoad, iter_csv, require_root, resolve_audio

SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "dev": "val", "test": "test",
               "eval": "test"}
KINDS = ("multiclass", "multilabel")


def _labels(value) -> list[str]:
    return [x.strip() for x in str(value or "").split(";") if x.strip()]


def default_name(path: Path) -> str:
    stem = path.name.split(".")[0] if path.is_file() else path.name
    return re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_").lower() or "task"


def _assign(items: list[tuple[str, list[str], str | None]], kind: str) -> dict[str, str]:
    """{key: split} for (key, labels, given split or None)."""
    free = [(k, ls) for k, ls, s in items if s is None]
    auto = (stratified_hash_split([(k, ls[0]) for k, ls in free]) if kind == "multiclass"
            else {k: hash_split(k) for k, _ in free})
    return {k: (s if s is not None else auto[k]) for k, _, s in items}


def _task(name: str, kind: str | None, n_max: int, labels: set, domain: str, what: str) -> tuple[str, str]:
    if kind is None:
        kind = "multilabel" if n_max > 1 else "multiclass"
    if kind not in KINDS:
        raise ValueError(f"--kind {kind!r}: use one of {KINDS}")
    if kind == "multiclass" and n_max > 1:
        raise ValueError(f"{what}: some clips have several labels but --kind is multiclass; use --kind multilabel")
    return kind, "accuracy" if kind == "multiclass" else "mAP"


def load_folder(root, csv_path=None, kind: str | None = None, task_name: str | None = None,
                domain: str = "sound") -> DownstreamLoad:
    """Audio under ``root``; ``csv_path`` (default: the only .csv in ``root``) lists ``file`` (relative to
    ``root``), ``label`` and optionally ``split``."""
    root = require_root(root, "folder", ["the audio files", "a csv with columns file,label[,split]"])
    layout = f"{root}/clips/a.wav and a csv with header 'file,label[,split]' (rows like 'clips/a.wav,dog,train')"
    if csv_path is None:
        found = sorted(root.glob("*.csv"))
        if len(found) != 1:
            raise FileNotFoundError(f"folder task: {'no' if not found else 'several'} .csv in {root}; pass "
                                    f"--csv FILE with columns file,label[,split] (e.g. clips/a.wav,dog,train)")
        csv_path = found[0]
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"folder task: csv {csv_path} does not exist; pass --csv FILE with columns "
                                f"file,label[,split] (e.g. clips/a.wav,dog,train)")
    if domain not in DOMAINS:
        raise ValueError(f"domain {domain!r}: use one of {DOMAINS}")
    name = task_name or default_name(root)
    out = SourceLoad(name=name)
    out.look_in([root])
    rows = []
    for where, row in iter_csv(csv_path, ("file", "label"), out):
        labels, fn = _labels(row["label"]), row["file"].strip()
        split_raw = (row.get("split") or "").strip().lower()
        if not fn or not labels:
            out.bad(where, "empty 'file' or 'label'")
            continue
        if split_raw and split_raw not in SPLIT_NAMES:
            out.bad(where, f"split {split_raw!r} is not one of train/val/test")
            continue
        rows.append((where, fn, labels, SPLIT_NAMES.get(split_raw)))
    if not rows and not out.malformed:
        raise ValueError(f"{csv_path}: no rows; expected a header 'file,label[,split]' and one row per clip")
    kind, metric = _task(name, kind, max((len(r[2]) for r in rows), default=1), set(), domain, str(csv_path))
    assign = _assign([(fn, labels, s) for _, fn, labels, s in rows], kind)
    for where, fn, labels, _ in rows:
        path = Path(fn) if Path(fn).is_absolute() else root / fn
        add_labelled(out, where=where, cut_id=f"{name}/{Path(fn).with_suffix('').as_posix()}",
                     audio_path=resolve_audio(path), expected=path, labels=labels, source=name, domain=domain,
                     media_id=f"{name}:{fn}", split=assign[fn])
    label_set = sorted({x for r in rows for x in r[2]})
    task = TaskDef(name, kind, metric, label_set, domain, f"User task from {csv_path.name} ({kind}, {len(label_set)} classes).", by_split)
    return DownstreamLoad(name, out, [task], layout)


def load_manifest_task(manifest, label_field: str = "labels", kind: str | None = None, task_name: str | None = None,
                       domain: str | None = None) -> DownstreamLoad:
    """Cuts of ``manifest`` (jsonl/jsonl.gz or Shar folder) labelled by the supervision field ``label_field`` (in
    ``custom`` or as an attribute, a list or a ';'-joined string; e.g. ``speaker``)."""
    manifest = Path(manifest)
    cuts = load_manifest(manifest)
    name = task_name or default_name(manifest)
    out = SourceLoad(name=name)
    layout = f"a lhotse cut manifest whose supervisions hold '{label_field}' (e.g. custom={{'{label_field}': ['dog']}})"
    items = []
    for i, cut in enumerate(cuts, 1):
        where = f"{manifest}:{i}"
        labels = cut_labels(cut, field=label_field) if cut.supervisions else []
        if not labels and getattr(cut, "custom", None) and label_field in cut.custom:
            labels = _labels(";".join(map(str, cut.custom[label_field])) if isinstance(cut.custom[label_field], list)
                             else cut.custom[label_field])
        if not labels:
            out.bad(where, f"cut {cut.id!r} has no {label_field!r} field")
            continue
        if not getattr(cut, "has_recording", False):
            out.bad(where, f"cut {cut.id!r} has no recording (audio)")
            continue
        sup_custom = (cut.supervisions[0].custom or {}) if cut.supervisions else {}
        split_raw = str(sup_custom.get(SPLIT) or "").strip().lower()
        items.append((where, cut, labels, SPLIT_NAMES.get(split_raw), sup_custom))
    if not items:
        raise ValueError(f"{manifest}: no cut with labels in field {label_field!r} and audio ({len(out.malformed)} "
                         f"skipped); expected {layout}; pass --label-field NAME")
    if not any(x[3] == "test" for x in items):  # e.g. a corpus' own train-only split: not a task split
        items = [(w, c, ls, None, sc) for w, c, ls, _, sc in items]
    kind, metric = _task(name, kind, max(len(x[2]) for x in items), set(), domain, str(manifest))
    assign = _assign([(c.id, ls, s) for _, c, ls, s, _ in items], kind)
    dirs = set()
    for where, cut, labels, _, sup_custom in items:
        files = [s.source for s in cut.recording.sources if s.type == "file"]
        dirs.update(str(Path(f).parent) for f in files)
        out.rows += 1
        if any(not Path(f).is_file() for f in files):
            out.missing_audio += 1
            out.missing.append(f"{where}: {cut.id}: no audio file (expected {files[0]})")
            continue
        dom = domain or sup_custom.get("domain") or "sound"
        captions = cut_captions(cut) if cut.supervisions else []
        extra = {SPLIT: assign[cut.id], "media_id": sup_custom.get("media_id", f"{name}:{cut.id}")}
        out.cuts.append(make_caption_cut(cut.id, cut.recording, captions or ", ".join(labels), source=name,
                                         domain=dom if dom in DOMAINS else "sound", labels=labels, start=cut.start,
                                         duration=cut.duration, extra=extra))
    out.look_in(sorted(dirs))
    label_set = sorted({x for it in items for x in it[2]})
    task = TaskDef(name, kind, metric, label_set, domain or "sound",
                   f"User task from manifest {manifest.name}, labels from {label_field!r} ({kind}).", by_split)
    return DownstreamLoad(name, out, [task], layout)
