"""ESC-50 (Piczak 2015): ``meta/esc50.csv`` (filename, fold, target, category, esc10, src_file, take) and the
2,000 five-second 44.1 kHz clips in ``audio/``.

Protocol: the dataset's 5 folds (clips of one source recording share a fold). Registry tasks
``esc50_fold1`` .. ``esc50_fold5``: test = that fold, val = the next fold (fold 5's is fold 1), train = the other
three. Report the mean accuracy over the five tasks. 50 classes from ``category``, listed in ``target`` order.
"""
from __future__ import annotations

from pathlib import Path

from audiolp.data.downstream.common import DownstreamLoad, TaskDef, add_labelled, fold_assign
from audiolp.data.sources.common import (AudioFinder, SourceLoad, iter_csv, no_expected_files, require_root,
                                         resolve_audio)

NAME = "esc50"
DOMAIN = "sound"
CSV = "meta/esc50.csv"
FOLDS = 5
LAYOUT = "ROOT/meta/esc50.csv and ROOT/audio/1-100032-A-0.wav"


def load(root) -> DownstreamLoad:
    root = require_root(root, NAME, [CSV, "audio/"])
    csv_path = root / CSV
    if not csv_path.is_file():
        raise no_expected_files(root, NAME, [CSV, "audio/1-100032-A-0.wav"])
    audio_dir = root / "audio"
    finder = AudioFinder([audio_dir])
    out = SourceLoad(name=NAME)
    out.look_in([audio_dir])
    classes: dict[int, str] = {}
    for where, row in iter_csv(csv_path, ("filename", "fold", "target", "category"), out):
        try:
            fold, target = int(row["fold"]), int(row["target"])
        except ValueError:
            out.bad(where, f"fold {row['fold']!r} / target {row['target']!r} is not a number")
            continue
        if not 1 <= fold <= FOLDS:
            out.bad(where, f"fold {fold} outside 1..{FOLDS}")
            continue
        label = row["category"].strip()
        classes.setdefault(target, label)
        fn = row["filename"].strip()
        add_labelled(out, where=where, cut_id=f"{NAME}/{Path(fn).stem}",
                     audio_path=resolve_audio(audio_dir / fn) or finder.find([fn]), expected=audio_dir / fn,
                     labels=[label], source=NAME, domain=DOMAIN, media_id=f"{NAME}:{Path(fn).stem}",
                     extra={"fold": fold})
    labels = [classes[k] for k in sorted(classes)]
    tasks = [TaskDef(f"{NAME}_fold{k}", "multiclass", "accuracy", labels, DOMAIN,
                     f"ESC-50 environmental sound classification, {len(labels)} classes; test = fold {k}, "
                     f"val = fold {k % FOLDS + 1}, train = the other folds (report the mean over the 5 tasks).",
                     fold_assign(k, FOLDS)) for k in range(1, FOLDS + 1)]
    return DownstreamLoad(NAME, out, tasks, LAYOUT)
