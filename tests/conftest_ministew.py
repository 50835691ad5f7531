"""Session fixture: the tiny MiniStew corpus, built once into <repo>/.cache/ministew-tiny and reused.

Import it from tests/conftest.py (``from tests.conftest_ministew import tiny_ministew``) or list this module
in ``pytest_plugins``. A complete build (build_info.json matching profile, seed and the MiniStew code) is
returned at once; an interrupted one resumes from its per-unit done markers.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY_DIR = Path(os.environ.get("AUDIOLP_MINISTEW_TINY", REPO / ".cache" / "ministew-tiny"))


@pytest.fixture(scope="session")
def tiny_ministew() -> Path:
    from audiolp.data.ministew import build_ministew

    return build_ministew(TINY_DIR, profile="tiny", seed=0, jobs=min(2, os.cpu_count() or 1), progress=False)
