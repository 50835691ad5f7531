"""Batches for pretraining and evaluation: lhotse samplers by total duration, DDP-aware, optional source mixing.

A batch is a dict:
  features      FloatTensor (N, T, 80)  log-mel fbank, zero beyond each clip's length
  feature_lens  LongTensor (N,)
  captions      list[list[str]]         every caption of each clip (objectives pick one per step)
  labels        list[list[str]]
  sources, domains, cut_ids: list[str]
  audio_seconds float                    total audio in the batch (throughput accounting)
  skipped_cut_ids list[str]              clips of the sampled batch whose audio could not be read (left out)
  <field>       list                    each supervision custom field named in ``custom_fields`` (None if absent),
                                        e.g. 'qa' for the audio_qa objective (``Objective.batch_fields``)

Unreadable audio (a missing, truncated or corrupt file) is skipped with a warning naming the clip and its file
(``LoaderConfig.skip_unreadable``, on by default); a batch in which no clip can be read comes out empty (no clip,
its ids in ``skipped_cut_ids``), and the trainer steps over it.

SpecAugment draws come from a generator seeded by (seed, epoch, the batch's cut ids), not from the process-wide
RNG: the same batch gets the same masks whichever process builds it (main process or a DataLoader worker, rank 0 or
rank 1) and however many batches came before, so a resumed run with workers, and DDP splits, augment exactly like an
uninterrupted single-process run. Each clip is augmented over its own frames only (padding stays 0).
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import random
import signal
from dataclasses import dataclass, field

import numpy as np
import torch
from lhotse import CutSet
from lhotse.dataset import DynamicBucketingSampler, DynamicCutSampler
from lhotse.dataset.input_strategies import OnTheFlyFeatures, PrecomputedFeatures
from torch.utils.data import DataLoader, Dataset

from audiolp.data.schema import cut_captions, cut_domain, cut_labels, cut_source
from audiolp.features import FeatureConfig, SpecAugmentConfig, build_spec_augment, make_fbank

log = logging.getLogger(__name__)


@dataclass
class LoaderConfig:
    max_duration: float = 600.0  # seconds of audio per batch (per rank; Auden: 600 s per GPU)
    # Training clips outside [min_clip_seconds, max_clip_seconds] are left out before a run starts (counted in
    # results.json; Auden keeps 1-60 s). None = no bound (the encoder's own minimum of 90 ms still holds).
    min_clip_seconds: float | None = 1.0
    max_clip_seconds: float | None = 60.0
    num_buckets: int = 10
    shuffle: bool = True
    drop_last: bool = False
    num_workers: int = 0
    features: str = "auto"  # "auto" | "on_the_fly" | "precomputed"
    spec_augment: bool = True  # applied only when train=True
    spec_augment_config: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
    feature_config: FeatureConfig = field(default_factory=FeatureConfig)
    # {source: weight}: sources are repeated forever and interleaved by lhotse mux with these weights,
    # so the loader is infinite and training must be bounded by steps. Every source of the manifest needs a weight
    # (0 leaves it out). Empty = one pass per epoch.
    source_weights: dict[str, float] = field(default_factory=dict)
    # Leave out clips whose audio cannot be read (reported in batch["skipped_cut_ids"] and counted by the trainer)
    # instead of stopping a long run; False = the first unreadable file raises.
    skip_unreadable: bool = True
    # Where batch["labels"] comes from (see schema.cut_labels): None = custom 'labels', else 'audio_tag' (the
    # authors' manifests); a name = that supervision field only, as a list or a ';'-joined string.
    label_field: str | None = None

    def __post_init__(self):
        if isinstance(self.spec_augment_config, dict):
            self.spec_augment_config = SpecAugmentConfig(**self.spec_augment_config)
        if isinstance(self.feature_config, dict):
            self.feature_config = FeatureConfig(**self.feature_config)
        if self.features not in ("auto", "on_the_fly", "precomputed"):
            raise ValueError(
                f"LoaderConfig.features={self.features!r}; use 'auto', 'on_the_fly' or 'precomputed'"
            )
        if self.max_duration <= 0:
            raise ValueError(f"LoaderConfig.max_duration={self.max_duration}; give seconds of audio per batch > 0")
        lo, hi = self.min_clip_seconds or 0.0, self.max_clip_seconds
        if lo < 0 or (hi is not None and hi <= lo):
            raise ValueError(f"LoaderConfig clip bounds [{self.min_clip_seconds}, {self.max_clip_seconds}] s are not "
                             "a range; give 0 <= min_clip_seconds < max_clip_seconds (or None for no bound)")


class CaptionBatchDataset(Dataset):
    """Maps a CutSet chosen by the sampler to a padded batch dict (see module docstring)."""

    def __init__(self, cfg: LoaderConfig, train: bool, seed: int = 0, custom_fields: tuple[str, ...] = ()):
        self.cfg = cfg
        self.seed = seed
        self.custom_fields = tuple(custom_fields)
        self.epoch = 0  # set before each epoch's iteration (workers are re-created per epoch and copy it)
        self.spec_augment = build_spec_augment(cfg.spec_augment_config) if (train and cfg.spec_augment) else None
        self._on_the_fly = OnTheFlyFeatures(make_fbank(cfg.feature_config), fault_tolerant=cfg.skip_unreadable)
        self._precomputed = PrecomputedFeatures()

    def _strategy(self, cuts: CutSet):
        mode = self.cfg.features
        if mode == "auto":
            mode = "precomputed" if all(c.has_features for c in cuts) else "on_the_fly"
        if mode == "precomputed":
            missing = [c.id for c in cuts if not c.has_features]
            if missing:
                raise ValueError(
                    f"features='precomputed' but cut {missing[0]!r} has no stored features; run "
                    "audiolp.data.precompute.precompute_features or set features='on_the_fly'"
                )
            return self._precomputed
        return self._on_the_fly

    def _features(self, cuts: CutSet) -> tuple[torch.Tensor, torch.Tensor, CutSet, list[str]]:
        strategy = self._strategy(cuts)
        if strategy is self._on_the_fly:
            # lhotse extracts with the fbank's configured rate whatever the audio's rate (wrong mel bands), and a
            # batch of mixed rates fails an assertion: bring every clip to the feature rate first.
            sr = self.cfg.feature_config.sampling_rate
            if any(c.sampling_rate != sr for c in cuts):
                cuts = CutSet.from_cuts(c if c.sampling_rate == sr else c.resample(sr) for c in cuts)
        if strategy is not self._on_the_fly or not self.cfg.skip_unreadable:
            feats, lens = strategy(cuts)
            return feats, lens, cuts, []
        try:
            feats, lens, ok = strategy(cuts)  # fault tolerant: the cuts whose audio was read
        except IndexError:  # lhotse indexes the first readable cut: there was none
            if not len(cuts):
                raise
            ok = []
        ok_ids = {c.id for c in ok}
        bad = [c for c in cuts if c.id not in ok_ids]
        for c in bad:
            where = getattr(getattr(c, "recording", None), "sources", None)
            where = where[0].source if where else "?"
            log.warning("skipping clip %r: its audio could not be read (%s)", c.id, where)
        if not ok_ids:  # e.g. a long track alone in its batch: an empty batch, not the end of the run
            return None, None, [], [c.id for c in bad]
        return feats, lens, ok, [c.id for c in bad]

    def __getitem__(self, cuts: CutSet) -> dict:
        cuts = cuts.sort_by_duration(ascending=False)
        feats, lens, cuts, skipped = self._features(cuts)
        if feats is None:
            return empty_batch(skipped, self.cfg.feature_config.num_mel_bins, self.custom_fields)
        feats = feats.float()
        lens = lens.long()
        # lhotse pads with log(eps); zero padding keeps padded frames neutral for models that mask imperfectly.
        frame_idx = torch.arange(feats.shape[1]).unsqueeze(0)
        feats = feats.masked_fill((frame_idx >= lens.unsqueeze(1)).unsqueeze(-1), 0.0)
        if self.spec_augment is not None:
            feats = self._augment(feats, lens, [c.id for c in cuts])
        return {
            "features": feats,
            "feature_lens": lens,
            "captions": [cut_captions(c) for c in cuts],
            "labels": [cut_labels(c, field=self.cfg.label_field) for c in cuts],
            "sources": [cut_source(c) for c in cuts],
            "domains": [cut_domain(c) for c in cuts],
            "cut_ids": [c.id for c in cuts],
            "audio_seconds": float(sum(c.duration for c in cuts)),
            "skipped_cut_ids": skipped,
            **{name: [custom_field(c, name) for c in cuts] for name in self.custom_fields},
        }

    def _augment(self, feats: torch.Tensor, lens: torch.Tensor, cut_ids: list[str]) -> torch.Tensor:
        """SpecAugment each clip over its own frames only: lhotse takes the mask value (the mean) and the time-mask
        budget from the length it is given, so on the padded batch short clips would be masked far beyond
        max_frames_mask_fraction, and masks or time warp would write into (and read from) the zero padding."""
        # lhotse cannot fit a time mask in fewer frames than this (it fails on an empty mask range).
        min_frames = math.ceil(1.0 / self.cfg.spec_augment_config.max_frames_mask_fraction)
        feats = feats.clone()
        # One thread, as in a DataLoader worker: the mask value is a mean whose float rounding depends on how torch
        # splits the reduction, and the same batch must get bit-identical masks in the main process and a worker.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with _seeded_rng(batch_seed(self.seed, self.epoch, cut_ids)):
                for i, n in enumerate(lens.tolist()):
                    if n >= min_frames:  # shorter clips (< ~70 ms at the defaults) are left unaugmented
                        feats[i, :n] = self.spec_augment(feats[i:i + 1, :n])[0]
        finally:
            torch.set_num_threads(threads)
        return feats


def custom_field(cut, name: str):
    """Supervision custom field ``name`` of a cut (None when absent)."""
    return (cut.supervisions[0].custom or {}).get(name) if cut.supervisions else None


def empty_batch(skipped_cut_ids: list[str], num_mel_bins: int = 80, custom_fields: tuple[str, ...] = ()) -> dict:
    """A batch without clips: every clip the sampler chose was unreadable (their ids in ``skipped_cut_ids``)."""
    return {**{name: [] for name in custom_fields},"features": torch.zeros(0, 0, num_mel_bins), "feature_lens": torch.zeros(0, dtype=torch.long),
            "captions": [], "labels": [], "sources": [], "domains": [], "cut_ids": [], "audio_seconds": 0.0,
            "skipped_cut_ids": list(skipped_cut_ids)}


def _ignore_stop_signals(_worker_id: int) -> None:
    """DataLoader worker_init_fn: on pre-emption SLURM signals the whole process group; the main process's trainer
    handles SIGTERM/SIGUSR1 (stops, checkpoints, shuts the loader down), but the default action of either signal
    would kill a worker first and break the iteration the trainer still needs. Module-level so it pickles."""
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)


def batch_seed(seed: int, epoch: int, cut_ids: list[str]) -> int:
    """A 63-bit seed that depends only on the run seed, the epoch and which clips form the batch."""
    h = hashlib.blake2b(f"{seed}|{epoch}|".encode() + "\x00".join(sorted(cut_ids)).encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little") >> 1


@contextlib.contextmanager
def _seeded_rng(seed: int):
    """Seed Python, NumPy and torch (CPU) for the block (lhotse's SpecAugment draws from all three), then put the
    caller's RNG states back, so the training stream (dropout, ...) is not disturbed by data augmentation."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed % 2 ** 32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def mix_sources(cuts: CutSet, weights: dict[str, float], seed: int = 0) -> CutSet:
    """Infinite stream interleaving each source (repeated forever) with the given weights (lhotse mux)."""
    by_source: dict[str, list] = {}
    for c in cuts:
        by_source.setdefault(cut_source(c), []).append(c)
    unknown = sorted(set(weights) - set(by_source))
    if unknown:
        raise ValueError(f"source_weights names {unknown}, not in the manifest; its sources are {sorted(by_source)}")
    # A source left out of the weights would silently never be trained on: make leaving one out explicit.
    missing = sorted(set(by_source) - set(weights))
    if missing:
        raise ValueError(f"source_weights gives no weight to the manifest's source(s) {missing}; give every source "
                         f"a weight (0 to leave one out of training on purpose); sources: {sorted(by_source)}")
    for s, w in weights.items():
        if not math.isfinite(w) or w < 0:
            raise ValueError(f"source_weights[{s!r}]={w}; give a finite weight >= 0 (0 leaves the source out)")
    names = [s for s in sorted(by_source) if weights[s] > 0]
    if not names:
        raise ValueError("source_weights gives no positive weight to any source in the manifest")
    parts = [CutSet.from_cuts(by_source[s]).repeat() for s in names]
    if len(parts) == 1:  # lhotse mux needs two streams; one source is just that source, forever
        return parts[0]
    return CutSet.mux(*parts, weights=[weights[s] for s in names], seed=seed)


def make_sampler(cuts: CutSet, cfg: LoaderConfig, seed: int = 0, rank: int = 0, world_size: int = 1,
                 train: bool = True) -> DynamicBucketingSampler | DynamicCutSampler:
    stream = mix_sources(cuts, cfg.source_weights, seed) if (train and cfg.source_weights) else cuts
    num_cuts_estimate = 10_000
    if not cfg.source_weights and not cuts.is_lazy:
        num_cuts_estimate = min(10_000, len(cuts))
    num_buckets = min(cfg.num_buckets, num_cuts_estimate // 2)
    if num_buckets < 2:
        # Bucketing needs >= 2 buckets; without it, batches are filled in (shuffled) manifest order.
        return DynamicCutSampler(stream, max_duration=cfg.max_duration, shuffle=cfg.shuffle and train,
                                 drop_last=cfg.drop_last, seed=seed, rank=rank, world_size=world_size)
    return DynamicBucketingSampler(
        stream,
        max_duration=cfg.max_duration,
        num_buckets=num_buckets,
        shuffle=cfg.shuffle and train,
        drop_last=cfg.drop_last,
        seed=seed,
        rank=rank,
        world_size=world_size,
        num_cuts_for_bins_estimate=num_cuts_estimate,
    )


def make_dataloader(cuts: CutSet, cfg: LoaderConfig | None = None, seed: int = 0, rank: int = 0,
                    world_size: int = 1, epoch: int = 0, train: bool = True, pin_memory: bool = False,
                    custom_fields: tuple[str, ...] = ()) -> DataLoader:
    """DataLoader over a duration-bucketed sampler; ``loader.sampler`` has lhotse's state_dict/load_state_dict
    for exact mid-epoch resume and ``set_epoch``. ``pin_memory`` (for a CUDA consumer) lets batches copy to the
    GPU asynchronously. ``custom_fields``: supervision custom fields passed through as ``batch[name]``."""
    cfg = cfg or LoaderConfig()
    if not cuts.is_lazy and len(cuts) == 0:
        raise ValueError("the cut manifest is empty: nothing to load")
    sampler = make_sampler(cuts, cfg, seed=seed, rank=rank, world_size=world_size, train=train)
    sampler.set_epoch(epoch)
    dataset = CaptionBatchDataset(cfg, train=train, seed=seed, custom_fields=custom_fields)
    dataset.epoch = epoch
    return DataLoader(
        dataset,
        sampler=sampler,
        batch_size=None,
        num_workers=cfg.num_workers,
        persistent_workers=False,
        pin_memory=pin_memory,
        worker_init_fn=_ignore_stop_signals,
    )
