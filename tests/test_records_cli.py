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
    free = _apply_overrides({"objective_config": {}}, ["objective_config.tokenizer=facebook/bart-base"])
    assert free == {"objective_config": {"tokenizer": "facebook/bart-base"}}
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        _apply_overrides(cfg, ["max_steps"])


def test_source_flags():
    assert _parse_sources(["AudioCaps=/a", "clotho=/b"]) == [("audiocaps", "/a"), ("clotho", "/b")]
    with pytest.raises(SystemExit, match="NAME=PATH"):
        _parse_sources(["audiocaps"])
    args = build_parser().parse_args(["pretrain", "--objective", "captioning", "--scale", "4M", "--set", "seed=1"])
    assert args.objective == "captioning" and args.scale == "4M" and args.set == ["seed=1"]


def test_prepare_captionstew_and_stats_from_the_command_line(tmp_path, capsys):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    import fixtures_sources as F

    from audiolp.cli import main
    from audiolp.data.schema import load_manifest

    corpora = F.make_all(tmp_path / "corpora")
    psc = corpora["paraspeechcaps"]
    argv = ["prepare", "captionstew", "--out", str(tmp_path / "stew")]
    for name, root in corpora.items():
        argv += ["--source", f"{name}={root}"]
    argv += ["--option", f"paraspeechcaps.audio_root={psc / 'corpora'}",
             "--option", f'paraspeechcaps.audio_roots={json.dumps({"voxceleb": str(psc / "corpora" / "VoxCeleb")})}']
    assert main(argv) == 0
    assert len(load_manifest(tmp_path / "stew" / "cuts.jsonl.gz")) == 14  # as the Python API gives (test_stew)
    capsys.readouterr()
    assert main(["stats", str(tmp_path / "stew"), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["overall"]["clips"] == 14 and stats["overall"]["captions"] == 24
    assert main(["prepare", "captionstew", "--out", str(tmp_path / "x"), "--source", f"clotho={corpora['clotho']}",
                 "--option", "musiccaps.foo=1"]) == 2  # one line on stderr
    assert "no --source gives" in capsys.readouterr().err


def test_loss_figure_is_built_from_records_only(tmp_path):
    import numpy as np

    from audiolp.study.figures import moving_average, plot_pretrain_losses

    np.testing.assert_allclose(moving_average([1, 2, 3, 4], 2), [1.0, 1.5, 2.5, 3.5])
    for name, curve in (("contrastive", [[1, 2.0], [2, 1.5], [3, 1.0]]), ("captioning", [[1, 9.0], [2, 8.0]])):
        write_record(tmp_path, "pretrain", name, {}, {"loss_curve": curve})
    out = plot_pretrain_losses(read_records(tmp_path), tmp_path / "fig" / "loss.png")
    assert out.exists() and out.stat().st_size > 5_000
    with pytest.raises(ValueError, match="no pretraining record"):
        plot_pretrain_losses([], tmp_path / "none.png")


def test_pretrain_from_the_command_line_then_load_the_encoder(tiny_ministew, tmp_path):
    import torch

    import audiolp
    from audiolp.cli import main

    run_dir = tmp_path / "run"
    argv = ["pretrain", "--objective", "tagging", "--data", str(tiny_ministew / "cuts.jsonl.gz"), "--scale", "1M",
            "--preset", "demo_cpu", "--run-dir", str(run_dir), "--max-steps", "3",
            "--set", "loader.max_duration=20", "--set", "checkpoint_every=2", "--set", "progress=false"]
    assert main(argv) == 0
    res = json.loads((run_dir / "results.json").read_text())
    assert res["steps"] == 3 and res["objective"] == "tagging" and res["completed"]
    # 1M of 10.7M caption pairs maps to the same fraction of the tiny corpus' captions, and the run says so.
    info = res["scale_info"]
    assert info["mapped"] is True and info["unit"] == "captions"
    assert info["target"] == round(1_000_000 * info["available_captions"] / 10_700_000)
    assert info["captions"] >= info["target"] and info["fraction"] == pytest.approx(info["captions"] /
                                                                                     info["available_captions"])
    encoder = audiolp.load_encoder(run_dir)
    assert not any(p.requires_grad for p in encoder.parameters())
    frames, lens = encoder(torch.randn(2, 200, 80), torch.tensor([200, 150]))
    assert frames.shape == (2, 48, encoder.output_dim) and lens.tolist() == [48, 36]
