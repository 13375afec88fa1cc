"""Sample-rate conversion for the dataset tools.

soxr (a high-quality polyphase/FFT resampler) is used when it is installed; otherwise
``scipy.signal.resample_poly`` with a Kaiser-windowed low-pass, which is also a proper
band-limited polyphase resampler. Either way the output has exactly
``round(n * sr_out / sr_in)`` samples, so that file lengths do not depend on which
backend happened to be installed.
"""
from fractions import Fraction

import numpy as np

try:
    import soxr
except ImportError:  # optional: scipy is the fallback
    soxr = None


def backend_name() -> str:
    """Which resampler ``resample`` uses on this machine."""
    return "soxr" if soxr is not None else "scipy.signal.resample_poly"


def resampled_length(n_samples: int, sr_in: int, sr_out: int) -> int:
    """Number of samples after resampling ``n_samples`` from ``sr_in`` to ``sr_out``."""
    return int(round(n_samples * sr_out / sr_in))


def resample(audio, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample ``audio`` (``[samples]`` or ``[channels, samples]``, float) along its last axis."""
    audio = np.asarray(audio, dtype=np.float32)
    if sr_in == sr_out:
        return audio
    squeeze = audio.ndim == 1
    frames = audio[None] if squeeze else audio
    target_len = resampled_length(frames.shape[-1], sr_in, sr_out)
    if soxr is not None:
        # soxr wants [samples, channels]
        out = soxr.resample(np.ascontiguousarray(frames.T), sr_in, sr_out, quality="VHQ").T
    else:
        ratio = Fraction(sr_out, sr_in)
        from scipy.signal import resample_poly
        out = resample_poly(frames, ratio.numerator, ratio.denominator, axis=-1,
                            window=("kaiser", 8.0))
    out = _fit_length(np.asarray(out, dtype=np.float32), target_len)
    return out[0] if squeeze else out


def _fit_length(frames, target_len):
    # The backends differ by a sample or so at the end (rounding of the last partial period).
    if frames.shape[-1] >= target_len:
        return np.ascontiguousarray(frames[..., :target_len])
    pad = target_len - frames.shape[-1]
    return np.pad(frames, [(0, 0)] * (frames.ndim - 1) + [(0, pad)])


def read_mono(path, sr: int) -> np.ndarray:
    """Read an audio file as 1-D float32 at ``sr``: channels averaged, resampled if needed.
    Unreadable or empty files raise ``AudioError`` naming the file."""
    from echo.util.audio import read_audio
    audio, file_sr = read_audio(path)
    return resample(audio.mean(axis=0), file_sr, sr)


def to_pcm16_range(audio):
    """``audio`` clipped to what a 16-bit file can hold, and the number of samples clipped
    (counted so that the tools can report it instead of clipping silently)."""
    audio = np.asarray(audio, dtype=np.float32)
    limit = np.float32(32767 / 32768)
    n_clipped = int(np.count_nonzero((audio > limit) | (audio < -1.0)))
    return np.clip(audio, -1.0, limit), n_clipped
