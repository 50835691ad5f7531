"""Pretraining objectives. Each is an :class:`Objective` (an ``nn.Module`` with ``.encoder``,
``forward(batch, step) -> ObjectiveOutput`` and the hooks of that contract); the trainer builds one by name and
never looks inside.

    obj = build_objective("contrastive", encoder, {"proj_dim": 256})
    out = obj(batch, step)           # out.loss, out.logs, out.num_items
"""
from __future__ import annotations

import dataclasses

from torch import nn

from audiolp.models.io import load_encoder_weights as init_encoder_from
from audiolp.objectives.audio_qa import AudioQAConfig, AudioQAObjective
from audiolp.objectives.base import Objective, ObjectiveOutput, coerce_config, pick_captions, seeded_choice, seeded_uniform
from audiolp.objectives.captioning import CaptioningConfig, CaptioningObjective
from audiolp.objectives.contrastive import ContrastiveConfig, ContrastiveObjective, infonce_loss, siglip_loss
from audiolp.objectives.tagging import TaggingConfig, TaggingObjective

OBJECTIVES: dict[str, type[Objective]] = {
    "contrastive": ContrastiveObjective,
    "captioning": CaptioningObjective,
    "tagging": TaggingObjective,
    "audio_qa": AudioQAObjective,  # open-form QA: adapter into a frozen LLM (eval protocol; audiolp.eval.qa)
}


def objective_class(name: str) -> type[Objective]:
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise ValueError(f"unknown objective {name!r}; use one of {sorted(OBJECTIVES)}") from None


def objective_config_class(name: str) -> type:
    return objective_class(name).config_class


def build_objective(name: str, encoder: nn.Module, config=None, label_set: list[str] | None = None) -> Objective:
    """Objective ``name`` around ``encoder``; ``config`` is a dict, the matching config dataclass, or None.
    ``label_set`` is shorthand for the config's ``label_set`` field (objectives that have one: tagging)."""
    cls = objective_class(name)
    cfg = coerce_config(cls.config_class, config)
    if label_set is not None:
        if not hasattr(cfg, "label_set"):
            raise ValueError(f"label_set is only used by objectives with classes (tagging), not {name!r}")
        cfg.label_set = [str(x) for x in label_set]
    return cls(encoder, cfg)


def objective_config_dict(objective: nn.Module) -> dict:
    """The objective's config as a JSON-serialisable dict."""
    return dataclasses.asdict(objective.config)


__all__ = [
    "OBJECTIVES", "Objective", "ObjectiveOutput", "objective_class", "build_objective", "objective_config_class", "objective_config_dict",
    "init_encoder_from", "ContrastiveConfig", "ContrastiveObjective", "CaptioningConfig", "CaptioningObjective",
    "TaggingConfig", "TaggingObjective", "AudioQAConfig", "AudioQAObjective", "infonce_loss", "siglip_loss", "seeded_uniform", "seeded_choice",
    "pick_captions",
]
