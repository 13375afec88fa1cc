"""The speed and bf16 parts of benchmarks/gpu_check.py: forward and training step of the paper-size
network with and without the CUDA kernels, and under bfloat16 autocast."""
import math
import sys

from gpuchecklib import common
from gpuchecklib.common import BF16_TOLERANCE, REPO, backbone_input, max_abs, ops_mode, timed_median


def train_step_fn(*args, **kwargs):
    sys.path.insert(0, str(REPO / "benchmarks"))
    from benchlib.speed import train_step_fn as step_fn  # imports torch: only once a part runs

    return step_fn(*args, **kwargs)


def training_setup(device, batch_size, frames):
    import torch
    from torch.optim.swa_utils import AveragedModel

    from echo.ema import EMA

    model = common.paper_model(device).train()
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
    net = common.paper_backbone(device).eval()
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
    net = common.paper_backbone(device).eval()
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
