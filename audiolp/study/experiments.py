"""The study's experiments, one function per notebook; a notebook sets parameters, calls one of these, and draws.

    study = Study.from_parameters(corpus="ministew", preset="demo_cpu", steps=300)   # checks every parameter
    records = objective_gap(study, objectives=["contrastive", "captioning"], scale="full")

Every pretraining run and every evaluation is reused: a run lives in ``<out>/runs/<name>-<config hash>`` and is
read back when its ``results.json`` says it completed with that config; an evaluation record is read back when its
parameters (encoder weights fingerprint, task, pooling, protocol) match (see ``audiolp.eval.run.evaluate``). So
02 reuses 01's checkpoints and probes, and ``make figures`` trains nothing.

Where things go, whatever the working directory: ``<project>/papermill_runs`` (runs, records, embedding cache) and
``<project>/figures``; ``<project>`` is ``$AUDIOLP_ROOT``, else the source checkout holding the package, else the
working directory.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audiolp.files import read_json, record_path, write_record
from audiolp.study.analysis import parse_run_name, scale_size  # noqa: F401  (the names notebooks use)

OBJECTIVES = ("contrastive", "captioning", "tagging")
POOLINGS = ("mean", "attention")
MINISTEW = "ministew"


class ParameterError(ValueError):
    """A notebook parameter that cannot work; the message names the parameter and the fix."""


def project_root() -> Path:
    """``$AUDIOLP_ROOT``; else the source checkout the package was imported from (it has notebooks/); else cwd."""
    env = os.environ.get("AUDIOLP_ROOT")
    if env:
        return Path(env).resolve()
    repo = Path(__file__).resolve().parents[2]
    if (repo / "notebooks").is_dir() and (repo / "pyproject.toml").is_file():
        return repo
    return Path.cwd().resolve()


def _as_list(value, name: str) -> list[str]:
    """A list parameter given as a list or as one comma-separated string (papermill's -p gives strings)."""
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(value, (list, tuple)):
        items = [str(v).strip() for v in value]
    else:
        raise ParameterError(f"parameter {name}={value!r} ({type(value).__name__}); give a list or a "
                             "comma-separated string, e.g. -p {name} a,b")
    if not items:
        raise ParameterError(f"parameter {name} is empty; give at least one value")
    return items


def check_scale(scale, name: str = "scale") -> str:
    """'400K', '1M', '4M', 'full', or a count; returns the canonical string. Raises ParameterError otherwise."""
    from audiolp.data.scale import ACCEPTED, parse_scale

    try:
        parse_scale(scale if not isinstance(scale, float) or not scale.is_integer() else int(scale))
    except ValueError:
        raise ParameterError(f"parameter {name}={scale!r} is not a scale; use {ACCEPTED}") from None
    text = str(int(scale) if isinstance(scale, float) else scale).strip()
    return "full" if text.lower() in ("full", "all") else text


def _check_choices(value, name: str, allowed, what: str) -> list[str]:
    items = _as_list(value, name)
    bad = [v for v in items if v not in allowed]
    if bad:
        raise ParameterError(f"parameter {name} has unknown {what}(s) {bad}; use {list(allowed)}")
    return items


def check_objectives(objectives, name: str = "objectives") -> list[str]:
    return _check_choices(objectives, name, OBJECTIVES, "objective")


def check_poolings(poolings, name: str = "poolings") -> list[str]:
    return _check_choices(poolings, name, POOLINGS, "pooling")


def check_scales(scales, name: str = "scales", minimum: int = 1) -> list[str]:
    items = [check_scale(s, name) for s in _as_list(scales, name)]
    if len(set(items)) < minimum:
        raise ParameterError(f"parameter {name}={scales!r}: give >= {minimum} distinct scales, e.g. 400K,1M,4M")
    return list(dict.fromkeys(items))


def check_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().isdigit() \
            or int(value) < minimum:
        raise ParameterError(f"parameter {name}={value!r}; give an integer >= {minimum}, e.g. -p {name} 600")
    return int(value)


@dataclass
class Study:
    """Where the study's data comes from, how it trains, and where its runs, records and figures go."""

    corpus: Path  # the training manifest (cuts.jsonl.gz)
    registry: Path  # the downstream task registry (tasks.json)
    preset: str = "demo_cpu"
    model: str = ""  # encoder preset; "" = the training preset's
    steps: int = 300
    device: str = "auto"
    seed: int = 0
    tasks: list[str] = field(default_factory=lambda: ["minibench"])
    overrides: dict = field(default_factory=dict)  # more TrainConfig fields, nested as in a preset
    out: Path = field(default_factory=lambda: project_root() / "papermill_runs")
    figures: Path = field(default_factory=lambda: project_root() / "figures")
    probe: dict = field(default_factory=dict)  # ProbeProtocol fields replacing the declared protocol's
    # Runs trained elsewhere (e.g. `torchrun ... audiolp pretrain` on several GPUs), by run name
    # ({"contrastive@full": "/path/run_dir"}): used instead of training that run here.
    runs_given: dict = field(default_factory=dict)
    log: Any = print

    @classmethod
    def from_parameters(cls, corpus: str = MINISTEW, profile: str = "full", registry: str = "", preset: str = "demo_cpu",
                        model: str = "", steps=300, device: str = "auto", seed=0, tasks="minibench",
                        overrides: dict | str | None = None, out: str = "", figures: str = "",
                        probe: dict | str | None = None, features: str = "auto", runs: dict | str | None = None,
                        log=print) -> "Study":
        """Check a notebook's parameters (one clear ParameterError naming the parameter and the fix) and find or
        build the corpus: ``corpus="ministew"`` builds the built-in corpus of ``profile`` under
        ``<project>/data`` on first use (and, with ``features="auto"``, precomputes its fbank once, which the
        loader reads 4-7x faster); else a folder holding cuts.jsonl.gz (and tasks.json), or a manifest file."""
        from audiolp.train.config import load_preset

        steps, seed = check_int(steps, "steps"), check_int(seed, "seed", 0)
        if device not in ("auto", "cpu", "cuda") and not str(device).startswith("cuda:"):
            raise ParameterError(f"parameter device={device!r}; use auto, cpu, cuda or cuda:N")
        try:
            load_preset(preset)
        except (ValueError, FileNotFoundError) as e:
            raise ParameterError(f"parameter preset={preset!r}: {e}") from None
        overrides = _as_dict(overrides, "overrides")
        probe = _as_dict(probe, "probe")
        runs_given = _as_dict(runs, "runs")
        for name, path in runs_given.items():
            if not (Path(path) / "results.json").is_file():
                raise ParameterError(f"parameter runs: {name!r} -> {path} has no results.json; give the --run-dir of "
                                     "a finished `audiolp pretrain` run")
        if model:
            from audiolp.models.zipformer import ZipformerConfig

            try:
                ZipformerConfig.preset(model)
            except (ValueError, KeyError) as e:
                raise ParameterError(f"parameter model={model!r}: {e}") from None
        root = project_root()
        manifest, reg = _find_corpus(corpus, profile, registry, root, features, log)
        study = cls(corpus=manifest, registry=reg, preset=preset, model=model, steps=steps, device=device, seed=seed,
                    tasks=_as_list(tasks, "tasks"), overrides=overrides,
                    out=Path(out).resolve() if out else root / "papermill_runs",
                    figures=Path(figures).resolve() if figures else root / "figures", probe=probe,
                    runs_given=runs_given, log=log)
        try:
            study.train_config("contrastive", "full")
        except (ValueError, TypeError) as e:
            raise ParameterError(f"parameters preset/model/overrides do not make a training config: {e}") from None
        if probe:
            study.protocol()
        return study

    # -- paths -----------------------------------------------------------------------------------------------------
    @property
    def records(self) -> Path:
        return self.out / "records"

    @property
    def runs(self) -> Path:
        return self.out / "runs"

    # -- pretraining -----------------------------------------------------------------------------------------------
    def train_config(self, objective: str, scale: str = "full", init_from: Path | None = None):
        from audiolp.train.config import TrainConfig

        fields = {**self.overrides, "objective": objective, "data": str(self.corpus),
                  "scale": None if scale == "full" else scale, "max_steps": self.steps, "seed": self.seed,
                  "device": self.device, "init_from": str(init_from) if init_from else None,
                  "checkpoint_every": max(1, self.steps // 2), "log_every": max(1, self.steps // 50)}
        if self.model:
            fields["model"] = self.model
        return TrainConfig.from_preset(self.preset, fields)

    def pretrain(self, objective: str, scale: str = "full", init: str | None = None) -> Path:
        """The run dir of ``objective`` pretrained at ``scale`` (from the ``init`` run's encoder, e.g. "tagging" at
        full scale, or from scratch): read back if it already completed with this config, else trained (resumed
        if a previous attempt stopped part way). Writes a ``pretrain`` record."""
        scale = check_scale(scale)
        if run_name(objective, scale, init) in self.runs_given:
            run_dir = Path(self.runs_given[run_name(objective, scale, init)])
            self.log(f"[study] using the given run {run_name(objective, scale, init)}: {run_dir}")
            return run_dir
        init_dir = self.pretrain(init, "full") if init else None
        cfg = self.train_config(objective, scale, init_dir / "encoder.safetensors" if init_dir else None)
        name = run_name(objective, scale, init)
        d = cfg.to_dict()
        key = hashlib.sha256(json.dumps({k: v for k, v in d.items() if k not in ("run_dir", "progress", "log_every",
                                                                                  "checkpoint_every")},
                                        sort_keys=True, default=str).encode()).hexdigest()[:10]
        run_dir = self.runs / f"{name}-{key}"
        results = run_dir / "results.json"
        if not (results.exists() and read_json(results, "delete the run dir to retrain").get("completed")):
            from audiolp.train.trainer import train

            self.log(f"[study] pretraining {name} ({self.steps} steps) -> {run_dir} (log: train.log there)")
            run_dir.mkdir(parents=True, exist_ok=True)
            # The run's own log (its full config, losses) goes to its folder; the notebook page stays readable.
            with open(run_dir / "train.log", "a") as fh, contextlib.redirect_stdout(fh):
                train(dataclasses.replace(cfg, run_dir=str(run_dir), progress=False))
        else:
            self.log(f"[study] reusing {name}: {run_dir}")
        res = read_json(results, "delete the run dir to retrain")
        write_record(self.records / "pretrain", "pretrain", name,
                     params={"objective": objective, "scale": scale, "init": init, "model": cfg.model,
                             "preset": self.preset, "steps": self.steps, "seed": self.seed, "config_key": key},
                     metrics={k: res.get(k) for k in ("first_loss", "final_loss", "final_loss_mean_last_10pct",
                                                       "throughput_audio_s_per_s", "wall_time_s", "loss_curve",
                                                       "num_params", "audio_seconds_total", "scale_info")},
                     config=res.get("config"), artifacts={"run_dir": str(run_dir)})
        return run_dir

    # -- evaluation ------------------------------------------------------------------------------------------------
    def protocol(self):
        from audiolp.eval.linear import ProbeProtocol

        try:
            return ProbeProtocol(**{k: tuple(v) if isinstance(v, list) else v for k, v in self.probe.items()})
        except TypeError as e:
            names = [f.name for f in dataclasses.fields(ProbeProtocol)]
            raise ParameterError(f"parameter probe={self.probe!r}: {e}; fields are {names}") from None

    def evaluate(self, runs: dict[str, Path], poolings=("mean",), baselines=("random", "fbank"),
                 tasks: list[str] | None = None) -> list[dict]:
        """Probe records for these runs and the references (see ``audiolp.eval.run.evaluate``); reused when present."""
        from audiolp.eval.run import evaluate

        return evaluate(runs, self.registry, tasks=tasks or self.tasks, poolings=tuple(poolings),
                        baselines=tuple(baselines), out_dir=self.records / "eval",
                        cache_dir=self.out / ".embeddings", protocol=self.protocol(), log=self.log)


def run_name(objective: str, scale: str, init: str | None = None) -> str:
    """How a run is named in records and figures: ``contrastive@1M``, ``contrastive+tagging@1M``."""
    return f"{objective}{'+' + init if init else ''}@{scale}"


def _as_dict(value, name: str) -> dict:
    if value in (None, ""):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise ParameterError(f"parameter {name}={value!r} is not JSON ({e.msg}); give a dict, e.g. "
                                 f"-p {name} '{{\"optim\": {{\"lr\": 0.01}}}}'") from None
    if not isinstance(value, dict):
        raise ParameterError(f"parameter {name}={value!r}; give a dict")
    return value


def _find_corpus(corpus: str, profile: str, registry: str, root: Path, features: str, log) -> tuple[Path, Path]:
    if str(corpus) == MINISTEW:
        from audiolp.data.ministew import build_ministew
        from audiolp.data.ministew.plan import PROFILES

        if profile not in PROFILES:
            raise ParameterError(f"parameter profile={profile!r}; use one of {sorted(PROFILES)}")
        folder = Path(build_ministew(root / "data" / f"ministew_{profile}", profile=profile, progress=False))
        manifest = folder / "cuts.jsonl.gz"
        if features == "auto":
            manifest = _precomputed(manifest, root / "data" / f"ministew_{profile}_fbank", log)
    else:
        path = Path(corpus).expanduser()
        if not path.exists():
            raise ParameterError(f"parameter corpus={corpus!r}: {path.resolve()} does not exist; give a folder with "
                                 "cuts.jsonl.gz (a CaptionStew or MiniStew build) or use corpus='ministew'")
        folder = path if path.is_dir() else path.parent
        manifest = path / "cuts.jsonl.gz" if path.is_dir() else path
        if not manifest.exists():
            raise ParameterError(f"parameter corpus={corpus!r}: no cuts.jsonl.gz in {folder.resolve()}; give the "
                                 "folder `audiolp prepare captionstew|ministew` wrote, or the manifest file")
    reg = Path(registry).expanduser() if registry else folder / "tasks.json"
    if reg.is_dir():
        reg = reg / "tasks.json"
    if not reg.exists():
        raise ParameterError(f"parameter registry: {reg.resolve()} does not exist; give a tasks.json written by "
                             "`audiolp prepare ministew` or `audiolp prepare task` (-p registry PATH)")
    return manifest.resolve(), reg.resolve()


def _precomputed(manifest: Path, feats_dir: Path, log) -> Path:
    """The manifest with fbank precomputed once into ``feats_dir`` (reused while it is newer than the manifest)."""
    out = feats_dir / "cuts_with_feats.jsonl.gz"
    if out.exists() and out.stat().st_mtime >= manifest.stat().st_mtime:
        return out
    from lhotse import CutSet

    from audiolp.data.precompute import PRECOMPUTED_MANIFEST, precompute_features

    log(f"[study] precomputing fbank for {manifest} -> {feats_dir} (once)")
    precompute_features(CutSet.from_file(manifest), feats_dir)
    return feats_dir / PRECOMPUTED_MANIFEST


# -- the experiments (one per notebook) ----------------------------------------------------------------------------
def objective_gap(study: Study, objectives=("contrastive", "captioning"), scale: str = "full",
                  poolings=("mean",)) -> list[dict]:
    """01: each objective pretrained on the same data at one scale, probed on every task next to random init and
    fbank. Returns the probe records.

    Under attention pooling the only reference is random init: fbank's 100 Hz frames are 4x the encoder's 25 Hz, and
    its attention probe cost ~40 min of the 2-hour CPU demo (measured) for a reference the question does not need."""
    objectives, scale, poolings = check_objectives(objectives), check_scale(scale), check_poolings(poolings)
    runs = {run_name(o, scale): study.pretrain(o, scale) for o in objectives}
    records = study.evaluate(runs, poolings=["mean"]) if "mean" in poolings else []
    if "attention" in poolings:
        records += study.evaluate(runs, poolings=["attention"], baselines=("random",))
    return records


def pooling_sensitivity(study: Study, objectives=("contrastive", "captioning"), scale: str = "full") -> list[dict]:
    """02: the objective gap under mean and attention pooling (01's runs and mean-pooled probes are reused)."""
    return objective_gap(study, objectives, scale, poolings=POOLINGS)


def scaling(study: Study, objectives=("contrastive", "captioning"), scales=("400K", "1M", "4M", "full")) -> list[dict]:
    """03: each objective at each scale (nested subsets), probed with mean pooling."""
    objectives = check_objectives(objectives)
    scales = check_scales(scales)
    runs = {run_name(o, s): study.pretrain(o, s) for s in scales for o in objectives}
    return study.evaluate(runs)


def init_ablation(study: Study, objectives=("contrastive", "captioning"), scales=("400K", "1M", "4M"),
                  init: str = "tagging") -> list[dict]:
    """04: each objective from scratch and from the ``init`` encoder (supervised tagging on the whole corpus,
    standing in for the paper's AudioSet-tagging Zipformer) at each scale. The init run is probed too."""
    objectives = check_objectives(objectives)
    init = check_objectives(init, "init")[0]
    scales = check_scales(scales, minimum=3)
    runs = {run_name(init, "full"): study.pretrain(init, "full")}
    for s in scales:
        for o in objectives:
            runs[run_name(o, s)] = study.pretrain(o, s)
            runs[run_name(o, s, init)] = study.pretrain(o, s, init=init)
    return study.evaluate(runs)


TSNE_PERPLEXITY = 30.0  # both maps of 05; part of the records' params, so a changed value recomputes them


def caption_tsne(study: Study, max_points: int = 2000, encoder_objective: str = "contrastive", scale: str = "full",
                 color_by: str = "domain") -> list[dict]:
    """05: t-SNE of the corpus' caption embeddings by source (with the silhouette score, and the silhouette of the
    same points under shuffled sources as the no-structure reference), and of clip embeddings of the MiniBench test
    clips by ``color_by`` from a pretrained encoder. Writes ``tsne`` records (with the 2-D points, so the figure
    is rebuilt from the record)."""
    from lhotse import CutSet

    from audiolp.eval.embed import EmbeddingCache
    from audiolp.eval.run import load_run_encoder
    from audiolp.eval.tsne import caption_tsne as caption_map
    from audiolp.eval.tsne import clip_tsne, silhouettes
    from audiolp.data.tasks import load_task_registry, load_task_split

    import numpy as np

    max_points = check_int(max_points, "max_points", 10)
    out = []
    params = {"corpus": str(study.corpus), "max_points": max_points, "seed": study.seed,
              "perplexity": TSNE_PERPLEXITY}
    stored = _stored_tsne(study, "captions_by_source", params)
    if stored:
        out.append(stored)
    else:
        res = caption_map(CutSet.from_file(study.corpus), max_points=max_points, seed=study.seed,
                          perplexity=TSNE_PERPLEXITY)
        rng = np.random.default_rng(study.seed)
        shuffled = [silhouettes(np.asarray(res.coords), np.asarray(res.coords),
                                list(rng.permutation(res.labels)))[1] for _ in range(20)]
        out.append(_tsne_record(study, "captions_by_source", res, params,
                                {"silhouette_2d_shuffled_p95": float(np.percentile(shuffled, 95))}))
    run_dir = study.pretrain(check_objectives(encoder_objective, "encoder_objective")[0], check_scale(scale))
    params = {"run": str(run_dir), "encoder": run_name(encoder_objective, scale), "max_points": max_points,
              "seed": study.seed, "perplexity": TSNE_PERPLEXITY}
    stored = _stored_tsne(study, f"clips_by_{color_by}", params)
    if stored:
        return out + [stored]
    encoder = load_run_encoder(run_dir)
    registry = load_task_registry(study.registry)
    cuts = []
    for spec in registry.values():
        if spec.kind in ("multiclass", "multilabel"):
            cuts += list(load_task_split(spec, "test", study.registry.parent))
    cache = EmbeddingCache(study.out / ".embeddings", progress=False)
    emb = cache.get(encoder, CutSet.from_cuts(cuts), name="tsne/test_clips")
    res = clip_tsne(emb, cuts, color_by=color_by, max_points=max_points, seed=study.seed, perplexity=TSNE_PERPLEXITY)
    out.append(_tsne_record(study, f"clips_by_{color_by}", res, params, {}))
    return out


def _stored_tsne(study: Study, name: str, params: dict) -> dict | None:
    """The stored t-SNE record ``name`` when it was made with these params (a run dir's name carries its config
    hash, so a retrained encoder is another run dir), else None: the map is recomputed."""
    path = record_path(study.records / "tsne", "tsne", name)
    if not path.exists():
        return None
    rec = read_json(path, "rerun the notebook")
    return rec if all(rec.get("params", {}).get(k) == v for k, v in params.items()) else None


def _tsne_record(study: Study, name: str, res, params: dict, extra: dict) -> dict:
    metrics = {"silhouette_cosine": res.silhouette_cosine, "silhouette_2d": res.silhouette_2d, "n_total": res.n_total,
               "n_points": len(res.labels), "color_by": res.color_by, **extra,
               "points": {"x": [round(float(v), 3) for v in res.coords[:, 0]],
                          "y": [round(float(v), 3) for v in res.coords[:, 1]], "label": list(res.labels),
                          "id": list(res.ids)}}
    path = write_record(study.records / "tsne", "tsne", name, {**params, **res.settings}, metrics)
    return read_json(path, "rerun the notebook")


# -- reports (markdown from records) --------------------------------------------------------------------------------
def probe_records(study: Study) -> list[dict]:
    """The probe records of this study's output folder (every scale point measured so far) whose runs were trained
    with this study's preset, model, steps and seed (a scale point run with other settings is left out), plus the
    references."""
    from audiolp.study.records import read_records

    same = {"preset": study.preset, "steps": study.steps, "seed": study.seed}
    model = study.model or study.train_config("contrastive").model
    ok = {r["name"] for r in read_records(study.records / "pretrain", kind="pretrain")
          if all(r["params"].get(k) == v for k, v in same.items()) and r["params"].get("model") == model}
    ok |= set(study.runs_given) | {"random_init", "fbank"}
    return [r for r in read_records(study.records / "eval", kind="probe") if r["params"]["encoder"] in ok]


def _scale_points(records: list[dict], objective: str, init: str | None = None) -> dict[str, dict]:
    from audiolp.study.analysis import probe_scores

    out = {}
    for enc in dict.fromkeys(r["params"]["encoder"] for r in records if r.get("kind") == "probe"):
        o, i, s = parse_run_name(enc)
        if o == objective and i == init and s:
            out[s] = probe_scores(records, enc)
    return dict(sorted(out.items(), key=lambda kv: scale_size(kv[0])))


def scaling_report(records: list[dict], objectives=("contrastive", "captioning"), early: str = "contrastive",
                   late: str = "captioning") -> str:
    """Markdown: per task, each objective's fitted slope (score per decade of data, 95% interval) and where
    ``late`` overtakes ``early`` (with a bootstrap interval), or that no crossover lies ahead."""
    from audiolp.study.analysis import classification_tasks, crossover, fit_scaling, mean_score

    points = {o: _scale_points(records, o) for o in objectives}
    tasks = list(dict.fromkeys(t for by_scale in points.values() for sc in by_scale.values() for t in sc))
    scored = set(classification_tasks(records))
    in_mean = [t for t in tasks if t in scored]
    lines = ["| task | " + " | ".join(f"{o} slope / decade [95% CI]" for o in objectives) + " | crossover |",
             "|---|" + "---|" * (len(objectives) + 1)]
    for task in tasks + ["mean over tasks"]:
        fits, cells = {}, []
        for o in objectives:
            if task == "mean over tasks":
                pts = [(scale_size(s), mean_score([sc[t] for t in in_mean])) for s, sc in points[o].items()
                       if in_mean and all(t in sc for t in in_mean)]
            else:
                pts = [(scale_size(s), sc[task]) for s, sc in points[o].items() if task in sc]
            if len({p[0] for p in pts}) >= 2:
                fits[o] = fit_scaling(o, task, pts)
                f = fits[o]
                cells.append(f"{f.slope:+.3f} [{f.slope_interval[0]:+.3f}, {f.slope_interval[1]:+.3f}]")
            else:
                cells.append(f"{len(pts)} scale point(s): no fit")
        cross = crossover(fits[early], fits[late]).verdict if early in fits and late in fits else "-"
        lines.append(f"| {task} | " + " | ".join(cells) + f" | {cross} |")
    return "\n".join(lines)


def init_report(records: list[dict], objectives=("contrastive", "captioning"), init: str = "tagging") -> str:
    """Markdown: per objective and scale, the mean probe score from scratch, from ``init``, and the gain."""
    from audiolp.study.analysis import mean_score

    lines = ["| objective | scale | from scratch | from " + init + " | gain [95% CI] |", "|---|---|---|---|---|"]
    for o in objectives:
        scratch, warm = _scale_points(records, o), _scale_points(records, o, init)
        for s in warm:
            if s not in scratch:
                continue
            tasks = [t for t in warm[s] if t in scratch[s]]
            if not tasks:
                lines.append(f"| {o} | {s} | - | - | no task probed on both encoders |")
                continue
            a, b = mean_score([scratch[s][t] for t in tasks]), mean_score([warm[s][t] for t in tasks])
            gain = mean_score([warm[s][t] - scratch[s][t] for t in tasks])  # paired per task where possible
            lines.append(f"| {o} | {s} | {a.value:.3f} | {b.value:.3f} | {gain.text()} |")
    return "\n".join(lines)


LANGUAGE_TASKS = ("retrieval", "captioning", "qa")


def language_tasks(study: Study, objectives=("contrastive", "captioning"), scales=("full",),
                   tasks=LANGUAGE_TASKS, lit_steps: int = 200, decoder_steps: int = 300, qa_steps: int = 300,
                   qa_questions_per_type: int | None = None) -> list[dict]:
    """06: the language-involved protocols on each objective's frozen encoder at each scale, next to the random-init
    reference: LiT retrieval (and a contrastive run's own heads), caption generation (a captioning run's own decoder,
    and a decoder trained on every frozen encoder), open-form QA through the LLM with its text-only control."""
    from audiolp.eval.captioning import DecoderProtocol
    from audiolp.eval.qa import QAProtocol
    from audiolp.eval.retrieval import LiTConfig
    from audiolp.eval.run import evaluate

    objectives, scales = check_objectives(objectives), check_scales(scales)
    tasks = _check_choices(tasks, "language_tasks", LANGUAGE_TASKS, "task")
    runs = {run_name(o, s): study.pretrain(o, s) for s in scales for o in objectives}
    return evaluate(runs, study.registry, tasks=tasks, baselines=("random",), out_dir=study.records / "eval",
                    cache_dir=study.out / ".embeddings", protocol=study.protocol(), log=study.log,
                    # A captioning run is scored with its own decoder and, like every other encoder, with one
                    # trained on its frozen encoder: the objectives then compare on the same protocol (finding 2).
                    captioning={"protocol": DecoderProtocol(max_steps=check_int(decoder_steps, "decoder_steps")),
                                "decoder": "both"},
                    qa_protocol=QAProtocol(steps=check_int(qa_steps, "qa_steps"),
                                           max_test_questions_per_type=qa_questions_per_type, device=study.device),
                    lit=LiTConfig(steps=check_int(lit_steps, "lit_steps")))


def language_report(records: list[dict]) -> str:
    """Markdown: each language protocol's score per encoder with its 95% interval (QA: and its text-only control)."""
    from audiolp.study.analysis import Score, language_score

    lines = ["| encoder | protocol | score [95% CI] | text-only control |", "|---|---|---|---|"]
    for r in records:
        scored = language_score(r)
        if scored:
            t = r["metrics"].get("text_only")
            ctrl = Score(t["test"], *t["interval"]).text() if t else ""
            lines.append(f"| {r['params'].get('encoder', r['name'])} | {scored[0]} | {scored[1].text()} | {ctrl} |")
    return "\n".join(lines)


def gap_report(records: list[dict], objectives, scale: str, pooling: str = "mean") -> str:
    """Markdown: the first two objectives' score difference at ``scale`` per task and on the mean, 95% intervals."""
    from audiolp.study.analysis import gap

    a, b = (run_name(o, scale) for o in objectives[:2])
    per_task, mean = gap(records, a, b, pooling)
    rows = [f"| {t} | {s.text()} |" for t, s in per_task.items()]
    head = f"**{a} - {b}, {pooling} pooling**: mean {mean.text() if mean else '-'}"
    return "\n".join([head, "", "| task | difference [95% CI] |", "|---|---|", *rows])
