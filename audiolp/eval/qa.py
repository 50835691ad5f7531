"""Open-form audio QA on MiniBench's held-out clips: a frozen encoder, a light adapter into a frozen LLM, greedy
answers judged against the clips' metadata.

    rec = evaluate_qa("runs/captioning", "data/ministew_full/tasks.json", out_dir="records/eval")
    rec["metrics"]["test"], rec["metrics"]["text_only"]["test"]      # exact match with audio / text-only control

Protocol (``QAProtocol``; every value is stored in the record's params):
1. QA pairs from the registry's task splits (``audiolp.data.qa``: templates, answers, normaliser); train questions from
   the tasks' train splits, test questions from their test splits; never a pretraining clip.
2. The adapter trains THROUGH THE TRAINER (``objective="audio_qa"``, ``freeze_encoder=True``, ``init_from`` = the
   run's final encoder; the ``random_init=True`` reference starts from the run's encoder preset at random init).
   The optimiser is the pretraining run's by default (``optimizer="match"``): the Zipformer's attention scaling
   follows the optimiser, so another one would change what the frozen encoder computes (the trainer refuses it).
3. Greedy answers to every test question (``max_test_questions_per_type`` subsamples, seeded); a judge (a callable
   ``(question, reference, prediction) -> score``; ``exact_match`` on normalised answers by default) scores each;
   the record holds the mean over questions with a 95% bootstrap interval over questions, per question type and
   overall.
4. The text-only control (``text_only_control``): the same adapter trained the same way with the audio replaced by
   one fixed silent input (``AudioQAConfig.audio_input="blind"``), so it can learn the answer format and each
   question type's answer prior, not the clip. It is the fairer control than the bare LLM without a prefix, which has
   never seen the answer vocabulary. ``audio_gain`` is the paired difference, with its own interval.

A record whose params (run, its encoder weights, task, protocol, seed, judge) are identical is read back, not
recomputed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from audiolp.data.qa import JUDGES, QUESTION_TYPES, exact_match, qa_pairs, write_qa_manifests
from audiolp.eval.probe import bootstrap_interval
from audiolp.files import atomic_write_text, record_path, write_record
from audiolp.models.llm import OFFLINE_LLM

Judge = Callable[[str, str, str], float]


@dataclasses.dataclass
class QAProtocol:
    llm: str = OFFLINE_LLM  # "smollm2" offline; an HF causal-LM id or folder for real runs
    question_types: tuple[str, ...] | None = None  # None = every type of audiolp.data.qa.QUESTION_TYPES
    steps: int = 300  # adapter optimizer steps
    max_duration: float = 60.0  # seconds of audio per training batch
    optimizer: str = "match"  # "match" (the pretraining run's), "adamw" or "scaled_adam"
    lr: float | None = None  # None = the optimiser's default (OptimConfig)
    warmup_steps: int = 10
    downsample: int = 4  # encoder frames per LLM token
    adapter_hidden: int = 0  # 0 = the LLM's hidden size
    max_audio_tokens: int = 128
    max_new_tokens: int = 8
    max_test_questions_per_type: int | None = None  # None = all test questions
    eval_max_duration: float = 120.0  # seconds of audio per answering batch
    n_boot: int = 2000
    text_only_control: bool = True
    device: str = "auto"

    def __post_init__(self):
        if self.question_types is not None:
            self.question_types = tuple(self.question_types)
            unknown = sorted(set(self.question_types) - set(QUESTION_TYPES))
            if unknown:
                raise ValueError(f"QAProtocol.question_types: unknown {unknown}; use some of {list(QUESTION_TYPES)}")
        if self.optimizer not in ("match", "adamw", "scaled_adam"):
            raise ValueError(f"QAProtocol.optimizer={self.optimizer!r}; use 'match', 'adamw' or 'scaled_adam'")
        if self.steps < 1:
            raise ValueError(f"QAProtocol.steps={self.steps}; must be >= 1")


def _judge(judge: str | Judge) -> tuple[Judge, str]:
    if callable(judge):
        return judge, getattr(judge, "__name__", type(judge).__name__)
    if judge not in JUDGES:
        raise ValueError(f"unknown QA judge {judge!r}; use one of {sorted(JUDGES)} or a callable "
                         "(question, reference, prediction) -> score")
    return JUDGES[judge], judge


def _digest(obj, n: int = 12) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _run_encoder(run: Path) -> tuple[dict, Path, dict]:
    """(encoder_config.json, the final (or latest checkpoint's) weights file, config.json) of a pretraining run."""
    from audiolp.models.io import ENCODER_CONFIG, resolve_weights

    run = Path(run)
    if not (run / ENCODER_CONFIG).is_file():
        raise FileNotFoundError(f"{run} holds no {ENCODER_CONFIG}; give the run dir of a pretraining run")
    weights = resolve_weights(run)
    if not weights.is_file():
        raise FileNotFoundError(f"{run} holds no final encoder ({weights.name}); let the pretraining run finish")
    cfg = json.loads((run / "config.json").read_text()) if (run / "config.json").is_file() else {}
    return json.loads((run / ENCODER_CONFIG).read_text()), weights, cfg


def train_qa_adapter(run: str | os.PathLike, train_manifest: str | os.PathLike, run_dir: str | os.PathLike,
                     protocol: QAProtocol, seed: int = 0, blind: bool = False, random_init: bool = False,
                     progress: bool = True) -> Path:
    """Train the adapter through the one trainer (see the module docstring); returns its run dir (resumed, not
    redone, when it already holds the same run)."""
    from audiolp.train.config import TrainConfig
    from audiolp.train.trainer import train

    enc_cfg, weights, run_cfg = _run_encoder(Path(run))
    optimizer = protocol.optimizer
    if optimizer == "match":
        optimizer = (run_cfg.get("optim") or {}).get("name", "scaled_adam")
    overrides = {k: v for k, v in enc_cfg["config"].items() if k != "attention_scaling"}
    cfg = TrainConfig.from_dict({
        "objective": "audio_qa",
        "objective_config": {"llm": protocol.llm, "downsample": protocol.downsample,
                             "adapter_hidden": protocol.adapter_hidden, "max_audio_tokens": protocol.max_audio_tokens,
                             "audio_input": "blind" if blind else "audio"},
        "model": "zipformer_m", "model_overrides": overrides,  # every encoder field from the run's own config
        "init_from": None if random_init else str(weights), "freeze_encoder": True,
        "data": str(train_manifest), "seed": seed,
        "loader": {"max_duration": protocol.max_duration, "num_buckets": 2, "spec_augment": False,
                   "min_clip_seconds": None, "max_clip_seconds": None, "drop_last": False},
        "optim": {"name": optimizer, "lr": protocol.lr, "warmup_batches": protocol.warmup_steps,
                  "total_steps": protocol.steps},
        "max_steps": protocol.steps, "checkpoint_every": protocol.steps, "keep_last": 1,
        "log_every": max(1, min(10, protocol.steps // 10)), "device": protocol.device, "progress": progress,
        "run_dir": str(run_dir),
    })
    return train(cfg)


def load_qa_model(qa_run: str | os.PathLike):
    """The trained QA model (encoder + adapter + frozen LLM) of an adapter run dir, in eval mode."""
    from audiolp.models.io import ENCODER_CONFIG, build_encoder_from_dict, latest_checkpoint, load_weights
    from audiolp.objectives import build_objective

    qa_run = Path(qa_run)
    cfg = json.loads((qa_run / "config.json").read_text())
    encoder = build_encoder_from_dict(json.loads((qa_run / ENCODER_CONFIG).read_text()))
    model = build_objective("audio_qa", encoder, cfg["objective_config"])
    ckpt = latest_checkpoint(qa_run / "checkpoints")
    if ckpt is None:
        raise FileNotFoundError(f"{qa_run} holds no checkpoint; train the adapter first (train_qa_adapter)")
    model.load_state_dict(load_weights(ckpt / "model.safetensors"), strict=True)
    return model.eval()


def select_test_questions(cuts, protocol: QAProtocol, seed: int = 0) -> list[tuple[str, dict]]:
    """(clip id, QA pair) of every test question, or ``max_test_questions_per_type`` of each type (seeded)."""
    rows = [(c.id, p) for c in cuts for p in qa_pairs(c)
            if protocol.question_types is None or p["type"] in protocol.question_types]
    cap = protocol.max_test_questions_per_type
    if cap is None:
        return rows
    rng = np.random.default_rng(seed)
    out = []
    for qtype in dict.fromkeys(p["type"] for _, p in rows):
        of_type = [r for r in rows if r[1]["type"] == qtype]
        keep = sorted(rng.permutation(len(of_type))[:cap].tolist())
        out += [of_type[i] for i in keep]
    return out


def answer_questions(model, cuts, rows: list[tuple[str, dict]], protocol: QAProtocol, progress: bool = True,
                     desc: str = "qa") -> list[str]:
    """Greedy answers to ``rows`` (clip id, QA pair), in order; each clip's audio is read and encoded once."""
    import torch
    from lhotse import CutSet
    from tqdm.auto import tqdm

    from audiolp.data.loader import LoaderConfig, make_dataloader

    by_clip: dict[str, list[int]] = {}
    for i, (cid, _) in enumerate(rows):
        by_clip.setdefault(cid, []).append(i)
    clips = CutSet.from_cuts(c for c in cuts if c.id in by_clip)
    with warnings.catch_warnings():  # a few hundred test clips in memory: lazy reading would buy nothing
        warnings.filterwarnings("ignore", message="You are using DynamicCutSampler with an eagerly read CutSet")
        loader = make_dataloader(clips, LoaderConfig(max_duration=protocol.eval_max_duration, num_buckets=1, shuffle=False,
                                                     spec_augment=False, min_clip_seconds=None,
                                                     max_clip_seconds=None), train=False)
    dev = next(model.adapter.parameters()).device
    answers: list[str | None] = [None] * len(rows)
    with tqdm(total=len(rows), desc=desc, disable=not progress, dynamic_ncols=True) as bar:
        for batch in loader:
            if not batch["cut_ids"]:
                raise RuntimeError(f"QA test clips {batch['skipped_cut_ids']} could not be read")
            batch = {k: (v.to(dev) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
            idx = [(ci, i) for ci, cid in enumerate(batch["cut_ids"]) for i in by_clip[cid]]
            preds = model.answer(batch, [rows[i][1]["question"] for _, i in idx], rows=[ci for ci, _ in idx],
                                 max_new_tokens=protocol.max_new_tokens)
            for (_, i), p in zip(idx, preds):
                answers[i] = p
            bar.update(len(idx))
    missing = [rows[i][0] for i, a in enumerate(answers) if a is None]
    if missing:
        raise RuntimeError(f"QA: no answer for clips {sorted(set(missing))[:5]} (unreadable audio?)")
    return answers


def score_answers(rows: list[tuple[str, dict]], predictions: list[str], judge: Judge = exact_match,
                  n_boot: int = 2000, seed: int = 0) -> dict:
    """Mean judge score over questions with a 95% bootstrap interval, overall and per question type; also the
    per-question scores (``per_question``) for paired comparisons."""
    scores = np.array([float(judge(p["question"], p["answer"], pred)) for (_, p), pred in zip(rows, predictions)])
    types = [p["type"] for _, p in rows]
    out = {"test": float(scores.mean()), "interval": list(bootstrap_interval([scores], n_boot=n_boot, seed=seed)),
           "n_test": len(rows), "per_type": {}}
    for qtype in dict.fromkeys(types):
        s = scores[[t == qtype for t in types]]
        out["per_type"][qtype] = {"test": float(s.mean()), "interval": list(bootstrap_interval([s], n_boot=n_boot,
                                                                                              seed=seed)),
                                  "n_test": int(s.size)}
    out["per_question"] = scores
    return out


def evaluate_qa(run: str | os.PathLike, registry: str | os.PathLike, out_dir: str | os.PathLike = "papermill_runs/records/eval",
                protocol: QAProtocol | None = None, seed: int = 0, name: str | None = None, random_init: bool = False,
                judge: str | Judge = "exact_match", progress: bool = True, log=print) -> dict:
    """Open-form QA of a pretraining run's frozen encoder (see the module docstring); returns the results record
    (written to ``out_dir/qa__<name>__qa.json``, read back when its params are identical)."""
    proto = protocol or QAProtocol()
    judge_fn, judge_name = _judge(judge)
    registry = Path(registry)
    registry = registry / "tasks.json" if registry.is_dir() else registry
    run = Path(run)
    name = name or (f"random_init_like_{run.name}" if random_init else run.name)
    enc_cfg, weights, _ = _run_encoder(run)
    params = {"run": str(run), "encoder": name, "random_init": bool(random_init),
              "encoder_fingerprint": _digest(enc_cfg) if random_init else _file_digest(weights),
              "task": "qa", "registry": str(registry), "protocol": dataclasses.asdict(proto), "seed": int(seed),
              "judge": judge_name}
    params = json.loads(json.dumps(params, default=str))  # as stored: tuples become lists
    path = record_path(out_dir, "qa", f"{name}__qa")
    if path.exists() and json.loads(path.read_text()).get("params") == params:
        return json.loads(path.read_text())
    work = Path(out_dir) / ".qa"
    data = write_qa_manifests(registry, work / "data" / _digest([str(registry.resolve()), seed, proto.question_types]),
                              seed=seed, types=proto.question_types)
    from lhotse import CutSet

    test_cuts = CutSet.from_file(data["test"]).to_eager()
    rows = select_test_questions(test_cuts, proto, seed)
    n_train = sum(len([p for p in qa_pairs(c) if proto.question_types is None or p["type"] in proto.question_types])
                  for c in CutSet.from_file(data["train"]))
    results, train_info = {}, {}
    for variant in ("audio", "text_only") if proto.text_only_control else ("audio",):
        qa_run = work / "runs" / f"{name}__{variant}__{_digest(params)}"
        log(f"[qa] {name}: training the {variant} adapter in {qa_run}")
        train_qa_adapter(run, data["train"], qa_run, proto, seed=seed, blind=variant == "text_only",
                         random_init=random_init, progress=progress)
        res = json.loads((qa_run / "results.json").read_text())
        train_info[variant] = {"run_dir": str(qa_run), "steps": res["steps"], "first_loss": res["first_loss"],
                               "final_loss": res["final_loss"], "num_trainable_params": res["num_trainable_params"]}
        model = load_qa_model(qa_run)
        preds = answer_questions(model, test_cuts, rows, proto, progress=progress, desc=f"qa {name} {variant}")
        results[variant] = (score_answers(rows, preds, judge_fn, n_boot=proto.n_boot, seed=seed), preds)
        del model
    audio, preds = results["audio"]
    metrics = {"metric": judge_name, "test": audio["test"], "interval": audio["interval"], "n_test": audio["n_test"],
               "n_train_questions": n_train, "per_type": audio["per_type"], "train": train_info}
    examples = [{"type": p["type"], "question": p["question"], "reference": p["answer"], "prediction": a}
                for (_, p), a in zip(rows, preds)]
    if "text_only" in results:
        blind, blind_preds = results["text_only"]
        metrics["text_only"] = {k: blind[k] for k in ("test", "interval", "per_type")}
        gain = audio["per_question"] - blind["per_question"]
        metrics["audio_gain"] = {"test": float(gain.mean()),
                                 "interval": list(bootstrap_interval([gain], n_boot=proto.n_boot, seed=seed))}
        for ex, b in zip(examples, blind_preds):
            ex["text_only_prediction"] = b
    metrics["examples"] = examples[:20]
    preds_path = Path(out_dir) / f"{path.stem}.predictions.jsonl"
    atomic_write_text(preds_path, "".join(json.dumps({"clip": cid, **ex}) + "\n" for (cid, _), ex in zip(rows, examples)))
    return json.loads(write_record(out_dir, "qa", f"{name}__qa", params, metrics,
                                   artifacts={"predictions": str(preds_path)}).read_text())
