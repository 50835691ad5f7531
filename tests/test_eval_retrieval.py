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


def test_audiocaps_and_clotho_retrieval_tasks(tmp_path, capsys):
    import fixtures_downstream as fx
    from audiolp.cli import main
    from audiolp.data.downstream import prepare_task
    from audiolp.data.schema import cut_captions
    from audiolp.data.tasks import load_task_registry, load_task_split

    out = tmp_path / "tasks"
    src = fx.make_audiocaps_retrieval(tmp_path / "audiocaps" / "dataset")
    assert main(["prepare", "task", "audiocaps_retrieval", "--source", str(src), "--out", str(out)]) == 0
    assert "audiocaps_retrieval: test 3 clips, 15 test captions (retrieval, R@k)" in capsys.readouterr().out
    fx.make_clotho_retrieval(tmp_path / "clotho")
    specs, lines = prepare_task("clotho_retrieval", tmp_path / "clotho", out)
    reg = load_task_registry(out / "tasks.json")
    assert {n: (s.kind, sorted(s.splits)) for n, s in reg.items()} == {
        "audiocaps_retrieval": ("retrieval", ["test"]), "clotho_retrieval": ("retrieval", ["test"])}
    ac = {c.id: c for c in load_task_split(reg["audiocaps_retrieval"], "test", out)}
    assert sorted(ac) == ["audiocaps/6BJ455B1aAs_0", "audiocaps/7fmOlUlwoNg_20", "audiocaps/GOD8Bt5LfDE_20"]
    rain = ac["audiocaps/GOD8Bt5LfDE_20"]  # found as the whole video: the clip's 10 s of it
    assert cut_captions(rain)[0] == "rain falls" and len(cut_captions(rain)) == 5
    assert rain.start == 20.0 and rain.duration == 10.0 and rain.sampling_rate == 16_000
    assert ac["audiocaps/6BJ455B1aAs_0"].load_audio().shape[1] == 4_000  # 0.25 s at 32 kHz, read at 16 kHz
    cl = {c.id: c for c in load_task_split(reg["clotho_retrieval"], "test", out)}
    assert sorted(cl) == ["clotho/evaluation/Footsteps on gravel", "clotho/evaluation/Santa Motor",
                          "clotho/evaluation/birds, morning"]
    assert cut_captions(cl["clotho/evaluation/birds, morning"]) == ["birds sing", "birds chirp at dawn", "many birds",
                                                                   "birdsong", "birds call"]
    assert "missing_audio" in lines[-1] or "without audio" in lines[-1]
    assert "gone.wav" in (out / "missing_audio.txt").read_text()


def test_retrieval_adapters_bad_input_is_one_clear_error(tmp_path):
    import fixtures_downstream as fx
    from audiolp.data.downstream import prepare_task

    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty/test\.csv does not exist.*Fix: point --source"):
        prepare_task("audiocaps_retrieval", tmp_path / "empty", tmp_path / "o")
    with pytest.raises(FileNotFoundError, match=r"clotho_captions_evaluation\.csv does not exist.*evaluation/"):
        prepare_task("clotho-retrieval", tmp_path / "empty", tmp_path / "o")
    root = fx.make_clotho_retrieval(tmp_path / "clotho")
    for p in (root / "evaluation").iterdir():
        p.unlink()
    with pytest.raises(FileNotFoundError, match=r"no audio found.*Looked in: .*evaluation.*Fix"):
        prepare_task("clotho_retrieval", root, tmp_path / "o")
    with pytest.raises(ValueError, match="splits"):
        prepare_task("audiocaps_retrieval", fx.make_audiocaps_retrieval(tmp_path / "ac"), tmp_path / "o",
                     splits=("train",))
    assert not (tmp_path / "o" / "tasks.json").exists()
