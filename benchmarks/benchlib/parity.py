"""bf16 training parity: does ``train.py --precision bf16-mixed`` reach the validation loss of
the float32 run it replaces? The same seed, data and network train for a few hundred steps in
each precision; a second float32 seed gives the spread that a difference must be read against
(two float32 runs with other seeds also end apart)."""
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib.common import REPO
from echo.recipes.cpu_mix import BATCH_SIZE as BATCH, LR, MODEL_FLAGS

TRAIN_SCRIPT = REPO / "train.py"
STEPS, QUICK_STEPS = 300, 40
# the shipped model's network, crops, batch and learning rate, as its recipe trains it
TRAIN_FLAGS = [*MODEL_FLAGS, "--lr", str(LR)]
TRAIN_FILES = 80  # 2 s each: 20 steps an epoch at batch 4
# (name, train.py --precision, seed): the pair compared, then the float32 seed spread
RUNS = (("fp32", "32-true", 0), ("bf16", "bf16-mixed", 0), ("fp32_seed1", "32-true", 1))
PARITY_BOUND = 0.05  # |bf16 - fp32| / fp32 of the validation loss: "within a few percent"
PARITY_KEYS = ("parity_steps", "parity_valid_loss_fp32", "parity_valid_loss_bf16", "parity_valid_loss_fp32_seed1",
               "bf16_valid_loss_rel_diff", "seed_valid_loss_rel_diff", "parity_s_per_step_fp32",
               "parity_s_per_step_bf16")


def last_valid_loss(log_dir: Path) -> float:
    rows = []
    for path in sorted(log_dir.glob("*/version_*/metrics.csv")):
        with open(path) as f:
            rows += [float(r["valid_loss"]) for r in csv.DictReader(f) if r.get("valid_loss")]
    if not rows:
        raise RuntimeError(f"{log_dir}: the run logged no valid_loss")
    return rows[-1]


def train_run(data: Path, log_dir: Path, precision: str, seed: int, steps: int, device, threads: int):
    """(validation loss after ``steps`` steps, wall seconds a step including start-up)."""
    epochs = steps // (TRAIN_FILES // BATCH)
    command = [sys.executable, str(TRAIN_SCRIPT), "--base_dir", str(data), "--log_dir", str(log_dir),
               *TRAIN_FLAGS, "--precision", precision, "--seed", str(seed), "--max_steps", str(steps),
               "--check_val_every_n_epoch", str(epochs), "--num_eval_files", "0", "--num_workers", "0",
               "--logger", "csv", "--accelerator", device.type, "--devices", "1"]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"train.py --precision {precision} failed: {done.stderr.strip().splitlines()[-1:]}")
    return last_valid_loss(log_dir), wall / steps


def bench_bf16_parity(device, quick, threads):
    from echo.data.synth import make_dataset
    from echo.util.precision import bf16_units

    has_units, reason = bf16_units(device)
    if not has_units:
        # emulated bf16 takes minutes a step (see bench_train_bf16): hours for a few hundred steps
        return dict(notes={key: f"not measured: {reason}" for key in PARITY_KEYS})
    steps = QUICK_STEPS if quick else STEPS
    losses, per_step = {}, {}
    with tempfile.TemporaryDirectory(prefix="echo-parity-") as tmp:
        data = make_dataset(Path(tmp) / "data", n_train=TRAIN_FILES, n_valid=16, n_test=0, seconds=2.0, seed=0)
        for name, precision, seed in RUNS:
            losses[name], per_step[name] = train_run(data, Path(tmp) / name, precision, seed, steps, device, threads)
    fp32 = losses["fp32"]
    return dict(parity_steps=steps,
                parity_valid_loss_fp32=round(fp32, 4), parity_valid_loss_bf16=round(losses["bf16"], 4),
                parity_valid_loss_fp32_seed1=round(losses["fp32_seed1"], 4),
                bf16_valid_loss_rel_diff=round((losses["bf16"] - fp32) / fp32, 4),
                seed_valid_loss_rel_diff=round((losses["fp32_seed1"] - fp32) / fp32, 4),
                parity_s_per_step_fp32=round(per_step["fp32"], 3), parity_s_per_step_bf16=round(per_step["bf16"], 3),
                details={"bf16parity": {"runs": [list(r) for r in RUNS], "train_files": TRAIN_FILES,
                                        "train_flags": TRAIN_FLAGS, "threads": threads,
                                        "note": "each run's valid_loss is computed in its own precision; "
                                                "s/step includes start-up and the one validation"}},
                notes={})
