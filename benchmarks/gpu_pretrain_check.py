"""GPU pretraining check: Zipformer-M with the contrastive and the captioning objective, bf16, N steps each.

Measures what one training step costs on the lent GPU (H100/H200): step time, seconds of audio per second and peak
memory, with batches of realistic lengths (clip durations and captions read from a MiniStew / CaptionStew manifest,
or 5-10 s clips with generated captions when there is none). Features are random fbank-shaped tensors already on the
GPU, so the numbers are the model's (forward + backward + ScaledAdam/Eden step), not the data loader's; the same
objective / optimizer / autocast code as audiolp.train.trainer is used.

    python benchmarks/gpu_pretrain_check.py                     # on the GPU machine: 200 steps each, markdown table
    python benchmarks/gpu_pretrain_check.py --cpu-smoke         # here: tiny model, CPU, 3 steps (checks the script)

On a lent machine (device tool), one call: ``python3 benchmarks/gpu_pretrain_check.py --json $OUT/gpu_check.json``
with timeout_s ~540; expect a few minutes (2 x (200 + 5) steps of 1000 s of audio each, plus start-up). If a row
says OOM, rerun with ``--batch-seconds 500``; ``--steps 100`` halves the time.

The GPU image has torch + transformers but neither lhotse nor the offline MiniLM wheel, so the manifest is read as
plain JSON and, unless --text-model names a local folder, the text side is a randomly initialised BERT-base-shaped
model (12 layers, 768 wide, 30,522-token vocabulary) written to a temp dir: the paper's text cost, without a hub.
Exits 0 with a message when no GPU is visible (unless --cpu-smoke).
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402

_WORDS = ("a dog barks loudly while birds chirp in the background a man speaks calmly over soft piano music "
          "rain falls on a tin roof and thunder rumbles far away a woman sings with an acoustic guitar "
          "engine idling then accelerating people talking in a crowded room water flowing in a stream").split()


# -- clips: (duration seconds, captions) --------------------------------------------------------------------------
def read_clips(manifest: Path | None, limit: int = 20000) -> tuple[list[tuple[float, list[str]]], str]:
    """Durations and captions from a lhotse cut manifest (jsonl / jsonl.gz), read as JSON (lhotse not needed)."""
    if manifest is not None and manifest.is_dir():
        cands = sorted(manifest.glob("*cuts*.jsonl*"))
        manifest = cands[0] if cands else None
    if manifest is None or not manifest.exists():
        rng = random.Random(0)
        clips = [(rng.uniform(5.0, 10.0), [" ".join(rng.choices(_WORDS, k=rng.randint(6, 16)))])
                 for _ in range(2000)]
        return clips, "generated (5-10 s, random captions)"
    opener = gzip.open if str(manifest).endswith(".gz") else open
    clips = []
    with opener(manifest, "rt") as f:
        for line in f:
            d = json.loads(line)
            sups = d.get("supervisions") or [{}]
            caps = (sups[0].get("custom") or {}).get("caption") or ["audio"]
            clips.append((float(d["duration"]), [caps] if isinstance(caps, str) else list(caps)))
            if len(clips) >= limit:
                break
    if not clips:
        raise SystemExit(f"{manifest}: no cuts; pass another --data or none for generated clips")
    return clips, f"{manifest} ({len(clips)} clips)"


def make_batches(clips, batch_seconds: float, n_batches: int, device, seed: int = 0) -> list[dict]:
    """Batches of at most batch_seconds of audio (like the duration sampler), features N(0,1)-ish log-mel shaped."""
    rng = random.Random(seed)
    batches = []
    for b in range(n_batches):
        chosen, total = [], 0.0
        while True:
            dur, caps = clips[rng.randrange(len(clips))]
            if chosen and total + dur > batch_seconds:
                break
            chosen.append((dur, caps))
            total += dur
        lens = torch.tensor([max(20, int(round(d * 100))) for d, _ in chosen], dtype=torch.long)
        feats = torch.randn(len(chosen), int(lens.max()), 80, generator=torch.Generator().manual_seed(seed + b))
        feats = feats.masked_fill((torch.arange(feats.shape[1])[None] >= lens[:, None])[..., None], 0.0)
        batches.append({
            "features": feats.to(device), "feature_lens": lens.to(device),
            "captions": [c for _, c in chosen], "labels": [[] for _ in chosen],
            "cut_ids": [f"b{b}_{i}" for i in range(len(chosen))],
            "sources": ["bench"] * len(chosen), "domains": ["sound"] * len(chosen), "audio_seconds": total,
        })
    return batches


def synthetic_text_model(out_dir: Path, clips, tiny: bool) -> str:
    """A randomly initialised BERT (base-shaped, or tiny for the CPU smoke) + WordPiece vocab, saved locally."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = sorted({w.lower().strip(".,!?;:'\"") for _, caps in clips for c in caps for w in c.split()} - {""})
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = special + words[:20000]
    size = 512 if tiny else 30522  # bert-base-uncased's vocabulary size: the output softmax costs what it would
    vocab += [f"[unused{i}]" for i in range(max(0, size - len(vocab)))]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(vocab_file=str(out_dir / "vocab.txt"), do_lower_case=True)
    cfg = (BertConfig(vocab_size=len(vocab), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=128) if tiny else BertConfig(vocab_size=len(vocab)))
    BertModel(cfg, add_pooling_layer=False).save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return str(out_dir)


# -- one objective ----------------------------------------------------------------------------------------------
def run_objective(name: str, args, batches, text_model: str, device) -> dict:
    from audiolp.models.zipformer import Zipformer, ZipformerConfig
    from audiolp.objectives import build_objective
    from audiolp.train.optim import OptimConfig, attention_scaling_for, build_optimizer

    torch.manual_seed(0)
    optim_cfg = OptimConfig(name=args.optim)
    zcfg = ZipformerConfig.preset(args.model, attention_scaling=attention_scaling_for(optim_cfg.name))
    encoder = Zipformer(zcfg)
    if name == "contrastive":
        ocfg = {"text_model": text_model}
    else:
        ocfg = {"tokenizer": text_model}
    if args.cpu_smoke:
        ocfg.update({"proj_dim": 32} if name == "contrastive" else
                    {"num_layers": 1, "d_model": 64, "num_heads": 2, "ffn_dim": 128})
    objective = build_objective(name, encoder, ocfg).to(device)
    optimizer, scheduler = build_optimizer(objective, optim_cfg)
    n_params = sum(p.numel() for p in objective.parameters())
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times, audio, losses = [], [], []
    warmup = min(args.warmup, max(0, args.steps - 1))
    objective.train()
    for step in range(args.steps + warmup):
        batch = batches[step % len(batches)]
        objective.encoder.set_batch_count(step)
        sync()
        t0 = time.perf_counter()
        with autocast:
            out = objective(batch, step=step)
        out.loss.float().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step_batch(step + 1)
        sync()
        dt = time.perf_counter() - t0
        if step >= warmup:
            times.append(dt)
            audio.append(batch["audio_seconds"])
            losses.append(float(out.loss.detach()))
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    total_t = sum(times)
    return {
        "objective": name, "model": args.model, "params_M": n_params / 1e6, "steps": len(times),
        "clips_per_batch": statistics.mean(len(b["cut_ids"]) for b in batches),
        "audio_s_per_batch": statistics.mean(b["audio_seconds"] for b in batches),
        "step_ms_median": 1000 * statistics.median(times), "step_ms_mean": 1000 * total_t / len(times),
        "audio_s_per_s": sum(audio) / total_t, "peak_mem_GiB": peak / 2**30,
        "loss_first": losses[0], "loss_last": losses[-1], "loss_finite": all(math.isfinite(x) for x in losses),
    }


def markdown(rows: list[dict], header: str) -> str:
    cols = ["objective", "model", "status", "params_M", "steps", "clips_per_batch", "audio_s_per_batch",
            "step_ms_median", "audio_s_per_s", "peak_mem_GiB", "loss_first", "loss_last"]
    out = [header, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        r = {"status": "ok", **r}
        out.append("| " + " | ".join(f"{r[c]:.3f}" if isinstance(r.get(c), float) else str(r.get(c, "-"))
                                     for c in cols) + " |")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=None, help="timed steps per objective (default 200; smoke 3)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (cuDNN / allocator warm-up)")
    p.add_argument("--objectives", default="contrastive,captioning")
    p.add_argument("--model", default=None, help="Zipformer preset (default zipformer_m; smoke zipformer_tiny)")
    p.add_argument("--optim", default="scaled_adam", choices=["scaled_adam", "adamw"])
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    p.add_argument("--batch-seconds", type=float, default=None, help="audio per batch (default 1000 s; smoke 30 s)")
    p.add_argument("--data", type=Path, default=None, help="cut manifest or its dir (default data/ministew if any)")
    p.add_argument("--text-model", default=None, help="local HF folder; default: a random BERT-base-shaped model")
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    p.add_argument("--cpu-smoke", action="store_true", help="tiny model on CPU for a few steps (checks the script)")
    args = p.parse_args(argv)

    if args.cpu_smoke:
        device = torch.device("cpu")
        args.steps = 3 if args.steps is None else args.steps
        args.model = args.model or "zipformer_tiny"
        args.batch_seconds = args.batch_seconds or 30.0
        args.warmup = min(args.warmup, 1)
    else:
        if not torch.cuda.is_available():
            print("gpu_pretrain_check: no CUDA device visible; nothing to measure here. Run it on the GPU machine, "
                  "or use --cpu-smoke to check the script on CPU.")
            return 0
        device = torch.device("cuda")
        args.steps = 200 if args.steps is None else args.steps
        args.model = args.model or "zipformer_m"
        args.batch_seconds = args.batch_seconds or 1000.0
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    data = args.data
    if data is None:
        default = Path(__file__).resolve().parents[1] / "data" / "ministew"
        data = default if default.exists() else None
    clips, clip_src = read_clips(data)
    batches = make_batches(clips, args.batch_seconds, n_batches=8, device=device)
    with tempfile.TemporaryDirectory() as tmp:
        text_model = args.text_model or synthetic_text_model(Path(tmp) / "text", clips, tiny=args.cpu_smoke)
        rows = []
        for name in [s.strip() for s in args.objectives.split(",") if s.strip()]:
            try:
                rows.append(run_objective(name, args, batches, text_model, device))
            except torch.cuda.OutOfMemoryError as e:  # report it and go on with the next objective
                print(f"{name}: out of GPU memory at {args.batch_seconds:.0f} s per batch ({e}); "
                      "try --batch-seconds 500", file=sys.stderr)
                rows.append({"objective": name, "model": args.model, "status": "OOM"})
            if device.type == "cuda":
                torch.cuda.empty_cache()
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    header = (f"### gpu_pretrain_check on {dev_name}: {args.precision}, optimizer {args.optim}, "
              f"{args.batch_seconds:.0f} s audio per batch, clips from {clip_src}, torch {torch.__version__}")
    print(markdown(rows, header))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"device": dev_name, "args": {k: str(v) for k, v in vars(args).items()},
                                         "rows": rows}, indent=1))
    bad = [r["objective"] for r in rows if not r.get("loss_finite", False)]
    if bad:
        print(f"out of memory or non-finite loss for {bad}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
