"""The building blocks of NCSN++ (score_sde's "++" layers) as ECHO uses them."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import up_or_down_sampling as resample
from .deform_conv import ModulatedDeformConv2d
from .layers import conv1x1, conv3x3, default_init, init_conv_
from .normalization import group_norm, norm_act
from .utils import is_channels_last, residual_sum


class GaussianFourierProjection(nn.Module):
    """Random Fourier features of a scalar (here log t); the frequencies are fixed at init."""

    def __init__(self, embedding_size=256, scale=16.0):
        super().__init__()
        self.W = nn.Parameter(torch.randn(embedding_size) * scale, requires_grad=False)

    def forward(self, x):
        proj = x[:, None] * self.W[None, :] * (2 * math.pi)
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


def input_conv(in_ch, out_ch, kernel_size, deform, init_scale=1.0, zero_init_offsets=False):
    """The convolutions ECHO makes deformable: the stem, the pyramid combiners and the output
    layer. ``deform=False`` gives the ordinary convolution of the same shape (the ablation)."""
    if deform:
        return ModulatedDeformConv2d(in_ch, out_ch, kernel_size=kernel_size, padding=kernel_size // 2,
                                     init_scale=init_scale, zero_init_offsets=zero_init_offsets)
    conv = nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2)
    return init_conv_(conv, init_scale)


class PyramidCombine(nn.Module):
    """Adds the (downsampled) 4-channel input to the feature map of a level, through a 1x1
    (deformable) projection: progressive_input 'input_skip' with combine 'sum'."""

    def __init__(self, pyramid_ch, channels, deform, zero_init_offsets=False):
        super().__init__()
        self.Conv_0 = input_conv(pyramid_ch, channels, 1, deform, zero_init_offsets=zero_init_offsets)

    def forward(self, pyramid, h):
        # h first: the sum takes the memory format of its first operand (and the same bits)
        return h + self.Conv_0(pyramid)


class AttnBlockpp(nn.Module):
    """Single-head self-attention over all (frequency, time) positions."""

    def __init__(self, channels, skip_rescale=True, init_scale=0.0):
        super().__init__()
        self.GroupNorm_0 = group_norm(channels)
        # q, k and v in one 1x1 projection; NCSN++ initialises these with scale 0.1
        self.qkv = init_conv_(nn.Conv2d(channels, 3 * channels, 1), 0.1)
        self.proj_out = init_conv_(nn.Conv2d(channels, channels, 1), init_scale)
        self.skip_rescale = skip_rescale

    def forward(self, x):
        b, c, hgt, wid = x.shape
        q, k, v = positions_by_channels(self.qkv(self.GroupNorm_0(x))).unflatten(-1, (3, c)).unbind(-2)
        # the fused kernel never materialises the (FT x FT) weight matrix in memory
        h = F.scaled_dot_product_attention(q, k, v)
        h = self.proj_out(image_from_positions(h, hgt, wid, like=x))
        return residual_sum(x, h, self.skip_rescale)


def positions_by_channels(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, H*W, C]: a view when x is channels-last, one copy otherwise."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[1])


def image_from_positions(h: torch.Tensor, hgt: int, wid: int, like: torch.Tensor) -> torch.Tensor:
    """[B, H*W, C] -> [B, C, H, W] in the memory format of ``like`` (a view for channels-last)."""
    image = h.reshape(h.shape[0], hgt, wid, h.shape[-1]).permute(0, 3, 1, 2)
    return image if is_channels_last(like) else image.contiguous()


class ResnetBlockBigGANpp(nn.Module):
    """BigGAN residual block with optional FIR up/down-sampling and the time embedding."""

    def __init__(self, act, in_ch, out_ch=None, temb_dim=None, up=False, down=False, dropout=0.0,
                 fir_kernel=(1, 3, 3, 1), skip_rescale=True, init_scale=0.0):
        super().__init__()
        out_ch = out_ch or in_ch
        self.GroupNorm_0 = group_norm(in_ch)
        self.Conv_0 = conv3x3(in_ch, out_ch)
        self.Dense_0 = None
        if temb_dim is not None:
            self.Dense_0 = nn.Linear(temb_dim, out_ch)
            with torch.no_grad():
                self.Dense_0.weight.copy_(default_init()(self.Dense_0.weight.shape))
                self.Dense_0.bias.zero_()
        self.GroupNorm_1 = group_norm(out_ch)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = conv3x3(out_ch, out_ch, init_scale=init_scale)
        self.Conv_2 = conv1x1(in_ch, out_ch) if (in_ch != out_ch or up or down) else None
        self.up, self.down = up, down
        self.fir_kernel = tuple(fir_kernel)
        self.skip_rescale = skip_rescale
        self.act = act

    def _resample(self, x):
        if self.up:
            return resample.upsample_2d(x, self.fir_kernel, factor=2)
        if self.down:
            return resample.downsample_2d(x, self.fir_kernel, factor=2)
        return x

    def forward(self, x, temb=None, act_temb=None):
        """``act_temb`` = act(temb) when the caller has it already: the network computes it once
        per pass instead of once in each of its ~30 blocks."""
        if act_temb is None and temb is not None:
            act_temb = self.act(temb)
        h = self._resample(norm_act(self.GroupNorm_0, self.act, x))
        x = self._resample(x)
        h = self._conv_plus_time_shift(h, act_temb)
        h = self.Conv_1(self.Dropout_0(norm_act(self.GroupNorm_1, self.act, h)))
        if self.Conv_2 is not None:
            x = self.Conv_2(x)
        return residual_sum(x, h, self.skip_rescale)

    def _conv_plus_time_shift(self, h, act_temb):
        """Conv_0(h) + Dense_0(act(temb)) per channel."""
        if self.Dense_0 is None or act_temb is None:
            return self.Conv_0(h)
        shift = self.Dense_0(act_temb)
        if h.shape[0] == 1:
            # one example (enhancement, batch-1 training): the shift is a per-channel constant,
            # so it joins the conv's bias instead of costing a pass over the output
            bias = shift[0] if self.Conv_0.bias is None else self.Conv_0.bias + shift[0]
            return self.Conv_0._conv_forward(h, self.Conv_0.weight, bias)
        # the conv's backward does not need its output, so adding in place is autograd-safe
        return self.Conv_0(h).add_(shift[:, :, None, None])
