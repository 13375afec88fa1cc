#!/usr/bin/env python
"""Whether ECHO's CUDA kernels are right and fast on this GPU machine, in one command (<= 5 min).

    python benchmarks/gpu_check.py [--out PATH] [--only PARTS] [--skip PARTS] [--time_budget S]
                                   [--repeats N] [--batch_size B] [--frames T] [--ddp_steps S]

Parts (all by default), each a section of the JSON written to --out:

  parity  the CUDA kernels (upfirdn2d, fused_bias_act) against the PyTorch path, forward and
          backward, in float32, float16 and bfloat16, for every distinct call the paper-size
          network makes (recorded from one forward pass at T frames). Both are compared with
          the PyTorch path in float64 on the same rounded inputs: a row passes when the kernel's
          max abs difference is within the stated tolerance times max |reference|
          (float32 1e-5, float16 1e-2, bfloat16 4e-2). The kernels' build time is recorded.
  speed   the paper-size network with ECHO_OPS=cuda and ECHO_OPS=native: forward at batch 1 and
          a training step (loss, backward, Adam, EMA) at --batch_size, median of --repeats.
  bf16    the same forward and training step under bfloat16 autocast: the forward's relative
          L2 difference from float32 (passes within 0.05), finite losses, the times.
  ddp     train.py with --strategy ddp over all visible GPUs for --ddp_steps steps on generated
          data (paper-size model, --batch_size per GPU): finite losses, the step count reached.
  rtf     enhancement real-time factor (wall seconds per audio second) of a ~2.5 s file with
          the paper-size model: the default sampler at N = 20, and the few-step sampler
          (predictor "ddim", N = 3) when it is registered.

On a machine without a CUDA GPU it checks its arguments, says that there is nothing to measure
and exits with status 0 without writing anything. With a GPU the exit status is 1 when a parity
row, the bf16 comparison, the DDP run or any part failed, 0 otherwise; parts that would not fit
into --time_budget are recorded as skipped.
"""
import argparse
import contextlib
import csv
import datetime
import importlib
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `python benchmarks/gpu_check.py` puts benchmarks/, not the repository, on the path
from echo.util.other import git_commit, positive_int  # noqa: E402

RESULTS_DIR = REPO / "benchmarks" / "results"
SHARED_DATA = REPO.parent / "shared" / "data"
PARTS = ("parity", "speed", "bf16", "ddp", "rtf")
# max |kernel - float64 reference| allowed, relative to max |reference|: a few units of the
# format's rounding (2^-24, 2^-11, 2^-8) times the taps a 4x4 FIR sums
TOLERANCES = {"float32": 1e-5, "float16": 1e-2, "bfloat16": 4e-2}
# |bf16 autocast output - float32 output| / |float32 output| (L2) of the whole network: bf16 keeps
# 8 bits, about 0.4 % per rounding; measured 0.7-1.9 % for the network without deformable convs
BF16_TOLERANCE = 0.05
FEW_STEP_PREDICTOR, FEW_STEP_N = "ddim", 3
DEFAULT_N = 20
ENH_SECONDS = 2.5


def build_parser():
    parser = argparse.ArgumentParser(
        description="Check ECHO's CUDA kernels (parity, speed), bf16, DDP and enhancement speed on this GPU "
                    "machine; writes JSON. Without a GPU it says so and exits 0.")
    parser.add_argument("--out", default="auto",
                        help="JSON output; auto = benchmarks/results/gpu-check-<date>-<gpu>.json (default auto)")
    parser.add_argument("--only", default="", help=f"comma-separated parts to run ({','.join(PARTS)}; default all)")
    parser.add_argument("--skip", default="", help="comma-separated parts to leave out (default none)")
    parser.add_argument("--time_budget", type=float, default=300.0,
                        help="seconds for the whole check; parts that would start after it are skipped (default 300)")
    parser.add_argument("--repeats", type=positive_int, default=10,
                        help="timed repetitions per speed measurement, after 2 warm-up runs (default 10)")
    parser.add_argument("--batch_size", type=positive_int, default=8,
                        help="examples per GPU in the training steps, the paper's 8 (default 8)")
    parser.add_argument("--frames", type=positive_int, default=256,
                        help="STFT frames of the network input, the paper's 256; a multiple of 64 (default 256)")
    parser.add_argument("--ddp_steps", type=positive_int, default=20, help="training steps of the DDP run (default 20)")
    return parser


def check_arguments(args, parser):
    """Every problem with the arguments as one parser error (exit 2), before anything is measured."""
    def parts_of(text, flag):
        names = [p.strip() for p in text.split(",") if p.strip()]
        unknown = [p for p in names if p not in PARTS]
        if unknown:
            parser.error(f"{flag}: unknown part(s) {', '.join(unknown)}; known: {', '.join(PARTS)}")
        return names

    only, skip = parts_of(args.only, "--only"), parts_of(args.skip, "--skip")
    parts = [p for p in PARTS if (not only or p in only) and p not in skip]
    if not parts:
        parser.error("--only/--skip leave no part to run")
    if not math.isfinite(args.time_budget) or args.time_budget <= 0:
        parser.error(f"--time_budget must be a positive number of seconds, got {args.time_budget}")
    if args.frames % 64:
        parser.error(f"--frames {args.frames} is not a multiple of 64 (the network halves it 6 times)")
    if args.out != "auto":
        out = Path(args.out)
        if out.is_dir():
            parser.error(f"--out {out} is a folder; give a file name such as {out / 'gpu-check.json'}")
        folder = next((p for p in [out.absolute().parent, *out.absolute().parents] if p.exists()), None)
        if folder is None or not folder.is_dir() or not os.access(folder, os.W_OK):
            parser.error(f"--out {out}: cannot create files in {out.parent}")
    return parts


# --------------------------------------------------------------------------------------------
# Helpers


@contextlib.contextmanager
def ops_mode(mode):
    """ECHO_OPS for the code inside; the ops read it at every call."""
    previous = os.environ.get("ECHO_OPS")
    os.environ["ECHO_OPS"] = mode
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("ECHO_OPS", None)
        else:
            os.environ["ECHO_OPS"] = previous


def synchronize(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_median(fn, device, repeats, warmup=2):
    """Median wall milliseconds of ``fn`` over ``repeats`` calls, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - started) * 1e3)
    return round(statistics.median(times), 3), [round(t, 3) for t in times]


def environment():
    import torch

    from echo.backbones.ncsnpp_utils.op import build

    gpus = [torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())]
    toolkit = build.cuda_toolkit() if torch.version.cuda else None
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "git_commit": git_commit(REPO, full=True),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "gpus": [{"name": p.name, "capability": f"{p.major}.{p.minor}", "memory_gb": round(p.total_memory / 2**30, 1)}
                 for p in gpus],
        "cuda_toolkit": None if toolkit is None else {"home": toolkit.home, "how": toolkit.how},
        "arch_list": build.arch_list_for_build(),
        "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32},
        "host": f"{platform.machine()}, {os.cpu_count()} cores",
    }


def default_out(env):
    name = env["gpus"][0]["name"] if env["gpus"] else "gpu"
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    count = len(env["gpus"])
    return RESULTS_DIR / f"gpu-check-{datetime.date.today().isoformat()}-{count}x-{slug}.json"


def paper_backbone(device):
    import torch

    from echo.backbones import NCSNppDeform

    torch.manual_seed(0)
    return NCSNppDeform().to(device)


def paper_model(device):
    import torch

    from echo.model import ScoreModel

    torch.manual_seed(0)
    return ScoreModel().to(device)


def backbone_input(device, frames, batch=1):
    import torch

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 2, 256, frames, dtype=torch.complex64, generator=generator)
    return x.to(device), torch.full((batch,), 0.5, device=device)


# --------------------------------------------------------------------------------------------
# Part: kernel parity


def record_op_calls(net, x, t):
    """The distinct calls of upfirdn2d and fused_bias_act one forward pass of ``net`` makes:
    {op: [(arguments, calls per forward)]}, with the arguments as the parity check needs them."""
    import torch

    upfirdn2d_module = importlib.import_module("echo.backbones.ncsnpp_utils.op.upfirdn2d")
    fused_act_module = importlib.import_module("echo.backbones.ncsnpp_utils.op.fused_act")
    originals = {"upfirdn2d": upfirdn2d_module.upfirdn2d, "fused_bias_act": fused_act_module.fused_bias_act}
    calls = {"upfirdn2d": {}, "fused_bias_act": {}}

    def note(op, key, arguments):
        entry = calls[op].setdefault(key, [arguments, 0])
        entry[1] += 1

    def upfirdn2d(x, kernel, up=1, down=1, pad=(0, 0)):
        pad = tuple(int(p) for p in pad)
        key = (tuple(x.shape), tuple(kernel.tolist() if kernel.dim() == 1 else kernel.flatten().tolist()),
               tuple(kernel.shape), int(up), int(down), pad)
        note("upfirdn2d", key, {"shape": list(x.shape), "kernel": kernel.detach().float().cpu(),
                                "up": int(up), "down": int(down), "pad": list(pad)})
        return originals["upfirdn2d"](x, kernel, up=up, down=down, pad=pad)

    def fused_bias_act(x, bias=None, act="lrelu", alpha=0.2, gain=None):
        key = (tuple(x.shape), bias is None, act, float(alpha), gain)
        note("fused_bias_act", key, {"shape": list(x.shape), "bias": bias is not None, "act": act,
                                     "alpha": float(alpha), "gain": gain})
        return originals["fused_bias_act"](x, bias, act=act, alpha=alpha, gain=gain)

    # the network's modules hold their own references (from .op import upfirdn2d): replace them all
    recorders = {"upfirdn2d": upfirdn2d, "fused_bias_act": fused_bias_act}
    replaced = []
    for module in list(sys.modules.values()):
        if not getattr(module, "__name__", "").startswith("echo"):
            continue
        for name, original in originals.items():
            if getattr(module, name, None) is original:
                setattr(module, name, recorders[name])
                replaced.append((module, name, original))
    try:
        with torch.no_grad():
            net(x, t)
    finally:
        for module, name, original in replaced:
            setattr(module, name, original)
    return {op: list(found.values()) for op, found in calls.items()}


def max_abs(a, b=None):
    """max |a - b| (|a| without b), in double precision; complex tensors by their modulus."""
    import torch

    def wide(z):
        return z.to(torch.complex128) if z.is_complex() else z.double()

    return float((wide(a) - (0 if b is None else wide(b))).abs().max().item())


def parity_row(op_name, run, inputs, grad_out, dtype_name):
    """Forward and backward of ``run`` (a function of the inputs) with the kernels, the PyTorch
    path in the same dtype, and the PyTorch path in float64; the comparison as a JSON row."""
    import torch

    def forward_backward(mode, tensors):
        with ops_mode(mode):
            leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
            y = run(*leaves)
            grads = torch.autograd.grad(y, leaves, grad_out.to(y.dtype))
        return y.detach(), [g.detach() for g in grads]

    y_kernel, g_kernel = forward_backward("cuda", inputs)
    y_native, g_native = forward_backward("native", inputs)
    y_ref, g_ref = forward_backward("native", [t.double() for t in inputs])
    tolerance = TOLERANCES[dtype_name]
    row = {"op": op_name, "dtype": dtype_name, "tolerance_relative": tolerance}
    passed = True
    for label, kernel, native, reference in [("forward", y_kernel, y_native, y_ref),
                                             *[(f"grad_{i}", gk, gn, gr) for i, (gk, gn, gr)
                                               in enumerate(zip(g_kernel, g_native, g_ref))]]:
        scale = max_abs(reference)
        difference = max_abs(kernel, reference)
        ok = math.isfinite(difference) and difference <= tolerance * max(scale, 1e-30)
        passed &= ok
        row[label] = {"max_abs_diff": difference, "tolerance": tolerance * scale, "passed": ok,
                      "reference_max_abs": scale, "native_max_abs_diff": max_abs(native, reference),
                      "kernel_vs_native_max_abs_diff": max_abs(kernel, native)}
    row["passed"] = passed
    return row


def check_parity(device, frames):
    import torch

    from echo.backbones.ncsnpp_utils.op import build, fused_bias_act, upfirdn2d

    started = time.perf_counter()
    builds = {}
    for name in build.EXTENSION_SOURCES:
        t0 = time.perf_counter()
        build.load_extension(name)  # OpsUnavailableError ends the part with its reason
        builds[name] = round(time.perf_counter() - t0, 1)
    net = paper_backbone(device).eval()
    with ops_mode("native"):
        calls = record_op_calls(net, *backbone_input(device, frames))
    del net
    rows = []
    generator = torch.Generator(device=device).manual_seed(0)
    for dtype_name, dtype in (("float32", torch.float32), ("float16", torch.float16), ("bfloat16", torch.bfloat16)):
        for arguments, count in calls["upfirdn2d"]:
            x = torch.randn(arguments["shape"], device=device, generator=generator).to(dtype)
            kernel = arguments["kernel"].to(device)
            up, down, pad = arguments["up"], arguments["down"], tuple(arguments["pad"])

            def run(a, kernel=kernel, up=up, down=down, pad=pad):
                # the network builds its FIR kernel in the activations' dtype (up_or_down_sampling)
                return upfirdn2d(a, kernel.to(a.dtype), up=up, down=down, pad=pad)

            with torch.no_grad():
                y_shape = upfirdn2d(x.float(), kernel, up=up, down=down, pad=pad).shape
            grad_out = torch.randn(y_shape, device=device, generator=generator).to(dtype)
            row = parity_row("upfirdn2d", run, [x], grad_out, dtype_name)
            row.update(shape=arguments["shape"], kernel_shape=list(kernel.shape), up=up, down=down, pad=list(pad),
                       calls_per_forward=count)
            rows.append(row)
        for arguments, count in calls["fused_bias_act"]:
            x = torch.randn(arguments["shape"], device=device, generator=generator).to(dtype)
            inputs = [x]
            if arguments["bias"]:
                inputs.append(torch.randn(arguments["shape"][1], device=device, generator=generator).to(dtype))

            def run(a, b=None, arguments=arguments):
                return fused_bias_act(a, b, act=arguments["act"], alpha=arguments["alpha"], gain=arguments["gain"])

            grad_out = torch.randn(arguments["shape"], device=device, generator=generator).to(dtype)
            row = parity_row("fused_bias_act", run, inputs, grad_out, dtype_name)
            row.update(shape=arguments["shape"], bias=arguments["bias"], act=arguments["act"],
                       calls_per_forward=count)
            rows.append(row)
    failed = [r for r in rows if not r["passed"]]
    return {"passed": not failed, "build_s": builds, "rows": rows, "failed_rows": len(failed),
            "seconds": round(time.perf_counter() - started, 1)}


# --------------------------------------------------------------------------------------------
# Parts: speed and bf16


def train_step_fn(*args, **kwargs):
    sys.path.insert(0, str(REPO / "benchmarks"))
    from benchlib.speed import train_step_fn as step_fn  # imports torch: only once a part runs

    return step_fn(*args, **kwargs)


def training_setup(device, batch_size, frames):
    import torch
    from torch.optim.swa_utils import AveragedModel

    from echo.ema import EMA

    model = paper_model(device).train()
    optimizer = model.configure_optimizers()
    averaged = AveragedModel(model, multi_avg_fn=EMA(decay=0.999)._kwargs["multi_avg_fn"], use_buffers=False)
    generator = torch.Generator().manual_seed(1)
    shape = (batch_size, 1, 256, frames)
    clean = 0.3 * torch.randn(shape, dtype=torch.complex64, generator=generator)
    noisy = clean + 0.3 * torch.randn(shape, dtype=torch.complex64, generator=generator)
    return model, optimizer, averaged, (clean.to(device), noisy.to(device))


def measure_speed(device, frames, batch_size, repeats, autocast_dtype=None, modes=("cuda", "native")):
    import torch

    results = {}
    net = paper_backbone(device).eval()
    results["parameters_m"] = round(sum(p.numel() for p in net.parameters()) / 1e6, 2)
    x, t = backbone_input(device, frames)
    model, optimizer, averaged, batch = training_setup(device, batch_size, frames)
    step = train_step_fn(model, optimizer, averaged, batch, autocast_dtype)
    from echo.backbones.ncsnpp_utils.op import OpsUnavailableError

    for mode in modes:
        try:
            with ops_mode(mode), torch.inference_mode(), \
                    torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                forward_ms, forward_runs = timed_median(lambda: net(x, t), device, repeats)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            with ops_mode(mode):
                step_ms, step_runs = timed_median(step, device, repeats)
        except OpsUnavailableError as err:  # the other mode's numbers are still worth having
            results[mode] = {"error": str(err)}
            continue
        results[mode] = {
            "forward_ms": forward_ms, "forward_frames_per_s": round(frames / forward_ms * 1e3, 1),
            "train_step_ms": step_ms, "train_examples_per_s": round(batch_size / step_ms * 1e3, 2),
            "train_peak_memory_gb": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
            if device.type == "cuda" else None,
            "forward_ms_runs": forward_runs, "train_step_ms_runs": step_runs,
        }
    if all("forward_ms" in results.get(mode, {}) for mode in ("cuda", "native")):
        results["kernels_speedup"] = {
            "forward": round(results["native"]["forward_ms"] / results["cuda"]["forward_ms"], 3),
            "train_step": round(results["native"]["train_step_ms"] / results["cuda"]["train_step_ms"], 3)}
    return results


def check_speed(device, args):
    result = measure_speed(device, args.frames, args.batch_size, args.repeats)
    result.update(frames=args.frames, forward_batch=1, train_batch=args.batch_size)
    return result


def check_bf16(device, args):
    """The network's forward under bfloat16 autocast against float32 (relative L2 difference,
    within BF16_TOLERANCE), a few training steps under it (finite losses), and its speed."""
    import torch

    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return {"skipped": f"{torch.cuda.get_device_name(device)} has no bfloat16 support"}
    net = paper_backbone(device).eval()
    x, t = backbone_input(device, args.frames)
    with torch.inference_mode():
        reference = net(x, t).to(torch.complex128)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = net(x, t).to(torch.complex128)
    relative = float((out - reference).abs().norm() / reference.abs().norm())
    timing = measure_speed(device, args.frames, args.batch_size, args.repeats, torch.bfloat16, modes=("auto",))
    timing = {**timing.pop("auto"), **timing}
    model, optimizer, averaged, batch = training_setup(device, args.batch_size, args.frames)
    step = train_step_fn(model, optimizer, averaged, batch, torch.bfloat16)
    losses = [float(step().detach()) for _ in range(3)]
    finite = all(math.isfinite(v) for v in losses)
    forward_ok = math.isfinite(relative) and relative <= BF16_TOLERANCE
    return {"forward_relative_diff": relative, "tolerance_relative": BF16_TOLERANCE,
            "forward_max_abs_diff_vs_float32": max_abs(out, reference), "forward_reference_max_abs": max_abs(reference),
            "train_losses_finite": finite, "train_losses": losses, "passed": forward_ok and finite, **timing}


# --------------------------------------------------------------------------------------------
# Part: DDP


def ddp_dataset(folder, examples, batch_size, frames):
    """Generated training data with ``examples`` pairs, so that the whole run is one epoch: each
    epoch end validates and writes checkpoints (about 1 GB each at paper size), which would
    dominate 20 steps. A few distinct files are generated and linked under more names."""
    import shutil

    from echo.data.synth import make_dataset

    distinct = min(examples, 4 * batch_size)
    seconds = frames * 128 / 16000 + 0.5  # longer than one crop
    data = make_dataset(folder / "data", n_train=distinct, n_valid=2, n_test=0, seconds=seconds, seed=0)
    for side in ("clean", "noisy"):
        files = sorted((data / "train" / side).glob("*.wav"))
        for index in range(distinct, examples):
            target = data / "train" / side / f"copy_{index:05d}.wav"
            try:
                os.link(files[index % distinct], target)
            except OSError:  # a file system without hard links
                shutil.copyfile(files[index % distinct], target)
    return data


def check_ddp(args, deadline, accelerator="gpu", devices=None, extra_args=()):
    """train.py under DDP on ``devices`` (all visible GPUs by default) of ``accelerator``, as a
    user starts it; ``extra_args`` go to train.py after the others."""
    import torch

    gpus = torch.cuda.device_count() if devices is None else devices
    with tempfile.TemporaryDirectory(prefix="echo-gpu-check-") as folder:
        folder = Path(folder)
        data = ddp_dataset(folder, args.ddp_steps * args.batch_size * gpus, args.batch_size, args.frames)
        command = [sys.executable, str(REPO / "train.py"), "--base_dir", str(data), "--log_dir", str(folder / "logs"),
                   "--accelerator", accelerator, "--devices", str(gpus), "--strategy", "ddp",
                   "--max_steps", str(args.ddp_steps), "--batch_size", str(args.batch_size),
                   "--num_frames", str(args.frames), "--num_workers", "2", "--num_eval_files", "0",
                   "--logger", "csv", "--log_every_n_steps", "1", "--seed", "0", *extra_args]
        timeout = max(30.0, deadline - time.perf_counter())
        started = time.perf_counter()
        try:
            result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"passed": False, "gpus": gpus, "error": f"train.py did not finish within {timeout:.0f} s"}
        wall = time.perf_counter() - started
        report = {"gpus": gpus, "steps": args.ddp_steps, "batch_per_gpu": args.batch_size,
                  "wall_s_including_start_up": round(wall, 1), "returncode": result.returncode}
        if result.returncode != 0:
            tail = [line for line in result.stderr.strip().splitlines() if line.strip()][-3:]
            return {**report, "passed": False, "error": " | ".join(tail)}
        losses = []
        for metrics in sorted((folder / "logs").glob("echo/version_*/metrics.csv")):
            with open(metrics, newline="") as handle:
                losses += [float(r["train_loss_step"]) for r in csv.DictReader(handle) if r.get("train_loss_step")]
        checkpoint = next((folder / "logs").glob("echo/version_*/checkpoints/last.ckpt"), None)
        step = torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"] if checkpoint else None
        finite = bool(losses) and all(math.isfinite(v) for v in losses)
        report.update(global_step=step, losses_logged=len(losses), losses_finite=finite,
                      first_loss=losses[0] if losses else None, last_loss=losses[-1] if losses else None,
                      passed=finite and step == args.ddp_steps)
        return report


# --------------------------------------------------------------------------------------------
# Part: enhancement real-time factor


def enhancement_audio():
    """A VoiceBank-DEMAND noisy test file of about ENH_SECONDS, or generated speech in noise."""
    import soundfile as sf

    folder = SHARED_DATA / "vbdmd_test" / "noisy"
    candidates = sorted(folder.glob("*.wav")) if folder.is_dir() else []
    best = min(candidates, key=lambda p: abs(sf.info(str(p)).duration - ENH_SECONDS), default=None)
    if best is not None:
        audio, sr = sf.read(str(best), dtype="float32", always_2d=True)
        return audio.mean(axis=1), sr, best.name
    from echo.data.synth import make_dataset

    with tempfile.TemporaryDirectory() as folder:
        root = make_dataset(Path(folder) / "synth", n_train=0, n_valid=0, n_test=1, seconds=ENH_SECONDS, seed=0)
        audio, sr = sf.read(str(next((root / "test" / "noisy").glob("*.wav"))), dtype="float32")
    return audio, sr, f"generated, {ENH_SECONDS} s"


def check_rtf(device):
    from echo.enhance import enhance_audio
    from echo.sampling import PredictorRegistry

    model = paper_model(device).eval()
    audio, sr, name = enhancement_audio()
    seconds = len(audio) / sr
    enhance_audio(model, audio, sr, sampler_kwargs={"N": 1})  # warm-up: kernels, cuDNN plans
    rows = {}
    samplers = {f"N={DEFAULT_N}": {"N": DEFAULT_N},
                f"{FEW_STEP_PREDICTOR} N={FEW_STEP_N}": {"predictor": FEW_STEP_PREDICTOR, "N": FEW_STEP_N}}
    for label, kwargs in samplers.items():
        predictor = kwargs.get("predictor")
        if predictor is not None and predictor not in PredictorRegistry:
            rows[label] = {"skipped": f"predictor '{predictor}' is not registered in echo.sampling "
                                      f"(known: {', '.join(PredictorRegistry.get_all_names())})"}
            continue
        stats = {}
        synchronize(device)
        started = time.perf_counter()
        enhance_audio(model, audio, sr, sampler_kwargs=kwargs, stats=stats)
        synchronize(device)
        wall = time.perf_counter() - started
        rows[label] = {"rtf": round(wall / seconds, 4), "wall_s": round(wall, 3), "nfe": stats.get("nfe"), **kwargs}
    return {"file": name, "audio_s": round(seconds, 3), "samplers": rows}


# --------------------------------------------------------------------------------------------
# Report


def summary_lines(report):
    lines = [f"gpu_check: {', '.join(g['name'] for g in report['environment']['gpus'])}, "
             f"torch {report['environment']['torch']}, commit {report['environment']['git_commit']}"]
    parts = report["parts"]
    for name in PARTS:
        part = parts.get(name)
        if part is None:
            continue
        if "skipped" in part or ("error" in part and name != "ddp"):
            lines.append(f"  {name:<7} {part.get('skipped') or 'FAILED: ' + part['error']}")
        elif name == "parity":
            worst = {}
            for row in part["rows"]:
                ratio = max(row[k]["max_abs_diff"] / max(row[k]["tolerance"], 1e-300)
                            for k in row if k == "forward" or k.startswith("grad_"))
                worst[row["dtype"]] = max(worst.get(row["dtype"], 0.0), ratio)
            lines.append(f"  parity  {'ok' if part['passed'] else 'FAILED'}: {len(part['rows'])} rows, "
                         f"{part['failed_rows']} over tolerance; worst diff / tolerance "
                         + ", ".join(f"{k} {v:.2g}" for k, v in worst.items())
                         + "; build " + ", ".join(f"{k} {v} s" for k, v in part["build_s"].items()))
        elif name == "speed":
            cuda, native = part.get("cuda", {}), part.get("native", {})
            lines.append(f"  speed   forward {cuda.get('forward_ms')} ms (cuda) / {native.get('forward_ms')} ms (native); "
                         f"train step b{part['train_batch']} {cuda.get('train_step_ms')} / "
                         f"{native.get('train_step_ms')} ms")
        elif name == "bf16":
            lines.append(f"  bf16    {'ok' if part['passed'] else 'FAILED'}: forward {part['forward_ms']} ms, "
                         f"train step {part['train_step_ms']} ms, relative diff vs fp32 "
                         f"{part['forward_relative_diff']:.2g} (tolerance {part['tolerance_relative']}), "
                         f"losses finite: {part['train_losses_finite']}")
        elif name == "ddp":
            lines.append(f"  ddp     {'ok' if part.get('passed') else 'FAILED'}: {part.get('gpus')} GPUs, "
                         f"step {part.get('global_step')}, {part.get('wall_s_including_start_up')} s"
                         + (f"; {part['error']}" if part.get("error") else ""))
        elif name == "rtf":
            lines.append("  rtf     " + "; ".join(
                f"{label}: {row.get('rtf', row.get('skipped'))}" for label, row in part["samplers"].items()))
    return lines


def run_checks(args, parts, device=None, env=None):
    """The parts on ``device`` (the first GPU by default); the JSON report is written to --out."""
    import torch

    started = time.perf_counter()
    deadline = started + args.time_budget
    device = torch.device("cuda", 0) if device is None else device
    env = environment() if env is None else env
    out = default_out(env) if args.out == "auto" else Path(args.out)
    report = {"environment": env, "arguments": {k: v for k, v in vars(args).items()}, "tolerances": TOLERANCES,
              "parts": {}, "part_seconds": {}}
    # a part expected to take longer than what is left is skipped rather than cut off
    expected_s = {"parity": 90, "speed": 40, "bf16": 30, "ddp": 90, "rtf": 30}
    for name in parts:
        left = deadline - time.perf_counter()
        if left < expected_s[name] * 0.5:
            report["parts"][name] = {"skipped": f"time budget: {left:.0f} s left of {args.time_budget:.0f} s"}
            continue
        print(f"gpu_check: {name} ...", file=sys.stderr, flush=True)
        part_started = time.perf_counter()
        try:
            if name == "parity":
                report["parts"][name] = check_parity(device, args.frames)
            elif name == "speed":
                report["parts"][name] = check_speed(device, args)
            elif name == "bf16":
                report["parts"][name] = check_bf16(device, args)
            elif name == "ddp":
                report["parts"][name] = check_ddp(args, deadline)
            else:
                report["parts"][name] = check_rtf(device)
        except Exception as err:  # one broken part must not lose the others' numbers
            report["parts"][name] = {"error": f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}",
                                     "passed": False}
        finally:
            report["part_seconds"][name] = round(time.perf_counter() - part_started, 1)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    failed = [name for name, part in report["parts"].items() if part.get("passed") is False]
    report["passed"] = not failed
    from echo.util.other import write_text_atomic

    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, json.dumps(report, indent=2, default=str) + "\n")
    for line in summary_lines(report):
        print(line)
    print(f"gpu_check: {'all checks passed' if not failed else 'FAILED: ' + ', '.join(failed)}; written: {out}")
    return 0 if not failed else 1


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    parts = check_arguments(args, parser)
    import torch

    if not torch.cuda.is_available():
        build = "a CUDA build" if torch.version.cuda else "a CPU-only build"
        print(f"gpu_check: no CUDA GPU is visible (torch {torch.__version__}, {build}); nothing to measure here. "
              f"Run it on a machine with a GPU; it would run: {', '.join(parts)}.")
        return 0
    return run_checks(args, parts)


if __name__ == "__main__":
    sys.exit(main())
