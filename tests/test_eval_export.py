"""HEAR module and X-ARES encoder over a tiny random Zipformer saved as a run dir."""
import numpy as np
import pytest
import torch

from audiolp.eval import hear
from audiolp.eval.export import AudiolpEncoder, frame_grid, load_frozen_encoder
from audiolp.models.io import CheckpointError, save_encoder_config, save_weights
from audiolp.models.zipformer import Zipformer, ZipformerConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    torch.manual_seed(0)
    cfg = ZipformerConfig.preset("zipformer_tiny")
    enc = Zipformer(cfg).eval()
    d = tmp_path_factory.mktemp("run")
    save_weights(enc.state_dict(), d / "encoder.safetensors")
    save_encoder_config(d, cfg)
    return d


@pytest.fixture(scope="module")
def audio():
    g = torch.Generator().manual_seed(1)
    return 0.1 * torch.randn(3, 24000, generator=g)  # 1.5 s each


def test_hear_shapes_and_timestamps(run_dir, audio):
    model = hear.load_model(str(run_dir), device="cpu")
    assert model.sample_rate == 16000
    assert model.scene_embedding_size == model.timestamp_embedding_size == 64
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    # 1.5 s -> 150 fbank frames -> (150 - 7) // 2 = 71 at 50 Hz -> ceil(71 / 2) = 36 at 25 Hz
    assert emb.shape == (3, 36, 64) and ts.shape == (3, 36)
    np.testing.assert_allclose(ts[0, :3].numpy(), [55.0, 95.0, 135.0])
    np.testing.assert_allclose(np.diff(ts.numpy(), axis=1), 40.0)
    assert float(ts[0, -1]) < 1500.0  # the last frame's centre lies inside the sound
    scene = hear.get_scene_embeddings(audio, model)
    assert scene.shape == (3, 64)
    torch.testing.assert_close(scene, emb.mean(1))


def test_batch_does_not_leak(run_dir, audio):
    model = hear.load_model(str(run_dir), device="cpu")
    together, _ = hear.get_timestamp_embeddings(audio[:2], model)
    for i in range(2):
        alone, _ = hear.get_timestamp_embeddings(audio[i:i + 1], model)
        torch.testing.assert_close(together[i:i + 1], alone, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(together[0], together[1])  # different sounds, different frames


def test_weights_file_and_xares_encoder(run_dir, audio):
    enc = AudiolpEncoder(run_dir / "encoder.safetensors")
    assert type(enc).__name__.endswith("Encoder")
    assert (enc.output_dim, enc.sampling_rate, enc.hop_size_in_ms) == (64, 16000, 40.0)
    out = enc(audio)
    assert out.shape == (3, 36, 64)
    ref, _ = hear.get_timestamp_embeddings(audio, hear.load_model(str(run_dir), device="cpu"))
    torch.testing.assert_close(out, ref)
    enc.train()
    assert not enc.encoder.training  # frozen: no dropout even if a benchmark calls .train()


def test_wrong_paths(tmp_path, run_dir):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        hear.load_model(str(tmp_path / "nope"))
    with pytest.raises(CheckpointError, match="encoder_config.json"):
        load_frozen_encoder(tmp_path)
    lone = tmp_path / "w.safetensors"
    lone.write_bytes((run_dir / "encoder.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="beside it"):
        load_frozen_encoder(lone)
    with pytest.raises(ValueError, match="n_sounds, n_samples"):
        hear.get_scene_embeddings(torch.zeros(1, 1, 16000), hear.load_model(str(run_dir), device="cpu"))


def test_frame_centres_match_the_front_end():
    """The conv front-end's receptive field: 50 Hz frame m depends on fbank frames centred at 2m + 4, which the
    timestamp formula assumes (output frame n averages 50 Hz frames 2n, 2n + 1: centre 4n + 5.5 fbank frames)."""
    torch.manual_seed(0)
    enc = Zipformer(ZipformerConfig.preset("zipformer_tiny")).eval()
    feats = torch.randn(1, 60, 80, requires_grad=True)
    x, _ = enc.encoder_embed(feats, torch.tensor([60]))
    for m in (3, 10):
        (g,) = torch.autograd.grad(x[0, m].sum(), feats, retain_graph=True)
        support = torch.nonzero(g[0].abs().sum(1) > 0).flatten()
        assert (support.min() + support.max()) / 2 == 2 * m + 4
    grid = frame_grid(enc)
    assert grid.first_centre_ms == (4 * 0 + 5.5) * 10 and grid.hop_ms == 40.0
