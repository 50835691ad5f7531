"""Downstream evaluation datasets: one adapter per dataset of the paper suite's reconstruction, each reading a
local copy in its published layout, plus two ways to bring a user task (``folder``: audio + csv; ``manifest``:
a labelled lhotse manifest). ``prepare_task(name, source, out_dir, **options)`` writes the split manifests and
merges the tasks into ``out_dir/tasks.json`` (see ``audiolp.data.tasks``; the format of MiniStew's registry).

Each module's docstring gives the layout it reads and the split protocol it implements.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Callable

from audiolp.data.downstream import (audiocaps_retrieval, audioset_strong, clotho_retrieval, cremad, esc50, fsd50k,
                                     gtzan, libricount, magnatagatune, nsynth, urbansound8k, user, vggsound, vocalsound,
                                     voxceleb1)
from audiolp.data.downstream.common import DownstreamLoad, TaskDef, write_tasks  # noqa: F401
from audiolp.data.sources.common import parallel_headers, resolve_pending

ADAPTERS: dict[str, Callable[..., DownstreamLoad]] = {
    "esc50": esc50.load,
    "urbansound8k": urbansound8k.load,
    "fsd50k": fsd50k.load,
    "voxceleb1": voxceleb1.load,
    "cremad": cremad.load,
    "magnatagatune": magnatagatune.load,
    "nsynth": nsynth.load,
    "gtzan": gtzan.load,
    "vocalsound": vocalsound.load,
    "libricount": libricount.load,
    "audioset_strong": audioset_strong.load,
    "vggsound": vggsound.load,
    "audiocaps_retrieval": audiocaps_retrieval.load,
    "clotho_retrieval": clotho_retrieval.load,
    "folder": user.load_folder,
    "manifest": user.load_manifest_task,
}


def load_task_data(name: str, source, num_workers: int | None = 1, **options) -> DownstreamLoad:
    """Run adapter ``name`` on ``source`` with its ``options`` (None values are dropped). ``num_workers`` > 1
    reads audio headers in threads (same result)."""
    key = name.strip().lower().replace("-", "_")
    if key not in ADAPTERS:
        raise ValueError(f"unknown downstream dataset {name!r}; use one of {', '.join(ADAPTERS)}")
    loader = ADAPTERS[key]
    options = {k: v for k, v in options.items() if v is not None}
    accepted = list(inspect.signature(loader).parameters)[1:]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"{key}: option(s) {unknown} do not apply; it accepts {accepted}")
    with parallel_headers(num_workers):
        dl = loader(Path(source), **options)
        resolve_pending(dl.load)
    return dl


def prepare_task(name: str, source, out_dir, num_workers: int | None = 1, **options):
    """Load dataset ``name`` from ``source`` and write its task(s) into ``out_dir``; returns (specs, summary lines)."""
    return write_tasks(load_task_data(name, source, num_workers=num_workers, **options), out_dir)
