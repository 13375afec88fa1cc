"""The shipped model: exporting a training checkpoint, enhancement.py's default model and its
sampler, continuing training from shipped weights, the training clock behind the model card, and
the shipped file itself on real recordings."""
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

import enhancement
import train
from conftest import REPO, shared_data
from echo import pretrained
from echo.checkpoints import load_model
from echo.util.metrics import si_sdr
from test_train_cli import FAST, run_train


@pytest.fixture(scope="module")
def trained(synth_dataset, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("run")
    return run_train(synth_dataset, log_dir, "--max_steps", "2", "--progress_every", "1")


def test_progress_lines_and_clock_add_up_over_resumes(synth_dataset, tmp_path, capsys):
    last = run_train(synth_dataset, tmp_path, "--max_steps", "2", "--progress_every", "1")
    out = capsys.readouterr().out
    assert "step 1 | trained 0:00:" in out and "step 2 |" in out and "train_loss" in out
    ckpt = torch.load(last, weights_only=True)
    assert 0 < ckpt["callbacks"]["TrainingClock"]["seconds"] < 600
    ckpt["callbacks"]["TrainingClock"]["seconds"] = 3600.0  # as if the first run had trained an hour
    torch.save(ckpt, last)
    resumed = run_train(synth_dataset, tmp_path, "--max_steps", "3", "--ckpt", str(last))
    assert 3600.0 < torch.load(resumed, weights_only=True)["callbacks"]["TrainingClock"]["seconds"] < 4200.0


def test_export_keeps_what_enhancement_needs(trained, tmp_path):
    info = pretrained.export(trained, tmp_path / "shipped.ckpt", "ddim", 2)
    shipped = torch.load(tmp_path / "shipped.ckpt", weights_only=True)
    full = torch.load(trained, weights_only=True)
    assert "optimizer_states" not in shipped and "noise_bank" not in shipped
    assert shipped["training"]["steps"] == 2 and info["steps"] == 2 and info["sha256"] == pretrained.sha256(tmp_path / "shipped.ckpt")
    assert info["bytes"] < 0.5 * trained.stat().st_size
    for key, value in full["state_dict"].items():  # the EMA weights, bit for bit
        assert torch.equal(shipped["state_dict"][key], value)
    model = load_model(tmp_path / "shipped.ckpt")
    assert model.shipped_sampler == {"predictor": "ddim", "N": 2}
    again = pretrained.export(trained, tmp_path / "next.ckpt", "ddim", 1, previous=tmp_path / "shipped.ckpt")
    assert again["steps"] == 4 and again["seconds"] == info["seconds"]  # the clock already counts all hours
    pretrained.export(trained, tmp_path / "averaged.ckpt", "ddim", 1, draws=2)
    assert load_model(tmp_path / "averaged.ckpt").shipped_sampler == {"predictor": "ddim", "N": 1, "draws": 2}


def test_enhancement_uses_the_shipped_model_when_no_ckpt_is_given(trained, synth_dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pretrained, "DEFAULT_MODEL", tmp_path / "echo_cpu_small.ckpt")
    pretrained.export(trained, pretrained.DEFAULT_MODEL, "ddim", 2)
    out_dir = tmp_path / "enhanced"
    assert enhancement.main(["--test_dir", str(synth_dataset / "test" / "noisy"), "--enhanced_dir", str(out_dir)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("model: echo_cpu_small.ckpt, the shipped CPU model") and "not the paper's" in first
    info = json.loads((out_dir / "run_info.json").read_text())
    assert info["sampler"]["predictor"] == "ddim" and info["sampler"]["N"] == 2
    # flags still win over the shipped sampler
    assert enhancement.main(["--test_dir", str(synth_dataset / "test" / "noisy"), "--enhanced_dir",
                             str(tmp_path / "n1"), "--N", "1"]) == 0
    assert json.loads((tmp_path / "n1" / "run_info.json").read_text())["sampler"]["N"] == 1


def test_missing_shipped_model_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pretrained, "DEFAULT_MODEL", tmp_path / "gone.ckpt")
    assert enhancement.main(["--test_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "gone.ckpt" in err[0] and "shipped model is missing" in err[0]


def test_training_continues_from_shipped_weights(trained, synth_dataset, tmp_path):
    shipped = tmp_path / "shipped.ckpt"
    pretrained.export(trained, shipped, "ddim", 1)
    log_dir = tmp_path / "more"
    # lr 0: the step changes nothing, so the new run's training weights are the shipped weights
    last = run_train(synth_dataset, log_dir, "--max_steps", "1", "--lr", "0", "--init_weights", str(shipped),
                     "--nf", "32")  # network flags are taken from the shipped file
    ckpt = torch.load(last, weights_only=True)
    weights = torch.load(shipped, weights_only=True)["state_dict"]
    for key, value in ckpt["current_model_state"].items():
        assert torch.equal(value, weights[key]), key
    assert ckpt["hyper_parameters"]["nf"] == 16
    assert ckpt["callbacks"]["TrainingClock"]["seconds"] >= torch.load(shipped, weights_only=True)["training"]["seconds"]
    out = subprocess.run([sys.executable, "train.py", "--base_dir", str(synth_dataset), "--log_dir", str(tmp_path / "x"),
                          *FAST, "--init_weights", str(shipped), "--ckpt", str(trained)],
                         cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 1 and out.stderr.strip().splitlines()[-1].startswith("error: give --ckpt")


def test_shipped_model_enhances_real_recordings(tmp_path):
    """The file in pretrained/ itself, with enhancement.py's defaults, on two VoiceBank-DEMAND
    test recordings: SI-SDR rises over the noisy input."""
    test_set = shared_data("vbdmd_test")
    assert pretrained.DEFAULT_MODEL.is_file(), "the shipped model is part of the repository"
    noisy_dir = tmp_path / "noisy"
    noisy_dir.mkdir()
    names = ["p232_013.wav", "p232_113.wav"]
    for name in names:
        (noisy_dir / name).symlink_to(test_set / "noisy" / name)
    out = subprocess.run([sys.executable, "enhancement.py", "--test_dir", str(noisy_dir), "--enhanced_dir",
                          str(tmp_path / "enhanced")], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].startswith("model: echo_cpu_small.ckpt")
    for name in names:
        clean, _ = sf.read(test_set / "clean" / name, dtype="float32")
        noisy, _ = sf.read(noisy_dir / name, dtype="float32")
        enhanced, _ = sf.read(tmp_path / "enhanced" / name, dtype="float32")
        # gains of the 30,677-step model (two draws) measured over --seed 0-4, on one and on two
        # threads: 6.90-7.10 dB (p232_013), 8.32-8.54 dB (p232_113)
        assert si_sdr(clean, enhanced) > si_sdr(clean, noisy) + 3.0, name
        assert np.abs(enhanced).max() < 1.0


def test_clock_of_a_checkpoint_from_before_the_clock_starts_at_its_timer():
    from echo.training_clock import TrainingClock
    old = {"callbacks": {"RunTimer": {"time_elapsed": {"train": 2520.0, "validate": 30.0}}}}
    clock = TrainingClock()
    clock.on_load_checkpoint(None, None, old)
    assert clock.total_seconds() == 2520.0
    clock.on_load_checkpoint(None, None, {"callbacks": {"TrainingClock": {"seconds": 7450.0}, **old["callbacks"]}})
    assert clock.total_seconds() == 7450.0
