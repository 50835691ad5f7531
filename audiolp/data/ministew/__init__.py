"""MiniStew: a built-in offline multi-domain caption corpus (speech, music, sound) from PyPI and Debian sources,
with held-out downstream tasks (MiniBench).

    build_ministew(out_dir, profile="tiny" | "full", seed=0, cache_dir=None, jobs=None) -> Path
    data_card(out_dir) -> str                      (markdown)
    baseline_probe(out_dir / "tasks.json", task)   (fbank mean+std + logistic regression reference)
"""
from audiolp.data.ministew.build import build_ministew  # noqa: F401
from audiolp.data.ministew.card import data_card  # noqa: F401
from audiolp.data.ministew.minibench import BaselineConfig, baseline_probe  # noqa: F401
from audiolp.data.ministew.plan import PROFILES, ProfileConfig  # noqa: F401
