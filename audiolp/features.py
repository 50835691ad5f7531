"""Acoustic features: 80-dim log-mel filterbank (25 ms window, 10 ms hop, 16 kHz) and SpecAugment.

Both come from lhotse's torch implementations (Kaldi-compatible fbank without torchaudio): computed on the fly
in the DataLoader workers, or once ahead of training into lilcom archives (``precompute_features``; the speed of
each is in BENCHMARKS.md).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from lhotse import CutSet, Fbank, FbankConfig, LilcomChunkyWriter
from lhotse.dataset import SpecAugment

from audiolp.data.schema import SAMPLING_RATE

log = logging.getLogger(__name__)


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


PRECOMPUTED_MANIFEST = "cuts_with_feats.jsonl.gz"
FEATURE_CONFIG_FILE = "feature_config.json"


class FeatureStoreError(ValueError):
    """A feature folder holds work that does not match the request (another feature config or other clips)."""


def _shards(cuts: CutSet, shard_size: int):
    shard = []
    for cut in cuts:
        shard.append(cut)
        if len(shard) == shard_size:
            yield shard
            shard = []
    if shard:
        yield shard


def precompute_features(cuts: CutSet, out_dir: str | Path, cfg: FeatureConfig | None = None,
                        num_workers: int = 2, batch_duration: float = 600.0, shard_size: int = 20_000) -> CutSet:
    """Compute fbank once and store it as lilcom-compressed chunky archives; returns cuts pointing to them.

    The clips are cut into shards of ``shard_size`` in manifest order; each shard is one archive
    (``fbank-00000.lca``) and one manifest (``shard-00000.jsonl.gz``), the manifest written atomically after its
    archive is complete. A rerun skips the finished shards, so an interrupted job over CaptionStew resumes where it
    stopped; a shard without a manifest is recomputed. Last, all shards are joined into ``cuts_with_feats.jsonl.gz``
    (atomically, in the input order, so scale subsets pick the same clips). Reusing a folder made with another
    feature config or for other clips is an error: nothing finished is overwritten. Memory holds one shard.
    Clips whose audio cannot be read are left out, logged with their file and listed in
    ``shard-*.unreadable.txt``. Archive paths are recorded absolute, so training may start from any directory.
    """
    from audiolp.data.schema import save_manifest

    cfg = cfg or FeatureConfig()
    if shard_size < 1:
        raise ValueError(f"precompute_features: shard_size={shard_size}; give the clips per archive (>= 1)")
    out_dir = Path(out_dir).resolve()  # the manifests record archive paths: absolute, so any cwd can train on them
    out_dir.mkdir(parents=True, exist_ok=True)
    config_path = out_dir / FEATURE_CONFIG_FILE
    wanted = asdict(cfg)
    if config_path.exists():
        have = json.loads(config_path.read_text(encoding="utf-8"))
        if have != wanted:
            raise FeatureStoreError(
                f"{config_path} records another feature config ({have}) than this request ({wanted}); "
                "use another out_dir, or delete that folder to recompute")
    else:
        tmp = config_path.with_name(config_path.name + ".partial")
        tmp.write_text(json.dumps(wanted, indent=2), encoding="utf-8")
        os.replace(tmp, config_path)

    extractor = make_fbank(cfg)
    shard_paths = []
    for i, shard in enumerate(_shards(cuts, shard_size)):
        shard_manifest = out_dir / f"shard-{i:05d}.jsonl.gz"
        shard_paths.append(shard_manifest)
        ids = [c.id for c in shard]
        skipped_path = shard_manifest.with_name(f"shard-{i:05d}.unreadable.txt")
        if shard_manifest.exists():
            unreadable = set(skipped_path.read_text(encoding="utf-8").split("\n")) if skipped_path.exists() else set()
            done = [c.id for c in CutSet.from_file(shard_manifest)]
            ids = [cid for cid in ids if cid not in unreadable]
            if done != ids:
                at = next((k for k, (a, b) in enumerate(zip(done, ids)) if a != b), min(len(done), len(ids)))
                have = repr(done[at]) if at < len(done) else "(end)"
                want = repr(ids[at]) if at < len(ids) else "(end)"
                raise FeatureStoreError(
                    f"{shard_manifest} holds other clips than shard {i} of this manifest: at position {at} it has "
                    f"{have} where the manifest has {want} ({len(done)} vs {len(ids)} clips); these features "
                    "belong to another manifest or order: use another out_dir")
            continue
        stored = CutSet.from_cuts(shard).compute_and_store_features_batch(
            extractor=extractor,
            storage_path=out_dir / f"fbank-{i:05d}",  # the writer adds .lca; a half-written one is overwritten
            batch_duration=batch_duration,
            num_workers=num_workers,
            storage_type=LilcomChunkyWriter,
            overwrite=True,
        )
        # the batch extractor may reorder clips (keep the manifest order) and leaves out unreadable audio: those
        # are named in the log and in shard-*.unreadable.txt (written first: a manifest implies a complete list)
        by_id = {c.id: c for c in stored}
        unreadable = [c for c in shard if c.id not in by_id]
        if unreadable:
            for c in unreadable:
                log.warning("precompute_features: left out clip %r, its audio could not be read (%s)", c.id,
                            c.recording.sources[0].source if c.has_recording and c.recording.sources else "?")
            tmp = skipped_path.with_name(skipped_path.name + ".partial")
            tmp.write_text("\n".join(c.id for c in unreadable), encoding="utf-8")
            os.replace(tmp, skipped_path)
        save_manifest([by_id[cid] for cid in ids if cid in by_id], shard_manifest)

    def joined():
        for path in shard_paths:
            yield from CutSet.from_file(path)

    manifest = save_manifest(joined(), out_dir / PRECOMPUTED_MANIFEST)
    return CutSet.from_jsonl_lazy(manifest)


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
