"""LibriCount (Stöter et al. 2018, LibriCount10-0dB): 5,720 mixtures of 5 s at 16 kHz named ``<count>_<id>.wav``
(count 0-10 speakers; the archive's ``test/`` folder, or anywhere under the root; the .json files beside
them are not needed).

Protocol (the dataset is released as one test set): a deterministic stratified 80/10/10 split: within each
count the files are ordered by the sha1 of their stem, the first 10% go to test, the next 10% to val, the rest
to train. One multiclass task ``libricount`` with labels "0" .. "10".
"""
from __future__ import annotations

import re

from audiolp.data.downstream.common import DownstreamLoad, TaskDef, add_labelled, by_split, scan_audio, stratified_hash_split
from audiolp.data.sources.common import SourceLoad, no_expected_files, require_root

NAME = "libricount"
DOMAIN = "speech"
PATTERN = re.compile(r"^(\d{1,2})_(.+)$")
LAYOUT = "ROOT/test/3_4a5d2c6f-1.wav (<count>_<id>.wav)"


def load(root) -> DownstreamLoad:
    root = require_root(root, NAME, ["<count>_<id>.wav"])
    files = scan_audio(root)
    if not files:
        raise no_expected_files(root, NAME, ["test/0_<id>.wav ... test/10_<id>.wav (<count>_<id>.wav)"])
    out = SourceLoad(name=NAME)
    out.look_in([root])
    good = []
    for path in files:
        m = PATTERN.match(path.stem)
        if not m or int(m.group(1)) > 10:
            out.bad(str(path), "name is not <count 0-10>_<id>.wav")
            continue
        good.append((path, str(int(m.group(1)))))
    assign = stratified_hash_split([(p.stem, c) for p, c in good])
    for path, count in good:
        add_labelled(out, where=str(path), cut_id=f"{NAME}/{path.stem}", audio_path=path, labels=[count],
                     source=NAME, domain=DOMAIN, media_id=f"{NAME}:{path.stem}", split=assign[path.stem])
    labels = sorted({c for _, c in good}, key=int)
    task = TaskDef(NAME, "multiclass", "accuracy", labels, DOMAIN,
                   "LibriCount speaker count (0-10); stratified 80/10/10 split by sha1 of the file stem.", by_split)
    return DownstreamLoad(NAME, out, [task], LAYOUT)
