"""Results records and the CLI's config overrides."""
import json

import pytest

from audiolp.cli import _apply_overrides, _parse_sources, build_parser
from audiolp.study.records import read_records, write_record


def test_record_round_trip_and_filtering(tmp_path):
    p = write_record(tmp_path, "pretrain", "contrastive/400K", {"scale": "400K"}, {"final_loss": 1.25},
                     config={"seed": 3})
    write_record(tmp_path / "sub", "probe", "esc50", {}, {"accuracy": 0.5})
    (tmp_path / "stats.json").write_text(json.dumps({"clips": 3}))  # not a record: ignored
    assert p.name == "pretrain__contrastive_400K.json"
    all_recs = read_records(tmp_path)
    assert [r["kind"] for r in all_recs] == ["pretrain", "probe"]
    rec = read_records(tmp_path, kind="pretrain")[0]
    assert rec["metrics"]["final_loss"] == 1.25 and rec["params"]["scale"] == "400K" and rec["config"]["seed"] == 3
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="broken.json"):
        read_records(tmp_path)


def test_overrides_parse_json_values_and_reject_unknown_fields():
    cfg = {"optim": {"lr": 0.045, "name": "scaled_adam"}, "max_steps": 10}
    out = _apply_overrides(cfg, ["optim.lr=0.01", "max_steps=20", "optim.name=adamw"])
    assert out == {"optim": {"lr": 0.01, "name": "adamw"}, "max_steps": 20}
    with pytest.raises(SystemExit, match="unknown field 'lrr'"):
        _apply_overrides(cfg, ["optim.lrr=1"])
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        _apply_overrides(cfg, ["max_steps"])


def test_source_flags():
    assert _parse_sources(["AudioCaps=/a", "clotho=/b"]) == [("audiocaps", "/a"), ("clotho", "/b")]
    with pytest.raises(SystemExit, match="NAME=PATH"):
        _parse_sources(["audiocaps"])
    args = build_parser().parse_args(["pretrain", "--objective", "captioning", "--scale", "4M", "--set", "seed=1"])
    assert args.objective == "captioning" and args.scale == "4M" and args.set == ["seed=1"]
