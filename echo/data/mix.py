"""Mixing speech and noise into paired clean/noisy sets.

For each output: an utterance of the split (speakers do not cross splits as long as there
are at least as many speakers as splits; otherwise it says so and splits by file), cropped or
padded to ``--segment_seconds`` (or kept whole), plus an excerpt of a random noise file at a random
offset (looped when too short), scaled to an SNR drawn uniformly from the range; if the
mixture would exceed full scale, clean and noisy are scaled down by the same factor, so
noisy = clean + noise stays exact. Inputs at other rates are resampled (polyphase).
Deterministic: every output has its own random stream derived from (seed, split, index).

    python -m echo.data.mix --speech_dir LibriSpeech/train-clean-100 --noise_dir noises \
        --out_dir data/libri_mix --n_train 1000 --n_valid 50 --n_test 50 --split_noise

The level helpers at the top (active speech power, SNR scaling, clipping guard) are shared
with ``echo.data.synth`` so that both tools mean the same thing by "SNR".
"""
import argparse
import os
import re
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from echo.data import (SPLITS, OutputExistsError, pair_paths, prepare_output_dir, run_jobs, run_tool, write_manifest,
                       write_pair_atomic)
from echo.data.resample import read_mono
from echo.util.audio import AudioError, audio_info, list_audio

# SNR definition used by every tool in this package: the power of the *active* speech (20 ms
# frames whose power is at most 40 dB below the loudest frame, so pauses do not dilute it)
# over the power of the noise across the whole segment.
ACTIVE_FRAME_SECONDS = 0.02
ACTIVE_THRESHOLD_DB = -40.0
# Largest absolute sample value written; leaves headroom below 16-bit full scale.
MAX_PEAK = 0.99


class MixError(Exception):
    """A problem with the inputs or options; ``str(err)`` is a complete one-line message."""


def active_speech_power(speech, sr: int) -> float:
    """Mean power of the active frames of ``speech`` (1-D); 0.0 for a silent signal."""
    speech = np.asarray(speech, dtype=np.float64)
    frame = max(1, int(round(ACTIVE_FRAME_SECONDS * sr)))
    if len(speech) < frame:  # shorter than a frame: the whole signal is one frame
        return float(np.mean(speech ** 2)) if len(speech) else 0.0
    n_frames = len(speech) // frame
    framed = speech[:n_frames * frame].reshape(n_frames, frame)
    powers = np.einsum("ij,ij->i", framed, framed) / frame
    loudest = powers.max()
    if loudest <= 0.0:
        return 0.0
    active = powers >= loudest * 10.0 ** (ACTIVE_THRESHOLD_DB / 10.0)
    return float(powers[active].mean())


def measure_snr_db(clean, noisy, sr: int) -> float:
    """SNR of a pair in dB, with the definition above and noise = noisy - clean."""
    clean = np.asarray(clean, dtype=np.float64)
    noise = np.asarray(noisy, dtype=np.float64) - clean
    return 10.0 * np.log10(active_speech_power(clean, sr) / max(np.mean(noise ** 2), 1e-30))


def noise_gain_for_snr(speech, noise, snr_db: float, sr: int) -> float:
    """Factor for ``noise`` so that ``speech + factor * noise`` has the SNR ``snr_db``."""
    speech_power = active_speech_power(speech, sr)
    noise_power = float(np.mean(np.asarray(noise, dtype=np.float64) ** 2))
    if speech_power <= 0.0:
        raise ValueError("speech segment is silent; cannot set an SNR")
    if noise_power <= 0.0:
        raise ValueError("noise segment is silent; cannot set an SNR")
    return float(np.sqrt(speech_power / (noise_power * 10.0 ** (snr_db / 10.0))))


def peak_gain(clean, noisy, max_peak: float = MAX_PEAK) -> float:
    """Common factor (at most 1) for clean and noisy so that neither exceeds ``max_peak``.
    The same factor on both keeps noisy = clean + noise exact."""
    peak = max(float(np.max(np.abs(clean))), float(np.max(np.abs(noisy))))
    return 1.0 if peak <= max_peak else max_peak / peak


# ---------------------------------------------------------------- corpus splitting

# Random streams: one per output file, plus these for the plan (which speaker goes where).
_PLAN_STREAM, _ORDER_STREAM = 1000, 2000


def speaker_of(rel_path: str) -> str:
    """Group (speaker) of a speech file, so that a speaker's utterances stay in one split:
    the first sub-folder below the speech folder when files are in sub-folders (LibriSpeech
    ``103/1240/103-1240-0000.flac`` -> ``103``; for WSJ0 point --speech_dir at ``si_tr_s`` so
    that its sub-folders are the speakers), else the file-name prefix before the first ``-``
    or ``_`` (``103-1240-0000.flac`` -> ``103``, ``p226_001.wav`` -> ``p226``)."""
    parts = rel_path.split("/")
    if len(parts) > 1:
        return parts[0]
    return re.split(r"[-_]", Path(parts[0]).stem)[0]


def split_quotas(n_groups: int, counts: dict) -> dict:
    """How many of ``n_groups`` groups each split gets: proportional to the number of outputs
    asked for, at least one for every split that has outputs; the rounding rest goes to train."""
    total = sum(counts.values())
    active = [split for split in SPLITS if counts[split] > 0]
    quotas = {split: 0 for split in SPLITS}
    for split in active:
        quotas[split] = max(1, int(n_groups * counts[split] / total))
    leftover = n_groups - sum(quotas.values())
    largest = max(active, key=lambda split: (quotas[split], split == "train"))
    quotas[largest] += leftover
    return quotas


def split_by_group(items, group_of, counts, rng, what):
    """Assign ``items`` (sorted names) to splits so that no group spans two splits.
    Falls back to one group per item when there are fewer groups than splits with outputs.
    Returns ({split: [items]}, note or None)."""
    active = [split for split in SPLITS if counts[split] > 0]
    groups = sorted({group_of(item) for item in items})
    note = None
    if len(groups) < len(active):
        note = (f"note: only {len(groups)} {what} group(s) for {len(active)} splits; splitting "
                f"by file instead, so splits share {what} groups")
        group_of, groups = (lambda item: item), sorted(items)
    if len(groups) < len(active):
        raise MixError(f"{len(items)} {what} file(s) cannot fill {len(active)} splits "
                       f"({', '.join(active)}); add files or ask for fewer splits")
    order = [groups[i] for i in rng.permutation(len(groups))]
    quotas = split_quotas(len(groups), counts)
    split_of_group, start = {}, 0
    for split in SPLITS:
        for group in order[start:start + quotas[split]]:
            split_of_group[group] = split
        start += quotas[split]
    assigned = {split: [item for item in items if split_of_group[group_of(item)] == split]
                for split in SPLITS}
    return assigned, note


# ---------------------------------------------------------------- signals


def crop_or_pad(rng, speech, length, max_tries=5):
    """(segment of ``length`` samples, start in ``speech``). Longer speech is cropped at a
    random start, avoiding crops that are mostly pause (retried, else the loudest try);
    shorter speech is zero-padded at a random position (start is then negative)."""
    if length <= 0 or len(speech) == length:
        return speech, 0
    if len(speech) < length:
        before = int(rng.integers(0, length - len(speech) + 1))
        return np.pad(speech, (before, length - len(speech) - before)), -before
    reference = np.mean(speech ** 2)
    best_start, best_power = 0, -1.0
    for _ in range(max_tries):
        start = int(rng.integers(0, len(speech) - length + 1))
        power = float(np.mean(speech[start:start + length] ** 2))
        if power >= 0.3 * reference:
            return speech[start:start + length], start
        if power > best_power:
            best_start, best_power = start, power
    return speech[best_start:best_start + length], best_start


class NoiseFiles:
    """Random noise excerpts from a list of files, at ``sr``, looped when a file is shorter
    than the excerpt. Files at ``sr`` are read partially (only the excerpt); files at other
    rates are loaded whole once and resampled (a few are cached)."""

    def __init__(self, folder, rel_paths, sr):
        self.folder = Path(folder)
        self.rel_paths = list(rel_paths)
        self.sr = sr
        self.info = [audio_info(self.folder / rel) for rel in self.rel_paths]
        self._cache = {}

    def _whole(self, index):
        if index not in self._cache:
            if len(self._cache) >= 8:
                self._cache.pop(next(iter(self._cache)))
            self._cache[index] = read_mono(self.folder / self.rel_paths[index], self.sr)
        return self._cache[index]

    def excerpt(self, rng, index, length):
        """(noise of ``length`` samples at ``sr``, offset in the file at ``sr``)."""
        file_sr, _channels, frames = self.info[index]
        if file_sr == self.sr and frames > length:
            offset = int(rng.integers(0, frames - length + 1))
            path = self.folder / self.rel_paths[index]
            data, _sr = sf.read(str(path), start=offset, frames=length, dtype="float32",
                                always_2d=True)
            if data.shape[0] != length:
                raise AudioError(f"{path}: could not read {length} samples at {offset}")
            return data.mean(axis=1), offset
        whole = self._whole(index)
        offset = int(rng.integers(0, len(whole)))
        # loop: start anywhere, wrap around as often as needed
        repeats = -(-(offset + length) // len(whole))
        return np.tile(whole, repeats)[offset:offset + length], offset


def mix_pair(rng, speech, noise_files, noise_choices, length, snr_range, sr, gain_range=(0.0, 0.0)):
    """(clean, noisy, info) for one output; ``noise_choices`` are the noise file indices this
    split may use. ``length`` 0 keeps the utterance's full length. ``gain_range``: a random gain
    in dB for the pair (drawn only when the range is not (0, 0), so older datasets stay as they
    were), so that a model meets quiet and loud recordings; the clipping guard still applies."""
    clean, speech_start = crop_or_pad(rng, speech, length)
    noise_index = int(noise_choices[int(rng.integers(len(noise_choices)))])
    for _ in range(5):  # a noise file may have digitally silent stretches: try another offset
        noise, noise_offset = noise_files.excerpt(rng, noise_index, len(clean))
        if np.any(noise != 0):
            break
    else:
        raise MixError(f"{noise_files.folder / noise_files.rel_paths[noise_index]}: "
                       "noise excerpts are silent")
    snr_db = float(rng.uniform(*snr_range))
    try:
        noisy = clean + noise_gain_for_snr(clean, noise, snr_db, sr) * noise
    except ValueError as err:  # silent speech segment
        raise MixError(str(err)) from None
    if tuple(gain_range) != (0.0, 0.0):
        level = 10 ** (float(rng.uniform(*gain_range)) / 20)
        clean, noisy = clean * level, noisy * level
    else:
        level = 1.0
    gain = peak_gain(clean, noisy)
    info = {"speech_start": speech_start, "noise": noise_files.rel_paths[noise_index],
            "noise_offset": noise_offset, "snr_db": round(snr_db, 3), "gain": round(gain * level, 6)}
    return (clean * gain).astype(np.float32), (noisy * gain).astype(np.float32), info


# ---------------------------------------------------------------- dataset


MANIFEST_FIELDS = ["split", "name", "speech", "speaker", "speech_start", "noise", "noise_offset",
                   "snr_db", "gain"]


def plan_dataset(speech_dir, noise_dir, counts, seed, split_noise):
    """Which speech and noise files each split may use. Returns (plan dict, notes)."""
    speech_files = list_audio(speech_dir)
    noise_files = list_audio(noise_dir)
    if not speech_files:
        raise MixError(f"{speech_dir}: no .wav or .flac files found")
    if not noise_files:
        raise MixError(f"{noise_dir}: no .wav or .flac files found")
    check_noise_files(noise_dir, noise_files)
    rng = np.random.default_rng([seed, _PLAN_STREAM])
    notes = []
    speech_by_split, note = split_by_group(speech_files, speaker_of, counts, rng, "speaker")
    notes += [note] if note else []
    if split_noise:
        noise_by_split, note = split_by_group(noise_files, lambda rel: rel, counts, rng, "noise")
        notes += [note] if note else []
    else:
        noise_by_split = {split: list(noise_files) for split in SPLITS}
    return {"speech_files": speech_files, "noise_files": noise_files,
            "speech": speech_by_split, "noise": noise_by_split}, notes


def check_noise_files(noise_dir, rel_paths):
    """Every output may draw from every noise file, so an unreadable or empty one is a problem of
    the whole run: refuse it here, in the main process and before anything is written, rather
    than in every worker that opens it."""
    for rel in rel_paths:
        _rate, _channels, frames = audio_info(Path(noise_dir) / rel)
        if frames == 0:
            raise AudioError(f"{Path(noise_dir) / rel}: file holds no samples")


def utterance_for(seed, split, index, utterances):
    """The ``index``-th utterance of a split: the split's utterances in a shuffled order,
    reshuffled each time the list is exhausted, so all are used before any repeats."""
    epoch, position = divmod(index, len(utterances))
    order = np.random.default_rng([seed, _ORDER_STREAM, SPLITS.index(split), epoch]).permutation(
        len(utterances))
    return utterances[int(order[position])]


class _Worker:
    """Per-process state for making outputs: opened noise files and the options."""

    def __init__(self, options):
        self.options = options
        self.noise = NoiseFiles(options["noise_dir"], options["plan"]["noise_files"], options["sr"])
        self.noise_index = {rel: i for i, rel in enumerate(options["plan"]["noise_files"])}

    def make(self, split, index):
        o = self.options
        rel = utterance_for(o["seed"], split, index, o["plan"]["speech"][split])
        speech = read_mono(Path(o["speech_dir"]) / rel, o["sr"])
        rng = np.random.default_rng([o["seed"], SPLITS.index(split), index])
        choices = [self.noise_index[n] for n in o["plan"]["noise"][split]]
        try:
            clean, noisy, info = mix_pair(rng, speech, self.noise, choices, o["length"],
                                          o["snr_range"], o["sr"], o["gain_range"])
        except MixError as err:
            raise MixError(f"{Path(o['speech_dir']) / rel}: {err}") from None
        name = f"{index:05d}_{Path(rel).stem}.wav"
        write_pair_atomic(pair_paths(o["out_dir"], split, name), (clean, noisy), o["sr"])
        return {"split": split, "name": name, "speech": rel, "speaker": speaker_of(rel), **info}


_worker = None


def _init_worker(options):
    global _worker
    _worker = _Worker(options)


def _make_one(job):
    """``(row, None)``, or ``(None, one-line message)`` for an output that could not be made (an
    unreadable speech file), so that it neither stops the other outputs nor the process pool."""
    try:
        return _worker.make(*job), None
    except (AudioError, MixError) as err:
        return None, str(err)


def make_dataset(speech_dir, noise_dir, out_dir, n_train=200, n_valid=20, n_test=20,
                 segment_seconds=0.0, sr=16000, snr_range=(0.0, 20.0), seed=0,
                 split_noise=False, workers=1, overwrite=False, progress=False, log=print, failures=None,
                 gain_range=(0.0, 0.0)):
    """Mix speech and noise into ``out_dir/{train,valid,test}/{clean,noisy}`` and
    ``out_dir/manifest.csv``; returns the manifest rows. Raises MixError, AudioError or
    OutputExistsError with one-line messages.

    ``failures``: a list that receives a one-line message for each output that could not be
    made, while the others are; None: the first such output raises MixError."""
    counts = {"train": int(n_train), "valid": int(n_valid), "test": int(n_test)}
    check_options(counts, segment_seconds, sr, snr_range, gain_range)
    plan, notes = plan_dataset(speech_dir, noise_dir, counts, seed, split_noise)
    for note in notes:
        log(note)
    out_dir = prepare_output_dir(out_dir, overwrite)
    options = {"speech_dir": str(speech_dir), "noise_dir": str(noise_dir), "out_dir": str(out_dir),
               "plan": plan, "seed": int(seed), "sr": int(sr),
               "length": int(round(segment_seconds * sr)), "snr_range": tuple(snr_range),
               "gain_range": tuple(float(g) for g in gain_range)}
    jobs = [(split, index) for split in SPLITS for index in range(counts[split])]
    rows = run_jobs(_make_one, jobs, workers=workers, chunksize=8, desc="mix", progress=progress,
                    failures=failures, error_type=MixError, initializer=_init_worker, initargs=(options,))
    write_manifest(out_dir, rows, MANIFEST_FIELDS)
    return rows


def check_options(counts, segment_seconds, sr, snr_range, gain_range=(0.0, 0.0)):
    if min(counts.values()) < 0 or sum(counts.values()) == 0:
        raise MixError("output counts must be >= 0 and not all 0")
    if segment_seconds < 0:
        raise MixError(f"--segment_seconds {segment_seconds}: must be >= 0 (0 keeps full length)")
    if sr < 8000:
        raise MixError(f"--sr {sr}: need at least 8000 Hz")
    if snr_range[0] > snr_range[1]:
        raise MixError(f"SNR range {snr_range[0]}..{snr_range[1]}: minimum is above maximum")
    if gain_range[0] > gain_range[1]:
        raise MixError(f"gain range {gain_range[0]}..{gain_range[1]} dB: minimum is above maximum")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m echo.data.mix",
        description="Mix a speech corpus with a noise corpus into "
                    "out_dir/{train,valid,test}/{clean,noisy}/*.wav (like the WSJ0+CHiME3 recipe "
                    "of SGMSE+): each output is one utterance plus a random excerpt of a random "
                    "noise file at a random SNR. Speakers do not cross splits.")
    parser.add_argument("--speech_dir", default="data/speech",
                        help="clean speech, .wav/.flac, searched recursively; the first sub-folder "
                             "(or, for files directly in it, the file-name prefix before - or _) "
                             "is taken as the speaker, and speakers do not cross splits "
                             "(default: %(default)s)")
    parser.add_argument("--noise_dir", default="data/noise",
                        help="noise recordings, .wav/.flac, searched recursively (default: %(default)s)")
    parser.add_argument("--out_dir", default="data/mixed",
                        help="dataset folder to create; must be absent or empty unless --overwrite "
                             "(default: %(default)s)")
    parser.add_argument("--n_train", type=int, default=200, help="training pairs (default: %(default)s)")
    parser.add_argument("--n_valid", type=int, default=20, help="validation pairs (default: %(default)s)")
    parser.add_argument("--n_test", type=int, default=20, help="test pairs (default: %(default)s)")
    parser.add_argument("--segment_seconds", type=float, default=0.0,
                        help="crop/zero-pad every pair to this length; 0 keeps each utterance's "
                             "full length (default: %(default)s)")
    parser.add_argument("--sr", type=int, default=16000,
                        help="output sample rate in Hz; inputs at other rates are resampled "
                             "(default: %(default)s)")
    parser.add_argument("--snr_min", type=float, default=0.0,
                        help="lowest SNR in dB, active speech power vs noise power (default: "
                             "%(default)s, as in the SGMSE+ WSJ0-CHiME3 recipe)")
    parser.add_argument("--snr_max", type=float, default=20.0,
                        help="highest SNR in dB (default: %(default)s)")
    parser.add_argument("--gain_min", type=float, default=0.0,
                        help="lowest random gain of a pair in dB (default: %(default)s; with --gain_max 0 "
                             "no gain is drawn)")
    parser.add_argument("--gain_max", type=float, default=0.0, help="highest random gain of a pair in dB "
                                                                     "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="random seed; the same seed and inputs give identical files "
                             "(default: %(default)s)")
    parser.add_argument("--split_noise", action="store_true",
                        help="also split the noise files between train/valid/test, so that test "
                             "noises are unseen in training (needs a noise file per split)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="parallel processes; the output does not depend on it "
                             "(default: %(default)s, the CPU count up to 8)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the split folders and manifest of an existing dataset in out_dir")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_tool(
        lambda log, failures: make_dataset(
            args.speech_dir, args.noise_dir, args.out_dir, args.n_train, args.n_valid, args.n_test,
            args.segment_seconds, args.sr, (args.snr_min, args.snr_max), args.seed, args.split_noise,
            max(1, args.workers), args.overwrite, progress=not args.quiet, log=log, failures=failures,
            gain_range=(args.gain_min, args.gain_max)),
        (MixError, AudioError, OutputExistsError),
        lambda rows, seconds: f"wrote {len(rows)} pairs to {args.out_dir} in {seconds:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
