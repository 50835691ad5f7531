"""Clotho retrieval (Drossos et al. 2020, v2.1): ``clotho_captions_evaluation.csv`` (columns
``file_name,caption_1,...,caption_5``) and the evaluation audio in ``evaluation/`` (as the Zenodo archives unpack),
read by the caption-corpus adapter ``audiolp.data.sources.clotho`` (names compared in Unicode NFC).

Protocol: one retrieval task ``clotho_retrieval`` whose test split is the evaluation clips, 5 captions each in
``custom['caption']``. ``splits`` may add ``development`` / ``validation`` (their csv and audio folder present) as
the task's train / val splits, the default LiT alignment data; by default only the evaluation split is read.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from audiolp.data.downstream.common import DownstreamLoad, TaskDef, custom
from audiolp.data.sources import clotho as source

NAME = "clotho_retrieval"
DOMAIN = "sound"
CSV = "clotho_captions_evaluation.csv"
LAYOUT = f"ROOT/{CSV} (file_name,caption_1..caption_5) and ROOT/evaluation/<file_name>"
TASK_SPLIT = {"development": "train", "validation": "val", "evaluation": "test"}


def assign(cut) -> str | None:
    return TASK_SPLIT.get(custom(cut).get("split"))


def load(root, splits: Sequence[str] = ("evaluation",)) -> DownstreamLoad:
    splits = tuple(splits)
    bad = sorted(set(splits) - set(source.SPLITS))
    if bad or "evaluation" not in splits:
        raise ValueError(f"{NAME}: splits {list(splits)}; use 'evaluation' plus any of 'development', 'validation'")
    root = Path(root)
    if root.is_dir() and not (root / CSV).is_file():
        raise FileNotFoundError(f"{NAME}: {root / CSV} does not exist; expected layout: {LAYOUT}. Fix: point --source "
                                "at the folder where Clotho's csv files and its evaluation/ audio folder were "
                                "unpacked (zenodo.org/records/4783391)")
    load = source.load(root, splits=splits)
    task = TaskDef(NAME, "retrieval", "R@k", [], DOMAIN,
                   "Clotho audio-text retrieval (5 captions per evaluation clip): R@1/5/10 and mAP@10 both ways.",
                   assign)
    return DownstreamLoad(NAME, load, [task], LAYOUT)
