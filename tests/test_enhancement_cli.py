"""enhancement.py end to end, in-process through ``main(argv)``."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import enhancement
from audio_cases import save_audible_checkpoint
from conftest import shared_data
from echo.checkpoints import load_model
from echo.enhance import chunk_samples, chunk_starts

FAST = ["--N", "1"]  # one network evaluation per file keeps every run below a few seconds


@pytest.fixture(scope="module")
def audible_ckpt(tiny_ckpt, tmp_path_factory):
    """The tiny checkpoint scaled to an audible output: different seeds and files give audibly
    different outputs to compare (see audio_cases.save_audible_checkpoint)."""
    return save_audible_checkpoint(tiny_ckpt, tmp_path_factory.mktemp("audible") / "audible.ckpt")


def tone(seconds, sr, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    mono = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.02 * rng.standard_normal(n)
    return np.stack([mono * (0.5 + 0.5 * c) for c in range(channels)], axis=1).astype(np.float32)


def make_inputs(root):
    """a.wav (16 kHz PCM_16), sub/b.flac (16 kHz), sub/deeper/c.wav (48 kHz stereo float)."""
    root = Path(root)
    (root / "sub" / "deeper").mkdir(parents=True)
    sf.write(root / "a.wav", tone(0.25, 16000), 16000, subtype="PCM_16")
    sf.write(root / "sub" / "b.flac", tone(0.25, 16000, seed=1), 16000, subtype="PCM_16")
    sf.write(root / "sub" / "deeper" / "c.wav", tone(0.2, 48000, channels=2, seed=2), 48000, subtype="FLOAT")
    return ["a.wav", "sub/b.flac", "sub/deeper/c.wav"]


def run_cli(*args):
    return enhancement.main([str(a) for a in args])


def read(path):
    return sf.read(str(path), dtype="float32", always_2d=True)


@pytest.fixture(scope="module")
def first_run(audible_ckpt, tmp_path_factory):
    """One full run shared by the tests that inspect or resume it."""
    root = tmp_path_factory.mktemp("cli")
    names = make_inputs(root / "noisy")
    code = run_cli("--test_dir", root / "noisy", "--enhanced_dir", root / "enhanced", "--ckpt", audible_ckpt, *FAST)
    return root, names, code


def test_outputs_mirror_the_tree_and_keep_rate_channels_length_format(first_run):
    root, names, code = first_run
    assert code == 0
    for name in names:
        src, dst = sf.info(str(root / "noisy" / name)), sf.info(str(root / "enhanced" / name))
        assert (dst.samplerate, dst.channels, dst.frames, dst.subtype, dst.format) == \
               (src.samplerate, src.channels, src.frames, src.subtype, src.format)
        audio = read(root / "enhanced" / name)[0]
        assert np.all(np.isfinite(audio))
        # every channel audible (measured RMS 3.5e-4 to 1.2e-3; the 16-bit step is 3e-5), not rounded to silence
        assert np.all(np.sqrt(np.mean(audio ** 2, axis=0)) > 1e-4), name
    info = json.loads((root / "enhanced" / "run_info.json").read_text())
    assert info["seed"] == 0 and info["sampler"]["N"] == 1 and info["nfe_per_sampling_pass"] == 1
    assert info["sampler"]["predictor"] == "echo_posterior"  # the checkpoint's default
    assert info["files"] == {"done": 3, "skipped": 0, "failed": 0}
    assert not list((root / "enhanced").rglob(".partial-*"))


def test_second_run_skips_and_overwrite_redoes_bit_identically(first_run, audible_ckpt, capsys):
    root, names, _ = first_run
    before = {name: read(root / "enhanced" / name)[0] for name in names}
    assert max(np.abs(audio).max() for audio in before.values()) > 1e-3  # not trivially silent
    argv = ["--test_dir", root / "noisy", "--enhanced_dir", root / "enhanced", "--ckpt", audible_ckpt, *FAST]
    capsys.readouterr()
    assert run_cli(*argv) == 0
    assert "done 0, skipped 3, failed 0" in capsys.readouterr().out
    assert run_cli(*argv, "--overwrite") == 0
    assert "done 3, skipped 0, failed 0" in capsys.readouterr().out
    for name in names:  # same seed: the same samples, bit for bit
        assert np.array_equal(read(root / "enhanced" / name)[0], before[name]), name


def test_each_file_has_its_own_generator_and_the_seed_matters(first_run, audible_ckpt, tmp_path):
    root, _, _ = first_run
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(root / "noisy" / "a.wav", alone / "a.wav")
    # enhanced without the other files (as when they are skipped): the same output as in the full run
    assert run_cli("--test_dir", alone, "--enhanced_dir", tmp_path / "seed0", "--ckpt", audible_ckpt, *FAST) == 0
    assert np.array_equal(read(tmp_path / "seed0" / "a.wav")[0], read(root / "enhanced" / "a.wav")[0])
    # another seed, another result
    assert run_cli("--test_dir", alone, "--enhanced_dir", tmp_path / "seed1", "--ckpt", audible_ckpt,
                   "--seed", "1", *FAST) == 0
    assert not np.array_equal(read(tmp_path / "seed1" / "a.wav")[0], read(root / "enhanced" / "a.wav")[0])


def test_unreadable_files_are_reported_by_name_and_the_rest_is_done(tiny_ckpt, tmp_path, capsys):
    noisy = tmp_path / "noisy"
    noisy.mkdir()
    sf.write(noisy / "good.wav", tone(0.2, 16000), 16000)
    (noisy / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    sf.write(noisy / "empty.wav", np.zeros((0, 1), np.float32), 16000)
    sf.write(noisy / "nan.wav", np.full((800, 1), np.nan, np.float32), 16000, subtype="FLOAT")
    code = run_cli("--test_dir", noisy, "--enhanced_dir", tmp_path / "out", "--ckpt", tiny_ckpt, *FAST)
    captured = capsys.readouterr()
    assert code == 1
    failures = [line for line in captured.err.splitlines() if line.startswith("failed: ")]
    assert len(failures) == 3
    for name in ("corrupt.wav", "empty.wav", "nan.wav"):
        assert sum(name in line for line in failures) == 1
    assert (tmp_path / "out" / "good.wav").is_file()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.wav", "run_info.json"]
    assert "done 1, skipped 0, failed 3" in captured.out and "RTF" in captured.out
    assert "Traceback" not in captured.err


def test_failed_write_leaves_no_partial_or_truncated_file(tiny_ckpt, tmp_path, monkeypatch, capsys):
    noisy = tmp_path / "noisy"
    (noisy / "sub").mkdir(parents=True)
    sf.write(noisy / "sub" / "a.wav", tone(0.1, 16000), 16000)

    def write_half_then_fail(file, data, samplerate, **kwargs):
        Path(file).write_bytes(b"RIFF" + b"\x00" * 100)  # a truncated file under the temporary name
        raise OSError("No space left on device")
    monkeypatch.setattr("echo.util.audio.sf.write", write_half_then_fail)
    code = run_cli("--test_dir", noisy, "--enhanced_dir", tmp_path / "out", "--ckpt", tiny_ckpt, *FAST)
    assert code == 1
    assert "No space left on device" in capsys.readouterr().err
    left = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert left == []  # neither '.partial-*' leftovers nor outputs under their final names


@pytest.mark.parametrize("problem", ["same_dir", "missing_dir", "bad_ckpt", "bad_sampler", "nan_schedule",
                                     "bad_chunks", "bad_warm_start", "bad_atten_lim", "bad_draws"])
def test_setup_errors_exit_2_with_one_line(problem, tiny_ckpt, tmp_path, capsys):
    noisy = tmp_path / "noisy"
    noisy.mkdir()
    sf.write(noisy / "a.wav", tone(0.2, 16000), 16000)
    args = {"--test_dir": noisy, "--enhanced_dir": tmp_path / "out", "--ckpt": tiny_ckpt}
    extra = []
    if problem == "same_dir":
        args["--enhanced_dir"] = noisy
    elif problem == "missing_dir":
        args["--test_dir"] = tmp_path / "nowhere"
    elif problem == "bad_ckpt":
        (tmp_path / "bad.ckpt").write_bytes(b"not a checkpoint")
        args["--ckpt"] = tmp_path / "bad.ckpt"
    elif problem == "bad_sampler":
        extra = ["--predictor", "none", "--corrector", "none"]
    elif problem == "nan_schedule":  # beta_max / N > 1: the posterior chain is not defined
        extra = ["--N", "2"]
    elif problem == "bad_chunks":
        extra = ["--batch_chunks", "0"]
    elif problem == "bad_warm_start":  # the discrete chain cannot start at an intermediate time
        extra = ["--predictor", "echo_posterior", "--t_start", "0.5"]
    elif problem == "bad_atten_lim":
        extra = ["--atten_lim_db", "-6"]
    elif problem == "bad_draws":
        extra = ["--draws", "0"]
    argv = [item for pair in args.items() for item in pair] + extra
    before = sorted(p.name for p in noisy.iterdir())
    assert run_cli(*FAST, *argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0]
    assert sorted(p.name for p in noisy.iterdir()) == before  # inputs untouched


def test_output_folder_inside_the_input_folder_is_not_read_as_input(tiny_ckpt, tmp_path, capsys):
    noisy = tmp_path / "noisy"
    noisy.mkdir()
    sf.write(noisy / "a.wav", tone(0.2, 16000), 16000)
    argv = ["--test_dir", noisy, "--enhanced_dir", noisy / "enhanced", "--ckpt", tiny_ckpt, *FAST]
    assert run_cli(*argv) == 0
    capsys.readouterr()
    assert run_cli(*argv) == 0
    assert "done 0, skipped 1, failed 0" in capsys.readouterr().out
    assert not (noisy / "enhanced" / "enhanced").exists()


def test_every_sampler_flag_takes_effect(tiny_ckpt, tmp_path):
    """Flags reach the sampler: the recorded settings and the NFE follow them."""
    noisy = tmp_path / "noisy"
    noisy.mkdir()
    sf.write(noisy / "a.wav", tone(0.1, 16000), 16000)
    out = tmp_path / "out"
    assert run_cli("--test_dir", noisy, "--enhanced_dir", out, "--ckpt", tiny_ckpt, "--N", "1",
                   "--corrector", "langevin", "--corrector_steps", "2", "--snr", "0.3", "--t_eps", "0.05",
                   "--predictor", "echo_posterior", "--device", "cpu") == 0
    info = json.loads((out / "run_info.json").read_text())
    assert info["sampler"] == {"predictor": "echo_posterior", "corrector": "langevin", "N": 1, "t_eps": 0.05,
                               "snr": 0.3, "corrector_steps": 2, "draws": 1}
    assert info["nfe_per_sampling_pass"] == 3  # 2 corrector steps + 1 predictor step
    warm = tmp_path / "warm"
    assert run_cli("--test_dir", noisy, "--enhanced_dir", warm, "--ckpt", tiny_ckpt, "--predictor", "ddpm",
                   "--N", "2", "--t_start", "0.5", "--device", "cpu") == 0
    info = json.loads((warm / "run_info.json").read_text())
    assert info["sampler"]["t_start"] == 0.5 and info["nfe_per_sampling_pass"] == 3  # the one-step estimate + 2
    averaged = tmp_path / "averaged"
    assert run_cli("--test_dir", noisy, "--enhanced_dir", averaged, "--ckpt", tiny_ckpt, "--predictor", "ddim",
                   "--N", "2", "--draws", "3", "--device", "cpu") == 0
    info = json.loads((averaged / "run_info.json").read_text())
    assert info["sampler"]["draws"] == 3 and info["nfe_per_sampling_pass"] == 6  # 3 draws of 2 steps


def test_chunk_flags_set_the_chunks(tiny_ckpt, tmp_path):
    """--chunk_seconds and --overlap_seconds decide how a file is cut: a 2-s file in 0.5-s chunks
    takes more chunks the more they overlap, as many as chunk_starts gives (8-s defaults: one)."""
    noisy = tmp_path / "noisy"
    noisy.mkdir()
    sf.write(noisy / "a.wav", tone(2.0, 16000), 16000)
    model = load_model(tiny_ckpt)
    chunk = chunk_samples(model, 0.5)
    counts = []
    for overlap in (0.1, 0.25):
        out = tmp_path / f"out_{overlap}"
        assert run_cli("--test_dir", noisy, "--enhanced_dir", out, "--ckpt", tiny_ckpt, *FAST,
                       "--chunk_seconds", "0.5", "--overlap_seconds", overlap) == 0
        info = json.loads((out / "run_info.json").read_text())
        counts.append(info["chunks"])
        assert info["chunks"] == len(chunk_starts(32000, chunk, int(overlap * 16000))), overlap
    assert 1 < counts[0] < counts[1]


def test_attenuation_limit_mixes_the_input_back_at_its_level(audible_ckpt, tmp_path):
    """--atten_lim_db L: output = (1 - g) * unlimited output + g * input, g = 10^(-L/20), sample
    for sample (same seed, so the unlimited output is the same), and the run records it."""
    noisy = tmp_path / "noisy"
    noisy.mkdir()
    sf.write(noisy / "a.wav", tone(0.3, 16000), 16000, subtype="FLOAT")
    base = ["--test_dir", noisy, "--ckpt", audible_ckpt, *FAST]
    assert run_cli(*base, "--enhanced_dir", tmp_path / "free") == 0
    assert run_cli(*base, "--enhanced_dir", tmp_path / "limited", "--atten_lim_db", "12") == 0
    free, limited, original = (read(p)[0][:, 0] for p in (tmp_path / "free" / "a.wav", tmp_path / "limited" / "a.wav",
                                                          noisy / "a.wav"))
    g = 10 ** (-12 / 20)
    assert np.max(np.abs(free - original)) > 0.05  # the model changed the signal, so the mix is visible
    np.testing.assert_allclose(limited, (1 - g) * free + g * original, atol=1e-6)
    assert json.loads((tmp_path / "limited" / "run_info.json").read_text())["atten_lim_db"] == 12
    assert json.loads((tmp_path / "free" / "run_info.json").read_text())["atten_lim_db"] is None


def test_every_flag_has_help():
    for action in enhancement.build_parser()._actions:
        assert action.help, action.dest


def test_real_vbdmd_files(tiny_ckpt, tmp_path):
    source = shared_data("vbdmd_test", "noisy")
    noisy = tmp_path / "noisy"
    noisy.mkdir()
    names = sorted((p.name for p in source.glob("*.wav")), key=lambda n: sf.info(str(source / n)).frames)[:2]
    for name in names:
        shutil.copy(source / name, noisy / name)
    assert run_cli("--test_dir", noisy, "--enhanced_dir", tmp_path / "out", "--ckpt", tiny_ckpt, *FAST) == 0
    for name in names:
        src, dst = sf.info(str(noisy / name)), sf.info(str(tmp_path / "out" / name))
        assert (dst.samplerate, dst.channels, dst.frames) == (src.samplerate, src.channels, src.frames)
