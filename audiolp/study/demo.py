"""`make demo`: the whole study on the built-in offline corpus, every notebook executed by papermill.

Stages: MiniStew (built once) -> each study notebook in order, executed into ``papermill_runs/<notebook>.ipynb``
(the notebooks pretrain, evaluate and draw; runs and probes are shared between them through the records) ->
every figure rebuilt from the records -> ``papermill_runs/SUMMARY.md`` (the findings table) -> a printed summary
of where everything is and how long each stage took (also in ``papermill_runs/demo_timings.json``).

``quick=True`` (``make demo QUICK=1``) runs the tiny MiniStew profile with a handful of steps: a check that the
pipeline runs end to end, not a result.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from audiolp.files import atomic_write_json
from audiolp.study.experiments import project_root


@dataclass
class DemoPlan:
    profile: str
    steps: int
    scales: str  # the scaling / init-ablation scale points
    probe: dict = field(default_factory=dict)  # probe protocol overrides
    max_points: int = 2000
    extra: dict = field(default_factory=dict)  # per-notebook parameters


PLANS = {
    # MiniStew full with the demo_cpu preset (README: "The paper setting, and where audiolp departs from it"),
    # sized for <= 2 hours on 2 cores (BENCHMARKS.md "make demo"): 13 pretraining runs of 300 steps (~14k s of audio
    # each), 3 scales, every encoder probed on all of MiniBench; the language tasks at 2 scales with short LiT /
    # decoder / QA training (one QA adapter step costs ~4-7 s on a CPU: the LLM's forward and backward).
    "full": DemoPlan(profile="full", steps=300, scales="1M,4M,full",
                     extra={"06_language_tasks": {"scales": "1M,full", "lit_steps": 150, "decoder_steps": 200,
                                                   "qa_steps": 30, "qa_questions_per_type": 10}}),
    # A pipeline check on the tiny profile (<= 10 minutes on 2 cores): numbers here mean nothing.
    "quick": DemoPlan(profile="tiny", steps=6, scales="1M,4M,full", probe={"seeds": [0], "learning_rates": [1e-2],
                                                                             "weight_decays": [1e-4], "epochs": 2,
                                                                             "min_steps": 10, "n_boot": 200},
                      max_points=200, extra={"06_language_tasks": {"scales": "1M,full", "lit_steps": 3,
                                                                    "decoder_steps": 3, "qa_steps": 3,
                                                                    "qa_questions_per_type": 3}}),
}

NOTEBOOKS = ("01_objective_gap", "02_pooling_sensitivity", "03_scaling", "04_init_ablation", "05_caption_tsne",
             "06_language_tasks")


def notebook_parameters(name: str, plan: DemoPlan, out: Path, figures: Path) -> dict:
    params = {"profile": plan.profile, "steps": plan.steps, "probe": json.dumps(plan.probe) if plan.probe else "",
              "out": str(out), "figures": str(figures), "device": "auto"}
    if name == "03_scaling":
        params["scales"] = plan.scales
    if name == "04_init_ablation":
        params["scales"] = ",".join(s for s in plan.scales.split(",") if s != "full")
        if len(params["scales"].split(",")) < 3:
            params["scales"] = plan.scales
    if name == "05_caption_tsne":
        params["max_points"] = plan.max_points
    return {**params, **plan.extra.get(name, {})}


def run_demo(quick: bool = False, out: str | Path | None = None, figures: str | Path | None = None,
             notebooks=NOTEBOOKS, log=print) -> int:
    import papermill

    from audiolp.study.figures import rebuild_figures
    from audiolp.study.summary import write_summary

    root = project_root()
    plan = PLANS["quick" if quick else "full"]
    out = Path(out) if out else root / "papermill_runs" / ("quick" if quick else "")
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)  # papermill writes the executed notebooks there
    figures = Path(figures).resolve() if figures else (root / "figures" / "quick" if quick else root / "figures")
    timings: dict[str, float] = {}
    t_all = time.time()
    if quick:
        log("[demo] QUICK: the tiny MiniStew profile and a few steps per run: a pipeline check, not a result")
    log(f"[demo] MiniStew ({plan.profile}) ...")
    t0 = time.time()
    from audiolp.study.experiments import Study

    Study.from_parameters(profile=plan.profile, out=str(out), figures=str(figures))  # builds MiniStew, fbank once
    timings["ministew"] = time.time() - t0
    for name in notebooks:
        t0 = time.time()
        params = notebook_parameters(name, plan, out, figures)
        log(f"[demo] {name} {params} ...")
        papermill.execute_notebook(str(root / "notebooks" / f"{name}.ipynb"), str(out / f"{name}.ipynb"),
                                   parameters=params, kernel_name="python3", progress_bar=False,
                                   cwd=str(root / "notebooks"))
        timings[name] = time.time() - t0
        log(f"[demo] {name}: {timings[name]:.0f} s")
    t0 = time.time()
    paths = rebuild_figures(out / "records", figures)
    summary = write_summary(out)
    timings["figures_and_summary"] = time.time() - t0
    timings["total"] = time.time() - t_all
    atomic_write_json(out / "demo_timings.json", timings)
    log(summary.read_text())
    log(f"[demo] done in {timings['total'] / 60:.1f} min "
        + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items() if k != "total"))
    log(f"[demo] executed notebooks: {out}/*.ipynb\n[demo] records: {out / 'records'}\n"
        f"[demo] figures ({len(paths)} files): {figures}\n[demo] summary: {summary}")
    return 0
