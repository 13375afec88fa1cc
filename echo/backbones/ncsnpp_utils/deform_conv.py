"""Modulated deformable convolution (DCNv2), as used by ECHO's stem, combiners and output layer.

``deform_conv2d`` has the semantics of ``torchvision.ops.deform_conv2d``. It calls torchvision
when that imports and runs; otherwise it uses ``deform_conv2d_torch``, a pure-PyTorch version
built on ``F.grid_sample`` that matches torchvision's kernel (forward and gradients) to
rounding and is differentiable by plain autograd. ``backend()`` tells which one is in use and
``set_backend("torch")`` forces the pure path (on CPU it is also the faster of the two: about
2-4x faster than torchvision's CPU kernel on the ECHO shapes, backward included).
"""
from typing import Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import default_init
from .utils import is_channels_last

IntPair = Union[int, Tuple[int, int]]

TORCHVISION = "torchvision"
TORCH = "torch"


def _load_torchvision_deform_conv2d():
    """torchvision's op, or None. Any failure counts as absence: a torchvision built for another
    torch can fail at import or only when its compiled op is first called, so try both."""
    try:
        from torchvision.ops import deform_conv2d as tv_deform_conv2d

        x = torch.zeros(1, 1, 2, 2)
        tv_deform_conv2d(x, torch.zeros(1, 2, 2, 2), torch.ones(1, 1, 1, 1), mask=torch.ones(1, 1, 2, 2))
        return tv_deform_conv2d
    except Exception:
        return None


_torchvision_deform_conv2d = _load_torchvision_deform_conv2d()
_backend = TORCHVISION if _torchvision_deform_conv2d is not None else TORCH


def backend() -> str:
    """The implementation ``deform_conv2d`` uses: ``"torchvision"`` or ``"torch"``."""
    return _backend


def torchvision_available() -> bool:
    return _torchvision_deform_conv2d is not None


def set_backend(name: str) -> None:
    """Choose the implementation: ``"torch"`` always works, ``"torchvision"`` only where it imports."""
    global _backend
    if name == TORCHVISION and not torchvision_available():
        raise RuntimeError("torchvision.ops.deform_conv2d is not available")
    if name not in (TORCHVISION, TORCH):
        raise ValueError(f"unknown deformable-convolution backend {name!r}")
    _backend = name


def _pair(value: IntPair) -> Tuple[int, int]:
    if isinstance(value, int):
        return value, value
    first, second = value
    return int(first), int(second)


def deform_conv2d(input: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor,
                  bias: Optional[torch.Tensor] = None, stride: IntPair = 1, padding: IntPair = 0,
                  dilation: IntPair = 1, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Deformable convolution with the arguments and semantics of ``torchvision.ops.deform_conv2d``.

    input [B, C, H, W]; offset [B, 2*G*kh*kw, Ho, Wo], (dy, dx) pairs per kernel tap, tap-major
    within each of the G offset groups; weight [O, C // groups, kh, kw] (groups = C // weight
    channels); mask [B, G*kh*kw, Ho, Wo] or None (DCNv1, no modulation).

    bfloat16/float16 inputs or offsets (bf16 weights, or autocast) take the pure-PyTorch path,
    which places the samples at float32 positions; torchvision's kernel would place them at
    the offsets' precision or refuse the dtype.
    """
    if _backend == TORCHVISION and not _low_precision(input, offset):
        return _torchvision_deform_conv2d(input, offset, weight, bias, stride=_pair(stride),
                                          padding=_pair(padding), dilation=_pair(dilation), mask=mask)
    return deform_conv2d_torch(input, offset, weight, bias, stride, padding, dilation, mask)


LOW_PRECISION = (torch.bfloat16, torch.float16)


def _low_precision(*tensors: torch.Tensor) -> bool:
    return any(t.dtype in LOW_PRECISION for t in tensors)


def _output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _check_shapes(input, offset, weight, mask, out_hw, kernel_hw):
    batch, channels = input.shape[:2]
    taps = kernel_hw[0] * kernel_hw[1]
    if channels % weight.shape[1] != 0:
        raise RuntimeError(f"input channels {channels} are not a multiple of weight.shape[1]={weight.shape[1]}")
    groups = channels // weight.shape[1]
    if weight.shape[0] % groups != 0:
        raise RuntimeError(f"output channels {weight.shape[0]} are not a multiple of groups={groups}")
    if offset.shape[1] == 0 or offset.shape[1] % (2 * taps) != 0:
        raise RuntimeError(f"offset.shape[1]={offset.shape[1]} is not a positive multiple of 2*kh*kw={2 * taps}")
    offset_groups = offset.shape[1] // (2 * taps)
    if channels % offset_groups != 0:
        raise RuntimeError(f"input channels {channels} are not a multiple of offset groups {offset_groups}")
    if tuple(offset.shape) != (batch, 2 * offset_groups * taps, *out_hw):
        raise RuntimeError(f"offset shape {tuple(offset.shape)} does not match the output size {out_hw}")
    if mask is not None and tuple(mask.shape) != (batch, offset_groups * taps, *out_hw):
        raise RuntimeError(f"mask shape {tuple(mask.shape)} does not match offsets ({offset_groups} groups, "
                           f"{taps} taps, output size {out_hw})")
    return groups, offset_groups


def _normalised_tap_positions(size_in: int, size_out: int, kernel: int, stride: int, padding: int,
                              dilation: int, like: torch.Tensor) -> torch.Tensor:
    """Undeformed sampling coordinates along one axis, [kernel, size_out], in grid_sample's
    align_corners=False units: pixel p maps to (2p + 1) / size - 1, which also covers size 1."""
    out_index = torch.arange(size_out, dtype=like.dtype, device=like.device)
    tap_index = torch.arange(kernel, dtype=like.dtype, device=like.device)
    pixel = (out_index * stride - padding)[None, :] + (tap_index * dilation)[:, None]
    return (2 * pixel + 1) / size_in - 1


def _sampling_grid(offset, in_hw, kernel_hw, stride, padding, dilation, offset_groups):
    """grid_sample grid [B*G, taps*Ho, Wo, 2] for every tap of every output position, in
    (row, column) order: the offsets' own (dy, dx) order, so the grid is a single fused
    multiply-add of the offsets and the input is sampled with its last two axes swapped.

    With zero padding, grid_sample keeps each in-range corner of a sample in (-1, size) and
    drops the others, which is exactly torchvision's border rule, in value and in gradient.
    """
    batch, _, out_h, out_w = offset.shape
    (in_h, in_w), (kh, kw) = in_hw, kernel_hw
    if offset.dtype in LOW_PRECISION:
        # bf16 keeps 8 significant bits: on a 256-bin axis the undeformed positions alone are
        # off by up to half a pixel, and the offsets added to them by as much again. Under bf16
        # autocast that moved the network's output by its own size (relative difference ~1 from
        # float32 on a trained model); with float32 positions the difference is bf16 rounding.
        offset = offset.float()
    rows = _normalised_tap_positions(in_h, out_h, kh, stride[0], padding[0], dilation[0], offset)
    cols = _normalised_tap_positions(in_w, out_w, kw, stride[1], padding[1], dilation[1], offset)
    base = torch.stack(torch.broadcast_tensors(rows[:, None, :, None], cols[None, :, None, :]), dim=-1)
    base = base.reshape(kh * kw, out_h, out_w, 2)
    pixel_to_grid = offset.new_tensor([2.0 / in_h, 2.0 / in_w])

    offset_rc = offset.reshape(batch * offset_groups, kh * kw, 2, out_h, out_w).permute(0, 1, 3, 4, 2)
    grid = torch.addcmul(base, offset_rc, pixel_to_grid)
    return grid.reshape(batch * offset_groups, kh * kw * out_h, out_w, 2)


def _grouped_matmul(columns: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                    groups: int) -> torch.Tensor:
    """weight [O, K*] applied to columns [B, groups*K*, L] per group: [B, O, L].

    A batched matmul with the bias as its addend is one pass over the (large) output, which
    beats both conv2d with a 1x1 kernel and matmul followed by a bias add on CPU.
    """
    batch, _, length = columns.shape
    out_channels = weight.shape[0]
    group_out = out_channels // groups
    group_weight = weight.reshape(1, groups, group_out, -1).expand(batch, -1, -1, -1)
    group_weight = group_weight.reshape(batch * groups, group_out, -1)
    group_columns = columns.reshape(batch * groups, -1, length)
    if bias is None:
        out = torch.bmm(group_weight, group_columns)
    else:
        group_bias = bias.reshape(1, groups, group_out, 1).expand(batch, -1, -1, -1)
        out = torch.baddbmm(group_bias.reshape(batch * groups, group_out, 1), group_weight, group_columns)
    return out.view(batch, out_channels, length)


def _matmul_positions_major(columns: torch.Tensor, weight: torch.Tensor,
                            bias: Optional[torch.Tensor]) -> torch.Tensor:
    """columns [B, K, L] and weight [O, K] -> [B, L, O] (output channels innermost)."""
    batch = columns.shape[0]
    weight_t = weight.t().expand(batch, -1, -1)
    if bias is None:
        return torch.bmm(columns.transpose(1, 2), weight_t)
    return torch.baddbmm(bias.reshape(1, 1, -1), columns.transpose(1, 2), weight_t)


def deform_conv2d_torch(input: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor,
                        bias: Optional[torch.Tensor] = None, stride: IntPair = 1, padding: IntPair = 0,
                        dilation: IntPair = 1, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Pure-PyTorch ``deform_conv2d``: a bilinear gather of every tap in one grid_sample call,
    then a matmul of the gathered columns with the flattened weight."""
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    batch, channels, in_h, in_w = input.shape
    out_channels, _, kh, kw = weight.shape
    out_hw = tuple(_output_size(input.shape[2 + axis], weight.shape[2 + axis], stride[axis],
                                padding[axis], dilation[axis]) for axis in range(2))
    groups, offset_groups = _check_shapes(input, offset, weight, mask, out_hw, (kh, kw))
    taps = kh * kw

    grid = _sampling_grid(offset, (in_h, in_w), (kh, kw), stride, padding, dilation, offset_groups)
    grouped_input = input.reshape(batch * offset_groups, channels // offset_groups, in_h, in_w)
    # grid_sample reads grid[..., 0] along the last axis; the grid is in (row, column) order.
    if grid.dtype != input.dtype:
        # bf16/fp16 input with its float32 grid (see _sampling_grid): grid_sample takes one
        # dtype, so the gather runs in float32 (few channels: ECHO's deformable convolutions
        # read the 4-channel input) and its result returns to the input's dtype for the matmul
        sampled = F.grid_sample(grouped_input.transpose(2, 3).to(grid.dtype), grid, mode="bilinear",
                                padding_mode="zeros", align_corners=False).to(input.dtype)
    else:
        sampled = F.grid_sample(grouped_input.transpose(2, 3), grid, mode="bilinear", padding_mode="zeros",
                                align_corners=False)
    if mask is not None:
        sampled = sampled * mask.reshape(batch * offset_groups, 1, taps * out_hw[0], out_hw[1])

    # [B*G, C/G, taps*Ho, Wo] is laid out as [B, C*taps, Ho*Wo] with channel-major (c, tap)
    # order, the same order as weight.view(O, C/groups * taps); no copy is needed.
    columns = sampled.view(batch, channels * taps, out_hw[0] * out_hw[1])
    if groups == 1 and is_channels_last(input):
        # like F.conv2d, answer in the input's memory format, so that a channels-last network
        # stays channels-last; the matmul simply writes its transposed product
        out = _matmul_positions_major(columns, weight.reshape(out_channels, -1), bias)
        return out.view(batch, *out_hw, out_channels).permute(0, 3, 1, 2)
    out = _grouped_matmul(columns, weight.reshape(out_channels, -1), bias, groups)
    return out.view(batch, out_channels, *out_hw)


class ModulatedDeformConv2d(nn.Module):
    """DCNv2 layer: an ordinary conv predicts per-tap offsets, another one a sigmoid mask, both
    from the layer input with the same kernel, stride, padding and dilation as the main conv.

    Initialisation follows the released ECHO model: DDPM variance scaling (fan_avg, uniform,
    ``init_scale``) for the main, offset and mask weights and zero biases. The offset and mask
    convs are therefore NOT zero-initialised: offsets start as a random linear function of the
    input (and the mask as sigmoid of one). ``zero_init_offsets=True`` zeroes the offset conv's weight so the
    layer starts as an ordinary conv whose taps are scaled by sigmoid(mask) ~ 0.5.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1,
                 padding: Optional[int] = None, dilation: int = 1, bias: bool = True,
                 init_scale: float = 1.0, zero_init_offsets: bool = False):
        super().__init__()
        padding = kernel_size // 2 if padding is None else padding
        self.in_ch, self.out_ch = in_ch, out_ch
        self.kernel_size, self.stride, self.padding, self.dilation = kernel_size, stride, padding, dilation
        taps = kernel_size * kernel_size
        geometry = dict(kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation, bias=True)
        self.offset_conv = nn.Conv2d(in_ch, 2 * taps, **geometry)
        self.mask_conv = nn.Conv2d(in_ch, taps, **geometry)
        self.weight = nn.Parameter(torch.empty(out_ch, in_ch, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_ch)) if bias else None
        self.reset_parameters(init_scale, zero_init_offsets)

    def reset_parameters(self, init_scale: float = 1.0, zero_init_offsets: bool = False) -> None:
        init = default_init(init_scale)
        with torch.no_grad():
            for conv in (self.offset_conv, self.mask_conv):
                conv.weight.copy_(init(conv.weight.shape))
                conv.bias.zero_()
            if zero_init_offsets:
                self.offset_conv.weight.zero_()
            self.weight.copy_(init(self.weight.shape))
            if self.bias is not None:
                self.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset = self.offset_conv(x)
        mask = torch.sigmoid(self.mask_conv(x))
        return deform_conv2d(x, offset, self.weight, self.bias, stride=self.stride, padding=self.padding,
                             dilation=self.dilation, mask=mask)

    def extra_repr(self) -> str:
        return (f"{self.in_ch}, {self.out_ch}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, bias={self.bias is not None}")
