"""AudioSet strong labels (Hershey et al. 2021): ``audioset_train_strong.tsv`` / ``audioset_eval_strong.tsv``
(segment_id, start_time_seconds, end_time_seconds, label as a /m/ mid; segment_id = ``<ytid>_<start_ms>``),
``mid_to_display_name.tsv`` (mid TAB display name, no header) and the 10 s segments' audio, found anywhere under
the root by segment id: ``<ytid>_<start_ms>.wav``, ``Y<ytid>_<start_ms>.wav`` or any file named as a clip of
the video starting at that time (``Y<ytid>_<start>.000_<end>.000.wav``, ``<ytid>_<start:06d>.wav`` ...).

Protocol: test = the eval file's segments; the train file's segments go to val when the sha1 of the segment id
falls in its first 10%, else to train (AudioSet has no strong-label validation set). One task
``audioset_strong`` of kind "sed" (metric segment_f1): each clip holds ``custom['events'] = [[label, onset_s,
offset_s], ...]`` (display names, times relative to the clip, sorted by onset), the layout of MiniStew's
event_detection task; its ``labels`` are the clip's event classes. Classes: display names of every mid in the
two files, sorted.
"""
from __future__ import annotations

import csv

from audiolp.data.downstream.common import DownstreamLoad, TaskDef, add_labelled, by_split, hash_split
from audiolp.data.sources.common import AudioFinder, SourceLoad, no_expected_files, require_root

NAME = "audioset_strong"
DOMAIN = "sound"
FILES = {"train": "audioset_train_strong.tsv", "test": "audioset_eval_strong.tsv"}
NAMES = "mid_to_display_name.tsv"
COLUMNS = ("segment_id", "start_time_seconds", "end_time_seconds", "label")
LAYOUT = "ROOT/audioset_eval_strong.tsv, ROOT/mid_to_display_name.tsv and ROOT/audio/YxlGYtIH6U0_30000.wav"


def _read_tsv(path, out: SourceLoad) -> dict[str, list[tuple[float, float, str]]]:
    segments: dict[str, list] = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f, delimiter="\t")
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise ValueError(f"{path}: header {header} lacks column(s) {missing}; expected the published "
                             f"tab-separated {', '.join(COLUMNS)}")
        idx = [header.index(c) for c in COLUMNS]
        for values in reader:
            if not values or all(not v.strip() for v in values):
                continue
            where = f"{path}:{reader.line_num}"
            try:
                seg, on, off, mid = (values[i].strip() for i in idx)
                on, off = float(on), float(off)
            except (IndexError, ValueError):
                out.bad(where, f"expected {len(header)} tab-separated fields with numeric times")
                continue
            segments.setdefault(seg, []).append((on, off, mid))
    return segments


def load(root, val_share: float = 0.1) -> DownstreamLoad:
    root = require_root(root, NAME, list(FILES.values()))
    if not (root / FILES["test"]).is_file():
        raise no_expected_files(root, NAME, [FILES["test"], FILES["train"], NAMES])
    names = {}
    if (root / NAMES).is_file():
        with open(root / NAMES, newline="", encoding="utf-8") as f:
            names = {r[0].strip(): r[1].strip() for r in csv.reader(f, delimiter="\t") if len(r) >= 2}
    out = SourceLoad(name=NAME)
    finder = AudioFinder([root])
    out.look_in([root])
    classes = set()
    for part, fn in FILES.items():
        if not (root / fn).is_file():
            continue
        for seg, rows in _read_tsv(root / fn, out).items():
            where = f"{root / fn}:{seg}"
            ytid, _, start_ms = seg.rpartition("_")
            if not ytid or not start_ms.lstrip("-").isdigit():
                out.bad(where, f"segment_id {seg!r} is not <ytid>_<start_ms>")
                continue
            start = int(start_ms) / 1000
            events = sorted([[names.get(mid, mid), round(on, 3), round(off, 3)] for on, off, mid in rows],
                            key=lambda e: (e[1], e[2], e[0]))
            labels = sorted({e[0] for e in events})
            classes.update(labels)
            path = finder.find([seg, f"Y{seg}"])
            if path is None:
                hit = finder.find_youtube(ytid, start)
                path = hit[0] if hit else None
            split = "test" if part == "test" else hash_split(f"{NAME}:{seg}", val=val_share, test=0.0)
            add_labelled(out, where=where, cut_id=f"{NAME}/{seg}", audio_path=path, expected=root / "audio" / f"{seg}.wav",
                         labels=labels, source=NAME, domain=DOMAIN, media_id=f"yt:{ytid}", split=split,
                         media_start=start, media_end=start + 10.0, extra={"events": events})
    task = TaskDef(NAME, "sed", "segment_f1", sorted(classes), DOMAIN,
                   "AudioSet strong-label sound event detection (custom['events'] = [label, onset_s, offset_s]); "
                   "test = eval segments, val = 10% of train segments by sha1 of the segment id.", by_split)
    return DownstreamLoad(NAME, out, [task], LAYOUT)
