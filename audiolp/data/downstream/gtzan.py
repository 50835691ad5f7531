"""GTZAN (Tzanetakis & Cook 2002): ``genres/<genre>/<genre>.00000.wav`` (or the original ``.au``; the Kaggle copy's
``genres_original/`` works too), 10 genres x 100 clips of 30 s at 22,050 Hz.

Protocol: when the fault-filtered split lists (Kereliuk et al. 2015, Sturm's corrections: 443 / 197 / 290
clips) are at the root as ``train_filtered.txt``, ``valid_filtered.txt``, ``test_filtered.txt`` (lines like
``blues/blues.00012.au``; matched by file stem) they define the split and clips they do not list are left out
(counted as excluded). Otherwise a deterministic stratified 80/10/10 split: within each genre the clips are
ordered by the sha1 of their stem; the first 10% go to test, the next 10% to val, the rest to train. One
multiclass task ``gtzan`` (genres sorted).
"""
from __future__ import annotations

from pathlib import Path

from audiolp.data.downstream.common import DownstreamLoad, TaskDef, add_labelled, by_split, scan_audio, stratified_hash_split
from audiolp.data.sources.common import SourceLoad, no_expected_files, require_root

NAME = "gtzan"
DOMAIN = "music"
GENRE_DIRS = ("genres", "genres_original", "Data/genres_original")
FILTERED = {"train": "train_filtered.txt", "val": "valid_filtered.txt", "test": "test_filtered.txt"}
LAYOUT = "ROOT/genres/blues/blues.00000.wav"


def load(root) -> DownstreamLoad:
    root = require_root(root, NAME, ["genres/"])
    base = next((root / d for d in GENRE_DIRS if (root / d).is_dir()), None)
    files = []
    if base is not None:
        files = [(p, p.parent.name) for g in sorted(x for x in base.iterdir() if x.is_dir()) for p in scan_audio(g)]
    if not files:
        raise no_expected_files(root, NAME, [f"{d}/blues/blues.00000.wav" for d in GENRE_DIRS])
    out = SourceLoad(name=NAME)
    out.look_in([base])
    filtered = None
    if all((root / fn).is_file() for fn in FILTERED.values()):
        filtered = {}
        for split, fn in FILTERED.items():
            for line in (root / fn).read_text(encoding="utf-8").splitlines():
                if line.strip():
                    filtered[Path(line.strip()).stem] = split
    assign = filtered if filtered is not None else stratified_hash_split([(p.stem, g) for p, g in files])
    for path, genre in files:
        split = assign.get(path.stem)
        if split is None:
            out.rows += 1
            out.excluded += 1
            continue
        add_labelled(out, where=str(path), cut_id=f"{NAME}/{path.stem}", audio_path=path, labels=[genre],
                     source=NAME, domain=DOMAIN, media_id=f"{NAME}:{path.stem}", split=split)
    genres = sorted({g for _, g in files})
    rule = "fault-filtered split" if filtered is not None else "stratified 80/10/10 split by sha1 of the file stem"
    task = TaskDef(NAME, "multiclass", "accuracy", genres, DOMAIN, f"GTZAN genre ({len(genres)} classes); {rule}.", by_split)
    return DownstreamLoad(NAME, out, [task], LAYOUT)
