"""Language-involved evaluation (audiolp.eval.retrieval): retrieval metrics on constructed similarity matrices with
hand-computed ranks, the bootstrap over clips, the AudioCaps / Clotho evaluation adapters on tiny copies in their
published layouts, and LiT alignment + zero-shot through the one trainer on the tiny MiniStew."""
from __future__ import annotations

import json

import numpy as np
import pytest

from audiolp.eval.probe import bootstrap_interval
from audiolp.eval.retrieval import (audio_to_text_positions, clip_bootstrap_interval, retrieval_intervals,
                                    retrieval_scores, text_to_audio_ranks)


def test_single_caption_metrics_by_hand():
    sim = np.array([[0.9, 0.1, 0.5],
                    [0.8, 0.7, 0.2],
                    [0.3, 0.6, 0.4]])
    s = retrieval_scores(sim, [0, 1, 2])
    # a2t: clip0 finds caption0 first; clip1's caption is behind 0.8; clip2's behind 0.6
    assert [p.tolist() for p in audio_to_text_positions(sim, [0, 1, 2])] == [[1], [2], [2]]
    # t2a: caption0 -> clip0 first (0.9); caption1 -> clip1 (0.7 > 0.6 > 0.1); caption2 -> clip2 behind clip0's 0.5
    assert text_to_audio_ranks(sim, [0, 1, 2]).tolist() == [1, 1, 2]
    m = s.metrics
    assert m["a2t_R@1"] == pytest.approx(1 / 3) and m["a2t_R@5"] == 1.0
    assert m["a2t_mAP@10"] == pytest.approx((1 + 1 / 2 + 1 / 2) / 3)
    assert m["t2a_R@1"] == pytest.approx(2 / 3) and m["t2a_R@10"] == 1.0
    assert m["t2a_MRR@10"] == m["t2a_mAP@10"] == pytest.approx((1 + 1 + 1 / 2) / 3)
    assert m["a2t_medr"] == 2 and m["t2a_meanr"] == pytest.approx(4 / 3)


def _multi_caption_matrix():
    """3 clips, 12 captions (clip0: 0-2, clip1: 3-7, clip2: 8-11); each row's scores are 13 - rank."""
    caption_clip = [0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2]
    orders = [[3, 1, 4, 5, 0, 6, 7, 8, 9, 10, 11, 2],   # clip0's captions at ranks 5, 2, 12 (in caption order)
              [3, 4, 5, 0, 1, 2, 8, 9, 10, 11, 6, 7],   # clip1's at 1, 2, 3, 11, 12
              [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]]   # clip2's at 9, 10, 11, 12
    sim = np.zeros((3, 12))
    for i, order in enumerate(orders):
        sim[i, order] = 12 - np.arange(12)
    return sim, caption_clip


def test_multi_caption_metrics_by_hand():
    sim, caption_clip = _multi_caption_matrix()
    assert [p.tolist() for p in audio_to_text_positions(sim, caption_clip)] == [[2, 5, 12], [1, 2, 3, 11, 12],
                                                                               [9, 10, 11, 12]]
    m = retrieval_scores(sim, caption_clip).metrics
    # a2t: best ranks 2, 1, 9
    assert (m["a2t_R@1"], m["a2t_R@5"], m["a2t_R@10"]) == pytest.approx((1 / 3, 2 / 3, 1.0))
    ap0 = (1 / 2 + 2 / 5) / 3  # rank order: hits at 2 and 5, divided by min(10, 3 captions); 12 is past the cutoff
    ap1 = (1 / 1 + 2 / 2 + 3 / 3) / 5  # min(10, 5)
    ap2 = (1 / 9 + 2 / 10) / 4
    assert m["a2t_mAP@10"] == pytest.approx((ap0 + ap1 + ap2) / 3)
    assert m["a2t_mAP@10"] != pytest.approx(((1 / 5 + 2 / 2) / 3 + ap1 + ap2) / 3)  # not the caption-order sum
    # t2a, columns by hand; caption1 (11 vs clip2's 11) and caption3 (12 vs clip0's 12) tie: ties rank against
    ranks = [3, 2, 3, 2, 1, 1, 3, 3, 3, 3, 3, 3]
    assert text_to_audio_ranks(sim, caption_clip).tolist() == ranks
    assert m["t2a_R@1"] == pytest.approx(2 / 12) and m["t2a_R@5"] == 1.0
    assert m["t2a_MRR@10"] == pytest.approx((8 / 3 + 2 / 2 + 2) / 12)
    assert m["a2t_medr"] == 2 and m["t2a_medr"] == 3


def test_ties_never_help_and_k_cutoffs():
    flat = retrieval_scores(np.zeros((3, 6)), [0, 0, 1, 1, 2, 2]).metrics
    assert flat["a2t_R@1"] == flat["t2a_R@1"] == 0.0 and flat["a2t_medr"] == 5 and flat["t2a_medr"] == 3
    # 12 clips, one caption each, all rows alike: clip i finds its caption at rank i + 1 (R@10: clips 0-9)
    n = 12
    sim = np.tile(np.arange(n, 0, -1, dtype=float), (n, 1))  # caption j scores n - j for every clip
    rolled = retrieval_scores(sim, np.arange(n)).metrics
    assert rolled["a2t_R@10"] == pytest.approx(10 / 12) and rolled["a2t_mAP@10"] == pytest.approx(
        sum(1 / (j + 1) for j in range(10)) / 12)
    with pytest.raises(ValueError, match="caption_clip"):
        retrieval_scores(np.zeros((2, 3)), [0, 1])
    with pytest.raises(ValueError, match="NaN"):
        retrieval_scores(np.full((2, 2), np.nan), [0, 1])


def test_bootstrap_over_clips():
    rng = np.random.default_rng(1)
    items = (rng.random(40) < 0.3).astype(float)
    # one item per clip: the same draws, the same interval as probe.bootstrap_interval
    assert clip_bootstrap_interval(items, np.arange(40), 40, n_boot=500, seed=3) == bootstrap_interval(
        [items], n_boot=500, seed=3)
    # five captions per clip: resampling clips = the bootstrap of the per-clip means
    caps = rng.random(200)
    clip_of = np.repeat(np.arange(40), 5)
    assert clip_bootstrap_interval(caps, clip_of, 40, n_boot=500, seed=3) == pytest.approx(
        bootstrap_interval([caps.reshape(40, 5).mean(1)], n_boot=500, seed=3))
    sim, caption_clip = _multi_caption_matrix()
    s = retrieval_scores(sim, caption_clip)
    iv = retrieval_intervals([s, s], n_boot=300)
    assert iv["t2a_R@5"] == (1.0, 1.0) and iv["a2t_R@1"][0] <= 1 / 3 <= iv["a2t_R@1"][1]
