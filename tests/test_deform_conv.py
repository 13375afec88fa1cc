"""Modulated deformable convolution: the pure-PyTorch path against ordinary convolutions, an
explicit-loop reference with torchvision's border rule, autograd, and torchvision where present."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from echo.backbones.ncsnpp_utils import deform_conv as dc
from echo.backbones.ncsnpp_utils.deform_conv import (ModulatedDeformConv2d, deform_conv2d,
                                                     deform_conv2d_torch)

IMPLEMENTATIONS = [pytest.param(deform_conv2d_torch, id="torch"),
                   pytest.param(deform_conv2d, id="dispatch")]


def _output_size(size, kernel, stride, padding, dilation):
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _random_problem(batch=2, channels=4, height=7, width=9, out_channels=5, kernel=3, stride=1, padding=1,
                    dilation=1, offset_groups=1, groups=1, offset_scale=2.0, dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    out_h = _output_size(height, kernel, stride, padding, dilation)
    out_w = _output_size(width, kernel, stride, padding, dilation)
    taps = kernel * kernel
    x = torch.randn(batch, channels, height, width, generator=generator, dtype=dtype)
    offset = torch.randn(batch, 2 * offset_groups * taps, out_h, out_w, generator=generator, dtype=dtype)
    mask = torch.rand(batch, offset_groups * taps, out_h, out_w, generator=generator, dtype=dtype)
    weight = torch.randn(out_channels, channels // groups, kernel, kernel, generator=generator, dtype=dtype)
    bias = torch.randn(out_channels, generator=generator, dtype=dtype)
    return x, offset * offset_scale, mask, weight, bias


# ---------------------------------------------------------------- explicit-loop reference (numpy)

def _bilinear_reference(image, y, x):
    """torchvision's rule: nothing outside (-1, size); inside, only the in-range corners count."""
    height, width = image.shape
    if y <= -1 or y >= height or x <= -1 or x >= width:
        return 0.0
    y0, x0 = math.floor(y), math.floor(x)
    value = 0.0
    for row, weight_y in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for col, weight_x in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= row < height and 0 <= col < width:
                value += weight_y * weight_x * image[row, col]
    return value


def _deform_conv2d_reference(x, offset, weight, bias, stride, padding, dilation, mask):
    x, offset, weight = x.numpy(), offset.numpy(), weight.numpy()
    batch, channels, _, _ = x.shape
    out_channels, group_channels, kh, kw = weight.shape
    taps = kh * kw
    groups = channels // group_channels
    offset_groups = offset.shape[1] // (2 * taps)
    out_h, out_w = offset.shape[2:]
    columns = np.zeros((batch, channels, kh, kw, out_h, out_w))
    for b in range(batch):
        for c in range(channels):
            group = c // (channels // offset_groups)
            for i in range(kh):
                for j in range(kw):
                    tap = i * kw + j
                    for oh in range(out_h):
                        for ow in range(out_w):
                            dy = offset[b, group * 2 * taps + 2 * tap, oh, ow]
                            dx = offset[b, group * 2 * taps + 2 * tap + 1, oh, ow]
                            y = oh * stride - padding + i * dilation + dy
                            xx = ow * stride - padding + j * dilation + dx
                            scale = 1.0 if mask is None else mask[b, group * taps + tap, oh, ow].item()
                            columns[b, c, i, j, oh, ow] = scale * _bilinear_reference(x[b, c], y, xx)
    out = np.zeros((batch, out_channels, out_h, out_w))
    group_out = out_channels // groups
    for g in range(groups):
        cols = columns[:, g * group_channels:(g + 1) * group_channels]
        out[:, g * group_out:(g + 1) * group_out] = np.einsum(
            "bcijhw,ocij->bohw", cols, weight[g * group_out:(g + 1) * group_out])
    if bias is not None:
        out += bias.numpy()[None, :, None, None]
    return torch.from_numpy(out)


# ---------------------------------------------------------------- ordinary-convolution identities

@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("kernel, stride, padding, dilation", [
    (3, 1, 1, 1), (3, 2, 1, 1), (3, 1, 0, 1), (3, 1, 2, 2), (3, (2, 1), (1, 0), (1, 2)),
    (1, 1, 0, 1), (1, 2, 0, 1), (1, 1, 1, 1)])
def test_zero_offsets_unit_mask_equal_conv2d(impl, kernel, stride, padding, dilation):
    x = torch.randn(2, 4, 11, 10, dtype=torch.float64)
    weight = torch.randn(6, 4, kernel, kernel, dtype=torch.float64)
    bias = torch.randn(6, dtype=torch.float64)
    expected = F.conv2d(x, weight, bias, stride=stride, padding=padding, dilation=dilation)
    offset = torch.zeros(2, 2 * kernel * kernel, *expected.shape[2:], dtype=torch.float64)
    mask = torch.ones(2, kernel * kernel, *expected.shape[2:], dtype=torch.float64)
    for tap_mask in (mask, None):
        out = impl(x, offset, weight, bias, stride=stride, padding=padding, dilation=dilation, mask=tap_mask)
        torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


def test_zero_offsets_equal_grouped_conv2d_float32():
    x = torch.randn(1, 6, 12, 12)
    weight = torch.randn(4, 3, 3, 3)
    expected = F.conv2d(x, weight, padding=1, groups=2)
    offset = torch.zeros(1, 3 * 18, 12, 12)  # three offset groups
    out = deform_conv2d_torch(x, offset, weight, padding=1, mask=torch.ones(1, 27, 12, 12))
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


def _shifted_canvas(x, padding, dy, dx):
    """The zero-padded input read at (row + dy, col + dx), with zeros wherever that leaves x."""
    _, _, height, width = x.shape
    rows = torch.arange(height + 2 * padding) - padding + dy
    cols = torch.arange(width + 2 * padding) - padding + dx
    valid = ((rows >= 0) & (rows < height))[:, None] & ((cols >= 0) & (cols < width))[None, :]
    picked = x[:, :, rows.clamp(0, height - 1)][:, :, :, cols.clamp(0, width - 1)]
    return picked * valid


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("dy, dx", [(1, -2), (-3, 0), (2, 5)])
def test_integer_offsets_equal_shifted_conv2d(impl, dy, dx):
    x = torch.randn(2, 3, 8, 9, dtype=torch.float64)
    weight = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    bias = torch.randn(4, dtype=torch.float64)
    offset = torch.zeros(2, 18, 8, 9, dtype=torch.float64)
    offset[:, 0::2], offset[:, 1::2] = dy, dx
    out = impl(x, offset, weight, bias, padding=1)
    expected = F.conv2d(_shifted_canvas(x, 1, dy, dx), weight, bias)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_mask_scales_taps(impl):
    x, offset, _, weight, _ = _random_problem()
    mask = torch.full((2, 9, 7, 9), 0.5, dtype=torch.float64)
    half = impl(x, offset, weight, mask=mask, padding=1)
    full = impl(x, offset, weight, mask=torch.ones_like(mask), padding=1)
    torch.testing.assert_close(half, 0.5 * full, rtol=1e-12, atol=1e-12)
    zero_offset = torch.zeros_like(offset)
    torch.testing.assert_close(impl(x, zero_offset, weight, mask=mask, padding=1),
                               0.5 * F.conv2d(x, weight, padding=1), rtol=1e-10, atol=1e-10)


def test_mask_of_one_tap_only_keeps_that_tap():
    x, offset, _, weight, _ = _random_problem(batch=1)
    mask = torch.zeros(1, 9, 7, 9, dtype=torch.float64)
    mask[:, 4] = 1.0  # the centre tap
    centre_weight = torch.zeros_like(weight)
    centre_weight[:, :, 1, 1] = weight[:, :, 1, 1]
    out = deform_conv2d_torch(x, offset, weight, mask=mask, padding=1)
    expected = deform_conv2d_torch(x, offset, centre_weight, mask=torch.ones_like(mask), padding=1)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- fractional offsets, explicit loops

@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("config", [
    dict(kernel=3, stride=1, padding=1, dilation=1),
    dict(kernel=3, stride=2, padding=2, dilation=2, offset_groups=2, groups=2, out_channels=4),
    dict(kernel=1, stride=1, padding=0, dilation=1, offset_scale=4.0),
    dict(kernel=3, stride=1, padding=1, dilation=1, height=1, width=5),
], ids=["3x3", "strided-dilated-groups", "1x1-far", "height-1"])
@pytest.mark.parametrize("with_mask", [True, False], ids=["mask", "no-mask"])
def test_fractional_offsets_match_loop_reference(impl, config, with_mask):
    stride, padding, dilation = config["stride"], config["padding"], config["dilation"]
    x, offset, mask, weight, bias = _random_problem(**config)
    mask = mask if with_mask else None
    out = impl(x, offset, weight, bias, stride=stride, padding=padding, dilation=dilation, mask=mask)
    expected = _deform_conv2d_reference(x, offset, weight, bias, stride, padding, dilation, mask)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


def test_samples_just_outside_the_image_use_in_range_corners():
    # A sample at row -0.25 reads 0.75 of row 0; one at row -1 or beyond reads nothing.
    x = torch.arange(1.0, 13.0, dtype=torch.float64).view(1, 1, 3, 4)
    weight = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    offset = torch.zeros(1, 2, 3, 4, dtype=torch.float64)
    offset[:, 0] = torch.tensor([-0.25, -1.0, -1.5], dtype=torch.float64)[:, None] - torch.arange(3.0)[:, None]
    out = deform_conv2d_torch(x, offset, weight)
    torch.testing.assert_close(out[0, 0, 0], 0.75 * x[0, 0, 0])
    torch.testing.assert_close(out[0, 0, 1:], torch.zeros(2, 4, dtype=torch.float64))


# ---------------------------------------------------------------- gradients

def _off_integer(offset):
    """Offsets whose fractional part lies in [0.2, 0.8]: bilinear sampling is smooth there."""
    return offset.round() + 0.2 + 0.6 * torch.rand_like(offset)


@pytest.mark.parametrize("config", [
    dict(kernel=3, stride=1, padding=1, dilation=1, offset_groups=1, groups=1),
    dict(kernel=3, stride=2, padding=1, dilation=2, offset_groups=2, groups=2),
    dict(kernel=1, stride=1, padding=0, dilation=1, offset_groups=1, groups=1),
], ids=["3x3", "strided-dilated-groups", "1x1"])
def test_gradcheck_all_inputs(config):
    torch.manual_seed(0)
    x, offset, mask, weight, bias = _random_problem(batch=1, channels=2, height=4, width=5, out_channels=2,
                                                    offset_scale=1.5, **config)
    offset = _off_integer(offset)
    inputs = tuple(t.requires_grad_() for t in (x, offset, mask, weight, bias))
    geometry = dict(stride=config["stride"], padding=config["padding"], dilation=config["dilation"])

    def function(x, offset, mask, weight, bias):
        return deform_conv2d_torch(x, offset, weight, bias, mask=mask, **geometry)

    assert torch.autograd.gradcheck(function, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_gradient_reaches_offsets_through_the_image_border():
    # Samples in (-1, 0) still move with their offset (one corner is in range).
    x = torch.ones(1, 1, 3, 3, dtype=torch.float64)
    offset = torch.full((1, 2, 3, 3), -0.5, dtype=torch.float64, requires_grad=True)
    out = deform_conv2d_torch(x, offset, torch.ones(1, 1, 1, 1, dtype=torch.float64))
    out.sum().backward()
    assert offset.grad[0, 0, 0].abs().sum() > 0  # first row samples at row -0.5


# ---------------------------------------------------------------- torchvision

@pytest.mark.skipif(not dc.torchvision_available(),
                    reason="torchvision does not import beside this torch build")
def test_matches_torchvision_forward_and_gradients():
    from torchvision.ops import deform_conv2d as tv_deform_conv2d

    x, offset, mask, weight, bias = _random_problem(batch=2, channels=4, height=9, width=8, out_channels=6,
                                                    stride=2, padding=2, dilation=2, offset_groups=2,
                                                    groups=2, offset_scale=3.0)
    leaves = tuple(t.requires_grad_() for t in (x, offset, mask, weight, bias))
    results = []
    for impl in (tv_deform_conv2d, deform_conv2d_torch):
        out = impl(x, offset, weight, bias, stride=2, padding=2, dilation=2, mask=mask)
        grads = torch.autograd.grad(out, leaves, torch.cos(out.detach()))
        results.append((out, *grads))
    for expected, actual in zip(*results):
        torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------- backend selection and errors

def test_backend_flag():
    assert dc.backend() in (dc.TORCH, dc.TORCHVISION)
    assert (dc.backend() == dc.TORCHVISION) == dc.torchvision_available()
    original = dc.backend()
    try:
        dc.set_backend(dc.TORCH)
        assert dc.backend() == dc.TORCH
        with pytest.raises(ValueError):
            dc.set_backend("cuda-kernel")
        if not dc.torchvision_available():
            with pytest.raises(RuntimeError):
                dc.set_backend(dc.TORCHVISION)
    finally:
        dc.set_backend(original)


def test_mismatched_offset_shape_raises():
    x = torch.randn(1, 2, 5, 5)
    weight = torch.randn(3, 2, 3, 3)
    with pytest.raises(RuntimeError):
        deform_conv2d_torch(x, torch.zeros(1, 17, 5, 5), weight, padding=1)
    with pytest.raises(RuntimeError):
        deform_conv2d_torch(x, torch.zeros(1, 18, 4, 5), weight, padding=1)
    with pytest.raises(RuntimeError):
        deform_conv2d_torch(x, torch.zeros(1, 18, 5, 5), weight, padding=1, mask=torch.ones(1, 8, 5, 5))


# ---------------------------------------------------------------- module

def _expected_parameter_count(in_ch, out_ch, k, bias=True):
    taps = k * k
    main = in_ch * out_ch * taps + (out_ch if bias else 0)
    offset = in_ch * 2 * taps * taps + 2 * taps
    mask = in_ch * taps * taps + taps
    return main + offset + mask


@pytest.mark.parametrize("in_ch, out_ch, k", [(4, 128, 3), (4, 64, 1), (4, 2, 1)])
def test_module_parameter_count_and_shapes(in_ch, out_ch, k):
    layer = ModulatedDeformConv2d(in_ch, out_ch, kernel_size=k)
    assert sum(p.numel() for p in layer.parameters()) == _expected_parameter_count(in_ch, out_ch, k)
    assert layer.weight.shape == (out_ch, in_ch, k, k)
    assert layer.offset_conv.weight.shape == (2 * k * k, in_ch, k, k)
    assert layer.mask_conv.weight.shape == (k * k, in_ch, k, k)
    assert layer.padding == k // 2
    out = layer(torch.randn(2, in_ch, 16, 12))
    assert out.shape == (2, out_ch, 16, 12)


def test_module_without_bias_and_strided():
    layer = ModulatedDeformConv2d(3, 5, kernel_size=3, stride=2, bias=False)
    assert layer.bias is None
    assert sum(p.numel() for p in layer.parameters()) == _expected_parameter_count(3, 5, 3, bias=False)
    assert layer(torch.randn(1, 3, 9, 8)).shape == (1, 5, 5, 4)


def test_module_init_follows_the_release():
    torch.manual_seed(0)
    layer = ModulatedDeformConv2d(4, 128, kernel_size=3)
    for bias in (layer.bias, layer.offset_conv.bias, layer.mask_conv.bias):
        assert torch.count_nonzero(bias) == 0
    # Variance scaling, fan_avg, uniform: bound sqrt(3 * scale / fan_avg).
    for weight in (layer.weight, layer.offset_conv.weight, layer.mask_conv.weight):
        fan_avg = (weight.shape[0] + weight.shape[1]) * weight.shape[2] * weight.shape[3] / 2
        bound = math.sqrt(3.0 / fan_avg)
        assert weight.abs().max() <= bound
        assert weight.abs().max() > 0.9 * bound
    assert torch.count_nonzero(layer.offset_conv.weight) > 0  # offsets are NOT zero-initialised

    scaled = ModulatedDeformConv2d(4, 2, kernel_size=1, init_scale=0.0)
    assert scaled.weight.abs().max() < 1e-4


def test_zero_init_offsets_starts_as_a_half_masked_conv():
    torch.manual_seed(0)
    layer = ModulatedDeformConv2d(4, 8, kernel_size=3, zero_init_offsets=True).double()
    assert torch.count_nonzero(layer.offset_conv.weight) == 0
    assert torch.count_nonzero(layer.offset_conv.bias) == 0
    assert torch.count_nonzero(layer.mask_conv.weight) > 0
    with torch.no_grad():
        layer.mask_conv.weight.zero_()  # sigmoid(0) = 0.5 on every tap
        layer.bias.normal_()
    x = torch.randn(2, 4, 10, 7, dtype=torch.float64)
    expected = 0.5 * F.conv2d(x, layer.weight, padding=1) + layer.bias[None, :, None, None]
    torch.testing.assert_close(layer(x), expected, rtol=1e-10, atol=1e-10)


def test_module_gradients_reach_every_parameter():
    layer = ModulatedDeformConv2d(4, 6, kernel_size=3)
    layer(torch.randn(1, 4, 8, 8)).square().sum().backward()
    for name, parameter in layer.named_parameters():
        assert parameter.grad is not None and torch.count_nonzero(parameter.grad) > 0, name
