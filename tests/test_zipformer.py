"""Zipformer encoder: exact parameter counts, shapes, padding invariance, gradients, autocast, config round-trip."""
import dataclasses
import json
import math

import pytest
import torch
from torch import nn

from audiolp.models.zipformer import (
    BiasNorm,
    ZipformerConfig,
    Zipformer,
    compact_rel_pos_encoding,
    count_parameters,
    load_icefall_state_dict,
    swoosh_l,
    swoosh_r,
    zipformer_m,
    zipformer_s,
    zipformer_tiny,
)


def _tiny(**kw) -> Zipformer:
    torch.manual_seed(0)
    return Zipformer(zipformer_tiny(**kw))


# ---------------------------------------------------------------- parameter counts (AudioSet recipe figures)


def test_zipformer_m_parameter_count_matches_recipe():
    m = Zipformer(zipformer_m())
    assert count_parameters(m.encoder_embed) == 611_953
    assert count_parameters(m) == 63_988_343
    # icefall layers also hold an unused bypass_scale (5,760 values in M): embed + encoder = 63,994,103.
    m2 = Zipformer(zipformer_m(include_unused_bypass_scale=True))
    assert count_parameters(m2.encoder) == 63_382_150
    assert count_parameters(m2) == 63_994_103
    # + the 527-way AudioSet head = the AT model's 64,264,454.
    assert count_parameters(m2) + count_parameters(nn.Linear(m2.output_dim, 527)) == 64_264_454


def test_zipformer_s_parameter_count_matches_recipe():
    m = Zipformer(zipformer_s())
    assert count_parameters(m) == 21_986_835
    m2 = Zipformer(zipformer_s(include_unused_bypass_scale=True))
    assert m2.output_dim == 256
    # AT-S total 22,125,218 = embed + encoder (incl. unused bypass_scale) + Linear(256, 527).
    assert count_parameters(m2) + count_parameters(nn.Linear(256, 527)) == 22_125_218


# ---------------------------------------------------------------- shapes


def test_tiny_shapes_and_attributes():
    m = _tiny().eval()
    x = torch.randn(2, 200, 80)
    lengths = torch.tensor([200, 200])
    with torch.no_grad():
        emb, emb_len = m.encoder_embed(x, lengths)
        assert emb.shape == (2, 96, 32) and emb_len.tolist() == [96, 96]
        y, y_len = m(x, lengths)
    assert y.shape == (2, 48, 64)
    assert y_len.tolist() == [48, 48]
    assert m.output_dim == 64 and m.frame_hop_ms == 40.0
    assert m.config.output_dim == 64 and m.config.frame_hop_ms == 40.0
    assert m.out_lengths(torch.tensor([200, 117])).tolist() == [48, 28]


def test_m_forward_1000_frames():
    torch.manual_seed(0)
    m = Zipformer(zipformer_m()).eval()
    with torch.no_grad():
        y, y_len = m(torch.randn(1, 1000, 80), torch.tensor([1000]))
    assert y.shape == (1, 248, 512)
    assert y_len.tolist() == [248]
    assert torch.isfinite(y).all()


# ---------------------------------------------------------------- numerics of the pieces


def test_swoosh_values():
    z = torch.zeros(1)
    assert abs(swoosh_r(z).item()) < 1e-6
    assert swoosh_l(z).item() == pytest.approx(math.log1p(math.exp(-4.0)) - 0.035, abs=1e-6)  # -0.01685
    assert swoosh_l(z).item() == pytest.approx(-0.01685, abs=1e-4)
    # large inputs: ~ (1 - 0.08) x, no overflow
    assert swoosh_r(torch.tensor([100.0])).item() == pytest.approx(100 - 1 - 8 - 0.313261687, rel=1e-5)


def test_biasnorm_formula():
    bn = BiasNorm(6)
    with torch.no_grad():
        bn.bias.copy_(torch.arange(6.0) * 0.1)
        bn.log_scale.fill_(0.3)
    x = torch.randn(3, 4, 6)
    want = x * math.exp(0.3) / ((x - bn.bias) ** 2).mean(-1, keepdim=True).sqrt()
    torch.testing.assert_close(bn(x), want)


def test_compact_rel_pos_encoding():
    T, d = 6, 16
    pe = compact_rel_pos_encoding(T, d, "cpu", torch.float32)
    assert pe.shape == (2 * T - 1, d)
    assert torch.all(pe[:, -1] == 1.0)
    center = T - 1  # row of offset 0
    # offset 0: theta = 0 -> cos 1, sin 0
    assert torch.allclose(pe[center, 0::2], torch.ones(d // 2))
    assert torch.allclose(pe[center, 1:-1:2], torch.zeros(d // 2 - 1))
    # +x vs -x: cosines equal, sines opposite
    torch.testing.assert_close(pe[center + 3, 0::2], pe[center - 3, 0::2])
    torch.testing.assert_close(pe[center + 3, 1:-1:2], -pe[center - 3, 1:-1:2])
    # the formula for one entry
    x, c = 3.0, d ** 0.5
    theta = math.atan(c * (math.log(x + c) - math.log(c)) / (d / (2 * math.pi)))
    assert pe[center + 3, 2].item() == pytest.approx(math.cos(2 * theta), abs=1e-6)


def test_relative_position_scores_use_offset_j_minus_i():
    """The strided rel-shift must equal an explicit gather of pe(j - i)."""
    m = _tiny().eval()
    aw = m.encoder.encoders[0].layers[0].self_attn_weights
    N, T, D = 2, 7, 32
    x = torch.randn(N, T, D)
    pe = compact_rel_pos_encoding(T, 16, "cpu", torch.float32)
    with torch.no_grad():
        got = aw(x, pe, None)
        H, dq, dp = aw.num_heads, aw.query_head_dim, aw.pos_head_dim
        proj = aw.in_proj(x)
        q = proj[..., : H * dq].reshape(N, T, H, dq)
        k = proj[..., H * dq: 2 * H * dq].reshape(N, T, H, dq)
        p = proj[..., 2 * H * dq:].reshape(N, T, H, dp)
        pos = aw.linear_pos(pe).reshape(2 * T - 1, H, dp)
        idx = torch.arange(T)[None, :] - torch.arange(T)[:, None] + (T - 1)  # [i, j] -> row of offset j - i
        pos_ij = pos[idx]  # (T, T, H, dp)
        scores = torch.einsum("nihd,njhd->nhij", q, k) + torch.einsum("nihd,ijhd->nhij", p, pos_ij)
        want = scores.softmax(-1)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------- padding, determinism, gradients


def test_batched_equals_single_on_valid_frames():
    m = _tiny().eval()
    lengths = [200, 151, 117, 60]
    x = torch.randn(len(lengths), 200, 80)
    for i, n in enumerate(lengths):
        x[i, n:] = 1e3 * torch.randn(200 - n, 80)  # loud garbage in the padding
    with torch.no_grad():
        yb, lb = m(x, torch.tensor(lengths))
        for i, n in enumerate(lengths):
            y1, l1 = m(x[i: i + 1, :n], torch.tensor([n]))
            assert l1.item() == lb[i].item()
            torch.testing.assert_close(yb[i, : l1.item()], y1[0], atol=1e-5, rtol=1e-4)
            assert torch.all(yb[i, l1.item():] == 0)  # padded output frames are zero


def test_eval_is_deterministic_and_train_mode_differs():
    m = _tiny(regularizers=True)
    x, lengths = torch.randn(2, 150, 80), torch.tensor([150, 120])
    m.eval()
    with torch.no_grad():
        a, _ = m(x, lengths)
        b, _ = m(x, lengths)
    assert torch.equal(a, b)
    m.train()
    m.set_batch_count(100)
    with torch.no_grad():
        c, _ = m(x, lengths)
    assert not torch.allclose(a, c)  # dropout/skips are active in training


def test_every_parameter_gets_a_gradient():
    m = _tiny()
    m.train()
    y, lengths = m(torch.randn(3, 160, 80), torch.tensor([160, 140, 100]))
    (y ** 2).sum().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []


def test_regularizers_keep_every_trainable_parameter_in_the_graph():
    """DDP with find_unused_parameters=False (the default) needs a gradient for every trainable parameter in every
    step: also when a layer skips its positional scores (rate 0.5 at batch 0), and with the unused (frozen)
    icefall bypass_scale held for key parity."""
    m = _tiny(regularizers=True, include_unused_bypass_scale=True)
    m.train()
    m.set_batch_count(0)
    frozen = [n for n, p in m.named_parameters() if not p.requires_grad]
    assert frozen and all(n.endswith(".bypass_scale") and ".layers." in n for n in frozen)
    for _ in range(8):  # 4 attention layers x 8 steps at a 0.5 skip rate: a step without a skip is ~1 in 256
        m.zero_grad(set_to_none=True)
        y, _ = m(torch.randn(2, 120, 80), torch.tensor([120, 100]))
        y.sum().backward()
        assert [n for n, p in m.named_parameters() if p.requires_grad and p.grad is None] == []


def test_lengths_beyond_the_time_axis_are_an_error():
    with pytest.raises(ValueError, match="lengths go up to 200 but features have 120 frames"):
        _tiny()(torch.randn(2, 120, 80), torch.tensor([120, 200]))


def test_regularizers_schedule_and_training_step():
    m = _tiny(regularizers=True)
    m.train()
    m.set_batch_count(0)
    layer0 = m.encoder.encoders[0].layers[0]
    # stack 0 warms up in [4000/5, 8000/5]: full 0.5 skip rate before it, 0.035 after
    assert layer0.bypass.skip_rate(0) == pytest.approx(0.5)
    assert layer0.bypass.skip_rate(10_000) == pytest.approx(0.035)
    assert layer0.bypass.skip_rate(None) == 0.0
    assert m.encoder.encoders[0].layers[0].feed_forward1.dropout == pytest.approx(0.3)
    m.set_batch_count(20_000)
    assert m.encoder.encoders[0].layers[0].feed_forward1.dropout == pytest.approx(0.1)
    y, _ = m(torch.randn(4, 120, 80), torch.tensor([120, 100, 90, 80]))
    y.sum().backward()
    assert torch.isfinite(y).all()


def test_attention_scaling_changes_scores():
    m = _tiny().eval()
    x, lengths = torch.randn(1, 120, 80), torch.tensor([120])
    with torch.no_grad():
        a, _ = m(x, lengths)
        m.set_attention_scaling(True)
        assert m.config.attention_scaling
        b, _ = m(x, lengths)
    assert not torch.allclose(a, b)


def test_bf16_autocast_on_cpu():
    m = _tiny()
    x, lengths = torch.randn(2, 200, 80), torch.tensor([200, 180])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, y_len = m(x, lengths)
    assert y.shape == (2, 48, 64)
    assert torch.isfinite(y.float()).all()
    y.float().sum().backward()


# ---------------------------------------------------------------- config


def test_config_json_round_trip_and_presets():
    for name in ("zipformer_m", "zipformer_s", "zipformer_tiny"):
        cfg = ZipformerConfig.preset(name)
        d = json.loads(json.dumps(dataclasses.asdict(cfg)))  # tuples come back as lists
        assert isinstance(d["encoder_dim"], list)
        assert ZipformerConfig(**d) == cfg
        assert ZipformerConfig.from_dict(d) == cfg
    assert ZipformerConfig.preset("zipformer_tiny", dropout=0.0).dropout == 0.0
    assert zipformer_m().output_dim == 512 and zipformer_m().frame_hop_ms == 40.0
    m = Zipformer(dataclasses.asdict(zipformer_tiny()))  # a plain dict is accepted too
    assert m.output_dim == 64


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="unknown Zipformer preset"):
        ZipformerConfig.preset("zipformer_xl")
    with pytest.raises(ValueError, match="num_heads"):
        zipformer_tiny(num_heads=(4, 4))
    with pytest.raises(ValueError, match="encoder_unmasked_dim"):
        zipformer_tiny(encoder_unmasked_dim=(64, 32, 48, 32))
    with pytest.raises(ValueError, match="unknown field"):
        ZipformerConfig.from_dict({"bogus": 1})
    m = _tiny()
    with pytest.raises(ValueError, match="features"):
        m(torch.randn(2, 100, 40), torch.tensor([100, 100]))
    with pytest.raises(ValueError, match="9 input frames"):
        m(torch.randn(1, 8, 80), torch.tensor([8]))


def test_parameter_names_follow_icefall_and_load_helper():
    m = Zipformer(zipformer_tiny(include_unused_bypass_scale=True))
    keys = set(m.state_dict())
    # a sample of the names of the icefall Zipformer2 / Conv2dSubsampling parameters
    for k in ("encoder_embed.conv.0.weight", "encoder_embed.conv.4.weight", "encoder_embed.conv.7.bias",
              "encoder_embed.convnext.pointwise_conv2.weight", "encoder_embed.out.weight",
              "encoder_embed.out_norm.log_scale", "encoder.encoders.0.layers.0.self_attn_weights.in_proj.weight",
              "encoder.encoders.0.layers.0.self_attn_weights.linear_pos.weight",
              "encoder.encoders.1.downsample.bias", "encoder.encoders.1.out_combiner.bypass_scale",
              "encoder.encoders.1.encoder.layers.0.feed_forward3.out_proj.weight",
              "encoder.encoders.1.encoder.layers.0.conv_module2.depthwise_conv.weight",
              "encoder.encoders.1.encoder.layers.0.bypass_scale", "encoder.downsample_output.bias"):
        assert k in keys, k
    # an AT-style checkpoint (encoder + classifier, unused bypass_scale) loads into the default model
    src = dict(m.state_dict())
    src["classifier.1.weight"] = torch.zeros(3, 64)
    dst = _tiny()
    load_icefall_state_dict(dst, src)
    for k, v in dst.state_dict().items():
        assert torch.equal(v, src[k]), k
