"""Balancer and Whiten: identity forward, gradient-only pushes in the right direction, wired into the Zipformer."""
import pytest
import torch

from audiolp.models.constraints import AbsValuePenalty, Balancer, Whiten, whitening_metric
from audiolp.models.zipformer import Zipformer, ZipformerConfig, count_parameters


def _on(module):
    module.train()
    module.constraints = True
    return module


def test_balancer_is_identity_forward_and_leaves_healthy_channels_alone():
    torch.manual_seed(0)
    x = torch.randn(500, 4)
    x[:, 0] = x[:, 0].abs() + 0.1  # all positive: violates max_positive=0.95
    x[:, 1] *= 0.01  # RMS 0.01: violates min_abs=0.2
    x = x.requires_grad_()
    bal = _on(Balancer(4, min_positive=0.05, max_positive=0.95, min_abs=0.2, max_abs=10.0, grad_scale=0.04, prob=1.0))
    y = bal(x)
    assert torch.equal(y, x)
    g = torch.randn(500, 4)
    y.backward(g)
    extra = x.grad - g
    assert torch.equal(extra[:, 2:], torch.zeros(500, 2))  # channels in range: gradient untouched, bit for bit
    assert (extra[:, 0] > 0).all()  # descent (x -= lr * grad) lowers the all-positive channel
    assert (extra[:, 1] * x[:, 1].detach() < 0).float().mean() > 0.99  # and grows the tiny one away from zero
    # The push is at most grad_scale of the task gradient, element by element; channel 1 (RMS 0.01 vs 0.2, a log
    # ratio of 3, capped at 1) gets the full grad_scale.
    assert (extra[:, :2].abs() <= 0.04 * g[:, :2].abs() + 1e-6).all()
    torch.testing.assert_close(extra[:, 1].abs(), 0.04 * g[:, 1].abs(), atol=1e-6, rtol=0)


def test_balancer_alone_repairs_violating_channels():
    torch.manual_seed(1)
    x = torch.randn(400, 3)
    x[:, 0] = x[:, 0].abs() + 0.5
    x[:, 1] *= 0.02
    x = torch.nn.Parameter(x)
    bal = _on(Balancer(3, min_positive=0.05, max_positive=0.9, min_abs=0.3, max_abs=10.0, grad_scale=0.5, prob=1.0))
    opt = torch.optim.SGD([x], lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        bal(x).backward(0.1 * torch.randn(400, 3))  # a zero-mean "task" gradient
        opt.step()
    assert float((x.detach()[:, 0] > 0).float().mean()) < 0.95
    assert float(x.detach()[:, 1].pow(2).mean().sqrt()) > 0.2


def test_balancer_raises_a_dead_all_negative_channel():
    """All values negative and tiny: the sign push (raise x) and the size push (grow |x|, i.e. lower x) must not
    cancel; the sign push wins, so every element of the channel gets a gradient that raises it."""
    x = torch.nn.Parameter(-0.1 * torch.rand(200, 2) - 0.01)
    x.data[:, 1] = torch.randn(200)  # a healthy channel beside it
    bal = _on(Balancer(2, min_positive=0.3, max_positive=0.95, min_abs=0.75, max_abs=10.0, grad_scale=0.04,
                       prob=1.0))
    g = torch.zeros(200, 2) + 1e-3  # a small task gradient: the push is a fraction of |g|
    bal(x).backward(g)
    extra = x.grad - g
    assert torch.all(extra[:, 0] < 0)  # descent (x -= lr * grad) raises every element of the dead channel
    assert torch.allclose(extra[:, 0], torch.full((200,), -0.04e-3), rtol=1e-5)  # the full sign push
    assert torch.all(extra[:, 1] == 0)


def test_whitening_metric_of_white_and_rank_one_data():
    torch.manual_seed(0)
    white = torch.randn(20_000, 16)
    assert float(whitening_metric(white)) == pytest.approx(1.0, abs=0.01)
    rank_one = torch.randn(1000, 1) * torch.randn(1, 16)
    assert float(whitening_metric(rank_one)) == pytest.approx(16.0, rel=1e-4)
    # groups are measured separately: group 0 white, group 1 rank one -> mean of 1 and 8
    mixed = torch.cat([torch.randn(20_000, 8), torch.randn(20_000, 1) * torch.randn(1, 8)], dim=1)
    assert float(whitening_metric(mixed, num_groups=2)) == pytest.approx(4.5, abs=0.02)
    with pytest.raises(ValueError, match="groups"):
        whitening_metric(white, num_groups=3)


def test_whiten_pushes_correlated_channels_apart_and_ignores_white_ones():
    torch.manual_seed(0)
    wh = _on(Whiten(whitening_limit=2.0, grad_scale=1.0, prob=1.0))
    white = torch.randn(4000, 8, requires_grad=True)
    g = torch.randn(4000, 8)
    wh(white).backward(g)
    assert torch.equal(white.grad, g)  # under the limit: untouched
    # Correlated channels under a zero-mean noise "task" gradient, with and without the whitening push.
    final = {}
    for enabled in (False, True):
        torch.manual_seed(0)
        wh.constraints = enabled
        x = torch.nn.Parameter(torch.randn(200, 1) * torch.randn(1, 8) + 0.1 * torch.randn(200, 8))
        assert float(whitening_metric(x.detach())) > 7.0
        opt = torch.optim.SGD([x], lr=0.5)
        for _ in range(100):
            opt.zero_grad()
            y = wh(x)
            assert torch.equal(y, x)
            y.backward(0.1 * torch.randn(200, 8))
            opt.step()
        final[enabled] = float(whitening_metric(x.detach()))
    # Measured: 2.72 from the noise alone, 1.24 with the push (under the limit of 2).
    assert final[True] < 2.0 < final[False]


def test_abs_value_penalty_pulls_only_values_beyond_the_limit():
    pen = _on(AbsValuePenalty(limit=25.0, penalty=1e-4, prob=1.0))
    x = torch.tensor([-40.0, -25.0, -3.0, 0.0, 10.0, 25.5, 80.0], requires_grad=True)
    y = pen(x)
    assert torch.equal(y, x)
    y.backward(torch.zeros(7))
    assert torch.equal(x.grad, torch.tensor([-1e-4, 0.0, 0.0, 0.0, 0.0, 1e-4, 1e-4]))
    pen.constraints = False  # switched off: no extra gradient
    x.grad = None
    pen(x).backward(torch.zeros(7))
    assert torch.equal(x.grad, torch.zeros(7))


def _tiny(**kw):
    return Zipformer(ZipformerConfig.preset("zipformer_tiny", dropout=0.0, pos_dropout=0.0, **kw))


def test_zipformer_constraints_change_gradients_only():
    torch.manual_seed(0)
    off = _tiny()
    on = _tiny(activation_constraints=True)
    on.load_state_dict(off.state_dict())
    assert count_parameters(on) == count_parameters(off)
    assert list(on.state_dict()) == list(off.state_dict())  # no parameters, no buffers: checkpoints unchanged
    x, lengths = torch.randn(3, 160, 80), torch.tensor([160, 140, 100])
    outs, grads = [], []
    for m in (off, on):
        m.train()
        m.set_batch_count(0)
        torch.manual_seed(5)
        y, _ = m(x, lengths)
        (y ** 2).sum().backward()
        outs.append(y.detach())
        grads.append({n: p.grad.clone() for n, p in m.named_parameters()})
    assert torch.equal(outs[0], outs[1])  # identity forward
    changed = [n for n in grads[0] if not torch.equal(grads[0][n], grads[1][n])]
    assert changed, "no constraint touched any gradient at batch 0 (where they are applied with prob 0.5)"
    # In eval (and when switched off) nothing is applied.
    on.eval()
    with torch.no_grad():
        assert torch.equal(on(x, lengths)[0], off.eval()(x, lengths)[0])


def test_zipformer_trains_with_constraints_in_bf16():
    torch.manual_seed(0)
    m = _tiny(activation_constraints=True)
    head = torch.nn.Linear(m.output_dim, 5)
    # Each clip has its own spectral offset, so the (pooled) clips are separable and the batch can be memorised.
    x, lengths = torch.randn(8, 150, 80) + 2 * torch.randn(8, 1, 80), torch.full((8,), 150)
    labels = (torch.rand(8, 5) > 0.5).float()
    opt = torch.optim.Adam(list(m.parameters()) + list(head.parameters()), lr=3e-3)
    losses = []
    m.train()
    for step in range(25):
        m.set_batch_count(step)
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y, n = m(x, lengths)
            logits = head(y.mean(1))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), labels)
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.1 * losses[0]  # measured: 0.777 -> 0.015, the same as without the constraints
