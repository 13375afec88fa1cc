"""Interrupted and resumed work, and checkpoints that are safe to load.

Training: every random number of a step comes from (seed, rank, step, batch), the data order
from (seed, epoch) and a crop from (seed, epoch, file); a run resumed from a checkpoint taken at
the end of an epoch therefore repeats the uninterrupted run: on the CPU bit for bit, and the
tests allow a relative difference of 1e-5 in the losses. A non-finite loss skips its step; too
many in a row stop the run with one line. ``--ckpt`` files are read with weights_only before
Lightning sees them.

Enhancement: killed at any moment (SIGINT, SIGTERM, SIGKILL), it leaves only complete files,
and the next run removes what a SIGKILL left behind and finishes the rest, with the same
samples an uninterrupted run gives.
"""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import enhancement
import train
from audio_cases import audio_files_below, partial_files_below, save_audible_checkpoint, write_plain
from conftest import REPO, TINY_ARGS, TINY_BACKBONE
from echo.checkpoints import CheckpointError
from echo.data_module import EpochSampler, SpecsDataModule
from echo.model import NonFiniteLossError, ScoreModel

RESUME_RTOL = 1e-5  # measured: 0 on the CPU (bit-identical); the margin covers other BLAS builds
STEPS_PER_EPOCH = 4  # synth_dataset: 8 training pairs, batch 2
FAST = ["--accelerator", "cpu", "--batch_size", "2", "--num_frames", "16", "--num_workers", "0",
        "--logger", "csv", "--log_every_n_steps", "1", "--num_eval_files", "0", "--seed", "7", *TINY_ARGS]


def run_train(base_dir, log_dir, *extra):
    train.main(["--base_dir", str(base_dir), "--log_dir", str(log_dir), *FAST, *extra])
    return newest_version(log_dir)


def newest_version(log_dir):
    return max(Path(log_dir).glob("echo/version_*"), key=lambda p: int(p.name.split("_")[1]))


def train_losses(log_dir):
    """train_loss_step values in the order they were logged, over all runs in ``log_dir``.
    (Compared by position: after a resume Lightning logs them one step number later.)"""
    losses = []
    for version in sorted(Path(log_dir).glob("echo/version_*"), key=lambda p: int(p.name.split("_")[1])):
        if not (version / "metrics.csv").exists():  # a run killed before its first flush
            continue
        with open(version / "metrics.csv", newline="") as handle:
            losses += [float(row["train_loss_step"]) for row in csv.DictReader(handle) if row.get("train_loss_step")]
    return losses


def load(path):
    return torch.load(path, weights_only=True)


def assert_same_tensors(a, b, rtol=0.0):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=rtol, atol=0.0, msg=name)


def assert_same_training_state(a, b):
    """Same step, EMA weights, training weights and noise bank."""
    assert a["global_step"] == b["global_step"]
    assert_same_tensors(a["state_dict"], b["state_dict"])
    assert_same_tensors(a["current_model_state"], b["current_model_state"])
    assert a["noise_bank"]["next"] == b["noise_bank"]["next"]
    torch.testing.assert_close(a["noise_bank"]["noise"], b["noise_bank"]["noise"], rtol=0.0, atol=0.0)


# ============================================================================================
# training: resume equivalence
# ============================================================================================

@pytest.mark.parametrize("accumulate", [1, 2])
def test_resume_at_an_epoch_end_repeats_the_uninterrupted_run(synth_dataset, tmp_path, monkeypatch, accumulate):
    """With --accumulate_grad_batches 2 an epoch is two optimizer steps of two batches each; the
    micro-batches of a step draw by their batch index, so a resumed run repeats those too."""
    steps = STEPS_PER_EPOCH // accumulate  # optimizer steps per epoch
    flags = ["--accumulate_grad_batches", str(accumulate)]
    whole = run_train(synth_dataset, tmp_path / "whole", "--max_steps", str(2 * steps), *flags)
    batches = []
    real_step = ScoreModel.training_step
    monkeypatch.setattr(ScoreModel, "training_step", lambda self, batch, i: batches.append(i) or real_step(self, batch, i))
    first = run_train(synth_dataset, tmp_path / "split", "--max_steps", str(steps), *flags)
    monkeypatch.undo()
    last = first / "checkpoints" / "last.ckpt"
    assert load(last)["global_step"] == steps and batches == list(range(STEPS_PER_EPOCH))  # one whole epoch
    second = run_train(synth_dataset, tmp_path / "split", "--max_steps", str(2 * steps), "--ckpt", str(last), *flags)

    expected, resumed = train_losses(tmp_path / "whole"), train_losses(tmp_path / "split")
    assert len(expected) == len(resumed) == 2 * steps
    np.testing.assert_allclose(resumed, expected, rtol=RESUME_RTOL, atol=0.0)
    assert_same_training_state(load(second / "checkpoints" / "last.ckpt"), load(whole / "checkpoints" / "last.ckpt"))

    info = json.loads((second / "run_info.json").read_text())
    assert info["seed"] == 7 and info["resumed_from"] == str(last)
    assert info["versions"]["torch"] == torch.__version__ and info["versions"]["lightning"]
    assert json.loads((whole / "run_info.json").read_text())["resumed_from"] is None


def test_step_randomness_depends_on_seed_and_step_only():
    model = ScoreModel(**TINY_BACKBONE, seed=3)
    model.forward = lambda x_t, y, t: x_t  # the loss then shows the step's draws (t, noise, remix)
    clean = torch.randn(2, 1, 256, 16, dtype=torch.complex64)
    batch = (clean, clean + 0.1 * torch.randn_like(clean))

    def loss(seed, step, batch_idx=0):
        model.seed = seed
        model.noise_bank.clear()
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(ScoreModel, "global_step", property(lambda self: step))
            torch.manual_seed(12345 + step)  # whatever the global state, the step's draws are the same
            return model._step(batch, training=True, generators=model.step_generators("train", batch_idx)).item()

    assert loss(3, 10) == loss(3, 10)
    assert loss(3, 10) != loss(3, 11) and loss(3, 10) != loss(4, 10) and loss(3, 10) != loss(3, 10, batch_idx=1)


def test_data_order_and_crops_depend_on_seed_epoch_and_index(synth_dataset):
    data = SpecsDataModule(base_dir=synth_dataset, num_workers=0, num_frames=16, seed=5)
    data.setup("fit")
    dataset = data.datasets["train"]

    def order(seed, epoch, replicas=1, rank=0):
        sampler = EpochSampler(dataset, num_replicas=replicas, rank=rank, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order(5, 1) == order(5, 1) and order(5, 1) != order(5, 2) and order(5, 1) != order(6, 1)
    assert order(1, 0) != order(0, 1)  # not DistributedSampler's seed + epoch
    halves = [index for rank in (0, 1) for _, index in order(5, 1, replicas=2, rank=rank)]
    assert sorted(halves) == list(range(len(dataset)))  # DDP: disjoint shares that cover the epoch
    assert torch.equal(dataset[(3, 2)][0], dataset[(3, 2)][0])
    assert not torch.equal(dataset[(3, 2)][0], dataset[(4, 2)][0])


# ============================================================================================
# training: non-finite losses and gradient clipping
# ============================================================================================

def nan_items(monkeypatch, bad):
    """Items ``bad(epoch, index)`` come back as NaN spectrograms (an overflow, a broken file)."""
    from echo.data_module import SpecsDataset
    real = SpecsDataset.__getitem__

    def getitem(self, item):
        clean, noisy = real(self, item)
        epoch, index = item if isinstance(item, tuple) else (0, item)
        if self.random_crop and bad(epoch, index):
            noisy = noisy * float("nan")
        return clean, noisy
    monkeypatch.setattr(SpecsDataset, "__getitem__", getitem)


def test_a_non_finite_batch_is_skipped_with_a_warning(synth_dataset, tmp_path, monkeypatch):
    from echo.util.seeding import seeded_generator
    first = int(torch.randperm(2 * STEPS_PER_EPOCH, generator=seeded_generator(7, "order", 0))[0])
    nan_items(monkeypatch, lambda epoch, index: epoch == 0 and index == first)  # in the first batch
    with pytest.warns(UserWarning, match="non-finite loss at step"):
        version = run_train(synth_dataset, tmp_path, "--max_steps", "3")
    ckpt = load(version / "checkpoints" / "last.ckpt")
    # Lightning counts the skipped batch as a step (its optimizer call had no gradients to apply)
    assert ckpt["global_step"] == 3
    assert all(torch.isfinite(value).all() for value in ckpt["state_dict"].values())
    assert all(torch.isfinite(value).all() for value in ckpt["current_model_state"].values())
    assert len(ckpt["noise_bank"]["noise"]) == 4  # the two good batches; the bad one's noise kept out
    assert torch.isfinite(ckpt["noise_bank"]["noise"]).all()
    assert len(train_losses(tmp_path)) == 2 and all(np.isfinite(train_losses(tmp_path)))


@pytest.mark.filterwarnings("ignore:non-finite loss")
def test_consecutive_non_finite_losses_stop_training_with_one_line(synth_dataset, tmp_path, monkeypatch):
    nan_items(monkeypatch, lambda epoch, index: True)
    with pytest.raises(NonFiniteLossError) as caught:
        run_train(synth_dataset, tmp_path, "--max_steps", "5", "--max_bad_steps", "2")
    message = str(caught.value)
    assert "\n" not in message and "2 consecutive non-finite losses" in message and "--gradient_clip_val" in message


class _TrainerBuilt(Exception):
    pass


def test_gradient_clipping_and_sampler_settings_reach_the_trainer(synth_dataset, tmp_path, monkeypatch):
    import lightning.pytorch as pl
    built = {}

    class RecordingTrainer(pl.Trainer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            built.update(kwargs, trainer=self)
            raise _TrainerBuilt  # nothing to train for this test
    monkeypatch.setattr(train.pl, "Trainer", RecordingTrainer)
    with pytest.raises(_TrainerBuilt):
        run_train(synth_dataset, tmp_path, "--gradient_clip_val", "0.5")
    assert built["gradient_clip_val"] == 0.5 and built["trainer"].gradient_clip_val == 0.5
    assert built["use_distributed_sampler"] is False
    assert any(isinstance(plugin, train.AtomicCheckpointIO) for plugin in built["plugins"])


# ============================================================================================
# training: safe checkpoints for --ckpt
# ============================================================================================

class _Payload:
    """Unpickling this object creates a file."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.fixture(scope="module")
def training_ckpt(synth_dataset, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("one-step")
    return run_train(synth_dataset, log_dir, "--max_steps", "1") / "checkpoints" / "last.ckpt"


def test_resume_never_runs_a_pickled_payload(synth_dataset, training_ckpt, tmp_path):
    ckpt = load(training_ckpt)
    marker = tmp_path / "payload-ran"
    ckpt["loops"]["evil"] = _Payload(str(marker))  # a place only Lightning reads
    torch.save(ckpt, tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError, match="refused") as caught:
        run_train(synth_dataset, tmp_path / "logs", "--max_steps", "2", "--ckpt", str(tmp_path / "evil.ckpt"))
    assert "\n" not in str(caught.value) and "evil.ckpt" in str(caught.value)
    assert not marker.exists()


@pytest.mark.parametrize("problem", ["weights_only", "truncated", "missing"])
def test_resume_refuses_unusable_checkpoints_with_one_line(problem, synth_dataset, training_ckpt, tiny_ckpt, tmp_path):
    path = tmp_path / "bad.ckpt"
    if problem == "weights_only":
        path = tiny_ckpt  # what enhancement needs, but no optimizer or loop state
    elif problem == "truncated":
        data = training_ckpt.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError) as caught:
        run_train(synth_dataset, tmp_path / "logs", "--max_steps", "2", "--ckpt", str(path))
    expected = {"weights_only": "no training state", "truncated": "truncated or corrupt",
                "missing": "no such checkpoint file"}[problem]
    assert expected in str(caught.value) and "\n" not in str(caught.value)


def test_resume_cli_prints_one_line_for_a_payload(training_ckpt, synth_dataset, tmp_path):
    ckpt = load(training_ckpt)
    marker = tmp_path / "payload-ran"
    ckpt["hyper_parameters"]["evil"] = _Payload(str(marker))
    torch.save(ckpt, tmp_path / "evil.ckpt")
    done = subprocess.run([sys.executable, "train.py", "--base_dir", str(synth_dataset), "--log_dir",
                           str(tmp_path / "logs"), *FAST, "--ckpt", str(tmp_path / "evil.ckpt")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: ") and "refused" in done.stderr
    assert not marker.exists()


def dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_checkpoint_writes_are_atomic_and_stale_temporaries_are_removed(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    writer = train.AtomicCheckpointIO()
    writer.save_checkpoint({"step": torch.tensor(1)}, path)

    def save_half_then_die(obj, handle):
        handle.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("No space left on device")
    monkeypatch.setattr(train.torch, "save", save_half_then_die)
    with pytest.raises(OSError):
        writer.save_checkpoint({"step": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert load(path)["step"] == 1  # the previous checkpoint, complete
    assert partial_files_below(tmp_path) == []


def test_resume_removes_checkpoint_temporaries_of_a_killed_run(training_ckpt, tmp_path):
    last = tmp_path / "last.ckpt"
    last.write_bytes(training_ckpt.read_bytes())
    stale = tmp_path / f".partial-{dead_pid()}-abc.ckpt"  # what a SIGKILL while saving leaves
    live = tmp_path / f".partial-{os.getpid()}-def.ckpt"  # a save in progress
    stale.write_bytes(b"half a checkpoint")
    live.write_bytes(b"being written")
    train.prepare_resume(last, {"seed": 7})
    assert not stale.exists() and live.exists() and last.exists()


# ============================================================================================
# training: SIGKILL (slow: three training processes)
# ============================================================================================

def train_process(base_dir, log_dir, *extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", ECHO_OPS="native")  # same arithmetic as this process
    return subprocess.Popen([sys.executable, "train.py", "--base_dir", str(base_dir), "--log_dir", str(log_dir),
                             *FAST, *extra], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def wait_for(condition, timeout, process=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if process is not None and process.poll() is not None:
            return condition()
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_training_killed_with_sigkill_resumes_like_the_uninterrupted_run(synth_dataset, tmp_path):
    total = 3 * STEPS_PER_EPOCH
    killed = train_process(synth_dataset, tmp_path / "killed", "--max_steps", str(total))
    last = tmp_path / "killed" / "echo" / "version_0" / "checkpoints" / "last.ckpt"
    assert wait_for(last.exists, timeout=300, process=killed), killed.stderr.read()
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    step = load(last)["global_step"]  # readable whatever the moment: written aside, then renamed
    assert step % STEPS_PER_EPOCH == 0 and 0 < step < total

    resumed = train_process(synth_dataset, tmp_path / "killed", "--max_steps", str(total), "--ckpt", str(last))
    whole = train_process(synth_dataset, tmp_path / "whole", "--max_steps", str(total))
    for process in (resumed, whole):
        assert process.wait(timeout=600) == 0, process.stderr.read()
    # the steps after the checkpoint repeat the uninterrupted run's, and the run ends in the same
    # state: same step, EMA weights, training weights and noise bank
    after_resume = train_losses(tmp_path / "killed")[-(total - step):]
    np.testing.assert_allclose(after_resume, train_losses(tmp_path / "whole")[-(total - step):], rtol=RESUME_RTOL,
                               atol=0.0)
    assert_same_training_state(load(newest_version(tmp_path / "killed") / "checkpoints" / "last.ckpt"),
                               load(newest_version(tmp_path / "whole") / "checkpoints" / "last.ckpt"))


# ============================================================================================
# enhancement: interrupted runs
# ============================================================================================

def enhancement_inputs(folder, count=6, seconds=1.0):
    return [write_plain(folder / f"utt{i:02d}.wav", seed=i, seconds=seconds) for i in range(count)]


def assert_only_complete_outputs(noisy, out):
    for path in audio_files_below(out):
        assert not path.name.startswith("."), f"temporary file left: {path}"
        source = noisy / path.relative_to(out)
        info = sf.info(str(path))  # reads: a truncated file fails here or has too few frames
        assert info.frames == sf.info(str(source)).frames
        assert np.all(np.isfinite(sf.read(str(path))[0]))


def test_stale_temporaries_of_a_killed_run_are_removed_and_never_taken_for_outputs(tiny_ckpt, tmp_path, capsys):
    noisy, out = tmp_path / "noisy", tmp_path / "out"
    enhancement_inputs(noisy, count=2, seconds=0.2)
    out.mkdir()
    stale = out / f".partial-{dead_pid()}-x1y2z3.wav"
    stale.write_bytes(b"RIFF\x00\x00\x00\x00WAVE")  # the truncated start of an output
    older = out / ".partial-q8w7e6.wav"  # an older, pid-less temporary
    older.write_bytes(b"RIFF")
    foreign = out / ".partial-notes.txt"  # not of its naming: kept
    foreign.write_text("keep me")
    assert enhancement.main(["--test_dir", str(noisy), "--enhanced_dir", str(out), "--ckpt", str(tiny_ckpt),
                             "--N", "1"]) == 0
    assert "removed 2 unfinished temporary file(s)" in capsys.readouterr().err
    assert not stale.exists() and not older.exists() and foreign.exists()
    assert [p.name for p in audio_files_below(out)] == ["utt00.wav", "utt01.wav"]
    assert_only_complete_outputs(noisy, out)


MOMENTS = {"after_first_output": None, "while_starting": 1.0}  # seconds after the start, or None
KILL_TEST_ARGS = ["--N", "10"]  # ~2 s per file on a busy CPU: the signal lands in the middle of the run


@pytest.fixture(scope="module")
def kill_test_inputs(tiny_ckpt, tmp_path_factory):
    """Four inputs, a checkpoint with audible output, and the outputs of an uninterrupted run."""
    root = tmp_path_factory.mktemp("kill-inputs")
    inputs = enhancement_inputs(root / "noisy", count=4, seconds=0.5)
    ckpt = save_audible_checkpoint(tiny_ckpt, root / "audible.ckpt")
    assert enhancement.main(["--test_dir", str(root / "noisy"), "--enhanced_dir", str(root / "reference"),
                             "--ckpt", str(ckpt), *KILL_TEST_ARGS]) == 0
    assert all(np.abs(sf.read(str(root / "reference" / p.name))[0]).max() > 1e-3 for p in inputs)  # not silence
    return root / "noisy", root / "reference", inputs, ckpt


@pytest.mark.slow
@pytest.mark.parametrize("signal_name, moment", [("SIGINT", "after_first_output"), ("SIGTERM", "after_first_output"),
                                                 ("SIGKILL", "after_first_output"), ("SIGKILL", "while_starting"),
                                                 ("SIGINT", "while_starting")])
def test_enhancement_killed_at_any_moment_leaves_complete_files_and_resumes(signal_name, moment, kill_test_inputs,
                                                                            tmp_path):
    noisy, reference, inputs, ckpt = kill_test_inputs
    out = tmp_path / "out"
    argv = ["--test_dir", str(noisy), "--enhanced_dir", str(out), "--ckpt", str(ckpt), *KILL_TEST_ARGS]
    process = subprocess.Popen([sys.executable, "enhancement.py", *argv], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    if MOMENTS[moment] is None:
        assert wait_for(lambda: any(not p.name.startswith(".") for p in audio_files_below(out)), 300, process)
    else:
        time.sleep(MOMENTS[moment])
    process.send_signal(getattr(signal, signal_name))
    _, err = process.communicate(timeout=120)
    if moment == "after_first_output":  # (a Ctrl-C while Python still imports torch prints its own traceback)
        assert "Traceback" not in err
    if signal_name != "SIGKILL":
        assert process.returncode == 130 or process.returncode < 0, err
        assert partial_files_below(out) == []  # Ctrl-C and SIGTERM clean up after themselves
    assert_only_complete_outputs(noisy, out)
    if moment == "after_first_output":
        assert len([p for p in audio_files_below(out) if not p.name.startswith(".")]) < len(inputs)

    assert enhancement.main(argv) == 0  # the next run finishes the rest
    assert partial_files_below(out) == []
    assert sorted(p.name for p in audio_files_below(out)) == [p.name for p in inputs]
    assert_only_complete_outputs(noisy, out)
    for path in inputs:  # resumed or not, each file is the one an uninterrupted run writes
        assert np.array_equal(sf.read(str(out / path.name))[0], sf.read(str(reference / path.name))[0]), path.name
