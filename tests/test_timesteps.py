"""Every timestep sampler Stable Audio 3 defines (training/diffusion.py) against the package's
own formula (inference/sampling.py at the pinned commit), draw for draw where the draws can be
shared: the package draws from torch's global generator, the project from a seeded one, and
on the CPU both give the same numbers for the same seed.

Skips only when ../shared is absent (no wheel to install).
"""

import pytest
import torch

from eisbach.objectives import SA3_SAMPLERS, SAMPLERS, sample_timesteps

N = 4096


def ours(name, seed, **options):
    return sample_timesteps(name, N, torch.Generator().manual_seed(seed), **options)


def test_every_upstream_sampler_has_a_project_sampler():
    # the Literal of DiffusionCondTrainingWrapper's timestep_sampler argument
    assert set(SA3_SAMPLERS) == {
        "uniform",
        "logit_normal",
        "trunc_logit_normal",
        "log_snr",
        "log_snr_uniform",
    }
    assert set(SA3_SAMPLERS.values()) <= set(SAMPLERS)


@pytest.mark.parametrize("seed", [0, 7])
def test_trunc_logit_normal_is_upstreams_flipped(sa3, seed):
    from stable_audio_3.inference.sampling import truncated_logistic_normal_rescaled

    torch.manual_seed(seed)
    upstream = 1 - truncated_logistic_normal_rescaled(N)  # the trainer flips it
    torch.testing.assert_close(
        ours("trunc_logit_normal", seed), upstream, rtol=0, atol=1e-5
    )  # its float32


@pytest.mark.parametrize("options", [{}, {"mean_logsnr": 0.5, "std_logsnr": 1.0}])
def test_log_snr_is_upstreams(sa3, options):
    from stable_audio_3.inference.sampling import sample_timesteps_logsnr

    torch.manual_seed(3)
    upstream = sample_timesteps_logsnr(N, **options)
    torch.testing.assert_close(ours("log_snr", 3, **options), upstream, rtol=0, atol=1e-7)


@pytest.mark.parametrize("options", [{}, {"min_logsnr": -3.0, "max_logsnr": 2.0}])
def test_log_snr_uniform_is_upstreams(sa3, options):
    from stable_audio_3.inference.sampling import sample_timesteps_logsnr_uniform

    torch.manual_seed(4)
    upstream = sample_timesteps_logsnr_uniform(N, **options)
    torch.testing.assert_close(ours("log_snr_uniform", 4, **options), upstream, rtol=0, atol=1e-7)


def test_logit_normal_is_upstreams(sa3):
    torch.manual_seed(5)
    upstream = torch.sigmoid(torch.randn(N))  # training_step's logit_normal branch
    torch.testing.assert_close(ours("logit_normal", 5), upstream, rtol=0, atol=0)


def test_sobol_is_upstreams_uniform_per_batch():
    """Upstream's uniform continues one scrambled Sobol sequence over the steps (SobolEngine(1,
    scramble=True).draw(batch)); the project scrambles afresh per step. At a power-of-two batch
    both put exactly one timestep in each 1/batch of [0, 1) at every step."""
    upstream = torch.quasirandom.SobolEngine(1, scramble=True, seed=11)
    for step in range(8):
        for batch in (
            upstream.draw(4)[:, 0],
            sample_timesteps("sobol", 4, torch.Generator().manual_seed(step)),
        ):
            assert sorted((batch * 4).floor().long().tolist()) == [0, 1, 2, 3]
    g = torch.Generator().manual_seed(0)
    again = torch.Generator().manual_seed(0)
    assert torch.equal(sample_timesteps("sobol", 8, g), sample_timesteps("sobol", 8, again))
    big = sample_timesteps("sobol", 1 << 14, torch.Generator().manual_seed(1))
    assert 0 <= big.min() and big.max() < 1 and abs(big.mean().item() - 0.5) < 1e-3


def test_bad_options_are_refused_by_name():
    with pytest.raises(ValueError, match=r"'log_snr': bad options \{'mean': 0\}"):
        ours("log_snr", 0, mean=0)


def test_paper_profile_names_sa3_loras_sampler():
    import yaml
    from conftest import REPO

    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    assert paper["backend"]["stable_audio_3"]["timestep_sampler"] == "trunc_logit_normal"
    assert "timestep_sampler" not in paper["train"]  # so the backend's named one is used
