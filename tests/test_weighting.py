"""Eq.1-5 of the Eisbach log-barrier against hand-computed values."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from eisbach.weighting import REGISTRY, get_scheme, temporal_entropy, weighted_loss


def hand_entropy(energies):
    z = sum(math.exp(e) for e in energies)
    p = [math.exp(e) / z for e in energies]
    return -sum(q * math.log(q) for q in p) / math.log(len(energies))


def hand_weight(h):
    return 1.0 / (1.0 - math.log(1.0 - h))


def test_eq1_to_eq5_by_hand():
    # Two channels, three frames: e = mean_c pred^2 = [(1+1)/2, (4+0)/2, 0] = [1, 2, 0].
    pred = torch.tensor([[[1.0, 2.0, 0.0], [-1.0, 0.0, 0.0]]])
    h = hand_entropy([1.0, 2.0, 0.0])
    w = hand_weight(h)
    scheme = get_scheme("eisbach", lam=0.5)
    s = scheme(
        pred, torch.zeros_like(pred), torch.tensor([0.5]), torch.ones(1, 3, dtype=torch.bool)
    )
    assert temporal_entropy(pred).item() == pytest.approx(h, abs=1e-6)
    assert s.item() == pytest.approx(0.5 + 0.5 * w, abs=1e-6)
    assert 0.5 < s.item() < 1.0


def test_padding_changes_nothing():
    torch.manual_seed(0)
    pred = torch.randn(3, 4, 10)
    mask = torch.ones(3, 10, dtype=torch.bool)
    mask[1, 6:] = False
    mask[2, 3:] = False
    padded = pred.clone()
    padded[~mask.unsqueeze(1).expand_as(padded)] = 1e3  # loud junk in the padding
    scheme = get_scheme("eisbach", lam=0.5)
    a = scheme(pred, pred, torch.rand(3), mask)
    b = scheme(padded, padded, torch.rand(3), mask)
    torch.testing.assert_close(a, b)
    # and equal to the unpadded computation of each row
    for i, n in enumerate([10, 6, 3]):
        alone = scheme(pred[i : i + 1, :, :n], pred[i : i + 1, :, :n], torch.rand(1), None)
        torch.testing.assert_close(a[i : i + 1], alone)


def test_entropy_limits():
    one_hot = torch.zeros(1, 1, 8)
    one_hot[0, 0, 3] = 100.0  # energy 1e4 on one frame: softmax is one-hot
    assert temporal_entropy(one_hot).item() == pytest.approx(0.0, abs=1e-6)
    uniform = torch.ones(1, 3, 8)
    assert temporal_entropy(uniform).item() == pytest.approx(1.0, abs=1e-6)
    w_peaked = get_scheme("eisbach", lam=1.0)(one_hot, one_hot, torch.zeros(1), None)
    w_flat = get_scheme("eisbach", lam=1.0)(uniform, uniform, torch.zeros(1), None)
    assert w_peaked.item() == pytest.approx(1.0, abs=1e-6)
    assert 0.0 < w_flat.item() < 0.1  # the barrier: w -> 0 as H -> 1, floored by fp32 eps


def test_weight_is_detached():
    pred = torch.randn(4, 3, 12, requires_grad=True)
    target = torch.randn(4, 3, 12)
    for name in REGISTRY:
        w = get_scheme(name)(pred, target, torch.rand(4), None)
        assert not w.requires_grad, name
        assert w.shape == (4,), name
    w = get_scheme("eisbach", lam=0.5)(pred, target, torch.rand(4), None)
    per_sample, loss = weighted_loss(pred, target, w, None)
    loss.backward()
    # d loss / d pred = w_b * dmse_b/dpred / B exactly as if w were a constant
    expected = w.view(4, 1, 1) * 2 * (pred.detach() - target) / (3 * 12) / 4
    torch.testing.assert_close(pred.grad, expected)


def test_lambda_zero_is_none_and_bounds():
    torch.manual_seed(1)
    pred = torch.randn(5, 2, 7)
    t = torch.rand(5)
    torch.testing.assert_close(
        get_scheme("eisbach", lam=0.0)(pred, pred, t, None), get_scheme("none")(pred, pred, t, None)
    )
    s = get_scheme("eisbach", lam=0.5)(pred, pred, t, None)
    assert torch.all(s >= 0.5) and torch.all(s <= 1.0)


def test_masked_mse():
    pred = torch.zeros(1, 2, 4)
    target = torch.ones(1, 2, 4)
    target[..., 2:] = 100.0
    mask = torch.tensor([[True, True, False, False]])
    per_sample, _ = weighted_loss(pred, target, torch.ones(1), mask)
    assert per_sample.item() == pytest.approx(1.0)


def test_unknown_scheme_and_bad_lambda():
    with pytest.raises(KeyError, match="nonsense"):
        get_scheme("nonsense")
    with pytest.raises(ValueError, match="lam"):
        get_scheme("eisbach", lam=1.5)


@settings(max_examples=60, deadline=None)
@given(
    batch=st.integers(1, 4),
    channels=st.integers(1, 3),
    frames=st.integers(2, 12),
    pad=st.integers(0, 5),
    lam=st.floats(0.0, 1.0),
    scale=st.floats(0.01, 30.0),
    seed=st.integers(0, 2**16),
)
def test_properties(batch, channels, frames, pad, lam, scale, seed):
    generator = torch.Generator().manual_seed(seed)
    pred = scale * torch.randn(batch, channels, frames, generator=generator)
    t = torch.rand(batch, generator=generator)
    padded = torch.cat([pred, 50.0 * torch.randn(batch, channels, pad, generator=generator)], -1)
    mask = torch.zeros(batch, frames + pad, dtype=torch.bool)
    mask[:, :frames] = True
    scheme = get_scheme("eisbach", lam=lam)
    s = scheme(pred, pred, t, None)
    w = get_scheme("eisbach", lam=1.0)(pred, pred, t, None)
    assert torch.all(w > 0) and torch.all(w <= 1)
    assert torch.all(s >= 1 - lam - 1e-6) and torch.all(s <= 1 + 1e-6)
    torch.testing.assert_close(scheme(padded, padded, t, mask), s)
    torch.testing.assert_close(
        get_scheme("eisbach", lam=0.0)(pred, pred, t, None), get_scheme("none")(pred, pred, t, None)
    )
