"""Acoustic features: 80-dim log-mel filterbank (25 ms window, 10 ms hop, 16 kHz) and SpecAugment.

Both come from lhotse's torch implementations (Kaldi-compatible fbank without torchaudio): computed on the fly
in the DataLoader workers, or once ahead of training into lilcom archives (``audiolp.data.precompute``; the speed
of each is in BENCHMARKS.md). This module knows waveforms and feature matrices only, nothing of manifests.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from lhotse import Fbank, FbankConfig
from lhotse.dataset import SpecAugment

SAMPLING_RATE = 16_000  # every corpus is read at this rate (audiolp.data.schema resamples to it)

@dataclass
class FeatureConfig:
    num_mel_bins: int = 80
    frame_length_s: float = 0.025
    frame_shift_s: float = 0.010
    sampling_rate: int = SAMPLING_RATE
    dither: float = 0.0

    @property
    def frames_per_second(self) -> float:
        return 1.0 / self.frame_shift_s


@dataclass
class SpecAugmentConfig:
    """Defaults follow the icefall AudioSet recipe and the authors' framework (Auden), time warp 80 included.

    The loader applies it to each clip's own frames, so time warp (lhotse: a clip of T frames is warped only when
    T > 2 x time_warp_factor + 1, i.e. > 1.6 s at 80) never reads or writes the batch's zero padding.
    """

    enabled: bool = True
    num_frame_masks: int = 10
    frames_mask_size: int = 100
    max_frames_mask_fraction: float = 0.15
    num_feature_masks: int = 2
    features_mask_size: int = 27
    time_warp_factor: int | None = 80  # None or 0 = no time warping
    p: float = 0.9

    def __post_init__(self):
        # lhotse divides its time-mask budget by the mask count (ZeroDivisionError deep in a DataLoader worker)
        # and cannot place a mask when the budget is 0: refuse here, naming the field.
        if self.enabled and self.num_frame_masks < 1:
            raise ValueError(f"SpecAugmentConfig.num_frame_masks={self.num_frame_masks}; lhotse needs >= 1 time mask "
                             "(set enabled=False, or spec_augment=False in LoaderConfig, to turn SpecAugment off)")
        if self.time_warp_factor is not None and (isinstance(self.time_warp_factor, bool)
                                                  or int(self.time_warp_factor) != self.time_warp_factor
                                                  or self.time_warp_factor < 0):
            raise ValueError(f"SpecAugmentConfig.time_warp_factor={self.time_warp_factor!r}; give a whole number of "
                             "frames >= 0 (80 = the authors' setting; 0 or None turns time warping off)")
        if self.enabled and not 0 < self.max_frames_mask_fraction <= 1:
            raise ValueError(f"SpecAugmentConfig.max_frames_mask_fraction={self.max_frames_mask_fraction}; "
                             "give a fraction in (0, 1] of each clip's frames that time masks may cover")


def make_fbank(cfg: FeatureConfig | None = None) -> Fbank:
    cfg = cfg or FeatureConfig()
    return Fbank(
        FbankConfig(
            sampling_rate=cfg.sampling_rate,
            frame_length=cfg.frame_length_s,
            frame_shift=cfg.frame_shift_s,
            num_filters=cfg.num_mel_bins,
            dither=cfg.dither,
        )
    )


def compute_fbank(audio: np.ndarray | torch.Tensor, sampling_rate: int = SAMPLING_RATE,
                  cfg: FeatureConfig | None = None) -> torch.Tensor:
    """Log-mel fbank of one mono waveform -> (frames, num_mel_bins); frames = round(seconds / hop)."""
    cfg = cfg or FeatureConfig()
    if sampling_rate != cfg.sampling_rate:
        raise ValueError(
            f"audio is {sampling_rate} Hz but features expect {cfg.sampling_rate} Hz; resample first "
            "(cuts: cut.resample(16000))"
        )
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().numpy()
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2:
        audio = audio[0]
    return torch.from_numpy(np.asarray(make_fbank(cfg).extract(audio, sampling_rate)))


def build_spec_augment(cfg: SpecAugmentConfig | None = None) -> SpecAugment | None:
    cfg = cfg or SpecAugmentConfig()
    if not cfg.enabled:
        return None
    return SpecAugment(
        time_warp_factor=cfg.time_warp_factor,
        num_feature_masks=cfg.num_feature_masks,
        features_mask_size=cfg.features_mask_size,
        num_frame_masks=cfg.num_frame_masks,
        frames_mask_size=cfg.frames_mask_size,
        max_frames_mask_fraction=cfg.max_frames_mask_fraction,
        p=cfg.p,
    )


def mel_bin_of_frequency(freq_hz: float, cfg: FeatureConfig | None = None, low_freq: float = 20.0,
                         high_freq: float = -400.0) -> int:
    """Index of the mel bin whose centre is nearest to ``freq_hz`` (Kaldi mel scale, lhotse's band edges)."""
    cfg = cfg or FeatureConfig()
    nyquist = cfg.sampling_rate / 2
    hi = nyquist + high_freq if high_freq <= 0 else high_freq

    def mel(f):
        return 1127.0 * np.log1p(f / 700.0)

    edges = np.linspace(mel(low_freq), mel(hi), cfg.num_mel_bins + 2)
    centres = edges[1:-1]
    return int(np.argmin(np.abs(centres - mel(freq_hz))))
