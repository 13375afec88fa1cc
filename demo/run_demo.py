#!/usr/bin/env python
"""The whole ECHO job on a small synthetic data set, on a CPU, with no download.

    python demo/run_demo.py [--out_dir demo_out] [--seed 0] [--train_minutes 8] [--N 12]

Runs, as a user would, each step as its own command with this Python:
  1. python -m echo.data.synth   a small speech-in-noise data set, deterministic by --seed
  2. python train.py             a tiny ECHO model, for --train_minutes or --max_steps
  3. python enhancement.py       the noisy test split, with the trained checkpoint's EMA weights
  4. python calc_metrics.py      PESQ, ESTOI, SI-SDR, ... of the noisy input and the enhanced output
  5. python -m demo.plots        spectrograms.png and metrics.png next to the results
  6. python enhancement.py       a real recording kept in demo/real_clip/ with the demo's model,
  7. python enhancement.py       and with the shipped CPU model (pretrained/), then real_clip.png
and prints the noisy-vs-enhanced table. Every command line is printed before it runs, and
its output is also written to out_dir/logs/<step>.log.

Output folder:
  data/      the synthetic data set ({train,valid,test}/{clean,noisy}/*.wav)
  logs/      the training run (CSV metrics, checkpoints) and one log file per step
  enhanced/  the enhanced test files
  real_clip/ the real recording enhanced by the demo model and by the shipped model
  results/   _results.csv, _avg_results.txt, spectrograms.png, metrics.png
  demo_run.json   the settings, the time of each step and the mean metrics
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `python demo/run_demo.py` puts demo/, not the repository, on the path

from demo.plots import METRIC_LABELS, RESULTS_CSV, read_results, summarize  # noqa: E402
from echo.training_clock import format_max_time  # noqa: E402
from echo.util.other import write_text_atomic  # noqa: E402

RUN_INFO = "demo_run.json"  # also marks a folder as a demo output that --overwrite may replace
RUN_NAME = "demo"

# The data set: short files keep the epochs and the enhancement quick. SNRs of 0-10 dB are
# noisy enough that the improvement is audible and large enough that PESQ is not stuck at its
# floor (about 1.05), where no model could show a gain.
DATA = dict(n_train=128, n_valid=4, n_test=8, seconds=2.0, snr_min=0.0, snr_max=10.0)

# A tiny NCSN++ with the deformable stem, combiners and output layer of the full model: 4
# levels instead of 7, 16 channels instead of 128, no attention (0.44 M parameters instead of
# 65.6 M). One training step on 8 crops of 64 frames (0.5 s) takes about 1 s on 2 free cores.
# The output scaling and the normalisation of training crops are the defaults (no division of
# the output by t, crops divided by their file's peak): with the release's division a short run
# samples badly in several steps (see README, "What ECHO changes relative to the public release").
MODEL_FLAGS = ["--nf", "16", "--ch_mult", "1", "2", "2", "2", "--num_res_blocks", "1", "--attn_resolutions"]

# Short-run training: a learning rate ten times the paper's (stable for the tiny network) and
# a fast EMA, because the checkpoint holds the EMA weights and the paper's decay of 0.999
# would average over more steps than the whole run has.
TRAIN_FLAGS = ["--num_frames", "64", "--batch_size", "8", "--lr", "1e-3", "--ema_decay", "0.99",
               "--num_eval_files", "0",  # validation enhancement would cost minutes; loss only
               "--num_workers", "0",  # loading 2 s files is cheap; worker processes are not
               "--log_every_n_steps", "10"]
DEFAULT_TRAIN_MINUTES = 8.0
DEFAULT_MAX_STEPS = 400
# The posterior chain needs N > beta_max = 10 (at N = 10 its first beta reaches 1). Fewer steps
# than the paper's 20 cost less and enhanced as well in the demo's runs.
DEFAULT_N = 12

# A few seconds of real speech in real noise (CC BY 4.0, see its ATTRIBUTION.md), enhanced at the
# end by the demo's model and by the shipped model, so the first run shows real enhancement.
REAL_CLIP = REPO / "demo" / "real_clip" / "librispeech7635_city_5dB.wav"
REAL_CLIP_PNG = "real_clip.png"


class StepFailed(RuntimeError):
    """A step's command exited with an error; the message names the step and its log."""


# --------------------------------------------------------------------------------------------
# Command line and output folder
# --------------------------------------------------------------------------------------------

def build_parser():
    parser = argparse.ArgumentParser(
        prog="python demo/run_demo.py",
        description="Generate a small synthetic data set, train a tiny ECHO model on it, enhance "
                    "the test split, score it and plot the result (CPU, no download).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out_dir", default="demo_out", help="folder for everything the demo writes")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data set, the training and the sampler")
    parser.add_argument("--train_minutes", type=float, default=DEFAULT_TRAIN_MINUTES,
                        help="wall-clock budget of the training step (0: no limit, --max_steps only)")
    parser.add_argument("--max_steps", type=int, default=DEFAULT_MAX_STEPS,
                        help="stop training after this many steps, even with time left")
    parser.add_argument("--N", type=int, default=DEFAULT_N, help="reverse steps of the sampler")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads per step (0: all cores on an idle machine, 1 on a busy one)")
    parser.add_argument("--n_train", type=int, default=DATA["n_train"], help="training files to generate")
    parser.add_argument("--n_test", type=int, default=DATA["n_test"], help="test files to generate and enhance")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the results of an earlier demo run in --out_dir")
    return parser


def check_args(args):
    if args.train_minutes < 0:
        raise SystemExit("error: --train_minutes must not be negative")
    if args.max_steps < 1:
        raise SystemExit("error: --max_steps must be at least 1")
    if args.N < 1:
        raise SystemExit("error: --N must be at least 1")
    if args.n_train < 1 or args.n_test < 1:
        raise SystemExit("error: --n_train and --n_test must be at least 1")
    if args.threads < 0:
        raise SystemExit("error: --threads must not be negative")


def choose_threads(requested: int):
    """Threads per step, or None to leave the libraries' default (all cores).

    On a CPU that other jobs keep busy, a step running one thread per core spends its time
    waiting for the slowest thread: here a training step took 10-20 s with 2 threads and
    3.5 s with one, while with 2 free cores 2 threads are the faster choice.
    """
    if requested:
        return requested
    cores = os.cpu_count() or 1
    busy = os.getloadavg()[0] >= 0.5 * cores if hasattr(os, "getloadavg") else False
    return 1 if busy and cores > 1 else None


def thread_env(threads) -> dict:
    if threads is None:
        return {}
    return {name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}


def prepare_out_dir(out_dir: Path, overwrite: bool):
    """An empty output folder. An earlier demo run is replaced only with --overwrite, and a
    folder the demo did not write is never emptied, so a mistyped --out_dir cannot delete a
    user's files."""
    if out_dir.exists() and not out_dir.is_dir():
        raise SystemExit(f"error: {out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not (out_dir / RUN_INFO).is_file():
            raise SystemExit(f"error: {out_dir} is not empty and was not written by the demo; "
                             "choose another --out_dir")
        if not overwrite:
            raise SystemExit(f"error: {out_dir} holds an earlier demo run; pass --overwrite to replace "
                             "it or choose another --out_dir")
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)


def write_run_info(out_dir: Path, info: dict):
    write_text_atomic(out_dir / RUN_INFO, json.dumps(info, indent=2) + "\n")


# --------------------------------------------------------------------------------------------
# The steps' command lines
# --------------------------------------------------------------------------------------------

def layout(out_dir: Path) -> dict:
    return dict(data=out_dir / "data", logs=out_dir / "logs", enhanced=out_dir / "enhanced",
                real_clip=out_dir / "real_clip", results=out_dir / "results")


def data_command(paths, args):
    return ["-m", "echo.data.synth", "--out_dir", str(paths["data"]), "--n_train", str(args.n_train),
            "--n_valid", str(DATA["n_valid"]), "--n_test", str(args.n_test),
            "--seconds", str(DATA["seconds"]), "--snr_min", str(DATA["snr_min"]),
            "--snr_max", str(DATA["snr_max"]), "--seed", str(args.seed)]


def max_time_text(minutes: float) -> str:
    return format_max_time(minutes * 60)


def train_command(paths, args):
    command = ["train.py", "--base_dir", str(paths["data"]), "--log_dir", str(paths["logs"]),
               "--run_name", RUN_NAME, "--seed", str(args.seed), "--max_steps", str(args.max_steps),
               *MODEL_FLAGS, *TRAIN_FLAGS]
    if args.train_minutes > 0:
        command += ["--max_time", max_time_text(args.train_minutes)]
    return command


def enhance_command(paths, ckpt, args):
    return ["enhancement.py", "--test_dir", str(paths["data"] / "test" / "noisy"),
            "--enhanced_dir", str(paths["enhanced"]), "--ckpt", str(ckpt), "--N", str(args.N),
            "--seed", str(args.seed)]


def metrics_command(paths):
    test = paths["data"] / "test"
    return ["calc_metrics.py", "--clean_dir", str(test / "clean"), "--noisy_dir", str(test / "noisy"),
            "--enhanced_dir", str(paths["enhanced"]), "--output_dir", str(paths["results"])]


def plots_command(paths):
    return ["-m", "demo.plots", "--data_dir", str(paths["data"]), "--enhanced_dir", str(paths["enhanced"]),
            "--results_dir", str(paths["results"])]


def real_clip_commands(paths, ckpt, args):
    """Enhance the real recording kept in demo/real_clip/ with the demo's model and with the
    shipped model (enhancement.py without --ckpt), then draw both next to the input."""
    demo_out, shipped_out = paths["real_clip"] / "demo_model", paths["real_clip"] / "shipped_model"
    name = REAL_CLIP.name
    return [
        ("6/7 real recording, demo model", ["enhancement.py", "--test_dir", str(REAL_CLIP.parent), "--enhanced_dir",
                                            str(demo_out), "--ckpt", str(ckpt), "--N", str(args.N), "--seed",
                                            str(args.seed)]),
        ("7/7 real recording, shipped model", ["enhancement.py", "--test_dir", str(REAL_CLIP.parent),
                                               "--enhanced_dir", str(shipped_out), "--seed", str(args.seed)]),
        ("figure of the real recording", ["-m", "demo.clip_figure", "--noisy", str(REAL_CLIP), "--enhanced",
                                          f"demo model ({args.N} steps)={demo_out / name}",
                                          f"shipped CPU model={shipped_out / name}",
                                          "--title", "Real speech in city noise (demo/real_clip, CC BY 4.0)",
                                          "--out", str(paths["results"] / REAL_CLIP_PNG)]),
    ]


def run_real_clip(paths, ckpt, args, env) -> float:
    total = 0.0
    for number, (title, arguments) in enumerate(real_clip_commands(paths, ckpt, args)):
        total += run_step(title, arguments, paths["logs"] / f"{6 + number}_real_clip.log", env)
    return total


# --------------------------------------------------------------------------------------------
# Running a step
# --------------------------------------------------------------------------------------------

def run_step(title, arguments, log_path: Path, extra_env=None) -> float:
    """Run ``python ARGUMENTS`` in the repository, its output shown here and copied to
    ``log_path``; returns the wall time in seconds, raises StepFailed on an error exit."""
    command = [sys.executable, *arguments]
    env_words = [f"{name}={value}" for name, value in (extra_env or {}).items()]
    print(f"\n=== {title}\n$ {' '.join(env_words + [_shell_word(word) for word in command])}", flush=True)
    # PYTHONUNBUFFERED: progress as it happens, not in 8 kB blocks
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(extra_env or {}))
    started = time.perf_counter()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log, subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                                       stderr=subprocess.STDOUT) as process:
        # raw chunks, not lines: progress bars redraw with carriage returns
        while chunk := process.stdout.read1(65536):
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            log.write(chunk)
        status = process.wait()
    seconds = time.perf_counter() - started
    if status != 0:
        raise StepFailed(f"{title}: exited with status {status} after {seconds:.0f} s; see {log_path}")
    print(f"--- {title}: {seconds:.1f} s", flush=True)
    return seconds


def _shell_word(word: str) -> str:
    return word if word and all(c.isalnum() or c in "-_./:=" for c in word) else repr(word)


def find_checkpoint(log_dir: Path) -> Path:
    """The last.ckpt of the newest training run below ``log_dir``."""
    found = sorted((log_dir / RUN_NAME).glob("version_*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise StepFailed(f"training wrote no last.ckpt below {log_dir / RUN_NAME}")
    return found[-1]


def trained_steps(ckpt: Path):
    """Optimizer steps recorded in the checkpoint (None if it cannot be read)."""
    try:
        import torch
        return int(torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"])
    except Exception:
        return None


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

def result_means(results_csv: Path) -> dict:
    """``{metric: {"noisy": mean, "enhanced": mean}}`` over the scored test files."""
    return {name: {"noisy": noisy, "enhanced": enhanced}
            for name, (noisy, _, enhanced, _) in summarize(read_results(results_csv)).items()}


def table_text(means: dict) -> str:
    lines = [f"{'metric':<13} {'noisy':>9} {'enhanced':>9} {'change':>9}", "-" * 43]
    for name, value in means.items():
        change = value["enhanced"] - value["noisy"]
        lines.append(f"{METRIC_LABELS.get(name, name):<13} {value['noisy']:>9.3f} "
                     f"{value['enhanced']:>9.3f} {change:>+9.3f}")
    return "\n".join(lines)


def beats_noisy(means: dict, metrics=("si_sdr", "pesq")) -> bool:
    return all(name in means and math.isfinite(means[name]["enhanced"])
               and means[name]["enhanced"] > means[name]["noisy"] for name in metrics)


def print_report(info: dict, paths: dict):
    means = info["results"]
    print(f"\n=== ECHO demo: test split, mean over {info['test_files']} files "
          f"({info['trained_steps']} training steps, N = {info['settings']['N']})")
    print(table_text(means))
    verdict = "yes" if beats_noisy(means) else \
        "no (train longer: raise --train_minutes and --max_steps)"
    print(f"\nenhanced beats noisy on SI-SDR and PESQ: {verdict}")
    timings = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in info["seconds"].items())
    print(f"wall time: {timings}; total {sum(info['seconds'].values()) / 60:.1f} min")
    print(f"\ncheckpoint:   {info['checkpoint']}\nenhanced:     {paths['enhanced']}\n"
          f"results:      {paths['results'] / RESULTS_CSV}\nspectrograms: {paths['results'] / 'spectrograms.png'}\n"
          f"metrics plot: {paths['results'] / 'metrics.png'}\n"
          f"real recording: {REAL_CLIP} -> {paths['real_clip']} "
          f"(listen to both; figure {paths['results'] / REAL_CLIP_PNG})")


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------

def run_demo(args) -> dict:
    out_dir = Path(args.out_dir).resolve()
    prepare_out_dir(out_dir, args.overwrite)
    paths = layout(out_dir)
    info = dict(status="running", settings=dict(vars(args), data=DATA, model_flags=MODEL_FLAGS,
                                                train_flags=TRAIN_FLAGS), seconds={})
    write_run_info(out_dir, info)
    seconds, logs = info["seconds"], paths["logs"]
    threads = choose_threads(args.threads)
    info["threads"] = threads or "default"
    print(f"CPU threads per step: {threads or 'library default (all cores)'}"
          + (" (the machine is busy: one thread each wastes less time waiting)" if threads == 1 and not args.threads else ""))
    env = thread_env(threads)

    seconds["data"] = run_step("1/7 synthetic data set", data_command(paths, args), logs / "1_data.log", env)
    seconds["train"] = run_step("2/7 training", train_command(paths, args), logs / "2_train.log", env)
    ckpt = find_checkpoint(logs)
    info.update(checkpoint=str(ckpt), trained_steps=trained_steps(ckpt))
    write_run_info(out_dir, info)
    seconds["enhance"] = run_step("3/7 enhancement", enhance_command(paths, ckpt, args), logs / "3_enhance.log", env)
    seconds["metrics"] = run_step("4/7 metrics", metrics_command(paths), logs / "4_metrics.log", env)
    seconds["plots"] = run_step("5/7 figures", plots_command(paths), logs / "5_plots.log", env)

    seconds["real_clip"] = run_real_clip(paths, ckpt, args, env)

    info.update(status="done", results=result_means(paths["results"] / RESULTS_CSV),
                test_files=len(read_results(paths["results"] / RESULTS_CSV)))
    info["beats_noisy"] = beats_noisy(info["results"])
    write_run_info(out_dir, info)
    print_report(info, paths)
    return info


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    check_args(args)
    try:
        run_demo(args)
    except StepFailed as err:
        print(f"\nerror: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
