"""Odd and broken audio files for the hostile-input tests, written with soundfile and numpy,
and a checkpoint whose output is loud enough to compare.

``VALID_CASES``: files that are unusual but readable (formats, channel counts, rates, lengths,
content); every tool must either process them like ordinary files or, where it cannot use them
(the metrics need mono, training needs its own rate), refuse them with one line.
``BROKEN_CASES``: files no tool can use; the message must name the file and say what is wrong.
"""
import os
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000
SECONDS = 0.5
# relative noise level of each role: noisy and enhanced differ from clean, and from each other
NOISE_LEVEL = {"clean": 0.0, "noisy": 0.1, "enhanced": 0.02}

VALID_CASES = {
    "pcm_u8": dict(subtype="PCM_U8"),
    "pcm_24": dict(subtype="PCM_24"),
    "float32": dict(subtype="FLOAT"),
    "float64": dict(subtype="DOUBLE"),
    "stereo": dict(channels=2),
    "six_channels": dict(channels=6),
    "sr_8000": dict(sr=8000),
    "sr_22050": dict(sr=22050),
    "sr_44100": dict(sr=44100),
    "sr_48000": dict(sr=48000),
    "shorter_than_one_frame": dict(frames=100),  # the STFT frame is 510 samples
    "one_sample": dict(frames=1),
    "silent": dict(content="silent"),
    "clipped": dict(content="clipped"),
}
MULTI_CHANNEL = ("stereo", "six_channels")
OTHER_RATES = ("sr_8000", "sr_22050", "sr_44100", "sr_48000")


def speech_like(frames, sr, seed=0):
    """Harmonic bursts with a syllable-rate envelope: enough structure for PESQ and STOI."""
    t = np.arange(frames) / sr
    phase = 2 * np.pi * np.cumsum(110 + 30 * seed + 20 * np.sin(2 * np.pi * 0.5 * t)) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 20) if 160 * k < sr / 2)
    return 0.3 * voiced * np.clip(np.sin(2 * np.pi * 3 * t + 0.5), 0, None) ** 2


def case_signal(spec, role="noisy", seed=0):
    """``[frames, channels]`` float64 samples of a valid case in the given role."""
    sr = spec.get("sr", SR)
    frames = spec.get("frames", int(round(SECONDS * sr)))
    clean = speech_like(frames, sr, seed)
    noise = np.random.default_rng(seed + 100).standard_normal(frames)
    mono = clean + NOISE_LEVEL[role] * noise
    if spec.get("content") == "silent":
        mono = np.zeros(frames)
    elif spec.get("content") == "clipped":
        mono = np.clip(4 * mono, -1.0, 1.0)
    channels = spec.get("channels", 1)
    return np.stack([mono * (1.0 - 0.1 * c) for c in range(channels)], axis=1)


def write_valid(path, name, role="noisy", seed=0):
    spec = VALID_CASES[name]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), case_signal(spec, role, seed), spec.get("sr", SR), subtype=spec.get("subtype", "PCM_16"))
    return path


def write_plain(path, role="noisy", seed=0, seconds=SECONDS, sr=SR):
    """An ordinary 16-bit mono file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = int(round(seconds * sr))
    noise = np.random.default_rng(seed + 100).standard_normal(frames)
    signal = speech_like(frames, sr, seed) + NOISE_LEVEL[role] * noise
    sf.write(str(path), signal, sr, subtype="PCM_16")
    return path


def _float_with(value):
    def write(path):
        data = 0.1 * np.ones((SR // 2, 1), np.float32)
        data[100] = value
        sf.write(str(path), data, SR, subtype="FLOAT")
    return write


def _symlink_to_nothing(path):
    os.symlink(Path(path).parent / "no-such-target.wav", path)


BROKEN_CASES = {  # name: (writer, words the one-line message must contain)
    "not_audio": (lambda p: Path(p).write_text("these are not the samples you are looking for\n"),
                  "not a readable audio file"),
    "corrupt_header": (lambda p: Path(p).write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00garbage"),
                       "not a readable audio file"),
    "zero_bytes": (lambda p: Path(p).write_bytes(b""), "not a readable audio file"),
    "no_samples": (lambda p: sf.write(str(p), np.zeros((0, 1), np.float32), SR), "holds no samples"),
    "nan_samples": (_float_with(np.nan), "NaN or Inf"),
    "inf_samples": (_float_with(np.inf), "NaN or Inf"),
    "dangling_symlink": (_symlink_to_nothing, "not a readable audio file"),
}


def write_broken(path, name):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    BROKEN_CASES[name][0](path)
    return path


def audio_files_below(folder):
    """Every file below ``folder`` whose name ends like audio, hidden ones included."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in (".wav", ".flac"))


def partial_files_below(folder):
    return sorted(p for p in Path(folder).rglob(".partial-*"))


def make_audible(state_dict):
    """Scale up the near-zero-initialised layers of an untrained network's weights, in place.
    Untrained, the tiny network answers ~1e-10, which a 16-bit file rounds to silence, so any two
    runs would write the same samples; scaled, the samples depend on the seed and the file."""
    for name, value in state_dict.items():
        if value.is_floating_point() and value.any() and value.abs().max() < 1e-3:
            state_dict[name] = value * 2e4
    return state_dict


def save_audible_checkpoint(tiny_ckpt, path):
    """The tiny checkpoint with ``make_audible`` weights."""
    import torch
    ckpt = torch.load(tiny_ckpt, weights_only=True)
    make_audible(ckpt["state_dict"])
    torch.save(ckpt, path)
    return path
