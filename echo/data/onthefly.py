"""Training mixtures drawn on the fly: a new mixture of speech, noise, SNR, gain and room for every
training example, as DNS-Challenge and DeepFilterNet recipes train.

Example ``index`` of epoch ``epoch`` is drawn from a generator seeded by (seed, epoch, index).
An "epoch" here is a fixed number of examples (``--examples_per_epoch``), the unit of validation
and checkpoints, never the same mixtures twice. With batch size B and R processes, example
(epoch, index) is the one that process ``index % R`` trains on at global step ``epoch * E / (B R)
+ index // (B R)`` (E examples per epoch, see ``EpochSampler``): the draw is a function of (seed,
global step, rank, position in the batch), so a resumed run draws what the uninterrupted run
drew and DDP processes draw different mixtures.

One mixture (``draw_mixture``): a speech excerpt and a noise excerpt of ``segment`` samples, each
convolved with its own room with probability ``reverb_prob``; the noise scaled to an SNR drawn
from ``snr_range`` against the target's active speech; both scaled by a gain drawn from
``gain_range`` (dB), then down together if the mixture would clip. The target is the speech with
the direct path and early reflections of its room (see ``echo.data.rooms``); the mixture is
computed in float32, so noisy - target is exactly the noise plus the late reverberation, which is
what the re-mixup decouples as the example's noise.

Validation uses a fixed set of mixtures drawn once from speakers and noise files held apart from
training (``held_apart``), so that valid_loss compares checkpoints on the same unseen examples.
"""
import re
from dataclasses import dataclass

import numpy as np
from scipy.signal import fftconvolve

from echo.data.mix import MixError, active_speech_power, noise_gain_for_snr, peak_gain, split_by_group
from echo.util.audio import AudioError
from echo.util.seeding import derive_seed

MAX_TRIES = 8


@dataclass
class MixtureConfig:
    segment: int                      # samples of one mixture
    snr_range: tuple = (-5.0, 20.0)   # dB, target's active speech over the noise
    gain_range: tuple = (-20.0, 5.0)  # dB, level of the whole mixture
    reverb_prob: float = 0.0          # probability that the speech (and, independently, the noise) is reverberant

    def check(self):
        for name, (low, high) in (("snr_range", self.snr_range), ("gain_range", self.gain_range)):
            if low > high:
                raise ValueError(f"--{name} {low} {high}: the minimum is above the maximum")
        if not 0.0 <= self.reverb_prob <= 1.0:
            raise ValueError(f"--reverb_prob {self.reverb_prob}: must lie in [0, 1]")
        if self.segment <= 0:
            raise ValueError("mixtures must be at least one sample long")


def excerpt(rng, audio, length, loop=False):
    """``length`` samples of ``audio`` from a random start: looped when the file is shorter and
    ``loop`` (noise), else zero-padded at a random position (speech)."""
    n = audio.shape[0]
    if n >= length:
        start = int(rng.integers(0, n - length + 1))
        return np.array(audio[start:start + length], dtype=np.float32)
    if loop:
        start = int(rng.integers(0, n))
        return np.resize(np.roll(np.asarray(audio, dtype=np.float32), -start), length)
    before = int(rng.integers(0, length - n + 1))
    return np.pad(np.asarray(audio, dtype=np.float32), (before, length - n - before))


def speech_excerpt(rng, audio, length):
    """The louder of two random excerpts: fewer crops of pure pause, which teach nothing, while
    pauses inside an excerpt remain."""
    first, second = excerpt(rng, audio, length), excerpt(rng, audio, length)
    return first if np.mean(first ** 2) >= np.mean(second ** 2) else second


def reverberate(rng, audio, length, rirs, tail_source):
    """(reverberant, early) of ``length`` samples: ``tail_source(extra)`` gives the excerpt with
    ``extra`` samples of history before it, so that the room's tail at the start of the excerpt
    comes from the audio that really preceded it."""
    index = int(rng.integers(len(rirs)))
    rir, early = rirs.responses[index], rirs.early[index]
    extra = len(rir) - 1
    signal = tail_source(length + extra)
    reverberant = fftconvolve(signal, rir)[extra:extra + length]
    target = fftconvolve(signal, early)[extra:extra + length]
    return reverberant.astype(np.float32), target.astype(np.float32), index


def draw_mixture(rng, speech, noise, config: MixtureConfig, rirs=None):
    """(target, noisy, info) as float32 arrays of ``config.segment`` samples; see the module's
    docstring. ``speech`` and ``noise`` are ``AudioCorpus``-like (indexable, with ``names``)."""
    length = config.segment
    info = {}
    for _ in range(MAX_TRIES):
        s_index = int(rng.integers(len(speech)))
        if rirs is not None and rng.random() < config.reverb_prob:
            dry, target, info["speech_room"] = reverberate(
                rng, speech[s_index], length, rirs, lambda n: speech_excerpt(rng, speech[s_index], n))
        else:
            dry = target = speech_excerpt(rng, speech[s_index], length)
        if active_speech_power(target, speech.sr) > 0.0:
            break
    else:
        raise AudioError(f"{speech.folder}: {MAX_TRIES} speech excerpts in a row were silent "
                         f"(last: {speech.names[s_index]})")
    for _ in range(MAX_TRIES):
        n_index = int(rng.integers(len(noise)))
        if rirs is not None and rng.random() < config.reverb_prob:
            interference, _, info["noise_room"] = reverberate(
                rng, noise[n_index], length, rirs, lambda n: excerpt(rng, noise[n_index], n, loop=True))
        else:
            interference = excerpt(rng, noise[n_index], length, loop=True)
        if np.any(interference != 0):
            break
    else:
        raise AudioError(f"{noise.folder}: {MAX_TRIES} noise excerpts in a row were silent "
                         f"(last: {noise.names[n_index]})")
    snr_db = float(rng.uniform(*config.snr_range))
    noisy = dry + noise_gain_for_snr(target, interference, snr_db, speech.sr) * interference
    level = 10.0 ** (float(rng.uniform(*config.gain_range)) / 20.0)
    target, noisy = target * level, noisy * level
    gain = peak_gain(target, noisy)
    info.update(speech=speech.names[s_index], noise=noise.names[n_index], snr_db=snr_db,
                gain_db=20.0 * np.log10(level * gain))
    return (target * gain).astype(np.float32), (noisy * gain).astype(np.float32), info


def speaker_group(name: str) -> str:
    """Speaker group of a corpus file for the held-apart split: its folder and the file-name
    prefix before the first '-' or '_' (``vctk/p226_001.flac`` -> ``vctk/p226``, LibriSpeech
    ``103-1240-0000.flac`` -> ``103``, and in LibriSpeech's own layout ``103/1240/...`` ->
    ``103``): a speaker's files stay on one side."""
    parts = name.split("/")
    prefix = re.split(r"[-_]", parts[-1].rsplit(".", 1)[0])[0]
    return f"{parts[0]}/{prefix}" if len(parts) > 1 else prefix


def held_apart(corpus, fraction, seed, what, by_speaker):
    """(training corpus, held-apart corpus): about ``fraction`` of the speaker groups (or files)
    go to validation, drawn from ``seed``."""
    counts = {"train": max(1, round(1000 * (1 - fraction))), "valid": max(1, round(1000 * fraction)), "test": 0}
    rng = np.random.default_rng(derive_seed(seed, "held apart", what) % 2 ** 32)
    names = list(range(len(corpus)))
    group = (lambda i: speaker_group(corpus.names[i])) if by_speaker else (lambda i: corpus.names[i])
    try:
        assigned, _ = split_by_group(names, group, counts, rng, what)
    except MixError as err:  # too few files to hold any apart
        raise AudioError(f"{corpus.folder}: {err}") from None
    return corpus.subset(assigned["train"]), corpus.subset(assigned["valid"])


def mixture_rng(seed, *where):
    return np.random.default_rng(derive_seed(seed, "mixture", *where))
