"""Shared pytest fixtures. Everything is offline and CPU-only."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from conftest_ministew import tiny_ministew  # noqa: E402,F401  (session fixture: the tiny MiniStew corpus, built once)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one intra-op thread; on 2 cores shared with other work, two threads thrash.
    Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
