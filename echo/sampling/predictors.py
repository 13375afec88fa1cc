"""Predictors: one reverse step from grid time t_i to t_{i+1} (the next, smaller time).

Every predictor gets the loop index ``i`` of the step as well as its time: the grid is
``linspace(1, t_eps, N)`` and index ``N - 1`` is the last step, which for the clean-speech
predictors returns the network's estimate itself.
"""
import math

import torch

from echo.sdes import complex_randn_like
from echo.util.registry import Registry

PredictorRegistry = Registry("predictor")


def _per_example(value, like):
    return value.reshape(-1, *([1] * (like.dim() - 1)))


@PredictorRegistry.register("echo_posterior")
class EchoPosterior:
    """ECHO's step: predict clean speech s^, then draw from the DDPM posterior q(x_{k-1} | x_k, s^)
    of the discrete chain. At k = 0 it returns s^ without noise.

    The chain index is k = N - 1 - i for loop index i. The release computes it as
    floor(t (N - 1)), which gives the same indices only while t_eps (N - 1) < 1: from N = 26 at
    t_eps 0.04 an index repeats and the chain never reaches k = 0, so its output keeps the
    noise of a middle step."""

    sdes = ("echo",)

    def __init__(self, sde, model_fn, N):
        self.sde, self.model_fn, self.N = sde, model_fn, N
        self.betas, self.alphas, self.alpha_bars = sde.discrete_schedule(N)

    def coefficients(self, k):
        """(weight of s^, weight of x_k, variance) of the posterior at chain index k >= 1."""
        beta, alpha = self.betas[k], self.alphas[k]
        abar, abar_prev = self.alpha_bars[k], self.alpha_bars[k - 1]
        w_clean = beta * abar_prev.sqrt() / (1 - abar)
        w_state = (1 - abar_prev) * alpha.sqrt() / (1 - abar)
        variance = beta * (1 - abar_prev) / (1 - abar)
        return float(w_clean), float(w_state), float(variance)

    def chain_index(self, i):
        return self.N - 1 - i

    def update(self, x, y, t, i, generator=None):
        """Returns (next state, noise-free mean of the step)."""
        clean = self.model_fn(x, y, t)
        k = self.chain_index(i)
        if k <= 0:
            return clean, clean
        w_clean, w_state, variance = self.coefficients(k)
        mean = w_clean * clean + w_state * x
        return mean + variance ** 0.5 * complex_randn_like(x, generator), mean


class _MarginalStep:
    """A step between two times of the continuous VP marginal x_t = alpha(t) s + sigma(t) z,
    with s replaced by the network's estimate s^ (DDIM, Song et al. 2021, in data-prediction
    form). The noise implied by the state, z^ = (x_t - alpha(t) s^) / sigma(t), is carried to
    the next time t': x_t' = alpha(t') s^ + sqrt(sigma(t')^2 - c^2) z^ + c eps, where
    c = eta sigma(t') sqrt(1 - (alpha(t) sigma(t') / (alpha(t') sigma(t)))^2).
    eta = 0 is deterministic (DDIM); eta = 1 draws exactly from the continuous-time posterior
    q(x_t' | x_t, s^) of the forward process. The last step returns s^.

    Unlike the discrete chain of ``echo_posterior`` (which needs N >= beta_max), any N >= 1
    works, and every state lies on the training marginal of its own time."""

    sdes = ("echo", "predictive")
    eta = 0.0

    def __init__(self, sde, model_fn, N):
        self.sde, self.model_fn, self.N = sde, model_fn, N
        self.times = torch.linspace(sde.T, sde.t_eps, N, dtype=torch.float64).tolist()

    def coefficients(self, i):
        """(weight of s^, weight of x_t, std of fresh noise) of step i (not the last)."""
        t, t_next = self.times[i], self.times[i + 1]
        a, s = self.sde.alpha(t), self.sde.sigma(t)
        a_next, s_next = self.sde.alpha(t_next), self.sde.sigma(t_next)
        c = self.eta * s_next * math.sqrt(max(0.0, 1.0 - (a * s_next / (a_next * s)) ** 2))
        w_state = math.sqrt(max(0.0, s_next ** 2 - c ** 2)) / s
        return a_next - w_state * a, w_state, c

    def update(self, x, y, t, i, generator=None):
        clean = self.model_fn(x, y, t)
        if i >= self.N - 1:
            return clean, clean
        w_clean, w_state, std = self.coefficients(i)
        mean = w_clean * clean + w_state * x
        if std == 0.0:
            return mean, mean
        return mean + std * complex_randn_like(x, generator), mean


@PredictorRegistry.register("ddim")
class DDIM(_MarginalStep):
    __doc__ = "Deterministic few-step sampler (eta = 0). " + _MarginalStep.__doc__


@PredictorRegistry.register("ddpm")
class ContinuousPosterior(_MarginalStep):
    __doc__ = "Exact continuous-time posterior step (eta = 1). " + _MarginalStep.__doc__
    eta = 1.0


@PredictorRegistry.register("none")
class NoPredictor:
    """Leaves the state unchanged (for corrector-only sampling)."""

    sdes = None  # any SDE

    def __init__(self, sde, model_fn, N):
        pass

    def update(self, x, y, t, i, generator=None):
        return x, x


@PredictorRegistry.register("reverse_diffusion")
class ReverseDiffusion:
    """Euler-Maruyama step of the reverse SDE with the model's score (SGMSE+)."""

    sdes = ("ouve",)

    def __init__(self, sde, model_fn, N):
        self.sde, self.score_fn, self.dt = sde, model_fn, 1.0 / N

    def update(self, x, y, t, i, generator=None):
        drift, diffusion = self.sde.sde(x, t, y)
        g = _per_example(diffusion, x)
        reverse_drift = drift - g ** 2 * self.score_fn(x, y, t)
        x_mean = x - reverse_drift * self.dt
        return x_mean + g * self.dt ** 0.5 * complex_randn_like(x, generator), x_mean
