"""Generated noises: the spectral slope of coloured noise, the spectrum of speech-shaped noise,
babble made of the given voices; all at unit RMS and repeatable from the seed."""
import numpy as np
import pytest

from echo.data.generated_noise import babble, coloured_noise, long_term_spectrum, speech_shaped_noise
from echo.data.mix import MixError, check_options, mix_pair


def band_power_db(x, sr, low, high):
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / sr)
    return 10 * np.log10(spectrum[(freqs >= low) & (freqs < high)].mean())


@pytest.mark.parametrize("exponent, slope_db_per_octave", [(0.0, 0.0), (1.0, -3.01), (2.0, -6.02)])
def test_coloured_noise_falls_by_its_exponent(exponent, slope_db_per_octave):
    x = coloured_noise(np.random.default_rng(0), 160000, exponent)
    assert np.sqrt(np.mean(x ** 2)) == pytest.approx(1.0, rel=1e-4)
    # mean power per bin, one octave apart, both well above DC
    drop = band_power_db(x, 16000, 1000, 1100) - band_power_db(x, 16000, 500, 550)
    assert drop == pytest.approx(slope_db_per_octave, abs=0.6)


def test_speech_shaped_noise_has_the_speech_spectrum():
    rng = np.random.default_rng(1)
    t = np.arange(32000) / 16000
    voice = np.sin(2 * np.pi * 300 * t) + 0.01 * rng.standard_normal(len(t))  # energy near 300 Hz
    spectrum = long_term_spectrum([voice])
    noise = speech_shaped_noise(np.random.default_rng(2), 64000, spectrum)
    assert np.sqrt(np.mean(noise ** 2)) == pytest.approx(1.0, rel=1e-4)
    assert band_power_db(noise, 16000, 250, 350) - band_power_db(noise, 16000, 3000, 6000) > 25


def test_babble_is_the_sum_of_the_voices_and_repeatable():
    sr = 16000
    t = np.arange(sr) / sr
    voices = [np.sin(2 * np.pi * f * t) for f in (200.0, 410.0, 830.0)]
    a = babble(np.random.default_rng(3), voices, 2 * sr, talkers=3, sr=sr)
    b = babble(np.random.default_rng(3), voices, 2 * sr, talkers=3, sr=sr)
    assert np.array_equal(a, b) and len(a) == 2 * sr
    assert np.sqrt(np.mean(a ** 2)) == pytest.approx(1.0, rel=1e-4)
    for f in (200, 410, 830):  # every talker is in the mixture, nothing else is
        assert band_power_db(a, sr, f - 5, f + 5) > band_power_db(a, sr, 1500, 3000) + 40
    one = babble(np.random.default_rng(4), voices[:1], sr, talkers=1, sr=sr)
    assert np.allclose(np.abs(np.fft.rfft(one))[200], np.abs(np.fft.rfft(one)).max())


class _OneNoise:
    folder, rel_paths = ".", ["n.wav"]

    def excerpt(self, rng, index, length):
        return np.random.default_rng(9).standard_normal(length).astype(np.float32) * 0.01, 0


def test_pair_gain_scales_clean_and_noisy_alike_and_keeps_old_sets_unchanged():
    speech = 0.1 * np.sin(2 * np.pi * 200 * np.arange(16000) / 16000)
    plain = mix_pair(np.random.default_rng(5), speech, _OneNoise(), [0], 16000, (5.0, 5.0), 16000)
    same = mix_pair(np.random.default_rng(5), speech, _OneNoise(), [0], 16000, (5.0, 5.0), 16000, (0.0, 0.0))
    assert np.array_equal(plain[1], same[1]) and plain[2] == same[2]
    quiet = mix_pair(np.random.default_rng(5), speech, _OneNoise(), [0], 16000, (5.0, 5.0), 16000, (-20.0, -20.0))
    assert np.allclose(quiet[0], plain[0] * 0.1, atol=1e-7) and np.allclose(quiet[1], plain[1] * 0.1, atol=1e-7)
    assert quiet[2]["gain"] == pytest.approx(0.1 * plain[2]["gain"], rel=1e-5)
    with pytest.raises(MixError, match="gain range"):
        check_options({"train": 1, "valid": 0, "test": 0}, 1.0, 16000, (0.0, 5.0), (5.0, -5.0))
