"""The band of a recording above the model's Nyquist frequency, carried into the output.

The model works at 16 kHz: it neither sees nor returns anything above 8 kHz. Resampling a 44.1
or 48 kHz recording to the model's rate and its output back (``drop``) therefore returns a
muffled file. ``keep`` adds the recording's own band above the model's, attenuated frame by frame
by as much as the model attenuated the top of its own band (``REFERENCE_BAND``): where the model
removed noise up there, the band above is lowered by as much; where it let speech through, the
band above passes too.

The split is complementary by construction: ``low`` is the recording resampled to the model's
rate and back (what the model was given), ``high = recording - low``, and ``low + high`` is the
recording exactly. The model's output replaces ``low``; ``high`` is scaled by the gain. The
crossover is thus the resampler's own transition band (about 7.5-7.9 kHz with soxr's VHQ filter):
the model's output fades out there by the same filter by which the recording's upper band fades
in, so a model that changed nothing would give the recording back unchanged: no seam, no notch.

A recording with nothing above the model's Nyquist (a band-limited file stored at 48 kHz) is
returned exactly as ``drop`` returns it.

``keep`` is the default because on full-band 48 kHz speech it brings the level and log-spectral
distance above 8 kHz close to the clean file's, where ``drop`` leaves 100 dB less, without moving
the scores of the model's band (experiments/high_band.py, results/high_band.md).
"""
import numpy as np
from scipy.signal import butter, oaconvolve, sosfiltfilt, welch

from echo.data.resample import resample

HIGH_BAND_MODES = ("keep", "drop")
DEFAULT_HIGH_BAND = "keep"
# The model's top band whose attenuation is carried over, as fractions of its Nyquist frequency
# (7.0-7.5 kHz for a 16 kHz model): the highest band the resampler passes untouched (its
# transition starts near 0.94), wide enough (16 STFT bins of the model) for a stable energy.
REFERENCE_BAND = (0.875, 0.9375)
# Energy is measured in Hann frames of FRAME_SECONDS every HOP_SECONDS (the model's own 32 ms /
# 8 ms at 16 kHz): short enough to follow syllables, long enough to average the band's fine
# structure; between frames the gain is interpolated linearly, so it never jumps.
FRAME_SECONDS = 0.032
HOP_SECONDS = 0.008
BANDPASS_ORDER = 6
# "Nothing above the model's Nyquist": less than this fraction of the recording's energy lies
# above HIGH_BAND_EDGE times that frequency (past the resampler's transition band). 16-bit
# quantisation noise of a band-limited speech file sits near 1e-8 (-80 dB); a full-band
# recording holds 1e-4 to 1e-2 there.
NOTHING_ABOVE = 1e-6
HIGH_BAND_EDGE = 1.05
# Long recordings are measured and scaled in blocks of this many samples, so that memory stays
# a small multiple of the recording itself.
BLOCK = 1 << 20


def has_high_band(channel: np.ndarray, sr: int, model_sr: int) -> bool:
    """Whether the 1-D ``channel`` at ``sr`` holds more than quantisation noise above
    ``model_sr / 2``."""
    if sr <= model_sr or channel.size == 0:
        return False
    edge = HIGH_BAND_EDGE * model_sr / 2
    above = total = 0.0
    for start in range(0, channel.size, BLOCK):
        block = np.asarray(channel[start:start + BLOCK], dtype=np.float64)
        freqs, psd = welch(block, sr, nperseg=min(block.size, 2048))
        above += float(psd[freqs > edge].sum())
        total += float(psd.sum())
    return total > 0.0 and above > NOTHING_ABOVE * total


def band_energy(wav: np.ndarray, sr: int, band_hz) -> np.ndarray:
    """Energy of ``wav`` in ``band_hz`` per frame (Hann frames of FRAME_SECONDS, one every
    HOP_SECONDS, the first centred on sample 0). Zero-phase band-pass, so frames line up."""
    wav = np.asarray(wav, dtype=np.float64)
    sos = butter(BANDPASS_ORDER, band_hz, btype="bandpass", fs=sr, output="sos")
    default_padlen = 3 * (2 * len(sos) + 1)
    filtered = sosfiltfilt(sos, wav, padlen=min(default_padlen, wav.size - 1))
    window = np.hanning(max(3, int(round(FRAME_SECONDS * sr))))
    energy = oaconvolve(filtered ** 2, window, mode="same")
    hop = max(1, int(round(HOP_SECONDS * sr)))
    return np.maximum(energy[::hop], 0.0)  # FFT convolution can leave -1e-20 where it is 0


def suppression_gain(noisy: np.ndarray, enhanced: np.ndarray, model_sr: int) -> np.ndarray:
    """Per frame, the amplitude ratio of ``enhanced`` to ``noisy`` (both 1-D at ``model_sr``) in
    the model's REFERENCE_BAND, at most 1; 0 where the noisy band is silent (the model has said
    nothing there). Frames as in ``band_energy``."""
    band = tuple(f * model_sr / 2 for f in REFERENCE_BAND)
    e_noisy = band_energy(noisy, model_sr, band)
    e_enhanced = band_energy(enhanced, model_sr, band)
    ratio = np.divide(e_enhanced, e_noisy, out=np.zeros_like(e_noisy), where=e_noisy > 0.0)
    return np.sqrt(np.minimum(ratio, 1.0))


def gain_at_rate(gain: np.ndarray, model_sr: int, sr: int, start: int, stop: int) -> np.ndarray:
    """The frame gains interpolated onto samples ``start:stop`` of a signal at ``sr``."""
    hop_seconds = max(1, int(round(HOP_SECONDS * model_sr))) / model_sr
    frame_times = np.arange(gain.size) * hop_seconds
    return np.interp(np.arange(start, stop) / sr, frame_times, gain)


def add_high_band(out: np.ndarray, recording: np.ndarray, noisy_model: np.ndarray, enhanced_model: np.ndarray,
                  sr: int, model_sr: int) -> None:
    """Add to ``out`` (1-D at ``sr``: the model's output resampled back) the recording's band
    above the model's, scaled by the model's suppression gain. ``noisy_model`` and
    ``enhanced_model`` are the model's input and output at ``model_sr``."""
    n = recording.shape[-1]
    low = resample(noisy_model, model_sr, sr)
    low = np.pad(low, (0, max(0, n - low.size)))[:n]
    gain = suppression_gain(noisy_model, enhanced_model, model_sr)
    for start in range(0, n, BLOCK):
        stop = min(n, start + BLOCK)
        high = recording[start:stop].astype(np.float64) - low[start:stop]
        out[start:stop] += (gain_at_rate(gain, model_sr, sr, start, stop) * high).astype(out.dtype)


def restore_high_band(out: np.ndarray, recording: np.ndarray, noisy_model: np.ndarray, enhanced_model: np.ndarray,
                      sr: int, model_sr: int, mode: str) -> int:
    """``out``, ``recording``: ``[channels, samples]`` at ``sr``; ``noisy_model``,
    ``enhanced_model``: ``[channels, samples]`` at ``model_sr``. With ``mode`` 'keep', adds the
    band above the model's to the channels of ``out`` whose recording holds one, in place;
    returns how many channels got it."""
    if mode not in HIGH_BAND_MODES:
        raise ValueError(f"high band mode must be one of {HIGH_BAND_MODES}, got {mode!r}")
    if mode == "drop" or sr <= model_sr:
        return 0
    kept = 0
    for c in range(recording.shape[0]):
        if has_high_band(recording[c], sr, model_sr):
            add_high_band(out[c], recording[c], noisy_model[c], enhanced_model[c], sr, model_sr)
            kept += 1
    return kept
