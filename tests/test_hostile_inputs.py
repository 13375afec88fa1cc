"""Hostile and odd inputs for every script that reads audio: enhancement.py, calc_metrics.py,
train.py with its data module, and the data tools (echo.data.vbdmd, echo.data.mix,
echo.data.synth).

The contract: odd but valid files are processed like ordinary ones; a file that cannot be used
gives one line that names it and the problem, the rest of the batch is still processed, the exit
status is non-zero, and no partial output is left. Training checks all of its data at setup:
there one bad file stops the run, with one line, before training starts.

The files are written by tests/audio_cases.py; the scripts run in this process through their
``main(argv)``, and once each as a subprocess to show that no traceback reaches the user.
"""
import contextlib
import csv
import errno
import io
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import calc_metrics
import enhancement
import train
import echo.enhance as enhance_lib
from audio_cases import (BROKEN_CASES, MULTI_CHANNEL, OTHER_RATES, VALID_CASES, audio_files_below,
                         partial_files_below, save_audible_checkpoint, write_broken, write_plain, write_valid)
from conftest import REPO, TINY_ARGS
from echo.data import mix, synth, vbdmd
from echo.data_module import SpecsDataModule
from echo.util.audio import AudioError

ENHANCE_FAST = ["--N", "1"]  # one network evaluation per file
TRAIN_FAST = ["--accelerator", "cpu", "--batch_size", "2", "--num_frames", "16", "--num_workers", "0",
              "--logger", "csv", "--num_eval_files", "0", "--max_steps", "1", *TINY_ARGS]
UNICODE_NAME = "dir with spaces/ünïcødé 音声 file.wav"


def one_line_errors(text, prefix):
    return [line for line in text.splitlines() if line.startswith(prefix)]


@pytest.fixture
def read_only_dir(tmp_path, monkeypatch):
    """A folder nobody may create files in. Root ignores file modes, so under root the refusal
    the kernel would give anyone else is simulated where every writer here creates its files."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:
        real_mkstemp = tempfile.mkstemp

        def mkstemp(*args, dir=None, **kwargs):
            if dir is not None and Path(dir).resolve().is_relative_to(folder.resolve()):
                raise PermissionError(errno.EACCES, "Permission denied", str(dir))
            return real_mkstemp(*args, dir=dir, **kwargs)
        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    yield folder
    folder.chmod(0o755)


# ============================================================================================
# enhancement.py
# ============================================================================================

@pytest.fixture(scope="module")
def enhanced_batch(tiny_ckpt, tmp_path_factory):
    """One enhancement run over a folder holding every odd and every broken case, plus unicode
    names, symlinks and two files that differ only in their extension; with the audible
    checkpoint, so that an output rounded to silence shows."""
    root = tmp_path_factory.mktemp("enhance")
    ckpt = save_audible_checkpoint(tiny_ckpt, root / "audible.ckpt")
    noisy = root / "noisy in"
    for name in VALID_CASES:
        write_valid(noisy / f"{name}.wav", name)
    for name in BROKEN_CASES:
        write_broken(noisy / f"{name}.wav", name)
    write_plain(noisy / UNICODE_NAME)
    write_plain(noisy / "twin.wav", seed=1)
    write_valid(noisy / "twin.flac", "pcm_24", seed=2)
    elsewhere = write_plain(root / "elsewhere" / "linked_target.wav", seed=3)
    (noisy / "symlinked_file.wav").symlink_to(elsewhere)
    (noisy / "symlinked_dir").symlink_to(elsewhere.parent, target_is_directory=True)
    (noisy / "loop").symlink_to(noisy, target_is_directory=True)  # must not be walked forever
    out = root / "enhanced"
    err, stdout = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(stdout):
        code = enhancement.main(["--test_dir", str(noisy), "--enhanced_dir", str(out), "--ckpt", str(ckpt),
                                 *ENHANCE_FAST])
    return dict(noisy=noisy, out=out, code=code, err=err.getvalue(), stdout=stdout.getvalue())


@pytest.fixture(scope="module")
def identity_batch(tiny_ckpt, tmp_path_factory):
    """Every odd case through enhancement.py with the reverse process replaced by the identity:
    what the rest of the path (reading, resampling, per-channel normalisation, writing in the
    input's format) does to the content."""
    root = tmp_path_factory.mktemp("identity")
    for name in VALID_CASES:
        write_valid(root / "noisy" / f"{name}.wav", name)
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(io.StringIO()):
        patch.setattr(enhance_lib, "sample", lambda model, y, generator=None, **kwargs: (y, 1))
        code = enhancement.main(["--test_dir", str(root / "noisy"), "--enhanced_dir", str(root / "out"),
                                 "--ckpt", str(tiny_ckpt), *ENHANCE_FAST])
    assert code == 0
    return root


@pytest.mark.parametrize("name", sorted(VALID_CASES))
def test_enhancement_keeps_rate_channels_length_and_format_of_odd_files(enhanced_batch, name):
    src = sf.info(str(enhanced_batch["noisy"] / f"{name}.wav"))
    dst = sf.info(str(enhanced_batch["out"] / f"{name}.wav"))
    assert (dst.samplerate, dst.channels, dst.frames, dst.subtype) == \
           (src.samplerate, src.channels, src.frames, src.subtype)
    audio, _ = sf.read(str(enhanced_batch["out"] / f"{name}.wav"), always_2d=True)
    assert np.all(np.isfinite(audio))
    if name == "silent":
        assert not audio.any()  # silence in, silence out
    elif name != "one_sample":  # (one sample holds too little for the model to answer audibly)
        # each channel audible: RMS 2e-4 (the 100-sample file) to 6e-3 measured; 16-bit LSB 3e-5
        assert np.all(np.sqrt(np.mean(audio ** 2, axis=0)) > 5e-5), name


# The identity path, measured per channel: level within 0.09 dB of the input, correlation above
# 0.991 (8 kHz: the resampler's transition band below 4 kHz; 8-bit: requantisation; the band above
# 8 kHz of 22.05-48 kHz files is kept by the default --high_band keep).
IDENTITY_LEVEL_DB = 0.25
IDENTITY_CORRELATION = 0.98


@pytest.mark.parametrize("name", sorted(set(VALID_CASES) - {"silent"}))
def test_enhancement_path_gives_every_channel_of_odd_files_back(identity_batch, name):
    noisy, _ = sf.read(str(identity_batch / "noisy" / f"{name}.wav"), always_2d=True)
    out, _ = sf.read(str(identity_batch / "out" / f"{name}.wav"), always_2d=True)
    assert out.shape == noisy.shape
    level = 10 * np.log10(np.mean(out ** 2, axis=0) / np.mean(noisy ** 2, axis=0))
    assert np.all(np.abs(level) < IDENTITY_LEVEL_DB), level  # the channels differ in level (see audio_cases)
    if len(noisy) > 1:
        for channel in range(noisy.shape[1]):
            assert np.corrcoef(out[:, channel], noisy[:, channel])[0, 1] > IDENTITY_CORRELATION, channel


@pytest.mark.parametrize("name", sorted(BROKEN_CASES))
def test_enhancement_reports_a_broken_file_on_one_line_and_writes_nothing_for_it(enhanced_batch, name):
    failures = one_line_errors(enhanced_batch["err"], "failed: ")
    mine = [line for line in failures if f"{name}.wav" in line]
    assert len(mine) == 1 and BROKEN_CASES[name][1] in mine[0]
    assert not (enhanced_batch["out"] / f"{name}.wav").exists()


def test_enhancement_batch_with_broken_files_finishes_the_rest_and_exits_1(enhanced_batch):
    assert enhanced_batch["code"] == 1
    assert len(one_line_errors(enhanced_batch["err"], "failed: ")) == len(BROKEN_CASES)
    assert "Traceback" not in enhanced_batch["err"]
    done = len(VALID_CASES) + 5  # + unicode, twin.wav, twin.flac, symlinked file, file in symlinked dir
    assert f"done {done}, skipped 0, failed {len(BROKEN_CASES)}" in enhanced_batch["stdout"]
    assert partial_files_below(enhanced_batch["out"]) == []


def test_enhancement_handles_unicode_paths_symlinks_and_extension_twins(enhanced_batch):
    out = enhanced_batch["out"]
    expected = [UNICODE_NAME, "twin.wav", "twin.flac", "symlinked_file.wav", "symlinked_dir/linked_target.wav"]
    for rel in expected:
        assert sf.info(str(out / rel)).frames == sf.info(str(enhanced_batch["noisy"] / rel)).frames, rel
    assert sf.info(str(out / "twin.flac")).format == "FLAC"
    assert not (out / "loop").exists()  # the symlink loop was walked once, not mirrored
    assert len(audio_files_below(out)) == len(VALID_CASES) + len(expected)


def test_enhancement_refuses_a_missing_or_empty_input_folder(tiny_ckpt, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no audio here")
    for folder in ("missing", "empty"):
        code = enhancement.main(["--test_dir", str(tmp_path / folder), "--enhanced_dir", str(tmp_path / "out"),
                                 "--ckpt", str(tiny_ckpt)])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and folder in err[0]
    assert not (tmp_path / "out").exists()


def test_enhancement_refuses_a_read_only_output_folder_before_any_work(tiny_ckpt, tmp_path, read_only_dir, capsys):
    write_plain(tmp_path / "noisy" / "a.wav")
    code = enhancement.main(["--test_dir", str(tmp_path / "noisy"), "--enhanced_dir", str(read_only_dir),
                             "--ckpt", str(tiny_ckpt), *ENHANCE_FAST])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert str(read_only_dir) in err[0] and "not writable" in err[0]
    assert list(read_only_dir.iterdir()) == []


def test_enhancement_cli_prints_no_traceback_for_broken_files(tiny_ckpt, tmp_path):
    noisy = tmp_path / "noisy"
    write_plain(noisy / "good.wav", seconds=0.2)
    write_broken(noisy / "corrupt.wav", "corrupt_header")
    write_broken(noisy / "nan.wav", "nan_samples")
    done = subprocess.run([sys.executable, "enhancement.py", "--test_dir", str(noisy), "--enhanced_dir",
                           str(tmp_path / "out"), "--ckpt", str(tiny_ckpt), *ENHANCE_FAST],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    failures = one_line_errors(done.stderr, "failed: ")
    assert len(failures) == 2 and any("corrupt.wav" in f for f in failures) and any("nan.wav" in f for f in failures)
    assert [p.name for p in audio_files_below(tmp_path / "out")] == ["good.wav"]


# ============================================================================================
# calc_metrics.py
# ============================================================================================

def metric_folders(root, names_and_writers):
    """clean/, noisy/ and enhanced/ below ``root``; ``names_and_writers``: name -> f(path, role)."""
    for name, write in names_and_writers.items():
        for role in ("clean", "noisy", "enhanced"):
            write(root / role / f"{name}.wav", role)
    return root


def metrics_argv(root, *extra):
    return ["--clean_dir", str(root / "clean"), "--noisy_dir", str(root / "noisy"),
            "--enhanced_dir", str(root / "enhanced"), "--workers", "1", *extra]


def results_by_file(folder):
    with open(Path(folder) / calc_metrics.RESULTS_CSV, newline="", encoding="utf-8") as handle:
        return {row["file"]: row for row in csv.DictReader(handle)}


def _valid_writer(name):
    return lambda path, role: write_valid(path, name, role)


def _broken_enhanced_writer(name):
    def write(path, role):
        if role == "enhanced":
            write_broken(path, name)
        else:
            write_plain(path, role)
    return write


def _different_lengths(path, role):
    write_plain(path, role, seconds=1.0 if role != "enhanced" else 0.5)


@pytest.fixture(scope="module")
def scored_batch(tmp_path_factory):
    """One calc_metrics run over every odd case (as clean, noisy and enhanced), every broken case
    (as the enhanced file), a pair of different lengths, and a unicode name."""
    root = tmp_path_factory.mktemp("metrics")
    writers = {name: _valid_writer(name) for name in VALID_CASES}
    writers.update({name: _broken_enhanced_writer(name) for name in BROKEN_CASES})
    writers["different_lengths"] = _different_lengths
    writers["dir with spaces/ünïcødé"] = lambda path, role: write_plain(path, role)
    metric_folders(root, writers)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = calc_metrics.main(metrics_argv(root))
    return dict(root=root, code=code, err=err.getvalue(), rows=results_by_file(root / "enhanced"))


@pytest.mark.parametrize("name", sorted(set(VALID_CASES) - set(MULTI_CHANNEL)))
def test_metrics_score_odd_mono_files(scored_batch, name):
    row = scored_batch["rows"][name]
    assert row["error"] == ""
    for key, value in row.items():  # each metric is a number, or empty/NaN with a note saying why
        if key.startswith(("noisy_", "enhanced_")) and not (value and np.isfinite(float(value))):
            assert row["notes"], (name, key, value)


@pytest.mark.parametrize("name", MULTI_CHANNEL)
def test_metrics_refuse_multichannel_files_by_name(scored_batch, name):
    row = scored_batch["rows"][name]
    assert "channels; the metrics need mono files" in row["error"] and f"{name}.wav" in row["error"]


@pytest.mark.parametrize("name", sorted(BROKEN_CASES) + ["different_lengths"])
def test_metrics_report_a_broken_file_on_one_line(scored_batch, name):
    expected = BROKEN_CASES[name][1] if name in BROKEN_CASES else "lengths differ"
    lines = [line for line in one_line_errors(scored_batch["err"], "calc_metrics: error: ") if f"{name}.wav" in line]
    assert len(lines) == 1 and expected in lines[0]
    assert expected in scored_batch["rows"][name]["error"]


def test_metrics_batch_with_broken_files_scores_the_rest_and_exits_1(scored_batch):
    assert scored_batch["code"] == 1
    assert "Traceback" not in scored_batch["err"]
    assert scored_batch["rows"]["dir with spaces/ünïcødé"]["error"] == ""
    assert float(scored_batch["rows"]["dir with spaces/ünïcødé"]["enhanced_pesq"]) > 1
    assert partial_files_below(scored_batch["root"]) == []


@pytest.mark.parametrize("problem", ["missing_folder", "empty_folders", "names_do_not_pair", "extension_twins"])
def test_metrics_folder_problems_are_one_line_setup_errors(problem, tmp_path, capsys):
    if problem != "empty_folders":
        metric_folders(tmp_path, {"a": write_plain, "b": write_plain})
    if problem == "missing_folder":
        argv = metrics_argv(tmp_path)
        argv[argv.index("--clean_dir") + 1] = str(tmp_path / "nowhere")
    else:
        for role in ("clean", "noisy", "enhanced"):
            (tmp_path / role).mkdir(exist_ok=True)
        argv = metrics_argv(tmp_path)
    if problem == "names_do_not_pair":
        (tmp_path / "enhanced" / "b.wav").rename(tmp_path / "enhanced" / "b_enhanced.wav")
    if problem == "extension_twins":
        write_plain(tmp_path / "enhanced" / "a.flac")
    assert calc_metrics.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("calc_metrics: error: ")
    expected = {"missing_folder": "nowhere", "empty_folders": "no audio files", "names_do_not_pair": "b_enhanced.wav",
                "extension_twins": "apart from the extension"}[problem]
    assert expected in err[0]
    assert not (tmp_path / "enhanced" / calc_metrics.RESULTS_CSV).exists()


def test_metrics_refuse_a_read_only_output_folder_before_scoring(tmp_path, read_only_dir, capsys, monkeypatch):
    metric_folders(tmp_path, {"a": write_plain})
    monkeypatch.setattr(calc_metrics, "run_jobs", lambda *a: pytest.fail("scored before checking the output"))
    assert calc_metrics.main(metrics_argv(tmp_path, "--output_dir", str(read_only_dir))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not writable" in err[0] and str(read_only_dir) in err[0]


def test_metrics_output_folder_inside_an_input_folder(tmp_path):
    metric_folders(tmp_path, {"a": write_plain})
    inside = tmp_path / "enhanced" / "scores"
    for _ in range(2):  # the second run must not take the first run's outputs for inputs
        assert calc_metrics.main(metrics_argv(tmp_path, "--output_dir", str(inside))) == 0
        assert list(results_by_file(inside)) == ["a"]


# ============================================================================================
# train.py and its data module
# ============================================================================================

def training_tree(root, clean_writer=write_plain, noisy_writer=write_plain, name="odd.wav"):
    """train/ and valid/ with an ordinary pair each, and the pair ``name`` in train/."""
    for split in ("train", "valid"):
        write_plain(root / split / "clean" / "plain.wav", "clean")
        write_plain(root / split / "noisy" / "plain.wav", "noisy")
    clean_writer(root / "train" / "clean" / name, "clean")
    noisy_writer(root / "train" / "noisy" / name, "noisy")
    return root


def run_train_expecting_error(base_dir, log_dir, *extra):
    """train.main must refuse the data before training: AudioError with a one-line message."""
    with pytest.raises(AudioError) as caught:
        train.main(["--base_dir", str(base_dir), "--log_dir", str(log_dir), *TRAIN_FAST, *extra])
    message = str(caught.value)
    assert "\n" not in message
    assert not Path(log_dir).exists() or not any(Path(log_dir).rglob("*"))  # refused before any log was written
    return message


def all_items_are_finite(base_dir, **flags):
    data = SpecsDataModule(base_dir=base_dir, batch_size=1, num_workers=0, num_frames=16, **flags)
    data.setup("fit")
    for split in ("train", "valid"):
        for index in range(len(data.datasets[split])):
            clean, noisy = data.datasets[split][index]
            assert clean.isfinite().all() and noisy.isfinite().all()
    return True


TRAINING_ACCEPTS = sorted(set(VALID_CASES) - set(MULTI_CHANNEL) - set(OTHER_RATES))


@pytest.mark.parametrize("name", TRAINING_ACCEPTS)
def test_training_data_accepts_odd_mono_16k_files(name, tmp_path):
    tree = training_tree(tmp_path, *(_valid_writer(name),) * 2)
    assert all_items_are_finite(tree)


@pytest.mark.parametrize("name", sorted(MULTI_CHANNEL + OTHER_RATES))
def test_training_refuses_other_rates_and_channels_unless_asked_to_convert(name, tmp_path):
    tree = training_tree(tmp_path / "data", *(_valid_writer(name),) * 2)
    message = run_train_expecting_error(tree, tmp_path / "logs")
    assert "odd.wav" in message
    assert ("--downmix" if name in MULTI_CHANNEL else "--resample") in message
    assert all_items_are_finite(tree, downmix=name in MULTI_CHANNEL, resample=name in OTHER_RATES)


@pytest.mark.parametrize("name", sorted(BROKEN_CASES))
def test_training_refuses_a_broken_file_at_setup(name, tmp_path):
    tree = training_tree(tmp_path / "data", noisy_writer=lambda path, role: write_broken(path, name))
    message = run_train_expecting_error(tree, tmp_path / "logs")
    assert "odd.wav" in message and BROKEN_CASES[name][1] in message


@pytest.mark.parametrize("problem", ["different_lengths", "names_do_not_pair", "extension_twins", "missing_split",
                                     "empty_folders"])
def test_training_refuses_bad_pairs_and_folders_at_setup(problem, tmp_path):
    data = tmp_path / "data"
    if problem == "different_lengths":
        training_tree(data, noisy_writer=lambda path, role: write_plain(path, role, seconds=0.3))
        expected = "must be aligned"
    elif problem == "names_do_not_pair":
        training_tree(data)
        (data / "train" / "noisy" / "odd.wav").rename(data / "train" / "noisy" / "odd_noisy.wav")
        expected = "without a noisy partner"
    elif problem == "extension_twins":
        training_tree(data)
        write_plain(data / "train" / "clean" / "odd.flac")
        expected = "apart from the extension"
    elif problem == "missing_split":
        training_tree(data)
        for kind in ("clean", "noisy"):
            for path in (data / "valid" / kind).iterdir():
                path.unlink()
            (data / "valid" / kind).rmdir()
        expected = "does not exist"
    else:
        for split in ("train", "valid"):
            for kind in ("clean", "noisy"):
                (data / split / kind).mkdir(parents=True)
        expected = "no audio files"
    assert expected in run_train_expecting_error(data, tmp_path / "logs")


def test_training_accepts_unicode_paths_and_symlinks(tmp_path):
    data = training_tree(tmp_path / "data ünï", name="späce and 音声.wav")
    elsewhere = tmp_path / "elsewhere"
    for kind in ("clean", "noisy"):
        write_plain(elsewhere / kind / "target.wav", kind, seed=4)
        (data / "train" / kind / "linked.wav").symlink_to(elsewhere / kind / "target.wav")
    data_module = SpecsDataModule(base_dir=data, num_workers=0, num_frames=16)
    data_module.setup("fit")
    assert sorted(key for key, _, _ in data_module.datasets["train"].pairs) == ["linked", "plain", "späce and 音声"]


def test_training_refuses_a_read_only_log_folder_before_training(tmp_path, read_only_dir):
    data = training_tree(tmp_path / "data")
    message = run_train_expecting_error(data, read_only_dir / "logs")
    assert "not writable" in message and str(read_only_dir) in message


def test_training_with_its_log_folder_inside_the_data_folder(synth_dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synth_dataset, data, ignore=shutil.ignore_patterns("test"))
    pairs_before = SpecsDataModule(base_dir=data).split_pairs("train")
    train.main(["--base_dir", str(data), "--log_dir", str(data / "logs"), *TRAIN_FAST])
    assert list((data / "logs").rglob("last.ckpt"))
    assert audio_files_below(data / "logs") == []  # nothing a later run could take for data
    assert SpecsDataModule(base_dir=data).split_pairs("train") == pairs_before


def test_training_cli_prints_one_error_line_for_nan_data(tmp_path):
    data = training_tree(tmp_path / "data", noisy_writer=lambda path, role: write_broken(path, "nan_samples"))
    done = subprocess.run([sys.executable, "train.py", "--base_dir", str(data), "--log_dir", str(tmp_path / "logs"),
                           *TRAIN_FAST], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "odd.wav" in last and "NaN or Inf" in last


# ============================================================================================
# data tools: vbdmd and mix read audio; synth only writes
# ============================================================================================

def vbdmd_source(root, broken=None):
    """The official training folder layout with two speakers; ``broken``: (file name, kind, case)."""
    for kind, folder in zip(("clean", "noisy"), vbdmd.TRAIN_FOLDERS):
        for name in ("p226_001.wav", "p250_001.wav", "p250_002.wav"):
            write_plain(root / folder / name, kind, sr=48000, seconds=0.3)
    if broken:
        name, kind, case = broken
        folder = vbdmd.TRAIN_FOLDERS[("clean", "noisy").index(kind)]
        (root / folder / name).unlink()
        if case == "different_lengths":
            write_plain(root / folder / name, kind, sr=48000, seconds=0.2)
        else:
            write_broken(root / folder / name, case)
    return root


@pytest.mark.parametrize("case", ["corrupt_header", "zero_bytes", "nan_samples", "different_lengths"])
def test_vbdmd_reports_a_bad_pair_and_converts_the_rest(case, tmp_path, capsys):
    src = vbdmd_source(tmp_path / "src", broken=("p250_002.wav", "noisy", case))
    dst = tmp_path / "dst"
    assert vbdmd.main(["--src", str(src), "--dst", str(dst), "--workers", "1", "--quiet"]) == 1
    errors = one_line_errors(capsys.readouterr().err, "error: ")
    assert len(errors) == 1 and "p250_002.wav" in errors[0]
    assert [p.name for p in audio_files_below(dst / "train")] == ["p250_001.wav", "p250_001.wav"]
    assert len(audio_files_below(dst / "valid")) == 2
    assert partial_files_below(dst) == []
    from echo.data import read_manifest
    assert sorted(row["name"] for row in read_manifest(dst)) == ["p226_001.wav", "p250_001.wav"]


def test_vbdmd_with_two_workers_reports_bad_pairs_the_same_way(tmp_path, capsys):
    src = vbdmd_source(tmp_path / "src", broken=("p250_002.wav", "clean", "not_audio"))
    assert vbdmd.main(["--src", str(src), "--dst", str(tmp_path / "dst"), "--workers", "2", "--quiet"]) == 1
    errors = one_line_errors(capsys.readouterr().err, "error: ")
    assert len(errors) == 1 and "p250_002.wav" in errors[0] and "not a readable audio file" in errors[0]


def test_vbdmd_refuses_empty_source_folders(tmp_path, capsys):
    for folder in vbdmd.TRAIN_FOLDERS:
        (tmp_path / "src" / folder).mkdir(parents=True)
    assert vbdmd.main(["--src", str(tmp_path / "src"), "--dst", str(tmp_path / "dst"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert not (tmp_path / "dst").exists()


def mix_corpus(root, bad_speech=None, bad_noise=None):
    for speaker in ("s1", "s2", "s3"):
        write_plain(root / "speech" / f"{speaker}_utt.wav", "clean", seed=int(speaker[1]), seconds=0.5)
    write_plain(root / "noise" / "hum.wav", "noisy", seed=9, seconds=0.7)
    if bad_speech:
        (root / "speech" / "s2_utt.wav").unlink()
        write_broken(root / "speech" / "s2_utt.wav", bad_speech)
    if bad_noise:
        write_broken(root / "noise" / "bad_noise.wav", bad_noise)
    return root


def mix_argv(root, *extra):
    return ["--speech_dir", str(root / "speech"), "--noise_dir", str(root / "noise"), "--out_dir", str(root / "out"),
            "--n_train", "2", "--n_valid", "1", "--n_test", "1", "--segment_seconds", "0.5", "--quiet", *extra]


@pytest.mark.parametrize("case", ["corrupt_header", "nan_samples"])
def test_mix_reports_a_bad_speech_file_and_mixes_the_rest(case, tmp_path, capsys):
    root = mix_corpus(tmp_path, bad_speech=case)
    assert mix.main(mix_argv(root, "--workers", "1")) == 1
    errors = one_line_errors(capsys.readouterr().err, "error: ")
    assert errors and all("s2_utt.wav" in line and BROKEN_CASES[case][1] in line for line in errors)
    made = audio_files_below(root / "out")
    assert made and len(made) == 2 * (4 - len(errors))  # every pair complete, none half-written
    assert partial_files_below(root / "out") == []


@pytest.mark.parametrize("workers", ["1", "2"])
def test_mix_refuses_a_bad_noise_file_before_writing(workers, tmp_path, capsys):
    root = mix_corpus(tmp_path, bad_noise="zero_bytes")
    assert mix.main(mix_argv(root, "--workers", workers)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad_noise.wav" in err[0] and "not a readable audio file" in err[0]
    assert not (root / "out").exists()


def test_mix_refuses_empty_folders(tmp_path, capsys):
    (tmp_path / "speech").mkdir()
    (tmp_path / "noise").mkdir()
    assert mix.main(mix_argv(tmp_path)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no .wav or .flac files" in err[0]


def test_synth_refuses_a_read_only_output_folder_with_one_line(read_only_dir, capsys):
    assert synth.main(["--out_dir", str(read_only_dir / "set"), "--n_train", "1", "--n_valid", "0",
                       "--n_test", "0", "--seconds", "0.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "not writable" in err[0]
    assert audio_files_below(read_only_dir) == []


def test_synth_writes_into_a_unicode_path_with_spaces(tmp_path):
    out = tmp_path / "data sets" / "sÿnth 音声"
    assert synth.main(["--out_dir", str(out), "--n_train", "1", "--n_valid", "1", "--n_test", "0",
                       "--seconds", "0.5"]) == 0
    assert len(audio_files_below(out)) == 4
