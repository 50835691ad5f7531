"""Zipformer speed / memory / FLOPs benchmark (not a test).

Measures, for each model size, with clips of --seconds seconds (100*s - 2 fbank frames: Kaldi framing without edge
padding; the loader's lhotse framing gives 100*s, the same 248 output frames for 10 s):
- forward throughput (eval, no_grad) and forward+backward throughput (train mode, regularisers off), in seconds of
  audio processed per wall-clock second;
- peak memory: CUDA max_memory_allocated on GPU, peak process RSS on CPU (each model runs in its own subprocess
  so the RSS figure is per model);
- FLOPs per second of audio (forward, and forward+backward) counted by torch.utils.flop_counter.FlopCounterMode on a
  batch of one clip (matmul/conv FLOPs; elementwise ops are not counted; conv backward taken as 2x conv forward
  because the counter's conv-backward formula ignores groups and overcounts depthwise convs).
On CUDA the model runs under bf16 autocast (the study's setting); on CPU in float32 unless --bf16.

    .venv/bin/python benchmarks/zipformer_speed.py --models tiny,s,m --batch 8 --seconds 10 --reps 3
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from contextlib import nullcontext

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from audiolp.models.zipformer import Zipformer, ZipformerConfig, count_parameters  # noqa: E402

PRESET = {"tiny": "zipformer_tiny", "xs": "zipformer_xs", "s": "zipformer_s", "m": "zipformer_m"}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _flops(model, frames: int, device, amp) -> tuple:
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(1, frames, 80, device=device)
    lengths = torch.tensor([frames], device=device)
    model.eval()
    with torch.no_grad(), amp(), FlopCounterMode(display=False) as fc:
        model(x, lengths)
    fwd = fc.get_total_flops()
    model.train()
    with amp(), FlopCounterMode(display=False) as fc:
        y, _ = model(x, lengths)
        y.float().pow(2).mean().backward()
    model.zero_grad(set_to_none=True)
    counts = {str(k): v for k, v in fc.get_flop_counts()["Global"].items()}
    # The counter's convolution_backward formula ignores `groups`, so depthwise convs come out ~channels x too
    # large; count a conv's backward as 2x its forward (grad wrt input + grad wrt weight) instead.
    conv_bwd = counts.get("aten.convolution_backward", 0)
    fwd_bwd = fc.get_total_flops() - conv_bwd + 2 * counts.get("aten.convolution", 0)
    return fwd, fwd_bwd


def run_one(name: str, args) -> dict:
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    use_bf16 = device.type == "cuda" or args.bf16
    amp = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_bf16 else nullcontext
    torch.manual_seed(0)
    model = Zipformer(ZipformerConfig.preset(PRESET[name])).to(device)
    frames = int(round(args.seconds * 100)) - 2
    x = torch.randn(args.batch, frames, 80, device=device)
    lengths = torch.full((args.batch,), frames, device=device, dtype=torch.long)
    audio_s = args.batch * args.seconds
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def fwd():
        with torch.no_grad(), amp():
            model(x, lengths)

    def fwd_bwd():
        with amp():
            y, _ = model(x, lengths)
            loss = y.float().pow(2).mean()
        loss.backward()
        model.zero_grad(set_to_none=True)

    out = {"model": name, "params": count_parameters(model), "device": str(device),
           "dtype": "bf16-autocast" if use_bf16 else "fp32", "batch": args.batch, "seconds": args.seconds,
           "frames": frames, "torch_threads": torch.get_num_threads()}
    def best_time(fn) -> float:
        for _ in range(args.warmup):
            fn()
        _sync(device)
        times = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times.append(time.perf_counter() - t0)
        return min(times)

    for label, fn, mode in (("fwd", fwd, "eval"), ("fwd_bwd", fwd_bwd, "train")):
        getattr(model, mode)()
        best = best_time(fn)
        out[f"{label}_s_per_batch"] = best
        out[f"{label}_audio_s_per_s"] = audio_s / best
    if args.constraints:
        # The same model with Balancer/Whiten on, at batch 0 where they fire most often (Balancers p=0.5,
        # Whitens p=0.25): the worst-case training cost of the constraints, side by side with the plain step.
        model.config.activation_constraints = True
        model.set_batch_count(0)
        model.train()
        torch.manual_seed(0)
        out["fwd_bwd_constrained_audio_s_per_s"] = audio_s / best_time(fwd_bwd)
        model.config.activation_constraints = False
        model.set_batch_count(None)
    if device.type == "cuda":
        out["peak_mem_MiB"] = torch.cuda.max_memory_allocated() / 2 ** 20
    else:
        out["peak_rss_MiB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if not args.no_flops:
        f, fb = _flops(model, frames, device, amp)
        out["fwd_GFLOP_per_audio_s"] = f / args.seconds / 1e9
        out["fwd_bwd_GFLOP_per_audio_s"] = fb / args.seconds / 1e9
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="tiny,s,m", help="comma list of tiny,xs,s,m")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast on CPU too")
    ap.add_argument("--no-flops", action="store_true")
    ap.add_argument("--constraints", action="store_true",
                    help="also time forward+backward with the Balancer/Whiten constraints on")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch default)")
    ap.add_argument("--json", default=None, help="write the results list here")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    names = [n.strip().lower() for n in args.models.split(",") if n.strip()]
    bad = [n for n in names if n not in PRESET]
    if bad:
        ap.error(f"unknown model(s) {bad}; choose from {sorted(PRESET)}")
    if args.child:
        if args.threads > 0:
            torch.set_num_threads(args.threads)
        print(json.dumps(run_one(names[0], args)))
        return
    results = []
    for n in names:
        # One subprocess per model: a clean peak-RSS figure and no allocator carry-over.
        cmd = [sys.executable, os.path.abspath(__file__), "--child", "--models", n, "--batch", str(args.batch),
               "--seconds", str(args.seconds), "--reps", str(args.reps), "--warmup", str(args.warmup),
               "--device", args.device, "--threads", str(args.threads)] + (["--bf16"] if args.bf16 else []) + (
                   ["--no-flops"] if args.no_flops else []) + (["--constraints"] if args.constraints else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            raise SystemExit(f"benchmark of {n} failed (exit {proc.returncode})")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(r)
        mem = r.get("peak_mem_MiB", r.get("peak_rss_MiB"))
        print(f"{n:>4}  params {r['params']:>11,}  fwd {r['fwd_audio_s_per_s']:9.1f} audio-s/s  "
              f"fwd+bwd {r['fwd_bwd_audio_s_per_s']:9.1f} audio-s/s  peak {mem:8.0f} MiB  "
              f"GFLOP/audio-s fwd {r.get('fwd_GFLOP_per_audio_s', float('nan')):.2f} "
              f"fwd+bwd {r.get('fwd_bwd_GFLOP_per_audio_s', float('nan')):.2f}  [{r['device']}, {r['dtype']}]"
              + (f"  fwd+bwd with constraints {r['fwd_bwd_constrained_audio_s_per_s']:.1f} audio-s/s"
                 if "fwd_bwd_constrained_audio_s_per_s" in r else ""), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
