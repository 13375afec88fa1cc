import pytest
import torch

from conftest import TINY_BACKBONE
from echo.model import ScoreModel
from echo.sampling import SamplerError, sample, sampler_defaults
from echo.sampling.predictors import EchoPosterior
from echo.sdes import EchoSDE, OUVESDE


@pytest.fixture(scope="module")
def echo_model():
    torch.manual_seed(0)
    return ScoreModel(**TINY_BACKBONE).eval()


def noisy_spec(seed=0, frames=16):
    g = torch.Generator().manual_seed(seed)
    return torch.complex(torch.randn(1, 1, 256, frames, generator=g), torch.randn(1, 1, 256, frames, generator=g)) * 0.1


def test_defaults_come_from_the_sde():
    assert sampler_defaults(EchoSDE()) == dict(predictor="echo_posterior", corrector="none", N=20, t_eps=0.04,
                                               snr=0.5, corrector_steps=1)
    d = sampler_defaults(OUVESDE())
    assert (d["predictor"], d["corrector"], d["N"], d["t_eps"]) == ("reverse_diffusion", "ald", 30, 0.03)


def test_echo_sampler_shape_nfe_and_determinism(echo_model):
    y = noisy_spec()
    a, nfe = sample(echo_model, y, generator=torch.Generator().manual_seed(1))
    b, _ = sample(echo_model, y, generator=torch.Generator().manual_seed(1))
    c, _ = sample(echo_model, y, generator=torch.Generator().manual_seed(2))
    assert a.shape == y.shape and nfe == 20
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_every_flag_takes_effect(echo_model):
    y = noisy_spec()
    assert sample(echo_model, y, N=12)[1] == 12
    assert sample(echo_model, y, N=10, corrector="ald", corrector_steps=2)[1] == 30
    base = sample(echo_model, y, N=10, corrector="langevin", generator=torch.Generator().manual_seed(0))[0]
    other_snr = sample(echo_model, y, N=10, corrector="langevin", snr=0.1, generator=torch.Generator().manual_seed(0))[0]
    other_eps = sample(echo_model, y, N=10, corrector="langevin", t_eps=0.2, generator=torch.Generator().manual_seed(0))[0]
    assert not torch.equal(base, other_snr) and not torch.equal(base, other_eps)


def test_last_step_returns_the_estimate_without_noise(echo_model):
    """At chain index 0 the posterior step returns the network's clean estimate itself."""
    calls = []

    def model_fn(x, y, t):
        calls.append(float(t[0]))
        return torch.full_like(x, 0.25)

    step = EchoPosterior(EchoSDE(), model_fn, N=20)
    x = noisy_spec()
    out, mean = step.update(x, x, torch.tensor([0.04]), torch.Generator().manual_seed(0))
    assert torch.equal(out, mean) and torch.equal(out, torch.full_like(x, 0.25))


def test_step_index_walks_the_discrete_chain():
    sde = EchoSDE()
    ks = [int(torch.floor(torch.tensor(t, dtype=torch.float64) * 19)) for t in torch.linspace(1, 0.04, 20, dtype=torch.float64).tolist()]
    assert ks == list(range(19, -1, -1))
    step = EchoPosterior(sde, None, 20)
    betas, alphas, abar = sde.discrete_schedule(20)
    w_clean, w_state, var = step.coefficients(5)
    assert w_clean == pytest.approx(float(betas[5] * abar[4].sqrt() / (1 - abar[5])))
    assert var == pytest.approx(float(betas[5] * (1 - abar[4]) / (1 - abar[5])))


def test_incompatible_combinations_are_refused(echo_model):
    y = noisy_spec()
    with pytest.raises(SamplerError, match="reverse_diffusion.*ouve"):
        sample(echo_model, y, predictor="reverse_diffusion")
    with pytest.raises(SamplerError, match="unknown corrector"):
        sample(echo_model, y, corrector="magic")
    with pytest.raises(SamplerError, match="N=5 is too small"):
        sample(echo_model, y, N=5)
    assert sample(echo_model, y, N=1)[1] == 1
    with pytest.raises(SamplerError, match="nothing would be sampled"):
        sample(echo_model, y, predictor="none", corrector="none")


def test_ouve_baseline_trains_and_samples():
    torch.manual_seed(0)
    model = ScoreModel(**TINY_BACKBONE, sde="ouve")
    y = noisy_spec()
    loss = model._step((0.5 * y, y), training=True)
    assert torch.isfinite(loss)
    loss.backward()
    out, nfe = sample(model.eval(), y, N=3)
    assert out.shape == y.shape and nfe == 6
