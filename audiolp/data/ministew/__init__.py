"""MiniStew: a built-in offline multi-domain caption corpus (speech, music, sound) from PyPI and Debian sources,
with held-out downstream tasks (MiniBench).

    build_ministew(out_dir, profile="tiny" | "full", seed=0, cache_dir=None, jobs=None) -> Path
    data_card(out_dir) -> str                      (markdown)

MiniBench's reference numbers (fbank mean+std, logistic regression) come from the evaluation layer:
``audiolp.eval.probe.probe_registry(FbankFrames(), out_dir / "tasks.json", cache)``.
"""
from audiolp.data.ministew.build import build_ministew  # noqa: F401
from audiolp.data.ministew.card import data_card  # noqa: F401
from audiolp.data.ministew.plan import PROFILES, ProfileConfig  # noqa: F401
