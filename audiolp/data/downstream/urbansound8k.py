"""UrbanSound8K (Salamon et al. 2014): ``metadata/UrbanSound8K.csv`` (slice_file_name, fsID, start, end, salience,
fold, classID, class) and the 8,732 slices (<= 4 s, various rates) in ``audio/fold1`` .. ``audio/fold10``.

Protocol: the dataset's predefined 10 folds (never reshuffle: slices of one recording share a fold). Registry
tasks ``urbansound8k_fold1`` .. ``urbansound8k_fold10``: test = that fold, val = the next fold (fold 10's is
fold 1), train = the other eight. Report the mean accuracy over the ten tasks. Classes listed in classID order.
"""
from __future__ import annotations

from pathlib import Path

from audiolp.data.downstream.common import DownstreamLoad, TaskDef, add_labelled, fold_assign
from audiolp.data.sources.common import (AudioFinder, SourceLoad, iter_csv, no_expected_files, require_root,
                                         resolve_audio)

NAME = "urbansound8k"
DOMAIN = "sound"
CSV = "metadata/UrbanSound8K.csv"
FOLDS = 10
LAYOUT = "ROOT/metadata/UrbanSound8K.csv and ROOT/audio/fold1/100032-3-0-0.wav"


def load(root) -> DownstreamLoad:
    root = require_root(root, NAME, [CSV, "audio/fold1/"])
    csv_path = root / CSV
    if not csv_path.is_file():
        raise no_expected_files(root, NAME, [CSV, "audio/fold1/100032-3-0-0.wav"])
    audio_dir = root / "audio"
    finder = AudioFinder([audio_dir])
    out = SourceLoad(name=NAME)
    out.look_in([audio_dir])
    classes: dict[int, str] = {}
    for where, row in iter_csv(csv_path, ("slice_file_name", "fold", "classID", "class"), out):
        try:
            fold, cid = int(row["fold"]), int(row["classID"])
        except ValueError:
            out.bad(where, f"fold {row['fold']!r} / classID {row['classID']!r} is not a number")
            continue
        if not 1 <= fold <= FOLDS:
            out.bad(where, f"fold {fold} outside 1..{FOLDS}")
            continue
        label = row["class"].strip()
        classes.setdefault(cid, label)
        fn = row["slice_file_name"].strip()
        path = audio_dir / f"fold{fold}" / fn
        add_labelled(out, where=where, cut_id=f"{NAME}/{Path(fn).stem}",
                     audio_path=resolve_audio(path) or finder.find([fn]), expected=path, labels=[label],
                     source=NAME, domain=DOMAIN, media_id=f"freesound:{row.get('fsID', '').strip()}",
                     extra={"fold": fold})
    labels = [classes[k] for k in sorted(classes)]
    tasks = [TaskDef(f"{NAME}_fold{k}", "multiclass", "accuracy", labels, DOMAIN,
                     f"UrbanSound8K urban sound classification, {len(labels)} classes; test = fold {k}, "
                     f"val = fold {k % FOLDS + 1}, train = the other folds (report the mean over the 10 tasks).",
                     fold_assign(k, FOLDS)) for k in range(1, FOLDS + 1)]
    return DownstreamLoad(NAME, out, tasks, LAYOUT)
