"""HEAR API (hearbenchmark.com) over a frozen audiolp encoder: ``--module audiolp.eval.hear --model RUN_DIR``.

``load_model`` takes a run dir or a .safetensors weights file next to an encoder_config.json. Scene embeddings are
the mean of a sound's frames; timestamp embeddings are the encoder's frames (25 Hz for a Zipformer) with their
centre times in milliseconds (``audiolp.eval.export`` explains the geometry).
"""
from __future__ import annotations

import torch

from audiolp.eval.export import HearModel, hear_load_model, hear_scene_embeddings, hear_timestamp_embeddings

__all__ = ["load_model", "get_scene_embeddings", "get_timestamp_embeddings", "HearModel"]


def load_model(model_file_path: str = "", device: str | None = None) -> HearModel:
    """A frozen model with ``sample_rate`` (16000), ``scene_embedding_size`` and ``timestamp_embedding_size``."""
    return hear_load_model(model_file_path, device=device)


def get_timestamp_embeddings(audio: torch.Tensor, model: HearModel) -> tuple[torch.Tensor, torch.Tensor]:
    """audio (n_sounds, n_samples) at 16 kHz -> embeddings (n_sounds, n_timestamps, D), timestamps (n_sounds,
    n_timestamps) in ms at the frames' centres."""
    return hear_timestamp_embeddings(audio, model)


def get_scene_embeddings(audio: torch.Tensor, model: HearModel) -> torch.Tensor:
    """audio (n_sounds, n_samples) at 16 kHz -> (n_sounds, D): the mean of each sound's frames."""
    return hear_scene_embeddings(audio, model)
