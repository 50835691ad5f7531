"""VGGSound (Chen et al. 2020): ``vggsound.csv`` (no header: ytid, start_seconds, label, split train/test) and the
10 s clips' audio found anywhere under the root by name: ``<ytid>_<start:06d>.wav`` (the release's video names
with the audio extracted), ``<ytid>_<start>.wav``, or any file named as a clip of that video starting at
start_seconds (``Y<ytid>_<start>.000_<end>.000.flac`` ...).

Protocol: test = the csv's test rows; the train rows go to val when the sha1 of ``<ytid>_<start>`` falls in
its first 10%, else to train (VGGSound has no validation set). One multiclass task ``vggsound`` (309 classes,
sorted).
"""
from __future__ import annotations

import csv

from audiolp.data.downstream.common import DownstreamLoad, TaskDef, add_labelled, by_split, hash_split
from audiolp.data.sources.common import AudioFinder, SourceLoad, no_expected_files, require_root

NAME = "vggsound"
DOMAIN = "sound"
CSV = "vggsound.csv"
LAYOUT = "ROOT/vggsound.csv and ROOT/audio/---g-f_I2yQ_000001.wav"


def load(root, val_share: float = 0.1) -> DownstreamLoad:
    root = require_root(root, NAME, [CSV])
    csv_path = root / CSV
    if not csv_path.is_file():
        raise no_expected_files(root, NAME, [CSV, "audio/<ytid>_<start:06d>.wav"])
    out = SourceLoad(name=NAME)
    finder = AudioFinder([root])
    out.look_in([root])
    classes = set()
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        for values in reader:
            if not values or all(not v.strip() for v in values):
                continue
            where = f"{csv_path}:{reader.line_num}"
            if len(values) != 4 or values[3].strip() not in ("train", "test") or not values[1].strip().isdigit():
                if reader.line_num == 1 and values and values[0].strip().lower() in ("ytid", "youtube_id"):
                    continue  # a copy with a header line
                out.bad(where, "expected 'ytid,start_seconds,label,train|test'")
                continue
            ytid, start, label, part = values[0].strip(), int(values[1]), values[2].strip(), values[3].strip()
            classes.add(label)
            key = f"{ytid}_{start:06d}"
            path = finder.find([key, f"{ytid}_{start}", f"Y{ytid}_{start}"])
            if path is None:
                hit = finder.find_youtube(ytid, start)
                path = hit[0] if hit else None
            split = "test" if part == "test" else hash_split(f"{NAME}:{key}", val=val_share, test=0.0)
            add_labelled(out, where=where, cut_id=f"{NAME}/{key}", audio_path=path, expected=root / "audio" / f"{key}.wav",
                         labels=[label], source=NAME, domain=DOMAIN, media_id=f"yt:{ytid}", split=split,
                         media_start=float(start), media_end=float(start + 10))
    task = TaskDef(NAME, "multiclass", "accuracy", sorted(classes), DOMAIN,
                   "VGGSound audio classification; test = official test rows, val = 10% of train rows by sha1.", by_split)
    return DownstreamLoad(NAME, out, [task], LAYOUT)
