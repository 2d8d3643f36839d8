"""Objectives (rectified flow, v) and timestep samplers against hand-computed values."""

import math

import pytest
import torch

from eisbach.objectives import SAMPLERS, log_snr, noisy_input, sample_timesteps


def test_rectified_flow_by_hand():
    x0, noise, t = torch.tensor([[[2.0, -1.0]]]), torch.tensor([[[0.5, 1.0]]]), torch.tensor([0.25])
    x_t, target = noisy_input("rectified_flow", x0, noise, t)
    torch.testing.assert_close(x_t, torch.tensor([[[0.75 * 2 + 0.25 * 0.5, -0.75 + 0.25]]]))
    torch.testing.assert_close(target, torch.tensor([[[0.5 - 2.0, 1.0 + 1.0]]]))
    torch.testing.assert_close(x_t - t * target, x0)  # x0 from the velocity


def test_v_by_hand():
    x0, noise, t = torch.tensor([[[2.0]]]), torch.tensor([[[0.5]]]), torch.tensor([1 / 3])
    alpha, sigma = math.cos(math.pi / 6), math.sin(math.pi / 6)
    x_t, target = noisy_input("v", x0, noise, t)
    assert x_t.item() == pytest.approx(alpha * 2 + sigma * 0.5, abs=1e-6)
    assert target.item() == pytest.approx(alpha * 0.5 - sigma * 2, abs=1e-6)
    assert (alpha * x_t - sigma * target).item() == pytest.approx(2.0, abs=1e-6)


def test_endpoints_and_log_snr():
    x0, noise = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    for objective in ("rectified_flow", "v"):
        x_t, _ = noisy_input(objective, x0, noise, torch.zeros(2))
        torch.testing.assert_close(x_t, x0)
        x_t, _ = noisy_input(objective, x0, noise, torch.ones(2))
        torch.testing.assert_close(x_t, noise, atol=1e-6, rtol=0)
        # t = 0.5 has SNR 1 in both
        assert log_snr(objective, torch.tensor([0.5])).item() == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ValueError, match="eps"):
        noisy_input("eps", x0, noise, torch.zeros(2))


def test_samplers_are_seeded_and_in_range():
    for name in SAMPLERS:
        a = sample_timesteps(name, 1000, torch.Generator().manual_seed(1))
        b = sample_timesteps(name, 1000, torch.Generator().manual_seed(1))
        assert torch.equal(a, b), name
        assert a.dtype == torch.float32 and a.min() >= 0 and a.max() <= 1, name
    with pytest.raises(ValueError, match="cosine"):
        sample_timesteps("cosine", 3, torch.Generator())


def test_sampler_distributions():
    g = torch.Generator().manual_seed(0)
    u = sample_timesteps("uniform", 100_000, g)
    assert u.mean().item() == pytest.approx(0.5, abs=0.01)
    ln = sample_timesteps("logit_normal", 100_000, g)
    assert ln.median().item() == pytest.approx(0.5, abs=0.01)
    assert torch.quantile(ln, 0.9).item() == pytest.approx(1 / (1 + math.exp(-1.2816)), abs=0.01)
    # Stable Audio 3: mean ~0.54, 10th-90th percentiles ~0.24-0.84 (measured)
    tl = sample_timesteps("trunc_logit_normal", 100_000, g)
    assert tl.mean().item() == pytest.approx(0.54, abs=0.01)
    p10, p90 = torch.quantile(tl, torch.tensor([0.1, 0.9])).tolist()
    assert p10 == pytest.approx(0.24, abs=0.01) and p90 == pytest.approx(0.84, abs=0.01)
    assert tl.max().item() <= 1.0 and tl.min().item() >= 0.0
