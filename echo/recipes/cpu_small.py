"""The recipe of the shipped CPU model: real speech in real and generated noise, a few-M-parameter
ECHO, trained within a wall-clock budget on a 2-core CPU.

    nohup python -m echo.recipes.cpu_small --out_dir runs/cpu_small > runs/cpu_small.log 2>&1 &

Data (``out_dir/data``, built once): the speech and recorded noise of ``echo.recipes.real_data``
plus generated noise: babble summed from LibriSpeech speakers held apart from the speech split,
speech-shaped noise with the long-term spectrum of those speakers, and white, pink and brown
noise; SNR -5..20 dB and a random gain of -20..+5 dB per pair. The VoiceBank-DEMAND test pairs
(p232) and the DNS-3 blind recordings are never read.

Training (``out_dir/logs``): train.py with the flags in ``MODEL_FLAGS``, a progress line every
50 steps, checkpoints every epoch. Run the same command again after a kill and it resumes from
the newest last.ckpt with what is left of ``--max_time`` (the budget counts all runs of this
recipe in ``out_dir``). ``--init_ckpt`` continues the training of an earlier model instead of
starting afresh: a training checkpoint (an earlier run's ``last.ckpt``) resumes with its optimizer,
a shipped model (``pretrained/echo_cpu_small.ckpt``) gives its weights to a fresh optimizer.

Why these settings (measured on held-out splits of the real-data sets, never on p232; see
pretrained/README.md and experiments/results/): nf 32 with five levels and two residual blocks
per level (3.2 M parameters, 42 min on 2 cores) gained 1.5 dB SI-SDR on held-out mixtures where
the 0.44 M network of the demo (600 steps, the output-scaling study) gained 0.4 dB, and it still
enhances faster than real time on 2 cores; 64-frame crops (0.5 s) at batch 4 take about 1.3 s a
step on 2 cores (about 4,000 steps in 90 minutes), and longer crops cost steps; lr 5e-4 with an
EMA of 0.999 trained stably at this size (the demo's 1e-3 / 0.99 is for runs of minutes). The
exported model samples with one DDIM step: more steps did not score better on held-out pairs
(experiments/results/shipped_sampler.md) and cost more.
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from echo.checkpoints import CheckpointError, read_checkpoint
from echo.data import OutputExistsError, run_tool
from echo.data.generated_noise import babble, coloured_noise, long_term_spectrum, speech_shaped_noise
from echo.data.mix import MixError, make_dataset
from echo.data.resample import read_mono
from echo.recipes.real_data import NOISE_PAIRS, SPEECH_CORPORA, SR, stage_noise, stage_speech
from echo.pretrained import export, shipped_training
from echo.training_clock import format_max_time, parse_max_time, training_seconds
from echo.util.audio import AudioError, list_audio, write_audio_atomic

BABBLE_CORPUS = "speech/librispeech_train-clean-100"
BABBLE_SPEAKERS = 40          # one utterance each in that corpus: held apart from the speech split
GENERATED_SECONDS = 10.0
N_BABBLE, N_SPEECH_SHAPED, N_PER_COLOUR = 24, 8, 4
COLOURS = {"white": 0.0, "pink": 1.0, "brown": 2.0}
GAIN_RANGE = (-20.0, 5.0)
MODEL_FLAGS = ["--nf", "32", "--ch_mult", "1", "2", "2", "2", "2", "--num_res_blocks", "2", "--attn_resolutions",
               "--num_frames", "64", "--batch_size", "4", "--lr", "5e-4", "--ema_decay", "0.999"]
RUN_NAME = "echo"
SAMPLER = ("ddim", 1)  # the exported model's default in enhancement.py (chosen on held-out pairs)


def babble_speakers(data_root: Path, seed: int) -> list:
    """The LibriSpeech files whose speakers make babble and never appear as target speech."""
    files = list_audio(data_root / BABBLE_CORPUS)
    rng = np.random.default_rng([seed, 1789])
    return sorted(files[i] for i in rng.choice(len(files), size=min(BABBLE_SPEAKERS, len(files) // 2), replace=False))


def write_generated_noise(data_root: Path, folder: Path, babble_files, seed: int) -> int:
    """Babble, speech-shaped and coloured noise files (float WAV at an RMS of 0.1, the level of
    the recorded noises; mixing rescales them to the drawn SNR) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    voices = [read_mono(data_root / BABBLE_CORPUS / rel, SR) for rel in babble_files]
    length = int(GENERATED_SECONDS * SR)
    jobs = [(f"babble_{i:02d}", lambda rng: babble(rng, voices, length, int(rng.integers(3, 9)), SR))
            for i in range(N_BABBLE)]
    spectrum = long_term_spectrum(voices)
    jobs += [(f"speech_shaped_{i:02d}", lambda rng: speech_shaped_noise(rng, length, spectrum))
             for i in range(N_SPEECH_SHAPED)]
    jobs += [(f"{name}_{i:02d}", lambda rng, e=exponent: coloured_noise(rng, length, e))
             for name, exponent in COLOURS.items() for i in range(N_PER_COLOUR)]
    for index, (name, make) in enumerate(jobs):
        target = folder / f"generated_{name}.wav"
        if not target.exists():
            noise = make(np.random.default_rng([seed, 2024, index]))
            write_audio_atomic(target, 0.1 * noise, SR, subtype="FLOAT")
    return len(jobs)


def build_data(data_root, out_dir, n_train=2000, n_valid=24, n_test=24, seed=0, workers=1, progress=False,
               log=print, failures=None):
    data_root, out_dir = Path(data_root), Path(out_dir)
    sources = out_dir.parent / f"{out_dir.name}_sources"
    held_apart = babble_speakers(data_root, seed)
    n_speech = stage_speech(data_root, sources / "speech", SPEECH_CORPORA,
                            exclude={(BABBLE_CORPUS, rel) for rel in held_apart})
    n_noise = stage_noise(data_root, sources / "noise", NOISE_PAIRS)
    n_generated = write_generated_noise(data_root, sources / "noise", held_apart, seed)
    log(f"sources: {n_speech} speech files, {n_noise} noise recordings, {n_generated} generated noises "
        f"(babble from {len(held_apart)} held-apart speakers; staged in {sources})")
    return make_dataset(sources / "speech", sources / "noise", out_dir, n_train, n_valid, n_test, 4.0, SR,
                        (-5.0, 20.0), seed, split_noise=True, workers=workers, progress=progress, log=log,
                        failures=failures, gain_range=GAIN_RANGE)


def newest_last_checkpoint(log_dir: Path):
    found = sorted((log_dir / RUN_NAME).glob("version_*/checkpoints/last.ckpt"),
                   key=lambda p: int(p.parent.parent.name.split("_")[1]))
    return found[-1] if found else None


def is_training_checkpoint(path) -> bool:
    """A checkpoint train.py can resume (it holds the optimizer state), not a shipped model."""
    return "optimizer_states" in read_checkpoint(path)


def plan_training(out_dir: Path, budget_s: float, init_ckpt=None):
    """(checkpoint to resume from or None, seconds left of the budget). The ledger
    ``out_dir/budget.json`` holds the training seconds the starting checkpoint already had, so the
    budget counts only this recipe's own runs."""
    ledger = out_dir / "budget.json"
    resume = newest_last_checkpoint(out_dir / "logs")
    if ledger.exists():
        start_s = json.loads(ledger.read_text())["start_seconds"]
    else:
        start_s = shipped_training(read_checkpoint(init_ckpt))["seconds"] if init_ckpt else 0.0
        ledger.write_text(json.dumps({"start_seconds": start_s, "init_ckpt": str(init_ckpt) if init_ckpt else None}))
    if resume is None:
        return (Path(init_ckpt) if init_ckpt else None), budget_s
    spent = training_seconds(read_checkpoint(resume)) - start_s
    return resume, budget_s - spent


def train(args, data_flags, model_flags=MODEL_FLAGS, extra_flags=()) -> int:
    """Run train.py with ``data_flags`` (where the examples come from) and ``model_flags`` within what
    is left of ``args.max_time``, then export the shipped file; see the module's docstring."""
    out_dir = Path(args.out_dir)
    ckpt, left_s = plan_training(out_dir, parse_max_time(args.max_time).total_seconds(), args.init_ckpt)
    if left_s < 60:
        print(f"{out_dir}: the budget of {args.max_time} is spent (last checkpoint: {ckpt}); "
              "give a larger --max_time to train on")
        return 0
    command = [sys.executable, str(Path(__file__).resolve().parents[2] / "train.py"),
               *data_flags, "--log_dir", str(out_dir / "logs"), "--run_name", RUN_NAME,
               *model_flags, *extra_flags, "--max_time", format_max_time(left_s), "--num_eval_files", "0", "--num_workers", "0",
               "--accelerator", "cpu", "--progress_every", "50", "--seed", str(args.seed)]
    if ckpt is not None:
        # a training checkpoint resumes (optimizer and step counter too); a shipped model gives weights
        command += ["--ckpt" if is_training_checkpoint(ckpt) else "--init_weights", str(ckpt)]
    print(f"training for {format_max_time(left_s)}" + (f", resuming from {ckpt}" if ckpt else "") + f": {' '.join(command)}",
          flush=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    status = subprocess.call(command, env=env)
    last = newest_last_checkpoint(out_dir / "logs")
    if status == 0 and last is not None:
        # a run from a shipped model restarted the step counter: count that model's steps too
        previous = args.init_ckpt if args.init_ckpt and not is_training_checkpoint(args.init_ckpt) else None
        info = export(last, out_dir / "echo_cpu_small.ckpt", *SAMPLER, previous=previous)
        print(f"model: {info['path']} ({info['steps']} steps, {info['seconds'] / 3600:.2f} h of training); "
              f"enhance with: python enhancement.py --ckpt {info['path']} --test_dir NOISY")
    return status


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m echo.recipes.cpu_small", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data_root", default="../shared/data",
                        help="folder holding speech/, noise/, vbdmd_train_sample/ and dns3_test_sample/")
    parser.add_argument("--out_dir", default="runs/cpu_small", help="folder for the data set and the training run")
    parser.add_argument("--n_train", type=int, default=2000, help="training pairs of 4 s")
    add_run_args(parser, init_default=None)
    parser.add_argument("--data_only", action="store_true", help="build the data set and stop")
    return parser


def add_run_args(parser, init_default):
    """The flags of a recipe's training run that ``train`` reads (shared by the recipes)."""
    parser.add_argument("--max_time", default="00:01:30:00",
                        help="wall-clock budget of training, DD:HH:MM:SS, counted over every run in --out_dir")
    parser.add_argument("--init_ckpt", default=init_default,
                        help="model to continue from: an earlier run's last.ckpt, or the shipped "
                             "pretrained/echo_cpu_small.ckpt" + ("; 'none' starts from random weights"
                                                                 if init_default else ""))
    parser.add_argument("--threads", type=int, default=2,
                        help="CPU threads of training (1 on a machine busy with other work: a team of two "
                             "threads waits at every barrier for the one the scheduler parked)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and of training")


def main(argv=None):
    args = build_parser().parse_args(argv)
    out_dir = Path(args.out_dir)
    data_dir = out_dir / "data"
    try:
        parse_max_time(args.max_time)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not (data_dir / "manifest.csv").exists():
        status = run_tool(
            lambda log, failures: build_data(args.data_root, data_dir, args.n_train, seed=args.seed, workers=2,
                                             log=log, failures=failures),
            (MixError, AudioError, OutputExistsError, ValueError),
            lambda rows, seconds: f"wrote {len(rows)} pairs to {data_dir} in {seconds:.1f} s")
        if status:
            return status
    if args.data_only:
        return 0
    try:
        return train(args, ["--base_dir", str(data_dir)])
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
