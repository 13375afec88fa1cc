"""Tests of the custom ops: upfirdn2d, fused_bias_act, the FIR resampling built on them, and the
rules for when the CUDA kernels are (never) compiled. Run with ``pytest -rs`` to see skip reasons."""
import math
import os
import shutil
import subprocess
import sys
import importlib
import textwrap
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F

from echo.backbones.ncsnpp_utils import up_or_down_sampling as resampling
from echo.backbones.ncsnpp_utils.op import OpsUnavailableError, fused_bias_act, ops_backend, upfirdn2d
from echo.backbones.ncsnpp_utils.op import build
from echo.backbones.ncsnpp_utils.op import fused_act as fused_act_module

# The package exports the function upfirdn2d under the name of its module.
upfirdn2d_module = importlib.import_module("echo.backbones.ncsnpp_utils.op.upfirdn2d")

REPO_ROOT = Path(__file__).resolve().parents[1]
ACTIVATIONS = ("linear", "relu", "lrelu", "silu")
NEEDS_GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible")


@pytest.fixture(autouse=True)
def default_mode(monkeypatch):
    monkeypatch.delenv("ECHO_OPS", raising=False)


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    # The tensors here are tiny: with several threads, waking the pool costs more than the work
    # (tens of ms per convolution on a busy machine), which made gradcheck take minutes.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------
# Independent references


def upfirdn2d_reference(x: np.ndarray, kernel: np.ndarray, up: int, down: int, pad) -> np.ndarray:
    """The definition, literally: zero insertion, pad/crop, true 2-D convolution, decimation."""
    p0, p1 = pad
    n, c, h, w = x.shape
    upsampled = np.zeros((n, c, h * up, w * up), dtype=x.dtype)
    upsampled[:, :, ::up, ::up] = x
    padded = np.pad(upsampled, ((0, 0), (0, 0), (max(p0, 0), max(p1, 0)), (max(p0, 0), max(p1, 0))))
    padded = padded[:, :, max(-p0, 0) : padded.shape[2] - max(-p1, 0), max(-p0, 0) : padded.shape[3] - max(-p1, 0)]
    out = np.stack(
        [np.stack([scipy.signal.convolve2d(plane, kernel, mode="valid") for plane in sample]) for sample in padded]
    )
    return out[:, :, ::down, ::down]


def fir_per_axis_reference(x: np.ndarray, taps: np.ndarray, up: int, down: int, offset: int, size: int) -> np.ndarray:
    """scipy.signal.upfirdn along H then W; keeps ``size`` samples from ``offset`` of its output."""
    for axis in (2, 3):
        x = scipy.signal.upfirdn(taps, x, up=up, down=down, axis=axis)
        x = np.take(x, np.arange(offset, offset + size), axis=axis)
    return x


def to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().cpu().numpy()


# --------------------------------------------------------------------------------------------
# upfirdn2d, PyTorch path

PADS = [(0, 0), (1, 1), (2, 1), (0, 3), (-1, 2), (3, -2), (-1, -1)]


@pytest.mark.parametrize("up,down", [(1, 1), (2, 1), (1, 2), (2, 2)])
@pytest.mark.parametrize("pad", PADS)
def test_upfirdn2d_matches_definition(up, down, pad):
    rng = np.random.default_rng(up * 10 + down)
    for (h, w), (kh, kw) in [((7, 5), (4, 4)), ((6, 9), (3, 2)), ((5, 5), (1, 3))]:
        if min(h * up + sum(pad) - kh, w * up + sum(pad) - kw) < 0:
            continue
        x = rng.standard_normal((2, 3, h, w))
        kernel = rng.standard_normal((kh, kw))  # non-symmetric on purpose: catches a missing flip
        expected = upfirdn2d_reference(x, kernel, up, down, pad)
        actual = upfirdn2d(torch.from_numpy(x), torch.from_numpy(kernel), up=up, down=down, pad=pad)
        assert actual.shape == expected.shape
        assert tuple(actual.shape[2:]) == (
            (h * up + sum(pad) - kh) // down + 1,
            (w * up + sum(pad) - kw) // down + 1,
        )
        np.testing.assert_allclose(actual.numpy(), expected, atol=1e-12)


def test_upfirdn2d_float32_and_half_precision_on_cpu():
    x = torch.randn(1, 4, 9, 9)
    kernel = torch.rand(4, 4)
    expected = upfirdn2d_reference(to_numpy(x), to_numpy(kernel), 2, 1, (2, 1))
    np.testing.assert_allclose(upfirdn2d(x, kernel, up=2, pad=(2, 1)).numpy(), expected, atol=1e-5)
    for dtype in (torch.float16, torch.bfloat16):
        y = upfirdn2d(x.to(dtype), kernel, down=2, pad=(1, 1))
        assert y.dtype == dtype
        reference = upfirdn2d(x, kernel, down=2, pad=(1, 1))
        torch.testing.assert_close(y.float(), reference, atol=5e-2, rtol=5e-2)


GRADCHECK_CASES = [(1, 1, (1, 2)), (2, 1, (2, 1)), (1, 2, (1, 1)), (2, 2, (-1, 2)), (1, 2, (0, -1))]


@pytest.mark.parametrize("up,down,pad", GRADCHECK_CASES)
def test_upfirdn2d_gradcheck(up, down, pad):
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    kernel = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, k: upfirdn2d(a, k, up=up, down=down, pad=pad), (x, kernel))
    assert torch.autograd.gradgradcheck(lambda a, k: upfirdn2d(a, k, up=up, down=down, pad=pad), (x, kernel))


def test_upfirdn2d_rejects_bad_arguments():
    x = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match="N, C, H, W"):
        upfirdn2d(torch.zeros(4, 4), torch.ones(2, 2))
    with pytest.raises(ValueError, match="2-D kernel"):
        upfirdn2d(x, torch.ones(4))
    with pytest.raises(ValueError, match="up and down"):
        upfirdn2d(x, torch.ones(2, 2), down=0)
    with pytest.raises(ValueError, match="empty output"):
        upfirdn2d(x, torch.ones(2, 2), pad=(-3, -3))


# --------------------------------------------------------------------------------------------
# FIR up/down-sampling used by the network

FIR = np.array([1.0, 3.0, 3.0, 1.0])


def test_upsample_and_downsample_shapes():
    x = torch.randn(2, 3, 16, 24)
    assert resampling.upsample_2d(x).shape == (2, 3, 32, 48)
    assert resampling.downsample_2d(x).shape == (2, 3, 8, 12)


@pytest.mark.parametrize("gain", [1.0, 0.5])
def test_fir_resampling_keeps_constants_away_from_borders(gain):
    x = torch.full((1, 2, 16, 16), 3.0)
    up = resampling.upsample_2d(x, gain=gain)
    down = resampling.downsample_2d(x, gain=gain)
    torch.testing.assert_close(up[:, :, 2:-2, 2:-2], torch.full_like(up[:, :, 2:-2, 2:-2], 3.0 * gain))
    torch.testing.assert_close(down[:, :, 1:-1, 1:-1], torch.full_like(down[:, :, 1:-1, 1:-1], 3.0 * gain))


def test_upsample_2d_matches_scipy_upfirdn():
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    taps = FIR / FIR.sum() * 2  # per axis: the 2-D kernel's factor^2 = 2 * 2
    # pad (2, 1) with a 4-tap kernel: output sample i is sample i + 1 of the full convolution.
    expected = fir_per_axis_reference(to_numpy(x), taps, up=2, down=1, offset=1, size=16)
    np.testing.assert_allclose(resampling.upsample_2d(x).numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(
        resampling.upsample_2d(x).numpy(),
        upfirdn2d_reference(to_numpy(x), np.outer(FIR, FIR) / 64 * 4, 2, 1, (2, 1)),
        atol=1e-12,
    )


def test_downsample_2d_matches_scipy_upfirdn():
    x = torch.randn(1, 3, 8, 10, dtype=torch.float64)
    taps = FIR / FIR.sum()
    # pad (1, 1): output sample o is sample 2o + 2 of the full convolution, i.e. o + 1 after decimation.
    expected_rows = fir_per_axis_reference(to_numpy(x)[:, :, :, :8], taps, up=1, down=2, offset=1, size=4)
    np.testing.assert_allclose(resampling.downsample_2d(x[:, :, :, :8]).numpy(), expected_rows, atol=1e-12)
    np.testing.assert_allclose(
        resampling.downsample_2d(x).numpy(),
        upfirdn2d_reference(to_numpy(x), np.outer(FIR, FIR) / 64, 1, 2, (1, 1)),
        atol=1e-12,
    )


def test_fir_resampling_gradcheck():
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(resampling.upsample_2d, (x,))
    assert torch.autograd.gradcheck(resampling.downsample_2d, (x,))


# --------------------------------------------------------------------------------------------
# fused_bias_act, PyTorch path


def plain_bias_act(x, bias, act, alpha, gain):
    z = x if bias is None else x + bias.reshape(1, -1, *([1] * (x.dim() - 2)))
    value = {
        "linear": lambda: z,
        "relu": lambda: torch.clamp(z, min=0),
        "lrelu": lambda: torch.where(z > 0, z, alpha * z),
        "silu": lambda: z / (1 + torch.exp(-z)),
    }[act]()
    return value * gain


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_fused_bias_act_matches_plain_formula(act):
    x = torch.randn(2, 5, 3, 4, dtype=torch.float64)
    bias = torch.randn(5, dtype=torch.float64)
    default_gain = {"linear": 1.0, "relu": math.sqrt(2), "lrelu": math.sqrt(2), "silu": 1.0}[act]
    torch.testing.assert_close(fused_bias_act(x, bias, act=act), plain_bias_act(x, bias, act, 0.2, default_gain))
    torch.testing.assert_close(
        fused_bias_act(x, bias, act=act, alpha=0.1, gain=0.7), plain_bias_act(x, bias, act, 0.1, 0.7)
    )
    torch.testing.assert_close(fused_bias_act(x, None, act=act, gain=2.0), plain_bias_act(x, None, act, 0.2, 2.0))


def test_fused_bias_act_shapes_aliases_and_errors():
    x = torch.randn(4, 3)
    bias = torch.randn(3)
    torch.testing.assert_close(fused_bias_act(x, bias, act="swish"), fused_bias_act(x, bias, act="silu"))
    assert fused_bias_act(torch.randn(2, 3, 5), bias).shape == (2, 3, 5)
    with pytest.raises(ValueError, match="unknown activation"):
        fused_bias_act(x, bias, act="gelu")
    with pytest.raises(ValueError, match="bias"):
        fused_bias_act(x, torch.randn(4))
    with pytest.raises(ValueError, match="alpha"):
        fused_bias_act(x, bias, act="lrelu", alpha=-0.1)


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_fused_bias_act_gradcheck_and_gradgradcheck(act):
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, requires_grad=True)

    def op(a, b):
        return fused_bias_act(a, b, act=act, alpha=0.2, gain=1.3)

    assert torch.autograd.gradcheck(op, (x, bias))
    assert torch.autograd.gradgradcheck(op, (x, bias))


# --------------------------------------------------------------------------------------------
# Autograd wiring of the CUDA path, on any machine: the compiled kernels are replaced by a
# PyTorch emulation of their contract (see the .cpp bindings), and the Functions are called directly.


class EmulatedUpfirdn2dExtension:
    @staticmethod
    def upfirdn2d(x, kernel, up, down, pad_y0, pad_y1, pad_x0, pad_x1):
        n, c, h, w = x.shape
        upsampled = x.new_zeros(n, c, h * up, w * up)
        upsampled[:, :, ::up, ::up] = x
        padded = F.pad(upsampled, [pad_x0, pad_x1, pad_y0, pad_y1])
        weight = kernel.flip(0, 1).to(x)[None, None].repeat(c, 1, 1, 1)
        return F.conv2d(padded, weight, groups=c)[:, :, ::down, ::down]


class EmulatedFusedBiasActExtension:
    ACTIVATIONS = {code: name for name, code in fused_act_module.ACTIVATION_CODES.items()}

    @classmethod
    def fused_bias_act(cls, values, bias, ref, code, order, alpha, gain):
        act = cls.ACTIVATIONS[code]
        bias_view = bias.reshape(1, -1, *([1] * (values.dim() - 2))) if bias.numel() else 0
        if order == 0:
            return plain_bias_act(values, bias if bias.numel() else None, act, alpha, gain)
        if act == "silu":
            z = ref + bias_view
            s = torch.sigmoid(z)
            slope = s * (1 + z * (1 - s)) if order == 1 else s * (1 - s) * (2 + z * (1 - 2 * s))
        elif act in ("relu", "lrelu") and order == 1:
            floor = 0.0 if act == "relu" else alpha
            slope = torch.where(ref * gain > 0, torch.ones_like(ref), torch.full_like(ref, floor))
        else:
            slope = torch.full_like(values, 1.0 if order == 1 else 0.0)
        return values * slope * gain


@pytest.fixture
def emulated_kernels(monkeypatch):
    monkeypatch.setitem(build._built, "upfirdn2d", EmulatedUpfirdn2dExtension)
    monkeypatch.setitem(build._built, "fused_bias_act", EmulatedFusedBiasActExtension)


@pytest.mark.parametrize("up,down,pad", [(2, 1, (2, 1)), (1, 2, (1, 1)), (2, 2, (-1, 3)), (1, 1, (0, 2))])
def test_cuda_upfirdn2d_function_gradients(emulated_kernels, up, down, pad):
    x = torch.randn(1, 2, 5, 7, dtype=torch.float64, requires_grad=True)
    kernel = torch.randn(4, 3, dtype=torch.float64)

    def op(a):
        return upfirdn2d_module._Upfirdn2dCuda.apply(a, kernel, up, down, (pad[0], pad[1], pad[0], pad[1]))

    torch.testing.assert_close(op(x), upfirdn2d(x, kernel, up=up, down=down, pad=pad))
    assert torch.autograd.gradcheck(op, (x,))
    assert torch.autograd.gradgradcheck(op, (x,))


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("with_bias", [True, False])
def test_cuda_fused_bias_act_function_gradients(emulated_kernels, act, with_bias):
    x = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, requires_grad=True) if with_bias else None
    inputs = (x, bias) if with_bias else (x,)

    def op(a, b=None):
        return fused_act_module._FusedBiasActCuda.apply(a, b, act, 0.2, 1.3)

    torch.testing.assert_close(op(*inputs), fused_bias_act(x, bias, act=act, gain=1.3))
    assert torch.autograd.gradcheck(op, inputs)
    assert torch.autograd.gradgradcheck(op, inputs)


# --------------------------------------------------------------------------------------------
# CUDA kernels against the PyTorch path (needs a GPU)

GPU_TOLERANCES = {torch.float32: 1e-5, torch.float16: 2e-2, torch.bfloat16: 1e-1}


def run_native(op):
    previous = os.environ.get("ECHO_OPS")
    os.environ["ECHO_OPS"] = "native"
    try:
        return op()
    finally:
        if previous is None:
            del os.environ["ECHO_OPS"]
        else:
            os.environ["ECHO_OPS"] = previous


def forward_and_grads(op, inputs, create_graph=False):
    inputs = [t.detach().requires_grad_() for t in inputs]
    y = op(*inputs)
    grad_out = torch.linspace(-1, 1, y.numel(), device=y.device, dtype=y.dtype).reshape(y.shape)
    grads = torch.autograd.grad(y, inputs, grad_out, create_graph=create_graph)
    return y, grads, inputs


@NEEDS_GPU
@pytest.mark.parametrize("dtype", list(GPU_TOLERANCES))
@pytest.mark.parametrize("up,down,pad", [(2, 1, (2, 1)), (1, 2, (1, 1)), (2, 2, (-1, 3)), (1, 1, (0, -1))])
def test_upfirdn2d_cuda_kernel_matches_native(monkeypatch, dtype, up, down, pad):
    monkeypatch.setenv("ECHO_OPS", "cuda")
    tolerance = GPU_TOLERANCES[dtype]
    x = torch.randn(2, 8, 33, 20, device="cuda").to(dtype)
    kernel = torch.randn(4, 3, device="cuda")

    def op(a):
        return upfirdn2d(a, kernel, up=up, down=down, pad=pad)

    y, (grad,), _ = forward_and_grads(op, [x])
    y_ref, (grad_ref,), _ = run_native(lambda: forward_and_grads(op, [x.float()]))
    torch.testing.assert_close(y.float(), y_ref, atol=tolerance * 4, rtol=tolerance)
    torch.testing.assert_close(grad.float(), grad_ref, atol=tolerance * 4, rtol=tolerance)


@NEEDS_GPU
@pytest.mark.parametrize("dtype", list(GPU_TOLERANCES))
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_fused_bias_act_cuda_kernel_matches_native(monkeypatch, dtype, act):
    monkeypatch.setenv("ECHO_OPS", "cuda")
    tolerance = GPU_TOLERANCES[dtype]
    x = torch.randn(4, 16, 9, 7, device="cuda").to(dtype)
    bias = torch.randn(16, device="cuda").to(dtype)

    def op(a, b):
        return fused_bias_act(a, b, act=act)

    def first_and_second_order():
        y, (grad_x, grad_b), inputs = forward_and_grads(op, [x, bias], create_graph=True)
        second = [None, None]
        if grad_x.requires_grad:  # not so for the native linear activation
            second = torch.autograd.grad((grad_x * grad_x.detach()).sum(), inputs, allow_unused=True)
        second = [torch.zeros_like(t) if g is None else g for g, t in zip(second, inputs)]
        return [y, grad_x, grad_b, *second]

    results = first_and_second_order()
    references = run_native(first_and_second_order)
    for result, reference in zip(results, references):
        scale = reference.abs().max().item() + 1
        torch.testing.assert_close(result, reference, atol=tolerance * scale, rtol=tolerance)


@NEEDS_GPU
def test_cuda_double_precision_gradgradcheck(monkeypatch):
    monkeypatch.setenv("ECHO_OPS", "cuda")
    x = torch.randn(1, 3, 6, 5, device="cuda", dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, device="cuda", dtype=torch.float64, requires_grad=True)
    kernel = torch.randn(4, 4, device="cuda", dtype=torch.float64)
    assert torch.autograd.gradgradcheck(lambda a: upfirdn2d(a, kernel, up=2, pad=(2, 1)), (x,))
    for act in ACTIVATIONS:
        assert torch.autograd.gradgradcheck(lambda a, b: fused_bias_act(a, b, act=act), (x, bias))


# --------------------------------------------------------------------------------------------
# Building and backend choice


def nvcc_path():
    from torch.utils.cpp_extension import CUDA_HOME

    if CUDA_HOME and (Path(CUDA_HOME) / "bin" / "nvcc").exists():
        return str(Path(CUDA_HOME) / "bin" / "nvcc")
    return shutil.which("nvcc")


def build_skip_reason():
    if torch.version.cuda is None:
        return f"torch {torch.__version__} has no CUDA support, so .cu sources cannot be built"
    if nvcc_path() is None:
        return "nvcc not found (set CUDA_HOME)"
    return None


@pytest.mark.skipif(build_skip_reason() is not None, reason=str(build_skip_reason()))
def test_extensions_build(monkeypatch):
    # Works without a GPU: the arch list then falls back to build.DEFAULT_ARCH_LIST.
    monkeypatch.setattr(build, "_built", {})
    monkeypatch.setattr(build, "_build_failures", {})
    for name in build.EXTENSION_SOURCES:
        module = build.load_extension(name)
        assert hasattr(module, name)


def run_python(code: str, **env):
    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, cwd=REPO_ROOT)


def test_echo_ops_cuda_without_cuda_fails_with_one_line_reason():
    code = (
        "import torch; from echo.backbones.ncsnpp_utils.op import upfirdn2d; "
        "upfirdn2d(torch.zeros(1, 1, 4, 4), torch.ones(2, 2))"
    )
    result = run_python(code, ECHO_OPS="cuda")
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("echo.backbones.ncsnpp_utils.op.build.OpsUnavailableError: ECHO_OPS=cuda but")
    if torch.version.cuda is None:
        assert "this torch build has no CUDA support" in last_line


@pytest.mark.parametrize("op", ["upfirdn2d", "fused_bias_act"])
def test_echo_ops_cuda_rejects_cpu_tensors_in_one_line(monkeypatch, op):
    monkeypatch.setenv("ECHO_OPS", "cuda")
    with pytest.raises(OpsUnavailableError) as failure:
        if op == "upfirdn2d":
            upfirdn2d(torch.zeros(1, 1, 4, 4), torch.ones(2, 2))
        else:
            fused_bias_act(torch.zeros(1, 2), torch.zeros(2))
    assert isinstance(failure.value, RuntimeError)
    assert "\n" not in str(failure.value)
    assert str(failure.value).startswith("ECHO_OPS=cuda but")


def forbid_compiler(monkeypatch):
    from torch.utils import cpp_extension

    def refuse(*args, **kwargs):
        raise AssertionError("the compiler must not be invoked")

    monkeypatch.setattr(cpp_extension, "load", refuse)
    monkeypatch.setattr(cpp_extension, "load_inline", refuse)
    monkeypatch.setattr(build, "_built", {})
    monkeypatch.setattr(build, "_build_failures", {})


def test_echo_ops_native_never_compiles(monkeypatch):
    forbid_compiler(monkeypatch)
    monkeypatch.setenv("ECHO_OPS", "native")
    for device in ("cpu", "cuda"):
        assert ops_backend(device) == ("native", "ECHO_OPS=native")
    devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    for device in devices:
        x = torch.randn(1, 2, 8, 8, device=device)
        assert resampling.upsample_2d(x).shape == (1, 2, 16, 16)
        assert fused_bias_act(x, torch.zeros(2, device=device)).shape == x.shape


def test_auto_mode_on_cpu_tensors_never_compiles(monkeypatch):
    forbid_compiler(monkeypatch)
    backend, reason = ops_backend("cpu")
    assert backend == "native" and "cpu" in reason
    assert resampling.downsample_2d(torch.randn(1, 2, 8, 8)).shape == (1, 2, 4, 4)
    assert fused_bias_act(torch.randn(1, 2, 3), torch.zeros(2), act="silu").shape == (1, 2, 3)


def test_importing_never_compiles():
    code = textwrap.dedent(
        """
        import torch
        import torch.utils.cpp_extension as cpp_extension

        def refuse(*args, **kwargs):
            raise SystemExit("compiler invoked")

        cpp_extension.load = cpp_extension.load_inline = refuse
        import echo
        from echo.backbones.ncsnpp_utils import up_or_down_sampling
        from echo.backbones.ncsnpp_utils.op import fused_bias_act, upfirdn2d
        x = torch.randn(1, 2, 8, 8)
        up_or_down_sampling.upsample_2d(x); up_or_down_sampling.downsample_2d(x)
        fused_bias_act(x, torch.zeros(2)); upfirdn2d(x, torch.ones(2, 2))
        print("ok")
        """
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_auto_mode_falls_back_with_one_warning_when_kernels_cannot_build(monkeypatch):
    forbid_compiler(monkeypatch)
    monkeypatch.setattr(build, "_fallback_warned", False)
    monkeypatch.setattr(build, "toolchain_problem", lambda: "no CUDA toolkit (test)")
    with pytest.warns(RuntimeWarning, match="no CUDA toolkit") as warnings_seen:
        first = build.select_backend("cuda")
        second = build.select_backend("cuda")
    assert len(warnings_seen) == 1
    assert first.backend == second.backend == "native"
    assert "no CUDA toolkit (test)" in first.reason


def test_failed_build_is_reported_in_one_line_and_not_retried(monkeypatch):
    from torch.utils import cpp_extension

    attempts = []

    def failing_load(*args, **kwargs):
        attempts.append(kwargs["name"])
        raise RuntimeError("Error building extension 'echo_upfirdn2d'\nlong compiler log\nmore log")

    monkeypatch.setattr(cpp_extension, "load", failing_load)
    monkeypatch.setattr(build, "_built", {})
    monkeypatch.setattr(build, "_build_failures", {})
    monkeypatch.setattr(build, "toolchain_problem", lambda: None)
    for _ in range(2):
        with pytest.raises(OpsUnavailableError) as failure:
            build.load_extension("upfirdn2d")
        assert str(failure.value) == (
            "building the upfirdn2d CUDA extension failed: Error building extension 'echo_upfirdn2d'"
        )
    assert attempts == ["echo_upfirdn2d"]


def test_invalid_mode_is_rejected(monkeypatch):
    monkeypatch.setenv("ECHO_OPS", "fast")
    with pytest.raises(ValueError, match="ECHO_OPS"):
        ops_backend("cpu")


def test_arch_list(monkeypatch):
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.6")
    assert build.arch_list_for_build() == "8.6"
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert build.arch_list_for_build() == build.DEFAULT_ARCH_LIST
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i: [(9, 0), (8, 0)][i])
    assert build.arch_list_for_build() == "8.0;9.0"


def test_kernel_requiring_grad_uses_native_path(monkeypatch):
    # The CUDA kernel has no kernel gradient; a trainable kernel must still get a correct one.
    monkeypatch.setattr(upfirdn2d_module, "select_backend", lambda *a, **k: build.BackendChoice("cuda", "test"))
    x = torch.randn(1, 1, 4, 4, dtype=torch.float64)
    kernel = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    upfirdn2d(x, kernel).sum().backward()
    assert kernel.grad is not None


def test_module_exports():
    from echo.backbones.ncsnpp_utils import op

    assert set(op.__all__) >= {"upfirdn2d", "fused_bias_act", "ops_backend"}
    sources = [name for pair in build.EXTENSION_SOURCES.values() for name in pair]
    missing = [name for name in sources if not (build.SOURCE_DIR / name).exists()]
    assert missing == []
