"""Paired clean/noisy spectrogram data (METHOD.md section 1).

``base_dir/{train,valid,test}/{clean,noisy}`` with files paired by relative name. Every file
is checked (readability, rate, channels, length against its partner, finite samples) when the
split is set up, so that a bad data set fails before training starts, with the file named,
rather than inside a loader worker.

Randomness is a function of the seed and the position in the run: the order of an epoch of
(seed, epoch), a random crop of (seed, epoch, file index). A run resumed at an epoch boundary
therefore sees the same batches as the run that was never interrupted.
"""
import argparse
import math
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from echo.data.mixing_setup import add_mixing_args, open_corpora
from echo.data.onthefly import MixtureConfig, draw_mixture, mixture_rng
from echo.spectral import SpecConfig, Spectrogram
from echo.util.audio import AudioError, audio_info, check_samples_finite, pair_audio, read_audio
from echo.util.seeding import seeded_generator

SPLITS = ("train", "valid", "test")
NORMALIZE_MODES = ("noisy", "clean", "not")
NORMALIZE_SPANS = ("crop", "file")


def check_pairs(pairs, sr, resample, downmix):
    """Fail on the first file the loader would not accept: unreadable, empty, at another rate or
    with several channels (unless asked to convert), of another length or rate than its partner,
    or, for float files, holding NaN or Inf (integer files cannot, so only float files are read
    in full here)."""
    for _, clean_path, noisy_path in pairs:
        described = {}
        for path in (clean_path, noisy_path):
            rate, channels, frames = audio_info(path)
            if frames == 0:
                raise AudioError(f"{path}: file holds no samples")
            if rate != sr and not resample:
                raise AudioError(f"{path}: sample rate {rate} Hz but --sr is {sr} Hz; resample the data set "
                                 f"(e.g. `python -m echo.data.vbdmd` for VoiceBank-DEMAND, or sox) or pass --resample")
            if channels != 1 and not downmix:
                raise AudioError(f"{path}: {channels} channels, expected mono; downmix the data set or pass --downmix")
            check_samples_finite(path)
            described[path] = (rate, frames)
        (clean_rate, clean_frames), (noisy_rate, noisy_frames) = described.values()
        if (clean_rate, clean_frames) != (noisy_rate, noisy_frames):
            raise AudioError(f"{noisy_path}: {noisy_frames} samples at {noisy_rate} Hz but its clean partner "
                             f"{clean_path} has {clean_frames} at {clean_rate} Hz; clean and noisy must be aligned")


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


class EpochSampler(DistributedSampler):
    """The indices of one epoch, as ``(epoch, index)`` pairs, in an order that depends on
    (seed, epoch) only, and this process's share of them.

    The epoch travels with every index because the dataset draws its random crop from (seed,
    epoch, index) and runs in data-loader workers, which keep their own copy of the dataset
    (for the whole run, with persistent workers) and so never see an epoch counter set in the
    main process. The epoch is read from ``epoch_of`` (the trainer's ``current_epoch``) when the
    iteration starts, else from ``set_epoch``: after resuming a run stopped by --max_steps at an
    epoch end, Lightning passes ``set_epoch`` one more than the epoch it trains (its processed-
    epoch counter runs ahead of ``current_epoch`` there), which would change the order.

    It is a DistributedSampler so that one class serves one process (num_replicas 1) and DDP
    (one replica per process, each a disjoint share, as Lightning's own replacement would give);
    the data module builds it with the trainer's replica count and rank, and train.py turns
    Lightning's sampler replacement off (``use_distributed_sampler=False``) so that the seeded
    order is kept. The order is drawn from a seed derived from (seed, epoch) rather than
    DistributedSampler's ``seed + epoch``, under which seed 1 would repeat seed 0 one epoch late.
    """

    def __init__(self, dataset, num_replicas=1, rank=0, shuffle=True, seed=0, epoch_of=None):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.epoch_of = epoch_of

    def __iter__(self):
        epoch = self.epoch_of() if self.epoch_of is not None else self.epoch
        if self.shuffle:
            order = seeded_generator(self.seed, "order", epoch)
            indices = torch.randperm(len(self.dataset), generator=order).tolist()
        else:
            indices = list(range(len(self.dataset)))
        # as DistributedSampler: repeat the first indices so that every replica gets as many
        padding = self.total_size - len(indices)
        indices += (indices * math.ceil(self.total_size / max(1, len(indices))))[:padding]
        share = indices[self.rank:self.total_size:self.num_replicas]
        return iter([(epoch, index) for index in share])


class SpecsDataset(Dataset):
    """Pairs of compressed complex spectrograms, each [1, F, num_frames].

    Items are addressed by index or by ``(epoch, index)`` (see ``EpochSampler``); the random crop
    of training data is drawn from (seed, epoch, index), epoch 0 for a plain index.
    """

    def __init__(self, pairs, spectrogram: Spectrogram, num_frames, sr=16000, random_crop=False,
                 normalize="noisy", resample=False, downmix=False, seed=0, normalize_span="file"):
        if normalize_span not in NORMALIZE_SPANS:
            raise ValueError(f"unknown normalize_span '{normalize_span}' (known: {', '.join(NORMALIZE_SPANS)})")
        self.pairs = pairs
        self.normalize_span = normalize_span
        self.spectrogram = spectrogram
        self.num_frames = num_frames
        self.target_len = spectrogram.samples_for_frames(num_frames)
        self.sr, self.random_crop, self.normalize = sr, random_crop, normalize
        self.resample, self.downmix, self.seed = resample, downmix, seed

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

    def waveforms(self, epoch, index):
        """(clean, noisy) of item ``index`` in ``epoch``: the same pair every epoch here; drawn
        anew per epoch by ``MixtureDataset``."""
        clean, noisy, _ = self.load_pair(index)
        return clean, noisy

    def __getitem__(self, item):
        epoch, index = item if isinstance(item, tuple) else (0, item)
        clean, noisy = self.waveforms(epoch, index)
        # the peak of the whole file, as enhancement uses: the release's peak of the crop puts a
        # crop at a higher level than the same audio has at enhancement (see README)
        if self.normalize_span == "file":
            factor = normalization_factor(clean, noisy, self.normalize)
        generator = seeded_generator(self.seed, "crop", epoch, index) if self.random_crop else None
        clean, noisy = crop_or_pad(clean, noisy, self.target_len, self.random_crop, generator)
        if self.normalize_span == "crop":  # METHOD's training rule: the peak of the crop
            factor = normalization_factor(clean, noisy, self.normalize)
        clean_spec = self.spectrogram.to_spec(clean / factor)[None]
        noisy_spec = self.spectrogram.to_spec(noisy / factor)[None]
        return clean_spec, noisy_spec


class MixtureDataset(SpecsDataset):
    """``length`` training mixtures per epoch, each drawn anew from (seed, epoch, index) by
    ``echo.data.onthefly.draw_mixture``, then normalised and cropped as paired files are."""

    def __init__(self, speech, noise, config, length, spectrogram, num_frames, rirs=None, **kwargs):
        super().__init__([], spectrogram, num_frames, random_crop=True, **kwargs)
        self.speech, self.noise, self.config, self.rirs, self.length = speech, noise, config, rirs, length

    def __len__(self):
        return self.length

    def waveforms(self, epoch, index):
        clean, noisy, _ = draw_mixture(mixture_rng(self.seed, "train", epoch, index), self.speech, self.noise,
                                       self.config, self.rirs)
        return torch.from_numpy(clean), torch.from_numpy(noisy)

    def load_pair(self, index):
        clean, noisy = self.waveforms(0, index)
        return clean, noisy, f"mixture_{index:05d}"


class FixedPairsDataset(SpecsDataset):
    """Pairs held in memory as (name, clean, noisy) waveforms: the validation mixtures."""

    def load_pair(self, index):
        name, clean, noisy = self.pairs[index]
        return clean, noisy, name


def validation_mixtures(speech, noise, config, count, seed, rirs=None):
    """``count`` mixtures drawn once, the same for every run with this seed and these corpora."""
    pairs = []
    for index in range(count):
        clean, noisy, _ = draw_mixture(mixture_rng(seed, "valid", index), speech, noise, config, rirs)
        pairs.append((f"valid_{index:03d}", torch.from_numpy(clean), torch.from_numpy(noisy)))
    return pairs


class SpecsDataModule(pl.LightningDataModule):
    @staticmethod
    def add_argparse_args(parser):
        group = parser.add_argument_group("data")
        group.add_argument("--base_dir", type=str, default=None,
                           help="Data set folder with train/, valid/ (and test/) each holding clean/ and noisy/; "
                                "leave it out to draw mixtures on the fly from --speech_dir and --noise_dir")
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
        group.add_argument("--normalize_span", type=str, default="file", choices=NORMALIZE_SPANS,
                           help="Take the normalisation peak over the whole file, as enhancement does (file, "
                                "default), or over the training crop (crop, the release's rule, which trains at "
                                "a higher level than enhancement feeds)")
        group.add_argument("--resample", action=argparse.BooleanOptionalAction, default=False,
                           help="Resample files whose rate differs from --sr on load instead of failing (default off)")
        group.add_argument("--downmix", action=argparse.BooleanOptionalAction, default=False,
                           help="Average multi-channel files to mono on load instead of failing (default off)")
        add_mixing_args(parser)
        return parser

    def __init__(self, base_dir=None, batch_size=8, num_workers=4, sr=16000, n_fft=510, hop_length=128,
                 num_frames=256, spec_factor=0.15, spec_abs_exponent=0.5, transform_type="exponent",
                 normalize="noisy", resample=False, downmix=False, pin_memory=False, seed=0,
                 normalize_span="file", speech_dir=None, noise_dir=None, snr_range=(-5.0, 20.0),
                 gain_range=(-20.0, 5.0), reverb_prob=0.0, rir_dir=None, n_rooms=200, early_ms=50.0,
                 segment_seconds=4.0, examples_per_epoch=2000, n_valid_mixtures=24, valid_fraction=0.1,
                 cache_dir=None, mix_seed=None, **ignored):
        super().__init__()
        for flag, value, least in (("--num_frames", num_frames, 1), ("--batch_size", batch_size, 1),
                                   ("--num_workers", num_workers, 0)):
            if value < least:
                raise ValueError(f"{flag} {value}: must be at least {least}")
        if base_dir is None and not (speech_dir and noise_dir):
            raise AudioError("no training data: give --base_dir (paired clean/noisy folders) or --speech_dir and "
                             "--noise_dir (mixtures drawn on the fly)")
        if base_dir is not None and (speech_dir or noise_dir):
            raise AudioError("give --base_dir (paired folders) or --speech_dir/--noise_dir (on-the-fly mixing), "
                             "not both")
        self.mixing = None
        if base_dir is None:
            self.mixing = dict(speech_dir=speech_dir, noise_dir=noise_dir, snr_range=tuple(snr_range),
                               gain_range=tuple(gain_range), reverb_prob=reverb_prob, rir_dir=rir_dir,
                               n_rooms=n_rooms, early_ms=early_ms, segment_seconds=segment_seconds,
                               examples_per_epoch=examples_per_epoch, n_valid_mixtures=n_valid_mixtures,
                               valid_fraction=valid_fraction, cache_dir=cache_dir,
                               mix_seed=seed if mix_seed is None else int(mix_seed))
        self.normalize_span = normalize_span
        self.base_dir = Path(base_dir) if base_dir is not None else None
        self.seed = seed
        self.batch_size, self.num_workers = batch_size, num_workers
        self.sr, self.num_frames, self.normalize = sr, num_frames, normalize
        self.resample, self.downmix, self.pin_memory = resample, downmix, pin_memory
        self.spec_config = SpecConfig(n_fft=n_fft, hop_length=hop_length, transform_type=transform_type,
                                      spec_factor=spec_factor, spec_abs_exponent=spec_abs_exponent)
        self.spectrogram = Spectrogram(self.spec_config)
        self.datasets = {}
        self._corpora = None

    def split_pairs(self, split):
        root = self.base_dir / split
        pairs = pair_audio(root / "clean", root / "noisy")
        if not pairs:
            raise AudioError(f"{root}: no audio files in clean/ and noisy/")
        check_pairs(pairs, self.sr, self.resample, self.downmix)
        return pairs

    def make_dataset(self, split):
        if self.mixing:
            return self.make_mixture_dataset(split)
        return SpecsDataset(self.split_pairs(split), self.spectrogram, self.num_frames, sr=self.sr,
                            random_crop=(split == "train"), normalize=self.normalize,
                            resample=self.resample, downmix=self.downmix, seed=self.seed,
                            normalize_span=self.normalize_span)

    def make_mixture_dataset(self, split):
        """Training: mixtures drawn on the fly; validation: a fixed set from held-apart speakers and
        noise files. The corpora are read (and decoded into the cache) once, here."""
        if split == "test":
            raise AudioError("on-the-fly mixing has no test split: score a folder of pairs with calc_metrics.py")
        if self._corpora is None:
            self._corpora = open_corpora(self.mixing, self.sr, self.seed)
        train_speech, valid_speech, train_noise, valid_noise, rirs = self._corpora
        config = MixtureConfig(segment=int(round(self.mixing["segment_seconds"] * self.sr)),
                               snr_range=self.mixing["snr_range"], gain_range=self.mixing["gain_range"],
                               reverb_prob=self.mixing["reverb_prob"])
        common = dict(sr=self.sr, normalize=self.normalize, seed=self.seed, normalize_span=self.normalize_span)
        if split == "train":  # draws and crops from the mixtures' own seed; the rest from --seed
            return MixtureDataset(train_speech, train_noise, config, self.mixing["examples_per_epoch"],
                                  self.spectrogram, self.num_frames, rirs=rirs,
                                  **dict(common, seed=self.mixing["mix_seed"]))
        pairs = validation_mixtures(valid_speech, valid_noise, config, self.mixing["n_valid_mixtures"], self.seed, rirs)
        return FixedPairsDataset(pairs, self.spectrogram, self.num_frames, random_crop=False, **common)

    def setup(self, stage=None):
        wanted = {"fit": ("train", "valid"), "validate": ("valid",), "test": ("test",)}.get(stage, SPLITS)
        for split in wanted:
            if split not in self.datasets:
                if split == "test" and stage is None and (self.mixing or not (self.base_dir / "test").exists()):
                    continue
                self.datasets[split] = self.make_dataset(split)

    def _replicas(self):
        """(number of processes, this one's rank): the trainer's under DDP, else (1, 0)."""
        distributed = self.trainer.distributed_sampler_kwargs if self.trainer is not None else None
        if not distributed:
            return 1, 0
        return distributed["num_replicas"], distributed["rank"]

    def _loader(self, split, shuffle):
        num_replicas, rank = self._replicas()
        epoch_of = (lambda: self.trainer.current_epoch) if self.trainer is not None else None
        sampler = EpochSampler(self.datasets[split], num_replicas=num_replicas, rank=rank, shuffle=shuffle,
                               seed=self.seed, epoch_of=epoch_of)
        return DataLoader(self.datasets[split], batch_size=self.batch_size, sampler=sampler,
                          num_workers=self.num_workers, pin_memory=self.pin_memory,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self):
        return self._loader("train", shuffle=True)

    def val_dataloader(self):
        return self._loader("valid", shuffle=False)

    def test_dataloader(self):
        return self._loader("test", shuffle=False)
