"""Data-parallel training on the CPU, launched the ways users launch it: Lightning's own launcher
(`train.py --devices 2 --strategy ddp`) and torchrun with two "nodes" on this machine
(`--num_nodes 2 --devices 1`), both over gloo. tests/ddp_runner.py records each rank's draws."""
import csv
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO

RUNNER = REPO / "tests" / "ddp_runner.py"
STEPS_PER_EPOCH = 2  # synth_dataset: 8 training pairs, 2 ranks x batch 2
FIRST_STEPS, RESUMED_STEPS = 6, 8
# a tiny network and a learning rate at which a few steps visibly lower the validation loss;
# --ema_decay 0 validates the trained weights themselves rather than a slow average of them
ARGS = ["--accelerator", "cpu", "--strategy", "ddp", "--batch_size", "2", "--num_frames", "16", "--num_workers", "0",
        "--logger", "csv", "--log_every_n_steps", "1", "--num_eval_files", "0", "--seed", "7", "--lr", "3e-3",
        "--ema_decay", "0", "--nf", "16", "--ch_mult", "1", "2", "--num_res_blocks", "1", "--attn_resolutions"]
TIMEOUT_S = 300

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="this torch build has no gloo backend for CPU DDP")


def environment(record):
    # one thread per rank: two ranks already fill two cores
    return {**os.environ, "ECHO_DDP_RECORD": str(record), "ECHO_OPS": "native", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(REPO)}


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def check_finished(results):
    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]


def records(folder, name):
    path = Path(folder) / name
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def valid_losses(version):
    with open(version / "metrics.csv", newline="") as handle:
        return [float(row["valid_loss"]) for row in csv.DictReader(handle) if row.get("valid_loss")]


def test_ddp_two_processes_train_save_once_draw_apart_and_resume(synth_dataset, tmp_path):
    logs, first, second = tmp_path / "logs", tmp_path / "record1", tmp_path / "record2"
    first.mkdir()
    second.mkdir()
    common = ["--base_dir", str(synth_dataset), "--log_dir", str(logs), *ARGS]

    # 1. Lightning's launcher starts the second process itself
    run = subprocess.run([sys.executable, str(RUNNER), *common, "--devices", "2", "--max_steps", str(FIRST_STEPS)],
                         cwd=REPO, env=environment(first), capture_output=True, text=True, timeout=TIMEOUT_S)
    check_finished([run])
    ranks = {rank: records(first, f"rank{rank}.jsonl") for rank in (0, 1)}
    for rank, steps in ranks.items():
        assert [s["step"] for s in steps] == list(range(FIRST_STEPS)), rank
        assert all(s["world"] == 2 and s["rank"] == rank for s in steps)
        assert all(math.isfinite(s["loss"]) for s in steps)
    # the ranks draw their own Gaussian noise and their own re-mixup partners at every step
    for mine, other in zip(ranks[0], ranks[1]):
        assert mine["noise"] != other["noise"] and mine["foreign"] != other["foreign"], mine["step"]
    assert [s["partners"] for s in ranks[0]] != [s["partners"] for s in ranks[1]]

    # falling loss: validation redraws the same noise at every epoch, so only the weights change it
    versions = sorted(logs.glob("echo/version_*"))
    assert [v.name for v in versions] == ["version_0"]  # one run folder: rank 1 writes no logs of its own
    losses = valid_losses(versions[0])
    assert len(losses) == FIRST_STEPS // STEPS_PER_EPOCH
    assert all(later < earlier for earlier, later in zip(losses, losses[1:])), losses

    # checkpoints come from rank 0 only, and one last.ckpt holds the final step
    saves = records(first, "saves.jsonl")
    assert saves and {s["rank"] for s in saves} == {0} and len({s["pid"] for s in saves}) == 1
    checkpoints = versions[0] / "checkpoints"
    names = sorted(p.name for p in checkpoints.iterdir())
    assert "last.ckpt" in names and all(n.endswith(".ckpt") for n in names), names
    last = checkpoints / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == FIRST_STEPS

    # 2. resumed as two nodes of one process each, as torchrun starts them on two machines
    port = free_port()
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
         "--node_rank", str(node), "--master_addr", "127.0.0.1", "--master_port", str(port),
         str(RUNNER), *common, "--devices", "1", "--num_nodes", "2", "--max_steps", str(RESUMED_STEPS),
         "--ckpt", str(last)],
        cwd=REPO, env=environment(second), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for node in (0, 1)]
    results = []
    for node in nodes:
        try:
            out, err = node.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            for other in nodes:
                other.kill()
            raise
        results.append(subprocess.CompletedProcess(node.args, node.returncode, out, err))
    check_finished(results)
    for rank in (0, 1):
        steps = records(second, f"rank{rank}.jsonl")
        assert [s["step"] for s in steps] == list(range(FIRST_STEPS, RESUMED_STEPS)), rank  # continues at step 6
        assert all(s["world"] == 2 and math.isfinite(s["loss"]) for s in steps)
    # the resumed ranks draw what the uninterrupted run draws at the same steps: each got its own
    # noise bank back from the checkpoint, not rank 0's
    third, reference_logs = tmp_path / "record3", tmp_path / "reference"
    third.mkdir()
    reference = ["--base_dir", str(synth_dataset), "--log_dir", str(reference_logs), *ARGS]
    run = subprocess.run([sys.executable, str(RUNNER), *reference, "--devices", "2", "--max_steps", str(RESUMED_STEPS)],
                         cwd=REPO, env=environment(third), capture_output=True, text=True, timeout=TIMEOUT_S)
    check_finished([run])
    for rank in (0, 1):
        uninterrupted = records(third, f"rank{rank}.jsonl")[FIRST_STEPS:]
        resumed_draws = records(second, f"rank{rank}.jsonl")
        assert [(s["foreign"], s["partners"]) for s in resumed_draws] == \
            [(s["foreign"], s["partners"]) for s in uninterrupted], rank
    resumed = sorted(logs.glob("echo/version_*"))[-1]
    assert resumed.name == "version_1"
    assert torch.load(resumed / "checkpoints" / "last.ckpt", map_location="cpu",
                      weights_only=True)["global_step"] == RESUMED_STEPS
    assert valid_losses(resumed)[-1] < losses[-1]
    assert {s["rank"] for s in records(second, "saves.jsonl")} == {0}
