import math

import pytest
import torch

from echo.sdes import EchoSDE, SDERegistry, complex_randn_like


def test_registry_default_is_echo():
    assert SDERegistry.get_by_name("echo") is EchoSDE
    with pytest.raises(ValueError, match="unknown SDE"):
        SDERegistry.get_by_name("nope")


@pytest.mark.parametrize("t, alpha, sigma", [(0.04, 0.986, 0.165), (0.5, 0.487, 0.873), (1.0, 0.0724, 0.9974)])
def test_closed_forms_match_published_values(t, alpha, sigma):
    sde = EchoSDE()
    assert sde.alpha(t) == pytest.approx(alpha, abs=6e-4)
    assert sde.sigma(t) == pytest.approx(sigma, abs=6e-4)
    assert sde.alpha(t) ** 2 + sde.sigma(t) ** 2 == pytest.approx(1.0)


def test_alpha_integrates_beta():
    sde = EchoSDE()
    t = 0.7
    grid = torch.linspace(0, t, 20001, dtype=torch.float64)
    integral = torch.trapezoid(sde.beta(grid), grid)
    assert sde.alpha(t) == pytest.approx(math.exp(-0.5 * float(integral)), rel=1e-8)


def test_tensor_and_float_agree():
    sde = EchoSDE()
    t = torch.tensor([0.04, 0.5, 1.0], dtype=torch.float64)
    assert torch.allclose(sde.alpha(t), torch.tensor([sde.alpha(v) for v in t.tolist()], dtype=torch.float64))


def test_complex_noise_has_half_variance_per_part():
    x = torch.zeros(200_000, dtype=torch.complex64)
    z = complex_randn_like(x, torch.Generator().manual_seed(0))
    assert z.real.var().item() == pytest.approx(0.5, rel=0.02)
    assert z.imag.var().item() == pytest.approx(0.5, rel=0.02)


def test_perturb_matches_definition():
    sde = EchoSDE()
    s = torch.randn(3, 1, 8, 8, dtype=torch.complex64)
    n = torch.randn(3, 1, 8, 8, dtype=torch.complex64)
    t = torch.tensor([0.1, 0.5, 0.9])
    x_t = sde.perturb(s, t, n, generator=torch.Generator().manual_seed(1))
    eps = complex_randn_like(s, torch.Generator().manual_seed(1))
    a = sde.alpha(t).reshape(-1, 1, 1, 1)
    sig = sde.sigma(t).reshape(-1, 1, 1, 1)
    expected = a * s + sig * (eps + t.reshape(-1, 1, 1, 1) * n)
    assert torch.allclose(x_t, expected, atol=1e-6)


def test_prior_is_continuous_marginal_at_one():
    sde = EchoSDE()
    y = torch.full((1, 1, 64, 64), 2.0 + 0j, dtype=torch.complex64)
    x = sde.prior_sampling(y, torch.Generator().manual_seed(0))
    assert (x - 0.0724 * y).mean().abs() < 0.02
    assert (x - sde.alpha(1.0) * y).abs().square().mean().item() == pytest.approx(sde.sigma(1.0) ** 2, rel=0.05)


def test_discrete_schedule():
    betas, alphas, abar = EchoSDE().discrete_schedule(20)
    assert len(betas) == 20
    assert betas[0].item() == pytest.approx(0.5 / 20) and betas[-1].item() == pytest.approx(10 / 20)
    assert torch.allclose(abar, torch.cumprod(1 - betas, 0))


def test_sample_t_range():
    t = EchoSDE(t_eps=0.04).sample_t(10_000, "cpu", torch.Generator().manual_seed(0))
    assert t.min() >= 0.04 and t.max() <= 1.0


def test_invalid_parameters():
    with pytest.raises(ValueError):
        EchoSDE(beta_min=2, beta_max=1)
    with pytest.raises(ValueError):
        EchoSDE(t_eps=0)
