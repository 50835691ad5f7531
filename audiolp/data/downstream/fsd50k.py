"""FSD50K (Fonseca et al. 2022): ``FSD50K.ground_truth/{dev,eval,vocabulary}.csv`` and the clips in
``FSD50K.dev_audio/<fname>.wav`` and ``FSD50K.eval_audio/<fname>.wav`` (44.1 kHz, 0.3-30 s).

Protocol: the official split: train = dev.csv rows with split 'train', val = dev.csv rows with split 'val',
test = eval.csv. One multilabel task ``fsd50k`` (200 classes in vocabulary.csv order, metric mAP); a clip's
labels are the comma-separated ``labels`` field (the dataset's names, e.g. ``Bark``, ``Male_speech_and_man_speaking``).
"""
from __future__ import annotations

import csv

from audiolp.data.downstream.common import DownstreamLoad, TaskDef, add_labelled, by_split
from audiolp.data.sources.common import (AudioFinder, SourceLoad, iter_csv, no_expected_files, require_root,
                                         resolve_audio)

NAME = "fsd50k"
DOMAIN = "sound"
GT = "FSD50K.ground_truth"
LAYOUT = ("ROOT/FSD50K.ground_truth/{dev,eval,vocabulary}.csv, ROOT/FSD50K.dev_audio/64760.wav, "
          "ROOT/FSD50K.eval_audio/37199.wav")


def _split_labels(value: str) -> list[str]:
    return [x.strip() for x in (value or "").split(",") if x.strip()]


def load(root) -> DownstreamLoad:
    root = require_root(root, NAME, [f"{GT}/dev.csv", f"{GT}/eval.csv"])
    gt = root / GT
    if not (gt / "dev.csv").is_file() or not (gt / "eval.csv").is_file():
        raise no_expected_files(root, NAME, [f"{GT}/dev.csv", f"{GT}/eval.csv", f"{GT}/vocabulary.csv"])
    out = SourceLoad(name=NAME)
    vocab: list[str] = []
    if (gt / "vocabulary.csv").is_file():  # index,label,mid without a header
        with open(gt / "vocabulary.csv", newline="", encoding="utf-8") as f:
            vocab = [r[1].strip() for r in csv.reader(f) if len(r) >= 2 and r[0].strip().isdigit()]
    seen: list[str] = []
    for part, audio_name in (("dev", "FSD50K.dev_audio"), ("eval", "FSD50K.eval_audio")):
        audio_dir = root / audio_name
        finder = AudioFinder([audio_dir])
        out.look_in([audio_dir])
        required = ("fname", "labels", "split") if part == "dev" else ("fname", "labels")
        for where, row in iter_csv(gt / f"{part}.csv", required, out):
            fname = row["fname"].strip()
            labels = _split_labels(row["labels"])
            if not fname or not labels:
                out.bad(where, "empty 'fname' or 'labels'")
                continue
            split = "test" if part == "eval" else row["split"].strip()
            if split not in ("train", "val", "test"):
                out.bad(where, f"split {split!r} is not train or val")
                continue
            seen += [x for x in labels if x not in seen]
            path = audio_dir / f"{fname}.wav"
            add_labelled(out, where=where, cut_id=f"{NAME}/{fname}", audio_path=resolve_audio(path) or finder.find([fname]),
                         expected=path, labels=labels, source=NAME, domain=DOMAIN, media_id=f"freesound:{fname}",
                         split=split)
    labels = vocab + sorted(x for x in seen if x not in set(vocab))
    task = TaskDef(NAME, "multilabel", "mAP", labels, DOMAIN,
                   f"FSD50K sound event tagging, {len(labels)} classes; official split (dev train / dev val / eval).",
                   by_split)
    return DownstreamLoad(NAME, out, [task], LAYOUT)
