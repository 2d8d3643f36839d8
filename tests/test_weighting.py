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


# --- every scheme of the registry against hand-computed values ------------------------------
# Two samples, one channel, three frames: energies [1, 2, 0] and [0, 0, 0] (uniform: H = 1).
PRED2 = torch.tensor([[[1.0, 2.0**0.5, 0.0]], [[0.0, 0.0, 0.0]]])
H2 = [hand_entropy([1.0, 2.0, 0.0]), 1.0]
W2 = [hand_weight(H2[0]), 1.0 / (1.0 - math.log(1e-12))]  # H = 1 hits the eps floor
T2 = torch.tensor([0.25, 0.8])


def run_scheme(name, pred=PRED2, t=T2, **params):
    return get_scheme(name, **params)(pred, torch.zeros_like(pred), t, None).tolist()


def test_none_and_constant_by_hand():
    assert run_scheme("none") == [1.0, 1.0]
    assert run_scheme("constant", c=0.6) == pytest.approx([0.6, 0.6])
    with pytest.raises(ValueError, match="c must be > 0"):
        get_scheme("constant", c=0.0)


def test_eisbach_family_by_hand():
    lam = 0.3
    s = [(1 - lam) + lam * w for w in W2]
    assert run_scheme("eisbach", lam=lam) == pytest.approx(s, abs=1e-6)
    mean_w = sum(W2) / 2
    assert run_scheme("eisbach_batchmean", lam=lam) == pytest.approx(
        [(1 - lam) + lam * mean_w] * 2, abs=1e-6
    )
    assert run_scheme("eisbach_inverse", lam=lam) == pytest.approx(
        [(1 - lam) + lam * (1 - w) for w in W2], abs=1e-6
    )


def test_shuffled_is_a_seeded_permutation():
    torch.manual_seed(3)
    pred = torch.randn(6, 2, 9) * torch.arange(1, 7).view(6, 1, 1)  # distinct weights
    t = torch.rand(6)
    lam = 0.5
    plain = get_scheme("eisbach", lam=lam)(pred, pred, t, None)
    scheme = get_scheme("eisbach_shuffled", lam=lam, seed=11)
    generator = torch.Generator().manual_seed(11)
    for _ in range(3):  # the generator advances once per call
        order = torch.randperm(6, generator=generator)
        torch.testing.assert_close(scheme(pred, pred, t, None), plain[order])
    again = get_scheme("eisbach_shuffled", lam=lam, seed=11)
    torch.testing.assert_close(
        again(pred, pred, t, None),
        plain[torch.randperm(6, generator=torch.Generator().manual_seed(11))],
    )
    assert scheme.generator is not None  # its state goes into checkpoints


def test_min_snr_by_hand():
    # rectified flow: w = min((1 - t)^2, gamma t^2)
    assert run_scheme("min_snr", gamma=5.0) == pytest.approx(
        [min(0.75**2, 5 * 0.25**2), min(0.2**2, 5 * 0.8**2)], abs=1e-6
    )
    # v: SNR = cot^2(pi t / 2), w = min(SNR, gamma) / (SNR + 1)
    t = torch.tensor([0.5, 0.1])
    snr = [1.0 / math.tan(math.pi * x / 4) ** 2 for x in (1.0, 0.2)]
    assert run_scheme("min_snr", t=t, gamma=5.0, objective="v") == pytest.approx(
        [min(s, 5.0) / (s + 1) for s in snr], abs=1e-5
    )


def test_min_snr_is_the_x0_weight_on_the_target():
    """The rectified-flow weight times the target MSE equals min(SNR, gamma) times the x0 MSE."""
    from eisbach.objectives import noisy_input

    torch.manual_seed(0)
    x0, noise, t = torch.randn(3, 2, 5), torch.randn(3, 2, 5), torch.tensor([0.2, 0.5, 0.9])
    x_t, target = noisy_input("rectified_flow", x0, noise, t)
    pred = target + 0.1 * torch.randn_like(target)
    x0_hat = x_t - t.view(-1, 1, 1) * pred
    snr = ((1 - t) / t) ** 2
    x0_mse = (x0_hat - x0).pow(2).mean(dim=(1, 2))
    target_mse = (pred - target).pow(2).mean(dim=(1, 2))
    w = get_scheme("min_snr", gamma=5.0)(pred, target, t, None)
    torch.testing.assert_close(w * target_mse, torch.minimum(snr, torch.tensor(5.0)) * x0_mse)


def test_computed_in_fp32_under_autocast():
    torch.manual_seed(2)
    pred = torch.randn(3, 4, 16)
    reference = get_scheme("eisbach", lam=0.5)(pred, pred, torch.rand(3), None)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = pred.bfloat16()
        for name in REGISTRY:
            w = get_scheme(name)(low, low, torch.rand(3), None)
            assert w.dtype == torch.float32, name
        got = get_scheme("eisbach", lam=0.5)(low, low, torch.rand(3), None)
    torch.testing.assert_close(got, reference, rtol=2e-2, atol=2e-2)  # bf16 input, fp32 maths


LAMBDA_NAMES = ["eisbach", "eisbach_batchmean", "eisbach_shuffled", "eisbach_inverse"]


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(LAMBDA_NAMES),
    batch=st.integers(1, 4),
    channels=st.integers(1, 3),
    frames=st.integers(2, 10),
    pad=st.integers(1, 5),
    lam=st.floats(0.0, 1.0),
    scale=st.floats(0.01, 30.0),
    seed=st.integers(0, 2**16),
)
def test_properties_of_every_lambda_scheme(name, batch, channels, frames, pad, lam, scale, seed):
    """w in (0, 1], s in [1 - lam, 1]; padding changes nothing; lam = 0 is `none`; detached."""
    generator = torch.Generator().manual_seed(seed)
    pred = scale * torch.randn(batch, channels, frames, generator=generator)
    t = torch.rand(batch, generator=generator)
    junk = 50.0 * torch.randn(batch, channels, pad, generator=generator)
    padded = torch.cat([pred, junk], -1)
    mask = torch.zeros(batch, frames + pad, dtype=torch.bool)
    mask[:, :frames] = True

    def fresh(lam_):
        params = {"lam": lam_} | ({"seed": seed} if name == "eisbach_shuffled" else {})
        return get_scheme(name, **params)

    w = fresh(1.0)(pred, pred, t, None)
    s = fresh(lam)(pred, pred, t, None)
    if name != "eisbach_inverse":  # at lam = 1 the inverse gives 1 - w, in [0, 1)
        assert torch.all(w > 0) and torch.all(w <= 1)
    assert torch.all(s >= 1 - lam - 1e-6) and torch.all(s <= 1 + 1e-6)
    torch.testing.assert_close(fresh(lam)(padded, padded, t, mask), s)
    assert torch.equal(fresh(0.0)(pred, pred, t, None), get_scheme("none")(pred, pred, t, None))

    leaf = pred.clone().requires_grad_(True)
    target = torch.zeros_like(pred)
    weights = fresh(lam)(leaf, target, t, None)
    assert not weights.requires_grad
    _, loss = weighted_loss(leaf, target, weights, None)
    loss.backward()
    expected = weights.view(-1, 1, 1) * 2 * pred / (channels * frames) / batch
    torch.testing.assert_close(leaf.grad, expected)  # the weight acts as a constant
