"""SED: sed_eval metrics against hand-computed cases, frame targets <-> events, the head on synthetic frames, and
the protocol end to end on the tiny MiniStew's event_detection task."""
import numpy as np
import pytest
import torch

from audiolp.eval.embed import Embeddings, EmbeddingCache
from audiolp.eval.export import FrameGrid
from audiolp.eval.sed import (SedHeadConfig, decode_events, evaluate_sed, evaluate_sed_embeddings, frame_targets,
                              postprocess, sed_counts, sed_metrics)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
L = ["door", "water"]
REF = [[("door", 1.0, 2.0)]]


@pytest.mark.parametrize("estimate, segment, onset, onoff", [
    # 1 s segments: the reference covers segment 1; 1.1-2.5 covers segments 1 and 2 -> tp 1, fp 1: F1 2/3.
    # Onset 0.1 s off (inside the 200 ms collar); offset 0.5 s off (outside max(0.2, 20 % of 1 s)).
    (("door", 1.1, 2.5), 2 / 3, 1.0, 0.0),
    # Onset 0.25 s late: outside the collar, though every 1 s segment agrees.
    (("door", 1.25, 2.0), 1.0, 0.0, 0.0),
    # Onset 0.19 s, offset 0.1 s off: both inside; segments 1 and 2 again.
    (("door", 1.19, 2.1), 2 / 3, 1.0, 1.0),
    # The right time, the wrong class: one false positive and one miss everywhere.
    (("water", 1.0, 2.0), 0.0, 0.0, 0.0),
])
def test_hand_computed_single_event(estimate, segment, onset, onoff):
    got = sed_metrics(REF, [[estimate]], L, durations=[4.0])
    assert got == pytest.approx({"segment_f1": segment, "event_f1": onset, "event_onoff_f1": onoff})


def test_micro_over_clips_and_per_clip_counts():
    # Clip A as above (segment tp 1, fp 1); clip B: water over 0-3 s (3 segments) missed entirely.
    ref = [[("door", 1.0, 2.0)], [("water", 0.0, 3.0)]]
    est = [[("door", 1.1, 2.5)], []]
    c = sed_counts(ref, est, L, durations=[4.0, 4.0])
    np.testing.assert_array_equal(c["segment"].tp, [1, 0])
    np.testing.assert_array_equal(c["segment"].sys, [2, 0])
    np.testing.assert_array_equal(c["segment"].ref, [1, 3])
    # Micro: 2 tp / (sys + ref) = 2 / 6; the macro mean over clips would be (2/3 + 0) / 2 = 1/3 as well, so
    # also check the event F1, where micro (2/3) and the clip mean (1/2) differ.
    got = sed_metrics(ref, est, L, durations=[4.0, 4.0])
    assert got["segment_f1"] == pytest.approx(1 / 3)
    assert got["event_f1"] == pytest.approx(2 / 3)


def test_label_errors():
    with pytest.raises(ValueError, match="outside the task's labels"):
        sed_metrics(REF, [[("dog", 1.0, 2.0)]], L)
    with pytest.raises(ValueError, match="one list per clip"):
        sed_metrics(REF, [], L)


GRID = FrameGrid(hop_ms=40.0, first_centre_ms=55.0)  # a Zipformer's 25 Hz frames


def test_frame_targets_and_decoding_round_trip():
    y = frame_targets([("door", 1.0, 2.0), ("water", 0.5, 0.51)], L, 100, GRID)
    # Centres 55 + 40 n ms inside [1000, 2000): n = 24 (1015 ms) .. 48 (1975 ms).
    assert np.flatnonzero(y[:, 0]).tolist() == list(range(24, 49))
    # A 10 ms event holds no centre: the frame nearest its middle (505 ms -> n = 11, 495 ms) stands in.
    assert np.flatnonzero(y[:, 1]).tolist() == [11]
    ev = decode_events(y > 0.5, L, GRID, duration=4.0)
    assert ev == [("water", 0.475, 0.515), ("door", 0.995, 1.995)]
    # A run reaching past the clip's end is clipped to its duration.
    assert decode_events(np.ones((100, 2)) > 0, L, GRID, duration=3.9)[0] == ("door", 0.035, 3.9)


def test_median_filter_removes_blips_and_fills_gaps():
    p = np.zeros((12, 1))
    p[2] = 0.9            # a one-frame blip
    p[6:11] = 0.9
    p[8] = 0.1            # a one-frame gap
    assert postprocess(p, 0.5, 1)[:, 0].astype(int).tolist() == [0, 0, 1, 0, 0, 0, 1, 1, 0, 1, 1, 0]
    assert postprocess(p, 0.5, 3)[:, 0].astype(int).tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0]


def _synthetic(n_clips, seed, informative=True):
    """Clips of 100 frames (4 s) with one event per class; frames carry the targets in two channels + noise."""
    rng = np.random.default_rng(seed)
    frames, events = [], []
    for _ in range(n_clips):
        evs = []
        for lab in L:
            on = float(np.round(rng.uniform(0.0, 2.5), 2))
            evs.append((lab, on, float(np.round(on + rng.uniform(0.5, 1.5), 2))))
        y = frame_targets(evs, L, 100, GRID)
        x = rng.normal(size=(100, 6)).astype(np.float32)
        if informative:
            x[:, :2] += 4 * y
        frames.append(x.astype(np.float16))
        events.append(evs)
    emb = Embeddings(ids=[f"c{i}" for i in range(n_clips)], frames=np.concatenate(frames),
                     offsets=np.arange(n_clips + 1) * 100, labels=[[] for _ in range(n_clips)])
    return emb, events


def _run(informative):
    emb, events = {}, {}
    for split, n, s in (("train", 30, 0), ("val", 10, 1), ("test", 20, 2)):
        emb[split], events[split] = _synthetic(n, s, informative)
    durations = {k: [4.0] * len(v) for k, v in emb.items()}
    cfg = SedHeadConfig(epochs=20, min_steps=150, thresholds=(0.3, 0.5, 0.7), median_filters=(1, 3))
    return evaluate_sed_embeddings(emb, events, durations, L, GRID, seeds=(0, 1), config=cfg, n_boot=200)


def test_head_learns_informative_frames_and_not_noise():
    good, noise = _run(True), _run(False)
    assert good["segment_f1"] > 0.9 and good["event_f1"] > 0.8
    assert noise["segment_f1"] < 0.75 and noise["event_f1"] < 0.3
    lo, hi = good["segment_f1_interval"]
    assert lo <= good["segment_f1"] <= hi and hi <= 1.0
    assert [r["seed"] for r in good["per_seed"]] == [0, 1]
    assert good["per_seed"][0]["threshold"] in (0.3, 0.5, 0.7)


def test_evaluate_sed_on_ministew(tiny_ministew, tmp_path):
    from audiolp.models.zipformer import Zipformer, ZipformerConfig

    torch.manual_seed(0)
    enc = Zipformer(ZipformerConfig.preset("zipformer_tiny")).eval()
    cache = EmbeddingCache(tmp_path / "emb", progress=False)
    cfg = SedHeadConfig(epochs=3, min_steps=20, thresholds=(0.3, 0.5), median_filters=(1, 3))
    out = evaluate_sed(enc, tiny_ministew / "tasks.json", "event_detection", cache, seeds=(0,), config=cfg,
                       n_boot=100)
    assert (out["n_train"], out["n_val"], out["n_test"]) == (15, 5, 10)
    assert out["frame_hop_ms"] == 40.0 and out["first_frame_centre_ms"] == 55.0
    assert out["labels"] == ["digging", "door", "footsteps", "water"]
    for k in ("segment_f1", "event_f1", "event_onoff_f1"):
        assert 0.0 <= out[k] <= 1.0
        assert out[f"{k}_interval"][0] <= out[k] <= out[f"{k}_interval"][1]
    # A rerun reads the cached embeddings back and gives the same numbers.
    n = cache.extractions
    again = evaluate_sed(enc, tiny_ministew / "tasks.json", "event_detection", cache, seeds=(0,), config=cfg,
                         n_boot=100)
    assert cache.extractions == n and again["segment_f1"] == out["segment_f1"]
    with pytest.raises(ValueError, match="needs an 'sed' task"):
        evaluate_sed(enc, tiny_ministew / "tasks.json", "voice_id", cache)
