"""How long each language-involved protocol of `audiolp evaluate` takes for one checkpoint on a CPU (not a test).

One pretraining run dir, each protocol timed on its own, side by side in one process, with the settings of the
`make demo` plan (06_language_tasks): retrieval (the run's own heads when it is contrastive, plus LiT alignment),
caption generation (a decoder trained on the frozen encoder, or the run's own decoder for a captioning run, then
greedy captions for the test clips and the metrics), open-form QA (an adapter into frozen SmolLM2, and the
text-only control). Records go to a fresh folder, so nothing is read back; the embedding cache starts empty.

    .venv/bin/python -W ignore benchmarks/language_eval_speed.py --run papermill_runs/runs/contrastive@full-<hash> \
        --registry data/ministew_full/tasks.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a pretraining run dir")
    ap.add_argument("--registry", default="data/ministew_full/tasks.json")
    from audiolp.study.demo import PLANS

    demo = PLANS["full"].extra["06_language_tasks"]  # the make demo settings, unless overridden
    ap.add_argument("--lit-steps", type=int, default=demo["lit_steps"])
    ap.add_argument("--decoder-steps", type=int, default=demo["decoder_steps"])
    ap.add_argument("--qa-steps", type=int, default=demo["qa_steps"])
    ap.add_argument("--qa-questions-per-type", type=int, default=demo["qa_questions_per_type"])
    ap.add_argument("--protocols", default="retrieval,captioning,qa")
    args = ap.parse_args()
    if not os.path.isdir(args.run):
        sys.exit(f"--run {args.run!r} is not a run dir; give the --run-dir of a pretraining run")

    from audiolp.eval.captioning import DecoderProtocol
    from audiolp.eval.qa import QAProtocol
    from audiolp.eval.retrieval import LiTConfig
    from audiolp.eval.run import evaluate

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for protocol in [p for p in args.protocols.split(",") if p]:
            t0 = time.perf_counter()
            records = evaluate({"run": args.run}, args.registry, tasks=[protocol], baselines=(),
                               out_dir=os.path.join(tmp, protocol), cache_dir=os.path.join(tmp, "cache"),
                               captioning={"protocol": DecoderProtocol(max_steps=args.decoder_steps)},
                               qa_protocol=QAProtocol(steps=args.qa_steps,
                                                      max_test_questions_per_type=args.qa_questions_per_type),
                               lit=LiTConfig(steps=args.lit_steps), log=lambda *a: None)
            wall = time.perf_counter() - t0
            what = ", ".join(f"{r['kind']} {r['name']}" for r in records)
            rows.append({"protocol": protocol, "wall_s": round(wall, 1), "records": what})
            print(f"{protocol:>10}: {wall:7.1f} s  ({what})", flush=True)
    print(json.dumps({"run": args.run, "settings": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
