"""Speech-enhancement metrics: PESQ, (E)STOI, SI-SDR/SIR/SAR, the composite measures CSIG/CBAK/COVL
with segmental SNR, and DNSMOS P.835 -- one import for all of them, and the scoring of one file.

The families live in their own modules: ``echo.util.core_metrics`` (signal handling, SI-SDR,
PESQ, STOI; its docstring states the conventions), ``echo.util.composite`` (Hu & Loizou 2008)
and ``echo.util.dnsmos``.
"""
from echo.util.composite import (composite_measures, log_likelihood_ratio,  # noqa: F401
                                 segmental_snr, weighted_spectral_slope)
from echo.util.core_metrics import (MAX_TRIM_FRACTION, MAX_TRIM_SECONDS, PESQ_RATE,  # noqa: F401
                                    STOI_MIN_SECONDS, LengthMismatchError, add_note, as_mono, estoi,
                                    pesq_wb, resample, si_sdr, si_sdr_components, stoi, trim_to_shortest)
from echo.util.dnsmos import (DNSMOS_METRICS, DNSMOS_RATE, DnsmosUnavailable,  # noqa: F401
                              check_dnsmos_available, dnsmos_p835)

# Keys of ``score_pair``'s result, in the order they are reported.
PAIR_METRICS = ("pesq", "estoi", "stoi", "si_sdr", "si_sir", "si_sar", "csig", "cbak", "covl", "ssnr")
VALIDATION_METRICS = ("pesq", "estoi", "si_sdr")


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
        add_note(notes, note)

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
        add_note(notes, note)
    return {"pesq": pesq_wb(x, e, sr, notes=notes),
            "estoi": estoi(x, e, sr, notes=notes),
            "si_sdr": si_sdr(x, e)}
