"""MagnaTagATune (Law et al. 2009): ``annotations_final.csv`` (tab-separated, quoted: clip_id, 188 tag columns of
0/1, mp3_path) and the 29 s mp3 clips at ``<root>/<mp3_path>`` (``f/artist-album-01-title-30-59.mp3``; also
under ``mp3/``).

Protocol: the usual split by the clip's folder (first hex digit of mp3_path): 0-b train, c val, d-f test. One
multilabel task ``magnatagatune`` over the 50 most frequent tags (counted over all rows of the csv; ties keep
the csv's column order), metric mAP. Clips with none of the 50 tags are left out (counted as excluded), as in the
common top-50 benchmark.
"""
from __future__ import annotations

import csv
from collections import Counter

from audiolp.data.downstream.common import DownstreamLoad, TaskDef, add_labelled, by_split
from audiolp.data.sources.common import AudioFinder, SourceLoad, no_expected_files, require_root, resolve_audio

NAME = "magnatagatune"
DOMAIN = "music"
CSV = "annotations_final.csv"
TOP = 50
LAYOUT = "ROOT/annotations_final.csv and ROOT/f/american_bach_soloists-j_s__bach_solo_cantatas-01-bwv54__i_aria-30-59.mp3"


def split_of(mp3_path: str) -> str | None:
    d = mp3_path.strip()[:1].lower()
    if d and d in "0123456789ab":
        return "train"
    return {"c": "val", "d": "test", "e": "test", "f": "test"}.get(d)


def load(root, top: int = TOP) -> DownstreamLoad:
    root = require_root(root, NAME, [CSV])
    csv_path = root / CSV
    if not csv_path.is_file():
        raise no_expected_files(root, NAME, [CSV, "f/<clip>.mp3"])
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    if not rows:
        raise ValueError(f"{csv_path}: empty; expected a tab-separated header 'clip_id<TAB><188 tags><TAB>mp3_path'")
    header = [h.strip() for h in rows[0]]
    if header[:1] != ["clip_id"] or header[-1:] != ["mp3_path"]:
        raise ValueError(f"{csv_path}: header starts {header[:2]} and ends {header[-1:]}; expected tab-separated "
                         "'clip_id', the tag columns, 'mp3_path' (the published annotations_final.csv)")
    tags = header[1:-1]
    out = SourceLoad(name=NAME)
    good = []
    counts: Counter = Counter()
    for i, values in enumerate(rows[1:], 2):
        where = f"{csv_path}:{i}"
        if not values or all(not v.strip() for v in values):
            continue
        if len(values) != len(header):
            out.bad(where, f"{len(values)} fields, expected {len(header)}")
            continue
        on = [t for t, v in zip(tags, values[1:-1]) if v.strip() == "1"]
        counts.update(on)
        good.append((where, values[0].strip(), values[-1].strip(), on))
    order = {t: k for k, t in enumerate(tags)}
    top_tags = sorted((t for t in tags if counts[t] > 0), key=lambda t: (-counts[t], order[t]))[:top]
    keep = set(top_tags)
    finder = AudioFinder([root])
    out.look_in([root])
    for where, clip_id, mp3, on in good:
        split = split_of(mp3)
        labels = [t for t in on if t in keep]
        if split is None or not mp3:
            out.bad(where, f"mp3_path {mp3!r} does not start with a hex folder 0-f")
            continue
        if not labels:
            out.rows += 1
            out.excluded += 1
            continue
        path = resolve_audio(root / mp3) or resolve_audio(root / "mp3" / mp3) or finder.find([mp3.rsplit("/", 1)[-1]])
        add_labelled(out, where=where, cut_id=f"{NAME}/{clip_id}", audio_path=path, expected=root / mp3,
                     labels=labels, source=NAME, domain=DOMAIN, media_id=f"{NAME}:{clip_id}", split=split)
    task = TaskDef(NAME, "multilabel", "mAP", top_tags, DOMAIN,
                   f"MagnaTagATune top-{len(top_tags)} tags; split by mp3 folder: 0-b train, c val, d-f test.", by_split)
    return DownstreamLoad(NAME, out, [task], LAYOUT)
