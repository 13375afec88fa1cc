"""Correctors: Langevin steps at a fixed time that pull the state towards the model's
distribution. They need the score; for a clean-speech predictor it is derived from the
estimate through the SDE's Gaussian marginal (``sde.score_from_clean``)."""
import torch

from echo.sdes import complex_randn_like
from echo.util.registry import Registry

CorrectorRegistry = Registry("corrector")


def _per_example(value, like):
    return value.reshape(-1, *([1] * (like.dim() - 1)))


def _norm(x):
    return torch.linalg.vector_norm(x.reshape(x.shape[0], -1), dim=-1)


class _ScoreCorrector:
    def __init__(self, sde, score_fn, snr, n_steps):
        if not hasattr(sde, "score_from_clean") and getattr(sde, "prediction", "score") == "data":
            raise ValueError(f"corrector needs a score, which SDE {type(sde).__name__} cannot provide")
        self.sde, self.score_fn, self.snr, self.n_steps = sde, score_fn, snr, n_steps


@CorrectorRegistry.register("langevin")
class LangevinCorrector(_ScoreCorrector):
    """Langevin MCMC with the step size set by the ratio of noise and score norms (score_sde)."""

    def update(self, x, y, t, generator=None):
        for _ in range(self.n_steps):
            score = self.score_fn(x, y, t)
            noise = complex_randn_like(x, generator)
            ratio = _norm(noise) / _norm(score).clamp_min(1e-12)
            step = 2 * (self.snr * ratio) ** 2
            x_mean = x + _per_example(step, x) * score
            x = x_mean + _per_example(torch.sqrt(2 * step), x) * noise
        return x, x_mean


@CorrectorRegistry.register("ald")
class AnnealedLangevinDynamics(_ScoreCorrector):
    """Annealed Langevin dynamics: the step size follows the marginal std at t (SGMSE+)."""

    def update(self, x, y, t, generator=None):
        std = self.sde.marginal_prob(x, t, y)[1]
        step = 2 * (self.snr * std) ** 2
        for _ in range(self.n_steps):
            score = self.score_fn(x, y, t)
            x_mean = x + _per_example(step, x) * score
            x = x_mean + _per_example(torch.sqrt(2 * step), x) * complex_randn_like(x, generator)
        return x, x_mean


@CorrectorRegistry.register("none")
class NoCorrector:
    def __init__(self, sde, score_fn, snr, n_steps):
        pass

    def update(self, x, y, t, generator=None):
        return x, x
