"""demo/run_demo.py: every step runs and leaves its outputs (a smoke test: the budget is far too
small to expect an improvement, so none is asserted)."""
import csv
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO
from demo import run_demo
from echo.util import allocator

# 2 training steps, 2 test files, one network evaluation per file
TINY_RUN = ["--n_train", "4", "--n_test", "2", "--max_steps", "2", "--train_minutes", "0", "--N", "1"]


def run(*args):
    return subprocess.run([sys.executable, "demo/run_demo.py", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("demo") / "out"
    result = run("--out_dir", str(out_dir), *TINY_RUN)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out_dir, result


def test_every_step_leaves_its_outputs(demo_run):
    out_dir, result = demo_run
    noisy = sorted(p.name for p in (out_dir / "data" / "test" / "noisy").glob("*.wav"))
    enhanced = sorted(p.name for p in (out_dir / "enhanced").glob("*.wav"))
    assert len(noisy) == 2 and enhanced == noisy
    assert list((out_dir / "logs" / "demo").glob("version_*/checkpoints/last.ckpt"))
    results = out_dir / "results"
    with open(results / "_results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and "enhanced_pesq" in rows[0] and "noisy_si_sdr" in rows[0]
    assert (results / "_avg_results.txt").is_file()
    for png in ("spectrograms.png", "metrics.png"):
        assert (results / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for step in ("1_data", "2_train", "3_enhance", "4_metrics", "5_plots"):
        assert (out_dir / "logs" / f"{step}.log").is_file()


def test_report_and_run_info(demo_run):
    out_dir, result = demo_run
    for text in ("PESQ", "SI-SDR", "enhanced beats noisy on SI-SDR and PESQ:", "spectrograms.png"):
        assert text in result.stdout
    info = json.loads((out_dir / run_demo.RUN_INFO).read_text())
    assert info["status"] == "done" and info["trained_steps"] == 2 and info["test_files"] == 2
    assert set(info["seconds"]) == {"data", "train", "enhance", "metrics", "plots", "real_clip"}
    # the real recording, enhanced by the demo's model and by the shipped model, and its figure
    name = run_demo.REAL_CLIP.name
    for folder in ("demo_model", "shipped_model"):
        assert (out_dir / "real_clip" / folder / name).is_file()
    assert (out_dir / "results" / run_demo.REAL_CLIP_PNG).is_file()
    assert "real recording:" in result.stdout
    assert set(info["results"]["pesq"]) == {"noisy", "enhanced"}
    # train.py, run as a command on a CPU, re-execs under the allocator settings; enhancement does not
    train_info = json.loads(next((out_dir / "logs" / "demo").glob("version_*/run_info.json")).read_text())
    enhance_info = json.loads((out_dir / "enhanced" / "run_info.json").read_text())
    if allocator.reuse_env(os.environ, gpu_expected=allocator.gpu_expected([], "--accelerator")) is not None:
        assert allocator.TUNABLES in train_info["allocator"]
        assert allocator.TUNABLES not in enhance_info["allocator"]


def test_an_earlier_run_is_kept_without_overwrite(demo_run):
    out_dir, _ = demo_run
    result = run("--out_dir", str(out_dir), *TINY_RUN)
    assert result.returncode != 0 and "--overwrite" in result.stderr
    assert (out_dir / "results" / "metrics.png").is_file()


def test_overwrite_never_empties_a_folder_the_demo_did_not_write(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit, match="not written by the demo"):
        run_demo.prepare_out_dir(tmp_path, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_overwrite_replaces_an_earlier_run(tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    run_demo.write_run_info(out_dir, {"status": "done"})
    (out_dir / "stale.txt").write_text("old")
    run_demo.prepare_out_dir(out_dir, overwrite=True)
    assert out_dir.is_dir() and not any(out_dir.iterdir())


def test_training_budget_becomes_lightnings_max_time():
    assert run_demo.max_time_text(8) == "00:00:08:00"
    assert run_demo.max_time_text(0.5) == "00:00:00:30"
    assert run_demo.max_time_text(90) == "00:01:30:00"
