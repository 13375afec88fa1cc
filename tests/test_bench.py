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
