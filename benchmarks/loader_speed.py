"""Input pipeline speed: can the loader feed the encoder? (not a test)

Measures the training DataLoader (duration-bucketed sampler, padding, SpecAugment) in seconds of audio delivered
per wall-clock second, side by side in one run, for
- on-the-fly fbank (decode the audio file + lhotse's torch fbank in the worker), and
- precomputed fbank (lilcom chunky archives written once by ``audiolp.data.precompute.precompute_features``),
each with 0 (main process), 1 and 2 DataLoader workers. It also reports what precomputing costs: its wall time
and the archive size per hour of audio.

The clips are the first ``--clips`` of a manifest (default: the MiniStew full profile, built by ``make demo``;
any CaptionStew manifest works). The audio files are read once before timing, so every configuration sees a warm
page cache and the comparison measures decoding and fbank, not the disk.

    .venv/bin/python benchmarks/loader_speed.py --manifest data/ministew_full/cuts.jsonl.gz --clips 600
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from audiolp.data.loader import LoaderConfig, make_dataloader  # noqa: E402
from audiolp.data.schema import load_manifest  # noqa: E402
from audiolp.data.precompute import precompute_features  # noqa: E402


def _warm_page_cache(cuts) -> int:
    """Read every audio file once; returns the bytes read."""
    total = 0
    for path in {c.recording.sources[0].source for c in cuts}:
        total += len(Path(path).read_bytes())
    return total


def _audio_seconds_per_second(cuts, cfg: LoaderConfig, reps: int) -> tuple[float, int]:
    """Best of ``reps`` full passes (fresh workers each pass, as in training where workers restart per epoch)."""
    best, batches = 0.0, 0
    for _ in range(reps):
        loader = make_dataloader(cuts, cfg, seed=0, train=True)
        t0, seconds, batches = time.perf_counter(), 0.0, 0
        for batch in loader:
            seconds += batch["audio_seconds"]
            batches += 1
        best = max(best, seconds / (time.perf_counter() - t0))
    return best, batches


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", default="data/ministew_full/cuts.jsonl.gz")
    ap.add_argument("--clips", type=int, default=600)
    ap.add_argument("--workers", default="0,1,2")
    ap.add_argument("--max-duration", type=float, default=200.0, help="seconds of audio per batch (trainer default)")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the main process")
    args = ap.parse_args()
    if not Path(args.manifest).exists():
        sys.exit(f"{args.manifest} not found: build it with `.venv/bin/audiolp prepare ministew --out "
                 f"data/ministew_full` (or `make demo`), or pass --manifest PATH")
    torch.set_num_threads(args.threads)
    cuts = load_manifest(args.manifest).subset(first=args.clips).to_eager()
    hours = sum(c.duration for c in cuts) / 3600
    suffixes = sorted({Path(c.recording.sources[0].source).suffix for c in cuts})
    audio_bytes = _warm_page_cache(cuts)
    print(f"{len(cuts)} clips, {hours * 60:.1f} min of audio ({', '.join(suffixes)} files, "
          f"{audio_bytes / 2**20:.1f} MiB), max_duration {args.max_duration:g} s, SpecAugment on, "
          f"{os.cpu_count()} CPU cores")

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        stored = precompute_features(cuts, Path(tmp) / "feats", num_workers=1).to_eager()
        precompute_s = time.perf_counter() - t0
        archive = sum(p.stat().st_size for p in (Path(tmp) / "feats").rglob("*") if p.is_file())
        print(f"precompute (1 worker): {precompute_s:.1f} s = {hours * 3600 / precompute_s:.0f} audio-s/s; "
              f"archives {archive / 2**20:.1f} MiB = {archive / 2**20 / hours:.0f} MiB per hour of audio "
              f"(audio files: {audio_bytes / 2**20 / hours:.0f} MiB per hour)")

        rows = []
        for workers in [int(w) for w in args.workers.split(",")]:
            row = {"workers": workers}
            for mode, source in (("on_the_fly", cuts), ("precomputed", stored)):
                cfg = LoaderConfig(max_duration=args.max_duration, num_workers=workers, features=mode)
                row[mode], row["batches"] = _audio_seconds_per_second(source, cfg, args.reps)
            rows.append(row)

    print()
    print("| DataLoader workers | on-the-fly fbank | precomputed (lilcom) | precomputed / on-the-fly |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['workers']} | {r['on_the_fly']:,.0f} audio-s/s | {r['precomputed']:,.0f} audio-s/s | "
              f"{r['precomputed'] / r['on_the_fly']:.1f}x |")
    print(f"\n({rows[0]['batches']} batches per pass; best of {args.reps} passes)")


if __name__ == "__main__":
    main()
