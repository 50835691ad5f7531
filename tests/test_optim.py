"""ScaledAdam / Eden / AdamW+cosine: formulas, relative updates, clipping, exact resume, overfitting a batch."""
import copy
import dataclasses
import io
import json
import math

import pytest
import torch
from torch import nn

from audiolp.models.zipformer import Zipformer, zipformer_tiny
from audiolp.train.optim import (
    CosineWithWarmup,
    Eden,
    OptimConfig,
    ScaledAdam,
    attention_scaling_for,
    build_optimizer,
)


def _eden_ref(base, b, e, B=7500.0, E=3.5, warm=500.0, start=0.5):
    f = ((b * b + B * B) / (B * B)) ** -0.25 * ((e * e + E * E) / (E * E)) ** -0.25
    return base * f * (start + (1 - start) * b / warm if b < warm else 1.0)


def test_eden_formula():
    p = nn.Parameter(torch.zeros(3))
    opt = ScaledAdam([p], lr=0.045)
    sched = Eden(opt)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.045 * 0.5)  # warm-up starts at half
    for b in (1, 250, 499, 500, 7500, 30000):
        sched.step_batch(b)
        assert sched.get_last_lr()[0] == pytest.approx(_eden_ref(0.045, b, 0))
    sched.step_epoch(3.5)
    assert opt.param_groups[0]["lr"] == pytest.approx(_eden_ref(0.045, 30000, 3.5))
    assert _eden_ref(1.0, 7500, 0) == pytest.approx(2 ** -0.25)
    sched.step_batch()  # default: previous + 1
    assert sched.batch == 30001


def test_cosine_with_warmup():
    p = nn.Parameter(torch.zeros(3))
    opt = torch.optim.AdamW([p], lr=1e-3)
    sched = CosineWithWarmup(opt, total_steps=110, warmup_batches=10)
    assert sched.get_last_lr()[0] == pytest.approx(1e-3 / 11)
    sched.step_batch(10)
    assert sched.get_last_lr()[0] == pytest.approx(1e-3)
    sched.step_batch(60)
    assert sched.get_last_lr()[0] == pytest.approx(0.5e-3)
    sched.step_batch(110)
    assert sched.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="total_steps"):
        build_optimizer(nn.Linear(2, 2), OptimConfig(name="adamw"))


def test_scaled_adam_update_is_relative_to_param_rms():
    torch.manual_seed(0)
    big = nn.Parameter(torch.randn(40, 30) * 3.0)
    small = nn.Parameter(torch.randn(40, 30) * 0.01)
    scalar = nn.Parameter(torch.tensor(0.5))
    opt = ScaledAdam([big, small, scalar], lr=0.01, clipping_scale=None)
    before = [big.detach().clone(), small.detach().clone()]
    big.grad, small.grad, scalar.grad = torch.randn(40, 30), torch.randn(40, 30), torch.tensor(1.0)
    opt.step()
    rel = [((p - b).norm() / b.norm()).item() for p, b in zip((big, small), before)]
    # Adam-normalised step (~1 per element) x lr x (1 - beta1) x rms: relative change ~1e-3 for both tensors
    assert rel[0] == pytest.approx(rel[1], rel=0.05)
    assert rel[0] == pytest.approx(0.01 * 0.1, rel=0.1)
    # scalar: plain Adam at lr * scalar_lr_scale * (1 - beta1)
    assert scalar.item() == pytest.approx(0.5 - 0.01 * 0.1 * 0.1, rel=1e-4)


def test_scaled_adam_learns_tensor_scale():
    """A tensor whose loss wants it 3x larger grows through the separate scale update (with fixed direction)."""
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(20, 20))
    target = 3.0 * w.detach().clone()
    opt = ScaledAdam([w], lr=0.05, clipping_scale=None)
    rms0 = w.detach().pow(2).mean().sqrt().item()
    for _ in range(200):
        opt.zero_grad()
        ((w - target) ** 2).sum().backward()
        opt.step()
    rms = w.detach().pow(2).mean().sqrt().item()
    assert rms > 2.0 * rms0


def test_scaled_adam_clips_gradient_spikes():
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(10, 10))
    opt = ScaledAdam([w], lr=0.01, clipping_scale=2.0)
    for _ in range(12):
        w.grad = torch.randn(10, 10)
        opt.step()
    assert opt.last_clipping_scale.item() == pytest.approx(1.0)
    w.grad = 100.0 * torch.randn(10, 10)
    opt.step()
    assert opt.last_clipping_scale.item() < 0.05  # threshold = 2 x median norm, spike is ~100x


def _tiny_setup(name: str, seed: int = 0):
    torch.manual_seed(seed)
    enc = Zipformer(zipformer_tiny(dropout=0.0, pos_dropout=0.0))
    head = nn.Linear(enc.output_dim, 5)
    model = nn.ModuleDict({"enc": enc, "head": head})
    cfg = OptimConfig(name=name, lr=0.05 if name == "scaled_adam" else 2e-3, warmup_batches=3, total_steps=50,
                      eden_lr_batches=20)
    opt, sched = build_optimizer(model, cfg)
    return model, opt, sched


def _train_steps(model, opt, sched, batches):
    for x, lengths, y in batches:
        f, fl = model["enc"](x, lengths)
        logits = model["head"](f.sum(1) / fl[:, None])
        loss = nn.functional.binary_cross_entropy_with_logits(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step_batch()


@pytest.mark.parametrize("name", ["scaled_adam", "adamw"])
def test_resume_is_bitwise_identical(name):
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(2, 60, 80, generator=g), torch.tensor([60, 45]),
                (torch.rand(2, 5, generator=g) < 0.5).float()) for _ in range(13)]
    # uninterrupted
    model_a, opt_a, sched_a = _tiny_setup(name)
    model_a.train()
    _train_steps(model_a, opt_a, sched_a, batches)
    # interrupted after 7 steps (crosses a size update at step 4 and the first clip estimate at step 10)
    model_b, opt_b, sched_b = _tiny_setup(name)
    model_b.train()
    _train_steps(model_b, opt_b, sched_b, batches[:7])
    buf = io.BytesIO()
    torch.save({"model": model_b.state_dict(), "opt": opt_b.state_dict(), "sched": sched_b.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    model_c, opt_c, sched_c = _tiny_setup(name, seed=123)  # different init: everything must come from the ckpt
    model_c.load_state_dict(ckpt["model"])
    opt_c.load_state_dict(ckpt["opt"])
    sched_c.load_state_dict(ckpt["sched"])
    model_c.train()
    _train_steps(model_c, opt_c, sched_c, batches[7:])
    assert sched_c.get_last_lr() == sched_a.get_last_lr()
    for (n, pa), pc in zip(model_a.named_parameters(), model_c.parameters()):
        assert torch.equal(pa, pc), n


def test_attention_scaling_for_and_builder_sets_it():
    assert attention_scaling_for("adamw") is True
    assert attention_scaling_for("scaled_adam") is False
    with pytest.raises(ValueError):
        attention_scaling_for("sgd")
    enc = Zipformer(zipformer_tiny())
    build_optimizer(enc, OptimConfig(name="adamw", total_steps=10))
    assert enc.config.attention_scaling is True
    assert enc.encoder.encoders[1].encoder.layers[0].self_attn_weights.attention_scaling is True
    build_optimizer(enc, OptimConfig(name="scaled_adam"))
    assert enc.config.attention_scaling is False


def test_optim_config_json_round_trip():
    cfg = OptimConfig(name="adamw", lr=1e-3, total_steps=1000)
    d = json.loads(json.dumps(dataclasses.asdict(cfg)))
    assert OptimConfig(**d) == cfg
    assert OptimConfig().base_lr == 0.045
    with pytest.raises(ValueError, match="name"):
        OptimConfig(name="sgd")


def _overfit(name: str, steps: int, lr: float):
    torch.manual_seed(0)
    enc = Zipformer(zipformer_tiny(dropout=0.0, pos_dropout=0.0))
    head = nn.Linear(enc.output_dim, 10)
    model = nn.ModuleDict({"enc": enc, "head": head})
    g = torch.Generator().manual_seed(0)
    # fbank-like: a per-clip spectral envelope + frame noise around a log-mel level of -5
    x = 2.0 * torch.randn(16, 1, 80, generator=g) + torch.randn(16, 120, 80, generator=g) - 5.0
    lengths = torch.randint(90, 121, (16,), generator=g)
    y = (torch.rand(16, 10, generator=g) < 0.3).float()
    opt, sched = build_optimizer(model, OptimConfig(name=name, lr=lr, warmup_batches=5, eden_lr_batches=200,
                                                    total_steps=steps))
    model.train()
    losses = []
    for _ in range(steps):
        f, fl = enc(x, lengths)
        loss = nn.functional.binary_cross_entropy_with_logits(head(f.sum(1) / fl[:, None]), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step_batch()
        losses.append(loss.item())
    return losses


def test_tiny_zipformer_scaled_adam_overfits_a_batch():
    losses = _overfit("scaled_adam", steps=30, lr=0.1)
    assert losses[-1] < 0.1 * losses[0], losses  # falls by >= 90%


def test_tiny_zipformer_adamw_learns():
    losses = _overfit("adamw", steps=15, lr=3e-3)
    assert min(losses[-3:]) < 0.8 * losses[0], losses
