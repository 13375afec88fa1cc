"""benchmarks/gpu_check.py on a machine without a GPU: it checks its arguments, says there is
nothing to measure and exits 0. Its CPU-side pieces (recording the network's op calls, the
parity verdict, the summary) are tested here too, since the GPU run itself cannot be."""
import importlib.util
import json
import subprocess
import sys

import pytest
import torch

from conftest import REPO, TINY_BACKBONE

SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_check = load_gpu_check()


def run_script(*arguments):
    return subprocess.run([sys.executable, str(SCRIPT), *arguments], capture_output=True, text=True, cwd=REPO,
                          timeout=120)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible: the script would measure it")
def test_without_a_gpu_it_says_so_and_exits_0(tmp_path):
    out = tmp_path / "check.json"
    results_before = sorted((REPO / "benchmarks" / "results").iterdir())
    result = run_script("--out", str(out), "--only", "parity,rtf")
    assert result.returncode == 0, result.stderr
    assert "no CUDA GPU is visible" in result.stdout and "parity, rtf" in result.stdout
    assert not out.exists()  # nothing measured, nothing written
    assert sorted((REPO / "benchmarks" / "results").iterdir()) == results_before


@pytest.mark.parametrize("arguments,message", [
    (["--only", "parity,warp"], "unknown part(s) warp"),
    (["--only", "ddp", "--skip", "ddp"], "leave no part to run"),
    (["--frames", "100"], "not a multiple of 64"),
    (["--time_budget", "0"], "positive number of seconds"),
    (["--batch_size", "0"], "0 is not >= 1"),
    (["--ddp_steps", "many"], "'many' is not a whole number"),
])
def test_bad_arguments_are_refused_before_anything_runs(arguments, message):
    result = run_script(*arguments)
    assert result.returncode == 2
    assert message in result.stderr.strip().splitlines()[-1]


def test_out_must_be_a_file_that_can_be_written(tmp_path):
    result = run_script("--out", str(tmp_path))
    assert result.returncode == 2 and "is a folder" in result.stderr


def test_every_flag_has_a_help_text():
    for action in gpu_check.build_parser()._actions:
        assert action.help, action.option_strings


def test_records_the_op_calls_of_the_network():
    from echo.backbones import NCSNppDeform
    from echo.backbones.ncsnpp_utils import up_or_down_sampling

    original = up_or_down_sampling.upfirdn2d
    net = NCSNppDeform(**TINY_BACKBONE).eval()
    x, t = gpu_check.backbone_input("cpu", frames=64)
    calls = gpu_check.record_op_calls(net, x, t)
    assert up_or_down_sampling.upfirdn2d is original  # put back afterwards
    resampling = {(a["up"], a["down"]) for a, _ in calls["upfirdn2d"]}
    assert resampling == {(2, 1), (1, 2)}  # the network's FIR up- and downsampling
    assert all(count >= 1 and a["kernel"].shape == (4, 4) for a, count in calls["upfirdn2d"])
    assert [a["act"] for a, _ in calls["fused_bias_act"]] == ["silu"]  # the time embedding
    shapes = [tuple(a["shape"]) for a, _ in calls["upfirdn2d"]]
    assert len(shapes) == len(set((tuple(a["shape"]), a["up"], a["down"]) for a, _ in calls["upfirdn2d"]))


def test_parity_verdict_uses_the_stated_tolerance(monkeypatch):
    import os

    def doubled(error):
        def run(a):
            shift = error if os.environ.get("ECHO_OPS") == "cuda" else 0.0  # what a wrong kernel would add
            return a * 2 + shift
        return run

    x = torch.linspace(-1, 1, 12).reshape(1, 1, 3, 4)
    grad = torch.ones_like(x)
    good = gpu_check.parity_row("op", doubled(0.0), [x], grad, "float32")
    assert good["passed"] and good["forward"]["max_abs_diff"] == 0.0
    assert good["forward"]["tolerance"] == pytest.approx(2 * gpu_check.TOLERANCES["float32"])
    bad = gpu_check.parity_row("op", doubled(1e-3), [x], grad, "float32")
    assert not bad["passed"] and not bad["forward"]["passed"] and bad["grad_0"]["passed"]
    assert bad["forward"]["max_abs_diff"] == pytest.approx(1e-3, rel=1e-3)


def test_summary_of_a_report():
    report = {
        "environment": {"gpus": [{"name": "Test GPU"}], "torch": "2.x", "git_commit": "abc"},
        "parts": {
            "parity": {"passed": True, "failed_rows": 0, "build_s": {"upfirdn2d": 40.0},
                       "rows": [{"dtype": "float16", "forward": {"max_abs_diff": 1e-3, "tolerance": 1e-2},
                                 "grad_0": {"max_abs_diff": 2e-3, "tolerance": 1e-2}}]},
            "speed": {"train_batch": 8, "cuda": {"forward_ms": 10, "train_step_ms": 100},
                      "native": {"forward_ms": 12, "train_step_ms": 120}},
            "bf16": {"skipped": "no bfloat16"},
            "ddp": {"passed": False, "gpus": 2, "global_step": None, "wall_s_including_start_up": 30.0,
                    "error": "boom"},
            "rtf": {"samplers": {"N=20": {"rtf": 0.2}, "ddim N=3": {"skipped": "predictor 'ddim' is not registered"}}},
        },
    }
    text = "\n".join(gpu_check.summary_lines(report))
    assert "float16 0.2" in text and "no bfloat16" in text and "boom" in text and "not registered" in text
    json.dumps(report)


def test_default_output_name():
    env = {"gpus": [{"name": "NVIDIA H100 80GB HBM3"}] * 2}
    out = gpu_check.default_out(env)
    assert out.parent == REPO / "benchmarks" / "results"
    assert out.name.startswith("gpu-check-") and out.name.endswith("-2x-nvidia-h100-80gb-hbm3.json")


def test_the_checks_run_end_to_end_on_the_cpu_with_emulated_kernels(monkeypatch, tmp_path):
    """Every part but DDP, on the CPU, with a tiny network and the CUDA kernels replaced by the
    PyTorch emulation of their contract from test_ops: the script's own code runs as on a GPU."""
    import importlib
    import os

    from test_ops import EmulatedFusedBiasActExtension, EmulatedUpfirdn2dExtension

    from echo.backbones import NCSNppDeform
    from echo.backbones.ncsnpp_utils.op import build
    from echo.model import ScoreModel

    monkeypatch.setitem(build._built, "upfirdn2d", EmulatedUpfirdn2dExtension)
    monkeypatch.setitem(build._built, "fused_bias_act", EmulatedFusedBiasActExtension)

    def select_backend(device, extensions=()):
        kernels = os.environ.get("ECHO_OPS") in ("cuda", "auto")
        return build.BackendChoice("cuda" if kernels else "native", "emulated for the test")

    for module in ("upfirdn2d", "fused_act"):
        monkeypatch.setattr(importlib.import_module(f"echo.backbones.ncsnpp_utils.op.{module}"), "select_backend",
                            select_backend)
    # the deformable layers included: their sampling positions stay in float32 under bf16
    # autocast, so the bf16 part's tolerance holds for them too
    tiny = dict(TINY_BACKBONE)
    monkeypatch.setattr(gpu_check.common, "paper_backbone", lambda device: NCSNppDeform(**tiny).to(device))
    monkeypatch.setattr(gpu_check.common, "paper_model", lambda device: ScoreModel(**tiny).to(device))
    out = tmp_path / "report.json"
    # the 300 s budget is sized for a GPU; bf16 emulated on a busy CPU can use it up and skip rtf
    args = gpu_check.build_parser().parse_args(["--out", str(out), "--repeats", "1", "--batch_size", "2",
                                                "--frames", "64", "--time_budget", "3600"])
    env = {"gpus": [{"name": "emulated"}], "torch": torch.__version__, "git_commit": None}
    status = gpu_check.run_checks(args, ["parity", "speed", "bf16", "rtf"], device=torch.device("cpu"), env=env)

    report = json.loads(out.read_text())
    assert status == 0 and report["passed"], {k: v.get("error") for k, v in report["parts"].items()}
    parity = report["parts"]["parity"]
    assert {row["dtype"] for row in parity["rows"]} == {"float32", "float16", "bfloat16"}
    assert {row["op"] for row in parity["rows"]} == {"upfirdn2d", "fused_bias_act"}
    assert all("grad_0" in row for row in parity["rows"])
    speed = report["parts"]["speed"]
    assert speed["cuda"]["train_step_ms"] > 0 and speed["native"]["forward_ms"] > 0 and "kernels_speedup" in speed
    bf16 = report["parts"]["bf16"]
    assert bf16["passed"] and bf16["train_losses_finite"] and bf16["forward_relative_diff"] < gpu_check.BF16_TOLERANCE
    samplers = report["parts"]["rtf"]["samplers"]
    assert samplers["N=20"]["rtf"] > 0 and samplers["N=20"]["nfe"] == 20
    few = samplers["ddim N=3"]
    assert few.get("nfe") == 3 or "not registered" in few["skipped"]


def test_the_ddp_part_on_two_cpu_processes(monkeypatch):
    from conftest import TINY_ARGS

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    args = gpu_check.build_parser().parse_args(["--ddp_steps", "2", "--batch_size", "2", "--frames", "64"])
    deadline = gpu_check.time.perf_counter() + 240
    report = gpu_check.check_ddp(args, deadline, accelerator="cpu", devices=2,
                                 extra_args=["--num_workers", "0", *TINY_ARGS])
    assert report["passed"], report
    assert report["global_step"] == 2 and report["gpus"] == 2 and report["losses_finite"]
