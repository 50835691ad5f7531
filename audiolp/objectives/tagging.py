"""Supervised multi-label tagging (the AudioSet-style baseline and initialisation): pooling + Linear, BCE."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from audiolp.models.pooling import build_pooling
from audiolp.objectives.base import Objective, ObjectiveOutput, audio_inputs, module_device


@dataclass
class TaggingConfig:
    pooling: str = "mean"  # "mean" | "attention"
    pooling_heads: int = 8
    dropout: float = 0.0  # on the pooled embedding, before the head
    unknown_labels: str = "error"  # a clip label outside label_set: "error" or "ignore" (counted in the logs)
    label_set: list[str] = field(default_factory=list)  # kept in the config so a saved run rebuilds the same head

    def __post_init__(self):
        if self.unknown_labels not in ("error", "ignore"):
            raise ValueError(f"TaggingConfig.unknown_labels={self.unknown_labels!r}; use 'error' or 'ignore'")


class TaggingObjective(Objective):
    config_class = TaggingConfig

    def __init__(self, encoder: nn.Module, config: TaggingConfig | dict | None = None):
        super().__init__(encoder, config)
        cfg = self.config
        cfg.label_set = [str(x) for x in cfg.label_set]
        if not cfg.label_set:
            raise ValueError("tagging objective needs a label_set (list of class names); pass label_set=... "
                             "(e.g. sorted set of all batch['labels'] in the training manifest)")
        if len(set(cfg.label_set)) != len(cfg.label_set):
            raise ValueError("tagging label_set has duplicate names; give each class once")
        self.label_set = list(cfg.label_set)
        self.label_index = {name: i for i, name in enumerate(self.label_set)}
        self.pooling = build_pooling(cfg.pooling, encoder.output_dim, cfg.pooling_heads)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(encoder.output_dim, len(self.label_set))

    @classmethod
    def prepare(cls, config: dict, cuts, label_field: str | None = None) -> dict:
        """Without a given label_set, the classes are every label of the manifest, sorted."""
        if config.get("label_set"):
            return dict(config)
        from audiolp.data.schema import cut_labels

        labels = sorted({lab for c in cuts for lab in cut_labels(c, label_field)})
        if not labels:
            raise ValueError("objective 'tagging' needs labels, but no cut in the manifest has any (looked in "
                             f"supervision.custom[{label_field or 'labels or audio_tag'!r}]); give "
                             "objective_config.label_set, set loader.label_field, or use a labelled manifest")
        return {**config, "label_set": labels}

    def targets(self, labels: list[list[str]], cut_ids: list[str] | None = None) -> tuple[torch.Tensor, int]:
        """Multi-hot (N, C) targets and the number of labels outside label_set (ignored or an error)."""
        y = torch.zeros(len(labels), len(self.label_set))
        unknown = 0
        for i, labs in enumerate(labels):
            for name in labs:
                j = self.label_index.get(name)
                if j is None:
                    if self.config.unknown_labels == "error":
                        cid = cut_ids[i] if cut_ids else i
                        raise ValueError(f"clip {cid!r}: label {name!r} is not in the tagging label_set "
                                         f"({len(self.label_set)} classes); add it to label_set or set "
                                         "TaggingConfig.unknown_labels='ignore'")
                    unknown += 1
                else:
                    y[i, j] = 1.0
        return y, unknown

    def logits(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        dev = module_device(self)
        frames, out_lens = self.encoder(features.to(dev).float(), lengths.to(dev).long())
        return self.head(self.dropout(self.pooling(frames, out_lens)))

    @torch.no_grad()
    def predict(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Class probabilities (N, C)."""
        return self.logits(features, lengths).sigmoid()

    def forward(self, batch: dict, step: int = 0) -> ObjectiveOutput:
        feats, lens = audio_inputs(batch, module_device(self))
        if "labels" not in batch:
            raise KeyError("batch lacks 'labels'; the tagging objective needs labels per clip")
        y, unknown = self.targets(batch["labels"], batch.get("cut_ids"))
        logits = self.logits(feats, lens)
        loss = F.binary_cross_entropy_with_logits(logits.float(), y.to(logits.device))
        logs = {"loss": float(loss.detach()), "labels_per_clip": float(y.sum(1).mean()),
                "unknown_labels": float(unknown)}
        return ObjectiveOutput(loss=loss, logs=logs, num_items=int(feats.shape[0]))
