"""fused_bias_act: act(x + bias) * gain, with the bias broadcast over dim 1.

The CUDA path follows the StyleGAN2 design: one elementwise kernel computes the activation or
one of its derivatives, and the backward is itself an autograd Function so that double backward
(R1 penalties, gradgradcheck) is right. What the backward reads ("ref") depends on the
activation: linear needs nothing; for relu / lrelu the sign of the output gives the derivative,
and the output is usually kept alive by the next layer anyway; silu cannot be inverted from its
output, so its backward keeps the input (and the bias) instead.
"""
import math

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .build import load_extension, select_backend

ACTIVATION_CODES = {"linear": 0, "relu": 1, "lrelu": 2, "silu": 3}
ACTIVATION_ALIASES = {"swish": "silu"}
DEFAULT_GAINS = {"linear": 1.0, "relu": math.sqrt(2), "lrelu": math.sqrt(2), "silu": 1.0}


def fused_bias_act(x: torch.Tensor, bias=None, act: str = "lrelu", alpha: float = 0.2, gain=None) -> torch.Tensor:
    """act(x + bias) * gain; act in linear, relu, lrelu (slope ``alpha``), silu (= swish).

    x: [N, C, ...]; bias: [C] or None. Default gain: sqrt(2) for relu/lrelu, 1 for linear/silu.
    """
    act = _canonical_activation(act)
    gain = DEFAULT_GAINS[act] if gain is None else float(gain)
    alpha = float(alpha)
    if act == "lrelu" and alpha < 0:
        # The CUDA backward reads the sign of x + bias from the output, which needs alpha >= 0.
        raise ValueError(f"lrelu needs alpha >= 0, got {alpha}")
    _check_bias(x, bias)
    if select_backend(x.device, ("fused_bias_act",)).backend == "cuda":
        if bias is not None:
            bias = bias.to(dtype=x.dtype)
        return _FusedBiasActCuda.apply(x, bias, act, alpha, gain)
    return fused_bias_act_native(x, bias, act, alpha, gain)


def _canonical_activation(act: str) -> str:
    act = ACTIVATION_ALIASES.get(act, act)
    if act not in ACTIVATION_CODES:
        names = sorted(set(ACTIVATION_CODES) | set(ACTIVATION_ALIASES))
        raise ValueError(f"unknown activation {act!r}; expected one of {', '.join(names)}")
    return act


def _check_bias(x, bias):
    if bias is None:
        return
    if bias.dim() != 1 or x.dim() < 2 or bias.shape[0] != x.shape[1]:
        raise ValueError(f"bias of shape {tuple(bias.shape)} does not match dim 1 of x {tuple(x.shape)}")


def _channel_view(bias: torch.Tensor, ndim: int) -> torch.Tensor:
    return bias.reshape(1, -1, *([1] * (ndim - 2)))


def fused_bias_act_native(x, bias=None, act="lrelu", alpha=0.2, gain=None):
    """The PyTorch path of :func:`fused_bias_act`; plain autograd gives every derivative order."""
    act = _canonical_activation(act)
    gain = DEFAULT_GAINS[act] if gain is None else float(gain)
    if bias is not None:
        x = x + _channel_view(bias.to(dtype=x.dtype), x.dim())
    if act == "relu":
        x = F.relu(x)
    elif act == "lrelu":
        x = F.leaky_relu(x, alpha)
    elif act == "silu":
        x = F.silu(x)
    return x if gain == 1.0 else x * gain


def _reduce_to_bias(grad: torch.Tensor) -> torch.Tensor:
    return grad.sum(dim=[d for d in range(grad.dim()) if d != 1])


def _backward_ref(act, x, y):
    if act == "linear":
        return None
    return x if act == "silu" else y


def _kernel_call(order, values, bias, ref, act, alpha, gain):
    """order 0: gain*act(values + bias); order n >= 1: values * gain * act^(n) at the point of ref."""
    extension = load_extension("fused_bias_act")
    empty = values.new_empty(0)
    bias = empty if bias is None else bias
    ref = empty if ref is None else ref
    return extension.fused_bias_act(values, bias, ref, ACTIVATION_CODES[act], order, alpha, gain)


class _FusedBiasActCuda(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, bias, act, alpha, gain):
        y = _kernel_call(0, x, bias, None, act, alpha, gain)
        ctx.save_for_backward(_backward_ref(act, x, y), bias)
        ctx.params = (act, alpha, gain)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        ref, bias = ctx.saved_tensors
        grad_x = _FusedBiasActGradCuda.apply(grad_y, ref, bias, *ctx.params)
        grad_bias = _reduce_to_bias(grad_x) if bias is not None and ctx.needs_input_grad[1] else None
        return grad_x, grad_bias, None, None, None


class _FusedBiasActGradCuda(torch.autograd.Function):
    """grad_x = grad_y * gain * act'(point of ref); differentiable once more."""

    @staticmethod
    def forward(ctx, grad_y, ref, bias, act, alpha, gain):
        ctx.save_for_backward(grad_y, ref, bias)
        ctx.params = (act, alpha, gain)
        return _kernel_call(1, grad_y, bias, ref, act, alpha, gain)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_grad_x):
        grad_y, ref, bias = ctx.saved_tensors
        act, alpha, gain = ctx.params
        grad_grad_y = _kernel_call(1, grad_grad_x, bias, ref, act, alpha, gain)
        grad_ref = grad_bias = None
        # Only silu has a non-zero second derivative; its ref is the input, so this term is
        # d(grad_x)/dx, and the bias enters through x + bias the same way.
        if act == "silu" and (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]):
            grad_ref = _kernel_call(2, grad_grad_x * grad_y, bias, ref, act, alpha, gain)
            if bias is not None and ctx.needs_input_grad[2]:
                grad_bias = _reduce_to_bias(grad_ref)
        return grad_grad_y, grad_ref, grad_bias, None, None, None
