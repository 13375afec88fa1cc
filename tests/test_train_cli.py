import csv
import math
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO, TINY_ARGS

import train

FAST = ["--accelerator", "cpu", "--batch_size", "2", "--num_frames", "16", "--num_workers", "0",
        "--logger", "csv", "--log_every_n_steps", "1", *TINY_ARGS]


def run_train(base_dir, log_dir, *extra):
    if "--num_eval_files" not in extra:
        extra = ("--num_eval_files", "0", *extra)
    train.main(["--base_dir", str(base_dir), "--log_dir", str(log_dir), *FAST, *extra])
    return sorted(log_dir.glob("echo/version_*/checkpoints/last.ckpt"))[-1]


def train_losses(log_dir):
    rows = []
    for path in sorted(log_dir.glob("echo/version_*/metrics.csv")):
        with open(path) as f:
            rows += [float(r["train_loss_step"]) for r in csv.DictReader(f) if r.get("train_loss_step")]
    return rows


def test_train_writes_last_ckpt_and_resumes(synth_dataset, tmp_path):
    last = run_train(synth_dataset, tmp_path, "--max_steps", "3", "--seed", "1")
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == 3
    assert "noise_bank" in ckpt and ckpt["noise_bank"]["noise"].shape[0] == 6
    assert "current_model_state" in ckpt  # EMA weights in state_dict, training weights beside them
    losses = train_losses(tmp_path)
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)

    resumed = run_train(synth_dataset, tmp_path, "--max_steps", "5", "--seed", "1", "--ckpt", str(last))
    assert torch.load(resumed, weights_only=True)["global_step"] == 5


def test_last_ckpt_follows_every_epoch_when_the_validation_loss_stops_improving(synth_dataset, tmp_path,
                                                                               monkeypatch):
    """With --lr 0 the weights, and so the validation loss, never change: Lightning's own callback
    writes a best checkpoint after the first epoch only; without train.py's own "last" checkpoint
    callback last.ckpt would stay at that epoch, so a run killed later would lose every epoch since."""
    from lightning.pytorch import Trainer
    writes = []  # (epoch, global step, file name) of every checkpoint written
    real_save = Trainer.save_checkpoint

    def spy(trainer, path, *args, **kwargs):
        writes.append((trainer.current_epoch, trainer.global_step, os.path.basename(path)))
        return real_save(trainer, path, *args, **kwargs)

    monkeypatch.setattr(Trainer, "save_checkpoint", spy)
    run_train(synth_dataset, tmp_path, "--max_epochs", "3", "--lr", "0", "--seed", "1")
    best = [w for w in writes if w[2].startswith("best-loss")]
    assert [w[0] for w in best] == [0]  # the loss did not improve after the first epoch
    steps_per_epoch = best[0][1]
    last = sorted({(epoch, step) for epoch, step, name in writes if name == "last.ckpt"})
    assert last == [(epoch, (epoch + 1) * steps_per_epoch) for epoch in range(3)]


def test_resume_with_other_architecture_is_refused(synth_dataset, tmp_path):
    last = run_train(synth_dataset, tmp_path, "--max_steps", "1")
    with pytest.raises(Exception, match="nf=32"):
        train.main(["--base_dir", str(synth_dataset), "--log_dir", str(tmp_path), *FAST, "--nf", "32",
                    "--max_steps", "2", "--ckpt", str(last)])


def test_help_lists_every_flag_with_a_help_text():
    parser = train.build_parser([])
    for action in parser._actions:
        assert action.help, f"{action.option_strings} has no help text"
    out = subprocess.run([sys.executable, "train.py", "--help"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0
    for flag in ("--base_dir", "--log_dir", "--ckpt", "--nf", "--ch_mult", "--num_res_blocks",
                 "--attn_resolutions", "--remix", "--noise_bank_size", "--no-deform", "--seed",
                 "--accumulate_grad_batches", "--precision", "--strategy"):
        assert flag in out.stdout


def test_bad_data_gives_one_line_error(tmp_path):
    out = subprocess.run([sys.executable, "train.py", "--base_dir", str(tmp_path / "missing"), *FAST],
                         cwd=REPO, capture_output=True, text=True)
    assert out.returncode != 0
    assert out.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in out.stderr


def test_validation_scores_speech_and_draws_spectrograms(synth_dataset, tmp_path):
    run_train(synth_dataset, tmp_path, "--max_steps", "4", "--num_eval_files", "1", "--N", "1")  # one epoch
    version = sorted(tmp_path.glob("echo/version_*"))[-1]
    with open(version / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"pesq", "estoi", "si_sdr"} <= set(rows[0])
    assert any(r["si_sdr"] for r in rows)
    assert list((version / "figures").glob("spectrograms_step*.png"))
    assert list((version / "checkpoints").glob("best-pesq-*.ckpt"))


def test_max_time_is_the_budget_of_the_resumed_run(synth_dataset, tmp_path):
    """A checkpoint whose run already used more than --max_time: the resumed run still trains
    (Lightning's own timer would restore the spent time and stop before the first step)."""
    last = run_train(synth_dataset, tmp_path, "--max_steps", "3", "--max_time", "00:01:00:00")
    ckpt = torch.load(last, weights_only=True)
    timers = [key for key in ckpt["callbacks"] if "Timer" in key]
    assert timers
    for key in timers:
        ckpt["callbacks"][key] = {"time_elapsed": {"train": 7200.0, "sanity_check": 0.0, "validate": 0.0,
                                                   "test": 0.0, "predict": 0.0}}
    torch.save(ckpt, last)
    resumed = run_train(synth_dataset, tmp_path, "--max_steps", "5", "--max_time", "00:01:00:00", "--ckpt", str(last))
    assert torch.load(resumed, weights_only=True)["global_step"] == 5


def test_bad_max_time_is_one_line(tmp_path):
    out = subprocess.run([sys.executable, "train.py", "--base_dir", str(tmp_path), "--max_time", "30min"],
                         cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 2 and "--max_time 30min" in out.stderr and "Traceback" not in out.stderr


def test_lr_decay_falls_linearly_to_lr_min_and_a_resume_continues_the_fall(synth_dataset, tmp_path, monkeypatch):
    """--lr_decay_steps: the Adam step k uses lr + (lr_min - lr) * min(k, decay) / decay; a run
    resumed from last.ckpt takes the scheduler's place from the checkpoint, not from zero."""
    used = []  # learning rate of every optimizer step, as Adam read it
    real_step = torch.optim.Adam.step

    def spy(optimizer, *args, **kwargs):
        used.append(optimizer.param_groups[0]["lr"])
        return real_step(optimizer, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    flags = ("--lr", "1e-3", "--lr_decay_steps", "4", "--lr_min", "2e-4", "--seed", "1")
    last = run_train(synth_dataset, tmp_path / "a", "--max_steps", "3", *flags)
    run_train(synth_dataset, tmp_path / "a", "--max_steps", "6", "--ckpt", str(last), *flags)
    expected = [1e-3, 8e-4, 6e-4, 4e-4, 2e-4, 2e-4]
    assert used == pytest.approx(expected)


def test_lr_decay_refuses_a_floor_above_the_rate():
    from echo.model import ScoreModel
    with pytest.raises(ValueError, match="lr_min"):
        ScoreModel(lr=1e-4, lr_decay_steps=10, lr_min=1e-3)


def test_a_floor_above_the_rate_is_one_line_from_train_py(synth_dataset, tmp_path):
    out = subprocess.run([sys.executable, "train.py", "--base_dir", str(synth_dataset), "--log_dir", str(tmp_path),
                          "--lr", "1e-4", "--lr_decay_steps", "10", "--lr_min", "1e-3", *TINY_ARGS],
                         cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 2 and "lr_min" in out.stderr and "Traceback" not in out.stderr
    assert not list(tmp_path.iterdir())  # stopped before any log or checkpoint


@pytest.mark.parametrize("flags, expected", [
    (["--num_frames", "0"], "--num_frames 0: must be at least 1"),
    (["--num_frames", "12"], "--num_frames 12: must be a multiple of 8"),  # the tiny network has 4 levels
    (["--batch_size", "0"], "--batch_size 0: must be at least 1"),
])
def test_crops_the_network_cannot_take_are_one_line_from_train_py(flags, expected, synth_dataset, tmp_path):
    out = subprocess.run([sys.executable, "train.py", "--base_dir", str(synth_dataset), "--log_dir", str(tmp_path),
                          "--num_workers", "0", *TINY_ARGS, *flags], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith(f"train.py: error: {expected}")
    assert not list(tmp_path.iterdir())
