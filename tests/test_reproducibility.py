"""Same seed, same machine, same results: enhanced samples bit for bit on the CPU, metric files
byte for byte, and the seed and software versions written next to every result. (Training: the
resume tests in test_resume.py compare two runs of the same seed loss for loss.)"""
import json

import numpy as np
import pytest
import soundfile as sf
import torch

import calc_metrics
import enhancement
from audio_cases import save_audible_checkpoint, write_plain, write_valid

VERSIONED = ("python", "torch", "numpy", "soundfile")


@pytest.fixture(scope="module")
def audible_ckpt(tiny_ckpt, tmp_path_factory):
    return save_audible_checkpoint(tiny_ckpt, tmp_path_factory.mktemp("audible") / "audible.ckpt")


def enhance(noisy, out, ckpt, seed):
    assert enhancement.main(["--test_dir", str(noisy), "--enhanced_dir", str(out), "--ckpt", str(ckpt),
                             "--N", "1", "--seed", str(seed), "--device", "cpu"]) == 0
    return {path.name: sf.read(str(path), dtype="float64", always_2d=True)[0] for path in sorted(out.glob("*.*"))
            if path.suffix in (".wav", ".flac")}


def test_enhancement_with_the_same_seed_writes_the_same_samples(audible_ckpt, tmp_path):
    noisy = tmp_path / "noisy"
    write_plain(noisy / "pcm16.wav", seconds=0.3)
    write_valid(noisy / "stereo48k.wav", "sr_48000", seed=1)
    write_valid(noisy / "float.wav", "float32", seed=2)
    write_valid(noisy / "pcm24.flac", "pcm_24", seed=3)
    first = enhance(noisy, tmp_path / "first", audible_ckpt, seed=11)
    again = enhance(noisy, tmp_path / "again", audible_ckpt, seed=11)
    other = enhance(noisy, tmp_path / "other", audible_ckpt, seed=12)
    assert sorted(first) == ["float.wav", "pcm16.wav", "pcm24.flac", "stereo48k.wav"]
    for name in first:
        assert np.array_equal(first[name], again[name]), name
        assert np.abs(first[name]).max() > 1e-3, name  # audible: the comparison is not of silence
    assert any(not np.array_equal(first[name], other[name]) for name in first)

    info = json.loads((tmp_path / "first" / "run_info.json").read_text())
    assert info["seed"] == 11 and all(info["versions"].get(name) for name in VERSIONED)
    assert info["versions"]["torch"] == torch.__version__


def test_metrics_of_the_same_files_are_the_same_files(tmp_path):
    for name in ("a", "sub/b"):
        for role in ("clean", "noisy", "enhanced"):
            write_plain(tmp_path / role / f"{name}.wav", role, seed=len(name))
    runs = []
    for out in ("first", "again"):
        assert calc_metrics.main(["--clean_dir", str(tmp_path / "clean"), "--noisy_dir", str(tmp_path / "noisy"),
                                  "--enhanced_dir", str(tmp_path / "enhanced"), "--output_dir", str(tmp_path / out),
                                  "--workers", "1", "--seed", "5"]) == 0
        runs.append(tmp_path / out)
    for result in (calc_metrics.RESULTS_CSV, calc_metrics.AVERAGES_TXT):
        assert (runs[0] / result).read_bytes() == (runs[1] / result).read_bytes(), result
    infos = [json.loads((run / calc_metrics.RUN_INFO_JSON).read_text()) for run in runs]
    for info in infos:
        assert info["seed"] == 5 and all(info["versions"].get(name) for name in ("python", "numpy", "pesq", "pystoi"))
    timing_and_command = ("seconds", "argv")
    assert ({k: v for k, v in infos[0].items() if k not in timing_and_command}
            == {k: v for k, v in infos[1].items() if k not in timing_and_command})
