"""AudioCaps retrieval (Kim et al. 2019): ``test.csv`` (columns ``audiocap_id,youtube_id,start_time,caption``, one
row per caption, 5 captions per test clip) and the 10 s clips' audio under ``audio/`` (or the root), named by
YouTube id as the download scripts name them (``<youtube_id>.wav``, ``Y<youtube_id>.wav``,
``<youtube_id>_<start_time>.wav``, AudioSet's ``Y<youtube_id>_<start>.000_<end>.000.flac``, ``<audiocap_id>.wav``,
or the whole video, cut to the clip): the lookup of the caption-corpus adapter, ``audiolp.data.sources.audiocaps``.

Protocol: one retrieval task ``audiocaps_retrieval`` whose test split is the csv's test clips, each cut holding its
captions in ``custom['caption']``. ``splits`` may add ``train`` / ``val`` (train.csv / val.csv, their audio
present) as the task's train / val splits, the default LiT alignment data; by default only the test split is read
(a copy of the repository's csvs usually comes without the 50k training clips' audio).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from audiolp.data.downstream.common import DownstreamLoad, TaskDef, by_split
from audiolp.data.sources import audiocaps as source

NAME = "audiocaps_retrieval"
DOMAIN = "sound"
LAYOUT = "ROOT/test.csv (audiocap_id,youtube_id,start_time,caption) and ROOT/audio/<youtube_id>.wav"


def load(root, splits: Sequence[str] = ("test",)) -> DownstreamLoad:
    splits = tuple(splits)
    bad = sorted(set(splits) - set(source.SPLITS))
    if bad or "test" not in splits:
        raise ValueError(f"{NAME}: splits {list(splits)}; use 'test' plus any of 'train', 'val'")
    root = Path(root)
    if root.is_dir() and not (root / "test.csv").is_file():
        raise FileNotFoundError(f"{NAME}: {root / 'test.csv'} does not exist; expected layout: {LAYOUT}. Fix: point "
                                "--source at the folder holding AudioCaps' test.csv (github.com/cdjkim/audiocaps, "
                                "dataset/) with the clips' audio unpacked under it")
    load = source.load(root, splits=splits)
    task = TaskDef(NAME, "retrieval", "R@k", [], DOMAIN,
                   "AudioCaps audio-text retrieval (5 captions per test clip): R@1/5/10 and mAP@10 both ways.",
                   by_split)
    return DownstreamLoad(NAME, load, [task], LAYOUT)
