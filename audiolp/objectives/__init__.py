"""Pretraining objectives. Each is an ``nn.Module`` with ``.encoder`` and ``forward(batch, step) -> ObjectiveOutput``;
the trainer builds one by name and never looks inside.

    obj = build_objective("contrastive", encoder, {"proj_dim": 256})
    out = obj(batch, step)           # out.loss, out.logs, out.num_items
"""
from __future__ import annotations

import dataclasses

from torch import nn

from audiolp.objectives.base import (ObjectiveOutput, coerce_config, init_encoder_from, pick_captions,
                                     seeded_choice, seeded_uniform)
from audiolp.objectives.captioning import CaptioningConfig, CaptioningObjective
from audiolp.objectives.contrastive import ContrastiveConfig, ContrastiveObjective, infonce_loss, siglip_loss
from audiolp.objectives.tagging import TaggingConfig, TaggingObjective

OBJECTIVES: dict[str, tuple[type[nn.Module], type]] = {
    "contrastive": (ContrastiveObjective, ContrastiveConfig),
    "captioning": (CaptioningObjective, CaptioningConfig),
    "tagging": (TaggingObjective, TaggingConfig),
}


def _entry(name: str):
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise ValueError(f"unknown objective {name!r}; use one of {sorted(OBJECTIVES)}") from None


def objective_config_class(name: str) -> type:
    return _entry(name)[1]


def build_objective(name: str, encoder: nn.Module, config=None, label_set: list[str] | None = None) -> nn.Module:
    """Objective ``name`` around ``encoder``; ``config`` is a dict, the matching config dataclass, or None."""
    cls, cfg_cls = _entry(name)
    cfg = coerce_config(cfg_cls, config)
    if name == "tagging":
        return cls(encoder, cfg, label_set=label_set)
    if label_set is not None:
        raise ValueError(f"label_set is only used by the 'tagging' objective, not {name!r}")
    return cls(encoder, cfg)


def objective_config_dict(objective: nn.Module) -> dict:
    """The objective's config as a JSON-serialisable dict."""
    return dataclasses.asdict(objective.config)


__all__ = [
    "OBJECTIVES", "ObjectiveOutput", "build_objective", "objective_config_class", "objective_config_dict",
    "init_encoder_from", "ContrastiveConfig", "ContrastiveObjective", "CaptioningConfig", "CaptioningObjective",
    "TaggingConfig", "TaggingObjective", "infonce_loss", "siglip_loss", "seeded_uniform", "seeded_choice",
    "pick_captions",
]
