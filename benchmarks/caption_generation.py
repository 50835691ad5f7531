"""Caption decoder benchmark (not a test): KV-cached vs uncached generation, and the captioning loss's memory.

1. Generation speed (CPU, float32, eval, no_grad): greedy and beam search with the paper-size decoder
   (DecoderConfig defaults: 6 layers, d 768, 8 heads, FFN 3072; MiniLM WordPiece vocabulary, 30,522) on random
   encoder output (--batch clips x --frames frames x --encoder-dim), for exactly --tokens steps: the decoder is
   randomly initialised and its EOS bias is set to -1e4, so no hypothesis ever stops early and both paths do the
   same number of steps. Reports wall seconds per call (best of --reps) and whether cached ids == uncached ids.
2. Captioning loss memory: forward + backward of ``CaptioningObjective`` (train mode, CapPa parallel_prob 0.75,
   label smoothing 0.1) at --loss-batch clips with a --loss-tokens cap, on random frames passed straight to the
   decoder (the encoder is a pass-through: it is unchanged and would only add the same amount to both figures).
   Measured twice: the output projection + loss alone (from given decoder states (N, L, d)), and the whole
   objective forward + backward. "before" = the previous full-grid loss (logits for all N x L positions,
   F.cross_entropy with ignore_index), written out below; "after" = the objective as it is now (logits only at
   the K non-padding targets).
   Peak memory = the peak increase of live CPU tensor bytes during the measured forward + backward, summed from
   torch.profiler's allocation/free events (profile_memory=True), each variant in its own fresh subprocess after a
   2-clip warm-up (so parameter gradients are already allocated and not counted). The peak process-RSS increase
   (resource.getrusage ru_maxrss) is stored in the JSON too, but on a shared machine it wanders by +-100 MiB from
   run to run. The logits' own size (N*L*V vs K*V float32) is printed beside it. The time is that of the
   profiled forward + backward (memory profiling adds a few per cent).

    .venv/bin/python benchmarks/caption_generation.py --json /tmp/caption_generation.json
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch._C._profiler import _EventType
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from audiolp.models.decoder import CaptionDecoder, DecoderConfig  # noqa: E402
from audiolp.objectives.base import pick_captions  # noqa: E402
from audiolp.objectives.captioning import CaptioningConfig, CaptioningObjective  # noqa: E402

WORDS = ("a the dog barks loudly while rain falls on metal roof and thunder rumbles far away man woman speaks "
         "softly children laugh in park birds chirp near river engine idles then accelerates car passes by quickly "
         "music plays with guitar drums piano melody slow fast crowd cheers door slams footsteps echo hall").split()


def _peak_tensor_bytes(prof) -> int:
    """Peak increase of live CPU tensor bytes during a profiled region, from the profiler's allocation events
    (each carries +size on allocation, -size on free; sorted by time and summed). Exact and reproducible, unlike
    process RSS on a shared machine."""
    events, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        e = stack.pop()
        if e.tag == _EventType.Allocation and e.extra_fields.device.type == "cpu":
            events.append((e.start_time_ns, e.extra_fields.alloc_size))
        stack.extend(e.children)
    cur = peak = 0
    for _, size in sorted(events):
        cur += size
        peak = max(peak, cur)
    return peak


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


class PassThroughEncoder(nn.Module):
    """Stands in for the audio encoder: the batch's "features" already are encoder frames."""

    def __init__(self, output_dim: int):
        super().__init__()
        self.output_dim = output_dim

    def forward(self, feats, lens):
        return feats, lens


def _captions(n: int, seed: int) -> list[str]:
    # Caption lengths 5-28 words (AudioCaps/Clotho-like spread), so batches carry realistic padding.
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(5, 29)))) for _ in range(n)]


# ---- generation ------------------------------------------------------------------------------------------------
def bench_generation(args) -> dict:
    torch.manual_seed(0)
    dec = CaptionDecoder(args.encoder_dim, DecoderConfig()).eval()
    with torch.no_grad():
        dec.out_bias[dec.tokenizer.eos_id] = -1e4  # never stop early: every call runs exactly --tokens steps
    frames = torch.randn(args.batch, args.frames, args.encoder_dim)
    lengths = torch.linspace(args.frames, args.frames // 2, args.batch).long()  # some clips padded
    res = {}
    for mode, beam in (("greedy", 1), (f"beam{args.beam}", args.beam)):
        ids = {}
        for cached in (True, False):
            if not cached and mode != "greedy" and args.skip_uncached_beam:
                continue
            best = float("inf")
            for _ in range(args.reps):
                t0 = time.perf_counter()
                out = (dec.greedy_ids(frames, lengths, args.tokens, use_cache=cached) if beam == 1 else
                       dec.beam_search_ids(frames, lengths, args.tokens, beam_size=beam, use_cache=cached))
                best = min(best, time.perf_counter() - t0)
            assert all(len(s) == args.tokens for s in out), "generation stopped early"
            ids[cached] = out
            res[f"{mode}_{'cached' if cached else 'uncached'}_s"] = best
            print(f"  {mode:7s} {'cached' if cached else 'uncached':8s} {best:8.2f} s", flush=True)
        if False in ids:
            res[f"{mode}_ids_match"] = ids[True] == ids[False]
            res[f"{mode}_speedup"] = res[f"{mode}_uncached_s"] / res[f"{mode}_cached_s"]
    return res


# ---- loss memory -----------------------------------------------------------------------------------------------
def _full_grid_loss(obj, batch, step):
    """The previous CaptioningObjective.forward loss: logits on the whole (N, L, V) grid."""
    captions = pick_captions(batch, obj.config.seed, step)
    parallel = obj.parallel_choice(list(batch["cut_ids"]), step)
    frames, lens = obj.encoder(batch["features"].float(), batch["feature_lens"])
    inputs, targets, causal, token_pad = obj.decoder_inputs(captions, parallel)
    logits = obj.decoder(inputs, frames, lens, causal=causal, token_pad=token_pad)
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100,
                           label_smoothing=obj.config.label_smoothing)


def _loss_batch(n: int, frames: int, dim: int, seed: int) -> dict:
    return dict(features=torch.randn(n, frames, dim), feature_lens=torch.linspace(frames, frames // 2, n).long(),
                captions=[[c] for c in _captions(n, seed)], cut_ids=[f"clip{i}" for i in range(n)])


def _head_loss(obj, hidden, targets, variant):
    """Output projection + label-smoothed CE from given decoder states: the part the change is about."""
    ls = obj.config.label_smoothing
    if variant == "before":
        logits = obj.decoder.output_logits(hidden)
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100, label_smoothing=ls)
    keep = targets != -100  # as CaptioningObjective._target_logits does
    return F.cross_entropy(obj.decoder.output_logits(hidden[keep]).float(), targets[keep], label_smoothing=ls)


def loss_worker(variant: str, scope: str, args) -> dict:
    torch.manual_seed(0)
    # paper decoder, parallel_prob 0.75; "chunked" = the objective with loss_chunk_tokens
    cfg = CaptioningConfig(max_caption_tokens=args.loss_tokens,
                           loss_chunk_tokens=args.loss_chunk if variant == "chunked" else 0)
    obj = CaptioningObjective(PassThroughEncoder(args.encoder_dim), cfg).train()
    d = obj.decoder.config.d_model

    def targets_of(b):
        return obj.tokenizer.encode(pick_captions(b, cfg.seed, 0), cfg.max_caption_tokens)[1]

    def run(b):
        if scope == "objective":
            return obj(b, 0).loss if variant in ("after", "chunked") else _full_grid_loss(obj, b, 0)
        t = targets_of(b)
        hidden = torch.randn(t.shape[0], t.shape[1], d, requires_grad=True)
        return _head_loss(obj, hidden, t, variant)

    # Warm-up on 2 clips: allocates the parameter gradients and initialises the kernels, so the measured
    # increase is the forward/backward working memory of the real batch alone.
    run(_loss_batch(2, args.frames, args.encoder_dim, seed=0)).backward()
    obj.zero_grad(set_to_none=False)
    batch = _loss_batch(args.loss_batch, args.frames, args.encoder_dim, seed=1)
    targets = targets_of(batch)
    k, grid = int((targets != -100).sum()), targets.numel()
    torch.manual_seed(1)
    before = _rss_kib()
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        loss = run(batch)
        loss.backward()
    sec = time.perf_counter() - t0  # memory profiling adds ~4 % here
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    v = obj.decoder.vocab_size
    return {"loss": loss.item(), "peak_tensor_mib": _peak_tensor_bytes(prof) / 2**20,
            "peak_rss_delta_mib": (rss_peak - before) / 1024, "fwd_bwd_s": sec,
            "tokens_counted": k, "grid_positions": grid, "max_len": targets.shape[1],
            "logits_mib": {"after": k, "chunked": min(k, args.loss_chunk)}.get(variant, grid) * v * 4 / 2**20}


def bench_loss(args) -> dict:
    res = {}
    for scope in ("head", "objective"):
        for variant in ("before", "after") + (("chunked",) if scope == "objective" else ()):
            cmd = [sys.executable, os.path.abspath(__file__), "--_loss-worker", f"{variant}:{scope}",
                   "--threads", str(args.threads), "--encoder-dim", str(args.encoder_dim), "--frames",
                   str(args.frames), "--loss-batch", str(args.loss_batch), "--loss-tokens", str(args.loss_tokens),
                   "--loss-chunk", str(args.loss_chunk)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True)
            r = res[f"{scope}_{variant}"] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"  {scope:9s} {variant:7s} loss {r['loss']:.6f}  peak tensors +{r['peak_tensor_mib']:6.0f} MiB  "
                  f"(RSS +{r['peak_rss_delta_mib']:5.0f})  logits {r['logits_mib']:4.0f} MiB  "
                  f"fwd+bwd {r['fwd_bwd_s']:.2f} s", flush=True)
        res[f"{scope}_loss_abs_diff"] = abs(res[f"{scope}_before"]["loss"] - res[f"{scope}_after"]["loss"])
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--frames", type=int, default=250)
    ap.add_argument("--tokens", type=int, default=30, help="generated tokens per caption (no early stop)")
    ap.add_argument("--beam", type=int, default=4)
    ap.add_argument("--encoder-dim", type=int, default=512, help="encoder output width (Zipformer-M: 512)")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads; 1 by default: on a shared 2-core box, 2 threads spin-wait on "
                         "each other and every small op costs milliseconds")
    ap.add_argument("--loss-batch", type=int, default=32)
    ap.add_argument("--loss-tokens", type=int, default=30)
    ap.add_argument("--loss-chunk", type=int, default=128, help="loss_chunk_tokens of the 'chunked' variant")
    ap.add_argument("--skip-uncached-beam", action="store_true", help="the slowest part (~1.5 min here)")
    ap.add_argument("--skip-loss", action="store_true")
    ap.add_argument("--skip-generation", action="store_true")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--_loss-worker", dest="loss_worker", help=argparse.SUPPRESS)  # before|after:head|objective
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.loss_worker:
        variant, scope = args.loss_worker.split(":")
        print(json.dumps(loss_worker(variant, scope, args)))
        return
    setup = {k: getattr(args, k) for k in ("batch", "frames", "tokens", "beam", "encoder_dim", "reps", "threads",
                                           "loss_batch", "loss_tokens")}
    setup.update(torch=torch.__version__, threads=torch.get_num_threads(), decoder="DecoderConfig() 6x768, V=30522")
    results = {"setup": setup, "generation": {}}
    if not args.skip_generation:
        print(f"generation: batch {args.batch} x {args.frames} frames x {args.tokens} tokens, "
              f"{torch.get_num_threads()} threads", flush=True)
        results["generation"] = bench_generation(args)
    if not args.skip_loss:
        print(f"captioning loss fwd+bwd: batch {args.loss_batch}, cap {args.loss_tokens} tokens "
              "(peak live tensor bytes from torch.profiler allocation events, fresh subprocess each)", flush=True)
        results["loss_memory"] = bench_loss(args)

    g = results["generation"]
    if g:
        print("\n| decode | cached s | uncached s | speedup | ids equal |\n|---|---|---|---|---|")
        for mode in ("greedy", f"beam{args.beam}"):
            unc, cached = g.get(mode + "_uncached_s"), g[mode + "_cached_s"]
            unc_s, speed = ("-", "-") if unc is None else (f"{unc:.2f}", f"{unc / cached:.1f}x")
            print(f"| {mode} | {cached:.2f} | {unc_s} | {speed} | {g.get(mode + '_ids_match', '-')} |")
    if "loss_memory" in results:
        lm = results["loss_memory"]
        print("\n| loss fwd+bwd | peak tensor MiB | logits MiB | fwd+bwd s | loss |\n|---|---|---|---|---|")
        for scope, what in (("head", "output projection + CE"), ("objective", "whole objective (decoder)")):
            for v in ("before", "after", "chunked"):
                if f"{scope}_{v}" not in lm:
                    continue
                r = lm[f"{scope}_{v}"]
                print(f"| {what}, {v} | {r['peak_tensor_mib']:.0f} | {r['logits_mib']:.0f} | {r['fwd_bwd_s']:.2f} | "
                      f"{r['loss']:.6f} |")
        a = lm["objective_after"]
        print(f"({a['tokens_counted']} counted tokens of {a['grid_positions']} grid positions, L = {a['max_len']})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
