"""End-to-end tests of calc_metrics.py on small folders written by the tests, and on the PESQ
reference pair of ../shared/data (skipped, with the reason, where that folder is absent)."""
import csv
import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import calc_metrics
from echo.util import metrics
from echo.util.metrics import PAIR_METRICS

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared_data = pytest.mark.skipif(not SHARED_DATA.is_dir(),
                                       reason=f"real test data not found at {SHARED_DATA}")
SR = 16000
NAMES = ("a", "b", "sub/c")


def speech_like(seconds, seed):
    """Harmonic bursts with syllable-rate amplitude modulation: enough structure for PESQ/STOI."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * np.cumsum(110 + 30 * seed + 20 * np.sin(2 * np.pi * 0.5 * t)) / SR
    voiced = sum(np.sin(k * phase) / k for k in range(1, 20))
    return 0.3 * voiced * np.clip(np.sin(2 * np.pi * 3 * t), 0, None) ** 2 + 0.003 * rng.standard_normal(len(t))


@pytest.fixture
def folders(tmp_path):
    """clean/, noisy/ and enhanced/ with three 1.5 s files, one of them in a sub-folder."""
    rng = np.random.default_rng(0)
    for i, name in enumerate(NAMES):
        clean = speech_like(1.5, seed=i)
        noise = rng.standard_normal(len(clean))
        signals = {"clean": clean, "noisy": clean + 0.1 * noise, "enhanced": clean + 0.02 * noise}
        for kind, signal in signals.items():
            path = tmp_path / kind / f"{name}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, signal, SR, subtype="PCM_16")
    return tmp_path


def args_for(root, *extra):
    return ["--clean_dir", str(root / "clean"), "--noisy_dir", str(root / "noisy"),
            "--enhanced_dir", str(root / "enhanced"), *extra]


def run_cli(*args):
    """calc_metrics.py as a user runs it: its own process, exit status, stdout, stderr."""
    return subprocess.run([sys.executable, str(REPO / "calc_metrics.py"), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def read_results(folder):
    with open(Path(folder) / calc_metrics.RESULTS_CSV, newline="") as handle:
        return list(csv.DictReader(handle))


def test_two_workers_write_all_outputs(folders):
    completed = run_cli(*args_for(folders, "--workers", "2", "--seed", "3"))
    assert completed.returncode == 0, completed.stderr
    enhanced = folders / "enhanced"
    rows = read_results(enhanced)
    assert [row["file"] for row in rows] == sorted(NAMES)
    for row in rows:
        for metric in PAIR_METRICS:
            assert np.isfinite(float(row[f"noisy_{metric}"])) and np.isfinite(float(row[f"enhanced_{metric}"]))
        assert float(row["enhanced_si_sdr"]) > float(row["noisy_si_sdr"])
        assert row["error"] == ""
    averages = (enhanced / calc_metrics.AVERAGES_TXT).read_text(encoding="utf-8")
    assert "3 file(s) scored, 0 failed" in averages
    assert all(metric in averages for metric in PAIR_METRICS)
    run_info = json.loads((enhanced / calc_metrics.RUN_INFO_JSON).read_text())
    assert run_info["seed"] == 3 and run_info["workers"] == 2
    assert run_info["versions"]["pesq"] and run_info["versions"]["pystoi"] and run_info["versions"]["numpy"]
    assert "metric" in completed.stdout and "improvement" in completed.stdout
    assert not list(enhanced.glob(".partial-*"))  # the atomic writes left no temporary file


def test_one_and_two_workers_agree(folders, tmp_path):
    assert calc_metrics.main(args_for(folders, "--workers", "1", "--output_dir", str(tmp_path / "w1"))) == 0
    assert calc_metrics.main(args_for(folders, "--workers", "2", "--output_dir", str(tmp_path / "w2"))) == 0
    assert read_results(tmp_path / "w1") == read_results(tmp_path / "w2")


def test_unpaired_files_are_listed(folders, capsys):
    (folders / "enhanced" / "b.wav").unlink()
    shutil.copy(folders / "noisy" / "a.wav", folders / "noisy" / "extra.wav")
    assert calc_metrics.main(args_for(folders, "--workers", "1")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "extra.wav" in err and "without a clean partner" in err
    assert "b.wav" in err and "without a enhanced partner" in err


def test_a_corrupt_file_fails_alone_with_one_line(folders):
    (folders / "enhanced" / "b.wav").write_bytes(b"RIFF this is not a wave file")
    completed = run_cli(*args_for(folders, "--workers", "2"))
    assert completed.returncode == 1
    assert "Traceback" not in completed.stderr
    errors = [line for line in completed.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "b.wav" in errors[0] and "not a readable audio file" in errors[0]
    rows = {row["file"]: row for row in read_results(folders / "enhanced")}
    assert rows["b"]["error"] and rows["b"]["enhanced_pesq"] == ""
    assert float(rows["a"]["enhanced_pesq"]) > 1 and float(rows["sub/c"]["enhanced_pesq"]) > 1


def test_length_mismatch_small_is_trimmed_large_is_an_error(folders, capsys):
    clean_a, _ = sf.read(folders / "clean" / "a.wav")
    sf.write(folders / "enhanced" / "a.wav", clean_a[:-5], SR, subtype="PCM_16")
    sf.write(folders / "enhanced" / "b.wav", clean_a[: SR // 2], SR, subtype="PCM_16")
    assert calc_metrics.main(args_for(folders, "--workers", "1")) == 1
    err = capsys.readouterr().err
    assert "trimmed 5 sample(s)" in err
    error_lines = [line for line in err.splitlines() if "error:" in line]
    assert len(error_lines) == 1 and "lengths differ" in error_lines[0] and "b.wav" in error_lines[0]


def test_missing_folder_and_missing_clean_dir_are_one_line_errors(folders, capsys):
    assert calc_metrics.main(["--clean_dir", str(folders / "nope"), "--noisy_dir", str(folders / "noisy"),
                              "--enhanced_dir", str(folders / "enhanced")]) == 2
    assert calc_metrics.main(["--noisy_dir", str(folders / "noisy"),
                              "--enhanced_dir", str(folders / "enhanced")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2
    assert "nope" in lines[0] and "does not exist" in lines[0]
    assert "--clean_dir is required unless --dnsmos" in lines[1]


def test_dnsmos_without_clean_references(folders):
    pytest.importorskip("speechmos", reason="speechmos not installed")
    for kind in ("noisy", "enhanced"):  # one file keeps the model's inference time short
        shutil.rmtree(folders / kind / "sub")
        (folders / kind / "b.wav").unlink()
    # in this process, one worker: the model loaded once serves the whole test session
    assert calc_metrics.main(["--noisy_dir", str(folders / "noisy"), "--enhanced_dir",
                              str(folders / "enhanced"), "--dnsmos", "--workers", "1"]) == 0
    rows = read_results(folders / "enhanced")
    assert len(rows) == 1
    assert set(rows[0]) == {"file", "noisy_dnsmos_sig", "noisy_dnsmos_bak", "noisy_dnsmos_ovrl",
                            "enhanced_dnsmos_sig", "enhanced_dnsmos_bak", "enhanced_dnsmos_ovrl",
                            "notes", "error"}
    assert all(1 <= float(row["enhanced_dnsmos_ovrl"]) <= 5 for row in rows)
    # each column is the score of its own file (the noisy one is the only baseline here)
    for kind in ("noisy", "enhanced"):
        audio, sr = sf.read(folders / kind / "a.wav")
        expected = metrics.dnsmos_p835(audio, sr)
        for key, value in expected.items():
            assert float(rows[0][f"{kind}_{key}"]) == pytest.approx(value, abs=1e-5), (kind, key)
    assert rows[0]["noisy_dnsmos_bak"] != rows[0]["enhanced_dnsmos_bak"]


@needs_shared_data
def test_reports_the_pesq_reference_value(tmp_path):
    reference = SHARED_DATA / "pesq_reference"
    for kind, source in (("clean", "speech.wav"), ("noisy", "speech_bab_0dB.wav"),
                         ("enhanced", "speech_bab_0dB.wav")):
        (tmp_path / kind).mkdir()
        shutil.copy(reference / source, tmp_path / kind / "speech.wav")
    completed = run_cli(*args_for(tmp_path, "--workers", "1"))
    assert completed.returncode == 0, completed.stderr
    assert read_results(tmp_path / "enhanced")[0]["enhanced_pesq"] == "1.083234"
    pesq_line = next(line for line in completed.stdout.splitlines() if line.startswith("pesq"))
    assert "1.083234" in pesq_line


def test_dnsmos_without_its_packages_is_a_clear_error(folders, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", types.ModuleType("onnxruntime"))  # imported first
    monkeypatch.setitem(sys.modules, "speechmos", None)  # makes `import speechmos` fail
    assert calc_metrics.main(["--noisy_dir", str(folders / "noisy"), "--enhanced_dir",
                              str(folders / "enhanced"), "--dnsmos"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "module 'speechmos'" in err and "make install-eval" in err


def test_dnsmos_names_the_module_that_is_really_missing(folders, capsys, monkeypatch, tmp_path):
    """speechmos imports librosa without declaring it: installed alone, it fails on librosa, and
    the message must name librosa (not speechmos) and the command that installs both."""
    fake = tmp_path / "site" / "speechmos"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "dnsmos.py").write_text("import librosa\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    for name in [m for m in sys.modules if m == "speechmos" or m.startswith("speechmos.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "onnxruntime", types.ModuleType("onnxruntime"))
    monkeypatch.setitem(sys.modules, "librosa", None)
    assert calc_metrics.main(["--noisy_dir", str(folders / "noisy"), "--enhanced_dir",
                              str(folders / "enhanced"), "--dnsmos"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "module 'librosa'" in err and "speechmos'" not in err and "make install-eval" in err
