"""Fbank computed once ahead of training, stored as lilcom-compressed chunky archives (resumable, sharded); the
loader reads them 4-5x faster than computing fbank on the fly (BENCHMARKS.md)."""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path

from lhotse import CutSet, LilcomChunkyWriter

from audiolp.data.schema import save_manifest
from audiolp.features import FeatureConfig, make_fbank

log = logging.getLogger(__name__)


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
