"""Samplers against an oracle whose answer depends on the state: clean speech drawn from a Gaussian.

With s ~ CN(mu, v) independently per bin and x_t = alpha(t) s + sigma(t) eps (eps ~ CN(0, 1)),
the best clean-speech estimate is the exact posterior mean
    D(x_t, t) = mu + g(t) (x_t - alpha(t) mu),   g = alpha v / (alpha^2 v + sigma^2),
and the score of the marginal CN(alpha mu, alpha^2 v + sigma^2) is -(x_t - alpha mu) / (alpha^2 v + sigma^2).
Unlike an oracle that returns the clean spectrogram whatever it is given, this one makes every
intermediate state matter: the output of the last step is D at the last state.

Every step here is affine in the state plus fresh Gaussian noise, so a state is P mu + Q y plus
noise of variance V per bin, and the test carries (P, Q, V) through the formulas of METHOD.md
(section 2 for the ECHO chain, the continuous VP posterior for ddim/ddpm, SGMSE+'s reverse
diffusion, annealed Langevin dynamics) written out here on their own. Each run then must give
mean P mu + Q y and residual variance V. Statistical checks use 65,536 bins: the residual power
then has a relative standard error of 1/256 = 0.4 %, and the tolerances (3 % on powers, 5 standard
errors on correlations) are 7 and 5 of those; the seeds are fixed.
"""
import math

import pytest
import torch

from echo.sampling import sample
from echo.sampling.correctors import CorrectorRegistry
from echo.sampling.predictors import PredictorRegistry
from echo.sdes import EchoSDE, OUVESDE, complex_randn_like

F, T = 256, 256
BINS = F * T
V_CLEAN = 0.05  # variance of the clean speech around mu
POWER_RTOL = 0.03
CORRELATION_MAX = 5 / math.sqrt(BINS)


def cplx(seed, scale=1.0):
    return scale * complex_randn_like(torch.zeros(1, 1, F, T, dtype=torch.complex64), torch.Generator().manual_seed(seed))


MU = cplx(1, 0.3)
Y = MU + cplx(2, 0.5)  # the noisy condition: it enters through the prior (and OUVE's drift)


def posterior_gain(sde, t):
    a, s = sde.alpha(t), sde.sigma(t)
    return a * V_CLEAN / (a * a * V_CLEAN + s * s)


class GaussianOracle:
    """Stands in for a trained ScoreModel: the exact posterior mean (echo) or the exact score of
    the Gaussian marginal (ouve) of clean speech CN(MU, V_CLEAN)."""

    def __init__(self, sde, name):
        self.sde, self.hparams = sde, {"sde": name}

    def __call__(self, x, y, t):
        t = float(t[0])
        if self.sde.prediction == "data":
            return MU + posterior_gain(self.sde, t) * (x - self.sde.alpha(t) * MU)
        decay = math.exp(-self.sde.theta * t)
        mean = decay * MU + (1 - decay) * y
        return -(x - mean) / (decay ** 2 * V_CLEAN + self.sde._std(t) ** 2)


class Affine:
    """A state P mu + Q y + noise of variance V per bin, carried through affine steps."""

    def __init__(self, P, Q, V):
        self.P, self.Q, self.V = P, Q, V

    def step(self, w_state, w_mu=0.0, w_y=0.0, noise_var=0.0):
        """w_state * state + w_mu * mu + w_y * y + fresh noise."""
        return Affine(w_state * self.P + w_mu, w_state * self.Q + w_y, w_state ** 2 * self.V + noise_var)

    def mean(self):
        return self.P * MU + self.Q * Y


def assert_matches(out, state, what):
    """``out`` has mean P mu + Q y and residual variance V, independent of mu and y."""
    residual = out - state.mean()
    power = float(residual.abs().square().mean())
    if state.V == 0:
        assert power <= 1e-10 * float(state.mean().abs().square().mean()), what
        return
    assert power == pytest.approx(state.V, rel=POWER_RTOL), what
    for name, reference in (("mu", MU), ("y", Y)):
        correlation = abs(complex(torch.vdot(reference.flatten(), residual.flatten()))) / float(
            reference.norm() * residual.norm())
        assert correlation < CORRELATION_MAX, (what, name, correlation)


# --------------------------------------------------------------------------------------------
# the formulas, written out from METHOD.md
# --------------------------------------------------------------------------------------------

def echo_chain(sde, N, k):
    """(weight of the estimate, weight of the state, variance) of q(x_{k-1} | x_k, s^) of the
    discrete chain beta_k = linspace(beta_min/N, beta_max/N, N)."""
    betas = [sde.beta_min / N + j * (sde.beta_max - sde.beta_min) / N / (N - 1) for j in range(N)]
    abar = list(torch.cumprod(torch.tensor([1 - b for b in betas], dtype=torch.float64), 0).tolist())
    beta, abar_k, abar_prev = betas[k], abar[k], abar[k - 1]
    return (beta * math.sqrt(abar_prev) / (1 - abar_k), (1 - abar_prev) * math.sqrt(1 - beta) / (1 - abar_k),
            beta * (1 - abar_prev) / (1 - abar_k))


def vp_posterior(sde, t, t_next, eta):
    """The continuous VP posterior q(x_t' | x_t, s^) (eta = 1) and its deterministic limit DDIM
    (eta = 0): (weight of the estimate, weight of the state, variance)."""
    a, s, a2, s2 = sde.alpha(t), sde.sigma(t), sde.alpha(t_next), sde.sigma(t_next)
    transition_var = s * s - (a / a2) ** 2 * s2 * s2
    if eta:
        w_state = (a / a2) * s2 * s2 / s / s
        return a2 * transition_var / s / s, w_state, transition_var * s2 * s2 / s / s
    return a2 - s2 / s * a, s2 / s, 0.0


def step_coefficients(sde, predictor, times, i):
    """The formula of ``predictor`` for step i of the grid ``times``."""
    if predictor == "echo_posterior":
        return echo_chain(sde, len(times), len(times) - 1 - i)
    return vp_posterior(sde, times[i], times[i + 1], eta=predictor == "ddpm")


def clean_step(state, sde, t, w_clean, w_state, variance):
    """w_clean D(x) + w_state x + noise, with D the oracle's posterior mean at t."""
    g = posterior_gain(sde, t)
    return state.step(w_clean * g + w_state, w_mu=w_clean * (1 - g * sde.alpha(t)), noise_var=variance)


def estimate(state, sde, t):
    return clean_step(state, sde, t, 1.0, 0.0, 0.0)


def ald_step(state, sde, t, snr):
    """x + step * score + sqrt(2 step) z with step = 2 (snr sigma(t))^2 and the exact score."""
    a, s = sde.alpha(t), sde.sigma(t)
    step = 2 * (snr * s) ** 2
    spread = a * a * V_CLEAN + s * s
    return state.step(1 - step / spread, w_mu=step * a / spread, noise_var=2 * step)


def expected_echo_run(predictor, N, corrector="none", snr=0.5):
    sde = EchoSDE()
    times = torch.linspace(1, sde.t_eps, N, dtype=torch.float64).tolist()
    state = Affine(0.0, sde.alpha(1.0), sde.sigma(1.0) ** 2)  # the prior alpha(1) y + sigma(1) eps
    for i, t in enumerate(times):
        if corrector == "ald":
            state = ald_step(state, sde, t, snr)
        if i == N - 1:
            return estimate(state, sde, t)
        state = clean_step(state, sde, t, *step_coefficients(sde, predictor, times, i))


# --------------------------------------------------------------------------------------------
# one step at a time
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("predictor,N", [("echo_posterior", 20), ("echo_posterior", 30), ("ddim", 5), ("ddpm", 10)])
def test_each_predictor_step_follows_its_formula(predictor, N):
    """From a state of known composition, one step's noise-free mean and its fresh noise."""
    sde = EchoSDE()
    step = PredictorRegistry.get_by_name(predictor)(sde, GaussianOracle(sde, "echo"), N)
    times = torch.linspace(1, sde.t_eps, N, dtype=torch.float64).tolist()
    for i in range(N):
        t = times[i]
        state = Affine(0.4, 0.3, 0.5)
        x = state.mean() + math.sqrt(state.V) * cplx(100 + i)
        out, mean = step.update(x, Y, torch.tensor([t]), i, torch.Generator().manual_seed(200 + i))
        if i == N - 1:  # the last step returns the estimate itself
            assert torch.equal(out, mean)
            torch.testing.assert_close(out, GaussianOracle(sde, "echo")(x, Y, torch.tensor([t])))
            continue
        w_clean, w_state, variance = step_coefficients(sde, predictor, times, i)
        g = posterior_gain(sde, t)
        expected_mean = w_clean * (MU + g * (x - sde.alpha(t) * MU)) + w_state * x
        torch.testing.assert_close(mean, expected_mean, rtol=1e-5, atol=1e-6, msg=f"step {i}")
        assert_matches(out - mean + MU, Affine(1.0, 0.0, variance), f"step {i} noise")


def test_reverse_diffusion_step_follows_the_reverse_sde():
    """SGMSE+'s Euler-Maruyama step: x - (theta (y - x) - g^2 score) dt + g sqrt(dt) z."""
    sde, N = OUVESDE(), 30
    oracle = GaussianOracle(sde, "ouve")
    step = PredictorRegistry.get_by_name("reverse_diffusion")(sde, oracle, N)
    for i, t in enumerate([1.0, 0.5, 0.1]):
        x = 0.7 * MU + 0.2 * Y + 0.3 * cplx(300 + i)
        tt = torch.tensor([t])
        out, mean = step.update(x, Y, tt, i, torch.Generator().manual_seed(400 + i))
        g = sde.sigma_min * (sde.sigma_max / sde.sigma_min) ** t * math.sqrt(2 * math.log(sde.sigma_max / sde.sigma_min))
        dt = 1 / N
        expected_mean = x - (sde.theta * (Y - x) - g * g * oracle(x, Y, tt)) * dt
        torch.testing.assert_close(mean, expected_mean, rtol=1e-5, atol=1e-6)
        assert_matches(out - mean + MU, Affine(1.0, 0.0, g * g * dt), f"t={t} noise")


# --------------------------------------------------------------------------------------------
# whole runs of sample()
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("corrector", ["none", "ald"])
@pytest.mark.parametrize("predictor,N", [("echo_posterior", 20), ("echo_posterior", 30), ("ddim", 1), ("ddim", 5),
                                         ("ddpm", 10)])
def test_whole_run_reaches_what_the_chain_of_formulas_gives(predictor, N, corrector):
    """The prior, the time grid, the chain index of every step, the corrector before each
    predictor step and the estimate at the end, composed by sample()."""
    sde = EchoSDE()
    out, nfe = sample(GaussianOracle(sde, "echo"), Y, N=N, predictor=predictor, corrector=corrector,
                      generator=torch.Generator().manual_seed(7))
    assert nfe == N * (2 if corrector == "ald" else 1)
    expected = expected_echo_run(predictor, N, corrector)
    assert_matches(out, expected, f"{predictor}:{N} {corrector}")
    assert expected.V > 0  # the power check ran: the output carries noise of the run to the end


# --------------------------------------------------------------------------------------------
# correctors: where their process must go
# --------------------------------------------------------------------------------------------

def stationary_spread(corrector, snr, spread, sigma):
    """E|x - alpha mu|^2 that Langevin steps with the exact score of CN(alpha mu, spread) settle at.

    Per real part, x' - m = (1 - h / spread) (x - m) + sqrt(h) n with n ~ N(0, 1) and h the step
    (the score of a complex Gaussian, (m - x) / spread, is half the real one, and the complex noise
    has half the variance per part), so the spread settles at spread / (1 - h / (2 spread)).
    ald: h = 2 (snr sigma)^2. langevin: h = 2 snr^2 |z|^2 / |score|^2 = 2 snr^2 spread^2 / V at
    spread V, whose fixed point is V = spread (1 + snr^2)."""
    if corrector == "ald":
        return spread / (1 - (snr * sigma) ** 2 / spread)
    return spread * (1 + snr ** 2)


@pytest.mark.parametrize("corrector", ["langevin", "ald"])
@pytest.mark.parametrize("snr", [0.3, 0.6])
def test_corrector_settles_at_the_stationary_spread_of_its_process(corrector, snr):
    """From a state three times too wide, 40 corrector steps at t = 0.5 reach the mean and the
    spread that their step rule holds (far from the start, and different for each snr)."""
    sde, t = EchoSDE(), 0.5
    oracle = GaussianOracle(sde, "echo")
    a, s = sde.alpha(t), sde.sigma(t)
    spread = a * a * V_CLEAN + s * s
    tt = torch.tensor([t])

    def score_fn(x, y, t_):
        return sde.score_from_clean(x, oracle(x, y, t_), t_)

    refine = CorrectorRegistry.get_by_name(corrector)(sde, score_fn, snr, 40)
    x = a * MU + 3 * math.sqrt(spread) * cplx(500)
    out, _ = refine.update(x, Y, tt, torch.Generator().manual_seed(600))
    target = stationary_spread(corrector, snr, spread, s)
    assert_matches(out, Affine(a, 0.0, target), f"{corrector} snr {snr}")
