"""The DDP part of benchmarks/gpu_check.py: train.py under DDP on all visible GPUs, as a user starts it."""
import csv
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gpuchecklib.common import REPO


def ddp_dataset(folder, examples, batch_size, frames):
    """Generated training data with ``examples`` pairs, so that the whole run is one epoch: each
    epoch end validates and writes checkpoints (about 1 GB each at paper size), which would
    dominate 20 steps. A few distinct files are generated and linked under more names."""
    import shutil

    from echo.data.synth import make_dataset

    distinct = min(examples, 4 * batch_size)
    seconds = frames * 128 / 16000 + 0.5  # longer than one crop
    data = make_dataset(folder / "data", n_train=distinct, n_valid=2, n_test=0, seconds=seconds, seed=0)
    for side in ("clean", "noisy"):
        files = sorted((data / "train" / side).glob("*.wav"))
        for index in range(distinct, examples):
            target = data / "train" / side / f"copy_{index:05d}.wav"
            try:
                os.link(files[index % distinct], target)
            except OSError:  # a file system without hard links
                shutil.copyfile(files[index % distinct], target)
    return data


def check_ddp(args, deadline, accelerator="gpu", devices=None, extra_args=()):
    """train.py under DDP on ``devices`` (all visible GPUs by default) of ``accelerator``, as a
    user starts it; ``extra_args`` go to train.py after the others."""
    import torch

    gpus = torch.cuda.device_count() if devices is None else devices
    with tempfile.TemporaryDirectory(prefix="echo-gpu-check-") as folder:
        folder = Path(folder)
        data = ddp_dataset(folder, args.ddp_steps * args.batch_size * gpus, args.batch_size, args.frames)
        command = [sys.executable, str(REPO / "train.py"), "--base_dir", str(data), "--log_dir", str(folder / "logs"),
                   "--accelerator", accelerator, "--devices", str(gpus), "--strategy", "ddp",
                   "--max_steps", str(args.ddp_steps), "--batch_size", str(args.batch_size),
                   "--num_frames", str(args.frames), "--num_workers", "2", "--num_eval_files", "0",
                   "--logger", "csv", "--log_every_n_steps", "1", "--seed", "0", *extra_args]
        timeout = max(30.0, deadline - time.perf_counter())
        started = time.perf_counter()
        try:
            result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"passed": False, "gpus": gpus, "error": f"train.py did not finish within {timeout:.0f} s"}
        wall = time.perf_counter() - started
        report = {"gpus": gpus, "steps": args.ddp_steps, "batch_per_gpu": args.batch_size,
                  "wall_s_including_start_up": round(wall, 1), "returncode": result.returncode}
        if result.returncode != 0:
            tail = [line for line in result.stderr.strip().splitlines() if line.strip()][-3:]
            return {**report, "passed": False, "error": " | ".join(tail)}
        losses = []
        for metrics in sorted((folder / "logs").glob("echo/version_*/metrics.csv")):
            with open(metrics, newline="") as handle:
                losses += [float(r["train_loss_step"]) for r in csv.DictReader(handle) if r.get("train_loss_step")]
        checkpoint = next((folder / "logs").glob("echo/version_*/checkpoints/last.ckpt"), None)
        step = torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"] if checkpoint else None
        finite = bool(losses) and all(math.isfinite(v) for v in losses)
        report.update(global_step=step, losses_logged=len(losses), losses_finite=finite,
                      first_loss=losses[0] if losses else None, last_loss=losses[-1] if losses else None,
                      passed=finite and step == args.ddp_steps)
        return report
