"""The band above the model's Nyquist frequency (echo.high_band): crossover, gain, silence,
band-limited inputs, channels, chunks, and enhancement.py's report of it."""
import json

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import welch

import echo.enhance as enhance
import enhancement
from conftest import shared_data
from echo.checkpoints import load_model
from echo.data.resample import resample
from echo.enhance import enhance_audio
from echo.high_band import has_high_band, suppression_gain

MODEL_SR = 16000


@pytest.fixture(scope="module")
def model(tiny_ckpt):
    return load_model(tiny_ckpt, "cpu")


def scale_sampler(monkeypatch, factor):
    """Stands in for the reverse process with 'the noisy spectrogram times ``factor``' (a
    tensor of one factor per frame, or a number): a model whose suppression is known. The
    spectrogram is compressed (|c|^0.5), so the waveform is scaled by ``factor ** 2``."""
    def fake_sample(model, y, generator=None, **kwargs):
        f = factor if not callable(factor) else factor(y)
        return y * f, 1
    monkeypatch.setattr(enhance, "sample", fake_sample)


def full_band(seconds, sr, seed=0, channels=1):
    """White noise plus a 300 Hz tone: energy from 0 Hz to the Nyquist frequency of ``sr``."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    x = 0.05 * rng.standard_normal((channels, n)) + 0.2 * np.sin(2 * np.pi * 300 * t)
    return x.astype(np.float32)


def band_limited(seconds, sr, seed=0):
    """The same, resampled to 16 kHz and back: nothing above 8 kHz."""
    return resample(resample(full_band(seconds, sr, seed)[0], sr, MODEL_SR), MODEL_SR, sr)


def psd_db(x, sr, lo, hi):
    f, p = welch(np.asarray(x, dtype=np.float64), sr, nperseg=2048)
    return 10 * np.log10(p[(f >= lo) & (f < hi)])


# --------------------------------------------------------------------------------------------
# the crossover
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sr", [22050, 32000, 44100, 48000])
def test_a_model_that_changes_nothing_gives_the_recording_back(model, monkeypatch, sr):
    """low + high is the recording itself: no seam, no notch, no bump at the crossover."""
    scale_sampler(monkeypatch, 1.0)
    x = full_band(1.0, sr, channels=2)
    keep = enhance_audio(model, x, sr, {}, None, high_band="keep")
    drop = enhance_audio(model, x, sr, {}, None, high_band="drop")
    assert np.max(np.abs(keep - x)) < 1e-6
    # without the band above 8 kHz the white noise loses about half of its energy
    assert np.max(np.abs(drop - x)) > 0.05


def test_a_uniform_suppression_is_uniform_across_the_crossover(model, monkeypatch):
    """A model that lowers everything by 12 dB lowers the band above 8 kHz by as much: the
    spectrum of output / input is flat from 6 to 20 kHz, through the crossover."""
    scale_sampler(monkeypatch, 0.5)  # waveform x 0.25
    sr = 48000
    x = full_band(2.0, sr)
    out = enhance_audio(model, x, sr, {}, None)
    ratio = psd_db(out[0], sr, 6000, 20000) - psd_db(x[0], sr, 6000, 20000)
    assert np.max(np.abs(ratio - 20 * np.log10(0.25))) < 0.3
    # and away from the file's edges sample by sample
    inner = slice(sr // 10, -sr // 10)
    assert np.max(np.abs(out[0, inner] - 0.25 * x[0, inner])) < 2e-3


def test_the_attenuation_follows_the_model_frame_by_frame(model, monkeypatch):
    """Second half suppressed by 26 dB: the band above 8 kHz drops there by as much, and the
    gain moves smoothly (interpolated between frames), without a step."""
    def halves(y):
        f = torch.ones(y.shape[-1])
        f[y.shape[-1] // 2:] = 0.1 ** 0.5  # waveform x 0.1 in the second half
        return f
    scale_sampler(monkeypatch, halves)
    sr = 48000
    x = full_band(2.0, sr)
    out = enhance_audio(model, x, sr, {}, None, chunk_seconds=0)
    first, second = slice(int(0.2 * sr), int(0.8 * sr)), slice(int(1.2 * sr), int(1.8 * sr))
    for part, expected in ((first, 0.0), (second, -20.0)):
        change = np.mean(psd_db(out[0, part], sr, 9000, 20000) - psd_db(x[0, part], sr, 9000, 20000))
        assert abs(change - expected) < 1.0, (part, change)
    high_out = out[0] - resample(resample(out[0], sr, MODEL_SR), MODEL_SR, sr)
    high_in = x[0] - resample(resample(x[0], sr, MODEL_SR), MODEL_SR, sr)
    gain = np.abs(high_out) / np.maximum(np.abs(high_in), 1e-3)
    # the ratio of two white-noise envelopes is noisy; smoothed over 2 ms it moves by < 5 % per ms
    smooth = np.convolve(gain, np.ones(96) / 96, mode="valid")[::48]
    assert np.max(np.abs(np.diff(smooth))) < 0.05


@pytest.mark.parametrize("factor", [1.5, 3.0])
def test_no_gain_above_one_in_the_upper_band(model, monkeypatch, factor):
    """A model that amplifies its top band does not amplify the band above its Nyquist."""
    scale_sampler(monkeypatch, factor)
    sr = 44100
    x = full_band(1.0, sr) * 0.2
    out = enhance_audio(model, x, sr, {}, None)
    below = psd_db(out[0], sr, 5000, 7000) - psd_db(x[0], sr, 5000, 7000)
    above = psd_db(out[0], sr, 8200, 22000) - psd_db(x[0], sr, 8200, 22000)
    assert np.all(below > 20 * np.log10(factor ** 2) - 0.5)  # the model did amplify its band
    assert np.max(np.abs(above)) < 0.2  # the band above it was passed at gain 1, not amplified
    noisy = np.random.default_rng(0).standard_normal(16000)
    assert np.all(suppression_gain(noisy, factor * noisy, MODEL_SR) <= 1.0)
    assert np.allclose(suppression_gain(noisy, noisy / factor, MODEL_SR)[20:-20], 1 / factor)


# --------------------------------------------------------------------------------------------
# silence, band-limited inputs, rates at or below the model's
# --------------------------------------------------------------------------------------------

def test_silence_in_silence_out(model):
    out = enhance_audio(model, np.zeros((2, 48000), np.float32), 48000, {"N": 1}, torch.Generator().manual_seed(0))
    assert not np.any(out)
    assert not np.any(suppression_gain(np.zeros(8000), np.zeros(8000), MODEL_SR))


def test_silent_passages_stay_silent(model, monkeypatch):
    """A model that silences a passage silences the band above its Nyquist there too."""
    def mute_middle(y):
        f = torch.ones(y.shape[-1])
        f[y.shape[-1] // 3: 2 * y.shape[-1] // 3] = 0
        return f
    scale_sampler(monkeypatch, mute_middle)
    sr = 48000
    x = full_band(3.0, sr)
    out = enhance_audio(model, x, sr, {}, None, chunk_seconds=0)
    middle = slice(int(1.2 * sr), int(1.8 * sr))
    assert np.max(np.abs(out[0, middle])) < 1e-3 * np.max(np.abs(x))


@pytest.mark.parametrize("sr", [44100, 48000])
def test_band_limited_input_comes_out_as_with_drop(model, sr):
    x = band_limited(1.0, sr)[None]
    assert not has_high_band(x[0], sr, MODEL_SR)
    stats = {}
    keep = enhance_audio(model, x, sr, {"N": 1}, torch.Generator().manual_seed(0), stats=stats)
    drop = enhance_audio(model, x, sr, {"N": 1}, torch.Generator().manual_seed(0), high_band="drop")
    assert np.array_equal(keep, drop) and stats["high_band_none"] == 1 and "high_band_kept" not in stats


@pytest.mark.parametrize("sr", [8000, 16000])
def test_rates_up_to_the_models_are_untouched(model, sr):
    x = full_band(0.5, sr)
    keep = enhance_audio(model, x, sr, {"N": 1}, torch.Generator().manual_seed(0), high_band="keep")
    drop = enhance_audio(model, x, sr, {"N": 1}, torch.Generator().manual_seed(0), high_band="drop")
    assert np.array_equal(keep, drop) and not has_high_band(x[0], sr, MODEL_SR)


def test_each_channel_keeps_its_own_band(model, monkeypatch):
    scale_sampler(monkeypatch, 1.0)
    sr = 48000
    x = np.stack([full_band(1.0, sr)[0], band_limited(1.0, sr, seed=1)])
    stats = {}
    out = enhance_audio(model, x, sr, {}, None, stats=stats)
    drop = enhance_audio(model, x, sr, {}, None, high_band="drop")
    assert stats["high_band_kept"] == 1
    assert np.max(np.abs(out[0] - x[0])) < 1e-6  # the full-band channel got its band back
    assert np.array_equal(out[1], drop[1])  # the band-limited one comes out as with drop


def test_chunked_long_file_has_no_seams(model, monkeypatch):
    scale_sampler(monkeypatch, 1.0)
    sr = 44100
    x = full_band(20.0, sr, seed=3)
    out = enhance_audio(model, x, sr, {}, None, chunk_seconds=4.0, overlap_seconds=0.5, batch_chunks=2)
    assert np.max(np.abs(out - x)) < 1e-6


def test_same_seed_same_output(model):
    x = full_band(0.5, 48000)
    a = enhance_audio(model, x, 48000, {"N": 1}, torch.Generator().manual_seed(5))
    b = enhance_audio(model, x, 48000, {"N": 1}, torch.Generator().manual_seed(5))
    assert np.array_equal(a, b)


def test_an_unknown_mode_is_refused(model):
    with pytest.raises(ValueError, match="high band mode"):
        enhance_audio(model, full_band(0.2, 48000), 48000, {"N": 1}, None, high_band="maybe")


# --------------------------------------------------------------------------------------------
# enhancement.py
# --------------------------------------------------------------------------------------------

def test_cli_says_first_what_it_does_with_the_band_and_records_it(tiny_ckpt, tmp_path, capsys):
    noisy = tmp_path / "noisy"
    noisy.mkdir()
    sf.write(noisy / "full.wav", full_band(0.5, 48000)[0], 48000, subtype="PCM_16")
    sf.write(noisy / "limited.wav", band_limited(0.5, 48000), 48000, subtype="FLOAT")
    sf.write(noisy / "narrow.wav", full_band(0.5, 16000)[0], 16000, subtype="PCM_16")
    out = tmp_path / "enhanced"
    base = ["--test_dir", str(noisy), "--ckpt", str(tiny_ckpt), "--N", "1"]
    assert enhancement.main(base + ["--enhanced_dir", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("band: the model works at 16 kHz, so its band ends at 8 kHz; 2 of 3 file(s) "
                               "are at 48 kHz: their band above 8 kHz is kept")
    assert lines[1].startswith(f"model: {tiny_ckpt}")
    assert any(line.startswith("band above 8 kHz: kept in 1 file(s); 1 file(s) held nothing") for line in lines)
    info = json.loads((out / "run_info.json").read_text())
    assert info["high_band"] == "keep" and info["model_sr"] == 16000
    assert info["high_band_files"] == {"kept": 1, "nothing_above": 1}

    assert enhancement.main(base + ["--enhanced_dir", str(tmp_path / "dropped"), "--high_band", "drop"]) == 0
    assert "their output has nothing above 8 kHz (--high_band drop" in capsys.readouterr().out.splitlines()[0]
    assert json.loads((tmp_path / "dropped" / "run_info.json").read_text())["high_band"] == "drop"
    for name in ("limited.wav", "narrow.wav"):  # nothing above 8 kHz, or a 16 kHz file: the same either way
        assert np.array_equal(sf.read(out / name)[0], sf.read(tmp_path / "dropped" / name)[0])


def test_cli_without_inputs_above_the_models_rate_prints_no_band_line(tiny_ckpt, tmp_path, capsys):
    noisy = tmp_path / "noisy"
    noisy.mkdir()
    sf.write(noisy / "a.wav", full_band(0.3, 16000)[0], 16000)
    assert enhancement.main(["--test_dir", str(noisy), "--enhanced_dir", str(tmp_path / "e"), "--ckpt",
                             str(tiny_ckpt), "--N", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"model: {tiny_ckpt}") and "band" not in out


def test_resuming_with_the_other_mode_warns(tiny_ckpt, tmp_path, capsys):
    noisy = tmp_path / "noisy"
    noisy.mkdir()
    for name in ("a.wav", "b.wav"):
        sf.write(noisy / name, full_band(0.3, 48000)[0], 48000)
    base = ["--test_dir", str(noisy), "--enhanced_dir", str(tmp_path / "e"), "--ckpt", str(tiny_ckpt), "--N", "1"]
    assert enhancement.main(base) == 0
    (tmp_path / "e" / "b.wav").unlink()
    assert enhancement.main(base + ["--high_band", "drop"]) == 0
    assert "other high_band than this run's" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# real recordings
# --------------------------------------------------------------------------------------------

FULL_BAND = ("p232_036", "p232_399")
BAND_LIMITED = ("p232_050", "p232_116", "p232_170", "p232_254", "p232_334")


def test_which_48k_test_files_are_full_band():
    """Of the seven 48 kHz originals only two were published full-band; the others had been
    low-passed at 8 kHz: the check must tell them apart, in clean and noisy files alike."""
    folder = shared_data("vbdmd_test_48k")
    for kind in ("clean", "noisy"):
        for name in FULL_BAND + BAND_LIMITED:
            audio, sr = sf.read(folder / kind / f"{name}.wav", dtype="float32")
            assert has_high_band(audio, sr, MODEL_SR) == (name in FULL_BAND), (kind, name)


def test_shipped_model_keeps_the_upper_band_of_a_full_band_recording():
    """p232_036 with the shipped model: above 8 kHz the output is near the clean file's level,
    where dropping the band leaves nothing."""
    from echo.pretrained import DEFAULT_MODEL
    folder = shared_data("vbdmd_test_48k")
    shipped = load_model(DEFAULT_MODEL, "cpu")
    clean, sr = sf.read(folder / "clean" / "p232_036.wav", dtype="float32")
    noisy, _ = sf.read(folder / "noisy" / "p232_036.wav", dtype="float32")
    keep = enhance_audio(shipped, noisy, sr, shipped.shipped_sampler, torch.Generator().manual_seed(0))
    drop = enhance_audio(shipped, noisy, sr, shipped.shipped_sampler, torch.Generator().manual_seed(0),
                         high_band="drop")
    level = {name: np.mean(psd_db(x, sr, 8000, 16000)) for name, x in
             (("clean", clean), ("keep", keep), ("drop", drop))}
    assert abs(level["keep"] - level["clean"]) < 10 and level["drop"] < level["clean"] - 40
    # below the crossover the two are the same enhancement
    below = resample(keep, sr, MODEL_SR) - resample(drop, sr, MODEL_SR)
    assert np.sqrt(np.mean(below ** 2)) < 0.05 * np.sqrt(np.mean(resample(drop, sr, MODEL_SR) ** 2))
