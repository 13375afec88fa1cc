"""Speech-enhancement metrics: PESQ, (E)STOI, SI-SDR/SIR/SAR, the composite measures CSIG/CBAK/COVL
with segmental SNR, and DNSMOS P.835.

Conventions
-----------
* Signals are 1-D (mono) arrays of one sample rate; torch tensors are accepted too.
* PESQ is wide-band PESQ (ITU-T P.862.2, MOS-LQO) from the ``pesq`` package, computed at 16 kHz.
  Signals at other rates are resampled to 16 kHz for PESQ and for the composite measures;
  (E)STOI and SI-SDR use the signals at their own rate (pystoi resamples to 10 kHz itself).
* A metric that cannot be computed for a file (e.g. PESQ finds no utterance) is NaN, with a
  note that explains why, instead of an exception. Notes go to the ``notes`` list when one is passed, otherwise
  they are issued as warnings.
* Signals whose lengths differ by a few samples are trimmed to the shortest (with a note);
  larger differences (> 1 % or > 0.1 s) raise ``LengthMismatchError``.
"""
import math
import os
import warnings
from fractions import Fraction

import numpy as np
import pesq as pesq_lib
from pystoi import stoi as pystoi_stoi
from scipy.signal import resample_poly

PESQ_RATE = 16000

# Keys of ``score_pair``'s result, in the order they are reported.
PAIR_METRICS = ("pesq", "estoi", "stoi", "si_sdr", "si_sir", "si_sar", "csig", "cbak", "covl", "ssnr")
VALIDATION_METRICS = ("pesq", "estoi", "si_sdr")
DNSMOS_METRICS = ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl")

# Length differences up to both limits are trimmed away; more than either is an error.
MAX_TRIM_FRACTION = 0.01
MAX_TRIM_SECONDS = 0.1


class LengthMismatchError(ValueError):
    """Signals that should be time-aligned differ in length by more than a few samples."""


class DnsmosUnavailable(RuntimeError):
    """The DNSMOS models (``speechmos`` on ``onnxruntime``) cannot be loaded."""


# --------------------------------------------------------------------------------------------
# Signal handling
# --------------------------------------------------------------------------------------------

def as_mono(signal, what="signal"):
    """``signal`` (numpy array, list or torch tensor on any device) as a float64 1-D array."""
    if hasattr(signal, "detach"):  # torch tensor (any dtype or device); torch is not imported here
        signal = signal.detach().float().cpu().numpy()
    array = np.asarray(signal, dtype=np.float64)
    array = np.atleast_1d(np.squeeze(array))  # a one-sample file stays a signal of length 1
    if array.ndim != 1:
        raise ValueError(f"{what}: expected a mono signal, got shape {np.shape(signal)}")
    return array


def trim_to_shortest(signals, sr, names=None):
    """Trim the signals (a sequence of 1-D arrays) to the shortest one.

    Returns ``(trimmed_list, note)`` where ``note`` is None when nothing was cut. A difference
    of more than 1 % of the longest signal or more than 0.1 s raises ``LengthMismatchError``
    naming the signals (``names``, e.g. file paths), because it means they do not belong
    together (or one was resampled), not a rounding difference of an enhancer's framing.
    """
    names = names or [f"signal {i + 1}" for i in range(len(signals))]
    lengths = [len(x) for x in signals]
    shortest, longest = min(lengths), max(lengths)
    if shortest == longest:
        return list(signals), None
    difference = longest - shortest
    described = ", ".join(f"{name} has {n} samples" for name, n in zip(names, lengths))
    if difference > MAX_TRIM_FRACTION * longest or difference > MAX_TRIM_SECONDS * sr:
        raise LengthMismatchError(f"lengths differ by {difference} samples "
                                  f"({difference / sr:.3f} s): {described}")
    note = f"trimmed {difference} sample(s) to the shortest signal ({described})"
    return [x[:shortest] for x in signals], note


def resample(signal, sr_from, sr_to):
    """Polyphase resampling between any two integer rates (identity when they are equal)."""
    if sr_from == sr_to:
        return signal
    ratio = Fraction(int(sr_to), int(sr_from))
    return resample_poly(signal, ratio.numerator, ratio.denominator)


def _add_note(notes, text):
    if notes is None:
        warnings.warn(text, RuntimeWarning, stacklevel=3)
    else:
        notes.append(text)


# --------------------------------------------------------------------------------------------
# SI-SDR and its decomposition
# --------------------------------------------------------------------------------------------

def _dot(a, b):
    # einsum instead of np.dot: np.dot goes to a multi-threaded BLAS, which on a busy machine
    # (several worker processes, a training job) can be a hundred times slower for 1-D vectors.
    return float(np.einsum("i,i->", a, b))


def _project(signal, onto):
    """Orthogonal projection of ``signal`` onto the line spanned by ``onto`` (zero if ``onto`` is)."""
    energy = _dot(onto, onto)
    if energy == 0:
        return np.zeros_like(onto)
    return _dot(signal, onto) / energy * onto


def _energy_ratio_db(numerator, denominator):
    """10 log10(|numerator|^2 / |denominator|^2); +inf for a zero denominator (a perfect match)."""
    num, den = _dot(numerator, numerator), _dot(denominator, denominator)
    if num == 0 and den == 0:
        return math.nan
    if den == 0:
        return math.inf
    if num == 0:
        return -math.inf
    return float(10 * np.log10(num / den))


def si_sdr_components(reference, estimate, mixture):
    """(SI-SDR, SI-SIR, SI-SAR) in dB of ``estimate`` against ``reference``.

    Energy decomposition with the noise reference n = mixture - reference, x = reference,
    e = estimate:  s_t = <e,x>/|x|^2 x,  e_n = <e,n>/|n|^2 n,  e_a = e - s_t - e_n;
    SI-SDR = |s_t|^2/|e_n + e_a|^2,  SI-SIR = |s_t|^2/|e_n|^2,  SI-SAR = |s_t|^2/|e_a|^2 (in dB).
    No mean is removed. A perfect estimate gives +inf; a silent reference gives NaN.
    """
    x = as_mono(reference, "reference")
    e = as_mono(estimate, "estimate")
    m = as_mono(mixture, "mixture")
    if not len(x) == len(e) == len(m):
        raise LengthMismatchError(f"reference, estimate and mixture lengths differ: "
                                  f"{len(x)}, {len(e)}, {len(m)}")
    if not np.any(x):
        return math.nan, math.nan, math.nan
    target = _project(e, x)
    noise_part = _project(e, m - x)
    artifacts = e - target - noise_part
    return (_energy_ratio_db(target, noise_part + artifacts),
            _energy_ratio_db(target, noise_part),
            _energy_ratio_db(target, artifacts))


def si_sdr(reference, estimate):
    """Scale-invariant SDR in dB: 10 log10(|s_t|^2 / |e - s_t|^2) with s_t = <e,x>/|x|^2 x."""
    x = as_mono(reference, "reference")
    e = as_mono(estimate, "estimate")
    if len(x) != len(e):
        raise LengthMismatchError(f"reference and estimate lengths differ: {len(x)}, {len(e)}")
    if not np.any(x):
        return math.nan
    target = _project(e, x)
    return _energy_ratio_db(target, e - target)


# --------------------------------------------------------------------------------------------
# PESQ and STOI
# --------------------------------------------------------------------------------------------

def pesq_wb(ref, deg, sr, notes=None):
    """Wide-band PESQ (P.862.2 MOS-LQO, about 1.04 to 4.64) of ``deg`` against ``ref``.

    Rates other than 16 kHz are resampled to 16 kHz first. A pair PESQ cannot score (no
    utterance found, shorter than 0.25 s, silent input) gives NaN and a note.
    """
    ref = resample(as_mono(ref, "reference"), sr, PESQ_RATE)
    deg = resample(as_mono(deg, "degraded"), sr, PESQ_RATE)
    if not np.any(ref) or not np.any(deg):
        _add_note(notes, "PESQ not computed: the reference or the degraded signal is silent")
        return math.nan
    try:
        with np.errstate(all="ignore"):
            return float(pesq_lib.pesq(PESQ_RATE, ref, deg, "wb"))
    except (pesq_lib.PesqError, ValueError) as err:
        message = err.args[0] if err.args else type(err).__name__
        if isinstance(message, bytes):  # the C extension reports its messages as bytes
            message = message.decode(errors="replace")
        _add_note(notes, f"PESQ not computed: {message}")
        return math.nan


# pystoi works at 10 kHz in 256-sample frames with 50 % overlap and needs 30 of them: shorter
# signals cannot be scored, and pystoi fails outright on signals shorter than one frame
STOI_MIN_SECONDS = 31 * 128 / 10000


def _pystoi(clean, processed, sr, extended, notes):
    name = "ESTOI" if extended else "STOI"
    clean = as_mono(clean, "clean")
    processed = as_mono(processed, "processed")
    if len(clean) < STOI_MIN_SECONDS * sr:
        _add_note(notes, f"{name} not computed: the signal is shorter than {STOI_MIN_SECONDS:.2f} s")
        return math.nan
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(pystoi_stoi(clean, processed, sr, extended=extended))
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        # pystoi returns a placeholder of 1e-5 here; a NaN keeps it out of the averages.
        _add_note(notes, f"{name} not computed: fewer than 30 non-silent frames (signal too short)")
        return math.nan
    return value


def stoi(clean, processed, sr, notes=None):
    """STOI (Taal et al. 2011) via pystoi."""
    return _pystoi(clean, processed, sr, extended=False, notes=notes)


def estoi(clean, processed, sr, notes=None):
    """Extended STOI (Jensen & Taal 2016) via pystoi."""
    return _pystoi(clean, processed, sr, extended=True, notes=notes)


# --------------------------------------------------------------------------------------------
# Composite measures (Hu & Loizou 2008)
# --------------------------------------------------------------------------------------------
#
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


# --------------------------------------------------------------------------------------------
# One file
# --------------------------------------------------------------------------------------------

def score_pair(clean, noisy, enhanced, sr, notes=None, names=("clean", "noisy", "enhanced")):
    """All intrusive metrics of ``enhanced`` against ``clean`` (``noisy`` is the mixture that
    defines the noise reference of SI-SIR/SI-SAR). Keys: ``PAIR_METRICS``.

    To score the unprocessed input, pass the noisy signal as ``enhanced``. ``names`` label the
    signals in error messages and notes (e.g. the file paths).
    """
    signals = [as_mono(x, name) for name, x in zip(names, (clean, noisy, enhanced))]
    (x, y, e), note = trim_to_shortest(signals, sr, names)
    if note:
        _add_note(notes, note)

    x16, e16 = resample(x, sr, PESQ_RATE), resample(e, sr, PESQ_RATE)
    pesq = pesq_wb(x16, e16, PESQ_RATE, notes=notes)
    composite = composite_measures(x16, e16, PESQ_RATE, pesq=pesq, notes=notes)
    sdr, sir, sar = si_sdr_components(x, e, y)
    return {
        "pesq": pesq,
        "estoi": estoi(x, e, sr, notes=notes),
        "stoi": stoi(x, e, sr, notes=notes),
        "si_sdr": sdr, "si_sir": sir, "si_sar": sar,
        "csig": composite["csig"], "cbak": composite["cbak"], "covl": composite["covl"],
        "ssnr": composite["ssnr"],
    }


def score_for_validation(clean, enhanced, noisy, sr, notes=None):
    """The quick metrics for validation during training: ``{pesq, estoi, si_sdr}``.

    ``noisy`` is accepted for interface symmetry with ``score_pair`` and is only length-checked.
    """
    names = ("clean", "enhanced", "noisy")
    signals = [as_mono(x, name) for name, x in zip(names, (clean, enhanced, noisy))]
    (x, e, _), note = trim_to_shortest(signals, sr, names)
    if note:
        _add_note(notes, note)
    return {"pesq": pesq_wb(x, e, sr, notes=notes),
            "estoi": estoi(x, e, sr, notes=notes),
            "si_sdr": si_sdr(x, e)}


# --------------------------------------------------------------------------------------------
# DNSMOS P.835 (non-intrusive)
# --------------------------------------------------------------------------------------------

DNSMOS_RATE = 16000
_dnsmos_model = None


def _dnsmos_model_dir():
    """Folder of the DNSMOS P.835 ONNX models shipped with ``speechmos``."""
    try:
        import onnxruntime  # noqa: F401  (the models run on it)
        from speechmos import dnsmos as speechmos_dnsmos
    except ImportError as err:
        raise DnsmosUnavailable(
            f"DNSMOS needs the packages speechmos and onnxruntime ({err}); install them with "
            "`pip install speechmos==0.0.1.1 onnxruntime`") from None
    model_dir = os.path.join(os.path.dirname(speechmos_dnsmos.__file__), "dnsmos_models")
    for name in ("sig_bak_ovr.onnx", "model_v8.onnx"):
        if not os.path.isfile(os.path.join(model_dir, name)):
            raise DnsmosUnavailable(f"DNSMOS model {name} is missing from {model_dir}; "
                                    "reinstall speechmos")
    return model_dir


def check_dnsmos_available():
    """Raise ``DnsmosUnavailable`` with an install hint when DNSMOS cannot run here. Loads no
    model, so that worker processes started afterwards create their own inference sessions."""
    _dnsmos_model_dir()


def _load_dnsmos(threads):
    """The DNSMOS P.835 model of ``speechmos`` on onnxruntime sessions that use ``threads``
    intra-op threads (0: onnxruntime's choice; 1 when worker processes share the cores)."""
    model_dir = _dnsmos_model_dir()
    import onnxruntime
    from speechmos import dnsmos as speechmos_dnsmos

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1

    def session(name):
        return onnxruntime.InferenceSession(os.path.join(model_dir, name), options,
                                            providers=["CPUExecutionProvider"])

    class _Dnsmos(speechmos_dnsmos.DNSMOS):
        # speechmos creates its sessions with default options (a thread per core in every
        # worker process); only its feature extraction and score mapping are reused.
        def __init__(self):
            self.primary_model_path = os.path.join(model_dir, "sig_bak_ovr.onnx")
            self.onnx_sess = session("sig_bak_ovr.onnx")
            self.p808_onnx_sess = session("model_v8.onnx")

    return _Dnsmos()


def _get_dnsmos(threads=0):
    global _dnsmos_model
    if _dnsmos_model is None:
        _dnsmos_model = _load_dnsmos(threads)
    return _dnsmos_model


def dnsmos_p835(audio, sr, notes=None, threads=0):
    """DNSMOS P.835 ``{dnsmos_sig, dnsmos_bak, dnsmos_ovrl}`` of one signal (no reference needed).

    Resampled to 16 kHz; samples outside [-1, 1] are clipped (with a note) because the model
    expects full-scale floats. Clips shorter than 9 s are repeated to 9 s by the model code.
    ``threads`` = 0 lets onnxruntime choose.
    """
    signal = resample(as_mono(audio, "audio"), sr, DNSMOS_RATE)
    if np.max(np.abs(signal)) > 1:
        _add_note(notes, "DNSMOS input exceeds full scale; clipped to [-1, 1]")
        signal = np.clip(signal, -1, 1)
    scores = _get_dnsmos(threads)(signal.astype(np.float32), DNSMOS_RATE, False)
    return {"dnsmos_sig": float(scores["sig_mos"]), "dnsmos_bak": float(scores["bak_mos"]),
            "dnsmos_ovrl": float(scores["ovrl_mos"])}
