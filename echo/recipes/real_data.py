"""A training set of real speech in real noise, built from a corpora folder.

    python -m echo.recipes.real_data --data_root ../shared/data --out_dir data/real_mix

Speech: LibriSpeech (train-clean-100 and test-other), CMU ARCTIC and SiSEC 2011 recordings.
Noise: every recording under ``noise/``, plus the noise of the VoiceBank-DEMAND training pairs
(``vbdmd_train_sample``, speaker p287) and of the DNS-3 synthetic pairs, each decoupled as
noisy minus clean. The VoiceBank-DEMAND *test* pairs (``vbdmd_test``, p232) and the DNS-3
blind recordings are never read: they are the test and listening sets.

The corpora are staged as links (and the decoupled noises as files) under
``out_dir/sources/``, then mixed by ``echo.data.mix`` with speakers and noise files split
between train/valid/test, so the valid and test splits hold speakers and noise recordings that
training never saw.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

from echo.data import OutputExistsError, run_tool
from echo.data.mix import MixError, make_dataset
from echo.data.resample import read_mono
from echo.util.audio import AudioError, list_audio, write_audio_atomic

SPEECH_CORPORA = ("speech/librispeech_train-clean-100", "speech/librispeech_test-other",
                  "speech/cmu_arctic", "speech/sisec2011_dev1")
NOISE_FOLDER = "noise"
# pairs whose noise is decoupled as noisy - clean; never the test pairs
NOISE_PAIRS = ("vbdmd_train_sample", "dns3_test_sample")
NEVER_READ = ("vbdmd_test", "vbdmd_test_48k", "dns3_blind_real_noisy")
SR = 16000


def speaker_prefix(corpus: str, rel: str) -> str:
    """A flat link name whose prefix before the first '-' is the speaker group that
    ``echo.data.mix`` keeps within one split: LibriSpeech names already start with the speaker;
    the small corpora count as one group each (their speakers are few and unlabelled)."""
    name = rel.replace("/", "_")
    if corpus.startswith("speech/librispeech"):
        return name
    return f"{Path(corpus).name.replace('-', '').replace('_', '')}-{name}"


def stage_speech(data_root: Path, folder: Path, corpora=SPEECH_CORPORA, exclude=frozenset()) -> int:
    """Links to the speech files of ``corpora``, leaving out the ``(corpus, rel)`` in ``exclude``."""
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for corpus in corpora:
        source = data_root / corpus
        if not source.is_dir():
            raise AudioError(f"{source}: speech corpus not found (give --data_root or leave it out of --speech)")
        for rel in list_audio(source):
            if (corpus, rel) in exclude:
                continue
            link = folder / speaker_prefix(corpus, rel)
            if not link.exists():
                link.symlink_to((source / rel).resolve())
            count += 1
    return count


def stage_noise(data_root: Path, folder: Path, pairs=NOISE_PAIRS) -> int:
    """Links to the noise recordings and the decoupled noise of the training pairs."""
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    source = data_root / NOISE_FOLDER
    for rel in list_audio(source):
        link = folder / rel.replace("/", "_")
        if not link.exists():
            link.symlink_to((source / rel).resolve())
        count += 1
    for pair_set in pairs:
        clean_dir, noisy_dir = data_root / pair_set / "clean", data_root / pair_set / "noisy"
        for rel in list_audio(noisy_dir):
            target = folder / f"{pair_set}_{Path(rel).stem}.wav"
            if not target.exists():
                noise = read_mono(noisy_dir / rel, SR) - read_mono(clean_dir / rel, SR)
                write_audio_atomic(target, noise.astype(np.float32), SR, subtype="FLOAT")
            count += 1
    return count


def build(data_root, out_dir, n_train=2000, n_valid=24, n_test=24, segment_seconds=4.0,
          snr_range=(-5.0, 20.0), seed=0, workers=1, overwrite=False, progress=False, log=print, failures=None):
    data_root, out_dir = Path(data_root), Path(out_dir)
    sources = out_dir.parent / f"{out_dir.name}_sources"
    n_speech = stage_speech(data_root, sources / "speech")
    n_noise = stage_noise(data_root, sources / "noise")
    log(f"sources: {n_speech} speech files, {n_noise} noise recordings (staged in {sources})")
    return make_dataset(sources / "speech", sources / "noise", out_dir, n_train, n_valid, n_test,
                        segment_seconds, SR, snr_range, seed, split_noise=True, workers=workers,
                        overwrite=overwrite, progress=progress, log=log, failures=failures)


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m echo.recipes.real_data", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_root", default="../shared/data",
                        help="folder holding speech/, noise/, vbdmd_train_sample/ and dns3_test_sample/")
    parser.add_argument("--out_dir", default="data/real_mix", help="dataset folder to create")
    parser.add_argument("--n_train", type=int, default=2000, help="training pairs")
    parser.add_argument("--n_valid", type=int, default=24, help="validation pairs (unseen speakers and noises)")
    parser.add_argument("--n_test", type=int, default=24, help="held-out pairs for choosing settings")
    parser.add_argument("--segment_seconds", type=float, default=4.0, help="length of every pair (0: whole utterances)")
    parser.add_argument("--snr_min", type=float, default=-5.0, help="lowest SNR in dB")
    parser.add_argument("--snr_max", type=float, default=20.0, help="highest SNR in dB")
    parser.add_argument("--seed", type=int, default=0, help="seed of the mixing")
    parser.add_argument("--workers", type=int, default=2, help="parallel processes (the output does not depend on it)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset in --out_dir")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_tool(
        lambda log, failures: build(args.data_root, args.out_dir, args.n_train, args.n_valid, args.n_test,
                                    args.segment_seconds, (args.snr_min, args.snr_max), args.seed,
                                    max(1, args.workers), args.overwrite, not args.quiet, log, failures),
        (MixError, AudioError, OutputExistsError),
        lambda rows, seconds: f"wrote {len(rows)} pairs to {args.out_dir} in {seconds:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
