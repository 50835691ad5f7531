"""The command line: every error is one line naming the thing and the fix (exit 2, no traceback); the commands
that build MiniStew and run the demo work end to end on the tiny profile."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from audiolp.cli import main

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "audiolp.cli", *args], capture_output=True, text=True,
                          cwd=cwd or REPO, env=env, timeout=timeout)


def one_line_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout[-500:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and "Warning" not in ln]
    assert len(lines) == 1, r.stderr
    return lines[0]


@pytest.mark.parametrize("args, expected", [
    (["pretrain", "--preset", "demo_cpu", "--data", "x.jsonl.gz", "--scale", "12Q"],
     ["'12Q'", "400K"]),
    (["pretrain", "--preset", "no_such_preset"], ["no_such_preset", "demo_cpu", "paper"]),
    (["pretrain", "--preset", "demo_cpu", "--set", "optim.lrr=1"], ["lrr", "fields here"]),
    (["pretrain", "--preset", "demo_cpu", "--objective", "tagging", "--data", "/nonexistent/cuts.jsonl.gz",
      "--run-dir", "RUN"], ["/nonexistent/cuts.jsonl.gz"]),
    (["prepare", "captionstew", "--source", "audiocaps=/nonexistent/audiocaps", "--out", "OUT"],
     ["/nonexistent/audiocaps"]),
    (["prepare", "captionstew", "--source", "audiocapz=/tmp", "--out", "OUT"], ["audiocapz", "audiocaps"]),
    (["pretrain", "--objective", "nope"], ["nope", "contrastive"]),
])
def test_cli_errors_are_one_line(tmp_path, args, expected):
    args = [a.replace("RUN", str(tmp_path / "run")).replace("OUT", str(tmp_path / "out")) for a in args]
    line = one_line_error(run_cli(*args, cwd=tmp_path))
    for word in expected:
        assert word in line, line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_debug_shows_the_traceback(tmp_path):
    r = run_cli("pretrain", "--preset", "demo_cpu", "--data", "x.jsonl.gz", "--scale", "12Q", "--debug", cwd=tmp_path)
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_paper_preset_offline_fails_fast_naming_the_model_and_the_fix(tiny_ministew, tmp_path):
    t0 = time.monotonic()
    r = run_cli("pretrain", "--preset", "paper", "--objective", "contrastive", "--data",
                str(tiny_ministew / "cuts.jsonl.gz"), "--run-dir", str(tmp_path / "run"), cwd=tmp_path)
    elapsed = time.monotonic() - t0
    line = one_line_error(r)
    assert "bert-base-uncased" in line and "offline" in line and "--preset demo_cpu" in line, line
    assert elapsed < 10, f"took {elapsed:.1f} s"  # interpreter start + torch import included
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_prepare_ministew_tiny_builds_and_prints_the_card(tmp_path, capsys):
    out = tmp_path / "ministew"
    assert main(["prepare", "ministew", "--profile", "tiny", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    info = json.loads((out / "build_info.json").read_text())
    n = sum(1 for _ in __import__("gzip").open(out / "cuts.jsonl.gz", "rt"))
    assert info["profile"] == "tiny" and n > 100 and "MiniStew (tiny) ready" in printed
    assert (out / "tasks.json").exists() and (out / "CARD.md").exists()


def test_figures_rebuilds_from_records_and_names_a_missing_folder(tmp_path, capsys):
    """`audiolp figures` (make figures) draws from records only; no records folder is one line, exit 2."""
    from audiolp.files import write_record

    assert main(["figures", "--out", str(tmp_path / "nothing"), "--figures", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "records" in err and "make demo" in err
    records = tmp_path / "study" / "records" / "eval"
    for enc, base in (("contrastive@1M", 0.6), ("captioning@1M", 0.5), ("contrastive@full", 0.62),
                      ("captioning@full", 0.6), ("random_init", 0.4), ("fbank", 0.45)):
        for task, shift in (("a", 0.0), ("b", 0.1)):
            write_record(records, "probe", f"{enc}__{task}__mean",
                         {"encoder": enc, "task": task, "pooling": "mean", "kind": "multiclass"},
                         {"test": base + shift, "interval": [base + shift - 0.03, base + shift + 0.03]})
    assert main(["figures", "--out", str(tmp_path / "study"), "--figures", str(tmp_path / "f")]) == 0
    for stem in ("01_objective_gap_1M", "01_objective_gap_full", "03_scaling"):
        assert (tmp_path / "f" / f"{stem}.png").stat().st_size > 10_000 and (tmp_path / "f" / f"{stem}.pdf").exists()
    summary = (tmp_path / "study" / "SUMMARY.md").read_text()
    assert "| 1 | contrastive is more data-efficient" in summary and "+0.100 [" in summary
