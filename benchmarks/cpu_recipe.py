"""Does pretraining on MiniStew give a better representation than no pretraining? (not a test)

Pretrains one encoder per objective with a preset on the built-in corpus, then probes every encoder on MiniBench's
multiclass tasks with the reference probe (frozen encoder; per-clip mean and std of its frames, standardised;
logistic regression with C chosen on val), next to the two references: the same preset at random init, and the
fbank frames themselves. Prints per-task test accuracy, the mean over tasks with a 95% bootstrap interval (test
clips of every task resampled), wall time and seconds of audio seen per run; writes the table as JSON.

    .venv/bin/python benchmarks/cpu_recipe.py --corpus data/ministew_full --preset demo_cpu --steps 800 \
        --out runs/cpu_recipe

Runs already finished in --out are reused (a run dir resumes; a finished one is read back), and embeddings are
cached per encoder, so a rerun only computes what changed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def parse_value(raw: str):
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def dotted(overrides: list[str]) -> dict:
    """KEY=VALUE (dotted keys) -> nested dict."""
    out: dict = {}
    for item in overrides:
        key, _, raw = item.partition("=")
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = parse_value(raw)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="data/ministew_full", help="MiniStew folder (tasks.json, cuts.jsonl.gz)")
    ap.add_argument("--data", default="", help="training manifest (default CORPUS/cuts.jsonl.gz), e.g. the "
                                               "precomputed-fbank one from `audiolp prepare features`")
    ap.add_argument("--preset", default="demo_cpu")
    ap.add_argument("--objectives", default="tagging,contrastive,captioning")
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/cpu_recipe")
    ap.add_argument("--set", action="append", default=[], help="KEY=VALUE TrainConfig override (all objectives)")
    ap.add_argument("--tasks", default="", help="comma list (default: every multiclass MiniBench task)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--cache", default="runs/.embeddings", help="embedding cache, shared between recipes (the "
                                                                 "references are extracted once)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from audiolp.eval.embed import EmbeddingCache, FbankFrames
    from audiolp.eval.probe import bootstrap_interval, probe_registry
    from audiolp.models.io import load_encoder
    from audiolp.models.zipformer import Zipformer
    from audiolp.train.config import TrainConfig
    from audiolp.train.state import seed_everything
    from audiolp.train.trainer import train

    corpus, out = Path(args.corpus), Path(args.out)
    registry = corpus / "tasks.json"
    tasks = [t for t in args.tasks.split(",") if t] or None
    cache = EmbeddingCache(args.cache, progress=False)
    overrides = dotted(args.set)
    runs = {}
    for objective in [o for o in args.objectives.split(",") if o]:
        cfg = TrainConfig.from_preset(args.preset, {**overrides, "objective": objective,
                                                    "data": args.data or str(corpus / "cuts.jsonl.gz"),
                                                    "max_steps": args.steps,
                                                    "seed": args.seed, "run_dir": str(out / objective),
                                                    "checkpoint_every": max(1, args.steps // 2),
                                                    "log_every": max(1, args.steps // 50), "progress": False})
        t0 = time.time()
        run_dir = Path(train(cfg))
        res = json.loads((run_dir / "results.json").read_text())
        runs[objective] = {"wall_time_s": res["wall_time_s"], "audio_seconds": res["audio_seconds_total"],
                           "first_loss": res["first_loss"], "final_loss": res["final_loss_mean_last_10pct"],
                           "this_call_s": time.time() - t0}
        print(f"[recipe] {objective}: {res['steps']} steps, {res['audio_seconds_total']:.0f} s of audio, "
              f"{res['wall_time_s']:.0f} s, loss {res['first_loss']:.3f} -> {res['final_loss_mean_last_10pct']:.3f}",
              flush=True)

    reference_cfg = TrainConfig.from_preset(args.preset, {**overrides, "seed": args.seed})
    seed_everything(args.seed)  # the same initial weights the runs started from
    encoders = {"fbank": FbankFrames(), "random_init": Zipformer(reference_cfg.encoder_config()).eval()}
    for objective in runs:
        encoders[objective] = load_encoder(out / objective, checkpoint="final", use_ema=False)
    table = {}
    for name, enc in encoders.items():
        t0 = time.time()
        results = probe_registry(enc, registry, cache, tasks=tasks)
        lo, hi = bootstrap_interval([r.test_correct for r in results])
        table[name] = {"mean": float(np.mean([r.test for r in results])), "interval": [lo, hi],
                       "tasks": {r.task: {"test": r.test, "val": r.val, "C": r.setting["C"], "n_test": r.n_test,
                                          "interval": list(r.interval())} for r in results},
                       "probe_s": time.time() - t0, **runs.get(name, {})}
        print(f"[recipe] {name:>12}: mean {table[name]['mean']:.3f} [{lo:.3f}, {hi:.3f}]  "
              + "  ".join(f"{r.task} {r.test:.2f}" for r in results), flush=True)

    task_names = list(next(iter(table.values()))["tasks"])
    print("\n| encoder | " + " | ".join(task_names) + " | mean [95% CI] | wall s | audio s |")
    print("|---|" + "---:|" * (len(task_names) + 3))
    for name, row in table.items():
        print(f"| {name} | " + " | ".join(f"{row['tasks'][t]['test']:.3f}" for t in task_names)
              + f" | {row['mean']:.3f} [{row['interval'][0]:.3f}, {row['interval'][1]:.3f}]"
              + f" | {row.get('wall_time_s', 0):.0f} | {row.get('audio_seconds', 0):.0f} |")
    (out / "cpu_recipe.json").write_text(json.dumps({"preset": args.preset, "steps": args.steps, "seed": args.seed,
                                                     "overrides": overrides, "table": table}, indent=1))
    print(f"\nwrote {out / 'cpu_recipe.json'}")


if __name__ == "__main__":
    main()
