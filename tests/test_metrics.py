"""Tests of echo.util.metrics: published PESQ reference values, the per-file noisy-input
metrics of the VoiceBank-DEMAND subset's manifest, and hand-computed cases.

The tests on real recordings use ../shared/data next to the repository and are skipped, with
the reason, where that folder is absent.
"""
import csv
import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from echo.util import composite, metrics
from echo.util.audio import read_audio
from echo.util.metrics import (LengthMismatchError, composite_measures, estoi, pesq_wb, score_pair,
                               score_for_validation, segmental_snr, si_sdr, si_sdr_components, stoi,
                               trim_to_shortest)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared_data = pytest.mark.skipif(not SHARED_DATA.is_dir(),
                                       reason=f"real test data not found at {SHARED_DATA}")
SR = 16000

# Spread over the source repositories and both resampling families of the subset.
MANIFEST_SUBSET = ("p232_001", "p232_005", "p232_036", "p232_050", "p232_116", "p232_170",
                   "p232_254", "p232_414")


def read_mono(path):
    audio, sr = read_audio(path)
    return audio[0].astype(np.float64), sr


def tones(*freqs, seconds=1.0, sr=SR):
    """Sinusoids of whole periods over ``seconds``: mutually orthogonal, each of energy sr*s/2."""
    t = np.arange(int(seconds * sr)) / sr
    return [np.sin(2 * np.pi * f * t) for f in freqs]


def speech_like(seconds=2.0, sr=SR, seed=0):
    """Harmonic bursts with syllable-rate amplitude modulation: enough structure for PESQ/STOI."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    pitch = 120 + 20 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 20))
    envelope = np.clip(np.sin(2 * np.pi * 3 * t), 0, None) ** 2
    return 0.3 * voiced * envelope + 0.003 * rng.standard_normal(len(t))


# ---------------------------------------------------------------- real data


@needs_shared_data
def test_pesq_matches_the_published_reference_pair():
    ref, sr = read_mono(SHARED_DATA / "pesq_reference" / "speech.wav")
    deg, _ = read_mono(SHARED_DATA / "pesq_reference" / "speech_bab_0dB.wav")
    assert sr == SR
    assert pesq_wb(ref, deg, sr) == pytest.approx(1.0832337141036987, abs=1e-6)


@needs_shared_data
def test_noisy_input_metrics_reproduce_the_manifest():
    folder = SHARED_DATA / "vbdmd_test"
    with open(folder / "manifest.csv", newline="") as handle:
        manifest = {row["id"]: row for row in csv.DictReader(handle)}
    for name in MANIFEST_SUBSET:
        row = manifest[name]
        clean, sr = read_mono(folder / "clean" / f"{name}.wav")
        noisy, _ = read_mono(folder / "noisy" / f"{name}.wav")
        # stored rounded: PESQ and STOI to 4 decimals, SI-SDR to 3
        assert pesq_wb(clean, noisy, sr) == pytest.approx(float(row["pesq_wb_noisy"]), abs=6e-5), name
        assert stoi(clean, noisy, sr) == pytest.approx(float(row["stoi_noisy"]), abs=6e-5), name
        assert si_sdr(clean, noisy) == pytest.approx(float(row["sisdr_noisy_db"]), abs=6e-4), name


@needs_shared_data
def test_estoi_is_the_extended_measure():
    """ESTOI is pystoi's extended measure, not STOI: on these noisy files it lies 0.067-0.239
    below STOI (measured), as on the whole test set (0.79 against 0.921, METHOD.md section 6)."""
    from pystoi import stoi as pystoi_stoi
    folder = SHARED_DATA / "vbdmd_test"
    for name in MANIFEST_SUBSET:
        clean, sr = read_mono(folder / "clean" / f"{name}.wav")
        noisy, _ = read_mono(folder / "noisy" / f"{name}.wav")
        value = estoi(clean, noisy, sr)
        assert value == pytest.approx(pystoi_stoi(clean, noisy, sr, extended=True), abs=1e-9), name
        assert value < stoi(clean, noisy, sr) - 0.03, name


@needs_shared_data
def test_48k_files_are_resampled_for_pesq():
    # the same utterance at 48 kHz (official) and 16 kHz (resampled by the source repository)
    clean48, sr48 = read_mono(SHARED_DATA / "vbdmd_test_48k" / "clean" / "p232_050.wav")
    noisy48, _ = read_mono(SHARED_DATA / "vbdmd_test_48k" / "noisy" / "p232_050.wav")
    clean16, _ = read_mono(SHARED_DATA / "vbdmd_test" / "clean" / "p232_050.wav")
    noisy16, _ = read_mono(SHARED_DATA / "vbdmd_test" / "noisy" / "p232_050.wav")
    assert sr48 == 48000
    assert pesq_wb(clean48, noisy48, sr48) == pytest.approx(pesq_wb(clean16, noisy16, SR), abs=0.05)


@needs_shared_data
def test_score_pair_of_a_real_noisy_file_is_in_range():
    folder = SHARED_DATA / "vbdmd_test"
    clean, sr = read_mono(folder / "clean" / "p232_005.wav")
    noisy, _ = read_mono(folder / "noisy" / "p232_005.wav")
    scores = score_pair(clean, noisy, noisy, sr)
    assert set(scores) == set(metrics.PAIR_METRICS)
    assert 1 <= scores["csig"] <= 5 and 1 <= scores["cbak"] <= 5 and 1 <= scores["covl"] <= 5
    assert scores["si_sdr"] == pytest.approx(si_sdr(clean, noisy))
    # the composites follow their formulas from the returned ingredients
    parts = composite_measures(clean, noisy, sr, pesq=scores["pesq"])
    expected_cbak = 1.634 + 0.478 * scores["pesq"] - 0.007 * parts["wss"] + 0.063 * parts["ssnr"]
    assert scores["cbak"] == pytest.approx(min(max(expected_cbak, 1), 5))
    expected_csig = 3.093 - 1.029 * parts["llr"] + 0.603 * scores["pesq"] - 0.009 * parts["wss"]
    assert scores["csig"] == pytest.approx(min(max(expected_csig, 1), 5))


@needs_shared_data
def test_dnsmos_matches_speechmos():
    speechmos_dnsmos = pytest.importorskip("speechmos.dnsmos", reason="speechmos not installed")
    noisy, sr = read_mono(SHARED_DATA / "dns3_test_sample" / "noisy" / "0015.wav")
    ours = metrics.dnsmos_p835(noisy, sr)
    theirs = speechmos_dnsmos.run(noisy.astype(np.float32), sr)
    assert ours["dnsmos_sig"] == pytest.approx(theirs["sig_mos"], abs=1e-5)
    assert ours["dnsmos_bak"] == pytest.approx(theirs["bak_mos"], abs=1e-5)
    assert ours["dnsmos_ovrl"] == pytest.approx(theirs["ovrl_mos"], abs=1e-5)


@needs_shared_data
@pytest.mark.parametrize("name", ["p232_036", "p232_170"])
def test_dnsmos_of_a_48k_recording_is_that_of_its_16k_version(name):
    """DNSMOS hears 16 kHz: a 48 kHz file is resampled first, so the data set's own 48 kHz and
    16 kHz versions of one recording score alike (to 0.002 measured), and a file scored at the
    wrong rate (three times too slow, 1.1-1.2 on every scale) is far off."""
    pytest.importorskip("speechmos.dnsmos", reason="speechmos not installed")
    at_48k, sr_48k = read_mono(SHARED_DATA / "vbdmd_test_48k" / "noisy" / f"{name}.wav")
    at_16k, sr_16k = read_mono(SHARED_DATA / "vbdmd_test" / "noisy" / f"{name}.wav")
    assert (sr_48k, sr_16k) == (48000, 16000)
    high, low = metrics.dnsmos_p835(at_48k, sr_48k), metrics.dnsmos_p835(at_16k, sr_16k)
    for key in metrics.DNSMOS_METRICS:
        assert high[key] == pytest.approx(low[key], abs=0.02), key


# ---------------------------------------------------------------- SI-SDR by hand


def test_si_sdr_of_a_perfect_estimate_is_infinite():
    x = speech_like()
    noisy = x + 0.1 * np.random.default_rng(1).standard_normal(len(x))
    assert si_sdr(x, x) == math.inf
    assert si_sdr(x, 0.5 * x) == math.inf  # scale invariant
    assert si_sdr_components(x, x, noisy)[0] == math.inf


def test_si_sdr_with_orthogonal_noise_of_known_level():
    x, n = tones(50, 70)
    # |n| = |x| and <x, n> = 0, so 0.1 n is 20 dB below the target
    assert si_sdr(x, x + 0.1 * n) == pytest.approx(20.0, abs=1e-9)
    assert si_sdr(x, 3 * (x + 0.1 * n)) == pytest.approx(20.0, abs=1e-9)


def test_si_sir_and_si_sar_separate_noise_from_artifacts():
    x, n, r = tones(50, 70, 110)  # target, noise, and an artifact orthogonal to both
    mixture = x + n
    estimate = 2 * x + 0.5 * n + 0.1 * r
    sdr, sir, sar = si_sdr_components(x, estimate, mixture)
    # s_t = 2x, e_n = 0.5 n, e_a = 0.1 r, all of equal unit energy
    assert sir == pytest.approx(10 * np.log10(4 / 0.25), abs=1e-9)
    assert sar == pytest.approx(10 * np.log10(4 / 0.01), abs=1e-9)
    assert sdr == pytest.approx(10 * np.log10(4 / (0.25 + 0.01)), abs=1e-9)


def test_si_sar_is_large_without_artifacts():
    x, n = tones(50, 70)
    sdr, sir, sar = si_sdr_components(x, x + 0.3 * n, x + n)
    assert sir == pytest.approx(-20 * np.log10(0.3), abs=1e-9)
    assert sar > 100
    assert sdr == pytest.approx(sir, abs=1e-6)


def test_si_sdr_of_a_silent_reference_is_nan():
    x = np.zeros(SR)
    assert math.isnan(si_sdr(x, np.ones(SR)))
    assert all(math.isnan(v) for v in si_sdr_components(x, np.ones(SR), np.ones(SR)))


def test_si_sdr_refuses_different_lengths():
    with pytest.raises(LengthMismatchError):
        si_sdr(np.ones(100), np.ones(99))


def test_si_sdr_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    x, n = tones(50, 70)
    assert si_sdr(torch.tensor(x)[None], torch.tensor(x + 0.1 * n)) == pytest.approx(20.0, abs=1e-6)


# ---------------------------------------------------------------- segmental SNR and composites


def test_segmental_snr_by_hand():
    x = speech_like(seed=2) + 0.01  # no silent frame, so every frame has a defined SNR
    assert segmental_snr(x, x, SR) == pytest.approx(35.0)  # clipped at the top
    assert segmental_snr(x, 0.9 * x, SR) == pytest.approx(20.0, abs=1e-9)  # error 0.1 x
    assert segmental_snr(x, -x, SR) == pytest.approx(-10 * np.log10(4), abs=1e-9)
    assert segmental_snr(x, 100 * x, SR) == pytest.approx(-10.0)  # clipped at the bottom


def test_segmental_snr_frame_count_follows_the_definition():
    # floor(len/hop - len_frame/hop) frames of 480 samples every 120 samples at 16 kHz
    assert composite._windowed_frames(np.ones(4800), SR).shape == (36, 480)
    assert composite._windowed_frames(np.ones(479), SR).shape[0] == 0


def test_llr_and_wss_vanish_for_identical_signals():
    x = speech_like(seed=3)
    assert np.allclose(metrics.log_likelihood_ratio(x, x, SR), 0, atol=1e-9)
    assert np.allclose(metrics.weighted_spectral_slope(x, x, SR), 0)


def _nearest_peak_by_loops(energy, slope):
    """The WSS peak search written as the reference definition's loops, for one frame."""
    n_slopes = len(slope)
    peaks = np.zeros(n_slopes)
    for i in range(n_slopes):
        n = i
        if slope[i] > 0:
            while n < n_slopes and slope[n] > 0:
                n += 1
            peaks[i] = energy[n - 1]
        else:
            while n >= 0 and slope[n] <= 0:
                n -= 1
            peaks[i] = energy[n + 1]
    return peaks


def test_wss_peak_search_matches_the_loop_definition():
    rng = np.random.default_rng(4)
    energy = rng.normal(0, 10, size=(200, 25))
    energy[:5] = np.sort(energy[:5], axis=1)  # monotone rows reach both ends of the search
    energy[5:10] = -np.sort(-energy[5:10], axis=1)
    slope = np.diff(energy, axis=1)
    vectorized = composite._nearest_peak_db(energy, slope)
    for frame in range(len(energy)):
        assert np.array_equal(vectorized[frame], _nearest_peak_by_loops(energy[frame], slope[frame]))


def test_composites_are_clipped_to_one_to_five():
    x = speech_like(seed=5)
    perfect = composite_measures(x, x, SR, pesq=4.64)
    assert perfect["csig"] == perfect["cbak"] == perfect["covl"] == 5.0
    garbage = np.random.default_rng(6).standard_normal(len(x))
    awful = composite_measures(x, garbage, SR, pesq=1.0)
    assert awful["csig"] == awful["covl"] == 1.0
    assert 1.0 <= awful["cbak"] < 1.5
    assert math.isnan(composite_measures(x, garbage, SR, pesq=math.nan)["csig"])


def test_composite_formulas_with_known_ingredients():
    x = speech_like(seed=7)
    y = x + 0.05 * np.random.default_rng(8).standard_normal(len(x))
    parts = composite_measures(x, y, SR, pesq=2.0)
    csig = 3.093 - 1.029 * parts["llr"] + 0.603 * 2.0 - 0.009 * parts["wss"]
    covl = 1.594 + 0.805 * 2.0 - 0.512 * parts["llr"] - 0.007 * parts["wss"]
    assert parts["csig"] == pytest.approx(min(max(csig, 1), 5))
    assert parts["covl"] == pytest.approx(min(max(covl, 1), 5))


# ---------------------------------------------------------------- failures become notes


def test_pesq_of_unscorable_input_is_nan_with_a_note():
    notes = []
    assert math.isnan(pesq_wb(np.zeros(SR), np.zeros(SR), SR, notes=notes))
    assert math.isnan(pesq_wb(speech_like()[:2000], speech_like()[:2000], SR, notes=notes))
    assert len(notes) == 2 and all(n.startswith("PESQ not computed") for n in notes)
    assert "1/4 of a second" in notes[1]


def test_notes_become_warnings_without_a_list():
    with pytest.warns(RuntimeWarning, match="PESQ not computed"):
        pesq_wb(np.zeros(SR), np.zeros(SR), SR)


def test_stoi_of_a_too_short_signal_is_nan_with_a_note():
    x = speech_like(seconds=0.2)
    notes = []
    assert math.isnan(stoi(x, x, SR, notes=notes))
    assert math.isnan(estoi(x, x, SR, notes=notes))
    assert len(notes) == 2


# ---------------------------------------------------------------- lengths and entry points


def test_a_few_samples_are_trimmed_with_a_note():
    (a, b), note = trim_to_shortest([np.ones(16000), np.ones(15990)], SR, ["a.wav", "b.wav"])
    assert len(a) == len(b) == 15990
    assert "10 sample(s)" in note and "a.wav" in note


def test_large_length_mismatch_names_the_signals():
    with pytest.raises(LengthMismatchError, match="clean.wav.*enhanced.wav"):
        trim_to_shortest([np.ones(32000), np.ones(28000)], SR, ["clean.wav", "enhanced.wav"])
    with pytest.raises(LengthMismatchError):  # under 1 % but over 0.1 s
        trim_to_shortest([np.ones(1_000_000), np.ones(1_000_000 - 2000)], SR)


def test_score_pair_trims_and_reports():
    x = speech_like(seed=9)
    noisy = x + 0.05 * np.random.default_rng(10).standard_normal(len(x))
    notes = []
    scores = score_pair(x, noisy, noisy[:-7], SR, notes=notes)
    assert set(scores) == set(metrics.PAIR_METRICS)
    assert all(np.isfinite(v) for v in scores.values())
    assert any("trimmed 7 sample(s)" in n for n in notes)


def test_score_for_validation_keys_and_values():
    x = speech_like(seed=11)
    noisy = x + 0.05 * np.random.default_rng(12).standard_normal(len(x))
    enhanced = x + 0.01 * np.random.default_rng(13).standard_normal(len(x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean run must not warn
        scores = score_for_validation(x, enhanced, noisy, SR)
    assert set(scores) == set(metrics.VALIDATION_METRICS)
    noisy_scores = score_for_validation(x, noisy, noisy, SR)
    assert scores["si_sdr"] > noisy_scores["si_sdr"]
    assert scores["pesq"] > noisy_scores["pesq"]
