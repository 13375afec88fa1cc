"""benchmarks/bench.py's bookkeeping: its JSON keys, the bf16 targets and what it says where
bf16 cannot be measured. The measurements themselves are `make bench`'s."""
import importlib.util

import pytest
import torch

from conftest import REPO

ORIGINAL_KEYS = ("ceiling_conv_gflops", "fwd_gflop", "fwd_s", "fwd_fraction_of_conv_ceiling", "fwd_s_bf16",
                 "bf16_max_abs_diff", "train_step_s", "enh_rtf", "enh_peak_rss_mb_10s", "enh_peak_rss_mb_60s",
                 "metrics_files_per_s_w1", "metrics_files_per_s_w2")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_under_test", REPO / "benchmarks" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_key_of_earlier_results_is_still_written(bench):
    assert set(ORIGINAL_KEYS) <= set(bench.RESULT_KEYS)
    assert len(bench.RESULT_KEYS) == len(set(bench.RESULT_KEYS))
    assert set(bench.PART_KEYS) == set(bench.PARTS)


def verdicts(bench, **results):
    return {name: holds for name, _, _, holds in bench.evaluate_targets(results)}


def test_bf16_targets(bench):
    assert verdicts(bench)["bf16 enhancement speed-up"] is None
    assert verdicts(bench, bf16_enh_speedup=2.71)["bf16 enhancement speed-up"] is True
    assert verdicts(bench, bf16_enh_speedup=1.5)["bf16 enhancement speed-up"] is False
    quality = "bf16 - fp32 PESQ / SI-SDR"
    assert verdicts(bench, bf16_pesq_diff=-0.0011, bf16_sisdr_diff_db=0.014)[quality] is True
    assert verdicts(bench, bf16_pesq_diff=0.03, bf16_sisdr_diff_db=0.0)[quality] is False
    assert verdicts(bench, bf16_pesq_diff=0.0, bf16_sisdr_diff_db=-0.25)[quality] is False


class FakeCeiling:
    def __init__(self, device, dtype=torch.float32, formats=()):
        self.rate = 83.5 if dtype == torch.float32 else 7.7

    def gflops(self, repeats=3):
        return self.rate


def test_without_bf16_units_the_bf16_part_says_why(bench, monkeypatch):
    import benchlib.bf16
    import echo.util.precision

    without_units = echo.util.precision.cpu_bf16_units({"avx2", "avx512f"})
    monkeypatch.setattr(echo.util.precision, "bf16_units", lambda device, flags=None: without_units)
    monkeypatch.setattr(benchlib.bf16, "CeilingConv", FakeCeiling)
    measured = benchlib.bf16.bench_bf16(torch.device("cpu"), quick=True)
    assert measured["fwd_s_bf16"] is None and measured["bf16_fwd_speedup"] is None
    note = measured["notes"]["fwd_s_bf16"]
    assert note.startswith("not measured: the CPU has no bf16 units") and "7.7 GFLOP/s in bf16 vs 83.5" in note
    assert bench.describe_bf16_units(torch.device("cpu")).startswith("no: the CPU has no bf16 units")


def test_the_quality_part_needs_a_checkpoint(bench):
    import benchlib.bf16

    measured = benchlib.bf16.bench_bf16_quality(torch.device("cpu"), quick=True, ckpt=None)
    assert all(measured[key] is None for key in benchlib.bf16.QUALITY_KEYS)
    assert measured["notes"]["bf16_pesq_diff"] == "needs a trained checkpoint: --ckpt PATH"


def test_bad_arguments_stop_with_one_line(bench, tmp_path):
    for argv, message in ((["--ckpt", str(tmp_path / "none.ckpt")], "no such file"),
                          (["--enh-steps", "0"], "at least 1"), (["--only", "fwd,gpu"], "unknown part")):
        with pytest.raises(SystemExit) as stop:
            args = bench.build_parser().parse_args(argv)
            bench.check_args(args)
            bench.selected_parts(args)
        assert message in str(stop.value)


def test_bf16_training_parity_target(bench):
    name = "bf16 training valid loss vs fp32"
    assert verdicts(bench)[name] is None
    assert verdicts(bench, bf16_valid_loss_rel_diff=-0.021)[name] is True
    assert verdicts(bench, bf16_valid_loss_rel_diff=0.08)[name] is False


def test_bf16_parity_compares_each_run_with_the_float32_run_of_the_same_seed(bench, monkeypatch, tmp_path):
    import benchlib.parity
    import echo.util.precision

    with_units = echo.util.precision.cpu_bf16_units({"avx512f", "avx512_bf16"})
    monkeypatch.setattr(echo.util.precision, "bf16_units", lambda device, flags=None: with_units)
    calls = []
    fake = {("32-true", 0): 20.0, ("bf16-mixed", 0): 20.5, ("32-true", 1): 19.0}

    def fake_run(data, log_dir, precision, seed, steps, device, threads):
        calls.append((precision, seed, steps))
        assert (data / "train" / "clean").is_dir()
        return fake[precision, seed], 0.5 if precision == "32-true" else 0.25

    monkeypatch.setattr(benchlib.parity, "train_run", fake_run)
    measured = benchlib.parity.bench_bf16_parity(torch.device("cpu"), quick=True, threads=1)
    assert calls == [("32-true", 0, 40), ("bf16-mixed", 0, 40), ("32-true", 1, 40)]
    assert measured["bf16_valid_loss_rel_diff"] == pytest.approx(0.025)
    assert measured["seed_valid_loss_rel_diff"] == pytest.approx(-0.05)
    assert measured["parity_s_per_step_bf16"] == 0.25 and set(benchlib.parity.PARITY_KEYS) <= set(measured)


def test_bf16_parity_is_not_run_without_bf16_units(bench, monkeypatch):
    import benchlib.parity
    import echo.util.precision

    without_units = echo.util.precision.cpu_bf16_units({"avx2", "avx512f"})
    monkeypatch.setattr(echo.util.precision, "bf16_units", lambda device, flags=None: without_units)
    monkeypatch.setattr(benchlib.parity, "train_run", lambda *a: pytest.fail("trained without bf16 units"))
    measured = benchlib.parity.bench_bf16_parity(torch.device("cpu"), quick=True, threads=1)
    assert set(measured["notes"]) == set(benchlib.parity.PARITY_KEYS)
    assert all("not measured" in note for note in measured["notes"].values())


def test_parity_reads_the_last_validation_loss_and_refuses_a_run_without_one(bench, tmp_path):
    import benchlib.parity

    run = tmp_path / "echo" / "version_0"
    run.mkdir(parents=True)
    (run / "metrics.csv").write_text("epoch,step,train_loss,valid_loss\n0,19,30.0,\n0,19,,25.5\n1,39,,22.25\n")
    assert benchlib.parity.last_valid_loss(tmp_path) == 22.25
    (run / "metrics.csv").write_text("epoch,step,train_loss,valid_loss\n0,19,30.0,\n")
    with pytest.raises(RuntimeError, match="no valid_loss"):
        benchlib.parity.last_valid_loss(tmp_path)
