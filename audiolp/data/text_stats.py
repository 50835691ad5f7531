"""Caption text statistics: vocabulary size and Distinct-n, for any CaptionStew manifest.

Tokens are lowercased word tokens from a simple regex (letters/digits, with inner apostrophes: "dog's" is
one token); punctuation is dropped. Distinct-n = distinct n-grams / total n-grams over all captions, where
n-grams never cross caption boundaries (a caption of L tokens has max(L - n + 1, 0) n-grams).

Per source, clips, hours and domains count under the clip's ``source``; captions, tokens, vocabulary and
Distinct-n count each caption under its own source: ``custom['caption_sources']`` (a list parallel to
``caption``, written by the stew on clips that absorbed a duplicate's captions) when present and of the
right length, else the clip's source. So a corpus whose clips were all merged into another corpus' clips
still appears, with 0 clips and its captions.
"""
from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterable

from lhotse.cut import Cut

from audiolp.data.schema import _custom, cut_captions, cut_domain, cut_source

TOKEN_RE = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def tokenize(text: str) -> list[str]:
    return TOKEN_RE.findall(text.lower())


@dataclass
class _TextAccumulator:
    """Streaming counts for one group of captions. N-grams are stored as tuples of word ids (ints) so 10M
    captions fit in memory."""

    clips: int = 0
    seconds: float = 0.0
    captions: int = 0
    tokens: int = 0
    bigrams_total: int = 0
    vocab: set = field(default_factory=set)
    bigrams: set = field(default_factory=set)
    domains: Counter = field(default_factory=Counter)

    def add_clip(self, cut: Cut) -> None:
        self.clips += 1
        self.seconds += float(cut.duration)
        self.domains[cut_domain(cut)] += 1

    def add_caption(self, ids: list[int]) -> None:
        """One caption as word ids."""
        self.captions += 1
        self.tokens += len(ids)
        self.vocab.update(ids)
        if len(ids) > 1:
            self.bigrams_total += len(ids) - 1
            self.bigrams.update(zip(ids, ids[1:]))

    def result(self) -> dict:
        return {
            "clips": self.clips,
            "hours": self.seconds / 3600.0,
            "captions": self.captions,
            "captions_per_clip": self.captions / self.clips if self.clips else 0.0,
            "tokens": self.tokens,
            "words_per_caption": self.tokens / self.captions if self.captions else 0.0,
            "vocab_size": len(self.vocab),
            "distinct_1": len(self.vocab) / self.tokens if self.tokens else 0.0,
            "distinct_2": len(self.bigrams) / self.bigrams_total if self.bigrams_total else 0.0,
            "domains": dict(sorted(self.domains.items())),
        }


def caption_sources(cut: Cut) -> list[str]:
    """The source of each caption of ``cut``: ``custom['caption_sources']`` when it is a list of strings
    parallel to the captions, else the clip's source for every caption."""
    caps = cut_captions(cut)
    given = _custom(cut).get("caption_sources")
    if isinstance(given, list) and len(given) == len(caps) and all(isinstance(x, str) and x for x in given):
        return list(given)
    return [cut_source(cut)] * len(caps)


def caption_statistics(cuts: Iterable[Cut]) -> dict:
    """Statistics per source and overall, in one pass over ``cuts`` (a CutSet, lazy or not, or any
    iterable of CaptionStew cuts). Clips count under ``custom['source']``, captions under their own source
    (see the module docstring).

    Returns ``{"overall": {...}, "sources": {source: {...}}}`` where each entry has clips, hours, captions,
    captions_per_clip, tokens, words_per_caption, vocab_size, distinct_1, distinct_2 and domains (clip
    counts per domain).
    """
    word_ids: dict[str, int] = {}
    overall = _TextAccumulator()
    per_source: dict[str, _TextAccumulator] = defaultdict(_TextAccumulator)
    for cut in cuts:
        overall.add_clip(cut)
        per_source[cut_source(cut)].add_clip(cut)
        for caption, source in zip(cut_captions(cut), caption_sources(cut)):
            ids = [word_ids.setdefault(t, len(word_ids)) for t in tokenize(caption)]
            overall.add_caption(ids)
            per_source[source].add_caption(ids)
    return {
        "overall": overall.result(),
        "sources": {name: acc.result() for name, acc in sorted(per_source.items())},
    }


def stats_table(stats: dict) -> str:
    """A printable table of ``caption_statistics`` output (or a stew's stats.json): one row per source, then
    the total. When the stats carry per-input build counts (``inputs``), a second table lists them."""
    heads = ("source", "clips", "hours", "captions", "vocab", "distinct-1", "distinct-2")

    def fmt(entry: dict) -> list[str]:
        return [
            f"{entry['clips']:,}",
            f"{entry['hours']:.2f}",
            f"{entry['captions']:,}",
            f"{entry['vocab_size']:,}",
            f"{entry['distinct_1']:.4f}",
            f"{entry['distinct_2']:.4f}",
        ]

    rows = [[name, *fmt(e)] for name, e in stats.get("sources", {}).items()]
    rows.append(["TOTAL", *fmt(stats["overall"])])
    text = _render(heads, rows, sep_before_last=True)
    inputs = stats.get("inputs")
    if inputs:
        keys = ("rows", "loaded", "missing_audio", "malformed", "empty_captions", "dropped_eval_overlap",
                "dropped_excluded", "duplicates_merged", "kept")
        irows = [[name, *[f"{d.get(k, 0):,}" for k in keys]] for name, d in inputs.items()]
        text += "\n\n" + _render(("input", *[k.replace("_", " ") for k in keys]), irows)
    for label, messages in (stats.get("build") or {}).get("warnings", {}).items():
        text += "".join(f"\nWARNING [{label}] {m}" for m in messages)
    return text


def _render(heads, rows, sep_before_last: bool = False) -> str:
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) for i, h in enumerate(heads)]

    def line(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [line(heads), "  ".join("-" * w for w in widths)]
    for i, r in enumerate(rows):
        if sep_before_last and i == len(rows) - 1 and len(rows) > 1:
            out.append("  ".join("-" * w for w in widths))
        out.append(line(r))
    return "\n".join(out)
