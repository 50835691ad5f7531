"""One trainer for every objective (torchrun/DDP, bf16, accumulation, EMA, crash-safe checkpoints, exact resume).

    from audiolp.train import TrainConfig, train, load_encoder
    run_dir = train(TrainConfig(objective="contrastive", data="data/ministew/cuts.jsonl.gz", ...))
    encoder = load_encoder(run_dir)            # frozen, eval mode

Names are imported on first use, so ``import audiolp.train`` stays light (no lhotse / transformers).
"""
from __future__ import annotations

_LAZY = {
    "TrainConfig": "audiolp.train.config",
    "train": "audiolp.train.trainer",
    "main": "audiolp.train.trainer",
    "Trainer": "audiolp.train.trainer",
    "load_encoder": "audiolp.models.io",
    "spawn_local": "audiolp.train.distributed",
    "OptimConfig": "audiolp.train.optim",
    "build_optimizer": "audiolp.train.optim",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'audiolp.train' has no attribute {name!r}")
