"""The trainer on small real data (synthetic wav clips through the real loader) and the tiny Zipformer, on CPU."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from lhotse import Recording

from audiolp.data.schema import make_caption_cut, save_manifest

# --------------------------------------------------------------------------------------------------------------
# Small real corpus: three sound kinds, each with its own captions and labels, 1.0-1.9 s.
# --------------------------------------------------------------------------------------------------------------
_KINDS = {
    "hum": (["a low steady hum", "a deep electrical hum"], ["hum", "tonal"]),
    "beep": (["a high pitched beep", "a shrill electronic beep"], ["beep", "tonal"]),
    "hiss": (["white noise hissing", "a loud static hiss"], ["noise"]),
}


def _clip(kind: str, i: int, sr: int = 16000, equal: bool = False) -> np.ndarray:
    rng = np.random.default_rng(100 + i)
    n = sr if equal else int(sr * (1.0 + 0.1 * (i % 10)))
    t = np.arange(n) / sr
    if kind == "hum":
        x = 0.5 * np.sin(2 * np.pi * (150 + 10 * i) * t)
    elif kind == "beep":
        x = 0.5 * np.sin(2 * np.pi * (2000 + 50 * i) * t) * (np.sin(2 * np.pi * 4 * t) > 0)
    else:
        x = 0.3 * rng.standard_normal(n)
    return (x + 0.01 * rng.standard_normal(n)).astype(np.float32)


def make_corpus(out_dir: Path, per_kind: int = 8, equal: bool = False) -> Path:
    """24 clips of 1.0-1.9 s (equal=True: all 1.0 s)."""
    out_dir = Path(out_dir)
    (out_dir / "wav").mkdir(parents=True, exist_ok=True)
    cuts = []
    for kind, (caps, labels) in _KINDS.items():
        for i in range(per_kind):
            path = out_dir / "wav" / f"{kind}{i}.wav"
            sf.write(path, _clip(kind, i, equal=equal), 16000)
            rec = Recording.from_file(path, recording_id=f"{kind}{i}")
            cuts.append(make_caption_cut(f"{kind}{i}", rec, caps, source=f"synth_{kind}", domain="sound",
                                         labels=labels))
    return save_manifest(cuts, out_dir / "cuts.jsonl.gz")


_OBJ_CFG = {
    # A frozen pretrained text side (MiniLM): the audio side and both projections learn; fast on CPU.
    "contrastive": {"proj_dim": 32, "max_text_tokens": 16, "text_trainable": False},
    "captioning": {"num_layers": 1, "d_model": 64, "num_heads": 2, "ffn_dim": 128, "max_caption_tokens": 16},
    "tagging": {},
}


def base_cfg(manifest: Path, run_dir: Path, objective: str, **kw):
    from audiolp.train.config import TrainConfig

    d = dict(
        objective=objective,
        objective_config=dict(_OBJ_CFG[objective]),
        model="zipformer_tiny",
        data=str(manifest),
        run_dir=str(run_dir),
        loader={"max_duration": 8.0, "num_buckets": 2, "spec_augment": False},
        optim={"name": "adamw", "lr": 2e-3, "warmup_batches": 2, "total_steps": 100},
        max_steps=10,
        log_every=1,
        checkpoint_every=5,
        keep_last=2,
        device="cpu",
        progress=False,
    )
    d.update(kw)
    # The test corpus has sub-second clips: only the encoder's own minimum applies.
    d["loader"] = {"min_clip_seconds": None, **d["loader"]}
    return TrainConfig.from_preset("demo_cpu", d)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("trainer_corpus"))


@pytest.fixture(scope="module")
def equal_corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("trainer_corpus_equal"), equal=True)


def _losses(run_dir: Path) -> list[float]:
    res = json.loads((Path(run_dir) / "results.json").read_text())
    return [loss for _, loss in res["loss_curve"]]


# --------------------------------------------------------------------------------------------------------------
# Config and state serialisation
# --------------------------------------------------------------------------------------------------------------
def test_config_json_round_trip_and_errors(tmp_path):
    from audiolp.data.loader import LoaderConfig
    from audiolp.train.config import TrainConfig
    from audiolp.train.optim import OptimConfig

    cfg = base_cfg(Path("m.jsonl.gz"), tmp_path, "captioning", scale="4M", ema_decay=0.99)
    assert isinstance(cfg.loader, LoaderConfig) and cfg.loader.max_duration == 8.0
    assert isinstance(cfg.optim, OptimConfig) and cfg.optim.betas == (0.9, 0.98)
    back = TrainConfig.load(cfg.save(tmp_path / "config.json"))
    assert back == cfg and back.to_json() == cfg.to_json()
    # A tuple given from Python comes back from JSON as a list: the same config, so a resume must accept it.
    tup = base_cfg(Path("m.jsonl.gz"), tmp_path, "tagging", model_overrides={"num_encoder_layers": (1, 1, 1, 1, 1, 1)})
    assert TrainConfig.load(tup.save(tmp_path / "tuple.json")).diff(tup) == {}
    assert tup.diff(base_cfg(Path("m.jsonl.gz"), tmp_path, "tagging"))["model_overrides.num_encoder_layers"] == (
        [1, 1, 1, 1, 1, 1], None)
    with pytest.raises(ValueError, match="max_step"):
        TrainConfig.from_dict({"max_step": 3})
    with pytest.raises(ValueError, match="loader.*max_durationn"):
        TrainConfig.from_dict({"loader": {"max_durationn": 3}})
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp16")


def test_config_feeds_encoder_and_objective(tmp_path):
    from audiolp.train.config import TrainConfig
    from audiolp.train.data import objective_config_for

    cfg = TrainConfig(objective="captioning", model="zipformer_tiny", text_model="my/tok", seed=7,
                      model_overrides={"dropout": 0.0}, optim={"name": "adamw"})
    z = cfg.encoder_config()
    assert z.attention_scaling is True and z.dropout == 0.0 and z.encoder_dim == (32, 48, 64, 48)
    assert TrainConfig(model="zipformer_tiny").encoder_config().attention_scaling is False  # ScaledAdam
    oc = objective_config_for(cfg)
    assert oc["tokenizer"] == "my/tok" and oc["seed"] == 7
    oc = objective_config_for(TrainConfig(objective="contrastive", text_model="x", objective_config={"seed": 3}))
    assert oc["text_model"] == "x" and oc["seed"] == 3  # an explicit objective seed is kept
    with pytest.raises(ValueError, match="text model in one place"):
        objective_config_for(TrainConfig(objective="contrastive", text_model="x", objective_config={"text_model": "y"}))
    with pytest.raises(ValueError, match="model_overrides.*dropoutt"):
        TrainConfig(model="zipformer_tiny", model_overrides={"dropoutt": 0.0}).encoder_config()
    with pytest.raises(ValueError, match="attention_scaling"):
        TrainConfig(model="zipformer_tiny", model_overrides={"attention_scaling": True}).encoder_config()


def test_flatten_state_round_trips_an_optimizer(tmp_path):
    from audiolp.train.checkpoint import load_state, save_state

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.9))
    for _ in range(2):
        model(torch.randn(5, 4)).pow(2).sum().backward()
        opt.step()
    state = {"opt": opt.state_dict(), "tup": (1, "a", 2.5), "ints": {3: "x", 7: [1, 2]}, "none": None}
    save_state(state, tmp_path / "s")
    back = load_state(tmp_path / "s")
    assert back["tup"] == (1, "a", 2.5) and back["ints"] == {3: "x", 7: [1, 2]} and back["none"] is None
    assert back["opt"]["param_groups"][0]["betas"] == (0.8, 0.9)
    assert set(back["opt"]["state"]) == {0, 1, 2, 3}
    for k, st in opt.state_dict()["state"].items():
        for name, v in st.items():
            assert torch.equal(back["opt"]["state"][k][name], v), (k, name)
    opt2 = torch.optim.AdamW(model.parameters(), lr=1e-2)
    opt2.load_state_dict(back["opt"])  # loads into a fresh optimizer
    # Files are JSON + safetensors only: nothing to unpickle.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json", "s.safetensors"]


def test_shared_weights_are_stored_once_and_restored(tmp_path):
    from audiolp.train.checkpoint import load_weights, save_weights

    emb = torch.nn.Embedding(5, 3)
    head = torch.nn.Linear(3, 5, bias=False)
    head.weight = emb.weight  # tied, as caption decoders do
    sd = {"decoder.emb.weight": emb.weight, "decoder.head.weight": head.weight, "encoder.x": torch.ones(2)}
    save_weights(sd, tmp_path / "w.safetensors")
    back = load_weights(tmp_path / "w.safetensors")
    assert set(back) == set(sd) and torch.equal(back["decoder.head.weight"], emb.weight.detach())
    assert set(load_weights(tmp_path / "w.safetensors", prefix="encoder.")) == {"x"}


# --------------------------------------------------------------------------------------------------------------
# Crash safety
# --------------------------------------------------------------------------------------------------------------
def test_crash_mid_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    import audiolp.train.checkpoint as ck

    root = tmp_path / "checkpoints"
    w1 = {"encoder.w": torch.arange(6.0).reshape(2, 3)}
    ck.write_checkpoint(root, 1, {"model": w1, "trainer": {"step": 1}})
    assert (root / "latest").read_text().strip() == "step-00000001"

    real = ck.save_state

    def crash(obj, stem):  # the model file is written, then the process "dies" while writing the rest
        real(obj, stem)
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(ck, "save_state", crash)
    with pytest.raises(KeyboardInterrupt):
        ck.write_checkpoint(root, 2, {"model": {"encoder.w": torch.zeros(2, 3)}, "trainer": {"step": 2}})
    monkeypatch.undo()
    assert (root / "latest").read_text().strip() == "step-00000001"
    assert not (root / "step-00000002").exists()
    assert ck.latest_checkpoint(root).name == "step-00000001"
    parts = ck.read_checkpoint(ck.latest_checkpoint(root), ("model", "trainer"))
    assert torch.equal(parts["model"]["encoder.w"], w1["encoder.w"]) and parts["trainer"] == {"step": 1}

    # A hard kill leaves a temp dir behind: it is never read, and it is cleaned on the next start.
    stale = root / ".tmp-step-00000003-999"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"partial")
    assert [p.name for p in ck.list_checkpoints(root)] == ["step-00000001"]
    ck.remove_stale_temp(root)
    assert not stale.exists()

    # Re-saving step 1 and dying between moving the old copy aside and moving the new one in. An exception: the
    # old copy goes back at once.
    real_replace, calls = ck.os.replace, []

    def replace_then_die(a, b):
        calls.append(b)
        if len(calls) == 2:  # the second rename of the re-save
            raise KeyboardInterrupt("simulated crash")
        return real_replace(a, b)

    monkeypatch.setattr(ck.os, "replace", replace_then_die)
    with pytest.raises(KeyboardInterrupt):
        ck.write_checkpoint(root, 1, {"model": {"encoder.w": torch.zeros(2, 3)}, "trainer": {"step": 1}})
    monkeypatch.undo()
    assert [c.name for c in calls[1:]] == ["step-00000001", "step-00000001"]  # the failed move in, the move back
    parts = ck.read_checkpoint(ck.latest_checkpoint(root), ("model", "trainer"))
    assert torch.equal(parts["model"]["encoder.w"], w1["encoder.w"])
    # A hard kill at the same point leaves the old copy aside and the new one unpublished: the next start puts
    # the old copy back and removes the rest.
    real_replace(root / "step-00000001", root / ".tmp-old-step-00000001-999")
    (root / ".tmp-step-00000001-999").mkdir()
    ck.remove_stale_temp(root)
    assert ck.latest_checkpoint(root).name == "step-00000001" and not list(root.glob(".tmp-*"))
    parts = ck.read_checkpoint(ck.latest_checkpoint(root), ("model", "trainer"))
    assert torch.equal(parts["model"]["encoder.w"], w1["encoder.w"])  # the old copy, whole

    # keep_last pruning keeps the newest ones and never the one `latest` names.
    for s in (4, 5, 6):
        ck.write_checkpoint(root, s, {"model": w1, "trainer": {"step": s}})
    ck.prune_checkpoints(root, keep_last=2)
    assert [p.name for p in ck.list_checkpoints(root)] == ["step-00000005", "step-00000006"]


# --------------------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------------------
# Steps, extra config, and the factor by which the mean of the last 5 losses must lie below the mean of the first 3.
# Measured (seed 0, first-3 mean -> last-5 mean): contrastive 1.53 -> 0.81 (chance with 4-6 clips ~1.6),
# captioning 10.12 -> 4.79, tagging 0.78 -> 0.09.
_FALLS = {
    # drop_last: a 1-clip last batch has no negatives (loss 0) and would flatter the curve.
    "contrastive": (20, {"loader": {"max_duration": 8.0, "num_buckets": 2, "spec_augment": False, "drop_last": True}},
                    0.75),
    "captioning": (16, {"optim": {"name": "adamw", "lr": 5e-3, "warmup_batches": 2, "total_steps": 100}}, 0.7),
    "tagging": (12, {}, 0.5),
}


@pytest.mark.parametrize("objective", sorted(_FALLS))
def test_loss_falls_for_each_objective(corpus, tmp_path, objective):
    from audiolp.train.trainer import train

    steps, extra, factor = _FALLS[objective]
    run = train(base_cfg(corpus, tmp_path / "run", objective, max_steps=steps, checkpoint_every=100, **extra))
    losses = _losses(run)
    assert len(losses) == steps
    first, last = np.mean(losses[:3]), np.mean(losses[-5:])
    assert last < factor * first, (objective, losses)
    res = json.loads((run / "results.json").read_text())
    assert res["completed"] and res["steps"] == steps and res["throughput_audio_s_per_s"] > 0
    assert res["peak_memory_bytes"] > 0 and res["wall_time_s"] > 0
    assert any((run / "tb").glob("events.out.tfevents.*"))
    assert (run / "encoder.safetensors").exists() and (run / "encoder_config.json").exists()
    assert (run / "checkpoints" / "latest").read_text().strip() == f"step-{steps:08d}"


def test_frozen_encoder_keeps_its_weights_and_trains_the_heads(corpus, tmp_path, tagging_run):
    """freeze_encoder (LiT, a decoder or an LLM adapter on a pretrained encoder): the encoder leaves the run exactly
    as it came in, the heads move, and the loss still falls."""
    from audiolp.models.io import load_weights
    from audiolp.train.trainer import train

    src = tagging_run / "encoder.safetensors"
    run = train(base_cfg(corpus, tmp_path / "lit", "contrastive", max_steps=12, checkpoint_every=100,
                         init_from=str(src), freeze_encoder=True,
                         optim={"name": "scaled_adam", "lr": 0.03, "warmup_batches": 2}))  # as the source trained
    before, after = load_weights(src), load_weights(run / "encoder.safetensors")
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    res = json.loads((run / "results.json").read_text())
    assert res["num_trainable_params"] < res["num_params"] - sum(v.numel() for v in before.values()) + 1
    losses = _losses(run)
    assert np.mean(losses[-4:]) < np.mean(losses[:3])



def test_frozen_encoder_refuses_an_optimiser_that_would_change_its_attention(corpus, tmp_path, tagging_run):
    """The tagging run trained with ScaledAdam (no q.k scaling); AdamW would switch the frozen encoder's scaling on."""
    from audiolp.train.trainer import train

    with pytest.raises(ValueError, match="attention_scaling=False.*set optim.name='scaled_adam'"):
        train(base_cfg(corpus, tmp_path / "lit", "tagging", max_steps=2, init_from=str(tagging_run),
                       freeze_encoder=True, optim={"name": "adamw", "lr": 1e-3}))

@pytest.fixture(scope="module")
def tagging_run(corpus, tmp_path_factory):
    """One uninterrupted run with everything that carries state: SpecAugment and dropout (RNG), EMA,
    grad accumulation, epochs crossed mid-step, Eden/ScaledAdam state."""
    from audiolp.train.trainer import train

    cfg = _resume_cfg(corpus, tmp_path_factory.mktemp("full") / "run")
    return train(cfg)


def _resume_cfg(corpus, run_dir):
    return base_cfg(corpus, run_dir, "tagging", max_steps=8, grad_accum=2, ema_decay=0.9, checkpoint_every=5,
                    loader={"max_duration": 8.0, "num_buckets": 2, "spec_augment": True},
                    optim={"name": "scaled_adam", "lr": 0.03, "warmup_batches": 4})


def test_stop_and_resume_gives_identical_weights(corpus, tmp_path, tagging_run):
    from safetensors.torch import load_file

    from audiolp.train.trainer import train

    cfg = _resume_cfg(corpus, tmp_path / "run")
    ck = tmp_path / "run" / "checkpoints"

    def position(step):
        st = json.loads((ck / f"step-{step:08d}" / "trainer.json").read_text())["state"]
        return st["epoch"], st["consumed"]

    train(cfg, stop_after=2)  # a pre-emption after step 2: mid-epoch (4 of the 6 batches of epoch 0)
    assert (ck / "latest").read_text().strip() == "step-00000002" and position(2) == (0, 4)
    assert not json.loads((tmp_path / "run" / "results.json").read_text())["completed"]
    # Resumed with a DataLoader worker (SpecAugment is seeded per batch, so the worker count may change).
    cfg.loader.num_workers = 1
    train(cfg, stop_after=3)  # resumed, and stopped again exactly at the end of epoch 0
    assert position(3) == (0, 6)
    train(cfg)  # resumes from step 3 and crosses into epochs 1 and 2
    ref = tagging_run / "checkpoints" / "step-00000008"
    got = ck / "step-00000008"
    for name in ("model.safetensors", "ema.safetensors", "optimizer.safetensors"):
        a, b = load_file(str(ref / name)), load_file(str(got / name))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)  # bit for bit
    ref_losses, got_losses = _losses(tagging_run), _losses(tmp_path / "run")
    assert got_losses == ref_losses  # every logged step, across the three processes
    state = json.loads((got / "trainer.json").read_text())["state"]
    assert state["step"] == 8 and state["epoch"] >= 2  # crossed epoch boundaries
    # A different config in the same run dir is refused, naming the field.
    bad = _resume_cfg(corpus, tmp_path / "run")
    bad.seed = 1
    with pytest.raises(ValueError, match="seed"):
        train(bad)
    # A config.json this version cannot read (a field from another audiolp version) is named, and left as it was.
    saved = tmp_path / "run" / "config.json"
    d = json.loads(saved.read_text())
    d["loader"]["feature_config"]["device"] = "cpu"
    saved.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="config.json this audiolp cannot read.*device"):
        train(_resume_cfg(corpus, tmp_path / "run"))
    assert json.loads(saved.read_text()) == d


def test_sigterm_checkpoints_and_resumes_exactly(corpus, tmp_path, tagging_run, monkeypatch):
    """A SIGTERM arriving during step 3 (as a scheduler's pre-emption notice): the step finishes, a checkpoint is
    written, train() returns; rerunning resumes and ends bit for bit where the uninterrupted run ends."""
    import os
    import signal

    from safetensors.torch import load_file

    from audiolp.train.trainer import Trainer, train

    original = Trainer.accumulate_gradients

    def accumulate_with_a_signal(self, micro):
        if self.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, micro)

    cfg = _resume_cfg(corpus, tmp_path / "run")
    monkeypatch.setattr(Trainer, "accumulate_gradients", accumulate_with_a_signal)
    train(cfg)
    monkeypatch.setattr(Trainer, "accumulate_gradients", original)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone again
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert (res["steps"], res["completed"], res["stopped_by_signal"]) == (3, False, "SIGTERM")
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text().strip() == "step-00000003"
    train(cfg)
    a = load_file(str(tagging_run / "checkpoints" / "step-00000008" / "model.safetensors"))
    b = load_file(str(tmp_path / "run" / "checkpoints" / "step-00000008" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "run" / "results.json").read_text())["stopped_by_signal"] is None


def test_sigterm_to_the_whole_job_with_loader_workers(corpus, tmp_path, tagging_run, monkeypatch):
    """A scheduler's pre-emption signals every process of the job, DataLoader workers included: the workers ignore
    it, the trainer finishes the step, checkpoints and shuts them down; the rerun ends where the uninterrupted run
    ends."""
    import os
    import signal

    from safetensors.torch import load_file

    from audiolp.train.trainer import Trainer, train

    original = Trainer.accumulate_gradients
    workers = []

    def accumulate_with_a_job_signal(self, micro):
        if self.step == 2:
            workers.extend(w.pid for w in self.stream._it._workers)  # the live DataLoader workers
            for pid in workers + [os.getpid()]:
                os.kill(pid, signal.SIGTERM)
        return original(self, micro)

    cfg = _resume_cfg(corpus, tmp_path / "run")
    cfg.loader.num_workers = 1
    monkeypatch.setattr(Trainer, "accumulate_gradients", accumulate_with_a_job_signal)
    train(cfg)
    monkeypatch.setattr(Trainer, "accumulate_gradients", original)
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert len(workers) == 1 and (res["steps"], res["stopped_by_signal"]) == (3, "SIGTERM")
    train(cfg)
    a = load_file(str(tagging_run / "checkpoints" / "step-00000008" / "model.safetensors"))
    b = load_file(str(tmp_path / "run" / "checkpoints" / "step-00000008" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def _train_with_sigterm_on_rank_1(cfg, at_step: int):
    """Runs in each spawned rank: only rank 1 receives a SIGTERM, during step ``at_step + 1``."""
    import os
    import signal

    from audiolp.train.trainer import Trainer, train

    original = Trainer.accumulate_gradients

    def accumulate(self, micro):
        if self.info.rank == 1 and self.step == at_step:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, micro)

    Trainer.accumulate_gradients = accumulate
    train(cfg)


def test_sigterm_on_one_rank_stops_every_rank_at_the_same_step(equal_corpus, tmp_path):
    from audiolp.train.distributed import spawn_local

    cfg = base_cfg(equal_corpus, tmp_path / "run", "tagging", max_steps=6, checkpoint_every=100,
                   loader={"max_duration": 3.0, "num_buckets": 2, "spec_augment": False})
    spawn_local(_train_with_sigterm_on_rank_1, 2, cfg, 1, threads_per_proc=1)
    res = json.loads((tmp_path / "run" / "results.json").read_text())  # written by rank 0, which got no signal
    assert (res["steps"], res["completed"], res["stopped_by_signal"]) == (2, False, "on another rank")
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text().strip() == "step-00000002"


def test_unreadable_clip_is_skipped_and_counted(tmp_path):
    """A clip whose file got corrupted after the manifest was built: training goes on without it and results.json
    counts it once per epoch."""
    from audiolp.train.trainer import train

    manifest = make_corpus(tmp_path / "corpus", per_kind=3)
    (tmp_path / "corpus" / "wav" / "hum1.wav").write_bytes(b"not audio at all")
    cfg = base_cfg(manifest, tmp_path / "run", "tagging", max_steps=100, max_epochs=2, checkpoint_every=100,
                   loader={"max_duration": 4.0, "num_buckets": 1, "spec_augment": False})
    res = json.loads((train(cfg) / "results.json").read_text())
    assert res["completed"] and res["unreadable_clips"] == 2  # 2 epochs x 1 clip
    assert res["history"][-1]["epoch"] >= 1


def test_an_epoch_bounded_run_keeps_its_last_log_window(tmp_path):
    """The data runs out in the middle of a log window: that window still reaches results.json (loss, audio)."""
    from audiolp.data.schema import load_manifest
    from audiolp.train.trainer import train

    manifest = make_corpus(tmp_path / "corpus", per_kind=3)
    cfg = base_cfg(manifest, tmp_path / "run", "tagging", max_steps=1000, max_epochs=1, log_every=50,
                   checkpoint_every=1000, loader={"max_duration": 4.0, "num_buckets": 1, "spec_augment": False})
    res = json.loads((train(cfg) / "results.json").read_text())
    assert res["completed"] and res["steps"] >= 3
    assert [h["step"] for h in res["history"]] == [res["steps"]] and res["final_loss"] is not None
    assert math.isclose(res["audio_seconds_total"], sum(c.duration for c in load_manifest(manifest)), rel_tol=1e-9)
    assert res["history"][0]["items"] == 9


@pytest.mark.parametrize("checkpoint_every", [1, 1000])
def test_raising_max_epochs_on_resume_continues_as_one_run(tmp_path, checkpoint_every):
    """Train 1 epoch, then rerun with max_epochs=2: the same learning rates (Eden's epoch factor), losses and
    weights as 2 epochs in one go. checkpoint_every=1: the last checkpoint is the epoch's last step;
    1000: the checkpoint written after the data ran out, between epochs."""
    from safetensors.torch import load_file

    from audiolp.train.trainer import train

    manifest = make_corpus(tmp_path / "corpus", per_kind=3)
    kw = dict(max_steps=1000, log_every=1, checkpoint_every=checkpoint_every, keep_last=100,
              loader={"max_duration": 4.0, "num_buckets": 1, "spec_augment": True},
              optim={"name": "scaled_adam", "warmup_batches": 0, "eden_lr_epochs": 1.0, "eden_schedule": "epoch"})
    train(base_cfg(manifest, tmp_path / "one", "tagging", max_epochs=2, **kw))
    train(base_cfg(manifest, tmp_path / "two", "tagging", max_epochs=1, **kw))
    first = json.loads((tmp_path / "two" / "results.json").read_text())
    train(base_cfg(manifest, tmp_path / "two", "tagging", max_epochs=2, **kw))
    a, b = (json.loads((tmp_path / d / "results.json").read_text())["history"] for d in ("one", "two"))
    assert [h["epoch"] for h in a][-1] == 1 and len(a) == 2 * first["steps"]
    assert [(h["lr"], h["loss"]) for h in b] == [(h["lr"], h["loss"]) for h in a]
    assert a[first["steps"]]["lr"] < a[first["steps"] - 1]["lr"]  # the second epoch runs at Eden's lower rate
    last = f"step-{len(a):08d}"
    wa = load_file(str(tmp_path / "one" / "checkpoints" / last / "model.safetensors"))
    wb = load_file(str(tmp_path / "two" / "checkpoints" / last / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_clips_too_short_or_without_caption_are_left_out_before_the_start(tmp_path):
    """A 50 ms clip and a clip whose captions are all blank would stop a run mid-way; they are left out before it
    starts, named in the log and counted in results.json. Tagging needs no caption and keeps the blank one."""
    from lhotse.utils import fastcopy

    from audiolp.data.schema import load_manifest
    from audiolp.train.data import load_training_cuts, min_clip_seconds
    from audiolp.train.trainer import train

    manifest = make_corpus(tmp_path / "corpus", per_kind=3)
    cuts = list(load_manifest(manifest))
    click = tmp_path / "corpus" / "wav" / "click.wav"
    sf.write(click, (0.5 * np.ones(800)).astype(np.float32), 16000)
    short = make_caption_cut("click", Recording.from_file(click), ["a short click"], source="synth_click",
                             domain="sound", labels=["beep"])
    blank = fastcopy(cuts[0], id="blank", supervisions=[fastcopy(cuts[0].supervisions[0], id="blank", custom={
        **cuts[0].supervisions[0].custom, "caption": ["  ", ""]})])
    bad = save_manifest(cuts + [short, blank], tmp_path / "bad.jsonl.gz")

    cfg = base_cfg(bad, tmp_path / "run", "captioning", max_steps=1000, max_epochs=1, checkpoint_every=1000,
                   loader={"max_duration": 4.0, "num_buckets": 1, "spec_augment": False})
    assert math.isclose(min_clip_seconds(cfg), 0.09)
    messages = []
    _, usable, _, left_out = load_training_cuts(cfg, log=messages.append)
    assert left_out == {"too_short": 1, "too_long": 0, "no_caption": 1}
    assert sorted(c.id for c in usable) == sorted(c.id for c in cuts)
    assert any("click (" in m and str(click) in m for m in messages) and any("blank (" in m for m in messages)
    tag_cfg = base_cfg(bad, tmp_path / "tag", "tagging")
    assert load_training_cuts(tag_cfg, log=messages.append)[3] == {"too_short": 1, "too_long": 0, "no_caption": 0}
    con_cfg = base_cfg(bad, tmp_path / "con", "contrastive")
    assert load_training_cuts(con_cfg, log=messages.append)[3] == {"too_short": 1, "too_long": 0, "no_caption": 1}
    # The clip-length bounds (loader.min/max_clip_seconds; Auden keeps 1-60 s) leave out exactly the clips outside.
    durations = [c.duration for c in cuts + [blank]]  # the click is shorter than any bound
    steps = sorted(set(durations))  # 1.0, 1.1, 1.2 s: bounds between them leave clips out on both sides
    lo, hi = (steps[0] + steps[1]) / 2, (steps[-2] + steps[-1]) / 2
    bounded = base_cfg(bad, tmp_path / "b", "tagging",
                       loader={"max_duration": 4.0, "min_clip_seconds": lo, "max_clip_seconds": hi})
    _, kept, _, counts = load_training_cuts(bounded, log=messages.append)
    assert counts["too_short"] == 1 + sum(d < lo for d in durations)  # + the click
    assert counts["too_long"] == sum(d > hi for d in durations) >= 1
    assert all(lo <= c.duration <= hi for c in kept) and len(list(kept)) == sum(lo <= d <= hi for d in durations)

    res = json.loads((train(cfg) / "results.json").read_text())  # one whole epoch over the screened manifest
    assert res["completed"] and res["left_out_clips"] == {"too_short": 1, "too_long": 0, "no_caption": 1}
    assert math.isclose(res["audio_seconds_total"], sum(c.duration for c in cuts), rel_tol=1e-9)


@pytest.mark.parametrize("objective", ["tagging", "captioning"])
def test_a_batch_whose_only_clip_is_unreadable_is_stepped_over(tmp_path, objective):
    """Batches of one clip (max 1.5 s of 9 clips of 1.0-1.2 s); one file corrupted after the manifest was built. Its
    batch comes out empty: the step forwards a stand-in with weight 0 and does not update; the run goes on, counts
    the clip, and logs only the clips that were read."""
    from audiolp.data.schema import load_manifest
    from audiolp.train.trainer import train

    manifest = make_corpus(tmp_path / "corpus", per_kind=3)
    (tmp_path / "corpus" / "wav" / "hum1.wav").write_bytes(b"not audio at all")
    cfg = base_cfg(manifest, tmp_path / "run", objective, max_steps=1000, max_epochs=1, checkpoint_every=1000,
                   loader={"max_duration": 1.5, "num_buckets": 1, "spec_augment": False})
    res = json.loads((train(cfg) / "results.json").read_text())
    durations = {c.id: c.duration for c in load_manifest(manifest)}
    assert res["completed"] and res["steps"] == 9 and res["unreadable_clips"] == 1  # 9 clips, one per batch
    assert len(res["history"]) == 8 and sum(h["items"] for h in res["history"]) == 8  # the empty step: no record
    assert math.isclose(res["audio_seconds_total"], sum(durations.values()) - durations["hum1"], rel_tol=1e-9)
    assert all(math.isfinite(h["loss"]) for h in res["history"])


def test_an_unreadable_single_clip_batch_on_one_of_two_ranks(tmp_path):
    """Under DDP the rank with the empty batch still joins the gradient all-reduce (its stand-in has weight 0)."""
    from audiolp.train.distributed import spawn_local
    from audiolp.train.trainer import train

    manifest = make_corpus(tmp_path / "corpus", per_kind=4)
    (tmp_path / "corpus" / "wav" / "hum1.wav").write_bytes(b"not audio at all")
    cfg = base_cfg(manifest, tmp_path / "run", "tagging", max_steps=1000, max_epochs=1, checkpoint_every=1000,
                   loader={"max_duration": 1.5, "num_buckets": 1, "spec_augment": False})
    spawn_local(train, 2, cfg, threads_per_proc=1)
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["completed"] and res["world_size"] == 2 and res["unreadable_clips"] == 1
    assert res["steps"] == 6 and sum(h["items"] for h in res["history"]) == 11  # 12 clips, 2 per step, 1 unread


def test_shar_corpus_is_screened_and_subset_from_its_metadata_only(corpus, tmp_path):
    """A Shar corpus: the screen, the scale subset and the label set read only the cut shards (no audio); the
    subset is the one the jsonl manifest gives, and training reads its audio from the tars."""
    from audiolp.data.schema import export_shar, load_manifest
    from audiolp.train.data import load_training_cuts
    from audiolp.train.trainer import train

    export_shar(load_manifest(corpus), tmp_path / "shar", shard_size=8)
    cfg = base_cfg(tmp_path / "shar", tmp_path / "run", "tagging", scale="4M", max_steps=2, checkpoint_every=100)
    meta, subset, info, _ = load_training_cuts(cfg, log=lambda *a: None)
    assert {c.recording.sources[0].type for c in meta} == {"shar"}  # metadata: no audio bytes were read
    ref = load_training_cuts(base_cfg(corpus, tmp_path / "ref", "tagging", scale="4M"), log=lambda *a: None)[1]
    assert [c.id for c in subset] == [c.id for c in ref] and info.selected == 9
    assert {c.recording.sources[0].type for c in subset} == {"memory"}  # training gets the audio
    res = json.loads((train(cfg) / "results.json").read_text())
    assert res["completed"] and all(math.isfinite(v) for v in _losses(tmp_path / "run"))
    assert res["config"]["objective_config"]["label_set"] == ["beep", "hum", "noise", "tonal"]  # from the metadata, whole corpus


def test_load_encoder_is_frozen_and_matches_the_trained_encoder(corpus, tagging_run):
    import audiolp
    from audiolp.data.loader import LoaderConfig, make_dataloader
    from audiolp.data.schema import load_manifest
    from audiolp.models.zipformer import Zipformer, ZipformerConfig
    from audiolp.train.checkpoint import load_encoder, load_weights

    batch = next(iter(make_dataloader(load_manifest(corpus), LoaderConfig(max_duration=8.0, shuffle=False),
                                      train=False)))
    x, n = batch["features"], batch["feature_lens"]
    enc = audiolp.load_encoder(tagging_run, checkpoint="final", use_ema=False)
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())
    # The trained encoder: the objective's weights as saved in the last checkpoint, rebuilt by hand.
    zcfg = ZipformerConfig.from_dict(json.loads((tagging_run / "encoder_config.json").read_text())["config"])
    trained = Zipformer(zcfg).eval()
    sd = load_weights(tagging_run / "checkpoints" / "step-00000008" / "model.safetensors", prefix="encoder.")
    trained.load_state_dict(sd, strict=True)
    with torch.no_grad():
        ref, ref_len = trained(x, n)
        got, got_len = enc(x, n)
        latest, _ = load_encoder(tagging_run, checkpoint="latest", use_ema=False)(x, n)
        named, _ = load_encoder(tagging_run, checkpoint="step-00000008", use_ema=False)(x, n)
        ema, _ = load_encoder(tagging_run, checkpoint="final")(x, n)  # EMA by default when the run kept one
        fresh, _ = Zipformer(zcfg).eval()(x, n)
    assert torch.equal(got, ref) and torch.equal(got_len, ref_len)
    assert torch.equal(latest, ref) and torch.equal(named, ref)
    assert got.shape[-1] == enc.output_dim
    assert not torch.allclose(ema, ref, atol=1e-4)  # EMA weights are a different (averaged) encoder
    assert not torch.allclose(fresh, ref, atol=1e-4)  # and training changed the weights


def test_ddp_two_processes_follow_one_process_with_accumulation(equal_corpus, tmp_path):
    """2 ranks x 1 micro-batch vs 1 rank x 2 micro-batches: the same global batches (the sampler gives rank r every
    2nd batch of one stream) and the same mean gradient. For the stream to be the same: clips of one duration (with
    several filled duration buckets, lhotse's sync_buckets makes each pair of ranks draw from one bucket, so the order
    depends on the world size), dropout off (it draws from per-rank RNG streams; SpecAugment is seeded per batch, tested below), and the first
    epoch only, with drop_last (DDP drops an odd last batch, accumulation would carry it into the next step)."""
    from audiolp.train.distributed import spawn_local
    from audiolp.train.trainer import train

    common = dict(max_steps=4, max_epochs=1, checkpoint_every=100,
                  model_overrides={"dropout": 0.0, "pos_dropout": 0.0},
                  loader={"max_duration": 3.0, "num_buckets": 2, "spec_augment": False, "drop_last": True})
    one = train(base_cfg(equal_corpus, tmp_path / "one", "tagging", grad_accum=2, **common))
    spawn_local(train, 2, base_cfg(equal_corpus, tmp_path / "two", "tagging", grad_accum=1, **common),
                threads_per_proc=1)  # as the 1-process run (module fixture): the same float kernels
    a, b = _losses(one), _losses(tmp_path / "two")
    assert len(a) == len(b) == 4
    # Measured here: identical to the last bit (gloo sums 2 gradients, /2 == accumulating two halves). The tolerance
    # leaves room for another all-reduce summation order, not for a different batch or a missing average.
    assert abs(a[0] - b[0]) < 1e-6  # same init, same data
    np.testing.assert_allclose(b, a, rtol=1e-5)
    assert a[-1] < 0.6 * a[0]  # and it is training, not a flat line
    from audiolp.train.checkpoint import load_weights

    wa = load_weights(tmp_path / "one" / "checkpoints" / "step-00000004" / "model.safetensors")
    wb = load_weights(tmp_path / "two" / "checkpoints" / "step-00000004" / "model.safetensors")
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-5
    res = json.loads((tmp_path / "two" / "results.json").read_text())
    assert res["world_size"] == 2 and res["steps"] == 4 and res["history"][0]["items"] == 6  # 3 clips x 2 ranks


def test_contrastive_two_ranks_gathering_negatives_equal_one_rank_on_their_union(equal_corpus, tmp_path):
    """Contrastive DDP: each rank scores its 3 clips against the 6 captions of both ranks (gathered with gradients),
    so 2 ranks x 3 clips must train exactly as 1 rank on the 6-clip union batch, not as two 3-clip batches.
    Same stream as above: equal 1.0 s clips, one bucket; max_duration 6 s takes the two 3-clip batches as one."""
    from audiolp.train.distributed import spawn_local
    from audiolp.train.trainer import train

    common = dict(max_steps=3, max_epochs=1, checkpoint_every=100, model_overrides={"dropout": 0.0, "pos_dropout": 0.0})
    loader = {"num_buckets": 1, "spec_augment": False, "drop_last": True}
    one = train(base_cfg(equal_corpus, tmp_path / "one", "contrastive", loader={**loader, "max_duration": 6.0},
                         **common))
    spawn_local(train, 2, base_cfg(equal_corpus, tmp_path / "two", "contrastive",
                                   loader={**loader, "max_duration": 3.0}, **common), threads_per_proc=1)
    a, b = _losses(one), _losses(tmp_path / "two")
    assert len(a) == len(b) == 3
    items = [h["items"] for h in json.loads((tmp_path / "two" / "results.json").read_text())["history"]]
    assert items == [6, 6, 6]
    np.testing.assert_allclose(b, a, rtol=1e-5)
    # Without the gather each rank would see 3 candidates: the first loss would be near log(3), not log(6).
    assert abs(a[0] - math.log(6)) < abs(a[0] - math.log(3))
    from audiolp.train.checkpoint import load_weights

    wa = load_weights(tmp_path / "one" / "checkpoints" / "step-00000003" / "model.safetensors")
    wb = load_weights(tmp_path / "two" / "checkpoints" / "step-00000003" / "model.safetensors")
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-5


@pytest.mark.parametrize("objective", ["tagging", "captioning"])
def test_accumulated_uneven_micro_batches_equal_one_big_batch(corpus, tmp_path, objective):
    """Micro-batches of 2 and 3 clips accumulate to the gradient of the 5-clip batch (loss_weighting="global_mean",
    with caption tokens as the unit for captioning);
    equal micro-batch weights do not. Dropout and SpecAugment off; padding differs, so the tolerance is the encoder's
    padding invariance (~1e-5)."""
    from audiolp.data.loader import CaptionBatchDataset
    from audiolp.data.schema import load_manifest
    from audiolp.train.distributed import DistInfo
    from audiolp.train.trainer import Trainer

    cuts = load_manifest(corpus).to_eager()
    picked = [cuts[i] for i in (0, 9, 3, 17, 12)]  # three kinds, durations 1.0-1.9 s
    grads = {}
    for weighting in ("global_mean", "micro_batches"):
        cfg = base_cfg(corpus, tmp_path / weighting, objective, loss_weighting=weighting,
                       model_overrides={"dropout": 0.0, "pos_dropout": 0.0},
                       loader={"max_duration": 8.0, "spec_augment": False})
        if objective == "captioning":
            cfg.objective_config["dropout"] = 0.0
            cfg.objective_config["parallel_prob"] = 0.0  # the per-clip choice is seeded anyway; keep it simple
        trainer = Trainer(cfg, DistInfo())
        trainer.setup()
        ds = CaptionBatchDataset(cfg.loader, train=False)
        from lhotse import CutSet

        small, large, whole = (ds[CutSet.from_cuts(c)] for c in (picked[:2], picked[2:], picked))
        for micro in ([small, large], [whole]):
            trainer.objective.zero_grad(set_to_none=True)
            out = trainer.accumulate_gradients(micro)
            weights = [w for _, _, w in out.micro]
            if weighting == "micro_batches":
                assert weights == [1.0] * len(micro)
            elif objective == "tagging":
                assert weights == ([2.0, 3.0] if len(micro) == 2 else [5.0])
            else:  # target tokens: more than one per clip, and the parts add up to the whole
                assert weights[0] > 2 * len(micro[0]["cut_ids"]) and sum(weights) == grads.get("tokens", sum(weights))
                grads["tokens"] = sum(weights)
            grads[weighting, len(micro)] = torch.cat([p.grad.flatten() for p in trainer.objective.parameters()
                                                      if p.grad is not None])
    ref = grads["global_mean", 1]
    assert torch.equal(ref, grads["micro_batches", 1])  # one batch: the weighting cannot matter
    torch.testing.assert_close(grads["global_mean", 2], ref, atol=2e-5, rtol=1e-3)
    assert (grads["micro_batches", 2] - ref).norm() > 20 * (grads["global_mean", 2] - ref).norm()


def test_uneven_batches_two_ranks_follow_one_rank(corpus, tmp_path):
    """Clips of 1.0-1.9 s in max-duration batches hold different numbers of clips; the clip weights are summed over
    ranks, so 2 ranks x 1 micro-batch still follow 1 rank x 2 micro-batches, SpecAugment included."""
    from audiolp.train.distributed import spawn_local
    from audiolp.train.trainer import train

    # One duration bucket, so the global batch stream does not depend on the world size (see the test above).
    # SpecAugment on: it is seeded per batch, so both ranks mask as the single process does.
    common = dict(max_steps=4, max_epochs=1, checkpoint_every=100,
                  model_overrides={"dropout": 0.0, "pos_dropout": 0.0},
                  loader={"max_duration": 4.0, "num_buckets": 1, "spec_augment": True, "drop_last": True})
    one = train(base_cfg(corpus, tmp_path / "one", "tagging", grad_accum=2, **common))
    spawn_local(train, 2, base_cfg(corpus, tmp_path / "two", "tagging", grad_accum=1, **common),
                threads_per_proc=1)
    a, b = _losses(one), _losses(tmp_path / "two")
    assert len(a) == len(b) == 4
    items = [h["items"] for h in json.loads((tmp_path / "one" / "results.json").read_text())["history"]]
    assert items == [4, 4, 5, 5]  # 5 clips in a step: its two micro-batches cannot be equal
    np.testing.assert_allclose(b, a, rtol=1e-5)


def test_scale_subset_bf16_and_init_from(corpus, tmp_path, tagging_run, capsys):
    """scale '4M' maps onto the small corpus as 4M / 10.7M of it; the tagging classes still come from the whole
    manifest; bf16 autocast runs on CPU; init_from starts the encoder from another run's final weights."""
    import audiolp
    from audiolp.train.checkpoint import load_weights
    from audiolp.train.trainer import train

    cfg = base_cfg(corpus, tmp_path / "run", "tagging", scale="4M", precision="bf16", init_from=str(tagging_run),
                   max_steps=2, checkpoint_every=100)
    run = train(cfg, stop_after=0)  # step 0: a checkpoint of the initial weights
    init = load_weights(run / "checkpoints" / "step-00000000" / "model.safetensors", prefix="encoder.")
    ref = load_weights(tagging_run / "encoder.safetensors")
    assert init.keys() == ref.keys() and all(torch.equal(init[k], ref[k]) for k in ref)
    run = train(cfg)
    res = json.loads((run / "results.json").read_text())
    info = res["scale_info"]
    assert info["mapped"] and info["available"] == 24 and info["selected"] == round(4e6 * 24 / 10.7e6) == 9
    assert "mapped onto this corpus" in capsys.readouterr().out
    assert res["precision"] == "bf16" and all(np.isfinite(_losses(run)))
    saved = json.loads((run / "config.json").read_text())
    assert saved["objective_config"]["label_set"] == ["beep", "hum", "noise", "tonal"]
    from audiolp.train.checkpoint import CheckpointError, load_encoder

    with pytest.raises(CheckpointError, match="use_ema=False"):  # this run kept no EMA
        load_encoder(run, checkpoint="final", use_ema=True)
    enc = load_encoder(run, checkpoint="final")
    (run / "encoder_config.json").unlink()  # rebuilt from config.json alone: the same weights load
    with pytest.raises(CheckpointError, match="no encoder_config.json"):
        load_encoder(run, checkpoint="final")  # the model library alone cannot read a training config
    enc2 = audiolp.load_encoder(run, checkpoint="final")
    assert all(torch.equal(a, b) for a, b in zip(enc.state_dict().values(), enc2.state_dict().values()))


def test_sampler_position_ignores_prefetched_batches(corpus):
    """With DataLoader workers the sampler runs ahead of training; a checkpoint must restore the position of the
    batches *consumed*, not of those the sampler handed out."""
    from audiolp.data.loader import LoaderConfig, make_sampler
    from audiolp.data.schema import load_manifest
    from audiolp.train.state import restore_sampler, sampler_position

    cuts = load_manifest(corpus)
    cfg = LoaderConfig(max_duration=5.0, num_buckets=2)
    ref = [[c.id for c in b] for b in make_sampler(cuts, cfg, seed=3)]
    ahead = make_sampler(cuts, cfg, seed=3)
    it = iter(ahead)
    for _ in range(5):  # handed out 5 batches, training consumed 2
        next(it)
    state = json.loads(json.dumps(sampler_position(ahead, epoch=0, consumed=2)))  # through JSON, as stored
    fresh = make_sampler(cuts, cfg, seed=3)
    restore_sampler(fresh, state)
    rest = [[c.id for c in b] for b in fresh]
    assert rest == ref[2:] and len(ref) > 5


def test_gpu_check_script_runs_on_cpu(capsys):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_pretrain_check.py"
    spec = importlib.util.spec_from_file_location("gpu_pretrain_check", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if not torch.cuda.is_available():
        assert mod.main([]) == 0  # no GPU: a message, exit 0
        assert "no CUDA device" in capsys.readouterr().out
    assert mod.main(["--cpu-smoke", "--steps", "2", "--warmup", "0", "--data", "/nonexistent"]) == 0
    out = capsys.readouterr().out
    assert "| contrastive | zipformer_tiny | ok |" in out and "| captioning | zipformer_tiny | ok |" in out


def _eden(b: float, e: float, lr_batches: float, lr_epochs: float | None, warmup: float, start: float = 0.5):
    """icefall's Eden, written out: batch term x epoch term (None: step-only, the authors' Eden2) x linear warm-up."""
    f = ((b ** 2 + lr_batches ** 2) / lr_batches ** 2) ** -0.25
    if lr_epochs is not None:
        f *= ((e ** 2 + lr_epochs ** 2) / lr_epochs ** 2) ** -0.25
    return f * (1.0 if b >= warmup else start + (1.0 - start) * b / warmup)


EDEN = {"name": "scaled_adam", "lr": 0.04, "eden_lr_batches": 5.0, "eden_lr_epochs": 1.0, "warmup_batches": 4}


def test_logged_lr_follows_eden_over_epochs(corpus, tmp_path):
    """Every logged lr equals the schedule's formula at (step, epochs completed): an epoch counted one off in the
    trainer (step_epoch(e - 1)) or a batch counted one off changes the numbers."""
    from audiolp.train.trainer import train

    cfg = base_cfg(corpus, tmp_path / "run", "tagging", max_steps=100, max_epochs=3, checkpoint_every=100,
                   optim={**EDEN, "eden_schedule": "epoch"})
    hist = json.loads((train(cfg) / "results.json").read_text())["history"]
    epochs = sorted({h["epoch"] for h in hist})
    assert epochs == [0, 1, 2] and len(hist) > 6
    for h in hist:
        assert h["lr"] == pytest.approx(0.04 * _eden(h["step"], h["epoch"], 5.0, 1.0, 4), rel=1e-9), h


def test_step_only_schedule_gives_the_same_lr_on_corpora_of_different_size(tmp_path):
    """The default (step-only Eden) makes a run's learning rate a function of the step alone, so scale points of
    one study are not confounded by how fast a small subset completes epochs; the epoch form would differ."""
    from audiolp.train.trainer import train

    small, large = make_corpus(tmp_path / "small", per_kind=2), make_corpus(tmp_path / "large", per_kind=8)
    lrs = {}
    for schedule in ("step", "epoch"):
        for name, manifest in (("small", small), ("large", large)):
            cfg = base_cfg(manifest, tmp_path / f"{schedule}_{name}", "tagging", max_steps=12, checkpoint_every=100,
                           optim={**EDEN, "eden_schedule": schedule})
            hist = json.loads((train(cfg) / "results.json").read_text())["history"]
            lrs[schedule, name] = [(h["step"], h["lr"], h["epoch"]) for h in hist]
    assert [(s, lr) for s, lr, _ in lrs["step", "small"]] == [(s, lr) for s, lr, _ in lrs["step", "large"]]
    assert all(lr == pytest.approx(0.04 * _eden(s, 0, 5.0, None, 4)) for s, lr, _ in lrs["step", "small"])
    assert lrs["step", "small"][-1][2] > lrs["step", "large"][-1][2]  # the small corpus did pass more epochs
    assert [lr for _, lr, _ in lrs["epoch", "small"]] != [lr for _, lr, _ in lrs["epoch", "large"]]


def test_latest_checkpoint_falls_back_to_the_newest_when_the_pointer_is_missing(tmp_path):
    import audiolp.train.checkpoint as ck

    root = tmp_path / "checkpoints"
    for s in (3, 1, 12):
        ck.write_checkpoint(root, s, {"model": {"encoder.w": torch.full((2,), float(s))}, "trainer": {"step": s}})
    (root / ck.LATEST).unlink()
    assert ck.latest_checkpoint(root).name == "step-00000012"  # the newest, not the oldest
    (root / "step-00000012" / "COMPLETE.json").unlink()  # an incomplete one is never chosen
    assert ck.latest_checkpoint(root).name == "step-00000003"
