"""Frozen audiolp encoders for other benchmarks: the HEAR API (``audiolp.eval.hear``) and an X-ARES encoder.

Both take raw 16 kHz waveforms, compute the same log-mel fbank as training (``audiolp.features``) inside, batch
over sounds and run on the device of the encoder's weights (CPU or CUDA).

    from audiolp.eval.export import AudiolpEncoder
    enc = AudiolpEncoder("runs/clap-400k")              # X-ARES: forward(waveform (B, T)) -> (B, T', D)
    from audiolp.eval import hear                        # HEAR: load_model / get_scene_embeddings / ...
    model = hear.load_model("runs/clap-400k")

Frame timing. lhotse's fbank (snip_edges=False) centres fbank frame i at (i + 1/2) x 10 ms. The Zipformer's conv
front-end (three 3-tap convolutions, the second with stride 2, no time padding) centres its 50 Hz frame m on fbank
frame 2m + 4, and the final SimpleDownsample averages ``od`` consecutive 50 Hz frames; so output frame n is
centred at ((2 od n + od - 1) + 4.5) x 10 ms -- 55 + 40 n ms for od = 2. Encoders without that front-end
(``FbankFrames``) are centred at (n + 1/2) x frame_hop_ms.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from audiolp.features import SAMPLING_RATE, FeatureConfig, compute_fbank


@dataclass(frozen=True)
class FrameGrid:
    """Where an encoder's output frames sit in time: frame n is centred at ``first_centre_ms + n * hop_ms``."""

    hop_ms: float
    first_centre_ms: float

    def centres_ms(self, n_frames: int) -> np.ndarray:
        return self.first_centre_ms + self.hop_ms * np.arange(n_frames, dtype=np.float64)


def frame_grid(encoder: nn.Module, feature_config: FeatureConfig | None = None) -> FrameGrid:
    """The time grid of ``encoder``'s output frames (see the module docstring for the derivation)."""
    fbank_hop_ms = 1000.0 * (feature_config or FeatureConfig()).frame_shift_s
    hop = float(getattr(encoder, "frame_hop_ms", fbank_hop_ms))
    od = getattr(getattr(encoder, "config", None), "output_downsampling_factor", None)
    if od is None:  # no conv front-end: frame n summarises [n hop, (n + 1) hop)
        return FrameGrid(hop_ms=hop, first_centre_ms=hop / 2)
    return FrameGrid(hop_ms=hop, first_centre_ms=fbank_hop_ms * (od - 1 + 4.5))


def load_frozen_encoder(model_file_path: str | os.PathLike, device: str | torch.device = "cpu",
                        checkpoint: str = "final") -> nn.Module:
    """A frozen encoder from a run dir (its final encoder, else its latest checkpoint) or from a .safetensors
    weights file with ``encoder_config.json`` in the same folder."""
    from audiolp.models.io import ENCODER_CONFIG, CheckpointError, load_encoder

    path = Path(model_file_path)
    if not path.exists():
        raise FileNotFoundError(f"{str(path)!r} does not exist; pass an audiolp run dir (holding {ENCODER_CONFIG} "
                                f"and encoder.safetensors or checkpoints/) or a .safetensors file next to an "
                                f"{ENCODER_CONFIG}")
    if path.is_dir():
        if not (path / ENCODER_CONFIG).exists():
            raise CheckpointError(f"{path} has no {ENCODER_CONFIG}: not an audiolp run dir; pass the run dir the "
                                  "trainer wrote, or a weights file next to its encoder_config.json")
        if checkpoint == "final" and not (path / "encoder.safetensors").exists():
            checkpoint = "latest"  # a run still training: its newest checkpoint
        return load_encoder(path, checkpoint=checkpoint, device=str(device))
    if not (path.parent / ENCODER_CONFIG).exists():
        raise CheckpointError(f"weights file {path} has no {ENCODER_CONFIG} beside it; copy the run's "
                              f"{ENCODER_CONFIG} into {path.parent} or pass the run dir")
    return load_encoder(path.parent, checkpoint=str(path), device=str(device))


class _WaveformFrontEnd(nn.Module):
    """fbank + frozen encoder on a batch of equal-length waveforms (the benchmarks' layout).

    Each waveform is one sound of ``n_samples`` samples: all get the same number of fbank frames, so no padding
    enters the encoder, and a sound's frames do not depend on the other sounds in its batch.
    """

    def __init__(self, encoder: nn.Module, feature_config: FeatureConfig | None = None, batch_size: int = 16):
        super().__init__()
        self.encoder = encoder
        self.feature_config = feature_config or FeatureConfig()
        self.batch_size = int(batch_size)
        self.grid = frame_grid(encoder, self.feature_config)
        encoder.eval()
        for p in encoder.parameters():
            p.requires_grad_(False)

    @property
    def device(self) -> torch.device:
        p = next(self.encoder.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def train(self, mode: bool = True):  # frozen: dropout stays off whatever the caller does
        super().train(mode)
        self.encoder.eval()
        return self

    @torch.no_grad()
    def frames(self, audio: torch.Tensor) -> torch.Tensor:
        """(n_sounds, n_samples) float at 16 kHz -> (n_sounds, T', D) float32 frames on the encoder's device."""
        if not isinstance(audio, torch.Tensor):
            audio = torch.as_tensor(np.asarray(audio))
        if audio.dim() == 1:
            audio = audio.unsqueeze(0)
        if audio.dim() != 2:
            raise ValueError(f"audio must be (n_sounds, n_samples) at {SAMPLING_RATE} Hz; got shape "
                             f"{tuple(audio.shape)} (mono only: average or pick a channel first)")
        min_samples = int(0.1 * self.feature_config.sampling_rate)
        if audio.shape[1] < min_samples:
            raise ValueError(f"sounds of {audio.shape[1]} samples are too short: the encoder needs at least "
                             f"{min_samples} samples (0.1 s at {self.feature_config.sampling_rate} Hz); pad them")
        out = []
        audio = audio.detach().float().cpu()
        for start in range(0, audio.shape[0], self.batch_size):
            feats = torch.stack([compute_fbank(a, self.feature_config.sampling_rate, self.feature_config)
                                 for a in audio[start:start + self.batch_size]])
            lengths = torch.full((feats.shape[0],), feats.shape[1], dtype=torch.long)
            x, lens = self.encoder(feats.to(self.device), lengths.to(self.device))
            out.append(x[:, :int(lens.min())].float())
        return torch.cat(out)


class AudiolpEncoder(_WaveformFrontEnd):
    """X-ARES encoder: ``forward(waveform (B, T) at 16 kHz) -> (B, T', output_dim)`` frames of a frozen audiolp
    encoder; ``AudiolpEncoder(run_dir_or_weights, device=...)``."""

    def __init__(self, model_path: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                 encoder: nn.Module | None = None, checkpoint: str = "final", batch_size: int = 16):
        if encoder is None:
            if model_path is None:
                raise ValueError("AudiolpEncoder needs a run dir / weights file (model_path) or an encoder")
            encoder = load_frozen_encoder(model_path, device=device, checkpoint=checkpoint)
        super().__init__(encoder.to(device), batch_size=batch_size)
        self.sampling_rate = self.feature_config.sampling_rate
        self.output_dim = int(encoder.output_dim)
        self.hop_size_in_ms = float(self.grid.hop_ms)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.frames(waveform.to("cpu") if isinstance(waveform, torch.Tensor) else waveform)


class HearModel(_WaveformFrontEnd):
    """The model object of the HEAR API (see ``audiolp.eval.hear``)."""

    def __init__(self, encoder: nn.Module, batch_size: int = 16):
        super().__init__(encoder, batch_size=batch_size)
        self.sample_rate = self.feature_config.sampling_rate
        self.scene_embedding_size = int(encoder.output_dim)
        self.timestamp_embedding_size = int(encoder.output_dim)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.frames(audio)


def hear_load_model(model_file_path: str | os.PathLike = "", device: str | torch.device | None = None,
                    batch_size: int = 16) -> HearModel:
    if not str(model_file_path):
        raise ValueError("load_model needs model_file_path: an audiolp run dir or a .safetensors file next to an "
                         "encoder_config.json")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return HearModel(load_frozen_encoder(model_file_path, device=device), batch_size=batch_size)


def hear_timestamp_embeddings(audio: torch.Tensor, model: HearModel) -> tuple[torch.Tensor, torch.Tensor]:
    frames = model.frames(audio)
    ts = torch.from_numpy(model.grid.centres_ms(frames.shape[1])).to(torch.float32)
    return frames, ts.to(frames.device).unsqueeze(0).expand(frames.shape[0], -1).contiguous()


def hear_scene_embeddings(audio: torch.Tensor, model: HearModel) -> torch.Tensor:
    # Every sound of the batch has the same length, so every frame is valid: the plain mean is the masked mean.
    return model.frames(audio).mean(dim=1)

