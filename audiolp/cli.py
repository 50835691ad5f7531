"""`audiolp prepare|stats|pretrain|demo`: the same functions the notebooks call.

Every error is one line naming the thing and the fix, exit status 2; ``--debug`` shows the traceback instead."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _parse_sources(items: list[str]) -> list[tuple[str, str]]:
    sources = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--source {item!r}: write NAME=PATH, e.g. --source audiocaps=/data/audiocaps")
        sources.append((name.strip().lower(), path))
    return sources


def _parse_source_options(items: list[str]) -> dict[str, dict]:
    """`--option paraspeechcaps.audio_root=/corpora` -> {"paraspeechcaps": {"audio_root": "/corpora"}}."""
    options: dict[str, dict] = {}
    for item in items:
        key, sep, value = item.partition("=")
        name, dot, opt = key.partition(".")
        if not sep or not dot or not name or not opt:
            raise SystemExit(f"--option {item!r}: write SOURCE.KEY=VALUE, e.g. --option paraspeechcaps.audio_root=/data")
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
        options.setdefault(name.strip().lower(), {})[opt] = value
    return options


def cmd_prepare_task(args) -> int:
    """`audiolp prepare task NAME --source PATH --out DIR`: a downstream task registry (audiolp.data.downstream)."""
    from audiolp.data.downstream import ADAPTERS, prepare_task

    if not args.task_name:
        raise SystemExit(f"prepare task needs the dataset NAME: one of {', '.join(ADAPTERS)}")
    source = args.manifest or (args.source[-1] if args.source else None)
    if source is None:
        raise SystemExit("prepare task needs --source PATH (the dataset's root folder; for 'manifest' the cut "
                         "manifest, or --manifest FILE)")
    if args.task_name == "manifest":
        options = dict(label_field=args.label_field or "labels", kind=args.kind, task_name=args.name, domain=args.domain)
    elif args.task_name == "folder":
        options = dict(csv_path=args.csv, kind=args.kind, task_name=args.name, domain=args.domain or "sound")
    else:
        extra = [f for f, v in (("--csv", args.csv), ("--kind", args.kind), ("--label-field", args.label_field),
                                ("--name", args.name), ("--domain", args.domain)) if v]
        if extra:
            raise SystemExit(f"{' '.join(extra)} only apply to the 'folder' / 'manifest' tasks, not {args.task_name!r}")
        options = {}
    specs, lines = prepare_task(args.task_name, source, args.out, num_workers=args.workers, **options)
    for line in lines:
        print(line)
    print(f"wrote {len(specs)} task(s) into {Path(args.out) / 'tasks.json'}")
    return 0


def cmd_prepare(args) -> int:
    if args.corpus == "task":
        return cmd_prepare_task(args)
    if args.corpus == "captionstew":
        from audiolp.data.stew import build_captionstew

        if not args.source:
            raise SystemExit("prepare captionstew needs at least one --source NAME=PATH")
        options = _parse_source_options(args.option or [])
        sources = [(name, path, options.get(name, {})) for name, path in _parse_sources(args.source)]
        unused = sorted(set(options) - {name for name, _, _ in sources})
        if unused:
            raise SystemExit(f"--option names sources {unused} that no --source gives")
        report = build_captionstew(sources, args.out, exclude_ids=args.exclude_ids or (),
                                   seed=args.seed, shar=args.shar)
        print(report.table())
        print(f"wrote {report.manifest} ({report.num_cuts} clips); skipped rows listed in {Path(args.out) / 'malformed.txt'}")
        return 0
    if args.corpus == "ministew":
        from audiolp.data.ministew import build_ministew
        from audiolp.data.ministew.card import data_card

        start = time.time()
        out = build_ministew(args.out, profile=args.profile, seed=args.seed)
        print(data_card(out))
        print(f"MiniStew ({args.profile}) ready in {out} after {time.time() - start:.0f} s")
        return 0
    if args.corpus == "features":
        from audiolp.data.schema import load_manifest
        from audiolp.data.precompute import precompute_features

        if not args.data:
            raise SystemExit("prepare features needs --data MANIFEST (the cuts to compute fbank for)")
        start = time.time()
        stored = precompute_features(load_manifest(args.data), args.out, num_workers=args.workers,
                                     shard_size=args.shard_size)
        print(f"fbank of {sum(1 for _ in stored)} clips in {args.out} after {time.time() - start:.0f} s; train on "
              f"--data {Path(args.out) / 'cuts_with_feats.jsonl.gz'}")
        return 0
    raise SystemExit(f"unknown corpus {args.corpus!r}; use captionstew, ministew or features")


def cmd_stats(args) -> int:
    from audiolp.data.stew import manifest_statistics, stats_table

    path = Path(args.manifest)
    if path.is_dir() and (path / "cuts.jsonl.gz").exists() and not (path / "stats.json").exists():
        path = path / "cuts.jsonl.gz"
    stats = manifest_statistics(path)
    print(json.dumps(stats, indent=2) if args.json else stats_table(stats))
    return 0


def _apply_overrides(cfg_dict: dict, overrides: list[str]) -> dict:
    """`--set optim.lr=0.01 --set loader.max_duration=60` on the TrainConfig JSON."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: write KEY=VALUE, e.g. --set optim.lr=0.01")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = cfg_dict
        *parents, leaf = key.split(".")
        for p in parents:
            if not isinstance(node.get(p), dict):
                raise SystemExit(f"--set {key}: {p!r} is not a config section")
            node = node[p]
        # objective_config / model_overrides start empty: any field of the objective's or encoder's config may be
        # added there (the dataclass named by the config checks it when the run starts).
        from audiolp.train.config import FREE_SECTIONS

        if leaf not in node and not (parents and parents[-1] in FREE_SECTIONS):
            raise SystemExit(f"--set {key}: unknown field {leaf!r}; fields here: {sorted(node)}")
        node[leaf] = value
    return cfg_dict


def cmd_pretrain(args) -> int:
    from dataclasses import asdict

    from audiolp.train.config import TrainConfig
    from audiolp.train.trainer import train

    if args.config and args.preset:
        raise SystemExit("give --config (a whole TrainConfig JSON, e.g. a run's config.json) or --preset, not both")
    if args.config:
        cfg_dict = asdict(TrainConfig.load(args.config))
    else:  # the preset's section of the run's objective is chosen by the objective, so that comes first
        first = {"objective": args.objective} if args.objective else {}
        cfg_dict = asdict(TrainConfig.from_preset(args.preset or "paper", first))
    for field_name, value in (("objective", args.objective), ("data", args.data), ("scale", args.scale),
                              ("model", args.model), ("run_dir", args.run_dir), ("max_steps", args.max_steps),
                              ("seed", args.seed), ("init_from", args.init_from), ("precision", args.precision),
                              ("device", args.device), ("text_model", args.text_model)):
        if value is not None:
            if field_name not in cfg_dict:
                raise SystemExit(f"TrainConfig has no field {field_name!r}")
            cfg_dict[field_name] = value
    cfg = TrainConfig.from_dict(_apply_overrides(cfg_dict, args.set or []))
    if cfg.scale is not None:  # a typo in the scale fails now, not after the manifest is read
        from audiolp.data.scale import parse_scale

        parse_scale(cfg.scale)
    preflight(cfg)
    run_dir = train(cfg)
    print(f"run directory: {run_dir}")
    return 0


def preflight(cfg) -> None:
    """What can fail without reading the corpus fails first (seconds, not after a long manifest scan): the text
    model or tokenizer of the objective must load."""
    from audiolp.train.data import objective_config_for

    oc = objective_config_for(cfg)
    name = oc.get("text_model") or oc.get("tokenizer")
    if name is None:
        from audiolp.objectives import objective_config_class

        cfg_cls = objective_config_class(cfg.objective)
        name = getattr(cfg_cls(), "text_model", None) or getattr(cfg_cls(), "tokenizer", None)
    if name is not None:  # the tokenizer is the cheap part of a text model: enough to know it can be had
        from audiolp.models.text import load_tokenizer

        load_tokenizer(name)


def cmd_evaluate(args) -> int:
    from audiolp.eval.linear import ProbeProtocol
    from audiolp.eval.retrieval import LiTConfig
    from audiolp.eval.run import evaluate, table

    runs = {}
    for item in args.runs:
        name, sep, path = item.partition("=")
        runs[name if sep else Path(item).name] = path if sep else item
    protocol = ProbeProtocol(seeds=tuple(range(args.seeds)))
    captioning = None
    if "captioning" in args.tasks:
        from audiolp.eval.captioning import Decoding

        captioning = {"decoding": Decoding(beam_size=args.beam_size)}
        if args.caption_metrics:
            captioning["metrics"] = tuple(m for m in args.caption_metrics.split(",") if m)
    records = evaluate(runs, args.registry, tasks=args.tasks, poolings=tuple(args.pooling),
                       baselines=tuple(b for b in args.baselines.split(",") if b), out_dir=args.out,
                       protocol=protocol, captioning=captioning,
                       lit=LiTConfig(steps=args.lit_steps))
    print(table(records))
    print(f"{len(records)} records in {args.out}")
    return 0


def cmd_demo(args) -> int:
    """The whole study on the built-in corpus: every notebook executed by papermill, figures, the summary."""
    from audiolp.study.demo import run_demo

    return run_demo(quick=args.quick, out=args.out, figures=args.figures)


def cmd_figures(args) -> int:
    """Every figure rebuilt from the stored records (no training, no evaluation)."""
    from audiolp.study.experiments import project_root
    from audiolp.study.figures import rebuild_figures
    from audiolp.study.summary import write_summary

    out = Path(args.out) if args.out else project_root() / "papermill_runs"
    figures = Path(args.figures) if args.figures else project_root() / "figures"
    if not (out / "records").is_dir():
        raise FileNotFoundError(f"no records folder {out / 'records'}; run `make demo` or the notebooks first, or "
                                "give --out (the folder holding records/)")
    paths = rebuild_figures(out / "records", figures)
    print(f"{len(paths)} figure files in {figures}; summary {write_summary(out)}")
    return 0


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are one line too."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="audiolp", description=__doc__)
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    pp = sub.add_parser("prepare", help="build a corpus manifest (CaptionStew from local corpora, or MiniStew "
                                        "offline), or precompute its fbank features")
    pp.add_argument("corpus", choices=["captionstew", "ministew", "features", "task"])
    pp.add_argument("task_name", nargs="?", metavar="NAME",
                    help="task: a downstream dataset (esc50, fsd50k, ..., see audiolp.data.downstream), folder or manifest")
    pp.add_argument("--csv", help="task folder: csv with columns file,label[,split] (default: the folder's only .csv)")
    pp.add_argument("--kind", choices=["multiclass", "multilabel"], help="task folder/manifest: default from the labels")
    pp.add_argument("--label-field", dest="label_field", help="task manifest: supervision field holding the labels")
    pp.add_argument("--manifest", help="task manifest: the labelled cut manifest (instead of --source)")
    pp.add_argument("--name", help="task folder/manifest: registry task name (default: the source's name)")
    pp.add_argument("--domain", choices=["sound", "music", "speech"], help="task folder/manifest: domain")
    pp.add_argument("--data", help="features: the cut manifest (or folder) to compute fbank for")
    pp.add_argument("--workers", type=int, default=2, help="features: audio-reading workers")
    pp.add_argument("--shard-size", dest="shard_size", type=int, default=20_000,
                    help="features: clips per archive; a rerun skips finished shards")
    pp.add_argument("--source", action="append", help="NAME=PATH of a local corpus copy (captionstew; repeatable); task: PATH of the dataset's root folder")
    pp.add_argument("--option", action="append",
                    help="SOURCE.KEY=VALUE adapter option, e.g. paraspeechcaps.audio_root=/corpora (repeatable)")
    pp.add_argument("--exclude-ids", help="file with extra media ids to drop (one per line)")
    pp.add_argument("--shar", action="store_true", help="also write lhotse Shar shards")
    pp.add_argument("--profile", default="full", choices=["tiny", "full"], help="MiniStew size")
    pp.add_argument("--seed", type=int, default=0)
    pp.add_argument("--out", required=True)
    pp.set_defaults(func=cmd_prepare)

    ps = sub.add_parser("stats", help="statistics of a manifest: clips, hours, captions, vocabulary, Distinct-n")
    ps.add_argument("manifest", help="a cuts.jsonl.gz or the directory holding it")
    ps.add_argument("--json", action="store_true")
    ps.set_defaults(func=cmd_stats)

    pt = sub.add_parser("pretrain", help="pretrain an encoder (works under torchrun for DDP)")
    pt.add_argument("--config", help="a whole TrainConfig JSON (e.g. a run's config.json); flags below override it")
    pt.add_argument("--preset", help="paper (default: the authors' setting) | demo_cpu (offline CPU recipe) | a JSON "
                                     "file of TrainConfig fields; flags and --set override it")
    pt.add_argument("--objective", choices=["contrastive", "captioning", "tagging"])
    pt.add_argument("--data", help="corpus directory or cuts manifest")
    pt.add_argument("--scale", help="400K, 1M, 4M, 10.7M, full or <number>[K|M]")
    pt.add_argument("--model", help="zipformer_m | zipformer_s | zipformer_tiny")
    pt.add_argument("--run-dir", dest="run_dir")
    pt.add_argument("--max-steps", dest="max_steps", type=int)
    pt.add_argument("--seed", type=int)
    pt.add_argument("--init-from", dest="init_from", help="encoder checkpoint to start from (init ablation)")
    pt.add_argument("--precision", choices=["fp32", "bf16"])
    pt.add_argument("--device")
    pt.add_argument("--text-model", dest="text_model",
                    help="HF path or local folder of the text model / tokenizer; 'minilm' = the offline MiniLM")
    pt.add_argument("--set", action="append", help="KEY=VALUE override of any TrainConfig field (dotted)")
    pt.set_defaults(func=cmd_pretrain)

    pe = sub.add_parser("evaluate", help="linear probes (SED; retrieval with own / LiT heads) of frozen encoders on "
                                         "a task registry, with the random-init and fbank references; one results "
                                         "record per encoder x task")
    pe.add_argument("runs", nargs="+", help="pretraining run dirs (NAME=DIR to name one)")
    pe.add_argument("--tasks", nargs="+", default=["minibench"],
                    help="task names of the registry, or minibench/all; captioning = caption generation; "
                         "qa = open-form QA (adapter into an LLM)")
    pe.add_argument("--registry", help="tasks.json (default: data/ministew_full, else data/ministew_tiny)")
    pe.add_argument("--pooling", nargs="+", default=["mean"], choices=["mean", "attention"])
    pe.add_argument("--baselines", default="random,fbank", help="comma list of random,fbank ('' for none)")
    pe.add_argument("--seeds", type=int, default=3, help="probe seeds (the test score is their mean)")
    pe.add_argument("--beam-size", dest="beam_size", type=int, default=1,
                    help="task captioning: beam size of caption generation (1 = greedy)")
    pe.add_argument("--caption-metrics", dest="caption_metrics", default="",
                    help="task captioning: comma list of bleu_4,meteor,rouge_l,cider_d,spice,spider (default: all; "
                         "those that cannot run here are skipped and named in the record)")
    pe.add_argument("--lit-steps", dest="lit_steps", type=int, default=200,
                    help="retrieval tasks: steps of the LiT alignment (text tower + heads on the frozen encoder)")
    pe.add_argument("--out", default="papermill_runs/records/eval", help="records folder")
    pe.set_defaults(func=cmd_evaluate)

    pd = sub.add_parser("demo", help="the whole study on the built-in offline corpus (every notebook)")
    pd.add_argument("--quick", action="store_true", help="tiny profile, a few steps: a pipeline check, not a result")
    pd.add_argument("--out", default=None, help="runs, records, executed notebooks (default <project>/papermill_runs)")
    pd.add_argument("--figures", default=None, help="default <project>/figures")
    pd.set_defaults(func=cmd_demo)
    pf = sub.add_parser("figures", help="rebuild every figure and the summary from the stored records")
    pf.add_argument("--out", default=None, help="the folder holding records/ (default <project>/papermill_runs)")
    pf.add_argument("--figures", default=None, help="default <project>/figures")
    pf.set_defaults(func=cmd_figures)
    for sp in (pp, ps, pt, pe, pd, pf):  # also after the command: `audiolp pretrain ... --debug`
        sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        raise
    except SystemExit as e:  # raised with a message by the commands above
        if isinstance(e.code, str):
            print(f"audiolp {args.command}: error: {e.code}", file=sys.stderr)
            return 2
        raise
    except Exception as e:
        if args.debug:
            raise
        # One line: the message names the thing and the fix; the type says what kind of failure it was.
        message = " ".join(str(e).split()) or type(e).__name__
        kind = "" if isinstance(e, (ValueError, FileNotFoundError)) else f"{type(e).__name__}: "
        print(f"audiolp {args.command}: error: {kind}{message} (--debug shows the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
