"""Fbank, SpecAugment and the duration-bucketed, DDP-aware loader on small generated audio."""
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from lhotse import CutSet, Recording

from audiolp.data.loader import LoaderConfig, make_dataloader, mix_sources
from audiolp.data.schema import make_caption_cut
from audiolp.data.precompute import precompute_features
from audiolp.features import FeatureConfig, compute_fbank, mel_bin_of_frequency

SR = 16_000


def sine(freq, seconds, sr=SR):
    t = np.arange(int(seconds * sr)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="module")
def cuts(tmp_path_factory):
    root = tmp_path_factory.mktemp("loader_audio")
    rng = np.random.default_rng(0)
    out = []
    for i in range(40):
        seconds = float(rng.uniform(1.0, 6.0))
        path = root / f"clip{i:02d}.wav"
        # Half the clips at 22.05 kHz: the schema resamples them to 16 kHz on load.
        sr = 22_050 if i % 2 else SR
        sf.write(path, sine(200 + 50 * i, seconds, sr) + 0.01 * rng.standard_normal(int(seconds * sr)).astype(np.float32), sr)
        source = ["src_a", "src_b"][i % 4 == 0]
        out.append(make_caption_cut(f"c{i:02d}", Recording.from_file(path), [f"a tone number {i}", f"tone {i}"],
                                    source=source, domain="sound", labels=[f"L{i % 3}"]))
    return CutSet.from_cuts(out)


@pytest.mark.parametrize("freq", [300.0, 1000.0, 4000.0])
def test_fbank_of_sine_peaks_in_expected_mel_bin(freq):
    feats = compute_fbank(sine(freq, 1.0))
    assert feats.shape == (100, 80)  # 1 s at a 10 ms hop, 80 mel bins
    peak = int(feats.mean(0).argmax())
    assert abs(peak - mel_bin_of_frequency(freq)) <= 1


def test_fbank_rejects_wrong_sampling_rate():
    with pytest.raises(ValueError, match="resample"):
        compute_fbank(sine(440, 0.5, 8000), sampling_rate=8000)


def test_batches_respect_max_duration_and_cover_every_cut_once(cuts):
    cfg = LoaderConfig(max_duration=12.0, num_buckets=2, spec_augment=False)
    seen = []
    for batch in make_dataloader(cuts, cfg, seed=1):
        assert batch["audio_seconds"] <= 12.0 + 1e-6
        n, t, d = batch["features"].shape
        assert d == 80 and n == len(batch["captions"]) == len(batch["feature_lens"])
        assert int(batch["feature_lens"].max()) == t
        # frames beyond each clip are zero
        for i, length in enumerate(batch["feature_lens"].tolist()):
            assert torch.all(batch["features"][i, length:] == 0)
        seen += batch["cut_ids"]
    assert sorted(seen) == sorted(cuts.ids)


def test_feature_lengths_match_durations(cuts):
    batch = next(iter(make_dataloader(cuts, LoaderConfig(max_duration=30.0, spec_augment=False), train=False)))
    for cid, length in zip(batch["cut_ids"], batch["feature_lens"].tolist()):
        assert abs(length - round(cuts[cid].duration * 100)) <= 1


def test_two_rank_sampler_splits_without_overlap(cuts):
    cfg = LoaderConfig(max_duration=10.0, num_buckets=2, spec_augment=False, drop_last=False)
    ids = []
    for rank in range(2):
        ids.append({cid for b in make_dataloader(cuts, cfg, seed=3, rank=rank, world_size=2) for cid in b["cut_ids"]})
    assert ids[0] and ids[1]
    assert not ids[0] & ids[1]
    assert len(ids[0] | ids[1]) >= len(cuts) - 4  # lhotse may drop a tail to keep ranks in step


def test_spec_augment_only_in_training(cuts):
    torch.manual_seed(0)
    cfg = LoaderConfig(max_duration=30.0, shuffle=False)
    train_batch = next(iter(make_dataloader(cuts, cfg, train=True)))
    eval_batch = next(iter(make_dataloader(cuts, cfg, train=False)))
    assert train_batch["cut_ids"] == eval_batch["cut_ids"]
    assert not torch.equal(train_batch["features"], eval_batch["features"])
    # SpecAugment fills whole mel bands / frame spans with one value: some band becomes constant in time.
    n = int(train_batch["feature_lens"][0])
    train_var = train_batch["features"][:, :n].var(dim=1)
    eval_var = eval_batch["features"][:, :n].var(dim=1)
    assert ((train_var < 1e-8) & (eval_var > 1e-3)).any()


def test_spec_augment_is_seeded_by_batch_and_leaves_global_rng_alone(cuts):
    """The same batch gets the same masks in any process and after any history (exact resume with workers, DDP);
    another epoch or seed gets other masks; the caller's RNG streams are untouched."""
    import random

    cfg = LoaderConfig(max_duration=30.0, shuffle=False)
    first = lambda loader: next(iter(loader))  # noqa: E731
    torch.manual_seed(0)
    a = first(make_dataloader(cuts, cfg, train=True))
    loader = make_dataloader(cuts, cfg, train=True)
    batch_cuts = CutSet.from_cuts(cuts[c] for c in a["cut_ids"])
    torch.manual_seed(123)
    random.seed(5)
    np.random.seed(5)
    state = (torch.random.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    b = loader.dataset[batch_cuts]  # what the DataLoader calls, here after another RNG history
    assert torch.equal(a["features"], b["features"])
    assert torch.equal(torch.random.get_rng_state(), state[0]) and random.getstate() == state[1]
    assert np.array_equal(np.random.get_state()[1], state[2])
    worker = first(torch.utils.data.DataLoader(make_dataloader(cuts, cfg, train=True).dataset,
                                               sampler=make_dataloader(cuts, cfg, train=True).sampler,
                                               batch_size=None, num_workers=1))
    assert torch.equal(worker["features"], a["features"])
    other_epoch = make_dataloader(cuts, cfg, train=True)
    other_epoch.dataset.epoch = 1
    assert not torch.equal(first(other_epoch)["features"], a["features"])
    assert not torch.equal(first(make_dataloader(cuts, cfg, seed=1, train=True))["features"], a["features"])


def test_unreadable_audio_is_skipped_and_named(cuts, tmp_path, caplog):
    import logging
    import shutil

    from audiolp.data.loader import CaptionBatchDataset

    picked = [cuts[i] for i in (0, 1, 2)]
    broken = []
    for c in picked[:2]:  # copies of two clips' files, then one truncated to a bare header, one removed
        src = c.recording.sources[0].source
        dst = tmp_path / f"copy_{c.id}.wav"
        shutil.copy(src, dst)
        broken.append(_repoint(c, dst))
    (tmp_path / f"copy_{picked[0].id}.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt ")
    (tmp_path / f"copy_{picked[1].id}.wav").unlink()
    batch_cuts = CutSet.from_cuts(broken + [picked[2]])
    ds = CaptionBatchDataset(LoaderConfig(), train=False)
    with caplog.at_level(logging.WARNING, logger="audiolp.data.loader"):
        batch = ds[batch_cuts]
    assert batch["cut_ids"] == [picked[2].id] and sorted(batch["skipped_cut_ids"]) == sorted(c.id for c in broken)
    assert batch["features"].shape[0] == 1 and batch["audio_seconds"] == pytest.approx(picked[2].duration)
    assert any(picked[0].id in r.getMessage() and "copy_" in r.getMessage() for r in caplog.records)
    empty = ds[CutSet.from_cuts(broken)]  # no clip readable: an empty batch that names them, for the trainer to skip
    assert empty["cut_ids"] == [] and sorted(empty["skipped_cut_ids"]) == sorted(c.id for c in broken)
    assert empty["features"].shape == (0, 0, 80) and empty["audio_seconds"] == 0.0
    strict = CaptionBatchDataset(LoaderConfig(skip_unreadable=False), train=False)
    with pytest.raises(Exception):
        strict[batch_cuts]


def _repoint(cut, path):
    """The same cut, its recording read from ``path``."""
    from dataclasses import replace

    rec = cut.recording
    return replace(cut, recording=replace(rec, sources=[replace(rec.sources[0], source=str(path))]))


def test_precomputed_features_match_on_the_fly(cuts, tmp_path):
    few = cuts.subset(first=6)
    stored = precompute_features(few, tmp_path, num_workers=0).to_eager()
    assert all(c.has_features for c in stored)
    cfg = LoaderConfig(max_duration=100.0, spec_augment=False, shuffle=False)
    a = next(iter(make_dataloader(stored, cfg, train=False)))
    b = next(iter(make_dataloader(few, LoaderConfig(max_duration=100.0, spec_augment=False, shuffle=False,
                                                    features="on_the_fly"), train=False)))
    assert a["cut_ids"] == b["cut_ids"]
    assert torch.equal(a["feature_lens"], b["feature_lens"])
    valid = b["features"] != 0
    assert torch.allclose(a["features"][valid], b["features"][valid], atol=0.1)  # lilcom is lossy


def test_precompute_resumes_by_shard_and_refuses_foreign_work(cuts, tmp_path):
    """Shards of 2 clips: a rerun after an interruption recomputes only the unfinished shard; the joined manifest
    keeps the input order; a folder made with another feature config or for other clips is refused, untouched."""
    import os

    from audiolp.data.precompute import FeatureStoreError

    few = cuts.subset(first=6)
    first = precompute_features(few, tmp_path, num_workers=0, shard_size=2).to_eager()
    archives = sorted(p.name for p in tmp_path.glob("fbank-*.lca"))
    assert archives == ["fbank-00000.lca", "fbank-00001.lca", "fbank-00002.lca"]
    assert [c.id for c in first] == [c.id for c in few]
    from audiolp.data.scale import select_scale

    # training on the feature manifest at a scale picks the same clips as on the audio manifest
    assert [c.id for c in select_scale(first, 3, seed=1)[0]] == [c.id for c in select_scale(few, 3, seed=1)[0]]
    # An interruption during shard 1: its archive was being written, its manifest never appeared.
    (tmp_path / "shard-00001.jsonl.gz").unlink()
    (tmp_path / "fbank-00001.lca").write_bytes(b"half a write")
    stamps = {n: os.stat(tmp_path / n).st_mtime_ns for n in ("fbank-00000.lca", "fbank-00002.lca")}
    again = precompute_features(few, tmp_path, num_workers=0, shard_size=2).to_eager()
    assert {n: os.stat(tmp_path / n).st_mtime_ns for n in stamps} == stamps  # finished shards were not redone
    assert [c.id for c in again] == [c.id for c in few]
    for a, b in zip(first, again):
        assert np.array_equal(a.load_features(), b.load_features())

    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(FeatureStoreError, match="feature_config.json"):
        precompute_features(few, tmp_path, FeatureConfig(num_mel_bins=64), num_workers=0, shard_size=2)
    with pytest.raises(FeatureStoreError, match="shard-00000.jsonl.gz"):
        precompute_features(cuts.subset(first=7).subset(last=6), tmp_path, num_workers=0, shard_size=2)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_precompute_leaves_out_unreadable_clips_and_records_absolute_paths(cuts, tmp_path, monkeypatch, caplog):
    """One clip's file is corrupt: it is left out, named in the log and in the shard's list, and a rerun reuses the
    finished shard. A relative out_dir still gives archive paths that work from another directory."""
    import logging
    import shutil

    few = list(cuts.subset(first=4))
    bad = tmp_path / "bad.wav"
    shutil.copy(few[1].recording.sources[0].source, bad)
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt ")
    few[1] = _repoint(few[1], bad)
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="audiolp.features"):
        stored = precompute_features(CutSet.from_cuts(few), "feats", num_workers=0, shard_size=2).to_eager()
    assert [c.id for c in stored] == [few[0].id, few[2].id, few[3].id]
    assert (tmp_path / "feats" / "shard-00000.unreadable.txt").read_text() == few[1].id
    assert any(few[1].id in r.getMessage() and "bad.wav" in r.getMessage() for r in caplog.records)
    assert all(Path(c.features.storage_path).is_absolute() for c in stored)
    again = precompute_features(CutSet.from_cuts(few), "feats", num_workers=0, shard_size=2).to_eager()
    assert [c.id for c in again] == [c.id for c in stored]
    monkeypatch.chdir("/")
    assert stored[0].load_features().shape[1] == 80


def test_cli_prepare_features(cuts, tmp_path, capsys):
    from audiolp.cli import main
    from audiolp.data.schema import load_manifest, save_manifest

    save_manifest(cuts.subset(first=5), tmp_path / "cuts.jsonl.gz")
    assert main(["prepare", "features", "--data", str(tmp_path / "cuts.jsonl.gz"), "--out", str(tmp_path / "fb"),
                 "--workers", "0", "--shard-size", "2"]) == 0
    assert "fbank of 5 clips" in capsys.readouterr().out
    stored = load_manifest(tmp_path / "fb")  # the folder resolves to its cuts_with_feats manifest
    assert [c.id for c in stored] == [c.id for c in cuts.subset(first=5)]
    assert all(c.has_features and c.num_features == 80 for c in stored)
    assert main(["prepare", "features", "--out", str(tmp_path / "fb2")]) == 2  # one line on stderr, naming --data
    assert "needs --data" in capsys.readouterr().err


def test_source_mixing_follows_weights(cuts):
    stream = mix_sources(cuts, {"src_a": 1.0, "src_b": 1.0}, seed=0)
    first = [c.supervisions[0].custom["source"] for _, c in zip(range(400), stream)]
    share_b = first.count("src_b") / len(first)
    # src_b is 10 of 40 clips; equal weights lift it to about half the stream.
    assert 0.4 < share_b < 0.6
    with pytest.raises(ValueError, match="not in the manifest"):
        mix_sources(cuts, {"nope": 1.0})


def test_single_bucket_falls_back_to_plain_duration_batches(cuts):
    cfg = LoaderConfig(max_duration=8.0, num_buckets=1, spec_augment=False)
    batches = list(make_dataloader(cuts, cfg, seed=0))
    assert all(b["audio_seconds"] <= 8.0 + 1e-6 for b in batches)
    assert sorted(cid for b in batches for cid in b["cut_ids"]) == sorted(cuts.ids)


def test_loader_workers_ignore_sigterm_so_iteration_survives_preemption_signal(cuts):
    """SLURM signals the whole process group on pre-emption: the workers must not die of it (the trainer, in the
    main process, handles the signal and still needs the batches in flight)."""
    import os
    import signal

    cfg = LoaderConfig(max_duration=8.0, num_buckets=2, spec_augment=False, num_workers=1)
    expected = sorted(cid for b in make_dataloader(cuts, LoaderConfig(max_duration=8.0, num_buckets=2,
                                                                      spec_augment=False), seed=0)
                      for cid in b["cut_ids"])
    it = iter(make_dataloader(cuts, cfg, seed=0))
    try:
        seen = list(next(it)["cut_ids"])
        pids = [w.pid for w in it._workers]
        assert pids
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        for b in it:
            seen += b["cut_ids"]
    finally:
        it._shutdown_workers()
    assert sorted(seen) == expected


def _noise_cut(root, name, seconds, sr=SR):
    x = (0.3 * np.random.default_rng(0).standard_normal(int(seconds * sr))).astype(np.float32)
    sf.write(root / f"{name}.wav", x, sr)
    return make_caption_cut(name, Recording.from_file(root / f"{name}.wav", recording_id=name), ["noise"],
                            source="s", domain="sound")


def test_spec_augment_works_on_each_clips_valid_frames_only(tmp_path):
    """A 1 s clip next to a 10 s one: its time masks stay within max_frames_mask_fraction of its own 100 frames,
    the padding stays exactly 0 (masks and time warp never touch it), and a clip too short for a time mask
    (50 ms) is left as is instead of crashing lhotse."""
    from audiolp.data.loader import CaptionBatchDataset
    from audiolp.features import SpecAugmentConfig

    batch_cuts = CutSet.from_cuts([_noise_cut(tmp_path, n, s) for n, s in (("short", 1.0), ("long", 10.0),
                                                                              ("tiny", 0.05))])
    ref = CaptionBatchDataset(LoaderConfig(spec_augment=False), train=False)[batch_cuts]
    i, k = ref["cut_ids"].index("short"), ref["cut_ids"].index("tiny")
    n, n_tiny = int(ref["feature_lens"][i]), int(ref["feature_lens"][k])
    assert (n, n_tiny) == (100, 5) and ref["features"].shape[1] == 1000
    for warp in (None, 80):
        aug_cfg = SpecAugmentConfig(p=1.0, time_warp_factor=warp)
        ds = CaptionBatchDataset(LoaderConfig(spec_augment_config=aug_cfg), train=True)
        fractions = []
        for epoch in range(15):
            ds.epoch = epoch
            b = ds[batch_cuts]
            assert b["cut_ids"] == ref["cut_ids"]
            assert torch.all(b["features"][i, n:] == 0) and torch.all(b["features"][k, n_tiny:] == 0)
            assert torch.equal(b["features"][k], ref["features"][k])
            if warp is None:  # a whole frame differs only under a time mask
                fractions.append((b["features"][i, :n] != ref["features"][i, :n]).all(-1).float().mean().item())
        if warp is None:
            assert max(fractions) <= aug_cfg.max_frames_mask_fraction + 1 / n
            assert max(fractions) > 0  # the short clip is augmented too


def test_source_weights_must_cover_every_source_and_be_valid(cuts):
    """Sources are src_a (30 clips) and src_b (10): leaving one out must be explicit, weights finite and >= 0, and a
    single positive source is that source repeated (lhotse mux needs two)."""
    from audiolp.data.loader import make_sampler

    with pytest.raises(ValueError, match=r"\['src_b'\].*0 to leave"):
        mix_sources(cuts, {"src_a": 1.0})
    with pytest.raises(ValueError, match="src_b"):
        mix_sources(cuts, {"src_a": 1.0, "src_b": -1.0})
    with pytest.raises(ValueError, match="src_a"):
        mix_sources(cuts, {"src_a": float("nan"), "src_b": 1.0})
    only_a = [c for _, c in zip(range(90), mix_sources(cuts, {"src_a": 1.0, "src_b": 0.0}))]
    assert len(only_a) == 90 and {c.supervisions[0].custom["source"] for c in only_a} == {"src_a"}
    sampler = make_sampler(cuts, LoaderConfig(max_duration=8.0, source_weights={"src_a": 2.0, "src_b": 0.0}))
    batches = [b for _, b in zip(range(5), sampler)]
    assert len(batches) == 5 and all(c.supervisions[0].custom["source"] == "src_a" for b in batches for c in b)


def test_loader_resamples_clips_not_at_the_feature_rate(tmp_path):
    """A cut straight from a 44.1 kHz file (not through make_caption_cut, which resamples) gets the same fbank as
    the same tone written at 16 kHz, alone and in a batch with a 16 kHz clip."""
    from lhotse import SupervisionSegment
    from lhotse.cut import MonoCut

    from audiolp.data.loader import CaptionBatchDataset

    def tone_cut(name, sr):
        sf.write(tmp_path / f"{name}.wav", sine(1000.0, 2.0, sr), sr)
        rec = Recording.from_file(tmp_path / f"{name}.wav", recording_id=name)
        sup = SupervisionSegment(id=name, recording_id=name, start=0, duration=rec.duration,
                                 custom={"caption": ["a tone"], "source": "s", "domain": "sound"})
        return MonoCut(id=name, start=0, duration=rec.duration, channel=0, recording=rec, supervisions=[sup])

    c16, c44 = tone_cut("a16k", SR), tone_cut("b44k", 44_100)
    assert c44.sampling_rate == 44_100
    ds = CaptionBatchDataset(LoaderConfig(spec_augment=False), train=False)
    want = ds[CutSet.from_cuts([c16])]["features"][0]
    alone = ds[CutSet.from_cuts([c44])]
    mixed = ds[CutSet.from_cuts([c16, c44])]
    for got in (alone["features"][0], mixed["features"][mixed["cut_ids"].index("b44k")]):
        assert got.shape == want.shape == (200, 80)
        assert int(got.mean(0).argmax()) == int(want.mean(0).argmax()) == pytest.approx(mel_bin_of_frequency(1000), abs=1)
        # bands that hold energy agree (near-silent bands sit at the log floor, where resampling noise dominates;
        # the first and last frames see the resampling filter's edges)
        loud = want.mean(0) > -10
        assert int(loud.sum()) >= 10
        assert torch.allclose(got[2:-2, loud], want[2:-2, loud], atol=0.3)


def test_spec_augment_time_warp_80_is_default_and_warps_only_long_clips_valid_frames(tmp_path):
    """Default time warp 80 (icefall AudioSet recipe, Auden) reaches lhotse through the loader: with the masks
    shrunk to one frame, a 10 s clip changes in far more frames than a mask can cover (the warp interpolates),
    its padding beside it stays 0, and a 1 s clip (100 frames < 2 x 80 + 2) is not warped."""
    from audiolp.data.loader import CaptionBatchDataset
    from audiolp.features import SpecAugmentConfig, build_spec_augment

    assert SpecAugmentConfig().time_warp_factor == 80
    assert LoaderConfig().spec_augment_config.time_warp_factor == 80
    batch_cuts = CutSet.from_cuts([_noise_cut(tmp_path, n, s) for n, s in (("short", 1.0), ("long", 10.0),
                                                                              ("mid", 4.0))])
    ref = CaptionBatchDataset(LoaderConfig(spec_augment=False), train=False)[batch_cuts]
    idx = {c: ref["cut_ids"].index(c) for c in ("short", "long", "mid")}
    lens = {c: int(ref["feature_lens"][i]) for c, i in idx.items()}
    # one time mask of at most 1 frame, no frequency mask: only the warp can change more than one frame
    one_frame = dict(p=1.0, num_feature_masks=0, num_frame_masks=1, frames_mask_size=1)
    changed = {}
    for warp in (80, None):
        ds = CaptionBatchDataset(LoaderConfig(spec_augment_config=SpecAugmentConfig(time_warp_factor=warp,
                                                                                    **one_frame)), train=True)
        counts = {c: [] for c in idx}
        for epoch in range(4):
            ds.epoch = epoch
            b = ds[batch_cuts]
            for c, i in idx.items():
                n = lens[c]
                assert torch.all(b["features"][i, n:] == 0), (warp, c)
                counts[c].append(int((b["features"][i, :n] != ref["features"][i, :n]).any(-1).sum()))
        changed[warp] = counts
    assert max(changed[None]["long"]) <= 1 and max(changed[None]["mid"]) <= 1
    assert max(changed[80]["short"]) <= 1  # too short to warp
    assert max(changed[80]["long"]) > 100 and max(changed[80]["mid"]) > 50
    with pytest.raises(ValueError, match=r"time_warp_factor=-1.*0 or None turns time warping off"):
        SpecAugmentConfig(time_warp_factor=-1)
    assert build_spec_augment(SpecAugmentConfig(time_warp_factor=0)).time_warp_factor == 0  # lhotse: 0 = off


def test_spec_augment_config_rejects_zero_time_masks():
    from audiolp.features import SpecAugmentConfig, build_spec_augment

    with pytest.raises(ValueError, match="num_frame_masks.*enabled=False"):
        SpecAugmentConfig(num_frame_masks=0)
    with pytest.raises(ValueError, match="num_frame_masks"):
        LoaderConfig(spec_augment_config={"num_frame_masks": 0})
    with pytest.raises(ValueError, match="max_frames_mask_fraction"):
        SpecAugmentConfig(max_frames_mask_fraction=0.0)
    assert build_spec_augment(SpecAugmentConfig(enabled=False, num_frame_masks=0)) is None


def test_precompute_names_first_differing_clip_of_a_foreign_shard(cuts, tmp_path):
    from audiolp.data.precompute import FeatureStoreError

    few = cuts.subset(first=3)
    precompute_features(few, tmp_path, num_workers=0, shard_size=3)
    other = CutSet.from_cuts([cuts[0], cuts[1], cuts[5]])
    with pytest.raises(FeatureStoreError, match=r"shard-00000.jsonl.gz.*position 2.*'c02'.*'c05'.*\(3 vs 3 clips\)"):
        precompute_features(other, tmp_path, num_workers=0, shard_size=3)
    with pytest.raises(FeatureStoreError, match=r"position 2.*'c02'.*\(end\).*\(3 vs 2 clips\)"):
        precompute_features(cuts.subset(first=2), tmp_path, num_workers=0, shard_size=3)
