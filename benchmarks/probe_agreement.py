"""Does the study's probe (audiolp.eval.linear, mean pooling) agree with the reference probe
(audiolp.eval.probe.logistic_probe) on MiniBench? (not a test)

For each encoder (``fbank``: the log-mel frames; ``zipformer_tiny`` / ``zipformer_xs`` etc.: that preset at random
init, seeded as `benchmarks/cpu_recipe.py` seeds its reference), both probes on the same cached embeddings of every
multiclass task; per task and mean over tasks, each with a 95% bootstrap interval (every task's test clips
resampled; for the study probe, clips' correctness averaged over its seeds), and the difference study - reference
with a paired interval (the same resampled clips for both probes). Embeddings come from --cache (an
``EmbeddingCache`` root; the cpu_recipe runs' ``runs/*/.embeddings`` hold these encoders), extracted if missing.

    .venv/bin/python -W ignore benchmarks/probe_agreement.py --registry data/ministew_full/tasks.json \
        --cache runs/recipe_refs/.embeddings --encoders fbank,zipformer_tiny,zipformer_xs \
        --out runs/probe_agreement.json
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--registry", default="data/ministew_full/tasks.json")
    ap.add_argument("--cache", default="runs/recipe_refs/.embeddings")
    ap.add_argument("--encoders", default="fbank,zipformer_tiny,zipformer_xs",
                    help="comma list: fbank, encoder presets at random init, or pretraining run dirs")
    ap.add_argument("--pooling", default="mean")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    from audiolp.data.tasks import load_task_registry, load_task_split
    from audiolp.eval.embed import EmbeddingCache, FbankFrames
    from audiolp.eval.linear import ProbeProtocol, linear_probe
    from audiolp.eval.probe import bootstrap_interval, logistic_probe
    from audiolp.models.zipformer import Zipformer, ZipformerConfig

    registry_path = Path(args.registry)
    specs = [s for s in load_task_registry(registry_path).values() if s.kind == "multiclass"]
    cache = EmbeddingCache(args.cache, progress=False)
    proto = ProbeProtocol()
    table = {}
    for name in [e for e in args.encoders.split(",") if e]:
        if name == "fbank":
            encoder = FbankFrames()
        elif Path(name).is_dir():  # a pretraining run dir: its final encoder
            from audiolp.models.io import load_encoder

            encoder = load_encoder(name, checkpoint="final", use_ema=False)
        else:
            torch.manual_seed(args.seed)
            encoder = Zipformer(ZipformerConfig.preset(name)).eval()
        ref, ours, seconds = [], [], 0.0
        for spec in specs:
            emb = {s: cache.get(encoder, load_task_split(spec, s, registry_path.parent), name=f"{spec.name}/{s}")
                   for s in ("train", "val", "test")}
            ref.append(logistic_probe(emb["train"], emb["val"], emb["test"], spec.labels, task=spec.name))
            t0 = time.perf_counter()
            ours.append(linear_probe(emb["train"], emb["val"], emb["test"], spec.labels, pooling=args.pooling,
                                     task=spec.name, protocol=proto))
            seconds += time.perf_counter() - t0
        row = {"reference": {"mean": float(np.mean([r.test for r in ref])),
                             "interval": bootstrap_interval([r.test_correct for r in ref]),
                             "tasks": {r.task: {"test": r.test, "interval": r.interval()} for r in ref}},
               "study": {"mean": float(np.mean([r.test for r in ours])),
                         "interval": bootstrap_interval([r.test_correct for r in ours]),
                         "tasks": {r.task: {"test": r.test, "interval": r.interval, "setting": r.setting}
                                   for r in ours}, "probe_s": seconds},
               "difference": {"mean": float(np.mean([o.test - r.test for o, r in zip(ours, ref)])),
                              "interval": bootstrap_interval([o.test_correct - r.test_correct
                                                              for o, r in zip(ours, ref)])}}
        table[name] = row
        (rlo, rhi), (slo, shi) = row["reference"]["interval"], row["study"]["interval"]
        print(f"[agreement] {name}: reference {row['reference']['mean']:.3f} [{rlo:.3f}, {rhi:.3f}], study "
              f"{row['study']['mean']:.3f} [{slo:.3f}, {shi:.3f}], difference {row['difference']['mean']:+.3f} "
              f"[{row['difference']['interval'][0]:+.3f}, {row['difference']['interval'][1]:+.3f}] "
              f"({seconds:.0f} s of study probes)", flush=True)
    tasks = [s.name for s in specs]
    print("\n| encoder | probe | " + " | ".join(tasks) + " | mean [95% CI] |")
    print("|---|---|" + "---:|" * (len(tasks) + 1))
    for name, row in table.items():
        for probe in ("reference", "study"):
            r = row[probe]
            print(f"| {name} | {probe} | " + " | ".join(f"{r['tasks'][t]['test']:.3f}" for t in tasks)
                  + f" | {r['mean']:.3f} [{r['interval'][0]:.3f}, {r['interval'][1]:.3f}] |")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"registry": str(registry_path), "pooling": args.pooling,
                                              "protocol": proto.__dict__, "table": table}, indent=1, default=list))
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
