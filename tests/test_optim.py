"""ScaledAdam / Eden / AdamW+cosine: formulas, relative updates, clipping, exact resume, overfitting a batch."""
import dataclasses
import json
import math

import pytest
import safetensors.torch
import torch
from torch import nn

from audiolp.models.zipformer import Zipformer, zipformer_tiny
from audiolp.train.checkpoint import flatten_state, unflatten_state
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
    sched = Eden(opt, schedule="epoch")
    assert opt.param_groups[0]["lr"] == pytest.approx(0.045 * 0.5)  # warm-up starts at half
    for b in (1, 250, 499, 500, 7500, 30000):
        sched.step_batch(b)
        assert sched.get_last_lr()[0] == pytest.approx(_eden_ref(0.045, b, 0))
    sched.step_epoch(3.5)
    assert opt.param_groups[0]["lr"] == pytest.approx(_eden_ref(0.045, 30000, 3.5))
    assert _eden_ref(1.0, 7500, 0) == pytest.approx(2 ** -0.25)
    sched.step_batch()  # default: previous + 1
    assert sched.batch == 30001


def _lr_sequence(schedule: str, epochs_at: dict) -> list:
    """lrs after each of 40 batches; ``epochs_at`` = {batch: epochs completed}, stepped before that batch."""
    opt, sched = build_optimizer(nn.Linear(2, 2), OptimConfig(lr=0.04, warmup_batches=5, eden_lr_batches=10,
                                                              eden_lr_epochs=2.0, eden_schedule=schedule))
    out = []
    for b in range(1, 41):
        if b in epochs_at:
            sched.step_epoch(epochs_at[b])
        sched.step_batch(b)
        out.append(sched.get_last_lr()[0])
    return out


def test_eden_step_schedule_ignores_epochs():
    """Step mode: the lr at a batch is the same whether the corpus is small (many epochs) or large (none)."""
    assert OptimConfig().eden_schedule == "step"  # the authors' setting (Auden's Eden2, infinite stream)
    large = _lr_sequence("step", {})
    small = _lr_sequence("step", {b: b // 4 for b in range(4, 41, 4)})  # a pass every 4 batches
    assert small == large
    ref = [_eden_ref(0.04, b, 0, B=10.0, E=2.0, warm=5.0) for b in range(1, 41)]  # e term == 1
    assert large == pytest.approx(ref, rel=1e-12)
    # and the epoch term is what step mode drops: in epoch mode the small corpus decays faster
    small_epoch = _lr_sequence("epoch", {b: b // 4 for b in range(4, 41, 4)})
    assert _lr_sequence("epoch", {}) == pytest.approx(ref, rel=1e-12)
    assert small_epoch[-1] < 0.5 * small[-1]  # 10 epochs at E=2: ((100+4)/4)^-0.25 = 0.44
    assert small_epoch[-1] == pytest.approx(_eden_ref(0.04, 40, 10, B=10.0, E=2.0, warm=5.0), rel=1e-12)


@pytest.mark.parametrize("b,e", [(0, 0), (3, 1), (5, 2.5), (10, 4), (123, 7)])
def test_eden_modes_match_closed_form(b, e):
    """Known values, written out: epoch mode = base x batch term x epoch term x warm-up; step mode drops e."""
    base, B, E, warm, start = 0.045, 10.0, 2.0, 5.0, 0.5
    batch_term = ((b ** 2 + B ** 2) / B ** 2) ** -0.25
    epoch_term = ((e ** 2 + E ** 2) / E ** 2) ** -0.25
    warmup = start + (1 - start) * b / warm if b < warm else 1.0
    for schedule, expect in (("epoch", base * batch_term * epoch_term * warmup), ("step", base * batch_term * warmup)):
        opt, sched = build_optimizer(nn.Linear(2, 2), OptimConfig(eden_lr_batches=B, eden_lr_epochs=E,
                                                                  warmup_batches=int(warm), warmup_start=start,
                                                                  eden_schedule=schedule))
        sched.step_epoch(e)
        sched.step_batch(b)
        assert sched.get_last_lr()[0] == pytest.approx(expect, rel=1e-12), schedule
    # one hand-computed point: b = B, e = E, past warm-up -> base x 2^-0.25 x 2^-0.25
    if (b, e) == (10, 4):
        opt, sched = build_optimizer(nn.Linear(2, 2), OptimConfig(eden_lr_batches=10, eden_lr_epochs=10,
                                                                  warmup_batches=5, eden_schedule="epoch"))
        sched.step_epoch(10)
        sched.step_batch(10)
        assert sched.get_last_lr()[0] == pytest.approx(0.045 / math.sqrt(2), rel=1e-12)


def test_eden_schedule_is_validated_and_round_trips():
    with pytest.raises(ValueError, match=r"OptimConfig\.eden_schedule='steps'.*'step', 'epoch'"):
        OptimConfig(eden_schedule="steps")
    with pytest.raises(ValueError, match="schedule='x'"):
        Eden(ScaledAdam([nn.Parameter(torch.zeros(2))]), schedule="x")
    cfg = OptimConfig(eden_schedule="epoch")
    assert OptimConfig(**json.loads(json.dumps(dataclasses.asdict(cfg)))) == cfg
    for schedule in ("step", "epoch"):
        opt, sched = build_optimizer(nn.Linear(2, 2), OptimConfig(eden_schedule=schedule, eden_lr_batches=10))
        sched.step_epoch(3)
        sched.step_batch(17)
        sd = json.loads(json.dumps(sched.state_dict()))  # checkpoints keep it as JSON
        assert sd["schedule"] == schedule
        opt2, sched2 = build_optimizer(nn.Linear(2, 2), OptimConfig(eden_schedule=schedule, eden_lr_batches=10))
        sched2.load_state_dict(sd)
        assert (sched2.batch, sched2.epoch, sched2.get_last_lr()) == (17, 3, sched.get_last_lr())
        other = "epoch" if schedule == "step" else "step"
        _, sched3 = build_optimizer(nn.Linear(2, 2), OptimConfig(eden_schedule=other, eden_lr_batches=10))
        with pytest.raises(ValueError, match=f"written with eden_schedule='{schedule}'.*eden_schedule='{schedule}'"):
            sched3.load_state_dict(sd)
    # a state dict from before the field existed (no "schedule") still loads, in either mode
    old = {"batch": 17, "epoch": 3, "base_lrs": [0.045], "lr_scales": [1.0]}
    _, sched_e = build_optimizer(nn.Linear(2, 2), OptimConfig(eden_schedule="epoch", eden_lr_batches=10))
    sched_e.load_state_dict(dict(old))
    assert sched_e.get_last_lr()[0] == pytest.approx(_eden_ref(0.045, 17, 3, B=10.0), rel=1e-12)
    _, sched_s = build_optimizer(nn.Linear(2, 2), OptimConfig(eden_lr_batches=10))
    with pytest.warns(UserWarning, match="epoch term is dropped"):
        sched_s.load_state_dict(dict(old))
    assert sched_s.get_last_lr()[0] == pytest.approx(_eden_ref(0.045, 17, 0, B=10.0), rel=1e-12)


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


def test_scaled_adam_scalars_never_leave_scalar_max():
    """The clamp comes after the update: a scalar pushed outwards ends exactly at +-scalar_max, never past it
    (clamping before the update let the momentum carry it to ~10.1 with scalar_max=10)."""
    up = nn.Parameter(torch.tensor(9.99))
    down = nn.Parameter(torch.tensor(-9.99))  # same bucket as ``up``: the stacked copy-back path
    alone = nn.Parameter(torch.tensor([9.99]))  # a one-element tensor in its own bucket: the in-place view path
    inside = nn.Parameter(torch.tensor(0.0))
    opt = ScaledAdam([up, down, alone, inside], lr=1.0, scalar_max=10.0, clipping_scale=None)
    for _ in range(50):
        up.grad, down.grad, alone.grad = torch.tensor(-1.0), torch.tensor(1.0), torch.tensor([-1.0])
        inside.grad = torch.tensor(-1.0)
        opt.step()
        assert up.item() <= 10.0 and down.item() >= -10.0 and alone.item() <= 10.0
    assert (up.item(), down.item(), alone.item()) == (10.0, -10.0, 10.0)
    assert 0.5 < inside.item() < 10.0  # a scalar inside the range still moves freely


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
    # pickle-free round trip as the trainer's checkpoints do it: safetensors for tensors, JSON for the rest
    meta, tensors = flatten_state({"opt": opt_b.state_dict(), "sched": sched_b.state_dict()})
    blob_state = safetensors.torch.save(tensors)
    blob_model = safetensors.torch.save(model_b.state_dict())
    meta_json = json.dumps(meta)
    model_c, opt_c, sched_c = _tiny_setup(name, seed=123)  # different init: everything must come from the ckpt
    model_c.load_state_dict(safetensors.torch.load(blob_model))
    state = unflatten_state(json.loads(meta_json), safetensors.torch.load(blob_state))
    opt_c.load_state_dict(state["opt"])
    sched_c.load_state_dict(state["sched"])
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
    x = 2.0 * torch.randn(16, 1, 80, generator=g) + torch.randn(16, 200, 80, generator=g) - 5.0
    lengths = torch.randint(150, 201, (16,), generator=g)
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


# ----------------------------------------------------------------------------------------------------------------
# Per-group LR scales (model.param_groups() hook)
# ----------------------------------------------------------------------------------------------------------------
class _TwoPart(nn.Module):
    """A 'from scratch' part at scale 1.0 and a 'pretrained' part at 0.1, exposed through param_groups()."""

    def __init__(self, omit_bias: bool = False, duplicate: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.scratch = nn.Linear(6, 4)
        self.pretrained = nn.Linear(4, 3)
        self.omit_bias, self.duplicate = omit_bias, duplicate

    def param_groups(self):
        pre = [self.pretrained.weight] + ([] if self.omit_bias else [self.pretrained.bias])
        main = list(self.scratch.parameters()) + ([self.pretrained.weight] if self.duplicate else [])
        return [{"params": main, "lr_scale": 1.0, "name": "main"},
                {"params": pre, "lr_scale": 0.1, "name": "pretrained"}]

    def forward(self, x):
        return self.pretrained(torch.relu(self.scratch(x)))


@pytest.mark.parametrize("name", ["scaled_adam", "adamw"])
def test_param_group_lr_scales_follow_schedule(name):
    model = _TwoPart()
    cfg = OptimConfig(name=name, lr=0.04, warmup_batches=3, total_steps=20, eden_lr_batches=10)
    opt, sched = build_optimizer(model, cfg)
    # AdamW splits each LR group into decayed weights and undecayed biases, keeping the group's scale
    expect_scales = [1.0, 0.1] if name == "scaled_adam" else [1.0, 1.0, 0.1, 0.1]
    assert [g["lr_scale"] for g in opt.param_groups] == expect_scales
    assert opt.param_groups[0]["name"] == "main"
    g = torch.Generator().manual_seed(0)
    before = model.pretrained.weight.detach().clone()
    for b in range(1, 8):  # through warm-up and into the decay
        x = torch.randn(5, 6, generator=g)
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
        sched.step_batch()
        ref = _eden_ref(0.04, b, 0, B=10, warm=3) if name == "scaled_adam" else 0.04 * sched.factor()
        lrs = sched.get_last_lr()
        assert lrs[0] == pytest.approx(ref)  # the first group (the one the trainer logs) runs at the base schedule
        assert lrs[0] / lrs[-1] == pytest.approx(10.0)
        assert [gr["lr"] for gr in opt.param_groups] == lrs
    sched.step_epoch(2)
    assert opt.param_groups[0]["lr"] / opt.param_groups[-1]["lr"] == pytest.approx(10.0)
    assert not torch.equal(model.pretrained.weight, before)  # the scaled group does train
    # the scales survive a state_dict round trip into a fresh scheduler
    opt2, sched2 = build_optimizer(_TwoPart(), cfg)
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(sched.state_dict())
    assert sched2.get_last_lr() == sched.get_last_lr()
    assert [gr["lr"] for gr in opt2.param_groups] == [gr["lr"] for gr in opt.param_groups]


def test_scaled_group_moves_ten_times_less():
    """ScaledAdam's first step moves each tensor by lr x (1 - beta1) x its RMS: 10x less in the 0.1 group."""
    model = _TwoPart()
    with torch.no_grad():  # same RMS in both weights, so relative changes compare directly
        model.scratch.weight.copy_(torch.randn(4, 6))
        model.pretrained.weight.copy_(torch.randn(3, 4))
    opt, sched = build_optimizer(model, OptimConfig(lr=0.04, clipping_scale=None))
    w1, w2 = model.scratch.weight.detach().clone(), model.pretrained.weight.detach().clone()
    model(torch.randn(5, 6)).pow(2).mean().backward()
    opt.step()
    rel1 = ((model.scratch.weight - w1).norm() / w1.norm()).item()
    rel2 = ((model.pretrained.weight - w2).norm() / w2.norm()).item()
    assert rel1 == pytest.approx(0.04 * 0.5 * 0.1, rel=0.1)  # lr x warm-up start x (1 - beta1)
    assert rel1 / rel2 == pytest.approx(10.0, rel=0.05)


def test_param_groups_hook_is_validated():
    with pytest.raises(ValueError, match=r"in no group: 'pretrained\.bias'"):
        build_optimizer(_TwoPart(omit_bias=True), OptimConfig())
    with pytest.raises(ValueError, match=r"'pretrained\.weight' is in group 'main' and again in group 'pretrained'"):
        build_optimizer(_TwoPart(duplicate=True), OptimConfig(name="adamw", total_steps=5))
    frozen = _TwoPart()
    frozen.pretrained.bias.requires_grad_(False)
    with pytest.raises(ValueError, match=r"'pretrained\.bias', which is frozen"):
        build_optimizer(frozen, OptimConfig())
    # a scheduler state with a different number of groups is refused with a clear message
    opt1, sched1 = build_optimizer(nn.Linear(2, 2), OptimConfig())
    opt2, sched2 = build_optimizer(_TwoPart(), OptimConfig())
    with pytest.raises(ValueError, match="different parameter groups"):
        sched2.load_state_dict(sched1.state_dict())
