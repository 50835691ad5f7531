"""Acoustic features: 80-dim log-mel filterbank (25 ms window, 10 ms hop, 16 kHz) and SpecAugment.

Both come from lhotse's torch implementations (Kaldi-compatible fbank without torchaudio), so the same code
runs on CPU workers (on-the-fly or precomputed to lilcom archives) and on a GPU (batched extraction).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from lhotse import CutSet, Fbank, FbankConfig, LilcomChunkyWriter
from lhotse.dataset import SpecAugment

from audiolp.data.schema import SAMPLING_RATE


@dataclass
class FeatureConfig:
    num_mel_bins: int = 80
    frame_length_s: float = 0.025
    frame_shift_s: float = 0.010
    sampling_rate: int = SAMPLING_RATE
    dither: float = 0.0
    device: str = "cpu"

    @property
    def frames_per_second(self) -> float:
        return 1.0 / self.frame_shift_s


@dataclass
class SpecAugmentConfig:
    """Defaults follow the icefall audio-tagging recipe (no time warping)."""

    enabled: bool = True
    num_frame_masks: int = 10
    frames_mask_size: int = 100
    max_frames_mask_fraction: float = 0.15
    num_feature_masks: int = 2
    features_mask_size: int = 27
    time_warp_factor: int | None = None
    p: float = 0.9


def make_fbank(cfg: FeatureConfig | None = None) -> Fbank:
    cfg = cfg or FeatureConfig()
    return Fbank(
        FbankConfig(
            sampling_rate=cfg.sampling_rate,
            frame_length=cfg.frame_length_s,
            frame_shift=cfg.frame_shift_s,
            num_filters=cfg.num_mel_bins,
            dither=cfg.dither,
            device=cfg.device,
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


def fbank_batch(waveforms: list[torch.Tensor | np.ndarray], cfg: FeatureConfig | None = None) -> list[torch.Tensor]:
    """Batched extraction (the GPU path when cfg.device is 'cuda'); returns one (frames, bins) tensor per clip."""
    cfg = cfg or FeatureConfig()
    wavs = [torch.as_tensor(np.asarray(w, dtype=np.float32)).reshape(-1) for w in waveforms]
    feats = make_fbank(cfg).extract_batch(wavs, sampling_rate=cfg.sampling_rate)
    return [torch.as_tensor(f) for f in feats]


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


def precompute_features(cuts: CutSet, out_dir: str | Path, cfg: FeatureConfig | None = None,
                        num_workers: int = 2, batch_duration: float = 600.0) -> CutSet:
    """Compute fbank once and store it as lilcom-compressed chunky archives; returns cuts pointing to them.

    The returned cuts are also written to out_dir/cuts_with_feats.jsonl.gz (atomically), so an interrupted run
    leaves any earlier manifest untouched.
    """
    from audiolp.data.schema import save_manifest

    cfg = cfg or FeatureConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with_feats = cuts.compute_and_store_features_batch(
        extractor=make_fbank(cfg),
        storage_path=out_dir / "fbank",
        batch_duration=batch_duration,
        num_workers=num_workers,
        storage_type=LilcomChunkyWriter,
        overwrite=True,
    )
    with_feats = CutSet.from_cuts(list(with_feats))
    save_manifest(with_feats, out_dir / "cuts_with_feats.jsonl.gz")
    (out_dir / "feature_config.json").write_text(__import__("json").dumps(asdict(cfg), indent=2))
    return with_feats


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
