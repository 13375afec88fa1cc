"""Samplers against an oracle network, on a real recording (../shared/data; skipped without it).

The oracle knows the clean spectrogram S: for the clean-speech-predicting ECHO SDE it returns S
(or an estimate of known error), for SGMSE+'s OUVE SDE the exact score of its Gaussian marginal
around S. A sampler that is right must then return what its process allows:

- ECHO's samplers end with a step that returns the network's estimate, so with the oracle they
  return the clean recording itself (SI-SDR limited by float rounding, level exact), for every N
  and corrector, and with an imperfect estimate their error is exactly the estimate's.
- OUVE's mean at t_eps still holds a share 1 - exp(-theta t_eps) = 4.4 % of the noise (in the
  compressed domain), and the last Euler step leaves Gaussian noise of std
  |1 + theta dt - g(t_eps)^2 dt / std(t_eps)^2| std(t_eps), dt = 1/N. The sampler output must
  match that derived residual (SI-SDR within 3 dB, error norm within 30 %).
"""
import math

import numpy as np
import pytest
import torch

from conftest import shared_data
from echo.sampling import sample
from echo.sdes import EchoSDE, OUVESDE, complex_randn_like
from echo.spectral import Spectrogram
from echo.util.audio import read_audio
from echo.util.metrics import si_sdr

SECONDS = 2.0


class Oracle:
    """Stands in for a trained ScoreModel: the clean estimate (data SDEs) or the score of the
    marginal around ``estimate`` (score SDEs)."""

    def __init__(self, sde, sde_name, estimate, noisy):
        self.sde, self.hparams, self.estimate, self.noisy = sde, {"sde": sde_name}, estimate, noisy

    def __call__(self, x, y, t):
        if self.sde.prediction == "data":
            return self.estimate
        mean, std = self.sde.marginal_prob(self.estimate, t, self.noisy)
        return -(x - mean) / std ** 2


@pytest.fixture(scope="module")
def recording():
    """(clean waveform, noisy waveform, peak, S, Y, spectrogram) of a real p287 training pair."""
    clean, sr = read_audio(shared_data("vbdmd_train_sample", "clean", "p287_001.wav"))
    noisy, _ = read_audio(shared_data("vbdmd_train_sample", "noisy", "p287_001.wav"))
    length = int(SECONDS * sr)
    clean, noisy = clean[0, :length].astype(np.float64), noisy[0, :length].astype(np.float64)
    peak = float(np.abs(noisy).max())
    spec = Spectrogram()
    S = spec.to_spec(torch.from_numpy(clean / peak))[None, None]
    Y = spec.to_spec(torch.from_numpy(noisy / peak))[None, None]
    return clean, noisy, peak, S, Y, spec


def to_wav(recording, X):
    clean, _, peak, _, _, spec = recording
    return spec.to_wav(X[0, 0], length=len(clean)).numpy() * peak


def level_db(reference, estimate):
    return 10 * math.log10(np.mean(estimate ** 2) / np.mean(reference ** 2))


def run(recording, sde, sde_name, estimate, **kwargs):
    _, _, _, _, Y, _ = recording
    out, nfe = sample(Oracle(sde, sde_name, estimate, Y), Y, generator=torch.Generator().manual_seed(0), **kwargs)
    return out


@pytest.mark.parametrize("predictor,N", [("echo_posterior", n) for n in (1, 10, 20, 26, 30, 50)]
                         + [("ddim", n) for n in range(1, 51)] + [("ddpm", n) for n in (1, 2, 5, 20, 50)])
def test_echo_samplers_return_the_oracle_clean_speech(recording, predictor, N):
    clean = recording[0]
    out = to_wav(recording, run(recording, EchoSDE(), "echo", recording[3], predictor=predictor, N=N))
    assert si_sdr(clean, out) >= 40.0
    assert abs(level_db(clean, out)) <= 0.1


@pytest.mark.parametrize("corrector", ["ald", "langevin"])
@pytest.mark.parametrize("predictor,N", [("echo_posterior", 10), ("echo_posterior", 30), ("ddim", 3), ("ddpm", 10)])
def test_echo_correctors_keep_the_oracle_clean_speech(recording, predictor, N, corrector):
    clean = recording[0]
    out = to_wav(recording, run(recording, EchoSDE(), "echo", recording[3], predictor=predictor, N=N,
                                corrector=corrector))
    assert si_sdr(clean, out) >= 40.0
    assert abs(level_db(clean, out)) <= 0.1


def test_release_chain_index_would_miss_the_last_step():
    """The bug the loop index fixes: floor(t (N - 1)) repeats an index once t_eps (N - 1) >= 1."""
    times = torch.linspace(1, 0.04, 30, dtype=torch.float64).tolist()
    release = [int(math.floor(t * 29)) for t in times]
    assert min(release) == 1 and len(set(release)) < 30  # never reaches k = 0
    from echo.sampling.predictors import EchoPosterior
    step = EchoPosterior(EchoSDE(), None, 30)
    assert [step.chain_index(i) for i in range(30)] == list(range(29, -1, -1))


@pytest.mark.parametrize("predictor,N", [("echo_posterior", 20), ("ddim", 1), ("ddim", 5), ("ddpm", 10)])
@pytest.mark.parametrize("kind", ["scaled", "leaky"])
def test_echo_error_is_the_estimates_own(recording, predictor, N, kind):
    """Bound: the output's error equals the estimate's (the last step returns the estimate), so
    it may exceed it by float rounding only (1e-6 relative)."""
    _, _, _, S, Y, _ = recording
    estimate = 0.8 * S if kind == "scaled" else S + 0.3 * (Y - S)
    out = run(recording, EchoSDE(), "echo", estimate, predictor=predictor, N=N)
    own = (estimate - S).abs().norm()
    assert (out - S).abs().norm() <= own * (1 + 1e-6)


def ouve_derived_residual(recording, sde, N, estimate):
    """The process's own limit at t_eps (see the module doc): its mean there plus the Gaussian
    noise the last reverse-diffusion step leaves."""
    _, _, _, S, Y, _ = recording
    t_eps = sde.t_eps
    keep = math.exp(-sde.theta * t_eps)
    mean = keep * estimate + (1 - keep) * Y
    std = sde._std(t_eps)
    g = float(sde.sde(S, torch.tensor([t_eps]), Y)[1])
    dt = 1.0 / N
    factor = abs(1 + sde.theta * dt - g ** 2 * dt / std ** 2)
    return mean + factor * std * complex_randn_like(S, torch.Generator().manual_seed(1))


@pytest.mark.parametrize("N", [30, 50])
@pytest.mark.parametrize("corrector", ["none", "ald"])
def test_ouve_reaches_what_its_process_allows(recording, N, corrector):
    clean, _, _, S, _, _ = recording
    sde = OUVESDE()
    out = run(recording, sde, "ouve", S, predictor="reverse_diffusion", corrector=corrector, N=N)
    derived = ouve_derived_residual(recording, sde, N, S)
    assert abs(si_sdr(clean, to_wav(recording, out)) - si_sdr(clean, to_wav(recording, derived))) <= 3.0
    ratio = float((out - S).abs().norm() / (derived - S).abs().norm())
    assert 0.7 <= ratio <= 1.3


@pytest.mark.parametrize("kind", ["scaled", "leaky"])
def test_ouve_error_with_an_imperfect_estimate(recording, kind):
    """Bound: |out - S| <= |est - S| + (1 - exp(-theta t_eps)) |Y - S| + 1.3 x the last step's
    residual noise: the process moves to its mean around the estimate and no further."""
    _, _, _, S, Y, _ = recording
    sde = OUVESDE()
    estimate = 0.8 * S if kind == "scaled" else S + 0.3 * (Y - S)
    out = run(recording, sde, "ouve", estimate, predictor="reverse_diffusion", corrector="ald", N=30)
    residual = ouve_derived_residual(recording, sde, 30, estimate)
    keep = math.exp(-sde.theta * sde.t_eps)
    noise_part = (residual - (keep * estimate + (1 - keep) * Y)).abs().norm()
    bound = (estimate - S).abs().norm() + (1 - keep) * (Y - S).abs().norm() + 1.3 * noise_part
    assert (out - S).abs().norm() <= bound
