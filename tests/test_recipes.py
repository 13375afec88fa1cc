"""The real-data training set of echo.recipes.real_data, built from ../shared/data (skipped
without it): the test and listening sets are never read, the decoupled noises are exact, and
valid/test hold speakers and noise recordings that training never saw."""
import csv

import numpy as np
import soundfile as sf

from conftest import SHARED_DATA, shared_data
from echo.recipes import real_data


def test_real_data_set_keeps_the_test_sets_out(tmp_path):
    shared_data("speech")
    rows = real_data.build(SHARED_DATA, tmp_path / "mix", n_train=24, n_valid=6, n_test=6, segment_seconds=1.0,
                           seed=0, workers=1, log=lambda text: None)
    assert len(rows) == 36
    sources = tmp_path / "mix_sources"
    staged = [p.resolve() for p in (sources / "speech").iterdir()] + [p.resolve() for p in (sources / "noise").iterdir()]
    for never in real_data.NEVER_READ:
        assert not any(str(SHARED_DATA / never) in str(p) for p in staged), never
    # the decoupled noise of a training pair is noisy - clean, sample for sample
    noise, sr = sf.read(sources / "noise" / "vbdmd_train_sample_p287_001.wav", dtype="float32")
    clean, _ = sf.read(SHARED_DATA / "vbdmd_train_sample" / "clean" / "p287_001.wav", dtype="float32")
    noisy, _ = sf.read(SHARED_DATA / "vbdmd_train_sample" / "noisy" / "p287_001.wav", dtype="float32")
    assert sr == 16000 and np.allclose(noise, noisy - clean, atol=1e-6)
    with open(tmp_path / "mix" / "manifest.csv") as f:
        manifest = list(csv.DictReader(f))
    by_split = {split: [r for r in manifest if r["split"] == split] for split in ("train", "valid", "test")}
    train_speakers = {r["speaker"] for r in by_split["train"]}
    train_noises = {r["noise"] for r in by_split["train"]}
    for split in ("valid", "test"):
        assert not {r["speaker"] for r in by_split[split]} & train_speakers
        assert not {r["noise"] for r in by_split[split]} & train_noises


# ---------------------------------------------------------------- the shipped model's recipe

import json  # noqa: E402

import pytest  # noqa: E402

import torch  # noqa: E402

from echo.recipes import cpu_small  # noqa: E402


def test_cpu_small_data_holds_babble_of_held_apart_speakers(tmp_path):
    shared_data("speech")
    rows = cpu_small.build_data(SHARED_DATA, tmp_path / "data", n_train=30, n_valid=6, n_test=6, workers=1,
                                log=lambda text: None)
    assert len(rows) == 42
    sources = tmp_path / "data_sources"
    held_apart = {(SHARED_DATA / cpu_small.BABBLE_CORPUS / rel).resolve()
                  for rel in cpu_small.babble_speakers(SHARED_DATA, 0)}
    speech = {p.resolve() for p in (sources / "speech").iterdir()}
    assert len(held_apart) == cpu_small.BABBLE_SPEAKERS and not held_apart & speech
    for never in real_data.NEVER_READ:
        assert not any(str(SHARED_DATA / never) in str(p) for p in speech)
    generated = sorted(p.name for p in (sources / "noise").glob("generated_*.wav"))
    assert len(generated) == cpu_small.N_BABBLE + cpu_small.N_SPEECH_SHAPED + 3 * cpu_small.N_PER_COLOUR
    assert {"generated_babble_00.wav", "generated_speech_shaped_00.wav", "generated_pink_00.wav"} <= set(generated)
    gains = np.array([float(r["gain"]) for r in rows])
    assert gains.min() < 10 ** (-10 / 20) and gains.max() <= 10 ** (cpu_small.GAIN_RANGE[1] / 20) + 1e-6


def _checkpoint(path, seconds, optimizer=True):
    ckpt = {"state_dict": {}, "hyper_parameters": {}, "callbacks": {"TrainingClock": {"seconds": seconds}}}
    if optimizer:
        ckpt["optimizer_states"] = []
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path


def test_cpu_small_budget_counts_every_run_of_the_recipe(tmp_path, monkeypatch):
    """A killed run resumes from its newest last.ckpt with what is left of the budget; time the
    starting model had trained before is not charged to this recipe."""
    start = _checkpoint(tmp_path / "earlier.ckpt", 2520.0)
    out = tmp_path / "run"
    out.mkdir()
    ckpt, left = cpu_small.plan_training(out, 5400.0, start)
    assert ckpt == start and left == 5400.0
    assert json.loads((out / "budget.json").read_text())["start_seconds"] == 2520.0
    last = _checkpoint(out / "logs" / "echo" / "version_0" / "checkpoints" / "last.ckpt", 2520.0 + 1800.0)
    _checkpoint(out / "logs" / "echo" / "version_1" / "checkpoints" / "last.ckpt", 2520.0 + 3000.0)
    ckpt, left = cpu_small.plan_training(out, 5400.0, start)
    assert ckpt.parent.parent.name == "version_1" and left == pytest.approx(2400.0)
    assert last.exists()

    calls = []
    monkeypatch.setattr(cpu_small.subprocess, "call", lambda command, env: calls.append((command, env)) or 0)
    args = cpu_small.build_parser().parse_args(["--out_dir", str(out), "--init_ckpt", str(start), "--threads", "1"])
    assert cpu_small.train(args, ["--base_dir", str(out / "data")]) == 0
    command, env = calls[0]
    assert command[command.index("--max_time") + 1] == "00:00:40:00"
    assert command[command.index("--ckpt") + 1].endswith("version_1/checkpoints/last.ckpt")
    assert env["OMP_NUM_THREADS"] == "1" and "--progress_every" in command

    _checkpoint(out / "logs" / "echo" / "version_2" / "checkpoints" / "last.ckpt", 2520.0 + 5390.0)
    assert cpu_small.train(args, ["--base_dir", str(out / "data")]) == 0 and len(calls) == 1  # spent: nothing more to do


def test_cpu_small_continues_a_shipped_model_from_its_weights(tmp_path, monkeypatch):
    shipped = _checkpoint(tmp_path / "shipped.ckpt", 0.0, optimizer=False)
    calls = []
    monkeypatch.setattr(cpu_small.subprocess, "call", lambda command, env: calls.append(command) or 0)
    args = cpu_small.build_parser().parse_args(["--out_dir", str(tmp_path / "run"), "--init_ckpt", str(shipped)])
    (tmp_path / "run").mkdir()
    cpu_small.train(args, ["--base_dir", str(tmp_path / "run" / "data")])
    assert calls[0][calls[0].index("--init_weights") + 1] == str(shipped) and "--ckpt" not in calls[0]


def test_cpu_mix_trains_on_the_fly_from_all_speech_and_says_its_precision(tmp_path, monkeypatch, capsys):
    from echo.recipes import cpu_mix
    shared_data("speech")
    calls = []
    monkeypatch.setattr(cpu_small.subprocess, "call", lambda command, env: calls.append((command, env)) or 0)
    monkeypatch.setattr(cpu_mix, "training_precision", lambda: ("32-true", "no bf16 units here"))
    shipped = _checkpoint(tmp_path / "shipped.ckpt", 100.0, optimizer=False)
    out = tmp_path / "run"
    assert cpu_mix.main(["--out_dir", str(out), "--data_root", str(SHARED_DATA), "--init_ckpt", str(shipped),
                         "--threads", "1", "--reverb_prob", "0.25", "--lr_decay_steps", "3000"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "precision: 32-true (no bf16 units here)"
    command, env = calls[0]
    assert command[command.index("--precision") + 1] == "32-true" and env["OMP_NUM_THREADS"] == "1"
    assert command[command.index("--reverb_prob") + 1] == "0.25" and "--base_dir" not in command
    # the cool-down reaches train.py, at the shipped model's learning rate; each flag given once
    assert command[command.index("--lr_decay_steps") + 1] == "3000" and command.count("--lr") == 1
    assert float(command[command.index("--lr") + 1]) == cpu_mix.LR
    # the shipped model's crops unless asked otherwise
    assert command[command.index("--num_frames") + 1] == "64" and command[command.index("--batch_size") + 1] == "4"
    speech = out / "sources" / "speech"
    assert command[command.index("--speech_dir") + 1] == str(speech)
    assert command[command.index("--init_weights") + 1] == str(shipped)
    # every speech corpus, each under its own folder (the speaker groups), the babble speakers left out
    corpora = sorted(p.name for p in (SHARED_DATA / "speech").iterdir() if p.is_dir())
    assert sorted(p.name for p in speech.iterdir()) == corpora
    babble = {rel for rel in cpu_small.babble_speakers(SHARED_DATA, 0)}
    staged = {p.name for p in (speech / "librispeech_train-clean-100").iterdir()}
    assert staged and not staged & babble
    staged_all = [p.resolve() for p in speech.rglob("*") if p.is_file()]
    staged_all += [p.resolve() for p in (out / "sources" / "noise").iterdir()]
    for never in real_data.NEVER_READ:
        assert not any(str(SHARED_DATA / never) in str(p) for p in staged_all), never


def test_cpu_mix_trains_the_predictive_twin_from_random_weights_only(tmp_path, monkeypatch, capsys):
    from echo.recipes import cpu_mix
    shared_data("speech")
    calls = []
    monkeypatch.setattr(cpu_small.subprocess, "call", lambda command, env: calls.append(command) or 0)
    monkeypatch.setattr(cpu_mix, "training_precision", lambda: ("32-true", "no bf16 units here"))
    shipped = _checkpoint(tmp_path / "shipped.ckpt", 100.0, optimizer=False)
    # from the shipped ECHO weights train.py would take the checkpoint's SDE: refused before any work
    assert cpu_mix.main(["--out_dir", str(tmp_path / "a"), "--data_root", str(SHARED_DATA), "--sde", "predictive",
                         "--init_ckpt", str(shipped)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--init_ckpt none" in err and not calls and not (tmp_path / "a").exists()
    assert cpu_mix.main(["--out_dir", str(tmp_path / "b"), "--data_root", str(SHARED_DATA), "--sde", "predictive",
                         "--init_ckpt", "none"]) == 0
    command = calls[0]
    assert command[command.index("--sde") + 1] == "predictive" and "--init_weights" not in command


def test_cpu_mix_continuation_draws_new_mixtures_and_a_resume_the_same(tmp_path, monkeypatch, capsys):
    """Every stage counts its steps from 0, so with --seed alone a continuation would replay the
    mixtures of the stage before it: the mixtures' seed is the starting model's step count, kept
    for the run's resumes."""
    from echo.recipes import cpu_mix
    shared_data("speech")
    calls = []
    monkeypatch.setattr(cpu_small.subprocess, "call", lambda command, env: calls.append(command) or 0)
    monkeypatch.setattr(cpu_mix, "training_precision", lambda: ("32-true", "no bf16 units here"))
    shipped = tmp_path / "shipped.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}, "training": {"steps": 24077, "seconds": 36000.0}}, shipped)
    later = tmp_path / "later.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}, "training": {"steps": 30000, "seconds": 42000.0}}, later)
    base = ["--data_root", str(SHARED_DATA)]
    run = ["--out_dir", str(tmp_path / "run"), *base]
    assert cpu_mix.main([*run, "--init_ckpt", str(shipped)]) == 0
    assert calls[-1][calls[-1].index("--mix_seed") + 1] == "24077" and calls[-1].count("--mix_seed") == 1
    assert "mixtures: --mix_seed 24077" in capsys.readouterr().out
    # the same run started again (a resume) keeps its mixtures whatever the starting file holds now
    assert cpu_mix.main([*run, "--init_ckpt", str(later)]) == 0
    assert calls[-1][calls[-1].index("--mix_seed") + 1] == "24077"
    assert cpu_mix.main([*run, "--init_ckpt", str(shipped), "--mix_seed", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "was started with --mix_seed 24077" in err
    # a new run from the later model draws anew; from random weights, --seed decides
    assert cpu_mix.main(["--out_dir", str(tmp_path / "next"), *base, "--init_ckpt", str(later)]) == 0
    assert calls[-1][calls[-1].index("--mix_seed") + 1] == "30000"
    assert cpu_mix.main(["--out_dir", str(tmp_path / "twin"), *base, "--init_ckpt", "none", "--sde", "predictive",
                         "--seed", "7"]) == 0
    assert calls[-1][calls[-1].index("--mix_seed") + 1] == "7"


def test_cpu_mix_trades_crop_length_against_batch_size(tmp_path, monkeypatch):
    from echo.recipes import cpu_mix
    shared_data("speech")
    calls = []
    monkeypatch.setattr(cpu_small.subprocess, "call", lambda command, env: calls.append(command) or 0)
    monkeypatch.setattr(cpu_mix, "training_precision", lambda: ("32-true", "no bf16 units here"))
    shipped = _checkpoint(tmp_path / "shipped.ckpt", 100.0, optimizer=False)
    assert cpu_mix.main(["--out_dir", str(tmp_path / "run"), "--data_root", str(SHARED_DATA), "--init_ckpt",
                         str(shipped), "--num_frames", "128", "--batch_size", "2"]) == 0
    command = calls[0]
    # each given once, so that no earlier value can silently win
    assert command.count("--num_frames") == 1 and command[command.index("--num_frames") + 1] == "128"
    assert command.count("--batch_size") == 1 and command[command.index("--batch_size") + 1] == "2"
    assert command[command.index("--nf") + 1] == "32"
