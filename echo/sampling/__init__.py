"""Predictor-corrector sampling of the reverse process.

``sample(model, y)`` walks the time grid linspace(1, t_eps, N); at each time the corrector
(if any) refines the state, then the predictor steps to the next time.

Predictors for the clean-speech-predicting ``echo`` SDE: ``echo_posterior`` (the release's
discrete DDPM chain, N = 1 or N >= beta_max), ``ddim`` (deterministic steps over the
continuous marginal, any N >= 1) and ``ddpm`` (the same with the exact continuous-time
posterior noise). For the score-based ``ouve`` SDE: ``reverse_diffusion``. Defaults (N, t_eps,
predictor, corrector) come from the model's SDE, so a checkpoint samples the way it was
meant to unless a flag says otherwise.

``t_start`` (ECHO, ddim/ddpm) is a warm start in the manner of StoRM's predictive stage: the
network's one-step estimate from the prior is put back on the training marginal of time
``t_start`` (alpha s^ + sigma eps) and the N steps walk linspace(t_start, t_eps, N) from there,
so the stochastic steps only have to undo a little noise: N + 1 network evaluations.

``draws`` K > 1 runs the whole sampler K times from independent prior draws and returns the mean
of the K estimates (K times the network evaluations): an estimate of the posterior mean, which
the squared-error measures (SI-SDR) favour over any single sample.
"""
import torch

from .correctors import CorrectorRegistry
from .predictors import PredictorRegistry

__all__ = ["sample", "sampler_defaults", "PredictorRegistry", "CorrectorRegistry", "SamplerError"]


class SamplerError(ValueError):
    """A sampler setting that cannot work with this model."""


def sampler_defaults(sde):
    return dict(predictor=getattr(sde, "default_predictor", "echo_posterior"),
                corrector=getattr(sde, "default_corrector", "none"),
                N=sde.N, t_eps=sde.t_eps, snr=getattr(sde, "default_snr", 0.5), corrector_steps=1, draws=1)


WARM_START_PREDICTORS = ("ddim", "ddpm")


def _check(sde_name, sde, predictor, corrector, N, corrector_steps, t_start=None, draws=1):
    if predictor not in PredictorRegistry:
        raise SamplerError(f"unknown predictor '{predictor}' (known: {', '.join(PredictorRegistry.get_all_names())})")
    if corrector not in CorrectorRegistry:
        raise SamplerError(f"unknown corrector '{corrector}' (known: {', '.join(CorrectorRegistry.get_all_names())})")
    supported = PredictorRegistry.get_by_name(predictor).sdes
    if supported is not None and sde_name not in supported:
        raise SamplerError(f"predictor '{predictor}' works with SDE {', '.join(supported)}, not '{sde_name}'")
    if corrector != "none" and getattr(sde, "prediction", "score") == "data" and not hasattr(sde, "score_from_clean"):
        raise SamplerError(f"corrector '{corrector}' needs a score, which SDE '{sde_name}' cannot derive")
    beta_max = getattr(sde, "beta_max", None)
    if predictor == "echo_posterior" and beta_max is not None and N > 1 and beta_max / N > 1:
        # the discrete chain's last beta_k = beta_max / N would exceed 1 (alpha_k < 0)
        raise SamplerError(f"N={N} is too small for the discrete chain of this SDE (beta_max/N = "
                           f"{beta_max / N:.2f} > 1): use N >= {int(-(-beta_max // 1))}, N = 1 (one-step prediction), "
                           f"or --predictor ddim, which takes any N")
    if sde_name == "predictive" and N != 1:
        raise SamplerError(f"N={N}: a predictive model takes one network evaluation (N = 1)")
    if predictor == "none" and corrector == "none":
        raise SamplerError("predictor and corrector are both 'none': nothing would be sampled")
    if t_start is not None:
        if sde_name != "echo" or predictor not in WARM_START_PREDICTORS:
            raise SamplerError(f"t_start (a warm start from the one-step estimate) needs an ECHO model and predictor "
                               f"{' or '.join(WARM_START_PREDICTORS)}, not '{predictor}' with SDE '{sde_name}'")
        if not sde.t_eps < t_start < sde.T:
            raise SamplerError(f"t_start={t_start} must lie between t_eps ({sde.t_eps}) and {sde.T}")
    if N < 1 or corrector_steps < 1:
        raise SamplerError(f"need N >= 1 and corrector_steps >= 1, got N={N}, corrector_steps={corrector_steps}")
    if draws < 1:
        raise SamplerError(f"need draws >= 1 (estimates averaged), got {draws}")
    if sde_name == "predictive" and draws != 1:
        raise SamplerError(f"draws={draws}: a predictive model is deterministic, its draws would all be equal")


@torch.inference_mode()
def sample(model, y, N=None, predictor=None, corrector=None, corrector_steps=None, snr=None, t_eps=None,
           generator=None, t_start=None, draws=None):
    """Clean-speech spectrogram estimate [B, 1, F, T] for the noisy spectrogram ``y`` and the
    number of network evaluations it took. ``generator`` makes the run reproducible."""
    defaults = sampler_defaults(model.sde)
    N = defaults["N"] if N is None else int(N)
    predictor = predictor or defaults["predictor"]
    corrector = corrector or defaults["corrector"]
    corrector_steps = defaults["corrector_steps"] if corrector_steps is None else int(corrector_steps)
    snr = defaults["snr"] if snr is None else float(snr)
    t_eps = defaults["t_eps"] if t_eps is None else float(t_eps)
    draws = defaults["draws"] if draws is None else int(draws)
    sde_name = model.hparams.get("sde", "echo") if hasattr(model, "hparams") else "echo"
    t_start = None if t_start is None else float(t_start)
    _check(sde_name, model.sde.copy(N=N, t_eps=t_eps), predictor, corrector, N, corrector_steps, t_start, draws)

    nfe = 0

    def model_fn(x, y_, t):
        nonlocal nfe
        nfe += 1
        return model(x, y_, t)

    def one_draw():
        sde = model.sde.copy(N=N, t_eps=t_eps)

        def score_fn(x, y_, t):
            if getattr(sde, "prediction", "score") == "data":
                return sde.score_from_clean(x, model_fn(x, y_, t), t)
            return model_fn(x, y_, t)  # score-predicting models return the score itself

        x = sde.prior_sampling(y, generator)
        if t_start is not None:
            ones = torch.ones(y.shape[0], device=y.device, dtype=y.real.dtype)
            x = sde.perturb(model_fn(x, y, ones), torch.full_like(ones, t_start), None, generator)
            sde.T = t_start  # the predictors' grids and the loop below start here
        step = PredictorRegistry.get_by_name(predictor)(sde, model_fn, N)
        refine = CorrectorRegistry.get_by_name(corrector)(sde, score_fn, snr, corrector_steps)
        x_mean = x
        for i, t_value in enumerate(torch.linspace(sde.T, t_eps, N, dtype=torch.float64).tolist()):
            t = torch.full((y.shape[0],), t_value, device=y.device, dtype=y.real.dtype)
            x, x_mean = refine.update(x, y, t, generator)
            x, x_mean = step.update(x, y, t, i, generator)
        # the last step's noise-free mean is the estimate
        return x_mean

    estimate = one_draw()
    for _ in range(draws - 1):  # the draws follow one another on the same generator: seeded, reproducible
        estimate = estimate + one_draw()
    return estimate / draws if draws > 1 else estimate, nfe
