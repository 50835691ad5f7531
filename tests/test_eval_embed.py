"""The embedding cache and the reference probe, on the tiny MiniStew's held-out tasks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from audiolp.data.tasks import load_task_registry, load_task_split
from audiolp.eval.embed import EmbeddingCache, FbankFrames, encoder_fingerprint, extract
from audiolp.eval.probe import bootstrap_interval, logistic_probe, probe_registry
from audiolp.models.zipformer import Zipformer, ZipformerConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_encoder(seed: int = 0) -> Zipformer:
    torch.manual_seed(seed)
    return Zipformer(ZipformerConfig.preset("zipformer_tiny")).eval()


def split(tiny_ministew, task: str, name: str):
    spec = load_task_registry(tiny_ministew / "tasks.json")[task]
    return list(load_task_split(spec, name, tiny_ministew))


def test_frames_match_the_encoder_on_each_clip_alone(tiny_ministew):
    cuts = split(tiny_ministew, "voice_id", "test")[:5]
    enc = tiny_encoder()
    emb = extract(enc, cuts, max_duration=30.0)
    assert emb.ids == [c.id for c in cuts] and emb.dim == enc.output_dim
    from audiolp.features import compute_fbank

    for i, c in enumerate(cuts):
        fb = compute_fbank(c.load_audio(), c.sampling_rate)
        with torch.no_grad():
            ref, n = enc(fb[None], torch.tensor([fb.shape[0]]))
        got = emb.frames_of(i).astype(np.float32)
        assert got.shape == (int(n), enc.output_dim)  # batched with longer clips, the padding never leaks
        # All but the last two frames: lhotse computes a batch's fbank on zero-padded waveforms, so the last fbank
        # frame of a shorter clip differs from the clip alone (training sees the same); float16 storage.
        np.testing.assert_allclose(got[:-2], ref[0, :int(n) - 2].numpy(), atol=2e-2, rtol=1e-2)
    x, lens = emb.padded()
    assert x.shape == (5, int(lens.max()), enc.output_dim) and float(x[lens.argmin(), int(lens.min()):].abs().sum()) == 0
    ms = emb.mean_std()
    np.testing.assert_allclose(ms[2, :enc.output_dim], emb.frames_of(2).astype(np.float32).mean(0), rtol=1e-5)


def test_cache_is_reused_without_reading_audio_and_invalidated_by_new_weights(tiny_ministew, tmp_path, monkeypatch):
    cuts = split(tiny_ministew, "pitch_level", "val")
    enc = tiny_encoder()
    first = EmbeddingCache(tmp_path / "cache", chunk_clips=4, progress=False)
    a = first.get(enc, cuts, name="pitch/val")
    assert first.extractions == -(-len(cuts) // 4)  # one per part of 4 clips
    # A second evaluation of the same weights reads the stored parts: any audio read would fail here.
    from lhotse import Recording

    def no_audio(*args, **kwargs):
        raise AssertionError("audio was read although the embeddings are cached")

    monkeypatch.setattr(Recording, "load_audio", no_audio)
    again = EmbeddingCache(tmp_path / "cache", chunk_clips=4, progress=False)
    b = again.get(tiny_encoder(), cuts, name="pitch/val")  # a new object with the same weights
    assert again.extractions == 0 and b.ids == a.ids and np.array_equal(b.frames, a.frames)
    monkeypatch.undo()
    # Any changed weight is another encoder: new fingerprint, new extraction.
    changed = tiny_encoder()
    with torch.no_grad():
        next(changed.parameters()).view(-1)[0] += 1e-3
    assert encoder_fingerprint(changed) != encoder_fingerprint(enc)
    third = EmbeddingCache(tmp_path / "cache", chunk_clips=4, progress=False)
    third.get(changed, cuts)
    assert third.extractions > 0


def test_an_interrupted_extraction_resumes_at_the_missing_part(tiny_ministew, tmp_path):
    cuts = split(tiny_ministew, "pitch_level", "train")[:10]
    enc = tiny_encoder()
    cache = EmbeddingCache(tmp_path, chunk_clips=4, progress=False)
    full = cache.get(enc, cuts)
    where = cache.entry_dir(enc, cuts)
    (where / "part-00001.json").unlink()  # as if killed while writing the second part
    again = EmbeddingCache(tmp_path, chunk_clips=4, progress=False)
    assert np.array_equal(again.get(enc, cuts).frames, full.frames) and again.extractions == 1


def test_reference_probe_on_fbank_beats_chance_and_its_interval_covers_it(tiny_ministew, tmp_path):
    results = probe_registry(FbankFrames(), tiny_ministew / "tasks.json",
                             EmbeddingCache(tmp_path, progress=False), tasks=["voice_id", "pitch_level"])
    for r in results:
        lo, hi = r.interval()
        assert lo <= r.test <= hi and r.n_test == len(r.test_correct) and r.setting["C"] > 0
    assert np.mean([r.test for r in results]) > np.mean([r.chance for r in results]) + 0.15


def test_logistic_probe_on_separable_and_single_class_data():
    from audiolp.eval.embed import Embeddings

    rng = np.random.default_rng(0)

    def make(n):
        labels = [["a"] if i % 2 else ["b"] for i in range(n)]
        frames = [rng.normal(size=(3, 4)) + (5.0 if i % 2 else -5.0) for i in range(n)]
        return Embeddings(ids=[str(i) for i in range(n)], frames=np.concatenate(frames).astype(np.float16),
                          offsets=np.arange(0, 3 * n + 1, 3), labels=labels)

    r = logistic_probe(make(20), make(10), make(10), ["a", "b"], task="toy")
    assert r.test == 1.0 and r.val == 1.0 and r.chance == 0.5 and r.interval() == (1.0, 1.0)
    one = make(4)
    one.labels = [["a"]] * 4
    with pytest.raises(ValueError, match="train split has 1 class"):
        logistic_probe(one, make(4), make(4), ["a", "b"], task="toy")
    bad = make(4)
    bad.labels[0] = ["z"]
    with pytest.raises(ValueError, match=r"label \['z'\] outside"):
        logistic_probe(make(4), bad, make(4), ["a", "b"], task="toy")


def test_bootstrap_interval_of_a_mean_over_tasks():
    # One task all right, one all wrong: every replicate averages to exactly 0.5.
    assert bootstrap_interval([np.ones(10), np.zeros(30)]) == (0.5, 0.5)
    lo, hi = bootstrap_interval([np.r_[np.ones(50), np.zeros(50)]], n_boot=4000)
    assert lo < 0.5 < hi and hi - lo == pytest.approx(2 * 1.96 * 0.05, abs=0.02)  # binomial standard error
