"""VoiceBank-DEMAND preparation: official 48 kHz folders -> the 16 kHz training layout.

Input (``--src``), as unpacked from the official archive (Valentini-Botinhao et al.,
DOI 10.7488/ds/2117):

    clean_trainset_28spk_wav/  noisy_trainset_28spk_wav/    (required)
    clean_testset_wav/         noisy_testset_wav/           (optional: skipped with a note)

Output (``--dst``): ``{train,valid,test}/{clean,noisy}/<official name>.wav`` at 16 kHz, 16-bit,
plus ``manifest.csv``. The validation split is made of whole held-out training speakers
(p226 and p287 by default, the common choice), so no validation speaker is seen in training.
Training a 16 kHz model on the 48 kHz originals is the most common mistake with this data
set; this tool exists so that nobody has to.

    python -m echo.data.vbdmd --src ~/data/DS_10283_2791 --dst data/vbdmd
"""
import argparse
import os
import sys
from pathlib import Path

from echo.data import (SPLITS, OutputExistsError, pair_paths, prepare_output_dir, run_jobs, run_tool, write_manifest,
                       write_pair_atomic)
from echo.data.resample import backend_name, read_mono, to_pcm16_range
from echo.util.audio import AudioError, audio_info, pair_audio

TRAIN_FOLDERS = ("clean_trainset_28spk_wav", "noisy_trainset_28spk_wav")
TEST_FOLDERS = ("clean_testset_wav", "noisy_testset_wav")
DEFAULT_VALID_SPEAKERS = ("p226", "p287")
MANIFEST_FIELDS = ["split", "name", "speaker", "source_sr", "source_frames", "frames",
                   "clipped_samples"]


class PrepareError(Exception):
    """A problem with the source folders; ``str(err)`` is a complete one-line message."""


def speaker_of(name: str) -> str:
    """VoiceBank speaker id of a file name: ``p226_001.wav`` -> ``p226``."""
    return Path(name).name.split("_")[0]


def find_source_folders(src, train_folders=TRAIN_FOLDERS, test_folders=TEST_FOLDERS):
    """{"train": (clean dir, noisy dir), "test": ... or None when both test folders are absent}.
    Missing training folders, or one test folder without the other, raise PrepareError naming
    them."""
    src = Path(src)
    if not src.is_dir():
        raise PrepareError(f"{src}: source folder does not exist")
    missing = [name for name in train_folders if not (src / name).is_dir()]
    if missing:
        raise PrepareError(f"{src}: missing source folder(s) {', '.join(missing)} "
                           "(unpack the official VoiceBank-DEMAND archives there)")
    found = {"train": tuple(src / name for name in train_folders), "test": None}
    present = [name for name in test_folders if (src / name).is_dir()]
    if len(present) == 1:
        absent = [name for name in test_folders if name not in present]
        raise PrepareError(f"{src}: found {present[0]} but not {absent[0]}; "
                           "provide both test folders or neither")
    if present:
        found["test"] = tuple(src / name for name in test_folders)
    return found


def plan_jobs(folders, valid_speakers):
    """List of (split, name, clean source, noisy source), pairing clean and noisy by name.
    Also returns notes for the user (skipped test split, valid speakers not found)."""
    notes = []
    jobs = []
    train_pairs = pair_audio(*folders["train"])
    if not train_pairs:
        raise PrepareError(f"{folders['train'][0]}: no .wav files found")
    valid_speakers = set(valid_speakers)
    for key, clean, noisy in train_pairs:
        split = "valid" if speaker_of(key) in valid_speakers else "train"
        jobs.append((split, key + ".wav", clean, noisy))
    seen = {speaker_of(key) for key, _c, _n in train_pairs}
    for speaker in sorted(valid_speakers - seen):
        notes.append(f"note: validation speaker {speaker} has no files in {folders['train'][0]}")
    if not any(split == "train" for split, *_ in jobs):
        raise PrepareError("no training pairs left after holding out the validation speakers "
                           f"{', '.join(sorted(valid_speakers))}")
    if folders["test"] is None:
        notes.append(f"note: no {TEST_FOLDERS[0]}/{TEST_FOLDERS[1]} in the source; "
                     "the test split is skipped")
    else:
        jobs += [("test", key + ".wav", clean, noisy) for key, clean, noisy in pair_audio(*folders["test"])]
    return jobs, notes


def convert_pair(job, dst, sr):
    """Resample one clean/noisy pair to ``sr`` and write it; returns its manifest row. Both files
    are read before either is written, and a failed write removes its partner: a pair is
    written whole or not at all (a lone clean file would break the pairing of the data set)."""
    split, name, clean_src, noisy_src = job
    source_sr, _channels, source_frames = audio_info(clean_src)
    noisy_sr, _channels, noisy_frames = audio_info(noisy_src)
    if (noisy_sr, noisy_frames) != (source_sr, source_frames):
        raise AudioError(f"{noisy_src}: {noisy_frames} samples at {noisy_sr} Hz, but its clean "
                         f"partner has {source_frames} at {source_sr} Hz")
    converted = [to_pcm16_range(read_mono(path, sr)) for path in (clean_src, noisy_src)]
    write_pair_atomic(pair_paths(dst, split, name), [audio for audio, _ in converted], sr)
    return {"split": split, "name": name, "speaker": speaker_of(name), "source_sr": source_sr,
            "source_frames": source_frames, "frames": len(converted[0][0]),
            "clipped_samples": sum(n_clipped for _, n_clipped in converted)}


def _convert_star(args):
    """``(row, None)``, or ``(None, one-line message)`` for a pair that could not be converted,
    so that one bad pair neither stops the others nor breaks the process pool."""
    try:
        return convert_pair(*args), None
    except AudioError as err:
        return None, str(err)


def prepare(src, dst, valid_speakers=DEFAULT_VALID_SPEAKERS, sr=16000, workers=1,
            overwrite=False, progress=True, log=print, failures=None):
    """Convert the official folders below ``src`` into the layout in ``dst``; returns the
    manifest rows. Raises PrepareError, OutputExistsError or AudioError (one-line messages).

    ``failures``: a list that receives a one-line message for each pair that could not be
    converted, while the other pairs are; None: the first such pair raises AudioError."""
    folders = find_source_folders(src)
    jobs, notes = plan_jobs(folders, valid_speakers)
    for note in notes:
        log(note)
    dst = prepare_output_dir(dst, overwrite)
    tasks = [(job, str(dst), sr) for job in jobs]
    rows = run_jobs(_convert_star, tasks, workers=workers, chunksize=16, desc="vbdmd", progress=progress,
                    failures=failures, error_type=AudioError)
    rows.sort(key=lambda row: (SPLITS.index(row["split"]), row["name"]))
    write_manifest(dst, rows, MANIFEST_FIELDS)
    clipped = sum(row["clipped_samples"] for row in rows)
    if clipped:
        log(f"note: {clipped} samples exceeded 16-bit full scale after resampling and were clipped "
            "(see clipped_samples in manifest.csv)")
    return rows


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m echo.data.vbdmd",
        description="Prepare VoiceBank-DEMAND: resample the official 48 kHz folders to "
                    "dst/{train,valid,test}/{clean,noisy}/*.wav at 16 kHz with a held-out "
                    "speaker validation split.")
    parser.add_argument("--src", default="data/VoiceBank-DEMAND",
                        help=f"folder holding {TRAIN_FOLDERS[0]}, {TRAIN_FOLDERS[1]} and optionally "
                             f"{TEST_FOLDERS[0]}, {TEST_FOLDERS[1]} (default: %(default)s)")
    parser.add_argument("--dst", default="data/vbdmd",
                        help="output base_dir; must be absent or empty (default: %(default)s)")
    parser.add_argument("--valid_speakers", nargs="*", default=list(DEFAULT_VALID_SPEAKERS),
                        help="training speakers held out as the validation split; p226 and p287 "
                             "is the common choice in the literature (default: %(default)s)")
    parser.add_argument("--sr", type=int, default=16000,
                        help="output sample rate in Hz (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="parallel conversion processes (default: %(default)s, the CPU count "
                             "up to 8)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the split folders and manifest of an existing dataset in dst")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)

    def summary(rows, seconds):
        counts = {split: sum(row["split"] == split for row in rows) for split in SPLITS}
        return (f"wrote {counts['train']} train, {counts['valid']} valid, {counts['test']} test pairs at "
                f"{args.sr} Hz to {args.dst} ({backend_name()}) in {seconds:.1f} s")

    return run_tool(
        lambda log, failures: prepare(args.src, args.dst, args.valid_speakers, args.sr, max(1, args.workers),
                                      args.overwrite, progress=not args.quiet, log=log, failures=failures),
        (PrepareError, OutputExistsError, AudioError), summary)


if __name__ == "__main__":
    sys.exit(main())
