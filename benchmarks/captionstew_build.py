"""CaptionStew build cost: audio-header reads serial vs threads vs processes, and peak memory per clip.

Generates a synthetic Clotho-layout corpus in a temp dir (``clotho_captions_development.csv`` + audio under
``development/``) and builds it.

    .venv/bin/python benchmarks/captionstew_build.py headers --clips 3000 --workers 2
        distinct FLAC files; ms/clip of the header-reading load (serial / thread pool / process pool) and
        of a whole build_captionstew, and checks every variant gives the same cuts.
    .venv/bin/python benchmarks/captionstew_build.py memory --clips 200000 --workers 2
        one FLAC hard-linked under every clip name; builds in a fresh subprocess and prints its peak RSS
        (ru_maxrss) per clip, with the interpreter + imports baseline subtracted. The child imports audiolp
        from the current directory first: to measure another revision, run from its checkout, e.g.
        ``git archive HEAD audiolp | tar -x -C /tmp/head && cd /tmp/head && \
        /work/main/.venv/bin/python /work/main/benchmarks/captionstew_build.py memory``.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf


def make_corpus(root: Path, n: int, distinct: bool, seconds: float = 0.5, sr: int = 16000) -> Path:
    """Clotho layout with ``n`` clips; ``distinct=False`` hard-links one file under every name (cheap)."""
    audio = root / "development"
    audio.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    first = audio / "clip0000000.flac"
    sf.write(first, rng.uniform(-0.1, 0.1, int(seconds * sr)).astype("float32"), sr)
    with open(root / "clotho_captions_development.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file_name"] + [f"caption_{i}" for i in range(1, 6)])
        for i in range(n):
            name = f"clip{i:07d}.flac"
            if i:
                if distinct or i % 60_000 == 0:  # ext4 allows 65,000 links to one file
                    sf.write(audio / name, rng.uniform(-0.1, 0.1, int(seconds * sr)).astype("float32"), sr)
                    first = first if distinct else audio / name
                else:
                    os.link(first, audio / name)
            # a bounded vocabulary, as in real captions (unique words per clip would measure the stats' vocab)
            w.writerow([name] + [f"sound number {i % 5000} variant {j} of a synthetic clip" for j in range(5)])
    return root


def bench_headers(args) -> dict:
    from audiolp.data.sources import clotho
    from audiolp.data.sources.common import parallel_headers, resolve_pending
    from audiolp.data.stew import build_captionstew

    out = {"clips": args.clips, "workers": args.workers, "cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        root = make_corpus(Path(tmp) / "clotho", args.clips, distinct=True)
        ref = None
        for label, kind, n in [("serial", "thread", 1), ("threads", "thread", args.workers),
                               ("processes", "process", args.workers)]:
            best = float("inf")
            for _ in range(args.reps):
                t0 = time.perf_counter()
                with parallel_headers(n, kind=kind):
                    ld = resolve_pending(clotho.load(root, splits=("development",)))
                best = min(best, time.perf_counter() - t0)
            cuts = [c.to_dict() for c in ld.cuts]
            ref = cuts if ref is None else ref
            assert cuts == ref, f"{label} load differs from the serial one"
            out[f"load_ms_per_clip_{label}"] = round(1000 * best / args.clips, 4)
        for n in (1, args.workers):
            t0 = time.perf_counter()
            build_captionstew({"clotho": {"root": root, "splits": ("development",)}}, Path(tmp) / f"out{n}",
                              num_workers=n)
            out[f"build_ms_per_clip_workers{n}"] = round(1000 * (time.perf_counter() - t0) / args.clips, 4)
    return out


_CHILD = """
import resource, sys, time
from pathlib import Path
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
from audiolp.data.stew import build_captionstew
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
import inspect
kw = eval(sys.argv[3])
if "num_workers" not in inspect.signature(build_captionstew).parameters:
    kw = {}  # a revision before parallel header reads
r = build_captionstew({"clotho": {"root": sys.argv[1], "splits": ("development",)}}, sys.argv[2], **kw)
dt = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
import audiolp
print({"code": audiolp.__file__, "cuts": r.num_cuts, "seconds": dt, "rss_import_kb": base, "rss_peak_kb": peak})
"""


def bench_memory(args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = make_corpus(Path(tmp) / "clotho", args.clips, distinct=False)
        kwargs = {"num_workers": args.workers}
        res = subprocess.run([sys.executable, "-c", _CHILD, str(root), str(Path(tmp) / "out"), repr(kwargs)],
                             check=True, capture_output=True, text=True, env={**os.environ})
        child = eval(res.stdout.strip().splitlines()[-1])
    per_clip = (child["rss_peak_kb"] - child["rss_import_kb"]) * 1024 / args.clips
    return {"clips": args.clips, **child, "bytes_per_clip_over_imports": round(per_clip),
            "ms_per_clip": round(1000 * child["seconds"] / args.clips, 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["headers", "memory"])
    p.add_argument("--clips", type=int, default=None)
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--reps", type=int, default=2)
    args = p.parse_args()
    if args.clips is None:
        args.clips = 3000 if args.what == "headers" else 200_000
    res = bench_headers(args) if args.what == "headers" else bench_memory(args)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
