"""Scale points and nested, stratified, seeded subsets of a caption corpus.

A scale counts caption pairs by default (``unit="captions"``), as the paper does: its full CaptionStew is
10.7M captions on 9.3M clips and the authors' 400K subset holds ~361k clips. "400K" is then the smallest
nested, stratified set of clips whose captions reach 400,000; each clip keeps all of its captions (training
samples one per clip per step). ``unit="clips"`` counts clips instead (a "400K" subset has 400,000 clips),
which keeps a subset's audio hours proportional to its size.

``select_scale`` is

* nested: for one seed, every clip of a smaller subset is in every larger one. Each source's clips are
  ranked by a seeded hash of the cut id and a subset takes a prefix of each ranking (with captions: the
  shortest prefix whose captions reach the source's quota), so nestedness holds as long as no source's quota
  shrinks when n grows;
* stratified: each source's quota is its share of the corpus' units (clips or captions), to within one unit
  (floor or ceil of share * n), and the quotas sum to exactly n. With clips the subset has exactly n clips;
  with captions it has at least n captions (a source's last clip may carry captions past its quota).
  Largest-remainder rounding would satisfy that for one n but can *take a unit away* from a source when n
  grows (the Alabama paradox), breaking nestedness. The quotas therefore come from the Balinski-Young quota
  method, which is house-monotone and always within quota;
* deterministic for a seed; different seeds give different subsets.

On a corpus smaller than the paper's, ``reference_total=PAPER_FULL_PAIRS`` (10.7M captions) maps a paper
scale to the same fraction of this corpus' units (clips or captions, by ``unit``).
"""
from __future__ import annotations

import hashlib
import heapq
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from lhotse import CutSet
from lhotse.cut import Cut

from audiolp.data.schema import cut_captions, cut_source

PAPER_FULL_PAIRS = 10_700_000  # captions (caption pairs) in the paper's full CaptionStew
UNITS = ("captions", "clips")
PAPER_SCALES = ("400K", "1M", "4M", "full")
_SCALE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([kKmM]?)\s*$")
_MULT = {"": 1, "k": 1_000, "m": 1_000_000}
ACCEPTED = "'full' (or 'all'), a positive integer (e.g. 250000) or '<number>K' / '<number>M' (e.g. '400K', '1M', '10.7M')"


def parse_scale(s: str | int) -> int | None:
    """'400K' -> 400_000, '1M' -> 1_000_000, '10.7M' -> 10_700_000, 'full' -> None (everything); plain
    ints pass through. Raises ValueError naming the accepted forms for anything else."""
    if isinstance(s, bool):
        raise ValueError(f"scale {s!r} is not valid; use {ACCEPTED}")
    if isinstance(s, int):
        if s <= 0:
            raise ValueError(f"scale {s} must be positive; use {ACCEPTED}")
        return s
    if not isinstance(s, str):
        raise ValueError(f"scale {s!r} ({type(s).__name__}) is not valid; use {ACCEPTED}")
    if s.strip().lower() in ("full", "all"):
        return None
    m = _SCALE_RE.match(s)
    if not m:
        raise ValueError(f"scale {s!r} is not valid; use {ACCEPTED}")
    # Exact decimal arithmetic: float('10.7') * 1e6 is not an integer.
    number, unit = m.group(1), m.group(2).lower()
    whole, _, frac = number.partition(".")
    mult = _MULT[unit]
    digits = int((whole or "0") + frac)
    scale_down = 10 ** len(frac)
    if (digits * mult) % scale_down:
        raise ValueError(f"scale {s!r} is not a whole number of clips; use {ACCEPTED}")
    value = digits * mult // scale_down
    if value <= 0:
        raise ValueError(f"scale {s!r} must be positive; use {ACCEPTED}")
    return value


def format_scale(n: int | None) -> str:
    """Inverse of parse_scale for display: 400000 -> '400K', 10700000 -> '10.7M', None -> 'full'."""
    if n is None:
        return "full"
    for unit, mult in (("M", 1_000_000), ("K", 1_000)):
        if n >= mult and (n * 10) % mult == 0:
            v = n / mult
            return f"{v:g}{unit}"
    return str(n)


@dataclass
class ScaleInfo:
    requested: int | None  # the parsed scale, in ``unit`` (None: full)
    label: str  # as given, e.g. "400K"
    available: int  # clips in the corpus
    selected: int  # clips in the subset
    fraction: float  # selected / available, in ``unit``
    mapped: bool  # True when a paper scale was mapped onto a smaller corpus through reference_total
    reference_total: int | None
    seed: int
    captions: int = 0  # captions on the selected clips (the paper's pairs)
    per_source: dict[str, int] = field(default_factory=dict)  # selected clips per source
    available_per_source: dict[str, int] = field(default_factory=dict)  # clips per source
    unit: str = "captions"  # what the scale counts: "captions" or "clips"
    available_captions: int = 0  # captions in the corpus
    target: int = 0  # units asked of this corpus (after mapping), reached or exceeded by the subset
    captions_per_source: dict[str, int] = field(default_factory=dict)  # selected captions per source

    @property
    def clips(self) -> int:
        return self.selected

    def describe(self) -> str:
        both = f"{self.selected:,} clips, {self.captions:,} captions"
        of = f"{self.available:,} clips, {self.available_captions:,} captions"
        if self.requested is None:
            return f"scale full: all {both}"
        if self.mapped:
            return (
                f"scale {self.label} ({self.unit}) mapped onto this corpus: {self.requested:,} / "
                f"{self.reference_total:,} = {self.target:,} of its {of} -> {both} (seed {self.seed})"
            )
        return f"scale {self.label} ({self.unit}): {both} of {of} (seed {self.seed})"


def apportion(counts: Mapping[str, int], n: int) -> dict[str, int]:
    """Split ``n`` seats among groups of sizes ``counts`` by the Balinski-Young quota method.

    Seats are handed out one at a time; the next goes to the group with the largest counts[g] / (a_g + 1)
    among those still within upper quota (a_g + 1 <= ceil(share_g * h) for house size h). The result is
    house-monotone (no group loses a seat when n grows) and every a_g is floor or ceil of share_g * n.
    Integer arithmetic only; ties go to the group name that sorts first. O(n log k).
    """
    total = sum(counts.values())
    if n > total:
        raise ValueError(f"cannot take {n:,} clips from {total:,}")
    names = sorted(g for g, c in counts.items() if c > 0)
    alloc = {g: 0 for g in counts}
    if n == total:
        return {g: counts[g] for g in counts}
    # A group with a seats is eligible at house size h iff a * total < counts * h, i.e. from
    # h = a * total // counts + 1 on. `waiting` holds (eligible-from, name); `ready` is a max-heap on
    # counts/(a+1) (negated, exact as a float comparison for these magnitudes), ties by name.
    waiting = [(1, g) for g in names]  # no seats yet: eligible from h = 1
    heapq.heapify(waiting)
    ready: list = []
    order = {g: i for i, g in enumerate(names)}
    for h in range(1, n + 1):
        while waiting and waiting[0][0] <= h:
            _, g = heapq.heappop(waiting)
            heapq.heappush(ready, (-counts[g] / (alloc[g] + 1), order[g], g))
        _, _, g = heapq.heappop(ready)
        alloc[g] += 1
        if alloc[g] < counts[g]:
            heapq.heappush(waiting, (alloc[g] * total // counts[g] + 1, g))
    return alloc


def _rank_key(seed: int, cut_id: str) -> bytes:
    return hashlib.blake2b(f"{seed}\x00{cut_id}".encode(), digest_size=8).digest()


def select_scale(
    cuts: Iterable[Cut],
    scale: str | int | None,
    seed: int = 0,
    reference_total: int | None = None,
    unit: str = "captions",
) -> tuple[CutSet, ScaleInfo]:
    """The nested, stratified subset of ``cuts`` at ``scale`` (see the module docstring).

    ``unit``: what the scale counts, "captions" (the paper's pairs; default) or "clips". With
    ``reference_total`` (e.g. PAPER_FULL_PAIRS) and a corpus with fewer units than it, a scale is read as a
    fraction of the paper's corpus: 400K -> round(400K / 10.7M * this corpus' units) (at least one), and the
    returned ScaleInfo has mapped=True. Without it, asking for more units than exist raises ValueError naming
    both numbers. The subset keeps the input order.
    """
    if unit not in UNITS:
        raise ValueError(f"select_scale: unit={unit!r}; use one of {UNITS}")
    label = "full" if scale is None else str(scale)
    n = None if scale is None else parse_scale(scale)
    cuts = list(cuts)
    n_caps = {c.id: len(cut_captions(c)) for c in cuts}
    by_source: dict[str, list[Cut]] = defaultdict(list)
    for c in cuts:
        by_source[cut_source(c)].append(c)
    available = {s: len(v) for s, v in sorted(by_source.items())}
    weight = (lambda c: n_caps[c.id]) if unit == "captions" else (lambda c: 1)  # noqa: E731
    units = {s: sum(weight(c) for c in by_source[s]) for s in available}
    total = sum(units.values())
    mapped = False
    if n is None:
        target = total
    elif reference_total is not None and total < reference_total:
        if n > reference_total:
            raise ValueError(
                f"scale {label} ({n:,} {unit}) is larger than the reference corpus ({reference_total:,}); "
                f"use at most {format_scale(reference_total)} or 'full'"
            )
        mapped = True
        target = max(1, round(n * total / reference_total)) if total else 0
    else:
        if n > total:
            raise ValueError(
                f"scale {label} asks for {n:,} {unit} but the corpus has only {total:,}; use a smaller scale, "
                f"'full', or pass reference_total (e.g. PAPER_FULL_PAIRS) to map paper scales onto a small corpus"
            )
        target = n
    quotas = apportion(units, target)
    chosen: set[str] = set()
    per_source: dict[str, int] = {}
    for source in available:
        ranked = sorted(by_source[source], key=lambda c: _rank_key(seed, c.id))
        # the shortest prefix whose units reach the quota: longer for a larger quota, so subsets nest
        k, got = 0, 0
        while got < quotas[source] and k < len(ranked):
            got += weight(ranked[k])
            k += 1
        chosen.update(c.id for c in ranked[:k])
        per_source[source] = k
    kept = [c for c in cuts if c.id in chosen]
    subset = CutSet.from_cuts(kept)
    captions_per_source = {s: 0 for s in available}
    for c in kept:
        captions_per_source[cut_source(c)] += n_caps[c.id]
    captions = sum(captions_per_source.values())
    available_captions = sum(n_caps.values())
    selected_units = captions if unit == "captions" else len(chosen)
    info = ScaleInfo(
        requested=n,
        label=label,
        available=len(cuts),
        selected=len(chosen),
        fraction=selected_units / total if total else 0.0,
        mapped=mapped,
        reference_total=reference_total,
        seed=seed,
        captions=captions,
        per_source=per_source,
        available_per_source=available,
        unit=unit,
        available_captions=available_captions,
        target=target,
        captions_per_source=captions_per_source,
    )
    return subset, info


def nested_scales(cuts: Iterable[Cut], scales: Iterable[str | int | None], seed: int = 0,
                  reference_total: int | None = None, unit: str = "captions") -> dict[str, tuple[CutSet, ScaleInfo]]:
    """``select_scale`` for several scales of one corpus (nested by construction), keyed by label."""
    cuts = list(cuts)
    return {("full" if s is None else str(s)): select_scale(cuts, s, seed, reference_total, unit=unit)
            for s in scales}


__all__ = [
    "PAPER_FULL_PAIRS",
    "PAPER_SCALES",
    "ScaleInfo",
    "UNITS",
    "apportion",
    "format_scale",
    "nested_scales",
    "parse_scale",
    "select_scale",
]
