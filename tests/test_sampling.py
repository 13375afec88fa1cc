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
                                               snr=0.5, corrector_steps=1, draws=1)
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
    out, mean = step.update(x, x, torch.tensor([0.04]), 19, torch.Generator().manual_seed(0))
    assert torch.equal(out, mean) and torch.equal(out, torch.full_like(x, 0.25))


def test_step_index_walks_the_discrete_chain():
    sde = EchoSDE()
    step = EchoPosterior(sde, None, 20)
    # the loop index gives the release's floor(t (N - 1)) wherever that formula is sound (N < 26)
    release = [int(torch.floor(torch.tensor(t, dtype=torch.float64) * 19))
               for t in torch.linspace(1, 0.04, 20, dtype=torch.float64).tolist()]
    assert [step.chain_index(i) for i in range(20)] == release == list(range(19, -1, -1))
    betas, alphas, abar = sde.discrete_schedule(20)
    w_clean, w_state, var = step.coefficients(5)
    assert w_clean == pytest.approx(float(betas[5] * abar[4].sqrt() / (1 - abar[5])))
    assert w_state == pytest.approx(float((1 - abar[4]) * alphas[5].sqrt() / (1 - abar[5])))
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


def test_ddim_takes_any_n_and_draws_only_the_prior(echo_model):
    """DDIM's steps add no noise: the only random draw is the prior's, so two runs that start
    from the same prior agree even when the generator differs afterwards; ddpm's steps draw."""
    y = noisy_spec()
    for n in (1, 2, 3, 5):
        a, nfe = sample(echo_model, y, N=n, predictor="ddim", generator=torch.Generator().manual_seed(1))
        b, _ = sample(echo_model, y, N=n, predictor="ddim", generator=torch.Generator().manual_seed(1))
        assert nfe == n and torch.equal(a, b)
    prior_draws = []

    from echo.sampling import predictors
    original = predictors.complex_randn_like
    try:
        predictors.complex_randn_like = lambda x, g=None: prior_draws.append(1) or original(x, g)
        sample(echo_model, y, N=5, predictor="ddim", generator=torch.Generator().manual_seed(1))
        assert prior_draws == []
        sample(echo_model, y, N=5, predictor="ddpm", generator=torch.Generator().manual_seed(1))
        assert len(prior_draws) == 4  # every step but the last
    finally:
        predictors.complex_randn_like = original


def test_marginal_steps_keep_states_on_the_marginal():
    """With s^ = s and x_t = alpha(t) s + sigma(t) z, a DDIM step lands exactly on
    alpha(t') s + sigma(t') z, and the ddpm step's variance is the continuous posterior's."""
    from echo.sampling.predictors import DDIM, ContinuousPosterior
    sde = EchoSDE()
    s = noisy_spec(1)
    z = noisy_spec(2) * 10
    step = DDIM(sde, lambda x, y, t: s, 10)
    t, t_next = step.times[3], step.times[4]
    x = sde.alpha(t) * s + sde.sigma(t) * z
    out, _ = step.update(x, None, torch.tensor([t]), 3)
    assert torch.allclose(out, sde.alpha(t_next) * s + sde.sigma(t_next) * z, atol=1e-5)
    post = ContinuousPosterior(sde, None, 10)
    _, w_state, std = post.coefficients(3)
    a, sg, a2, sg2 = sde.alpha(t), sde.sigma(t), sde.alpha(t_next), sde.sigma(t_next)
    var_step = sg ** 2 - (a / a2) ** 2 * sg2 ** 2
    assert std ** 2 == pytest.approx(var_step * sg2 ** 2 / sg ** 2)
    assert w_state == pytest.approx((a / a2) * sg2 ** 2 / sg ** 2)


def test_predictive_baseline_trains_and_predicts_in_one_pass():
    torch.manual_seed(0)
    model = ScoreModel(**TINY_BACKBONE, sde="predictive")
    assert sampler_defaults(model.sde)["predictor"] == "ddim" and model.sde.N == 1
    y = noisy_spec()
    loss = model._step((0.5 * y, y), training=True)
    assert torch.isfinite(loss)
    loss.backward()
    model.eval()
    out, nfe = sample(model, y)
    with torch.no_grad():
        direct = model(y, y, torch.ones(1))
    assert nfe == 1 and torch.equal(out, direct)
    with pytest.raises(SamplerError, match="one network evaluation"):
        sample(model, y, N=3)
    with pytest.raises(SamplerError, match="draws=2: a predictive model is deterministic"):
        sample(model, y, draws=2)


class _RecordingOracle:
    """Stands in for a model: returns a fixed clean spectrogram and records each call's time and state."""

    def __init__(self, clean):
        self.sde, self.hparams, self.clean, self.calls = EchoSDE(), {"sde": "echo"}, clean, []

    def __call__(self, x, y, t):
        self.calls.append((float(t[0]), x.clone()))
        return self.clean


@pytest.mark.parametrize("predictor", ["ddim", "ddpm"])
def test_warm_start_renoises_the_one_step_estimate_and_walks_from_t_start(predictor):
    clean = noisy_spec(3, frames=64) * 5
    oracle = _RecordingOracle(clean)
    sde, t_start, n = oracle.sde, 0.4, 3
    out, nfe = sample(oracle, noisy_spec(4, frames=64), N=n, predictor=predictor, t_start=t_start,
                      generator=torch.Generator().manual_seed(0))
    times = [t for t, _ in oracle.calls]
    expected = [1.0] + torch.linspace(t_start, sde.t_eps, n, dtype=torch.float64).tolist()
    assert nfe == n + 1 and times == pytest.approx(expected, abs=1e-6)
    # the second state lies on the training marginal of t_start around the first estimate
    z = (oracle.calls[1][1] - sde.alpha(t_start) * clean) / sde.sigma(t_start)
    assert z.real.mean().abs() < 0.02 and z.imag.mean().abs() < 0.02
    assert float(z.abs().pow(2).mean()) == pytest.approx(1.0, rel=0.05)  # complex standard normal
    assert torch.allclose(out, clean)  # the last step returns the estimate


def test_warm_start_is_refused_where_it_cannot_work(echo_model):
    y = noisy_spec()
    with pytest.raises(SamplerError, match="t_start.*ddim or ddpm"):
        sample(echo_model, y, N=20, t_start=0.5)
    for bad in (1.0, 0.01):
        with pytest.raises(SamplerError, match=f"t_start={bad} must lie between"):
            sample(echo_model, y, N=2, predictor="ddpm", t_start=bad)


class _StateDependentOracle:
    """Stands in for a model whose estimate depends on the state, so that draws differ: 0.5 x + y."""

    def __init__(self):
        self.sde, self.hparams = EchoSDE(), {"sde": "echo"}

    def __call__(self, x, y, t):
        return 0.5 * x + y


@pytest.mark.parametrize("predictor, n", [("ddim", 1), ("ddpm", 3), ("echo_posterior", 10)])
def test_draws_average_independent_runs_of_the_sampler(predictor, n):
    """draws K: the mean of K whole runs that follow one another on the same generator, K x N
    network evaluations; K = 1 is the plain sampler, draw for draw."""
    oracle, y = _StateDependentOracle(), noisy_spec(5)
    kwargs = dict(N=n, predictor=predictor)
    single, nfe = sample(oracle, y, generator=torch.Generator().manual_seed(3), **kwargs)
    assert torch.equal(sample(oracle, y, generator=torch.Generator().manual_seed(3), draws=1, **kwargs)[0], single)
    chained = torch.Generator().manual_seed(3)
    runs = [sample(oracle, y, generator=chained, **kwargs)[0] for _ in range(3)]
    averaged, nfe3 = sample(oracle, y, generator=torch.Generator().manual_seed(3), draws=3, **kwargs)
    assert nfe3 == 3 * nfe == 3 * n
    torch.testing.assert_close(averaged, (runs[0] + runs[1] + runs[2]) / 3, rtol=1e-6, atol=0.0)
    spread = float((runs[0] - runs[1]).abs().mean())
    assert spread > 0.1 * float(runs[0].abs().mean())  # the draws differ, so the mean is not one of them
    if n == 1:  # one step: the estimate at the prior draw, averaged over the draws
        chained = torch.Generator().manual_seed(3)
        priors = [oracle.sde.prior_sampling(y, chained) for _ in range(3)]
        torch.testing.assert_close(averaged, sum(0.5 * x + y for x in priors) / 3, rtol=1e-5, atol=0.0)
    with pytest.raises(SamplerError, match="need draws >= 1"):
        sample(oracle, y, draws=0, **kwargs)
