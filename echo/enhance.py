"""Enhancing recordings with a trained model: whole files, long files in chunks, any rate.

Signal path for one channel (METHOD.md sections 1-2): resample to the model's rate, divide by
the peak of the noisy channel, compressed complex STFT, zero-pad the frames to a multiple the
U-Net can halve down to, sample the reverse process, iSTFT to the original length, multiply
the peak back, resample to the input's rate. For a recording at a higher rate than the model's,
the band above the model's Nyquist frequency is then carried over from the input or left out
(``high_band``, see ``echo.high_band``).

Long recordings are cut into overlapping chunks that are enhanced separately (several of them
per forward pass with ``batch_chunks``) and cross-faded back together, so that memory does not
grow with the length of the file.

Normalisation is per channel of the whole recording, never per chunk: every chunk is divided by
the same peak (that of the whole channel, as METHOD prescribes for inference), so a quiet
passage stays quiet relative to the rest of the file and the result does not depend on where
the chunk borders fall. Each channel is scaled by its own peak because the model only ever saw
inputs whose peak is one; a quiet channel of a stereo file would otherwise be fed far below
that level.
"""
import math

import numpy as np
import torch

from echo.data.resample import resample
from echo.high_band import DEFAULT_HIGH_BAND, restore_high_band
from echo.sampling import sample
from echo.spectral import pad_frames

# Default chunk length, in seconds at the model's rate. At the paper size (nf 128, 7 levels) one
# forward pass of a single example takes about 2.5 GB at 512 frames and 3.8 GB at 1024 frames:
# a fixed part (weights, the wide first levels) plus a part linear in the frame count, plus the
# attention at the 16-row level, whose matrix has (16 * T/16)^2 = T^2 entries per example. That
# quadratic term is only ~4 MB at 1024 frames but ~40 GB at 100,000 frames (13 minutes), which is
# why whole-file inference runs out of memory on long recordings. 8 s is rounded to 1024 frames
# (8.18 s at 16 kHz): ~3.8 GB per chunk, which fits a 16 GB GPU with room for --batch_chunks 2-3
# and a 24 GB CPU machine likewise, while keeping several seconds of context around every sample.
DEFAULT_CHUNK_SECONDS = 8.0
# Cross-fade between neighbouring chunks. The reverse process is stochastic, so two chunks
# enhance their shared second differently; a long raised-cosine fade hides that difference
# instead of switching abruptly. It costs overlap/(chunk - overlap) = 14 % more compute.
DEFAULT_OVERLAP_SECONDS = 1.0
# below this the input is digital silence (under the LSB of 24-bit audio); it is returned as
# zeros instead of being divided by ~0
SILENCE_PEAK = 1e-8


# --------------------------------------------------------------------------------------------
# Overlap-add of chunks
# --------------------------------------------------------------------------------------------

def chunk_starts(length: int, chunk_len: int, overlap: int) -> list:
    """Start samples of the chunks that cover ``length`` samples.

    Chunks follow a regular grid (hop = chunk_len - overlap); the last one is moved back so
    that it ends exactly at the end of the signal, so every chunk is full length (same shape
    for batching, no artificial silence) and the last one overlaps its neighbour by at least
    ``overlap``. A signal no longer than one chunk is one chunk.
    """
    if length <= chunk_len:
        return [0]
    hop = chunk_len - overlap
    count = math.ceil((length - overlap) / hop)  # fewest chunks whose grid reaches the end
    return [i * hop for i in range(count - 1)] + [length - chunk_len]


def fade_in_ramp(overlap: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Raised-cosine ramp from ~0 to ~1; ``1 - ramp`` is the matching fade-out, so the two
    weights of a cross-fade sum to one at every sample."""
    k = torch.arange(overlap, device=device, dtype=torch.float64)
    return (torch.sin(0.5 * math.pi * (k + 0.5) / overlap) ** 2).to(dtype)


def chunk_weights(starts: list, chunk_len: int, overlap: int, device=None, dtype=torch.float32) -> list:
    """One weight vector per chunk; placed at their starts, the weights sum to one everywhere.

    Chunk i fades in over the last ``overlap`` samples of chunk i-1, which is where chunk i-1
    fades out. For the moved last chunk this region begins after its start: the samples before
    it belong to the previous chunk alone (weight zero here; they served as context).
    """
    ramp = fade_in_ramp(overlap, device, dtype)
    weights = []
    for i, start in enumerate(starts):
        w = torch.ones(chunk_len, device=device, dtype=dtype)
        if i > 0:
            fade_from = starts[i - 1] + chunk_len - overlap - start
            w[:fade_from] = 0
            w[fade_from:fade_from + overlap] = ramp
        if i < len(starts) - 1:
            w[chunk_len - overlap:] = 1 - ramp
        weights.append(w)
    return weights


def overlap_add(signal: torch.Tensor, chunk_len: int, overlap: int, fn, batch_size: int = 1) -> torch.Tensor:
    """Apply ``fn`` to overlapping chunks of the 1-D ``signal`` and cross-fade the results.

    ``fn`` maps a batch ``[B, chunk_len]`` to ``[B, chunk_len]`` (B <= ``batch_size``); a signal no
    longer than ``chunk_len`` is passed whole as ``[1, length]``. With ``fn`` the identity the
    output equals the input up to float rounding.
    """
    length = signal.shape[-1]
    if length <= chunk_len:
        return fn(signal[None])[0]
    if not 0 <= overlap <= chunk_len // 2:
        raise ValueError(f"overlap must lie in [0, chunk_len / 2], got {overlap} for chunk_len {chunk_len}")
    starts = chunk_starts(length, chunk_len, overlap)
    weights = chunk_weights(starts, chunk_len, overlap, signal.device, signal.dtype)
    out = torch.zeros_like(signal)
    for first in range(0, len(starts), batch_size):
        batch_starts = starts[first:first + batch_size]
        chunks = torch.stack([signal[s:s + chunk_len] for s in batch_starts])
        enhanced = fn(chunks)
        for j, s in enumerate(batch_starts):
            out[s:s + chunk_len] += weights[first + j] * enhanced[j]
    return out


# --------------------------------------------------------------------------------------------
# One channel at the model's rate
# --------------------------------------------------------------------------------------------

def model_device(model) -> torch.device:
    return next(model.parameters()).device


def chunk_samples(model, chunk_seconds: float) -> int:
    """Chunk length in samples for about ``chunk_seconds``, rounded so that its spectrogram has a
    multiple of ``model.frames_multiple`` frames: no chunk spends compute on padding frames."""
    spectrogram, multiple = model.spectrogram, model.frames_multiple
    sr = int(model.hparams["sr"])
    frames = spectrogram.frames_for_samples(int(round(chunk_seconds * sr)))
    blocks = max(1, round(frames / multiple))
    return spectrogram.samples_for_frames(blocks * multiple)


def normalization_peak(model, wav: torch.Tensor) -> float:
    """The factor the input is divided by: the peak of the noisy channel (the model's
    ``normalize`` mode 'noisy', and 'clean', for which no clean signal exists at inference),
    or 1 for models trained without normalisation ('not')."""
    if model.hparams.get("normalize", "noisy") == "not":
        return 1.0
    return float(wav.abs().max())


def _record(stats, nfe, batch):
    if stats is not None:
        stats["nfe"] = nfe
        stats["sampling_passes"] = stats.get("sampling_passes", 0) + 1
        stats["chunks"] = stats.get("chunks", 0) + batch


def enhance_normalised(model, wavs: torch.Tensor, sampler_kwargs=None, generator=None, stats=None) -> torch.Tensor:
    """Enhance a batch of already normalised waveforms ``[B, samples]`` in one sampling run."""
    length = wavs.shape[-1]
    # torch.stft's reflect padding needs more than n_fft/2 samples: very short inputs get
    # trailing zeros, cut off again below
    padded_len = max(length, model.spectrogram.config.n_fft)
    padded = torch.nn.functional.pad(wavs, (0, padded_len - length))
    noisy = model.spectrogram.to_spec(padded)[:, None]  # [B, 1, F, T]
    frames = noisy.shape[-1]
    estimate, nfe = sample(model, pad_frames(noisy, model.frames_multiple), generator=generator,
                           **(sampler_kwargs or {}))
    _record(stats, nfe, wavs.shape[0])
    # The padding frames are dropped before the iSTFT, not after it: the last real frames
    # overlap them, and the iSTFT's window normalisation would count their (near-zero) content,
    # attenuating the last ~n_fft/2 samples of every file and chunk.
    return model.spectrogram.to_wav(estimate[:, 0, :, :frames], length=padded_len)[:, :length]


def enhance_mono(model, wav: torch.Tensor, sampler_kwargs=None, generator=None, *, chunk_seconds=None,
                 overlap_seconds=DEFAULT_OVERLAP_SECONDS, batch_chunks=1, stats=None) -> torch.Tensor:
    """Enhance one channel ``[samples]`` at the model's rate; returns ``[samples]``.

    ``chunk_seconds`` None or 0: the whole signal in one pass (memory grows with its length);
    otherwise chunks of about that length, ``batch_chunks`` of them per pass, cross-faded over
    ``overlap_seconds``. ``stats`` (a dict), if given, receives ``nfe`` (network evaluations per
    sampling pass), ``sampling_passes`` and ``chunks``. A silent input gives silence.
    """
    source_device = wav.device
    wav = wav.to(model_device(model), torch.float32)
    if wav.numel() == 0 or float(wav.abs().max()) < SILENCE_PEAK:
        return torch.zeros_like(wav, device=source_device)
    peak = normalization_peak(model, wav)

    def enhance_batch(chunks):
        return enhance_normalised(model, chunks, sampler_kwargs, generator, stats)

    normalised = wav / peak
    if chunk_seconds:
        chunk_len = chunk_samples(model, chunk_seconds)
        overlap = min(int(round(overlap_seconds * int(model.hparams["sr"]))), chunk_len // 2)
        out = overlap_add(normalised, chunk_len, overlap, enhance_batch, batch_size=max(1, int(batch_chunks)))
    else:
        out = enhance_batch(normalised[None])[0]
    return (out * peak).to(source_device)


# --------------------------------------------------------------------------------------------
# Recordings at any rate and channel count
# --------------------------------------------------------------------------------------------

def fit_length(audio: np.ndarray, length: int) -> np.ndarray:
    """Cut or zero-pad the last axis to ``length`` (resampling there and back can be a sample off)."""
    if audio.shape[-1] >= length:
        return np.ascontiguousarray(audio[..., :length])
    return np.pad(audio, [(0, 0)] * (audio.ndim - 1) + [(0, length - audio.shape[-1])])


def limit_attenuation(enhanced: np.ndarray, noisy: np.ndarray, atten_lim_db=None) -> np.ndarray:
    """Mix the noisy input back under the enhanced signal so that nothing is attenuated by more
    than ``atten_lim_db`` (DeepFilterNet's ``--atten-lim``): ``(1 - g) enhanced + g noisy`` with
    ``g = 10^(-atten_lim_db / 20)``. The enhanced signal is time-aligned with the input (no
    look-ahead delay), so the mix adds no comb filtering. None: no limit."""
    if atten_lim_db is None:
        return enhanced
    floor = np.float32(10.0 ** (-float(atten_lim_db) / 20.0))
    return ((1.0 - floor) * enhanced + floor * noisy).astype(np.float32, copy=False)


def enhance_audio(model, audio, sr: int, sampler_kwargs=None, generator=None, chunk_seconds=DEFAULT_CHUNK_SECONDS,
                  overlap_seconds=DEFAULT_OVERLAP_SECONDS, batch_chunks=1, stats=None,
                  high_band=DEFAULT_HIGH_BAND, atten_lim_db=None) -> np.ndarray:
    """Enhance ``audio`` ``[channels, samples]`` (or ``[samples]``) recorded at ``sr`` Hz.

    Returns float32 audio of the same shape at the same rate: each channel is resampled to the
    model's rate, enhanced on its own (see ``enhance_mono``), and resampled back. Above the
    model's rate, ``high_band`` 'keep' adds the input's band above the model's Nyquist frequency,
    attenuated as the model attenuated the top of its band; 'drop' leaves it out. ``stats``, if
    given, also counts in ``high_band_kept`` / ``high_band_none`` the files above the model's
    rate whose band above it was kept / that held nothing there. ``atten_lim_db``: see
    ``limit_attenuation`` (applied last, over the whole band).
    """
    audio = np.asarray(audio, dtype=np.float32)
    mono_input = audio.ndim == 1
    channels = audio[None] if mono_input else audio
    if channels.shape[-1] == 0:
        return audio.copy()
    model_sr = int(model.hparams["sr"])
    at_model_rate = resample(channels, sr, model_sr)
    enhanced = np.stack([
        enhance_mono(model, torch.from_numpy(np.ascontiguousarray(channel)), sampler_kwargs, generator,
                     chunk_seconds=chunk_seconds, overlap_seconds=overlap_seconds, batch_chunks=batch_chunks,
                     stats=stats).numpy()
        for channel in at_model_rate])
    out = fit_length(resample(enhanced, model_sr, sr), channels.shape[-1])
    if sr > model_sr:
        kept = restore_high_band(out, channels, at_model_rate, enhanced, sr, model_sr, high_band)
        if stats is not None and high_band == "keep":
            key = "high_band_kept" if kept else "high_band_none"
            stats[key] = stats.get(key, 0) + 1
    out = limit_attenuation(out, channels, atten_lim_db)
    return out[0] if mono_input else out
