"""TrainConfig: everything one pretraining run needs, as a typed dataclass that round-trips through JSON.

A run is fully described by its config.json (stored in run_dir); the same config + seed gives the same numbers on
CPU, and a run dir that already holds checkpoints is resumed from them.

The dataclass defaults are the paper's setting (as the authors' framework, AudenAI/Auden, has it: see
``audiolp/presets/paper.json``). Experiments are data: a preset is a JSON file of fields that differ from these
defaults (``audiolp/presets/<name>.json``, or any JSON file), selected with ``TrainConfig.from_preset(name)`` or
``audiolp pretrain --preset NAME`` and overridden with ``--set``. ``demo_cpu`` is the offline CPU recipe that
``make demo`` and the tests use.
"""
from __future__ import annotations

import copy
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from audiolp.configs import dataclass_from
from audiolp.data.loader import LoaderConfig
from audiolp.files import atomic_write_text, read_json
from audiolp.train.optim import OptimConfig

PRESET_DIR = Path(__file__).resolve().parents[1] / "presets"
SCALE_UNITS = ("captions", "clips")

PRECISIONS = ("auto", "fp32", "bf16")
LOSS_WEIGHTINGS = ("global_mean", "micro_batches")

# Fields that may change between a run and its resumption without changing what was already trained
# (e.g. train longer, checkpoint more often). Any other difference is refused on resume.
RESUMABLE_CHANGES = frozenset({"max_steps", "max_epochs", "checkpoint_every", "keep_last", "log_every", "device",
                               "run_dir", "progress",
                               # batches and augmentation do not depend on the worker count (see data.loader)
                               "loader.num_workers"})


@dataclass
class TrainConfig:
    # What to train.
    objective: str = "contrastive"  # "contrastive" | "captioning" | "tagging"
    objective_config: dict = field(default_factory=dict)  # fields of the objective's config dataclass
    model: str = "zipformer_m"  # ZipformerConfig.preset name
    # ZipformerConfig fields replacing the model preset's. Default: icefall's training-time regularisers (layer /
    # module skipping, dropout schedules) and Balancer / Whiten constraints, as the authors' Zipformer trains.
    model_overrides: dict = field(default_factory=lambda: {"regularizers": True, "activation_constraints": True})
    text_model: str | None = None  # HF path/name of the text side; None = the objective's default
    init_from: str | None = None  # encoder weights to start from (file, or a run dir's encoder.safetensors)
    # Train only the heads on a frozen encoder (eval mode, no gradients): LiT-style alignment, a caption decoder or
    # an LLM adapter on a pretrained encoder (with init_from), or on a random-init one as the reference point.
    freeze_encoder: bool = False
    preset: str | None = None  # the preset these values started from (recorded; from_preset sets it)

    # Data.
    data: str = ""  # lhotse cut manifest (jsonl/jsonl.gz) or Shar dir
    scale: str | None = None  # "400K" | "1M" | "4M" | "full" ...; None = the whole manifest
    # What a scale counts: "captions" (caption pairs, as the paper: 400K = the smallest nested set of clips whose
    # captions reach 400,000) or "clips".
    scale_unit: str = "captions"
    # Training batches: 30 duration buckets, the last partial batch dropped (Auden's bucketing sampler).
    loader: LoaderConfig = field(default_factory=lambda: LoaderConfig(num_buckets=30, drop_last=True))

    # Optimisation.
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 0
    max_steps: int = 1000  # optimizer steps
    max_epochs: int | None = None  # None = bounded by max_steps only
    grad_accum: int = 1  # micro-batches per optimizer step (per rank)
    # How micro-batch losses combine into one step. "global_mean": each micro-batch loss is weighted by the number of
    # units it is a mean over (clips; caption tokens for captioning), summed over micro-batches and ranks, so the
    # step's gradient is that of the mean over the whole global batch, as one big batch would give, although
    # max-duration batches hold different numbers of clips. "micro_batches": every micro-batch weighs the same
    # (the plain average most trainers use).
    loss_weighting: str = "global_mean"
    max_grad_norm: float = 0.0  # 0 = no clipping here (ScaledAdam clips by itself)
    # The Zipformer's regulariser schedules count batches of this many seconds of audio (icefall / Auden
    # ref_duration): the count the encoder sees is step x loader.max_duration x world_size x grad_accum /
    # ref_duration, so the schedules follow the audio seen, whatever the batch size and GPU count.
    ref_duration: float = 600.0
    precision: str = "auto"  # "auto" = bf16 on CUDA, fp32 on CPU; bf16 = autocast without a grad scaler
    ema_decay: float = 0.0  # 0 = no EMA of weights
    ema_every: int = 1  # update the EMA every N optimizer steps
    # False (DDP skips its per-step graph walk) needs every trainable parameter in every step's graph: true of the
    # Zipformer (with its regularizers too) and of the text tower (loaded without its unused pooler). Set True for
    # a custom module that leaves parameters unused in some steps.
    ddp_find_unused_parameters: bool = False

    # Bookkeeping.
    run_dir: str = "runs/default"
    checkpoint_every: int = 1000
    keep_last: int = 3
    log_every: int = 50
    device: str = "auto"  # "auto" | "cpu" | "cuda" (under torchrun each rank takes cuda:LOCAL_RANK)
    progress: bool = True  # tqdm bar on rank 0

    def __post_init__(self):
        if isinstance(self.loader, dict):
            self.loader = _build(LoaderConfig, self.loader, "loader")
        if isinstance(self.optim, dict):
            self.optim = _build(OptimConfig, self.optim, "optim")
        if self.precision not in PRECISIONS:
            raise ValueError(f"TrainConfig.precision={self.precision!r}; use one of {PRECISIONS}")
        if self.ref_duration <= 0:
            raise ValueError(f"TrainConfig.ref_duration={self.ref_duration}; give seconds of audio > 0")
        for name in ("max_steps", "grad_accum", "checkpoint_every", "log_every", "ema_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)}; it must be >= 1")
        if self.loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"TrainConfig.loss_weighting={self.loss_weighting!r}; use one of {LOSS_WEIGHTINGS}")
        if self.keep_last < 1:
            raise ValueError(f"TrainConfig.keep_last={self.keep_last}; keep at least 1 checkpoint")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"TrainConfig.ema_decay={self.ema_decay}; use 0 (off) or a value in (0, 1)")
        if self.max_epochs is not None and self.max_epochs < 1:
            raise ValueError(f"TrainConfig.max_epochs={self.max_epochs}; use None or >= 1")
        if self.scale_unit not in SCALE_UNITS:
            raise ValueError(f"TrainConfig.scale_unit={self.scale_unit!r}; use one of {SCALE_UNITS}")

    # -- presets ---------------------------------------------------------------------------------------------------
    @classmethod
    def from_preset(cls, preset: str | os.PathLike = "paper", overrides: dict | None = None) -> "TrainConfig":
        """The defaults, then the preset's fields, then ``overrides`` (nested sections merge field by field).

        ``preset`` is a name from ``audiolp/presets/`` or a JSON file. A preset (and ``overrides``) may hold
        ``"objective_configs": {objective: {...}}``: the entry of the run's objective (after overrides) is merged
        under ``objective_config``, so one preset serves every objective."""
        name, fields = load_preset(preset)
        overrides = dict(overrides or {})
        d = merge_fields(asdict(cls()), {k: v for k, v in fields.items() if k != "objective_configs"}, name)
        sections = merge_fields(fields.get("objective_configs", {}), overrides.pop("objective_configs", {}),
                                "overrides", "objective_configs.")
        d = merge_fields(d, overrides, "overrides")
        per_objective = sections.get(d["objective"], {})
        d["objective_config"] = {**per_objective, **d.get("objective_config", {})}
        d["preset"] = name
        return cls.from_dict(d, source=f"preset {name!r}")

    def encoder_config(self):
        """The encoder preset, with attention scaling chosen for the optimizer, then ``model_overrides`` (which win)."""
        import dataclasses

        from audiolp.models.zipformer import ZipformerConfig
        from audiolp.train.optim import attention_scaling_for

        base = ZipformerConfig.preset(self.model)
        known = {f.name for f in dataclasses.fields(ZipformerConfig)}
        unknown = sorted(set(self.model_overrides) - known)
        if unknown:
            raise ValueError(f"TrainConfig.model_overrides: unknown ZipformerConfig field(s) {unknown}; known: "
                             f"{sorted(known)}")
        scaling = bool(attention_scaling_for(self.optim.name))
        if "attention_scaling" in self.model_overrides and bool(self.model_overrides["attention_scaling"]) != scaling:
            # build_optimizer sets the encoder's scaling to match the optimizer; a different value here would be
            # ignored in training and then misdescribe the run in encoder_config.json.
            raise ValueError(f"TrainConfig.model_overrides.attention_scaling={self.model_overrides['attention_scaling']}"
                             f" contradicts optim.name={self.optim.name!r} (which implies {scaling}); drop the override")
        d = base.to_dict()
        d.update(self.model_overrides)
        d["attention_scaling"] = scaling
        return ZipformerConfig.from_dict(d)

    # -- JSON round trip -------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "TrainConfig":
        d = dict(d)
        if "label_set" in d:  # configs of audiolp <= 0.1.0 kept tagging's classes here; they live in objective_config
            label_set = d.pop("label_set")
            if label_set is not None:
                d["objective_config"] = {"label_set": label_set, **(d.get("objective_config") or {})}
        return _build(cls, d, source)

    @classmethod
    def from_json(cls, text: str, source: str = "config") -> "TrainConfig":
        return cls.from_dict(json.loads(text), source)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TrainConfig":
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"training config {path} does not exist")
        return cls.from_dict(read_json(path, "fix or regenerate the file"), source=str(path))

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically, so a crash never leaves a half-written config next to good checkpoints."""
        return atomic_write_text(path, self.to_json() + "\n")

    def diff(self, other: "TrainConfig") -> dict[str, tuple[Any, Any]]:
        """Fields whose values differ, nested ones dotted ("loader.num_workers"): {name: (self's, other's)}."""
        # Through JSON, as the saved copy went: a tuple given from Python equals the list read back.
        a, b = (_flatten(json.loads(json.dumps(c.to_dict()))) for c in (self, other))
        return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def load_preset(preset: str | os.PathLike) -> tuple[str, dict]:
    """(name, fields) of a preset given by name (``audiolp/presets/<name>.json``) or as a JSON file path."""
    path = Path(preset)
    if path.suffix != ".json":
        path = PRESET_DIR / f"{preset}.json"
        if not path.is_file():
            raise ValueError(f"unknown preset {str(preset)!r}; use one of {preset_names()} or the path of a JSON file")
    elif not path.is_file():
        raise ValueError(f"preset file {path} does not exist; use one of {preset_names()} or an existing JSON file")
    fields = read_json(path, "fix the file", what="preset")
    if not isinstance(fields, dict):
        raise ValueError(f"preset {path}: must hold a JSON object of TrainConfig fields")
    fields = {k: v for k, v in fields.items() if not k.startswith("_")}  # "_comment" and the like
    return (path.stem if path.parent == PRESET_DIR else str(path)), fields


# Sections whose content is free-form (a field of the objective's / encoder's config): merged key by key too, but
# any key is accepted (the dataclass named by the config checks it when the run starts).
FREE_SECTIONS = ("objective_config", "model_overrides", "objective_configs")


def merge_fields(base: dict, update: dict, source: str, _path: str = "") -> dict:
    """``base`` with ``update``'s fields; nested dicts merge field by field; an unknown field is an error naming
    ``source``, the field and the known ones."""
    out = copy.deepcopy(base)
    for k, v in update.items():
        where = f"{_path}{k}"
        free = any(part in FREE_SECTIONS for part in _path.rstrip(".").split("."))  # anything below a free section
        if k not in out and not free:
            raise ValueError(f"{source}: unknown field {where!r}; fields here: {sorted(out)}")
        if isinstance(v, dict) and isinstance(out.get(k), dict) and (out[k] or k in FREE_SECTIONS):
            out[k] = merge_fields(out[k], v, source, f"{where}.")
        else:
            out[k] = copy.deepcopy(v)
    return out


def _build(cls, d: Any, source: str):
    """Construct dataclass ``cls`` from a dict, naming the unknown field and the known ones on a typo."""
    return dataclass_from(cls, d, source)

