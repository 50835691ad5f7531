"""How long `audiolp evaluate` takes for one checkpoint on all of MiniBench (not a test).

For each encoder preset: a cold run (empty embedding cache: audio read, fbank, encoder forward, then the probes)
and a warm run (embeddings read back from the cache, probes only), side by side in one process. The probe
records are written to a fresh folder each time, so the warm run still trains every probe.

    .venv/bin/python -W ignore benchmarks/eval_speed.py --registry data/ministew_full/tasks.json --presets zipformer_tiny \
        --threads 1   # on 2 shared cores one intra-op thread extracts faster (the probes use one either way)
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--registry", default="data/ministew_full/tasks.json")
    ap.add_argument("--presets", default="zipformer_tiny,zipformer_m")
    ap.add_argument("--pooling", nargs="+", default=["mean"])
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from audiolp.eval.run import evaluate
    from audiolp.models.zipformer import Zipformer, ZipformerConfig

    rows = []
    for preset in [p for p in args.presets.split(",") if p]:
        torch.manual_seed(0)
        encoder = Zipformer(ZipformerConfig.preset(preset)).eval()
        with tempfile.TemporaryDirectory() as tmp:
            cache = Path(tmp) / "cache"
            times = {}
            for label in ("cold", "warm"):
                t0 = time.perf_counter()
                records = evaluate({preset: encoder}, args.registry, tasks=["minibench"], poolings=tuple(args.pooling),
                                   baselines=(), out_dir=Path(tmp) / f"records_{label}", cache_dir=cache,
                                   log=lambda *a: None)
                times[label] = time.perf_counter() - t0
            rows.append((preset, len(records), times["cold"], times["warm"]))
            print(f"{preset}: {len(records)} records, cold {times['cold']:.0f} s, warm {times['warm']:.0f} s",
                  flush=True)
    print("\n| preset | records | cold cache (s) | warm cache (s) |\n|---|---:|---:|---:|")
    for preset, n, cold, warm in rows:
        print(f"| {preset} | {n} | {cold:.0f} | {warm:.0f} |")


if __name__ == "__main__":
    main()
