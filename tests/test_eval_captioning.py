"""Caption generation from frozen encoders (audiolp.eval.captioning): the metrics on hand-computed cases, a
captioning run's own decoder, a decoder trained on a frozen encoder through the one trainer, records reused."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from audiolp.cli import main
from audiolp.eval.captioning import (DecoderProtocol, Decoding, corpus_bleu_from_stats, bleu_stats,
                                     evaluate_captioning, java_available, metric_availability, score_captions)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = DecoderProtocol(max_steps=3, overrides={"loader": {"max_duration": 20.0}})
CHEAP = ("bleu_4", "rouge_l", "cider_d", "spice", "spider")  # METEOR (a JVM start, ~10 s) only in the metric test


def _train(tiny_ministew, run_dir, objective, steps):
    from audiolp.train.config import TrainConfig
    from audiolp.train.trainer import train

    return train(TrainConfig.from_preset("demo_cpu", {
        "objective": objective, "data": str(tiny_ministew / "cuts.jsonl.gz"), "max_steps": steps,
        "run_dir": str(run_dir), "progress": False, "loader": {"max_duration": 20.0}}))


@pytest.fixture(scope="module")
def cap_run(tiny_ministew, tmp_path_factory):
    return _train(tiny_ministew, tmp_path_factory.mktemp("capgen") / "cap", "captioning", 2)


@pytest.fixture(scope="module")
def tag_run(tiny_ministew, tmp_path_factory):
    return _train(tiny_ministew, tmp_path_factory.mktemp("capgen") / "tag", "tagging", 2)


def test_metrics_on_hand_computed_cases():
    # Identical candidate and reference: BLEU-4 = ROUGE-L = 1; CIDEr-D = 10 (every n-gram order matches, the
    # n-grams of each clip occur in no other clip's references).
    same = ["a dog barks twice loudly", "rain falls on a metal roof"]
    s = score_captions(same, [[c] for c in same], metrics=("bleu_4", "rouge_l", "cider_d"), tokenizer="simple")
    assert s.values["bleu_4"] == pytest.approx(1.0, abs=1e-6) and s.values["rouge_l"] == pytest.approx(1.0)
    assert s.values["cider_d"] == pytest.approx(10.0)
    # BLEU-4 (corpus, closest reference length): clip 1 matches 4/5 unigrams ... 1/2 4-grams, clip 2 everything.
    s = score_captions(["a b c d e", "g h i j k"], [["a b c d f", "q"], ["g h i j k"]], metrics=("bleu_4",),
                       tokenizer="simple", n_boot=200)
    assert s.values["bleu_4"] == pytest.approx((9 / 10 * 7 / 8 * 5 / 6 * 3 / 4) ** 0.25, rel=1e-6)
    assert s.intervals["bleu_4"][0] <= s.values["bleu_4"] <= s.intervals["bleu_4"][1]
    # ROUGE-L (beta 1.2): LCS("a b c", "a c d e") = 2, P = 2/3, R = 1/2; the best reference counts.
    s = score_captions(["a b c", "x"], [["a c d e", "z"], ["y"]], metrics=("rouge_l",), tokenizer="simple")
    p, r, b2 = 2 / 3, 1 / 2, 1.2 ** 2
    assert s.per_clip["rouge_l"][0] == pytest.approx((1 + b2) * p * r / (r + b2 * p))
    assert s.values["rouge_l"] == pytest.approx((1 + b2) * p * r / (r + b2 * p) / 2)
    # CIDEr-D: "a b c" vs "a b c d" (all n-grams with idf log 2): cosines sqrt3/2, sqrt(2/3), 1/sqrt2, 0 for
    # n = 1..4, Gaussian length penalty exp(-1/72), x 10; the other clip shares nothing.
    s = score_captions(["a b c", "x y"], [["a b c d"], ["z w"]], metrics=("cider_d",), tokenizer="simple")
    one = 10 * math.exp(-1 / 72) * (math.sqrt(3) / 2 + math.sqrt(2 / 3) + 1 / math.sqrt(2)) / 4
    assert s.per_clip["cider_d"].tolist() == pytest.approx([one, 0.0])
    assert s.values["cider_d"] == pytest.approx(one / 2)
    # Punctuation and case do not count (either tokenizer); the library's per-clip mean is the CIDEr-D value.
    s = score_captions(["A dog barks twice!", "Rain, falling on roofs."], [["a dog barks twice"],
                                                                         ["rain falling on roofs"]],
                       metrics=("cider_d", "spice", "spider"))
    assert s.values["cider_d"] == pytest.approx(10.0)
    avail = metric_availability()
    assert set(s.skipped) == {m for m in ("spice", "spider") if avail[m]}
    assert all("SPICE" in why for why in s.skipped.values())


def test_bleu_bootstrap_recomputes_the_librarys_corpus_bleu():
    from pycocoevalcap.bleu.bleu import Bleu

    rng = np.random.default_rng(0)
    words = "a dog barks rain falls on the roof man speaks softly".split()
    cands = [" ".join(rng.choice(words, size=rng.integers(2, 9))) for _ in range(25)]
    refs = [[" ".join(rng.choice(words, size=rng.integers(3, 9))) for _ in range(3)] for _ in range(25)]
    lib, _ = Bleu(4).compute_score({i: r for i, r in enumerate(refs)}, {i: [c] for i, c in enumerate(cands)},
                                   verbose=0)
    assert float(corpus_bleu_from_stats(bleu_stats(cands, refs))) == pytest.approx(lib[3], rel=1e-12)
    s = score_captions(cands, refs, metrics=("bleu_4",), tokenizer="simple", n_boot=500)
    lo, hi = s.intervals["bleu_4"]
    assert s.values["bleu_4"] == pytest.approx(lib[3]) and lo < s.values["bleu_4"] < hi


@pytest.mark.slow  # starting the METEOR jar (its paraphrase table) takes ~10 s
@pytest.mark.skipif(not java_available(), reason="METEOR and the PTB tokenizer need Java")
def test_meteor_and_ptb_tokenizer_with_java():
    same = ["a dog barks twice", "rain falls on a metal roof"]
    s = score_captions(same + ["a cat"], [[c] for c in same] + [["music plays loudly"]],
                       metrics=("meteor", "bleu_4"), tokenizer="ptb")
    assert s.tokenizer == "ptb"
    assert s.per_clip["meteor"][:2].tolist() == pytest.approx([1.0, 1.0]) and s.per_clip["meteor"][2] == 0.0
    assert 0 < s.values["meteor"] < 1


def test_a_captioning_run_captions_with_its_own_decoder_and_the_record_is_reused(tiny_ministew, cap_run, tmp_path,
                                                                                 monkeypatch):
    from lhotse import CutSet

    import audiolp.eval.captioning as capmod
    from audiolp.data.schema import cut_captions

    out = tmp_path / "records"
    kw = dict(registry=tiny_ministew / "tasks.json", metrics=CHEAP, out_dir=out, progress=False, n_boot=200)
    rec = evaluate_captioning(cap_run, **kw)
    p, m = rec["params"], rec["metrics"]
    assert p["protocol"] == {"decoder": "own", "checkpoint": "latest"} and p["task"] == "retrieval"
    assert p["decoding"]["beam_size"] == 1 and p["seed"] == 0 and p["fingerprint"]
    assert m["n_clips"] == m["n_test"] == 18 and len(m["examples"]) == 5
    for k in ("bleu_4", "rouge_l", "cider_d"):
        assert m[k]["interval"][0] <= m[k]["value"] <= m[k]["interval"][1]
    # The captions are the run's decoder's own (greedy, from its latest checkpoint), and the numbers are theirs.
    captions = json.loads((out / ".captions" / "captioning__cap__retrieval__own-decoder__greedy.json").read_text())
    test = CutSet.from_file(tiny_ministew / "tasks" / "retrieval" / "test.jsonl.gz")
    obj = capmod.load_run_objective(cap_run)
    direct, _ = capmod.generate_captions(obj, test.subset(first=3), progress=False)
    assert all(captions[i] == c for i, c in direct.items())
    again = score_captions([captions[c.id] for c in test], [cut_captions(c) for c in test], metrics=CHEAP,
                           n_boot=200)
    assert again.values["cider_d"] == pytest.approx(m["cider_d"]["value"])
    # Identical params: the stored record comes back, nothing is generated.
    monkeypatch.setattr(capmod, "generate_captions", lambda *a, **k: pytest.fail("captions were regenerated"))
    assert evaluate_captioning(cap_run, **kw)["metrics"] == m
    with pytest.raises(ValueError, match="decoder='own' needs a captioning run"):
        evaluate_captioning(cap_run, random_init=True, decoder="own", **kw)


def test_frozen_encoders_get_a_decoder_from_the_trainer_and_keep_their_weights(tiny_ministew, tag_run, tmp_path):
    from audiolp.eval.run import evaluate, table
    from audiolp.models.io import load_weights
    from audiolp.train.config import TrainConfig

    out = tmp_path / "records"
    records = evaluate({"tag": tag_run}, tiny_ministew / "tasks.json", tasks=["captioning"], baselines=("random",),
                       out_dir=out, log=lambda *a: None,
                       captioning={"protocol": FAST, "metrics": CHEAP, "progress": False, "n_boot": 200,
                                   "decoding": Decoding(max_len=12)})
    assert [r["params"]["encoder"] for r in records] == ["tag", "random_init"]
    assert [r["params"]["random_init"] for r in records] == [False, True]
    assert records[0]["params"]["fingerprint"] != records[1]["params"]["fingerprint"]
    decoders = sorted((out / ".decoders").iterdir())
    assert len(decoders) == 2
    src = load_weights(tag_run / "encoder.safetensors")
    for dec in decoders:
        cfg = TrainConfig.load(dec / "config.json")
        assert cfg.objective == "captioning" and cfg.freeze_encoder and cfg.max_steps == 3
        assert cfg.data.endswith("retrieval/train.jsonl.gz") and cfg.model == "zipformer_tiny"
        init = load_weights(cfg.init_from)
        after = load_weights(dec / "encoder.safetensors")  # the encoder as the trained decoder run ends
        assert init.keys() == after.keys() and all(torch.equal(init[k], after[k]) for k in init)
        res = json.loads((dec / "results.json").read_text())
        assert res["steps"] == 3 and res["num_trainable_params"] == res["num_params"] - sum(
            v.numel() for v in after.values())
        is_random = dec.name.startswith("random_init")
        assert all(torch.equal(src[k], init[k]) for k in src) != is_random
    for r in records:
        m = r["metrics"]
        assert r["params"]["protocol"]["decoder"] == "trained_on_frozen_encoder" and m["n_clips"] == 18
        assert r["params"]["decoding"]["max_len"] == 12 and m["mean_words"] <= 11  # 12 tokens incl. EOS
        assert 0 <= m["bleu_4"]["value"] <= 1 and 0 <= m["rouge_l"]["value"] <= 1 and m["cider_d"]["value"] >= 0
    printed = table(records)
    assert "| tag | retrieval | trained on frozen | greedy |" in printed and "| random_init |" in printed


def test_the_study_scores_a_captioning_run_with_both_decoders(tiny_ministew, cap_run, tag_run, tmp_path):
    """decoder="both": a captioning run gets its own decoder's record and, like every other encoder, a frozen-encoder
    decoder's, so both objectives land in one comparable panel."""
    from audiolp.eval.run import evaluate
    from audiolp.study.analysis import language_score

    records = evaluate({"cap": cap_run, "tag": tag_run}, tiny_ministew / "tasks.json", tasks=["captioning"],
                       baselines=("random",), out_dir=tmp_path / "records", log=lambda *a: None,
                       captioning={"decoder": "both", "protocol": FAST, "metrics": CHEAP, "progress": False,
                                   "n_boot": 200, "decoding": Decoding(max_len=12)})
    assert [(r["params"]["encoder"], r["params"]["protocol"]["decoder"]) for r in records] == [
        ("cap", "own"), ("cap", "trained_on_frozen_encoder"), ("tag", "trained_on_frozen_encoder"),
        ("random_init", "trained_on_frozen_encoder")]
    panels = {}
    for r in records:
        panels.setdefault(language_score(r)[0], []).append(r["params"]["encoder"])
    assert panels == {"caption CIDEr-D (own decoder) · retrieval": ["cap"],
                      "caption CIDEr-D (frozen-encoder decoder) · retrieval": ["cap", "tag", "random_init"]}


def test_the_same_weights_in_another_run_dir_get_their_own_decoder(tiny_ministew, tag_run, tmp_path):
    """A run retrained into a new dir with identical weights (e.g. its config hash changed) does not collide with
    the decoder trained for the old dir (regression: the trainer refused to resume a run with another init_from)."""
    copy = tmp_path / "tag_again"
    shutil.copytree(tag_run, copy)
    kw = dict(registry=tiny_ministew / "tasks.json", name="tag", protocol=FAST, metrics=CHEAP, progress=False,
              n_boot=200, decoding=Decoding(max_len=12), out_dir=tmp_path / "records")
    first, second = evaluate_captioning(tag_run, **kw), evaluate_captioning(copy, **kw)
    assert first["params"]["fingerprint"] == second["params"]["fingerprint"]
    assert len(list((tmp_path / "records" / ".decoders").iterdir())) == 2
    assert second["params"]["run"] == str(copy)


def test_evaluate_captioning_from_the_command_line(tiny_ministew, cap_run, tmp_path, capsys):
    out = tmp_path / "records"
    assert main(["evaluate", f"cap={cap_run}", "--registry", str(tiny_ministew / "tasks.json"), "--tasks",
                 "captioning", "--baselines", "", "--beam-size", "2", "--caption-metrics", "bleu_4,cider_d",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| cap | retrieval | own | beam 2 |" in printed and "cider_d" in printed
    rec = json.loads((out / "captioning__cap__retrieval__own-decoder__beam2.json").read_text())
    assert rec["params"]["decoding"]["beam_size"] == 2 and rec["metrics"]["n_clips"] == 18
    assert rec["params"]["metrics"] == ["bleu_4", "cider_d"] and "rouge_l" not in rec["metrics"]
    assert main(["evaluate", str(cap_run), "--registry", str(tiny_ministew / "tasks.json"), "--tasks",
                 "captioning", "--beam-size", "0", "--out", str(out)]) == 2
    assert "beam_size=0" in capsys.readouterr().err
