"""`audiolp evaluate`: frozen encoders (pretraining runs and the reference points) on the tasks of a registry, one
results record per (encoder, task, pooling).

    records = evaluate({"contrastive": "runs/c1", "captioning": "runs/k1"}, "data/ministew_full/tasks.json",
                       poolings=("mean", "attention"), baselines=("random", "fbank"), out_dir="records/eval")

Every comparison carries its references: ``random`` is the first run's encoder preset at random init (the same
seed the run started from), ``fbank`` the log-mel frames themselves. Embeddings are cached (``EmbeddingCache``), and
a record that already exists for the same encoder weights, task, pooling and protocol is read back, not
recomputed.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from torch import nn

from audiolp.data.tasks import TaskSpec, load_task_registry, load_task_split
from audiolp.eval.embed import EmbeddingCache, FbankFrames, clip_set_fingerprint
from audiolp.eval.linear import ProbeProtocol, linear_probe
from audiolp.files import record_path, write_record

BASELINES = ("random", "fbank")
PROBE_KINDS = ("multiclass", "multilabel")


def resolve_registry(registry: str | os.PathLike | None) -> Path:
    """A registry file (tasks.json) or a folder holding one; None = the built MiniStew (full, else tiny)."""
    if registry is None:
        for cand in (Path("data/ministew_full/tasks.json"), Path("data/ministew_tiny/tasks.json")):
            if cand.exists():
                return cand
        raise FileNotFoundError("no task registry given and no built MiniStew found (looked for "
                                "data/ministew_full/tasks.json, data/ministew_tiny/tasks.json); pass --registry "
                                "PATH/tasks.json or build it with `audiolp prepare ministew --out data/ministew_full`")
    path = Path(registry)
    if path.is_dir():
        path = path / "tasks.json"
    if not path.is_file():
        raise FileNotFoundError(f"task registry {path} does not exist; give a tasks.json written by `audiolp prepare "
                                "ministew` or `audiolp prepare task`")
    return path


def select_tasks(registry: dict[str, TaskSpec], names: list[str] | None) -> list[TaskSpec]:
    """``names``: task names, or "minibench" / "all" for every probe-able (multiclass, multilabel, sed) task."""
    wanted = names or ["all"]
    out: list[str] = []
    for name in wanted:
        if name in ("all", "minibench"):
            out += [n for n, s in registry.items() if s.kind in PROBE_KINDS + ("sed",)]
        elif name in registry:
            out.append(name)
        else:
            raise ValueError(f"unknown task {name!r}; this registry has {sorted(registry)} (or 'minibench' / 'all')")
    return [registry[n] for n in dict.fromkeys(out)]


def load_run_encoder(run_dir: str | os.PathLike) -> nn.Module:
    """A run's frozen encoder: its final weights, else its latest checkpoint."""
    import audiolp

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run dir {run_dir} does not exist; give the --run-dir of a pretraining run")
    final = (run_dir / "encoder.safetensors").exists()
    return audiolp.load_encoder(run_dir, checkpoint="final" if final else "latest", use_ema=False)


def random_init_like(run_dir: str | os.PathLike) -> nn.Module:
    """The run's encoder preset at random init, seeded as the run was (its config.json's seed)."""
    import torch

    from audiolp.models.io import ENCODER_CONFIG, build_encoder_from_dict

    run_dir = Path(run_dir)
    seed = json.loads((run_dir / "config.json").read_text()).get("seed", 0) if (run_dir / "config.json").exists() else 0
    torch.manual_seed(seed)
    return build_encoder_from_dict(json.loads((run_dir / ENCODER_CONFIG).read_text())).eval()


def evaluate(runs: dict[str, str | os.PathLike | nn.Module], registry: str | os.PathLike | None = None,
             tasks: list[str] | None = None, poolings=("mean",), baselines=BASELINES,
             out_dir: str | os.PathLike = "papermill_runs/records/eval", cache_dir: str | os.PathLike | None = None,
             protocol: ProbeProtocol | None = None, sed_config=None, captioning: dict | None = None,
             qa_protocol=None, lit=None, log=print) -> list[dict]:
    """Probe every encoder on every task (see the module docstring); returns the records (also written).

    The task name "captioning" generates captions from each run's frozen encoder (and the random-init reference)
    for the registry's caption task; ``captioning`` holds keyword arguments of
    :func:`audiolp.eval.captioning.evaluate_captioning` (task, decoding, protocol, metrics, ...).
    Task "qa": open-form QA (``audiolp.eval.qa``, protocol ``qa_protocol``) of every run dir, and of its random
    init when ``baselines`` has "random" (the fbank baseline has no encoder to put under an LLM).
    A task of kind retrieval is scored by ``audiolp.eval.retrieval`` (own heads of a contrastive run, and LiT
    heads aligned with ``lit``, a ``LiTConfig``) instead of a probe."""
    registry_path = resolve_registry(registry)
    records: list[dict] = []
    if tasks and "captioning" in tasks:  # caption generation from the frozen encoders (audiolp.eval.captioning)
        records += _captioning(runs, registry_path, baselines, out_dir, captioning or {}, log)
        tasks = [t for t in tasks if t != "captioning"]
        if not tasks:
            return records
    qa = "qa" in (tasks or [])
    other = [t for t in tasks or [] if t != "qa"]
    specs = select_tasks(load_task_registry(registry_path), other or None) if (other or not qa) else []
    unknown = sorted(set(baselines) - set(BASELINES))
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown}; use {list(BASELINES)}")
    bad_pool = sorted(set(poolings) - {"mean", "attention"})
    if bad_pool:
        raise ValueError(f"unknown pooling(s) {bad_pool}; use mean and/or attention")
    encoders: dict[str, tuple[nn.Module, str]] = {}
    for name, src in runs.items():
        encoders[name] = (src, "module") if isinstance(src, nn.Module) else (load_run_encoder(src), str(src))
    first_run = next((src for src in runs.values() if not isinstance(src, nn.Module)), None)
    if "random" in baselines:
        if first_run is None:
            raise ValueError("baseline 'random' needs a run dir to copy the encoder preset from")
        encoders["random_init"] = (random_init_like(first_run), f"random init like {first_run}")
    if "fbank" in baselines:
        encoders["fbank"] = (FbankFrames(), "log-mel fbank frames")
    proto = protocol or ProbeProtocol()
    cache = EmbeddingCache(cache_dir or Path(out_dir) / ".embeddings")
    for enc_name, (encoder, source) in encoders.items():
        fingerprint = cache.fingerprint(encoder)
        for spec in specs:
            if spec.kind == "retrieval":
                records += _retrieval_records(enc_name, runs.get(enc_name, encoder), spec, registry_path, out_dir,
                                              cache, proto, lit, log)
                continue
            for pooling in (poolings if spec.kind in PROBE_KINDS else ("frames",)):
                params = {"encoder": enc_name, "source": source, "encoder_fingerprint": fingerprint,
                          "task": spec.name, "kind": spec.kind, "pooling": pooling, "registry": str(registry_path),
                          "protocol": dataclasses.asdict(proto) if spec.kind in PROBE_KINDS else
                          {"seeds": list(proto.seeds), "n_boot": proto.n_boot,
                           "sed": dataclasses.asdict(sed_config) if sed_config is not None else "default"}}
                params = json.loads(json.dumps(params, default=str))  # as stored: tuples become lists
                path = record_path(out_dir, "probe", f"{enc_name}__{spec.name}__{pooling}")
                path.parent.mkdir(parents=True, exist_ok=True)
                if path.exists() and json.loads(path.read_text()).get("params") == params:
                    rec = json.loads(path.read_text())  # the same encoder weights, task and protocol: reuse
                else:
                    rec = _evaluate_one(encoder, spec, registry_path, pooling, cache, proto, params, path, sed_config)
                records.append(rec)
                m = rec["metrics"]
                log(f"[evaluate] {enc_name:>16} {spec.name:>18} {pooling:>9}: {m['metric']} {m['test']:.3f} "
                    f"[{m['interval'][0]:.3f}, {m['interval'][1]:.3f}]")
    if qa:
        records += _evaluate_qa_runs(runs, registry_path, baselines, out_dir, qa_protocol, log)
    return records


def _evaluate_qa_runs(runs: dict, registry_path: Path, baselines, out_dir, qa_protocol, log) -> list[dict]:
    """The "qa" task: one QA record per run dir (and its random init if asked), each with its text-only control."""
    from audiolp.eval.qa import evaluate_qa

    records = []
    for i, (name, src) in enumerate(runs.items()):
        if isinstance(src, nn.Module):
            raise ValueError(f"task 'qa' trains an adapter through the trainer from a run dir; {name!r} is a module")
        # One random-init reference, like the first run (as for probes and captions): the runs share a preset.
        todo = [(name, False)] + ([("random_init", True)] if "random" in baselines and i == 0 else [])
        for rec_name, random_init in todo:
            rec = evaluate_qa(src, registry_path, out_dir=out_dir, protocol=qa_protocol, name=rec_name,
                              random_init=random_init, log=log)
            m = rec["metrics"]
            blind = f"; text-only {m['text_only']['test']:.3f}" if "text_only" in m else ""
            log(f"[evaluate] {rec_name:>16} {'qa':>18} {m['metric']}: {m['test']:.3f} "
                f"[{m['interval'][0]:.3f}, {m['interval'][1]:.3f}]{blind}")
            records.append(rec)
    return records


def _captioning(runs: dict, registry_path: Path, baselines, out_dir, options: dict, log) -> list[dict]:
    """Captioning records per run dir, plus the random-init reference like the first run ("fbank" has no encoder to
    caption from and is left out). ``options["decoder"]="both"`` scores a captioning run twice: with its own
    decoder, and with a decoder trained on its frozen encoder -- the protocol every other encoder gets, so the
    objectives can be compared on equal terms (the study does this)."""
    from audiolp.eval.captioning import evaluate_captioning, run_config

    named = [(n, src) for n, src in runs.items() if not isinstance(src, nn.Module)]
    if len(named) < len(runs):
        raise ValueError("captioning needs run dirs (a decoder is loaded from or trained through the run's "
                         "config); an nn.Module was given")
    options = dict(options)
    chosen = options.pop("decoder", "auto")
    jobs = []
    for n, src in named:
        is_captioning = chosen == "both" and run_config(Path(src)).objective == "captioning"
        decoders = ("own", "train") if is_captioning else ("auto" if chosen == "both" else chosen,)
        jobs += [(n, src, False, d) for d in decoders]
    if "random" in baselines and named:
        jobs.append(("random_init", named[0][1], True, "train"))
    out = []
    for name, src, random_init, decoder in jobs:
        rec = evaluate_captioning(src, registry_path, name=name, random_init=random_init, decoder=decoder,
                                  out_dir=out_dir, log=log, **options)
        m = rec["metrics"]
        log(f"[evaluate] {name:>16} {rec['params']['task']:>18} captions: " + ", ".join(
            f"{k} {m[k]['value']:.3f}" for k in rec["params"]["metrics"] if k in m))
        out.append(rec)
    return out


def _retrieval_records(enc_name: str, encoder, spec: TaskSpec, registry_path: Path, out_dir, cache: EmbeddingCache,
                       proto: ProbeProtocol, lit, log) -> list[dict]:
    """A retrieval task: ``audiolp.eval.retrieval.evaluate_retrieval`` (a run dir: own heads + LiT; a module:
    LiT); the fbank reference has no encoder to align heads on."""
    from audiolp.eval.retrieval import evaluate_retrieval

    if isinstance(encoder, FbankFrames):
        log(f"[evaluate] {enc_name:>16} {spec.name:>18}: skipped (retrieval aligns heads on an encoder)")
        return []
    return evaluate_retrieval(encoder, registry_path, spec.name, name=enc_name, lit=lit, out_dir=out_dir, cache=cache,
                              n_boot=proto.n_boot, log=log)


def _evaluate_one(encoder, spec: TaskSpec, registry_path: Path, pooling: str, cache: EmbeddingCache,
                  proto: ProbeProtocol, params: dict, path: Path, sed_config=None) -> dict:
    root = registry_path.parent
    if spec.kind == "sed":
        from audiolp.eval.sed import evaluate_sed

        out = evaluate_sed(encoder, registry_path, spec.name, cache, seeds=proto.seeds, config=sed_config,
                           n_boot=proto.n_boot)
        metrics = {"metric": "segment_f1", "test": out["segment_f1"], "interval": list(out["segment_f1_interval"]),
                   **{k: v for k, v in out.items() if k.endswith("_f1") or k.endswith("_interval")},
                   "per_seed": out["per_seed"], "n_train": out["n_train"], "n_val": out["n_val"],
                   "n_test": out["n_test"]}
    else:
        emb = {s: cache.get(encoder, load_task_split(spec, s, root), name=f"{spec.name}/{s}")
               for s in ("train", "val", "test")}
        r = linear_probe(emb["train"], emb["val"], emb["test"], spec.labels, kind=spec.kind, pooling=pooling,
                         task=spec.name, protocol=proto)
        metrics = {"metric": r.metric, "test": r.test, "interval": list(r.interval), "test_per_seed": r.test_per_seed,
                   "val": r.val, "setting": r.setting, "grid": r.grid, "chance": r.chance, "n_train": r.n_train,
                   "n_val": r.n_val, "n_test": r.n_test,
                   "unreadable": sum(len(e.unreadable) for e in emb.values())}
        if r.test_correct is not None:
            # Each test clip's seed-averaged correctness, and which clips they are: two encoders probed on the same
            # clips are compared clip by clip (a paired interval, ``audiolp.study.analysis.Score``).
            metrics["test_per_clip"] = [round(float(v), 4) for v in r.test_correct]
            metrics["test_clips"] = clip_set_fingerprint(emb["test"].ids)
    name = path.stem[len("probe__"):]
    return json.loads(write_record(path.parent, "probe", name, params, metrics).read_text())


def table(records: list[dict]) -> str:
    """Markdown: one row per (encoder, pooling), one column per task, test score [interval]; captioning records
    in a table of their own below."""
    captions = [r for r in records if r.get("kind") == "captioning"]
    records = [r for r in records if r.get("kind") != "captioning"]
    if captions:
        from audiolp.eval.captioning import caption_table

        return "\n\n".join(([table(records)] if records else []) + [caption_table(captions)])
    tasks = list(dict.fromkeys(r["params"]["task"] for r in records))
    rows: dict[tuple, dict] = {}
    for r in records:
        rows.setdefault((r["params"]["encoder"], r["params"].get("pooling", "-")), {})[r["params"]["task"]] = r["metrics"]
    lines = ["| encoder | pooling | " + " | ".join(tasks) + " |", "|---|---|" + "---|" * len(tasks)]
    for (enc, pool), by_task in rows.items():
        cells = [f"{by_task[t]['test']:.3f} [{by_task[t]['interval'][0]:.2f}, {by_task[t]['interval'][1]:.2f}]"
                 if t in by_task else "" for t in tasks]
        lines.append(f"| {enc} | {pool} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
