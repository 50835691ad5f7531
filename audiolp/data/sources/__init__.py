"""Source adapters: one small module per caption corpus, each reading a local copy in the corpus' own
published layout and returning CaptionStew cuts (see ``audiolp.data.schema``).

Every adapter is ``load(root, **options) -> SourceLoad``. All of them store absolute audio paths, skip (and
list in ``malformed``) files whose data ends before the length their header declares, downmix multi-channel
audio to mono (the mean of the channels, not channel 0) and list rows without audio in ``missing``. Use ``load_source(name, root, **options)`` to pick
one by name; ``SOURCES`` lists them.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Callable

from audiolp.data.sources import audiocaps, audiosetcaps, clotho, jamendomaxcaps, musiccaps, paraspeechcaps, wavcaps
from audiolp.data.sources.common import _HEADER_POOL, check_missing_audio, resolve_pending  # noqa: F401
from audiolp.data.sources.common import (  # noqa: F401
    MEDIA_END,
    MEDIA_ID,
    MEDIA_START,
    SPLIT,
    SourceLoad,
    default_num_workers,
    normalize_media_key,
    parallel_headers,
    parse_youtube_clip,
)

SOURCES: dict[str, Callable[..., SourceLoad]] = {
    "audiocaps": audiocaps.load,
    "clotho": clotho.load,
    "wavcaps": wavcaps.load,
    "musiccaps": musiccaps.load,
    "audiosetcaps": audiosetcaps.load,
    "paraspeechcaps": paraspeechcaps.load,
    "jamendomaxcaps": jamendomaxcaps.load,
}


def load_source(name: str, root: str | Path, num_workers: int | None = 1, **options) -> SourceLoad:
    """Load corpus ``name`` from ``root`` with adapter ``options`` (see each module's ``load``). Raises
    KeyError listing the known names for an unknown corpus, TypeError listing the accepted options.

    ``num_workers`` > 1 reads the audio headers with that many threads (None: ``min(8,
    cpu_count)``); the result is identical to the serial load. Inside an enclosing ``parallel_headers``
    block its pool is reused. When more than half of the rows find no audio, the load carries a warning naming
    the folders searched and an expected path (``check_missing_audio``)."""
    key = name.strip().lower()
    if key not in SOURCES:
        raise KeyError(f"unknown caption source {name!r}; known sources: {', '.join(sorted(SOURCES))}")
    loader = SOURCES[key]
    accepted = [p for p in inspect.signature(loader).parameters if p != "root"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(f"source {key!r}: unknown option(s) {unknown}; accepted: {accepted}")
    if _HEADER_POOL.get() is not None:
        out = resolve_pending(loader(root, **options))
    else:
        with parallel_headers(num_workers):
            out = resolve_pending(loader(root, **options))
    check_missing_audio(out)  # most rows without audio: the audio is not where the adapter looks
    return out
