"""Caption generation from a frozen encoder, scored against a caption task's references (issue 11).

    rec = evaluate_captioning("runs/k1", "data/ministew_full/tasks.json", task="retrieval",
                              decoding=Decoding(beam_size=3), out_dir="papermill_runs/records/eval")
    rec["metrics"]["cider_d"]      # {"value": ..., "interval": [lo, hi], "per_clip_mean": ...}

Which decoder writes the captions:
- a captioning pretraining run: its own decoder (the whole objective of its latest checkpoint), as pretrained;
- any other encoder (a contrastive or tagging run, the random-init reference): a decoder trained on its frozen
  features by the one trainer (``TrainConfig(objective="captioning", init_from=<the encoder>,
  freeze_encoder=True, data=<the task's train split>)``; :class:`DecoderProtocol` holds the settings). The
  decoder run lives under ``<out_dir>/.decoders/`` and is resumed, not redone, on a rerun.
``decoder="train"`` gives a captioning run a decoder trained on its frozen features too (the same protocol for
every encoder).

Metrics come from pycocoevalcap (the MS-COCO caption evaluation code that audio captioning reports with):
BLEU-4, ROUGE-L and CIDEr-D are pure Python; METEOR needs Java (its jar and paraphrase table ship in the wheel);
SPICE needs Java and Stanford CoreNLP 3.6.0, which pycocoevalcap downloads on first use: offline it is skipped,
and SPIDEr (the mean of CIDEr-D and SPICE) with it; every skipped metric is named in the record with the reason.
Tokenisation: the PTB tokenizer (Stanford CoreNLP 3.4.1, bundled, needs Java; punctuation tokens dropped) as the
COCO / DCASE evaluations do; without Java the documented pure-Python fallback ``simple`` (lower-cased,
punctuation deleted, split on whitespace: :func:`audiolp.objectives.captioning.clean_caption`, the cleaning the
decoder trains on); the record says which was used, and a record made with the other is not reused.

Intervals: 95 % bootstrap over test clips. ROUGE-L, CIDEr-D (document frequencies fixed on the whole test set)
and METEOR resample the per-clip scores (the METEOR value is the jar's corpus score; its interval is that of the
mean segment score); BLEU-4 is a corpus statistic, so each resample recomputes corpus BLEU from the resampled
clips' n-gram counts.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from audiolp.configs import deep_merge
from audiolp.files import atomic_write_json, record_path, write_record
from audiolp.models.io import run_encoder_weights

DEFAULT_TASK = "retrieval"
METRICS = ("bleu_4", "meteor", "rouge_l", "cider_d", "spice", "spider")
# What the pipeline computes unless told otherwise (all of them; those that cannot run here are skipped, named).
DEFAULT_METRICS = METRICS
TOKENIZERS = ("auto", "ptb", "simple")
DECODER_CHOICES = ("auto", "own", "train")
_SPICE_CORENLP = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")


@dataclass
class Decoding:
    """How captions are generated: greedy (beam_size 1) or beam search."""
    beam_size: int = 1
    max_len: int | None = None  # tokens incl. EOS; None = the decoder's max_caption_tokens
    length_penalty: float = 1.0  # beam search: score / length**length_penalty
    max_duration: float = 120.0  # seconds of audio per generation batch

    def __post_init__(self):
        if self.beam_size < 1:
            raise ValueError(f"Decoding.beam_size={self.beam_size}; use 1 (greedy) or more (beam search)")
        if self.max_len is not None and self.max_len < 2:
            raise ValueError(f"Decoding.max_len={self.max_len}; need >= 2 (or None for the decoder's limit)")

    @property
    def tag(self) -> str:
        return "greedy" if self.beam_size == 1 else f"beam{self.beam_size}"


@dataclass
class DecoderProtocol:
    """How a decoder is trained on a frozen encoder (through ``audiolp.train.trainer.train``).

    The run's encoder fields (model, model_overrides, optimiser family, text model) are copied from its config.json
    so that the frozen encoder is the run's; the rest comes from ``preset`` (None = the preset the run was
    trained with), then ``overrides`` (any TrainConfig fields, e.g. {"optim": {"lr": 1e-3}}), then max_steps."""
    max_steps: int = 300
    data: str | None = None  # caption manifest to train on; None = the caption task's train split
    preset: str | None = None
    overrides: dict = field(default_factory=dict)


@dataclass
class CaptionScores:
    """Scores of N candidates: ``values[m]`` the library's score, ``intervals[m]`` its bootstrap interval,
    ``per_clip[m]`` the (N,) per-clip scores (BLEU-4: sentence BLEU, for inspection only), ``skipped[m]`` why a
    metric did not run."""
    values: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    per_clip: dict[str, np.ndarray]
    skipped: dict[str, str]
    tokenizer: str
    n: int

    def as_record(self) -> dict:
        out = {m: {"value": v, "interval": list(self.intervals[m]),
                   "per_clip_mean": float(np.mean(self.per_clip[m]))} for m, v in self.values.items()}
        return {**out, "skipped": dict(self.skipped), "tokenizer": self.tokenizer, "n_clips": self.n}


# ---------------------------------------------------------------------------------------------------------------
# Metrics (pycocoevalcap).
# ---------------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def java_available() -> bool:
    """Whether a working ``java`` is on PATH (the PTB tokenizer, METEOR and SPICE need it)."""
    java = shutil.which("java")
    if java is None:
        return False
    try:
        return subprocess.run([java, "-version"], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _coco_dir() -> Path:
    """pycocoevalcap's folder (a namespace package: located through one of its modules)."""
    try:
        from pycocoevalcap.bleu import bleu
    except ImportError as e:
        raise ImportError("caption metrics need pycocoevalcap: pip install 'pycocoevalcap==1.2' (in audiolp's "
                          "[eval] extra)") from e
    return Path(bleu.__file__).resolve().parents[1]


def metric_availability(metrics=METRICS) -> dict[str, str | None]:
    """{metric: None if it can run here, else why not}. Nothing is downloaded to find out."""
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise ValueError(f"unknown caption metric(s) {unknown}; use some of {list(METRICS)}")
    out: dict[str, str | None] = {}
    coco = _coco_dir()
    for m in metrics:
        why = None
        if m == "meteor":
            if not java_available():
                why = "METEOR needs Java (the METEOR 1.5 jar); no working `java` on PATH"
            elif not (coco / "meteor" / "meteor-1.5.jar").exists() or not (coco / "meteor" / "data").is_dir():
                why = f"METEOR needs meteor-1.5.jar and its paraphrase data in {coco / 'meteor'}; not found"
        elif m in ("spice", "spider"):
            lib = coco / "spice" / "lib"
            missing = [j for j in _SPICE_CORENLP if not (lib / j).exists()]
            if not java_available():
                why = "SPICE needs Java; no working `java` on PATH"
            elif missing:
                why = (f"SPICE needs Stanford CoreNLP 3.6.0 ({', '.join(missing)}) in {lib}, which pycocoevalcap "
                       "downloads on first use; this machine is offline, so it is not fetched (copy the two jars "
                       "there to enable SPICE)")
            if m == "spider" and why:
                why = f"SPIDEr = (CIDEr-D + SPICE) / 2; {why}"
        out[m] = why
    return out


def resolve_tokenizer(tokenizer: str = "auto") -> str:
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"unknown caption tokenizer {tokenizer!r}; use one of {TOKENIZERS}")
    if tokenizer == "auto":
        return "ptb" if java_available() else "simple"
    if tokenizer == "ptb" and not java_available():
        raise RuntimeError("tokenizer='ptb' needs Java (Stanford CoreNLP's PTBTokenizer); install a JRE "
                           "(apt-get install default-jre-headless) or use tokenizer='simple'")
    return tokenizer


def tokenize_captions(groups: list[list[str]], tokenizer: str = "auto") -> list[list[str]]:
    """Each caption of each group as space-joined tokens: "ptb" (Stanford PTBTokenizer, lower-cased, punctuation
    tokens dropped: the COCO pipeline) or "simple" (lower-cased, punctuation deleted, whitespace split)."""
    tok = resolve_tokenizer(tokenizer)
    if tok == "simple":
        from audiolp.objectives.captioning import clean_caption

        return [[clean_caption(c) for c in g] for g in groups]
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    keyed = {i: [{"caption": str(c)} for c in g] for i, g in enumerate(groups) if g}
    out = PTBTokenizer().tokenize(keyed) if keyed else {}
    return [[" ".join(s.split()) for s in out.get(i, [])] for i in range(len(groups))]


def bleu_stats(candidates: list[str], references: list[list[str]], n: int = 4) -> np.ndarray:
    """(N, 2 + 2n) per-clip BLEU statistics from pycocoevalcap's own counting: test length, closest reference
    length, then n-gram guesses (n) and clipped matches (n)."""
    from pycocoevalcap.bleu.bleu_scorer import cook_refs, cook_test

    rows = []
    for cand, refs in zip(candidates, references):
        c = cook_test(cand, cook_refs(refs, n=n), eff="closest", n=n)
        rows.append([c["testlen"], c["reflen"], *c["guess"], *c["correct"]])
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), 2 + 2 * n)


def corpus_bleu_from_stats(stats: np.ndarray, n: int = 4) -> np.ndarray:
    """Corpus BLEU-n of summed statistics, as pycocoevalcap's BleuScorer.compute_score (option "closest") combines
    them; ``stats`` (..., N, 2 + 2n) -> (...). Batched, so a bootstrap recomputes it for every resample at once."""
    small, tiny = 1e-9, 1e-15
    tot = stats.sum(axis=-2)
    testlen, reflen = tot[..., 0], tot[..., 1]
    guess, correct = tot[..., 2:2 + n], tot[..., 2 + n:2 + 2 * n]
    bleu = np.prod((correct + tiny) / (guess + small), axis=-1) ** (1.0 / n)
    ratio = (testlen + tiny) / (reflen + small)
    return np.where(ratio < 1, bleu * np.exp(1 - 1 / np.minimum(ratio, 1)), bleu)


def _bleu_interval(stats: np.ndarray, n_boot: int, seed: int, alpha: float = 0.05) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(stats), size=(n_boot, len(stats)))
    reps = corpus_bleu_from_stats(stats[idx])
    return float(np.quantile(reps, alpha / 2)), float(np.quantile(reps, 1 - alpha / 2))


def score_captions(candidates: list[str], references: list[list[str]], metrics=DEFAULT_METRICS,
                   tokenizer: str = "auto", n_boot: int = 1000, seed: int = 0) -> CaptionScores:
    """Score one candidate per clip against that clip's references (see the module docstring)."""
    from audiolp.eval.probe import bootstrap_interval

    if len(candidates) != len(references):
        raise ValueError(f"score_captions: {len(candidates)} candidates for {len(references)} reference sets")
    if len(candidates) < 2:
        raise ValueError("score_captions: CIDEr-D's document frequencies need at least 2 clips")
    empty = [i for i, r in enumerate(references) if not r]
    if empty:
        raise ValueError(f"score_captions: clip(s) {empty[:5]} have no reference caption")
    avail = metric_availability(metrics)
    skipped = {m: why for m, why in avail.items() if why}
    run = [m for m in metrics if not avail[m]]
    tok = resolve_tokenizer(tokenizer)
    toks = tokenize_captions([[c] for c in candidates] + [list(r) for r in references], tok)
    cands, refs = [t[0] for t in toks[:len(candidates)]], toks[len(candidates):]
    keys = list(range(len(cands)))
    gts, res = {k: refs[k] for k in keys}, {k: [cands[k]] for k in keys}
    values, per_clip, intervals = {}, {}, {}
    if "bleu_4" in run:
        from pycocoevalcap.bleu.bleu import Bleu

        score, per = Bleu(4).compute_score(gts, res, verbose=0)
        stats = bleu_stats(cands, refs)
        values["bleu_4"], per_clip["bleu_4"] = float(score[3]), np.asarray(per[3], dtype=np.float64)
        intervals["bleu_4"] = _bleu_interval(stats, n_boot, seed)
    if "rouge_l" in run:
        from pycocoevalcap.rouge.rouge import Rouge

        score, per = Rouge().compute_score(gts, res)
        values["rouge_l"], per_clip["rouge_l"] = float(score), np.asarray(per, dtype=np.float64)
    if "cider_d" in run or "spider" in run:
        from pycocoevalcap.cider.cider import Cider

        score, per = Cider().compute_score(gts, res)
        values["cider_d"], per_clip["cider_d"] = float(score), np.asarray(per, dtype=np.float64)
    if "meteor" in run:
        from pycocoevalcap.meteor.meteor import Meteor

        scorer = Meteor()
        try:
            score, per = scorer.compute_score(gts, res)
        finally:
            del scorer  # stops the jar
        values["meteor"], per_clip["meteor"] = float(score), np.asarray(per, dtype=np.float64)
    if "spice" in run or "spider" in run:
        from pycocoevalcap.spice.spice import Spice

        _, per = Spice().compute_score(gts, res)
        per_clip["spice"] = np.nan_to_num(np.asarray([p["All"]["f"] for p in per], dtype=np.float64))
        values["spice"] = float(per_clip["spice"].mean())
    if "spider" in run:
        per_clip["spider"] = (per_clip["cider_d"] + per_clip["spice"]) / 2
        values["spider"] = float(per_clip["spider"].mean())
    for m in list(values):
        if m not in run:  # computed only as a part of SPIDEr
            values.pop(m), per_clip.pop(m)
        elif m != "bleu_4":
            intervals[m] = bootstrap_interval([per_clip[m]], n_boot=n_boot, seed=seed)
    order = [m for m in metrics if m in values]
    return CaptionScores(values={m: values[m] for m in order}, intervals={m: intervals[m] for m in order},
                         per_clip={m: per_clip[m] for m in order}, skipped=skipped, tokenizer=tok,
                         n=len(candidates))


# ---------------------------------------------------------------------------------------------------------------
# Decoders: a captioning run's own, or one trained on a frozen encoder through the trainer.
# ---------------------------------------------------------------------------------------------------------------
def run_config(run_dir: Path):
    """The TrainConfig a pretraining run was trained with (its config.json)."""
    from audiolp.train.config import TrainConfig

    path = run_dir / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: {run_dir} is not an audiolp pretraining run dir (give the "
                                "--run-dir of `audiolp pretrain`)")
    return TrainConfig.load(path)


def load_run_objective(run_dir: str | os.PathLike, device: str = "cpu") -> nn.Module:
    """The whole objective of a run (encoder + heads: a captioning run's decoder) from its latest checkpoint's
    raw weights, in eval mode, frozen."""
    from audiolp.models.io import (CHECKPOINT_DIR, ENCODER_CONFIG, CheckpointError, build_encoder_from_dict,
                                   latest_checkpoint, load_weights)
    from audiolp.objectives import build_objective

    run_dir = Path(run_dir)
    cfg = run_config(run_dir)
    enc_path = run_dir / ENCODER_CONFIG
    encoder = (build_encoder_from_dict(json.loads(enc_path.read_text())) if enc_path.exists() else
               build_encoder_from_dict({"class": "zipformer", "config": dataclasses.asdict(cfg.encoder_config())}))
    ckpt = latest_checkpoint(run_dir / CHECKPOINT_DIR)
    if ckpt is None:
        raise CheckpointError(f"{run_dir / CHECKPOINT_DIR} holds no checkpoint: the run has not saved its "
                              "objective yet")
    objective = build_objective(cfg.objective, encoder, cfg.objective_config)
    state = load_weights(ckpt / "model.safetensors")
    try:
        objective.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{ckpt / 'model.safetensors'} does not fit the objective its run's config.json "
                              f"describes ({e}); was the run made by another audiolp version?") from e
    objective.to(device).eval().requires_grad_(False)
    return objective


def _random_init_encoder(run_dir: Path) -> nn.Module:
    """The run's encoder preset at random init, seeded as the run was (its config.json's seed): the reference."""
    from audiolp.models.io import ENCODER_CONFIG, build_encoder_from_dict

    cfg = run_config(run_dir)
    torch.manual_seed(cfg.seed)
    path = run_dir / ENCODER_CONFIG
    d = (json.loads(path.read_text()) if path.exists() else
         {"class": "zipformer", "config": dataclasses.asdict(cfg.encoder_config())})
    return build_encoder_from_dict(d).eval().requires_grad_(False)


def decoder_train_config(run_dir: str | os.PathLike, data: str, init_from: str, decoder_dir: str | os.PathLike,
                         protocol: DecoderProtocol, seed: int = 0, progress: bool = False, n_clips: int | None = None):
    """The TrainConfig of a decoder on the run's frozen encoder (see :class:`DecoderProtocol`); ``n_clips``, the
    number of training clips when known, caps the loader's duration buckets."""
    from audiolp.train.config import TrainConfig

    src = run_config(Path(run_dir))
    # The encoder exactly as the run built it (attention scaling follows the optimiser family) and its features.
    base = {"model": src.model, "model_overrides": dict(src.model_overrides), "optim": {"name": src.optim.name},
            "text_model": src.text_model,
            "loader": {"feature_config": dataclasses.asdict(src.loader.feature_config)}}
    over = deep_merge(base, protocol.overrides)
    if n_clips is not None and "num_buckets" not in protocol.overrides.get("loader", {}):
        # A small caption split (MiniStew tiny's has 8 clips) cannot fill the preset's duration buckets.
        buckets = TrainConfig.from_preset(protocol.preset or src.preset or "paper").loader.num_buckets
        over.setdefault("loader", {})["num_buckets"] = max(1, min(buckets, n_clips))
    over.update(objective="captioning", data=str(data), scale=None, init_from=str(init_from), freeze_encoder=True,
                seed=seed, max_steps=protocol.max_steps, run_dir=str(decoder_dir), progress=progress,
                checkpoint_every=max(protocol.max_steps, 1), keep_last=1)
    return TrainConfig.from_preset(protocol.preset or src.preset or "paper", over)


def train_decoder(run_dir: str | os.PathLike, encoder: nn.Module, data: str, decoder_dir: str | os.PathLike,
                  protocol: DecoderProtocol, seed: int = 0, random_init: bool = False, progress: bool = False,
                  n_clips: int | None = None, log=print) -> nn.Module:
    """Train (or resume, or read back) a captioning decoder on ``encoder`` frozen, through the one trainer; returns
    the trained objective (frozen, eval). ``encoder`` must be the run's (its weights or, with ``random_init``,
    the reference at random init, which is written beside the decoder run for ``init_from``)."""
    from audiolp.eval.embed import encoder_fingerprint
    from audiolp.models.io import save_weights
    from audiolp.train.trainer import train

    run_dir, decoder_dir = Path(run_dir), Path(decoder_dir)
    decoder_dir.mkdir(parents=True, exist_ok=True)
    if random_init:
        init_from = decoder_dir / "init_encoder.safetensors"
        if not init_from.exists():
            from audiolp.files import atomic_write

            atomic_write(init_from, lambda tmp: save_weights(encoder.state_dict(), tmp))
    else:
        init_from = run_encoder_weights(run_dir)
    cfg = decoder_train_config(run_dir, data, str(init_from), decoder_dir, protocol, seed=seed, progress=progress,
                               n_clips=n_clips)
    # A finished decoder run is resumed at its last step, which trains nothing more (the trainer's resume rule).
    log(f"[captioning] decoder on the frozen encoder of {run_dir}{' (random init)' if random_init else ''}: "
        f"{protocol.max_steps} steps on {data} -> {decoder_dir}")
    train(cfg)
    objective = load_run_objective(decoder_dir)
    # The trainer froze the encoder: the decoder's encoder must be exactly the one under evaluation.
    if encoder_fingerprint(objective.encoder) != encoder_fingerprint(encoder):
        raise RuntimeError(f"the decoder run {decoder_dir} holds another encoder than {run_dir}'s (its config or "
                           "weights differ); delete the decoder run dir and rerun")
    return objective


# ---------------------------------------------------------------------------------------------------------------
# Generation and the evaluation record.
# ---------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def generate_captions(objective: nn.Module, cuts, decoding: Decoding | None = None, feature_config=None,
                      progress: bool = True, desc: str = "captions") -> tuple[dict[str, str], list[str]]:
    """{cut id: caption} of a captioning objective for every readable clip, and the ids of unreadable ones."""
    from lhotse import CutSet

    from audiolp.data.loader import LoaderConfig, make_dataloader
    from audiolp.features import FeatureConfig

    decoding = decoding or Decoding()
    cuts = CutSet.from_cuts(list(cuts))
    loader = make_dataloader(cuts, LoaderConfig(max_duration=decoding.max_duration, num_buckets=1, shuffle=False,
                                                spec_augment=False, feature_config=feature_config or FeatureConfig(),
                                                min_clip_seconds=None, max_clip_seconds=None), train=False)
    out: dict[str, str] = {}
    unreadable: list[str] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(cuts), desc=desc, unit="clip", dynamic_ncols=True)
    try:
        for batch in loader:
            unreadable += batch["skipped_cut_ids"]
            if batch["cut_ids"]:
                texts = objective.generate(batch, max_len=decoding.max_len, beam_size=decoding.beam_size,
                                           length_penalty=decoding.length_penalty)
                out.update(zip(batch["cut_ids"], texts))
            if bar is not None:
                bar.update(len(batch["cut_ids"]) + len(batch["skipped_cut_ids"]))
    finally:
        if bar is not None:
            bar.close()
    return out, unreadable


def _resolve_registry(registry: str | os.PathLike | None) -> Path:
    """A tasks.json or a folder holding one; None = the built MiniStew (full, else tiny). (audiolp.eval.run has
    the same rule; it imports this module, so this module does not import it back.)"""
    if registry is None:
        for cand in (Path("data/ministew_full/tasks.json"), Path("data/ministew_tiny/tasks.json")):
            if cand.exists():
                return cand
        raise FileNotFoundError("no task registry given and no built MiniStew found (looked for "
                                "data/ministew_full/tasks.json, data/ministew_tiny/tasks.json); pass the registry")
    path = Path(registry)
    path = path / "tasks.json" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"task registry {path} does not exist; give a tasks.json written by `audiolp prepare`")
    return path


def _short_hash(obj) -> str:
    return hashlib.blake2b(json.dumps(obj, sort_keys=True, default=str).encode(), digest_size=6).hexdigest()


def evaluate_captioning(run: str | os.PathLike, registry: str | os.PathLike | None = None,
                        task: str = DEFAULT_TASK, *, name: str | None = None, random_init: bool = False,
                        decoder: str = "auto", decoding: Decoding | None = None,
                        protocol: DecoderProtocol | None = None, metrics=DEFAULT_METRICS, tokenizer: str = "auto",
                        seed: int = 0, n_boot: int = 1000, n_examples: int = 5,
                        out_dir: str | os.PathLike = "papermill_runs/records/eval", progress: bool = True,
                        log=print) -> dict:
    """Captions of the ``task`` test clips from ``run``'s frozen encoder (or, ``random_init``, its preset at random
    init), scored against each clip's captions; writes and returns the results record ``captioning__<name>__...``,
    or returns the stored one when its params are identical.

    decoder: "auto" = the run's own decoder if it is a captioning run, else one trained on the frozen encoder;
    "own" (a captioning run only) or "train" to choose. seed drives the decoder training and the bootstrap."""
    from audiolp.data.schema import cut_captions
    from audiolp.data.tasks import load_task_registry, load_task_split
    from audiolp.eval.embed import encoder_fingerprint

    if decoder not in DECODER_CHOICES:
        raise ValueError(f"decoder={decoder!r}; use one of {DECODER_CHOICES}")
    run_dir = Path(run)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run dir {run_dir} does not exist; give the --run-dir of a pretraining run")
    cfg = run_config(run_dir)
    decoding, protocol = decoding or Decoding(), protocol or DecoderProtocol()
    metrics = tuple(metrics)
    metric_availability(metrics)  # unknown names fail before any work
    tok = resolve_tokenizer(tokenizer)
    registry_path = _resolve_registry(registry)
    specs = load_task_registry(registry_path)
    if task not in specs:
        raise ValueError(f"unknown task {task!r}; this registry has {sorted(specs)}")
    spec = specs[task]
    if "test" not in spec.splits:
        raise ValueError(f"caption task {task!r} has no test split; it has {sorted(spec.splits)}")
    own = cfg.objective == "captioning" and not random_init and decoder != "train"
    if decoder == "own" and not own:
        raise ValueError(f"decoder='own' needs a captioning run's own decoder; {run_dir} is a {cfg.objective} run"
                         f"{' (and random_init was asked)' if random_init else ''}: use decoder='train'")
    enc_name = name or run_dir.name
    if random_init:
        enc_name = f"{enc_name}_random_init" if name is None else name
    # What the captions depend on: the weights (the whole objective for an own decoder), the task, how the decoder
    # was made, the decoding; the params decide whether a stored record is reused.
    if own:
        model = load_run_objective(run_dir)
        fingerprint = encoder_fingerprint(model)
        encoder = model.encoder
    else:
        model = None
        if random_init:
            encoder = _random_init_encoder(run_dir)
        else:
            import audiolp

            final = (run_dir / "encoder.safetensors").exists()
            encoder = audiolp.load_encoder(run_dir, checkpoint="final" if final else "latest", use_ema=False)
        fingerprint = encoder_fingerprint(encoder)
    train_data = protocol.data or str(registry_path.parent / spec.splits.get("train", ""))
    if not own and "train" not in spec.splits and protocol.data is None:
        raise ValueError(f"caption task {task!r} has no train split to train a decoder on; give "
                         "DecoderProtocol(data=<caption manifest>)")
    proto = ({"decoder": "own", "checkpoint": "latest"} if own else
             {"decoder": "trained_on_frozen_encoder", **dataclasses.asdict(protocol), "data": train_data})
    params = {"run": str(run_dir), "encoder": enc_name, "objective": cfg.objective, "random_init": random_init,
              "fingerprint": fingerprint, "task": task, "registry": str(registry_path), "protocol": proto,
              "decoding": dataclasses.asdict(decoding), "metrics": list(metrics), "tokenizer": tok, "seed": seed,
              "n_boot": n_boot}
    params = json.loads(json.dumps(params, default=str))  # as stored
    rec_name = f"{enc_name}__{task}__{'own' if own else 'frozen'}-decoder__{decoding.tag}"
    path = record_path(out_dir, "captioning", rec_name)
    if path.exists():
        stored = json.loads(path.read_text())
        if stored.get("params") == params:
            return stored
    if not own:
        # The run dir is in the key: the decoder run records its encoder's path (init_from), and a retrained run with
        # the same weights in another dir (e.g. after a config-hash change) must not try to resume it.
        key = _short_hash([fingerprint, proto, seed, str(run_dir.resolve())])
        dec_dir = Path(out_dir) / ".decoders" / f"{enc_name}__{task}__{key}"
        n_clips = len(load_task_split(spec, "train", registry_path.parent)) if protocol.data is None else None
        model = train_decoder(run_dir, encoder, train_data, dec_dir, protocol, seed=seed, random_init=random_init,
                              progress=progress, n_clips=n_clips, log=log)
    root = registry_path.parent
    test = list(load_task_split(spec, "test", root))
    captions, unreadable = generate_captions(model, test, decoding, feature_config=cfg.loader.feature_config,
                                             progress=progress, desc=f"captions {enc_name}/{task}")
    kept = [c for c in test if c.id in captions]
    refs = [cut_captions(c) for c in kept]
    no_ref = [c.id for c, r in zip(kept, refs) if not r]
    if no_ref:
        raise ValueError(f"task {task!r} test clips {no_ref[:5]} have no captions (supervision custom['caption']): "
                         "a caption task needs references")
    scores = score_captions([captions[c.id] for c in kept], refs, metrics=metrics, tokenizer=tok, n_boot=n_boot,
                            seed=seed)
    out = {**scores.as_record(), "n_test": len(test), "unreadable": len(unreadable),
           "examples": [{"id": c.id, "caption": captions[c.id], "references": r}
                        for c, r in list(zip(kept, refs))[:n_examples]],
           "mean_words": float(np.mean([len(captions[c.id].split()) for c in kept])) if kept else 0.0}
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    cap_file = Path(out_dir) / ".captions" / f"{path.stem}.json"  # every caption, beside the record
    atomic_write_json(cap_file, {c.id: captions[c.id] for c in kept})
    written = write_record(out_dir, "captioning", rec_name, params, out, artifacts={"captions": str(cap_file)})
    return json.loads(written.read_text())


def caption_table(records: list[dict]) -> str:
    """Markdown: one row per captioning record, one column per metric, value [interval]."""
    metrics = list(dict.fromkeys(m for r in records for m in r["params"]["metrics"] if m in r["metrics"]))
    lines = ["| encoder | task | decoder | decoding | " + " | ".join(metrics) + " |",
             "|---|---|---|---|" + "---|" * len(metrics)]
    for r in records:
        p, m = r["params"], r["metrics"]
        cells = [f"{m[k]['value']:.3f} [{m[k]['interval'][0]:.2f}, {m[k]['interval'][1]:.2f}]" if k in m else ""
                 for k in metrics]
        dec = "own" if p["protocol"]["decoder"] == "own" else "trained on frozen"
        tag = "greedy" if p["decoding"]["beam_size"] == 1 else f"beam {p['decoding']['beam_size']}"
        lines.append(f"| {p['encoder']} | {p['task']} | {dec} | {tag} | " + " | ".join(cells) + " |")
    skipped = {k: v for r in records for k, v in r["metrics"].get("skipped", {}).items()}
    for k, why in skipped.items():
        lines.append(f"\n{k} skipped: {why}")
    return "\n".join(lines)
