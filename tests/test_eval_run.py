"""`audiolp evaluate`: a pretraining run and its references on MiniBench tasks, one record each, reused on rerun;
bad input is one clear line."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from audiolp.cli import main
from audiolp.eval.linear import ProbeProtocol
from audiolp.eval.sed import SedHeadConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_run(tiny_ministew, tmp_path_factory):
    from audiolp.train.config import TrainConfig
    from audiolp.train.trainer import train

    run = tmp_path_factory.mktemp("eval_run") / "tagging"
    cfg = TrainConfig.from_preset("demo_cpu", {"objective": "tagging", "data": str(tiny_ministew / "cuts.jsonl.gz"),
                                               "max_steps": 2, "run_dir": str(run), "progress": False,
                                               "loader": {"max_duration": 20.0}})
    return train(cfg)


FAST = dict(protocol=ProbeProtocol(learning_rates=(1e-2,), weight_decays=(1e-3,), seeds=(0, 1), epochs=3,
                                   min_steps=30, n_boot=200),
            sed_config=SedHeadConfig(epochs=2, min_steps=20, thresholds=(0.3, 0.5), median_filters=(1, 3)))


def test_evaluate_writes_one_record_per_encoder_task_pooling_and_reuses_them(tiny_ministew, tiny_run, tmp_path,
                                                                             monkeypatch):
    from audiolp.eval.run import evaluate, table

    out = tmp_path / "records"
    kw = dict(registry=tiny_ministew / "tasks.json", tasks=["voice_id", "event_detection"],
              poolings=("mean", "attention"), out_dir=out, log=lambda *a: None, **FAST)
    records = evaluate({"tagging": tiny_run}, **kw)
    printed = table(records)
    recs = sorted(p.stem for p in out.glob("probe__*.json"))
    assert len(recs) == 3 * 3  # (tagging, random_init, fbank) x (voice_id mean + attention, event_detection)
    rec = json.loads((out / "probe__tagging__voice_id__attention.json").read_text())
    m = rec["metrics"]
    assert m["metric"] == "accuracy" and len(m["test_per_seed"]) == 2 and m["interval"][0] <= m["test"] <= m["interval"][1]
    assert rec["params"]["encoder_fingerprint"] and "git_commit" in rec and rec["params"]["protocol"]["seeds"] == [0, 1]
    # Per-clip scores (seed-averaged correctness) whose mean is the test score, on the same clips for every encoder:
    # what the study's paired differences read.
    import numpy as np

    per_clip = np.array(m["test_per_clip"])
    assert len(per_clip) == m["n_test"] and per_clip.mean() == pytest.approx(m["test"], abs=1e-4)
    assert set(np.round(per_clip * 2) / 2) <= {0.0, 0.5, 1.0}  # 2 seeds: 0, 1/2 or 1 per clip
    ref = json.loads((out / "probe__random_init__voice_id__attention.json").read_text())["metrics"]
    assert ref["test_clips"] == m["test_clips"] and len(ref["test_per_clip"]) == m["n_test"]
    sed = json.loads((out / "probe__fbank__event_detection__frames.json").read_text())["metrics"]
    assert sed["metric"] == "segment_f1" and 0 <= sed["test"] <= 1
    assert "| tagging | mean |" in printed and "| fbank | attention |" in printed
    # A rerun reads every record back: no probe is trained, no audio read.
    import audiolp.eval.run as run_mod

    monkeypatch.setattr(run_mod, "_evaluate_one", lambda *a, **k: pytest.fail("a record was recomputed"))
    assert [r["metrics"] for r in evaluate({"tagging": tiny_run}, **kw)] == [r["metrics"] for r in records]


def test_evaluate_from_the_command_line(tiny_ministew, tiny_run, tmp_path, capsys):
    out = tmp_path / "records"
    assert main(["evaluate", f"tagging={tiny_run}", "--registry", str(tiny_ministew / "tasks.json"), "--tasks",
                 "pitch_level", "--baselines", "", "--seeds", "1", "--out", str(out)]) == 0
    assert "| tagging | mean |" in capsys.readouterr().out
    assert [p.name for p in out.glob("*.json")] == ["probe__tagging__pitch_level__mean.json"]


def test_evaluate_bad_input_is_one_line(tiny_ministew, tiny_run, tmp_path, capsys):
    reg = str(tiny_ministew / "tasks.json")
    assert main(["evaluate", str(tmp_path / "nope"), "--registry", reg, "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    empty = tmp_path / "empty_run"
    empty.mkdir()
    assert main(["evaluate", str(empty), "--registry", reg, "--baselines", "", "--out", str(tmp_path / "o")]) == 2
    assert "encoder_config.json" in capsys.readouterr().err
    assert main(["evaluate", str(tiny_run), "--registry", reg, "--tasks", "nope", "--out", str(tmp_path / "o")]) == 2
    assert "unknown task 'nope'" in capsys.readouterr().err
    # A registry entry pointing at a missing manifest, and a task whose train split has one class.
    broken = tmp_path / "broken"
    shutil.copytree(tiny_ministew / "tasks", broken / "tasks")
    reg_data = json.loads((tiny_ministew / "tasks.json").read_text())
    reg_data["tasks"]["voice_id"]["splits"]["train"] = "tasks/voice_id/missing.jsonl.gz"
    (broken / "tasks.json").write_text(json.dumps(reg_data))
    assert main(["evaluate", str(tiny_run), "--registry", str(broken / "tasks.json"), "--tasks", "voice_id",
                 "--baselines", "", "--out", str(tmp_path / "o")]) == 2
    assert "missing.jsonl.gz" in capsys.readouterr().err
    from lhotse import CutSet
    from lhotse.utils import fastcopy

    train = CutSet.from_file(tiny_ministew / "tasks" / "pitch_level" / "train.jsonl.gz")
    one = [fastcopy(c, supervisions=[fastcopy(c.supervisions[0], custom={**c.supervisions[0].custom,
                                                                          "labels": ["low"]})]) for c in train]
    os.makedirs(broken / "tasks" / "pitch_level", exist_ok=True)
    CutSet.from_cuts(one).to_file(broken / "tasks" / "pitch_level" / "train.jsonl.gz")
    assert main(["evaluate", str(tiny_run), "--registry", str(broken / "tasks.json"), "--tasks", "pitch_level",
                 "--baselines", "", "--out", str(tmp_path / "o2")]) == 2
    assert "train split has 1 class" in capsys.readouterr().err


def test_a_user_task_from_a_folder_and_csv_evaluates(tiny_ministew, tiny_run, tmp_path, capsys):
    """Register clips of your own (audio + file,label,split csv) and probe a run on them: no package code."""
    import csv

    from audiolp.data.tasks import load_task_registry, load_task_split

    spec = load_task_registry(tiny_ministew / "tasks.json")["pitch_level"]
    folder = tmp_path / "mine"
    (folder / "clips").mkdir(parents=True)
    rows = []
    for split in ("train", "val", "test"):
        for c in load_task_split(spec, split, tiny_ministew):
            src = c.recording.sources[0].source
            dst = folder / "clips" / f"{c.id}{os.path.splitext(src)[1]}"
            shutil.copy(src, dst)
            rows.append([f"clips/{dst.name}", c.supervisions[0].custom["labels"][0], split])
    with open(folder / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["file", "label", "split"]] + rows)
    assert main(["prepare", "task", "folder", "--source", str(folder), "--csv", str(folder / "labels.csv"),
                 "--name", "my_pitch", "--out", str(tmp_path / "tasks")]) == 0
    from audiolp.eval.run import evaluate

    recs = evaluate({"tagging": tiny_run}, tmp_path / "tasks", tasks=["my_pitch"], baselines=(),
                    out_dir=tmp_path / "records", log=lambda *a: None, **FAST)
    assert len(recs) == 1 and recs[0]["metrics"]["n_test"] == sum(r[2] == "test" for r in rows)
    assert recs[0]["metrics"]["chance"] == pytest.approx(1 / 3)
