"""Signal handling and the core intrusive metrics: SI-SDR/SIR/SAR, wide-band PESQ, STOI and ESTOI.

Conventions (shared by ``echo.util.composite`` and ``echo.util.dnsmos``)
---------------------------------------------------------------------------
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
import warnings
from fractions import Fraction

import numpy as np
import pesq as pesq_lib
from pystoi import stoi as pystoi_stoi
from scipy.signal import resample_poly

PESQ_RATE = 16000

# Length differences up to both limits are trimmed away; more than either is an error.
MAX_TRIM_FRACTION = 0.01
MAX_TRIM_SECONDS = 0.1


class LengthMismatchError(ValueError):
    """Signals that should be time-aligned differ in length by more than a few samples."""


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


def add_note(notes, text):
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
        add_note(notes, "PESQ not computed: the reference or the degraded signal is silent")
        return math.nan
    try:
        with np.errstate(all="ignore"):
            return float(pesq_lib.pesq(PESQ_RATE, ref, deg, "wb"))
    except (pesq_lib.PesqError, ValueError) as err:
        message = err.args[0] if err.args else type(err).__name__
        if isinstance(message, bytes):  # the C extension reports its messages as bytes
            message = message.decode(errors="replace")
        add_note(notes, f"PESQ not computed: {message}")
        return math.nan


# pystoi works at 10 kHz in 256-sample frames with 50 % overlap and needs 30 of them: shorter
# signals cannot be scored, and pystoi fails outright on signals shorter than one frame
STOI_MIN_SECONDS = 31 * 128 / 10000


def _pystoi(clean, processed, sr, extended, notes):
    name = "ESTOI" if extended else "STOI"
    clean = as_mono(clean, "clean")
    processed = as_mono(processed, "processed")
    if len(clean) < STOI_MIN_SECONDS * sr:
        add_note(notes, f"{name} not computed: the signal is shorter than {STOI_MIN_SECONDS:.2f} s")
        return math.nan
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(pystoi_stoi(clean, processed, sr, extended=extended))
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        # pystoi returns a placeholder of 1e-5 here; a NaN keeps it out of the averages.
        add_note(notes, f"{name} not computed: fewer than 30 non-silent frames (signal too short)")
        return math.nan
    return value


def stoi(clean, processed, sr, notes=None):
    """STOI (Taal et al. 2011) via pystoi."""
    return _pystoi(clean, processed, sr, extended=False, notes=notes)


def estoi(clean, processed, sr, notes=None):
    """Extended STOI (Jensen & Taal 2016) via pystoi."""
    return _pystoi(clean, processed, sr, extended=True, notes=notes)
