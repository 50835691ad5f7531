"""Frame-level embeddings of a frozen encoder, extracted once per (encoder weights, feature config, clips) and
reused by every probe, pooling and seed.

    cache = EmbeddingCache("runs/.embeddings")
    emb = cache.get(encoder, cuts, name="minibench/voice_id/train")   # extracts, or reads what is stored
    emb.frames_of(0)            # (T_0, D) float16 frames of the first clip (25 Hz for a Zipformer)
    emb.labels[0]               # its labels

An entry lives in ``<root>/<encoder fingerprint>/<features + clips fingerprint>/`` as parts of ``chunk_clips``
clips (safetensors: frames + offsets; JSON: ids, labels, unreadable clips), each written atomically: an
interrupted extraction resumes at the first missing part, and a complete entry is read without touching audio.
A changed checkpoint (any weight), feature config or clip list gives another fingerprint, so stale embeddings are
never read.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from audiolp.data.loader import LoaderConfig, make_dataloader
from audiolp.data.schema import cut_labels
from audiolp.features import FeatureConfig
from audiolp.files import atomic_write, atomic_write_json


@dataclass
class Embeddings:
    """Frames of N clips, concatenated: clip i is ``frames[offsets[i]:offsets[i + 1]]``."""

    ids: list[str]
    frames: np.ndarray  # (sum of T_i, D) float16
    offsets: np.ndarray  # (N + 1,) int64
    labels: list[list[str]]
    unreadable: list[str] = field(default_factory=list)  # clips left out: their audio could not be read

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(self.frames.shape[1])

    def frames_of(self, i: int) -> np.ndarray:
        return self.frames[self.offsets[i]:self.offsets[i + 1]]

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def mean_std(self) -> np.ndarray:
        """(N, 2D) float32: each clip's per-channel mean and standard deviation over its frames."""
        out = np.empty((len(self), 2 * self.dim), dtype=np.float32)
        for i in range(len(self)):
            x = self.frames_of(i).astype(np.float32)
            out[i, :self.dim], out[i, self.dim:] = x.mean(0), x.std(0)
        return out

    def padded(self, max_frames: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, T, D) float32 frames, zero-padded (longer clips cut to ``max_frames``), and (N,) lengths."""
        lens = np.minimum(self.lengths(), max_frames) if max_frames else self.lengths()
        x = torch.zeros(len(self), int(lens.max()) if len(self) else 0, self.dim)
        for i, n in enumerate(lens):
            x[i, :n] = torch.from_numpy(self.frames_of(i)[:n].astype(np.float32))
        return x, torch.from_numpy(lens.astype(np.int64))

    @classmethod
    def concat(cls, parts: list["Embeddings"]) -> "Embeddings":
        if not parts:
            raise ValueError("no embeddings to join")
        sizes = [0] + [int(p.offsets[-1]) for p in parts]
        starts = np.cumsum(sizes)
        offsets = np.concatenate([[0]] + [p.offsets[1:] + s for p, s in zip(parts, starts[:-1])]).astype(np.int64)
        return cls(ids=[i for p in parts for i in p.ids], frames=np.concatenate([p.frames for p in parts]),
                   offsets=offsets, labels=[lab for p in parts for lab in p.labels],
                   unreadable=[u for p in parts for u in p.unreadable])


class FbankFrames(nn.Module):
    """The 'no encoder' reference: the log-mel fbank frames themselves (100 Hz, 80-d), through the same pipeline."""

    def __init__(self, num_mel_bins: int = 80):
        super().__init__()
        self.output_dim = num_mel_bins
        self.frame_hop_ms = 10.0
        self.register_buffer("version", torch.tensor(1))  # gives the fingerprint something to hash

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return features, lengths


def encoder_fingerprint(encoder: nn.Module) -> str:
    """A hash of the encoder's class, config and every tensor of its state (names, shapes, dtypes, values)."""
    h = hashlib.blake2b(digest_size=10)
    h.update(type(encoder).__name__.encode())
    config = getattr(encoder, "config", None)
    if dataclasses.is_dataclass(config):
        h.update(json.dumps(dataclasses.asdict(config), sort_keys=True, default=str).encode())
    for name, t in sorted(encoder.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def clip_set_fingerprint(ids) -> str:
    """A hash of clip ids in order: records whose per-clip scores share it were scored on the same clips."""
    return hashlib.blake2b("\n".join(ids).encode(), digest_size=10).hexdigest()


def clips_fingerprint(cuts, feature_config: FeatureConfig, label_field: str | None = None) -> str:
    h = hashlib.blake2b(digest_size=10)
    h.update(json.dumps(dataclasses.asdict(feature_config), sort_keys=True).encode())
    h.update(f"labels from {label_field}\n".encode())
    for c in cuts:
        h.update(f"{c.id}|{c.duration:.4f}\n".encode())
    return h.hexdigest()


@torch.no_grad()
def extract(encoder: nn.Module, cuts, feature_config: FeatureConfig | None = None, max_duration: float = 300.0,
            device: str | torch.device = "cpu", label_field: str | None = None, progress: bool = False,
            desc: str = "embed") -> Embeddings:
    """Frames of every clip (in manifest order) from a frozen ``encoder``; batches hold ``max_duration`` seconds
    of audio; unreadable clips are left out, named in the log and listed in ``Embeddings.unreadable``."""
    from lhotse import CutSet

    cuts = CutSet.from_cuts(list(cuts))
    feature_config = feature_config or FeatureConfig()
    loader = make_dataloader(cuts, LoaderConfig(max_duration=max_duration, num_buckets=1, shuffle=False,
                                                spec_augment=False, feature_config=feature_config,
                                                label_field=label_field), train=False)
    was_training = encoder.training
    encoder.eval()
    got: dict[str, np.ndarray] = {}
    unreadable: list[str] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(cuts), desc=desc, unit="clip", dynamic_ncols=True)
    try:
        for batch in loader:
            unreadable += batch["skipped_cut_ids"]
            if batch["cut_ids"]:
                frames, lens = encoder(batch["features"].to(device), batch["feature_lens"].to(device))
                frames = frames.float().cpu().numpy().astype(np.float16)
                for cid, x, n in zip(batch["cut_ids"], frames, lens.tolist()):
                    got[cid] = x[:n]
            if bar is not None:
                bar.update(len(batch["cut_ids"]) + len(batch["skipped_cut_ids"]))
    finally:
        encoder.train(was_training)
        if bar is not None:
            bar.close()
    kept = [c for c in cuts if c.id in got]
    lengths = [len(got[c.id]) for c in kept]
    dim = getattr(encoder, "output_dim", None) or (next(iter(got.values())).shape[1] if got else 0)
    frames = np.concatenate([got[c.id] for c in kept]) if kept else np.zeros((0, dim), np.float16)
    return Embeddings(ids=[c.id for c in kept], frames=frames, offsets=np.concatenate([[0], np.cumsum(lengths)]),
                      labels=[cut_labels(c, field=label_field) for c in kept], unreadable=unreadable)


def _save_part(emb: Embeddings, stem: Path) -> None:
    from safetensors.numpy import save_file

    atomic_write(stem.with_suffix(".safetensors"),
                 lambda tmp: save_file({"frames": emb.frames, "offsets": emb.offsets.astype(np.int64)}, str(tmp)))
    # The JSON is written last: its presence marks the part complete.
    atomic_write_json(stem.with_suffix(".json"), {"ids": emb.ids, "labels": emb.labels,
                                                  "unreadable": emb.unreadable}, indent=None)


def _load_part(stem: Path) -> Embeddings:
    from safetensors.numpy import load_file

    meta = json.loads(stem.with_suffix(".json").read_text())
    arrays = load_file(str(stem.with_suffix(".safetensors")))
    return Embeddings(ids=meta["ids"], frames=arrays["frames"], offsets=arrays["offsets"], labels=meta["labels"],
                      unreadable=meta["unreadable"])


class EmbeddingCache:
    """Stored embeddings under ``root`` (see the module docstring). ``extractions`` counts the parts this cache
    object had to compute (0 when everything was read back)."""

    def __init__(self, root: str | os.PathLike, chunk_clips: int = 2000, max_duration: float = 300.0,
                 device: str | torch.device = "cpu", progress: bool = True):
        self.root = Path(root)
        self.chunk_clips, self.max_duration, self.device, self.progress = chunk_clips, max_duration, device, progress
        self.extractions = 0
        self._fingerprints: dict[int, tuple[nn.Module, str]] = {}

    def fingerprint(self, encoder: nn.Module) -> str:
        # Hashing a large encoder takes a while: once per encoder object (frozen weights do not change).
        key = id(encoder)
        if key not in self._fingerprints or self._fingerprints[key][0] is not encoder:
            self._fingerprints[key] = (encoder, encoder_fingerprint(encoder))
        return self._fingerprints[key][1]

    def entry_dir(self, encoder: nn.Module, cuts, feature_config: FeatureConfig | None = None,
                  label_field: str | None = None) -> Path:
        return self.root / self.fingerprint(encoder) / clips_fingerprint(cuts, feature_config or FeatureConfig(),
                                                                         label_field)

    def get(self, encoder: nn.Module, cuts, name: str = "", feature_config: FeatureConfig | None = None,
            label_field: str | None = None) -> Embeddings:
        cuts = list(cuts)
        if not cuts:
            raise ValueError(f"{name or 'embeddings'}: no clips to embed (an empty split manifest?)")
        feature_config = feature_config or FeatureConfig()
        where = self.entry_dir(encoder, cuts, feature_config, label_field)
        where.mkdir(parents=True, exist_ok=True)
        atomic_write_json(where / "entry.json", {"name": name, "clips": len(cuts),
                                                 "feature_config": dataclasses.asdict(feature_config)})
        parts = []
        chunks = range(0, len(cuts), self.chunk_clips)
        for k, start in enumerate(chunks):
            stem = where / f"part-{k:05d}"
            if not stem.with_suffix(".json").exists():
                emb = extract(encoder, cuts[start:start + self.chunk_clips], feature_config, self.max_duration,
                              self.device, label_field, self.progress,
                              desc=f"{name} {k + 1}/{len(chunks)}" if name else "embed")
                _save_part(emb, stem)
                self.extractions += 1
            parts.append(_load_part(stem))
        return Embeddings.concat(parts)
