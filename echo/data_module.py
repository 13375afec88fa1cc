"""Paired clean/noisy spectrogram data (METHOD.md section 1).

``base_dir/{train,valid,test}/{clean,noisy}`` with files paired by relative name. Every file
is checked (rate, channels, readability) when the split is set up, so that a bad data set
fails before training starts, with the file named, rather than inside a loader worker.
"""
import argparse
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from echo.spectral import SpecConfig, Spectrogram
from echo.util.audio import AudioError, audio_info, pair_audio, read_audio

SPLITS = ("train", "valid", "test")
NORMALIZE_MODES = ("noisy", "clean", "not")


def check_pairs(pairs, sr, resample, downmix):
    """Fail on the first file whose rate or channel count the loader would not accept."""
    for _, clean_path, noisy_path in pairs:
        for path in (clean_path, noisy_path):
            rate, channels, frames = audio_info(path)
            if frames == 0:
                raise AudioError(f"{path}: file holds no samples")
            if rate != sr and not resample:
                raise AudioError(f"{path}: sample rate {rate} Hz but --sr is {sr} Hz; resample the data set "
                                 f"(e.g. `python -m echo.data.vbdmd` for VoiceBank-DEMAND, or sox) or pass --resample")
            if channels != 1 and not downmix:
                raise AudioError(f"{path}: {channels} channels, expected mono; downmix the data set or pass --downmix")


def load_mono(path, sr, resample, downmix):
    audio, rate = read_audio(path)
    if audio.shape[0] != 1:
        if not downmix:
            raise AudioError(f"{path}: {audio.shape[0]} channels, expected mono")
        audio = audio.mean(axis=0, keepdims=True)
    if rate != sr:
        if not resample:
            raise AudioError(f"{path}: sample rate {rate} Hz, expected {sr} Hz")
        import soxr  # imported here: only needed when resampling on load was asked for
        audio = soxr.resample(audio.T, rate, sr).T
    return torch.from_numpy(np.ascontiguousarray(audio[0], dtype=np.float32))


def crop_or_pad(clean, noisy, target_len, random_crop, generator=None):
    """The same window of both signals: random (training) or centred; shorter signals are
    zero-padded symmetrically."""
    length = noisy.shape[-1]
    if clean.shape[-1] != length:
        raise ValueError(f"clean has {clean.shape[-1]} samples, noisy {length}")
    if length >= target_len:
        if random_crop:
            start = int(torch.randint(length - target_len + 1, (1,), generator=generator))
        else:
            start = (length - target_len) // 2
        return clean[start:start + target_len], noisy[start:start + target_len]
    missing = target_len - length
    pad = (missing // 2, missing - missing // 2)
    return torch.nn.functional.pad(clean, pad), torch.nn.functional.pad(noisy, pad)


def normalization_factor(clean, noisy, mode):
    if mode == "noisy":
        peak = noisy.abs().max()
    elif mode == "clean":
        peak = clean.abs().max()
    elif mode == "not":
        return 1.0
    else:
        raise ValueError(f"unknown normalize mode '{mode}' (known: {', '.join(NORMALIZE_MODES)})")
    # an all-zero crop (silence) stays as it is instead of becoming NaN
    return float(peak) if peak > 1e-8 else 1.0


class SpecsDataset(Dataset):
    """Pairs of compressed complex spectrograms, each [1, F, num_frames]."""

    def __init__(self, pairs, spectrogram: Spectrogram, num_frames, sr=16000, random_crop=False,
                 normalize="noisy", resample=False, downmix=False):
        self.pairs = pairs
        self.spectrogram = spectrogram
        self.num_frames = num_frames
        self.target_len = spectrogram.samples_for_frames(num_frames)
        self.sr, self.random_crop, self.normalize = sr, random_crop, normalize
        self.resample, self.downmix = resample, downmix

    def __len__(self):
        return len(self.pairs)

    def load_pair(self, index):
        """Full-length (clean, noisy) waveforms and the name of the pair."""
        name, clean_path, noisy_path = self.pairs[index]
        clean = load_mono(clean_path, self.sr, self.resample, self.downmix)
        noisy = load_mono(noisy_path, self.sr, self.resample, self.downmix)
        if clean.shape[-1] != noisy.shape[-1]:
            raise AudioError(f"{noisy_path}: {noisy.shape[-1]} samples but its clean partner "
                             f"{clean_path} has {clean.shape[-1]}")
        return clean, noisy, name

    def __getitem__(self, index):
        clean, noisy, _ = self.load_pair(index)
        clean, noisy = crop_or_pad(clean, noisy, self.target_len, self.random_crop)
        factor = normalization_factor(clean, noisy, self.normalize)
        clean_spec = self.spectrogram.to_spec(clean / factor)[None]
        noisy_spec = self.spectrogram.to_spec(noisy / factor)[None]
        return clean_spec, noisy_spec


class SpecsDataModule(pl.LightningDataModule):
    @staticmethod
    def add_argparse_args(parser):
        group = parser.add_argument_group("data")
        group.add_argument("--base_dir", type=str, required=True,
                           help="Data set folder with train/, valid/ (and test/) each holding clean/ and noisy/")
        group.add_argument("--batch_size", type=int, default=8, help="Examples per batch and device (default 8)")
        group.add_argument("--num_workers", type=int, default=4, help="Data-loader worker processes (default 4)")
        group.add_argument("--sr", type=int, default=16000, help="Sample rate the model works at (default 16000)")
        group.add_argument("--n_fft", type=int, default=510, help="STFT size (default 510: 256 bins)")
        group.add_argument("--hop_length", type=int, default=128, help="STFT hop (default 128)")
        group.add_argument("--num_frames", type=int, default=256, help="Frames per training crop (default 256: 2.04 s)")
        group.add_argument("--spec_factor", type=float, default=0.15, help="beta of the amplitude compression (default 0.15)")
        group.add_argument("--spec_abs_exponent", type=float, default=0.5, help="alpha of the amplitude compression (default 0.5)")
        group.add_argument("--transform_type", type=str, default="exponent", choices=("exponent", "log", "none"),
                           help="Amplitude compression of the spectrogram (default exponent)")
        group.add_argument("--normalize", type=str, default="noisy", choices=NORMALIZE_MODES,
                           help="Divide both signals by the peak of the noisy (default) or clean signal, or not at all")
        group.add_argument("--resample", action=argparse.BooleanOptionalAction, default=False,
                           help="Resample files whose rate differs from --sr on load instead of failing (default off)")
        group.add_argument("--downmix", action=argparse.BooleanOptionalAction, default=False,
                           help="Average multi-channel files to mono on load instead of failing (default off)")
        return parser

    def __init__(self, base_dir, batch_size=8, num_workers=4, sr=16000, n_fft=510, hop_length=128,
                 num_frames=256, spec_factor=0.15, spec_abs_exponent=0.5, transform_type="exponent",
                 normalize="noisy", resample=False, downmix=False, pin_memory=False, **ignored):
        super().__init__()
        self.base_dir = Path(base_dir)
        self.batch_size, self.num_workers = batch_size, num_workers
        self.sr, self.num_frames, self.normalize = sr, num_frames, normalize
        self.resample, self.downmix, self.pin_memory = resample, downmix, pin_memory
        self.spec_config = SpecConfig(n_fft=n_fft, hop_length=hop_length, transform_type=transform_type,
                                      spec_factor=spec_factor, spec_abs_exponent=spec_abs_exponent)
        self.spectrogram = Spectrogram(self.spec_config)
        self.datasets = {}

    def split_pairs(self, split):
        root = self.base_dir / split
        pairs = pair_audio(root / "clean", root / "noisy")
        if not pairs:
            raise AudioError(f"{root}: no audio files in clean/ and noisy/")
        check_pairs(pairs, self.sr, self.resample, self.downmix)
        return pairs

    def make_dataset(self, split):
        return SpecsDataset(self.split_pairs(split), self.spectrogram, self.num_frames, sr=self.sr,
                            random_crop=(split == "train"), normalize=self.normalize,
                            resample=self.resample, downmix=self.downmix)

    def setup(self, stage=None):
        wanted = {"fit": ("train", "valid"), "validate": ("valid",), "test": ("test",)}.get(stage, SPLITS)
        for split in wanted:
            if split not in self.datasets:
                if split == "test" and stage is None and not (self.base_dir / "test").exists():
                    continue
                self.datasets[split] = self.make_dataset(split)

    def _loader(self, split, shuffle):
        return DataLoader(self.datasets[split], batch_size=self.batch_size, shuffle=shuffle,
                          num_workers=self.num_workers, pin_memory=self.pin_memory,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self):
        return self._loader("train", shuffle=True)

    def val_dataloader(self):
        return self._loader("valid", shuffle=False)

    def test_dataloader(self):
        return self._loader("test", shuffle=False)
