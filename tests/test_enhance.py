"""The enhancement library: chunked overlap-add, the signal path, rates, channels, lengths."""
import math

import numpy as np
import pytest
import torch

import echo.enhance as enhance
from audio_cases import save_audible_checkpoint
from echo.checkpoints import load_model
from echo.data.resample import resample
from echo.enhance import (chunk_samples, chunk_starts, chunk_weights, enhance_audio, enhance_mono,
                          fit_length, overlap_add)

SR = 16000


@pytest.fixture(scope="module")
def model(tiny_ckpt):
    return load_model(tiny_ckpt, "cpu")


@pytest.fixture
def identity_sampler(monkeypatch):
    """Replaces the reverse process by 'return the noisy spectrogram', so that the rest of the
    signal path (normalisation, STFT, padding, chunking, resampling) must give the input back;
    also counts the sampling passes and the batch sizes."""
    calls = []

    def fake_sample(model, y, generator=None, **kwargs):
        calls.append(y.shape[0])
        return y, 1
    monkeypatch.setattr(enhance, "sample", fake_sample)
    return calls


def speech_like(seconds, sr=SR, seed=0, channels=None):
    """Band-limited noise with a slow envelope (below 3 kHz, so resampling to 8-48 kHz keeps it)."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    shape = (n,) if channels is None else (channels, n)
    t = np.arange(n) / sr
    tone = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in (220.0, 710.0, 1830.0))
    envelope = 0.5 + 0.4 * np.sin(2 * np.pi * 0.7 * t)
    out = 0.2 * envelope * tone + 0.01 * rng.standard_normal(shape)
    return out.astype(np.float32)


# --------------------------------------------------------------------------------------------
# overlap-add
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("length", [1, 7, 999, 1000, 1001, 1800, 1801, 4321, 10007])
@pytest.mark.parametrize("chunk_len,overlap,batch", [(1000, 200, 1), (1000, 500, 3), (1000, 0, 2), (777, 13, 4)])
def test_overlap_add_with_identity_returns_the_input(length, chunk_len, overlap, batch):
    signal = torch.randn(length, dtype=torch.float32)
    out = overlap_add(signal, chunk_len, overlap, lambda chunks: chunks.clone(), batch_size=batch)
    assert out.shape == signal.shape
    assert torch.max(torch.abs(out - signal)) < 1e-5


@pytest.mark.parametrize("length", [1001, 2500, 5432])
def test_cross_fade_weights_sum_to_one_so_there_are_no_seams(length):
    chunk_len, overlap = 1000, 300
    starts = chunk_starts(length, chunk_len, overlap)
    total = torch.zeros(length, dtype=torch.float64)
    for start, weight in zip(starts, chunk_weights(starts, chunk_len, overlap, dtype=torch.float64)):
        total[start:start + chunk_len] += weight
    assert torch.allclose(total, torch.ones(length, dtype=torch.float64), atol=1e-12)
    # a processor that shifts every chunk by the same offset shifts the whole signal by it:
    # any step at a chunk border would show up here
    signal = torch.zeros(length)
    out = overlap_add(signal, chunk_len, overlap, lambda chunks: chunks + 0.5)
    assert torch.max(torch.abs(out - 0.5)) < 1e-6


def test_chunks_are_full_length_and_cover_the_signal():
    for length in (1001, 1799, 1800, 1801, 9999):
        starts = chunk_starts(length, 1000, 200)
        assert starts[0] == 0 and starts[-1] == length - 1000
        assert all(b - a <= 800 for a, b in zip(starts, starts[1:]))  # overlap >= 200 everywhere
        assert starts == sorted(set(starts))
    assert chunk_starts(1000, 1000, 200) == [0]


def test_overlap_add_batches_chunks():
    batches = []

    def record(chunks):
        batches.append(chunks.shape[0])
        return chunks
    overlap_add(torch.randn(10007), 1000, 200, record, batch_size=4)
    assert sum(batches) == len(chunk_starts(10007, 1000, 200)) and max(batches) == 4


def test_overlap_larger_than_half_a_chunk_is_refused():
    with pytest.raises(ValueError, match="overlap"):
        overlap_add(torch.randn(5000), 1000, 600, lambda c: c)


# --------------------------------------------------------------------------------------------
# one channel at the model's rate
# --------------------------------------------------------------------------------------------

def test_chunk_length_is_a_whole_number_of_unet_blocks(model):
    for seconds in (0.01, 1.0, 8.0):
        frames = model.spectrogram.frames_for_samples(chunk_samples(model, seconds))
        assert frames % model.frames_multiple == 0 and frames >= model.frames_multiple


@pytest.mark.parametrize("chunk_seconds", [None, 0.5])
@pytest.mark.parametrize("length", [100, 511, 4000, 24001])
def test_signal_path_is_transparent_around_the_sampler(model, identity_sampler, chunk_seconds, length):
    wav = torch.from_numpy(speech_like(length / SR)[:length]) * 0.3
    out = enhance_mono(model, wav, {}, None, chunk_seconds=chunk_seconds, overlap_seconds=0.1, batch_chunks=2)
    assert out.shape == wav.shape
    assert torch.max(torch.abs(out - wav)) < 1e-5


def test_chunks_share_the_peak_of_the_whole_file(model, monkeypatch):
    """A quiet passage is not scaled up to full level because it happens to be a chunk."""
    peaks = []

    def record(model_, chunks, sampler_kwargs=None, generator=None, stats=None):
        peaks.extend(chunks.abs().amax(dim=-1).tolist())
        return chunks
    monkeypatch.setattr(enhance, "enhance_normalised", record)
    wav = torch.from_numpy(speech_like(3.0))
    wav[SR * 3 // 2:] *= 0.01  # the second half is 40 dB quieter
    out = enhance_mono(model, wav, {}, None, chunk_seconds=0.5, overlap_seconds=0.1)
    assert max(peaks) == pytest.approx(1.0) and min(peaks) < 0.02
    assert torch.max(torch.abs(out - wav)) < 1e-6


def test_batching_chunks_takes_fewer_sampling_passes(model, identity_sampler):
    wav = torch.from_numpy(speech_like(4.0))
    stats_single, stats_batched = {}, {}
    enhance_mono(model, wav, {}, None, chunk_seconds=0.5, overlap_seconds=0.1, stats=stats_single)
    passes_single = len(identity_sampler)
    enhance_mono(model, wav, {}, None, chunk_seconds=0.5, overlap_seconds=0.1, batch_chunks=3, stats=stats_batched)
    assert stats_single["chunks"] == stats_batched["chunks"] == passes_single > 3
    assert stats_batched["sampling_passes"] == math.ceil(passes_single / 3)
    assert max(identity_sampler[passes_single:]) == 3


def test_real_model_chunked_and_deterministic(model):
    wav = torch.from_numpy(speech_like(1.0))
    kwargs = dict(chunk_seconds=0.3, overlap_seconds=0.05, batch_chunks=2)
    stats = {}
    a = enhance_mono(model, wav, {"N": 1}, torch.Generator().manual_seed(3), stats=stats, **kwargs)
    b = enhance_mono(model, wav, {"N": 1}, torch.Generator().manual_seed(3), **kwargs)
    c = enhance_mono(model, wav, {"N": 1}, torch.Generator().manual_seed(4), **kwargs)
    assert a.shape == wav.shape and torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert stats["nfe"] == 1 and stats["chunks"] >= 3


def test_silence_gives_silence(model):
    out = enhance_mono(model, torch.zeros(3000), {"N": 1}, torch.Generator().manual_seed(0))
    assert torch.equal(out, torch.zeros(3000))


# --------------------------------------------------------------------------------------------
# recordings at any rate and channel count
# --------------------------------------------------------------------------------------------

def level_db(audio):
    """RMS level of each channel (last axis: samples), in dB."""
    return 10 * np.log10(np.mean(np.square(audio, dtype=np.float64), axis=-1))


@pytest.fixture(scope="module")
def audible_model(tiny_ckpt, tmp_path_factory):
    return load_model(save_audible_checkpoint(tiny_ckpt, tmp_path_factory.mktemp("audible") / "audible.ckpt"), "cpu")


# The audible checkpoint's output, relative to its input, over seeds 0-4 of these two tests:
# -47.5 to -38.0 dB per channel, the two channels of a stereo file within 2.6 dB of each other.
# Silence is -inf, the untrained checkpoint about -200 dB.
AUDIBLE_LEVEL_DB = (-55.0, -25.0)


def test_48k_stereo_keeps_rate_channels_and_length(audible_model):
    audio = speech_like(0.4, sr=48000, channels=2)
    audio[1] *= 0.1  # each channel is scaled by its own peak: both leave at the level they came in
    out = enhance_audio(audible_model, audio, 48000, {"N": 1}, torch.Generator().manual_seed(0))
    assert out.shape == audio.shape and out.dtype == np.float32
    assert np.all(np.isfinite(out))
    relative = level_db(out) - level_db(audio)
    assert np.all((AUDIBLE_LEVEL_DB[0] < relative) & (relative < AUDIBLE_LEVEL_DB[1])), relative
    assert abs(relative[0] - relative[1]) < 6.0, relative


def test_8k_mono_keeps_length(audible_model):
    audio = speech_like(0.5, sr=8000)[None, :3999]
    out = enhance_audio(audible_model, audio, 8000, {"N": 1}, torch.Generator().manual_seed(0))
    assert out.shape == (1, 3999) and np.all(np.isfinite(out))
    relative = level_db(out) - level_db(audio)
    assert np.all((AUDIBLE_LEVEL_DB[0] < relative) & (relative < AUDIBLE_LEVEL_DB[1])), relative


def test_each_channel_is_enhanced_on_its_own(model, identity_sampler):
    """Different content and level in each channel of a 48 kHz file come back in that channel:
    with the sampler standing in as the identity, the rest of the path returns every channel
    (measured: correlation 1.0000 with its own input, below 0.001 with the other channel's, level
    within 0.001 dB)."""
    sr = 48000
    t = np.arange(int(0.5 * sr)) / sr
    chord = 0.2 * sum(np.sin(2 * np.pi * f * t) for f in (220.0, 710.0, 1830.0))
    hum = 0.05 * np.sin(2 * np.pi * 440 * t) * (1 + np.sin(2 * np.pi * 3 * t))
    audio = np.stack([chord, hum]).astype(np.float32)  # nothing above 8 kHz, the model's band edge
    out = enhance_audio(model, audio, sr, {}, None)
    for c in range(2):
        correlation = [np.corrcoef(out[c], audio[k])[0, 1] for k in range(2)]
        assert correlation[c] > 0.99 and abs(correlation[1 - c]) < 0.1, (c, correlation)
        assert abs(level_db(out[c]) - level_db(audio[c])) < 0.1


def test_one_dimensional_input_gives_one_dimensional_output(model, identity_sampler):
    audio = speech_like(0.3, sr=8000)
    out = enhance_audio(model, audio, 8000, {}, None)
    assert out.shape == audio.shape


def test_60_second_file_is_enhanced_in_chunks(model, identity_sampler):
    """The reverse process is stood in for, so that the plumbing of a long file (resampling,
    chunking, overlap-add, cutting back) is checked in well under a second of compute per chunk."""
    sr = 22050
    audio = speech_like(60.0, sr=sr, seed=1)[None]
    stats = {}
    out = enhance_audio(model, audio, sr, {}, None, chunk_seconds=8.0, overlap_seconds=1.0, batch_chunks=2,
                        stats=stats, high_band="drop")
    assert out.shape == audio.shape
    expected_chunks = len(chunk_starts(60 * SR, chunk_samples(model, 8.0), SR))
    # bounded chunk size, not one 60-s pass
    assert stats["chunks"] == expected_chunks >= 8 and max(identity_sampler) == 2
    # what is left is the resampling there and back (it drops the band above 8 kHz): no seams, no gaps
    round_trip = fit_length(resample(resample(audio, sr, SR), SR, sr), audio.shape[-1])
    assert np.max(np.abs(out - round_trip)) < 1e-5


def test_silent_file_gives_zeros(model):
    out = enhance_audio(model, np.zeros((2, 4410), np.float32), 44100, {"N": 1}, torch.Generator().manual_seed(0))
    assert out.shape == (2, 4410) and not np.any(out)
