"""The composite measures of Hu & Loizou (2008): CSIG, CBAK, COVL, with their ingredients
segmental SNR, log-likelihood ratio (LLR) and weighted spectral slope (WSS)."""
import math

import numpy as np

from echo.util.core_metrics import PESQ_RATE, as_mono, pesq_wb, resample

# Y. Hu and P. C. Loizou, "Evaluation of objective quality measures for speech enhancement",
# IEEE Trans. Audio, Speech, Lang. Process., 16(1):229-238, 2008. The frame-level measures follow
# that paper and the composite-measure code published with P. C. Loizou, "Speech Enhancement:
# Theory and Practice" (CRC Press, 2007): 30 ms Hann frames with 75 % overlap; LLR with LPC
# order 16 (10 below 10 kHz); WSS over 25 critical bands with K_max = 20, K_locmax = 1; LLR and
# WSS averaged over the lowest 95 % of the frame values; segmental SNR frames clipped to
# [-10, 35] dB and averaged over all frames. One addition: frames where either signal is
# digitally silent have no LPC model and are left out of the LLR (the reference code would
# return NaN for the whole file).
#
# PESQ input: the regression was fitted with narrow-band P.862 scores. Most speech-enhancement
# papers, and the python evaluation code they share, feed wide-band PESQ (P.862.2 MOS-LQO)
# instead; this module does the same so that its numbers are comparable with theirs (noisy
# VoiceBank-DEMAND is usually reported as CSIG/CBAK/COVL = 3.35/2.44/2.63).

COMPOSITE_FRAME_MS = 30
COMPOSITE_TRIM_ALPHA = 0.95  # fraction of lowest frame distortions kept for LLR and WSS
SEGSNR_MIN_DB, SEGSNR_MAX_DB = -10.0, 35.0
MOS_MIN, MOS_MAX = 1.0, 5.0

# Critical bands of the WSS measure (Klatt 1982), centre frequencies and bandwidths in Hz.
WSS_CENTER_HZ = np.array([
    50.0000, 120.000, 190.000, 260.000, 330.000, 400.000, 470.000, 540.000, 617.372,
    703.378, 798.717, 904.128, 1020.38, 1148.30, 1288.72, 1442.54, 1610.70, 1794.16,
    1993.93, 2211.08, 2446.71, 2701.97, 2978.04, 3276.17, 3597.63])
WSS_BANDWIDTH_HZ = np.array([
    70.0000, 70.0000, 70.0000, 70.0000, 70.0000, 70.0000, 70.0000, 77.3724, 86.0056,
    95.3398, 105.411, 116.256, 127.914, 140.423, 153.823, 168.154, 183.457, 199.776,
    217.153, 235.631, 255.255, 276.072, 298.126, 321.465, 346.136])
WSS_K_MAX = 20.0
WSS_K_LOCMAX = 1.0


def _frame_setup(sr):
    length = round(COMPOSITE_FRAME_MS * sr / 1000)
    hop = length // 4
    window = 0.5 * (1 - np.cos(2 * np.pi * np.arange(1, length + 1) / (length + 1)))
    return length, hop, window


def _windowed_frames(signal, sr):
    """``[frames, length]`` Hann-windowed frames; the frame count is floor(len/hop - length/hop),
    which drops a possibly complete last frame, as the reference definition does."""
    length, hop, window = _frame_setup(sr)
    count = max(int(len(signal) / hop - length / hop), 0)
    if count == 0:
        return np.zeros((0, length))
    frames = np.lib.stride_tricks.sliding_window_view(signal, length)[::hop][:count]
    return frames * window


def _lower_fraction_mean(values):
    """Mean of the lowest 95 % of the finite frame values (outlier frames are dropped)."""
    values = np.sort(values[np.isfinite(values)])
    keep = int(round(len(values) * COMPOSITE_TRIM_ALPHA))
    return float(np.mean(values[:keep])) if keep > 0 else math.nan


def segmental_snr(clean, processed, sr):
    """Segmental SNR in dB: per-frame SNRs clipped to [-10, 35] dB, averaged over all frames."""
    eps = np.finfo(np.float64).eps
    clean_frames = _windowed_frames(as_mono(clean, "clean"), sr)
    processed_frames = _windowed_frames(as_mono(processed, "processed"), sr)
    if len(clean_frames) == 0:
        return math.nan
    signal_energy = np.sum(clean_frames ** 2, axis=1)
    noise_energy = np.sum((clean_frames - processed_frames) ** 2, axis=1)
    frame_snr = 10 * np.log10(signal_energy / (noise_energy + eps) + eps)
    return float(np.mean(np.clip(frame_snr, SEGSNR_MIN_DB, SEGSNR_MAX_DB)))


def _autocorrelation(frames, order):
    """Lags 0..order of each frame's autocorrelation, sum_n f[n] f[n+k], via the power spectrum
    (zero-padded by at least ``order`` samples so that no lag wraps around)."""
    n_fft = 2 ** int(math.ceil(math.log2(frames.shape[1] + order)))
    power = np.abs(np.fft.rfft(frames, n_fft, axis=1)) ** 2
    return np.fft.irfft(power, n_fft, axis=1)[:, :order + 1]


def _lpc_from_autocorrelation(r):
    """Levinson-Durbin on ``[frames, order+1]`` autocorrelations -> ``[frames, order+1]``
    prediction-error filters [1, -a_1, ..., -a_p]. Silent frames give NaN rows."""
    frames, order = r.shape[0], r.shape[1] - 1
    a = np.zeros((frames, order))
    error = r[:, 0].copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in range(order):
            previous = a[:, :i].copy()
            reflection = (r[:, i + 1] - np.sum(previous * r[:, i:0:-1], axis=1)) / error
            a[:, i] = reflection
            a[:, :i] = previous - reflection[:, None] * previous[:, ::-1]
            error = (1 - reflection ** 2) * error
    return np.concatenate([np.ones((frames, 1)), -a], axis=1)


def log_likelihood_ratio(clean, processed, sr):
    """Per-frame LLR: log(a_p R_c a_p^T / a_c R_c a_c^T), R_c the clean autocorrelation matrix.
    Frames where either signal is silent have no LPC model and are NaN."""
    order = 10 if sr < 10000 else 16
    clean_frames = _windowed_frames(as_mono(clean, "clean"), sr)
    processed_frames = _windowed_frames(as_mono(processed, "processed"), sr)
    r_clean = _autocorrelation(clean_frames, order)
    a_clean = _lpc_from_autocorrelation(r_clean)
    a_processed = _lpc_from_autocorrelation(_autocorrelation(processed_frames, order))
    lags = np.abs(np.subtract.outer(np.arange(order + 1), np.arange(order + 1)))
    toeplitz_clean = r_clean[:, lags]
    numerator = np.einsum("fi,fij,fj->f", a_processed, toeplitz_clean, a_processed)
    denominator = np.einsum("fi,fij,fj->f", a_clean, toeplitz_clean, a_clean)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(numerator / denominator)


def _critical_band_filters(n_half, sr):
    """Gaussian-shaped critical-band weights over the first ``n_half`` FFT bins, ``[bands, bins]``."""
    max_freq = sr / 2
    bins = np.arange(n_half)
    centers = WSS_CENTER_HZ / max_freq * n_half
    widths = WSS_BANDWIDTH_HZ / max_freq * n_half
    norm = np.log(WSS_BANDWIDTH_HZ[0]) - np.log(WSS_BANDWIDTH_HZ)
    filters = np.exp(-11 * ((bins[None, :] - np.floor(centers[:, None])) / widths[:, None]) ** 2
                     + norm[:, None])
    floor = np.exp(-30 / (2 * 2.303))  # weights below -30 dB are set to zero
    return filters * (filters > floor)


def _band_energies_db(frames, filters, n_fft):
    spectrum = np.abs(np.fft.rfft(frames, n_fft, axis=1)[:, :filters.shape[1]]) ** 2
    return 10 * np.log10(np.maximum(spectrum @ filters.T, 1e-10))


def _nearest_peak_db(energy, slope):
    """For every band but the last, the energy of the nearest spectral peak: searched upwards
    when the spectrum rises at the band, downwards otherwise (with the index conventions of the
    reference implementation of WSS)."""
    frames, n_slopes = slope.shape
    rising = slope > 0
    # first index >= i whose slope is not rising (n_slopes when none) and last index <= i whose
    # slope rises (-1 when none), built by one sweep in each direction
    next_flat = np.empty((frames, n_slopes), dtype=int)
    prev_rise = np.empty((frames, n_slopes), dtype=int)
    following = np.full(frames, n_slopes)
    for i in range(n_slopes - 1, -1, -1):
        following = np.where(rising[:, i], following, i)
        next_flat[:, i] = following
    preceding = np.full(frames, -1)
    for i in range(n_slopes):
        preceding = np.where(rising[:, i], i, preceding)
        prev_rise[:, i] = preceding
    peak_index = np.where(rising, next_flat - 1, prev_rise + 1)
    return np.take_along_axis(energy, peak_index, axis=1)


def _wss_weights(energy, slope):
    peak = _nearest_peak_db(energy, slope)
    band = energy[:, :-1]
    global_max = np.max(energy, axis=1, keepdims=True)
    return (WSS_K_MAX / (WSS_K_MAX + global_max - band)) * (WSS_K_LOCMAX / (WSS_K_LOCMAX + peak - band))


def weighted_spectral_slope(clean, processed, sr):
    """Per-frame weighted spectral slope distance (Klatt 1982) over 25 critical bands."""
    clean_frames = _windowed_frames(as_mono(clean, "clean"), sr)
    processed_frames = _windowed_frames(as_mono(processed, "processed"), sr)
    frame_length = clean_frames.shape[1]
    n_fft = 2 ** int(math.ceil(math.log2(2 * frame_length)))
    filters = _critical_band_filters(n_fft // 2, sr)
    clean_energy = _band_energies_db(clean_frames, filters, n_fft)
    processed_energy = _band_energies_db(processed_frames, filters, n_fft)
    clean_slope = np.diff(clean_energy, axis=1)
    processed_slope = np.diff(processed_energy, axis=1)
    weights = (_wss_weights(clean_energy, clean_slope)
               + _wss_weights(processed_energy, processed_slope)) / 2
    return np.sum(weights * (clean_slope - processed_slope) ** 2, axis=1) / np.sum(weights, axis=1)


def composite_measures(clean, processed, sr, pesq=None, notes=None):
    """CSIG, CBAK, COVL (Hu & Loizou 2008) with their ingredients.

    Returns ``{csig, cbak, covl, llr, wss, ssnr}``. ``pesq`` is the wide-band PESQ of the pair
    (computed when not given). The composites are clipped to [1, 5]:
      CSIG = 3.093 - 1.029 LLR + 0.603 PESQ - 0.009 WSS
      CBAK = 1.634 + 0.478 PESQ - 0.007 WSS + 0.063 segSNR
      COVL = 1.594 + 0.805 PESQ - 0.512 LLR - 0.007 WSS
    Signals at rates other than 16 kHz are resampled to 16 kHz. A NaN PESQ gives NaN composites.
    """
    clean = resample(as_mono(clean, "clean"), sr, PESQ_RATE)
    processed = resample(as_mono(processed, "processed"), sr, PESQ_RATE)
    if pesq is None:
        pesq = pesq_wb(clean, processed, PESQ_RATE, notes=notes)
    llr = _lower_fraction_mean(log_likelihood_ratio(clean, processed, PESQ_RATE))
    wss = _lower_fraction_mean(weighted_spectral_slope(clean, processed, PESQ_RATE))
    ssnr = segmental_snr(clean, processed, PESQ_RATE)
    csig = 3.093 - 1.029 * llr + 0.603 * pesq - 0.009 * wss
    cbak = 1.634 + 0.478 * pesq - 0.007 * wss + 0.063 * ssnr
    covl = 1.594 + 0.805 * pesq - 0.512 * llr - 0.007 * wss
    return {"csig": _clip_mos(csig), "cbak": _clip_mos(cbak), "covl": _clip_mos(covl),
            "llr": llr, "wss": wss, "ssnr": ssnr}


def _clip_mos(value):
    return float(np.clip(value, MOS_MIN, MOS_MAX)) if np.isfinite(value) else math.nan
