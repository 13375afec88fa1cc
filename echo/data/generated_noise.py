"""Noises made rather than recorded: babble, speech-shaped noise and coloured noise.

Recorded noise collections are short on the two noises that hurt speech most, other talkers and
stationary noise with the spectrum of speech. These generators fill that gap from speech the
caller holds apart from the training speakers, so babble never contains a training voice.
Every function draws from the generator it is given: same seed, same noise.
"""
import numpy as np

from echo.data.mix import active_speech_power


def coloured_noise(rng, length: int, exponent: float) -> np.ndarray:
    """Gaussian noise whose power spectrum falls as 1/f**exponent (0 white, 1 pink, 2 brown),
    at unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(length))
    freqs = np.arange(len(spectrum), dtype=np.float64)
    freqs[0] = 1.0  # DC keeps the gain of the first bin instead of dividing by zero
    noise = np.fft.irfft(spectrum / freqs ** (exponent / 2.0), n=length)
    return (noise / np.sqrt(np.mean(noise ** 2))).astype(np.float32)


def long_term_spectrum(utterances, n_fft: int = 1024) -> np.ndarray:
    """Average power spectrum (|rfft|**2 per bin, Hann frames with half overlap) over utterances."""
    window = np.hanning(n_fft)
    total, frames = np.zeros(n_fft // 2 + 1), 0
    for speech in utterances:
        for start in range(0, len(speech) - n_fft + 1, n_fft // 2):
            total += np.abs(np.fft.rfft(speech[start:start + n_fft] * window)) ** 2
            frames += 1
    if frames == 0:
        raise ValueError(f"speech too short for a {n_fft}-point spectrum")
    return total / frames


def speech_shaped_noise(rng, length: int, spectrum: np.ndarray) -> np.ndarray:
    """Gaussian noise with the given long-term power spectrum (from ``long_term_spectrum``), at
    unit RMS. The noise is shaped in one long FFT, the spectrum interpolated onto its bins."""
    white = np.fft.rfft(rng.standard_normal(length))
    bins = np.linspace(0.0, 1.0, len(white))
    magnitude = np.sqrt(np.interp(bins, np.linspace(0.0, 1.0, len(spectrum)), spectrum))
    noise = np.fft.irfft(white * magnitude, n=length)
    return (noise / np.sqrt(np.mean(noise ** 2))).astype(np.float32)


def babble(rng, utterances, length: int, talkers: int, sr: int) -> np.ndarray:
    """Sum of ``talkers`` utterances (distinct when there are enough), each looped to ``length``
    from a random start and brought to the same active-speech level within +-3 dB, at unit RMS."""
    if not utterances:
        raise ValueError("babble needs at least one utterance")
    picks = rng.choice(len(utterances), size=talkers, replace=talkers > len(utterances))
    mixture = np.zeros(length)
    for index in picks:
        speech = utterances[int(index)]
        start = int(rng.integers(len(speech)))
        voice = np.tile(speech, -(-(start + length) // len(speech)))[start:start + length]
        level = 10 ** (rng.uniform(-3.0, 3.0) / 20) / np.sqrt(active_speech_power(speech, sr))
        mixture += level * voice
    return (mixture / np.sqrt(np.mean(mixture ** 2))).astype(np.float32)
