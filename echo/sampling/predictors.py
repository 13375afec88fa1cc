"""Predictors: one reverse step from t to the next (smaller) time on the grid."""
import torch

from echo.sdes import complex_randn_like
from echo.util.registry import Registry

PredictorRegistry = Registry("predictor")


def _per_example(value, like):
    return value.reshape(-1, *([1] * (like.dim() - 1)))


@PredictorRegistry.register("echo_posterior")
class EchoPosterior:
    """ECHO's step: predict clean speech s^, then draw from the DDPM posterior q(x_{k-1} | x_k, s^)
    of the discrete chain, with k = floor(t (N - 1)). At k = 0 it returns s^ without noise."""

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

    def update(self, x, y, t, generator=None):
        """Returns (next state, noise-free mean of the step)."""
        clean = self.model_fn(x, y, t)
        k = int(torch.floor(t[0].double() * (self.N - 1)))
        if k <= 0:
            return clean, clean
        w_clean, w_state, variance = self.coefficients(k)
        mean = w_clean * clean + w_state * x
        return mean + variance ** 0.5 * complex_randn_like(x, generator), mean


@PredictorRegistry.register("none")
class NoPredictor:
    """Leaves the state unchanged (for corrector-only sampling)."""

    sdes = None  # any SDE

    def __init__(self, sde, model_fn, N):
        pass

    def update(self, x, y, t, generator=None):
        return x, x


@PredictorRegistry.register("reverse_diffusion")
class ReverseDiffusion:
    """Euler-Maruyama step of the reverse SDE with the model's score (SGMSE+)."""

    sdes = ("ouve",)

    def __init__(self, sde, model_fn, N):
        self.sde, self.score_fn, self.dt = sde, model_fn, 1.0 / N

    def update(self, x, y, t, generator=None):
        drift, diffusion = self.sde.sde(x, t, y)
        g = _per_example(diffusion, x)
        reverse_drift = drift - g ** 2 * self.score_fn(x, y, t)
        x_mean = x - reverse_drift * self.dt
        return x_mean + g * self.dt ** 0.5 * complex_randn_like(x, generator), x_mean
