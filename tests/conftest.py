"""Shared pytest fixtures. Everything is offline and CPU-only."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from conftest_ministew import tiny_ministew  # noqa: E402,F401  (session fixture: the tiny MiniStew corpus, built once)
