"""Scale parsing and nested, stratified, seeded subsets (property-tested with hypothesis)."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lhotse import Recording
from lhotse.audio import AudioSource

from audiolp.data.schema import cut_source, make_caption_cut
from audiolp.data.scale import PAPER_FULL_PAIRS, apportion, format_scale, parse_scale, select_scale

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
