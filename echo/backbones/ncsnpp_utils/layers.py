"""Basic layers of NCSN++ and their DDPM initialisation."""
import math

import torch
import torch.nn as nn


def variance_scaling(scale, mode="fan_avg", distribution="uniform", in_axis=1, out_axis=0):
    """The JAX/Flax variance-scaling initialiser that NCSN++ was designed with.

    Returns ``init(shape, dtype, device) -> tensor``. A zero ``scale`` is replaced by 1e-10 so
    that "zero-initialised" layers keep a (tiny) gradient direction, as in the original models.
    """
    scale = 1e-10 if scale == 0 else scale

    def init(shape, dtype=torch.float32, device="cpu"):
        receptive = math.prod(shape) / shape[in_axis] / shape[out_axis]
        fan_in = shape[in_axis] * receptive
        fan_out = shape[out_axis] * receptive
        denom = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
        variance = scale / denom
        if distribution == "normal":
            return torch.randn(*shape, dtype=dtype, device=device) * math.sqrt(variance)
        if distribution == "uniform":
            return (torch.rand(*shape, dtype=dtype, device=device) * 2.0 - 1.0) * math.sqrt(3 * variance)
        raise ValueError(f"unknown distribution {distribution}")

    return init


def default_init(scale=1.0):
    """DDPM's initialiser: variance scaling, fan_avg, uniform."""
    return variance_scaling(scale, "fan_avg", "uniform")


def init_conv_(conv: nn.Conv2d, init_scale=1.0):
    """DDPM init of a conv layer in place: variance-scaled weight, zero bias."""
    with torch.no_grad():
        conv.weight.copy_(default_init(init_scale)(conv.weight.shape))
        if conv.bias is not None:
            conv.bias.zero_()
    return conv


def conv1x1(in_ch, out_ch, stride=1, bias=True, init_scale=1.0, padding=0):
    return init_conv_(nn.Conv2d(in_ch, out_ch, 1, stride=stride, padding=padding, bias=bias), init_scale)


def conv3x3(in_ch, out_ch, stride=1, bias=True, dilation=1, init_scale=1.0, padding=1):
    return init_conv_(nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=padding,
                                dilation=dilation, bias=bias), init_scale)


def dense(in_features, out_features, init_scale=1.0):
    """A linear layer with the DDPM initialisation."""
    layer = nn.Linear(in_features, out_features)
    with torch.no_grad():
        layer.weight.copy_(default_init(init_scale)(layer.weight.shape))
        layer.bias.zero_()
    return layer
