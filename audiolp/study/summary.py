"""The study's summary page: each of the paper's findings, what the records show (effect with 95% interval), and a
verdict (reproduced / not reproduced / inconclusive / not measured), plus the premise every finding rests on
(pretrained encoders above random init and fbank). Generated from results records only.

Verdicts: "reproduced" when the effect's interval lies on the paper's side of zero, "not reproduced" when it lies
on the other side, "inconclusive" when it holds zero, "not measured" when the records needed are missing.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from audiolp.files import atomic_write_text
from audiolp.study.analysis import (Score, classification_tasks, contrast, fit_scaling, gap, mean_score,
                                    parse_run_name, probe_scores, scale_size)
from audiolp.study.records import read_records


@dataclass
class Finding:
    number: str
    claim: str
    measure: str
    effect: Score | None
    verdict: str
    detail: str = ""


def _verdict(effect: Score | None, sign: int = 1) -> str:
    if effect is None:
        return "not measured"
    if (effect.lo > 0 and sign > 0) or (effect.hi < 0 and sign < 0):
        return "reproduced"
    if (effect.hi < 0 and sign > 0) or (effect.lo > 0 and sign < 0):
        return "not reproduced"
    return "inconclusive"


def _scaled_runs(probes: list[dict], objective: str, init: str | None = None) -> dict[str, str]:
    """scale -> encoder name of ``objective`` runs (from ``init``) that have probe records."""
    out = {}
    for enc in dict.fromkeys(r["params"]["encoder"] for r in probes):
        o, i, s = parse_run_name(enc)
        if o == objective and i == init and s:
            out[s] = enc
    return out


def _by_size(scales: dict[str, str]) -> list[tuple[str, str]]:
    return sorted(scales.items(), key=lambda kv: scale_size(kv[0]))


def _tasks(probes: list[dict], kinds: tuple[str, ...]) -> list[str]:
    return list(dict.fromkeys(r["params"]["task"] for r in probes if r["params"].get("kind") in kinds))


def premise(probes: list[dict]) -> list[Finding]:
    """Each pretrained encoder's mean probe score over the classification tasks minus random init's and fbank's."""
    tasks = classification_tasks(probes)
    out = []
    for enc in dict.fromkeys(r["params"]["encoder"] for r in probes):
        if enc in ("random_init", "fbank"):
            continue
        for ref in ("random_init", "fbank"):
            per_task, d = gap(probes, enc, ref, "mean", tasks)
            if d is not None:
                out.append(Finding("0", f"pretraining beats {ref}", f"{enc} - {ref}, mean over {len(per_task)} tasks",
                                   d, _verdict(d)))
    return out


def findings(records: list[dict]) -> list[Finding]:
    probes = [r for r in records if r.get("kind") == "probe"]
    tasks = classification_tasks(probes)
    out: list[Finding] = []

    # 1. Contrastive wins linear probing at small scale.
    con, cap = _by_size(_scaled_runs(probes, "contrastive")), _by_size(_scaled_runs(probes, "captioning"))
    common = [s for s, _ in con if s in dict(cap)]
    # "Small scale" needs a scale point below the whole corpus: a gap measured at full says nothing about it.
    small = common[0] if common and scale_size(common[0]) < scale_size("full") else None
    eff = gap(probes, f"contrastive@{small}", f"captioning@{small}", "mean", tasks)[1] if small else None
    out.append(Finding("1", "contrastive is more data-efficient: it wins linear probing at small scale",
                       f"contrastive - captioning at {small or 'a scale below full'}, mean probe score", eff,
                       _verdict(eff), "" if small or not common else "needs both objectives at a scale below full "
                       "(03_scaling)"))

    # 2. Captioning scales better on language-involved tasks (retrieval, captioning, QA records across scales).
    lang = [r for r in records if r.get("kind") in ("retrieval", "captioning", "qa")]
    eff2, detail2 = _language_slope_gap(lang)
    out.append(Finding("2", "captioning scales better on language-involved tasks",
                       "slope(captioning) - slope(contrastive) of the language-task score per decade of data",
                       eff2, _verdict(eff2), detail2))

    # 3. Attention pooling narrows the gap.
    eff3, where = None, "?"
    for s in common[::-1]:
        a, b = f"contrastive@{s}", f"captioning@{s}"
        by_mean, _ = gap(probes, a, b, "mean", tasks)
        by_att, _ = gap(probes, a, b, "attention", tasks)
        both = [t for t in by_mean if t in by_att]
        if both:
            # abs(mean gap) - abs(attention gap), each sign taken from its mean over tasks; per task a signed sum
            # of the four encoders' scores on the same clips (paired where the records hold per-clip values).
            sign_m = 1.0 if mean_score([by_mean[t] for t in both]).value >= 0 else -1.0
            sign_a = 1.0 if mean_score([by_att[t] for t in both]).value >= 0 else -1.0
            eff3 = mean_score([contrast([(sign_m, by_mean[t]), (-sign_a, by_att[t])]) for t in both])
            where = s
            break
    out.append(Finding("3", "attention pooling narrows the contrastive-captioning gap",
                       f"abs(gap) under mean pooling - abs(gap) under attention pooling, at {where}", eff3, _verdict(eff3)))

    # 4. Tagging initialisation helps early, mostly for contrastive.
    eff4, detail4 = None, ""
    scratch, init = dict(_scaled_runs(probes, "contrastive")), _by_size(_scaled_runs(probes, "contrastive", "tagging"))
    gains = [(s, gap(probes, enc, scratch[s], "mean", tasks)[1]) for s, enc in init if s in scratch]
    gains = [(s, g) for s, g in gains if g is not None]
    if gains:
        eff4 = gains[0][1]
        detail4 = "gain by scale: " + ", ".join(f"{s} {g.text()}" for s, g in gains)
    # Tested here: the gain for contrastive at the smallest scale; how it changes with scale is in the detail and in
    # 04's figure, and the comparison with captioning in 04's table.
    out.append(Finding("4", "supervised (tagging) initialisation helps early, mostly for contrastive",
                       f"contrastive from tagging - from scratch at {gains[0][0] if gains else '?'} (the smallest "
                       "scale)", eff4, _verdict(eff4), detail4))

    # 5. SED degrades as caption data grows.
    sed_tasks = _tasks(probes, ("sed",))
    eff5, detail5 = None, ""
    if sed_tasks and len(con) >= 2:
        pts = [(s, probe_scores(probes, enc, "frames").get(sed_tasks[0])) for s, enc in con]
        pts = [(s, sc) for s, sc in pts if sc is not None]
        if len({s for s, _ in pts}) >= 2:
            f = fit_scaling("contrastive", sed_tasks[0], [(scale_size(s), sc) for s, sc in pts])
            eff5 = Score(f.slope, *f.slope_interval)
            detail5 = f"{sed_tasks[0]}, contrastive runs at {', '.join(s for s, _ in pts)}"
    out.append(Finding("5", "SED degrades as caption data grows", "slope of SED segment F1 per decade of data",
                       eff5, _verdict(eff5, sign=-1), detail5))

    # 6. Caption embeddings cluster by source.
    tsne = [r for r in records if r.get("kind") == "tsne" and r["name"] == "captions_by_source"]
    eff6 = None
    if tsne:
        m = tsne[0]["metrics"]
        d = m["silhouette_2d"] - m["silhouette_2d_shuffled_p95"]
        eff6 = Score(d, d, d)
    out.append(Finding("6", "caption embeddings cluster by source (sources describe complementary aspects)",
                       "2-D silhouette by source - 95th percentile under shuffled sources", eff6, _verdict(eff6)))
    return out


def _language_slope_gap(lang: list[dict]) -> tuple[Score | None, str]:
    from audiolp.study.analysis import language_score

    by: dict[str, dict[str, list]] = {}
    for r in lang:
        o, i, s = parse_run_name(str(r["params"].get("encoder", "")))
        scored = language_score(r)
        if scored and i is None and s and o in ("contrastive", "captioning"):
            by.setdefault(scored[0], {}).setdefault(o, []).append((scale_size(s), scored[1]))
    diffs = []
    for panel, per in by.items():
        if all(len({p[0] for p in per.get(o, [])}) >= 2 for o in ("contrastive", "captioning")):
            fc, fk = (fit_scaling(o, panel, per[o]) for o in ("contrastive", "captioning"))
            diffs.append((panel, Score(fk.slope, *fk.slope_interval) - Score(fc.slope, *fc.slope_interval)))
    # Panels holding one objective only are named: e.g. captions from a captioning run's own decoder and from a
    # decoder trained on a contrastive encoder are different protocols, so they are not compared.
    one_sided = sorted(k for k, per in by.items() if k not in dict(diffs))
    skipped = f"; not compared (one objective or < 2 scales): {', '.join(one_sided)}" if one_sided else ""
    if not diffs:
        return None, "needs language-task records (06_language_tasks) at >= 2 scales for both objectives" + skipped
    return mean_score([d for _, d in diffs]), "; ".join(f"{k} {d.text()}" for k, d in diffs) + skipped


def _mixed_settings(records: list[dict]) -> list[str]:
    """A warning when the pretraining runs behind these records were trained with different settings (e.g. one scale
    point rerun with more steps): their differences then mix scale with training length."""
    groups: dict[tuple, list[str]] = {}
    for r in records:
        if r.get("kind") == "pretrain":
            key = tuple((k, r["params"].get(k)) for k in ("preset", "model", "steps", "seed"))
            groups.setdefault(key, []).append(str(r["name"]))
    if len(groups) <= 1:
        return []
    parts = "; ".join(", ".join(f"{k} {v}" for k, v in key) + f": {', '.join(sorted(names))}"
                      for key, names in groups.items())
    return ["", f"**These records mix training settings** ({parts}). Comparisons across these groups mix the effect "
            "studied with the training setting: rerun the notebooks with one setting (same `steps`, `preset`, "
            "`model`, `seed`) before reading the findings."]


def summary_markdown(records: list[dict]) -> str:
    probes = [r for r in records if r.get("kind") == "probe"]
    lines = ["# Study summary (generated from the results records by `audiolp.study.summary`)", "",
             "Effects are differences of test scores with 95% intervals (see audiolp/study/analysis.py: paired over "
             "test clips where the records hold per-clip scores, else combined as independent, which is wider). "
             "Verdict: reproduced / not reproduced when the interval excludes zero on the paper's / the other side, "
             "inconclusive when it holds zero.", *_mixed_settings(records), "",
             "## The premise: pretrained encoders above the references", "",
             "| encoder | minus random init [95% CI] | minus fbank [95% CI] | clears both |", "|---|---|---|---|"]
    rows: dict[str, dict[str, Finding]] = {}
    for f in premise(probes):
        rows.setdefault(f.measure.split(" - ")[0], {})[f.claim.rsplit(" ", 1)[-1]] = f
    for enc, by_ref in rows.items():
        cells = [by_ref[r].effect.text() if r in by_ref else "-" for r in ("random_init", "fbank")]
        both = all(r in by_ref and by_ref[r].verdict == "reproduced" for r in ("random_init", "fbank"))
        lines.append(f"| {enc} | " + " | ".join(cells) + f" | {'yes' if both else 'no'} |")
    above_random = [enc for enc, by_ref in rows.items()
                    if "random_init" in by_ref and by_ref["random_init"].verdict == "reproduced"]
    premise_met = bool(above_random)
    if rows and not premise_met:
        lines += ["", f"**The premise does not hold in these records**: none of the {len(rows)} pretrained encoders "
                  "scores above random init with an interval above zero. Findings 1-5 below then compare encoders "
                  "that are no better than no pretraining: their verdicts are computed as declared, but they are "
                  "not evidence for or against the paper (marked *premise not met*)."]
    elif len(above_random) < len(rows):
        lines += ["", f"{len(above_random)} of {len(rows)} pretrained encoders score above random init "
                  f"({', '.join(above_random)}); the findings also use the others."]
    lines += ["", "## The paper's findings", "", "| # | finding | measure | effect [95% CI] | verdict | detail |",
              "|---|---|---|---|---|---|"]
    for f in findings(records):
        # Finding 6 is about the captions (text embeddings): it does not rest on the audio encoders.
        verdict = f.verdict if premise_met or f.number == "6" or not rows else f"{f.verdict} (*premise not met*)"
        lines.append(f"| {f.number} | {f.claim} | {f.measure} | {f.effect.text() if f.effect else '-'} | "
                     f"{verdict} | {f.detail} |")
    return "\n".join(lines) + "\n"


def write_summary(out: str | os.PathLike) -> Path:
    """``<out>/SUMMARY.md`` from every record under ``<out>/records``."""
    out = Path(out)
    return atomic_write_text(out / "SUMMARY.md", summary_markdown(read_records(out / "records")))
