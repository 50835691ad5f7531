"""The study's numbers from records: differences with intervals, scaling fits, the crossover, the findings table,
and the notebooks' parameter checks (each a clear ParameterError)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from audiolp.study.analysis import (Score, contrast, crossover, fit_scaling, gap, mean_score, parse_run_name,
                                   probe_scores, scale_size)
from audiolp.study.experiments import ParameterError, Study, check_objectives, check_scale


def probe(encoder: str, task: str, test: float, half: float, pooling: str = "mean", kind: str = "multiclass",
          per_clip=None, clips: str = "test-clips") -> dict:
    metrics = {"test": test, "interval": [test - half, test + half]}
    if per_clip is not None:
        metrics.update(test_per_clip=list(per_clip), test_clips=clips)
    return {"kind": "probe", "name": f"{encoder}__{task}__{pooling}",
            "params": {"encoder": encoder, "task": task, "pooling": pooling, "kind": kind}, "metrics": metrics}


def correct_on(n_correct: int, n: int = 1000) -> np.ndarray:
    return (np.arange(n) < n_correct).astype(float)


def test_difference_and_mean_intervals():
    a, b = Score(0.7, 0.67, 0.73), Score(0.6, 0.56, 0.64)
    d = a - b
    assert d.value == pytest.approx(0.1) and d.half == pytest.approx(0.05)  # sqrt(0.03^2 + 0.04^2)
    assert d.excludes_zero() and not (Score(0.0, -0.01, 0.01)).excludes_zero()
    m = mean_score([Score(0.5, 0.44, 0.56), Score(0.7, 0.62, 0.78)])
    assert m.value == pytest.approx(0.6) and m.half == pytest.approx(0.05)  # sqrt(0.06^2 + 0.08^2) / 2


def test_gap_from_records_per_task_and_mean():
    recs = [probe("contrastive@1M", "a", 0.8, 0.03), probe("contrastive@1M", "b", 0.6, 0.04),
            probe("captioning@1M", "a", 0.7, 0.04), probe("captioning@1M", "b", 0.6, 0.03),
            probe("captioning@1M", "c", 0.9, 0.01), probe("contrastive@1M", "a", 0.1, 0.01, pooling="attention")]
    per_task, mean = gap(recs, "contrastive@1M", "captioning@1M")
    assert set(per_task) == {"a", "b"}  # task c has one side only
    assert per_task["a"].value == pytest.approx(0.1) and per_task["b"].value == pytest.approx(0.0)
    assert mean.value == pytest.approx(0.05)
    assert probe_scores(recs, "contrastive@1M", "attention")["a"].value == pytest.approx(0.1)


def test_scaling_fit_recovers_a_known_line_and_the_crossover():
    sizes = [4e5, 1e6, 4e6, 1.07e7]
    # Intervals around exact line values: the fit is exact, the slope interval holds the true slope.
    early = fit_scaling("contrastive", "t", [(n, Score(v, v - 0.01, v + 0.01)) for n in sizes
                                             for v in [0.6 + 0.01 * math.log10(n)]])
    assert early.slope == pytest.approx(0.01) and early.intercept == pytest.approx(0.6)
    assert early.slope_interval[0] < 0.01 < early.slope_interval[1]
    late = fit_scaling("captioning", "t", [(n, Score(v, v - 0.01, v + 0.01)) for n in sizes
                                           for v in [0.3 + 0.06 * math.log10(n)]])
    c = crossover(early, late)  # 0.6 + 0.01 x = 0.3 + 0.06 x  ->  x = 6  ->  1M caption pairs
    assert c.size == pytest.approx(1e6, rel=1e-6) and c.inside_range
    assert c.interval[0] < 1e6 < c.interval[1] and c.share_crossing > 0.95
    never = crossover(late, early)  # the slower line leads at 400K and is overtaken at 1M: it never overtakes
    assert never.size is None and "already at the smallest scale" in never.verdict and "narrows" in never.verdict
    with pytest.raises(ValueError, match=">= 2 scales"):
        fit_scaling("x", "t", [(1e6, Score(0.5, 0.4, 0.6))])


def test_run_names_and_scales():
    assert parse_run_name("contrastive+tagging@1M") == ("contrastive", "tagging", "1M")
    assert parse_run_name("captioning@full") == ("captioning", None, "full")
    assert parse_run_name("random_init") == ("random_init", None, "")
    assert check_scale("4M") == "4M" and check_scale("all") == "full" and check_scale(400000) == "400000"
    assert scale_size("400K") == 4e5 and scale_size("full") == 10.7e6
    with pytest.raises(ParameterError, match="scale='4X' is not a scale"):
        check_scale("4X")
    with pytest.raises(ParameterError, match="unknown objective"):
        check_objectives("contrastive,clap")


@pytest.mark.parametrize("kwargs, message", [
    ({"steps": "many"}, "steps='many'"),
    ({"device": "tpu"}, "device='tpu'"),
    ({"preset": "nope"}, "preset='nope'"),
    ({"model": "zipformer_xxl"}, "model='zipformer_xxl'"),
    ({"overrides": "{not json"}, "overrides="),
    ({"corpus": "/no/such/corpus"}, "does not exist"),
    ({"probe": '{"sedes": [0]}'}, "probe="),
])
def test_bad_parameters_fail_with_one_clear_line(tiny_ministew, kwargs, message):
    params = {"corpus": str(tiny_ministew), **kwargs}
    with pytest.raises(ParameterError, match=message.replace("{", r"\{").replace("[", r"\[")) as e:
        Study.from_parameters(**params)
    assert "\n" not in str(e.value)


def test_findings_table_verdicts_from_records(tmp_path):
    from audiolp.study.summary import findings, summary_markdown

    recs = []
    for task in ("a", "b", "c"):
        for scale, c, k in (("400K", 0.70, 0.60), ("1M", 0.72, 0.66), ("4M", 0.74, 0.72)):
            recs += [probe(f"contrastive@{scale}", task, c, 0.02), probe(f"captioning@{scale}", task, k, 0.02)]
        recs += [probe("contrastive@4M", task, 0.75, 0.02, "attention"), probe("captioning@4M", task, 0.745, 0.02,
                                                                                "attention")]
        recs += [probe("contrastive+tagging@400K", task, 0.74, 0.02), probe("random_init", task, 0.5, 0.02),
                 probe("fbank", task, 0.55, 0.02)]
    by = {f.number: f for f in findings(recs)}
    assert by["1"].verdict == "reproduced" and by["1"].effect.value == pytest.approx(0.10)
    assert by["2"].verdict == "not measured"
    assert by["3"].effect.value == pytest.approx(0.02 - 0.005)  # |gap| 0.02 under mean, 0.005 under attention
    assert by["4"].verdict == "reproduced" and by["4"].effect.value == pytest.approx(0.04)
    assert by["5"].verdict == "not measured" and by["6"].verdict == "not measured"
    md = summary_markdown(recs)
    assert "| contrastive@400K | +0.200 [+0.184, +0.216] | +0.150 [+0.134, +0.166] | yes |" in md
    assert np.isfinite(by["1"].effect.lo)
    assert "premise not met" not in md and "| reproduced |" in md

    # The same comparisons between encoders no better than random init: the verdicts say the premise fails.
    weak = [r for r in recs if r["params"]["encoder"] != "random_init"] + [probe("random_init", t, 0.80, 0.02)
                                                                          for t in ("a", "b", "c")]
    md = summary_markdown(weak)
    assert "The premise does not hold" in md and "| reproduced (*premise not met*) |" in md


def test_parallel_lines_never_cross():
    flat = [(n, Score(0.5, 0.49, 0.51)) for n in (1e6, 1e7)]
    c = crossover(fit_scaling("contrastive", "t", flat), fit_scaling("captioning", "t", flat))
    assert c.size is None and "does not overtake" in c.verdict


def test_differences_on_the_same_clips_are_paired():
    # A is right on 820 of 1,000 clips, B on 800, and A is right wherever B is: 20 clips differ, all in A's favour.
    a, b = correct_on(820), correct_on(800)
    half = 1.96 * math.sqrt(0.81 * 0.19 / 1000)  # each score's own binomial half-width, ~0.024
    recs = [probe("contrastive@1M", "t", 0.82, half, per_clip=a), probe("captioning@1M", "t", 0.80, half, per_clip=b)]
    per_task, mean = gap(recs, "contrastive@1M", "captioning@1M")
    d = per_task["t"]
    sd = np.std(a - b, ddof=1)
    assert d.value == pytest.approx(0.02) and d.half == pytest.approx(1.959964 * sd / math.sqrt(1000), rel=1e-5)
    assert d.lo == pytest.approx(0.0113, abs=5e-4) and d.excludes_zero()  # paired: ~[+0.011, +0.029]
    unpaired = Score(0.82, 0.82 - half, 0.82 + half) - Score(0.80, 0.80 - half, 0.80 + half)
    assert not unpaired.excludes_zero() and unpaired.half > 3 * d.half  # independent: ~[-0.014, +0.054]
    assert mean.value == pytest.approx(0.02) and mean.half == pytest.approx(d.half)  # one task: the same interval
    # Other clips (another clip-set fingerprint) or a record without per-clip values: independent, never paired.
    other = probe("captioning@1M", "t", 0.80, half, per_clip=b, clips="other-clips")
    assert gap([recs[0], other], "contrastive@1M", "captioning@1M")[0]["t"].half == pytest.approx(unpaired.half)
    bare = probe("captioning@1M", "t", 0.80, half)
    assert gap([recs[0], bare], "contrastive@1M", "captioning@1M")[0]["t"].half == pytest.approx(unpaired.half)
    # A contrast of contrasts stays paired: (a - b) - (a - b) is exactly zero with a zero-width interval.
    z = contrast([(1.0, d), (-1.0, d)])
    assert z.value == 0 and z.half == 0 and z.paired


def test_finding_3_compares_absolute_gaps_and_finding_1_needs_a_small_scale():
    from audiolp.study.summary import findings

    recs = []
    for task in ("a", "b"):
        # mean pooling: contrastive +0.02; attention pooling: captioning ahead by 0.10 -- the gap widened by 0.08.
        recs += [probe("contrastive@full", task, 0.62, 0.01), probe("captioning@full", task, 0.60, 0.01),
                 probe("contrastive@full", task, 0.60, 0.01, "attention"),
                 probe("captioning@full", task, 0.70, 0.01, "attention")]
    by = {f.number: f for f in findings(recs)}
    assert by["3"].effect.value == pytest.approx(0.02 - 0.10) and by["3"].verdict == "not reproduced"
    # Only the full corpus was run: "wins at small scale" is not measured, and the detail says what is missing.
    assert by["1"].verdict == "not measured" and "below full" in by["1"].detail


def test_crossover_when_late_leads_from_the_start():
    sizes = [4e5, 1e6, 4e6, 1.07e7]
    early = fit_scaling("contrastive", "t", [(n, Score(v, v - 0.005, v + 0.005)) for n in sizes
                                             for v in [0.40 + 0.01 * math.log10(n)]])
    late = fit_scaling("captioning", "t", [(n, Score(v, v - 0.005, v + 0.005)) for n in sizes
                                           for v in [0.40 + 0.03 * math.log10(n)]])
    c = crossover(early, late)  # the lines meet at 1 caption pair: captioning leads over the whole range
    assert c.size is None and "ahead of contrastive already at the smallest scale" in c.verdict
    assert "grows" in c.verdict and "does not overtake" not in c.verdict


def test_summary_warns_when_runs_mix_training_settings():
    from audiolp.study.summary import summary_markdown

    def pretrain(name, steps):
        return {"kind": "pretrain", "name": name,
                "params": {"preset": "demo_cpu", "model": "zipformer_tiny", "steps": steps, "seed": 0}}

    recs = [probe("contrastive@1M", "a", 0.6, 0.02), probe("random_init", "a", 0.5, 0.02)]
    assert "mix training settings" not in summary_markdown(recs + [pretrain("contrastive@1M", 300),
                                                                   pretrain("captioning@1M", 300)])
    md = summary_markdown(recs + [pretrain("contrastive@1M", 300), pretrain("contrastive@4M", 1200)])
    assert "**These records mix training settings**" in md and "steps 1200, seed 0: contrastive@4M" in md
