"""Scale parsing and nested, stratified, seeded subsets (property-tested with hypothesis)."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lhotse import Recording
from lhotse.audio import AudioSource

from audiolp.data.schema import cut_source, make_caption_cut
from audiolp.data.scale import PAPER_FULL_PAIRS, _rank_key, apportion, format_scale, parse_scale, select_scale

_REC = Recording("r", [AudioSource("file", [0], "/dev/null")], 16000, 16000, 1.0)


def corpus(sizes: list[int]) -> list:
    """Cuts from len(sizes) sources with the given clip counts (no audio needed: selection reads ids only)."""
    return [
        make_caption_cut(f"src{s}/clip{i}", _REC, f"caption {i}", source=f"src{s}", domain="sound")
        for s, n in enumerate(sizes)
        for i in range(n)
    ]


@pytest.mark.parametrize("text, value", [
    ("400K", 400_000), ("400k", 400_000), ("1M", 1_000_000), ("4m", 4_000_000), ("10.7M", 10_700_000),
    (" 2.5K ", 2_500), ("250000", 250_000), (250_000, 250_000), ("0.5K", 500), ("full", None), ("ALL", None),
])
def test_parse_scale(text, value):
    assert parse_scale(text) == value


@pytest.mark.parametrize("bad", ["", "abc", "1.2345K", "-1", "0", "K", "1G", "4 M M", 0, -5, 1.5, True])
def test_parse_scale_rejects_with_accepted_forms(bad):
    with pytest.raises(ValueError, match="'full'"):
        parse_scale(bad)


def test_format_scale_round_trips():
    for s in ("400K", "1M", "4M", "10.7M", "full"):
        assert format_scale(parse_scale(s)) == s
    assert PAPER_FULL_PAIRS == parse_scale("10.7M")


def test_quota_method_avoids_the_alabama_paradox():
    # Largest remainder on (6, 6, 2): 10 seats -> (4, 4, 2), 11 seats -> (5, 5, 1): C loses a seat.
    counts = {"A": 6, "B": 6, "C": 2}
    a10, a11 = apportion(counts, 10), apportion(counts, 11)
    assert all(a11[g] >= a10[g] for g in counts)
    assert sum(a10.values()) == 10 and sum(a11.values()) == 11


@settings(max_examples=100, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=5),
    fracs=st.tuples(st.floats(0, 1), st.floats(0, 1)),
    seed=st.integers(0, 2**16),
)
def test_nested_exact_stratified_deterministic(sizes, fracs, seed):
    cuts = corpus(sizes)
    total = len(cuts)
    n1, n2 = sorted(max(1, round(f * total)) for f in fracs)
    small, info1 = select_scale(cuts, n1, seed=seed)
    large, info2 = select_scale(cuts, n2, seed=seed)
    ids1, ids2 = {c.id for c in small}, {c.id for c in large}
    assert ids1 <= ids2  # nested
    assert len(ids1) == n1 == info1.selected and len(ids2) == n2 == info2.selected  # exact totals
    for n, sub in ((n1, small), (n2, large)):
        for s, size in enumerate(sizes):
            got = sum(1 for c in sub if cut_source(c) == f"src{s}")
            share = size * n / total
            assert math.floor(share) <= got <= math.ceil(share)  # within one clip of its share
    again, _ = select_scale(cuts, n1, seed=seed)
    assert [c.id for c in again] == [c.id for c in small]  # same seed, same subset (and order)
    assert not info1.mapped


def test_different_seeds_differ():
    cuts = corpus([300, 200, 100])
    a, _ = select_scale(cuts, 60, seed=0)
    b, _ = select_scale(cuts, 60, seed=1)
    assert {c.id for c in a} != {c.id for c in b}
    assert len(a) == len(b) == 60


def test_too_many_names_both_numbers():
    cuts = corpus([5, 5])
    with pytest.raises(ValueError, match=r"400,000.*only 10"):
        select_scale(cuts, "400K")


def test_paper_scales_map_onto_a_small_corpus():
    cuts = corpus([107, 107])  # 214 clips
    infos = {}
    sets = {}
    for label in ("400K", "1M", "4M", "full"):
        sub, info = select_scale(cuts, label, seed=3, reference_total=PAPER_FULL_PAIRS)
        infos[label], sets[label] = info, {c.id for c in sub}
    # 400K / 10.7M * 214 = 8, 1M -> 20, 4M -> 80
    assert [infos[s].selected for s in ("400K", "1M", "4M", "full")] == [8, 20, 80, 214]
    assert infos["400K"].mapped and infos["4M"].mapped and not infos["full"].mapped
    assert infos["400K"].fraction == pytest.approx(8 / 214)
    assert infos["1M"].per_source == {"src0": 10, "src1": 10}
    assert infos["1M"].captions == 20  # one caption per clip in this corpus
    assert "mapped" in infos["1M"].describe() and "10,700,000" in infos["1M"].describe()
    assert sets["400K"] <= sets["1M"] <= sets["4M"] <= sets["full"]
    with pytest.raises(ValueError, match="larger than the reference corpus"):
        select_scale(cuts, "20M", reference_total=PAPER_FULL_PAIRS)


# ---------------------------------------------------------------------------------------------------------
# Scales count caption pairs by default (the paper: 10.7M captions on 9.3M clips)
def caption_corpus(spec: dict[str, list[int]]) -> list:
    """Cuts per source with the given number of captions per clip."""
    return [
        make_caption_cut(f"{s}/clip{i}", _REC, [f"caption {j} of {i}" for j in range(k)], source=s, domain="sound")
        for s, ks in spec.items()
        for i, k in enumerate(ks)
    ]


@settings(max_examples=60, deadline=None)
@given(
    spec=st.lists(st.lists(st.integers(1, 5), min_size=1, max_size=30), min_size=1, max_size=4),
    fracs=st.lists(st.floats(0, 1), min_size=2, max_size=4),
    seed=st.integers(0, 2**16),
)
def test_caption_scales_nested_stratified_smallest(spec, fracs, seed):
    cuts = caption_corpus({f"src{i}": ks for i, ks in enumerate(spec)})
    total = sum(sum(ks) for ks in spec)
    ns = sorted(max(1, round(f * total)) for f in fracs)
    previous: set[str] = set()
    for n in ns:
        sub, info = select_scale(cuts, n, seed=seed)
        ids = {c.id for c in sub}
        assert previous <= ids  # nested over several n
        previous = ids
        assert info.unit == "captions" and info.selected == len(ids) and info.captions >= n
        quotas = apportion({f"src{i}": sum(ks) for i, ks in enumerate(spec)}, n)
        for i, ks in enumerate(spec):
            src = f"src{i}"
            share = sum(ks) * n / total
            assert math.floor(share) <= quotas[src] <= math.ceil(share)
            mine = [c for c in sub if cut_source(c) == src]
            got = sum(len(c.supervisions[0].custom["caption"]) for c in mine)
            assert got == info.captions_per_source[src] >= quotas[src]  # reaches its quota ...
            if mine:  # ... with the shortest prefix of its ranking: without its last-ranked clip it falls short
                last = max(mine, key=lambda c: _rank_key(seed, c.id))
                assert got - len(last.supervisions[0].custom["caption"]) < quotas[src]
                outside = [c for c in cuts if cut_source(c) == src and c.id not in ids]
                assert all(_rank_key(seed, c.id) > _rank_key(seed, last.id) for c in outside)  # a prefix
        again, _ = select_scale(cuts, n, seed=seed)
        assert [c.id for c in again] == [c.id for c in sub]


def test_caption_unit_counts_captions_not_clips():
    cuts = caption_corpus({"a": [3] * 10, "b": [1] * 10})  # 40 captions on 20 clips
    sub, info = select_scale(cuts, 20, seed=0)
    assert info.target == 20 and info.captions_per_source == {"a": 15, "b": 5}  # quotas 15 and 5
    assert info.per_source == {"a": 5, "b": 5} and info.selected == 10 and info.captions == 20
    assert "10 clips, 20 captions" in info.describe() and "(captions)" in info.describe()
    sub, info = select_scale(cuts, 10, seed=0, unit="clips")  # today's behaviour
    assert (info.selected, info.per_source, info.captions) == (10, {"a": 5, "b": 5}, 20)
    with pytest.raises(ValueError, match=r"41 captions but the corpus has only 40"):
        select_scale(cuts, 41)
    with pytest.raises(ValueError, match="unit='pairs'"):
        select_scale(cuts, 10, unit="pairs")


# 500 clips (300 with one caption, 160 with two, 40 with one): 660 captions. Mapped targets are fractional in
# both units (500 * 4 / 107 = 18.69, 660 * 4 / 107 = 24.67, ...), so truncating instead of rounding is caught.
FRACTIONAL = {"src0": [1] * 300, "src1": [2] * 160 + [1] * 40}


@pytest.mark.parametrize("unit, targets", [
    ("clips", {"400K": 19, "1M": 47, "4M": 187}),  # round(18.69), round(46.73), round(186.92)
    ("captions", {"400K": 25, "1M": 62, "4M": 247}),  # round(24.67), round(61.68), round(246.73)
])
def test_mapped_targets_round_fractional_values(unit, targets):
    cuts = caption_corpus(FRACTIONAL)
    sets = {}
    for label, target in targets.items():
        sub, info = select_scale(cuts, label, seed=5, reference_total=PAPER_FULL_PAIRS, unit=unit)
        assert info.mapped and info.target == target
        sets[label] = {c.id for c in sub}
        if unit == "clips":
            assert info.selected == target
            assert info.per_source == apportion({"src0": 300, "src1": 200}, target)
        else:
            quotas = apportion({"src0": 300, "src1": 360}, target)
            assert info.captions_per_source["src0"] == quotas["src0"]  # one caption per clip: exact
            assert quotas["src1"] <= info.captions_per_source["src1"] <= quotas["src1"] + 1
            assert info.captions in (target, target + 1)
    assert sets["400K"] <= sets["1M"] <= sets["4M"]
