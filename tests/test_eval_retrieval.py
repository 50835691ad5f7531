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


# ------------------------------------------------------------------------------------------------------------------
# On the tiny MiniStew: a 2-step contrastive run, LiT through the trainer, zero-shot, the `audiolp evaluate` branch
# ------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def contrastive_run(tiny_ministew, tmp_path_factory, one_torch_thread):
    from audiolp.train.config import TrainConfig
    from audiolp.train.trainer import train

    run = tmp_path_factory.mktemp("retrieval_run") / "contrastive"
    cfg = TrainConfig.from_preset("demo_cpu", {"objective": "contrastive", "data": str(tiny_ministew / "cuts.jsonl.gz"),
                                               "max_steps": 2, "run_dir": str(run), "progress": False,
                                               "loader": {"max_duration": 20.0}})
    return train(cfg)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One records folder, embedding cache and LiT folder for the module: LiT runs are trained once."""
    return tmp_path_factory.mktemp("retrieval_records")


def _direct_sim(objective, cuts, texts):
    """Similarities through the objective's own forward (fbank -> encoder -> pooled projection), not the cache."""
    import torch

    from lhotse import CutSet

    from audiolp.data.loader import LoaderConfig, make_dataloader

    loader = make_dataloader(CutSet.from_cuts(cuts), LoaderConfig(max_duration=300.0, num_buckets=1, shuffle=False,
                                                spec_augment=False), train=False)
    audio = {}
    with torch.no_grad():
        for batch in loader:
            emb = objective.embed_audio(batch["features"], batch["feature_lens"])
            audio.update(zip(batch["cut_ids"], emb.numpy()))
        text = objective.embed_text(texts).numpy()
    return np.stack([audio[c.id] for c in cuts]) @ text.T


def test_retrieval_own_heads_and_lit_records(tiny_ministew, contrastive_run, shared, monkeypatch):
    import audiolp.eval.retrieval as R
    from audiolp.data.schema import cut_captions
    from audiolp.data.tasks import load_task_registry, load_task_split
    from audiolp.models.io import load_weights

    spec = load_task_registry(tiny_ministew / "tasks.json")["retrieval"]
    cuts = list(load_task_split(spec, "test", tiny_ministew))
    n_caps = sum(len(cut_captions(c)) for c in cuts)
    lit = R.LiTConfig(steps=3)
    logs = []
    recs = R.evaluate_retrieval(contrastive_run, tiny_ministew, "retrieval", lit=lit, out_dir=shared, n_boot=300,
                                progress=False, log=logs.append)
    assert [r["params"]["protocol"] for r in recs] == ["own_heads", "lit"]
    for r in recs:
        m = r["metrics"]
        assert (m["n_clips"], m["n_captions"]) == (len(cuts), n_caps) == (18, 58)
        assert m["metric"] == "t2a_R@1" and m["test"] == m["t2a_R@1"]
        assert m["interval"][0] <= m["test"] <= m["interval"][1] and m["t2a_MRR@10"] == m["t2a_mAP@10"]
    assert recs[1]["params"]["alignment_data"].endswith("tasks/retrieval/train.jsonl.gz")
    # LiT went through the one trainer: a contrastive run with a frozen encoder that left it bit-identical
    (lit_run,) = (shared / ".lit").glob("lit-*")
    cfg = json.loads((lit_run / "config.json").read_text())
    assert cfg["objective"] == "contrastive" and cfg["freeze_encoder"] and cfg["max_steps"] == 3
    assert cfg["init_from"] == str(contrastive_run / "encoder.safetensors") and cfg["text_model"] == "minilm"
    before, after = load_weights(contrastive_run / "encoder.safetensors"), load_weights(lit_run / "encoder.safetensors")
    assert all(np.array_equal(before[k].numpy(), after[k].numpy()) for k in before)
    # ... and its heads are new: they score differently from the run's own heads
    own, aligned = R.load_run_objective(contrastive_run), R.load_run_objective(lit_run)
    assert not np.allclose(own.text_proj[0].weight.numpy(), aligned.text_proj[0].weight.numpy())
    # The record is what the heads give, and the cached-frame path equals the objective's own forward
    texts = [c for cut in cuts for c in cut_captions(cut)]
    sim = _direct_sim(aligned, cuts, texts)
    frames = R.EmbeddingCache(shared / ".embeddings").get(aligned.encoder, cuts)
    cached = R.embed_audio(aligned, frames) @ R.embed_texts(aligned, texts, progress=False).T
    assert np.abs(cached - sim).max() < 2e-2
    expect = R.retrieval_scores(cached, np.repeat(np.arange(len(cuts)), [len(cut_captions(c)) for c in cuts]))
    assert {k: recs[1]["metrics"][k] for k in expect.metrics} == pytest.approx(expect.metrics)
    # A rerun with the same params reads the records back: nothing trained, nothing embedded
    monkeypatch.setattr(R, "lit_align", lambda *a, **k: pytest.fail("LiT retrained"))
    monkeypatch.setattr(R, "score_retrieval", lambda *a, **k: pytest.fail("rescored"))
    again = R.evaluate_retrieval(contrastive_run, tiny_ministew, "retrieval", lit=lit, out_dir=shared, n_boot=300,
                                 log=logs.append)
    assert [r["metrics"] for r in again] == [r["metrics"] for r in recs]
    with pytest.raises(ValueError, match="is multiclass, not retrieval"):
        R.evaluate_retrieval(contrastive_run, tiny_ministew, "sound_event", out_dir=shared)


def test_zero_shot_from_prompts(tiny_ministew, contrastive_run, shared):
    import audiolp.eval.retrieval as R
    from audiolp.data.tasks import load_task_registry, load_task_split

    lit = R.LiTConfig(steps=3)  # the LiT run of the retrieval test is reused (same config, same encoder)
    recs = R.evaluate_zero_shot(contrastive_run, tiny_ministew, ["sound_event"], lit=lit, out_dir=shared, n_boot=300,
                                template="a recording of {label}", log=lambda *a: None)
    assert len(list((shared / ".lit").glob("lit-*"))) == 1
    assert [(r["params"]["task"], r["params"]["protocol"]) for r in recs] == [("sound_event", "own_heads"),
                                                                            ("sound_event", "lit")]
    spec = load_task_registry(tiny_ministew / "tasks.json")["sound_event"]
    cuts = list(load_task_split(spec, "test", tiny_ministew))
    y = np.array([spec.labels.index(c.supervisions[0].custom["labels"][0]) for c in cuts])
    (lit_run,) = (shared / ".lit").glob("lit-*")
    for rec, obj in zip(recs, (R.load_run_objective(contrastive_run), R.load_run_objective(lit_run))):
        m = rec["metrics"]
        sim = _direct_sim(obj, cuts, [f"a recording of {lab}" for lab in spec.labels])
        top2 = np.sort(sim, 1)[:, -2:]
        sure = top2[:, 1] - top2[:, 0] > 2e-2  # clips whose prediction fp16 frames cannot flip
        pred_ok = sim.argmax(1) == y
        n_ok = round(m["test"] * m["n_test"])
        assert m["n_test"] == len(cuts) == 24 and m["chance"] == 0.25
        assert pred_ok[sure].sum() <= n_ok <= pred_ok[sure].sum() + (~sure).sum()
        assert m["interval"][0] <= m["test"] <= m["interval"][1]
    with pytest.raises(ValueError, match="no '\\{label\\}' placeholder"):
        R.evaluate_zero_shot(contrastive_run, tiny_ministew, ["sound_event"], template="a sound", out_dir=shared)


def test_random_init_reference_and_evaluate_command(tiny_ministew, contrastive_run, tmp_path, capsys):
    import audiolp.eval.retrieval as R
    from audiolp.cli import main

    out = tmp_path / "records"
    assert main(["evaluate", f"clap={contrastive_run}", "--registry", str(tiny_ministew / "tasks.json"), "--tasks",
                 "retrieval", "--baselines", "random,fbank", "--lit-steps", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| clap | own_heads |" in printed and "| random_init | lit |" in printed and "| fbank |" not in printed
    assert sorted(p.name for p in out.glob("*.json")) == [
        "retrieval__clap__retrieval__lit.json", "retrieval__clap__retrieval__own_heads.json",
        "retrieval__random_init__retrieval__lit.json"]
    rnd = json.loads((out / "retrieval__random_init__retrieval__lit.json").read_text())
    assert rnd["params"]["lit"]["steps"] == 2 and rnd["params"]["encoder_fingerprint"] != json.loads(
        (out / "retrieval__clap__retrieval__lit.json").read_text())["params"]["encoder_fingerprint"]
    # encoder=None: init_from none, the trainer draws the random encoder of the run's architecture (seeded by LiT)
    with pytest.raises(ValueError, match="needs encoder_config"):
        R.evaluate_retrieval(None, tiny_ministew, out_dir=tmp_path / "n")
    (rec,) = R.evaluate_retrieval(None, tiny_ministew, encoder_config=contrastive_run, lit=R.LiTConfig(steps=2),
                                  out_dir=tmp_path / "n", n_boot=200, log=lambda *a: None)
    (lit_run,) = (tmp_path / "n" / ".lit").glob("lit-*")
    assert json.loads((lit_run / "config.json").read_text())["init_from"] is None
    assert rec["params"]["protocol"] == "lit" and rec["params"]["encoder_fingerprint"].startswith("random:")
    assert json.loads((lit_run / "encoder_config.json").read_text()) == json.loads(
        (contrastive_run / "encoder_config.json").read_text())
