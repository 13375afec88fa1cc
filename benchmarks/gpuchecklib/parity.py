"""The parity part of benchmarks/gpu_check.py: the CUDA kernels against the PyTorch path, forward
and backward, for every distinct call the paper-size network makes."""
import importlib
import math
import sys
import time

from gpuchecklib import common
from gpuchecklib.common import TOLERANCES, backbone_input, max_abs, ops_mode


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
    net = common.paper_backbone(device).eval()
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
