"""The optimised NCSN++ (deformable) forward pass against a plain, unoptimised one.

The reference below is written for reading, not speed: explicit einsum attention, FIR
resampling by zero insertion + F.conv2d + slicing, modulated deformable convolution by explicit
bilinear gathers, GroupNorm from its definition and act(temb) recomputed in every block, all in
the default (contiguous) memory format. It reuses the module's own parameters, so any
difference comes from how the optimised code computes, never from what it computes.

Tolerances: float64 agrees to 1e-9 of the output's scale (the same function, only the rounding
differs); float32 to 1e-4 of the output's scale (reordered sums in oneDNN, the fused attention
kernel and the time shift folded into the conv bias each move the result by a few ulp per layer).
"""
import math

import pytest
import torch
import torch.nn.functional as F

from echo.backbones import NCSNppDeform
from echo.backbones.ncsnpp_utils.deform_conv import ModulatedDeformConv2d

SMALL_CONFIG = dict(nf=16, ch_mult=[1, 2, 2], num_res_blocks=2, attn_resolutions=[64])
FREQ_BINS, FRAMES = 32, 16
RELATIVE_TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4}


# --------------------------------------------------------------------------------------------
# The plain reference
# --------------------------------------------------------------------------------------------

def silu(x):
    return x * torch.sigmoid(x)


def ref_group_norm(norm, x):
    b, c, h, w = x.shape
    groups = x.reshape(b, norm.num_groups, -1)
    mean = groups.mean(dim=-1, keepdim=True)
    var = groups.var(dim=-1, unbiased=False, keepdim=True)
    normalised = ((groups - mean) / torch.sqrt(var + norm.eps)).reshape(b, c, h, w)
    return normalised * norm.weight[None, :, None, None] + norm.bias[None, :, None, None]


def ref_conv(conv, x):
    return F.conv2d(x, conv.weight, conv.bias, stride=conv.stride, padding=conv.padding)


def ref_upfirdn2d(x, kernel, up, down, pad0, pad1):
    """Zero insertion, padding, true convolution with the 2-D kernel, decimation."""
    b, c, h, w = x.shape
    upsampled = x.new_zeros(b, c, h * up, w * up)
    upsampled[:, :, ::up, ::up] = x
    padded = F.pad(upsampled, [pad0, pad1, pad0, pad1])
    flipped = kernel.flip(0, 1)[None, None]
    filtered = F.conv2d(padded.reshape(b * c, 1, *padded.shape[2:]), flipped)
    return filtered.reshape(b, c, *filtered.shape[2:])[:, :, ::down, ::down]


def ref_fir_kernel(taps, like):
    k = torch.tensor(taps, dtype=like.dtype)
    k = torch.outer(k, k)
    return k / k.sum()


def ref_upsample(x, taps):
    return ref_upfirdn2d(x, ref_fir_kernel(taps, x) * 4, up=2, down=1, pad0=2, pad1=1)


def ref_downsample(x, taps):
    return ref_upfirdn2d(x, ref_fir_kernel(taps, x), up=1, down=2, pad0=1, pad1=1)


def bilinear_zero_padded(image, rows, cols):
    """image [C, H, W] sampled at fractional (rows, cols) [...]; zero outside the image."""
    _, height, width = image.shape
    r0, c0 = torch.floor(rows), torch.floor(cols)
    out = 0
    for dr in (0, 1):
        for dc in (0, 1):
            r, c = r0 + dr, c0 + dc
            weight = (1 - (rows - r).abs()) * (1 - (cols - c).abs())
            inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
            values = image[:, r.clamp(0, height - 1).long(), c.clamp(0, width - 1).long()]
            out = out + values * (weight * inside)
    return out


def ref_deform_conv(layer: ModulatedDeformConv2d, x):
    """DCNv2 from its definition: out[o, p] = b[o] + sum_{c,k} W[o,c,k] m_k(p) x_c(p + p_k + d_k(p))."""
    offset = ref_conv(layer.offset_conv, x)
    mask = torch.sigmoid(ref_conv(layer.mask_conv, x))
    k, pad = layer.kernel_size, layer.padding
    batch, _, height, width = x.shape
    rows = torch.arange(height, dtype=x.dtype)[:, None].expand(height, width)
    cols = torch.arange(width, dtype=x.dtype)[None, :].expand(height, width)
    outputs = []
    for n in range(batch):
        taps = []
        for tap in range(k * k):
            ky, kx = divmod(tap, k)
            sample_rows = rows - pad + ky + offset[n, 2 * tap]
            sample_cols = cols - pad + kx + offset[n, 2 * tap + 1]
            taps.append(bilinear_zero_padded(x[n], sample_rows, sample_cols) * mask[n, tap])
        sampled = torch.stack(taps, dim=1)  # [C, taps, H, W]
        weight = layer.weight.reshape(layer.out_ch, layer.in_ch, k * k)
        outputs.append(torch.einsum("oct,cthw->ohw", weight, sampled) + layer.bias[:, None, None])
    return torch.stack(outputs)


def ref_input_conv(layer, x):
    return ref_deform_conv(layer, x) if isinstance(layer, ModulatedDeformConv2d) else ref_conv(layer, x)


def ref_resnet_block(block, x, temb, taps):
    h = silu(ref_group_norm(block.GroupNorm_0, x))
    if block.up:
        h, x = ref_upsample(h, taps), ref_upsample(x, taps)
    elif block.down:
        h, x = ref_downsample(h, taps), ref_downsample(x, taps)
    h = ref_conv(block.Conv_0, h)
    h = h + F.linear(silu(temb), block.Dense_0.weight, block.Dense_0.bias)[:, :, None, None]
    h = ref_conv(block.Conv_1, silu(ref_group_norm(block.GroupNorm_1, h)))
    if block.Conv_2 is not None:
        x = ref_conv(block.Conv_2, x)
    return (x + h) / math.sqrt(2.0)


def ref_attention(block, x):
    b, c, height, width = x.shape
    qkv = ref_conv(block.qkv, ref_group_norm(block.GroupNorm_0, x))
    q, k, v = qkv.reshape(b, 3, c, height * width).unbind(1)
    weights = torch.softmax(torch.einsum("bci,bcj->bij", q, k) * c ** -0.5, dim=-1)
    h = torch.einsum("bij,bcj->bci", weights, v).reshape(b, c, height, width)
    return (x + ref_conv(block.proj_out, h)) / math.sqrt(2.0)


def ref_maybe_attention(block, x):
    return x if isinstance(block, torch.nn.Identity) else ref_attention(block, x)


def ref_forward(net: NCSNppDeform, x, t):
    taps = net.fir_kernel
    h_in = torch.cat([torch.stack([x[:, i].real, x[:, i].imag], dim=1) for i in range(x.shape[1])], dim=1)
    fourier = torch.log(t)[:, None] * net.time_embed.W[None, :] * 2 * math.pi
    temb = torch.cat([torch.sin(fourier), torch.cos(fourier)], dim=-1)
    temb = net.time_dense_1(silu(net.time_dense_0(temb)))

    pyramid_in = h_in
    skips = [ref_input_conv(net.stem, h_in)]
    for level, stage in enumerate(net.down_levels):
        for blk, attn in zip(stage.blocks, stage.attn):
            skips.append(ref_maybe_attention(attn, ref_resnet_block(blk, skips[-1], temb, taps)))
        if level != net.num_levels - 1:
            h = ref_resnet_block(stage.downsample, skips[-1], temb, taps)
            pyramid_in = ref_downsample(pyramid_in, taps)
            skips.append(ref_input_conv(stage.combine.Conv_0, pyramid_in) + h)

    h = ref_resnet_block(net.mid_block_0, skips[-1], temb, taps)
    h = ref_resnet_block(net.mid_block_1, ref_attention(net.mid_attn, h), temb, taps)

    pyramid = None
    for stage in net.up_levels:
        for blk in stage.blocks:
            h = ref_resnet_block(blk, torch.cat([h, skips.pop()], dim=1), temb, taps)
        h = ref_maybe_attention(stage.attn, h)
        head = ref_conv(stage.pyramid_conv, silu(ref_group_norm(stage.pyramid_norm, h)))
        pyramid = head if pyramid is None else ref_upsample(pyramid, taps) + head
        if hasattr(stage, "upsample"):
            h = ref_resnet_block(stage.upsample, h, temb, taps)

    if net.scale_by_sigma:
        pyramid = pyramid / t[:, None, None, None]
    out = ref_input_conv(net.output_layer, pyramid)
    return torch.complex(out[:, 0::2], out[:, 1::2])


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------

def randomised_network(dtype, **overrides):
    """The small network with every parameter drawn at a scale where all layers matter: the
    zero-initialised output layers of the real init would hide most of the network."""
    torch.manual_seed(0)
    net = NCSNppDeform(**dict(SMALL_CONFIG, **overrides)).to(dtype)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("time_embed.W"):
                continue  # fixed Fourier frequencies
            if p.dim() > 1:
                p.copy_(torch.randn_like(p) / math.sqrt(p[0].numel()))
            else:
                p.copy_(0.1 * torch.randn_like(p))
        for module in net.modules():
            if isinstance(module, torch.nn.GroupNorm):
                module.weight.add_(1.0)
    return net


def inputs(dtype, batch):
    generator = torch.Generator().manual_seed(1)
    complex_dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    x = torch.randn(batch, 2, FREQ_BINS, FRAMES, dtype=complex_dtype, generator=generator)
    t = torch.rand(batch, dtype=dtype, generator=generator) * 0.9 + 0.1
    return x, t


def relative_error(out, expected):
    return float((out - expected).abs().max() / expected.abs().max())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("batch", [1, 2], ids=["batch1", "batch2"])
@pytest.mark.parametrize("channels_last", [True, False], ids=["channels_last", "contiguous"])
def test_optimised_forward_matches_plain_reference(dtype, batch, channels_last):
    net = randomised_network(dtype)
    net.channels_last = channels_last
    x, t = inputs(dtype, batch)
    with torch.no_grad():
        expected = ref_forward(net, x, t)
    assert expected.abs().max() > 1e-2  # every layer contributes at this scale
    with torch.inference_mode():  # the sampler's mode: in-place activations and residual sums
        inference = net(x, t)
    training = net(x, t)  # autograd mode: out-of-place paths
    assert relative_error(inference, expected) < RELATIVE_TOLERANCE[dtype]
    assert relative_error(training.detach(), expected) < RELATIVE_TOLERANCE[dtype]


def test_plain_backbone_matches_reference():
    net = randomised_network(torch.float64, deform=False)
    x, t = inputs(torch.float64, 1)
    with torch.no_grad():
        assert relative_error(net(x, t), ref_forward(net, x, t)) < RELATIVE_TOLERANCE[torch.float64]


def test_gradients_match_reference():
    net = randomised_network(torch.float64)
    x, t = inputs(torch.float64, 2)
    grads = []
    for forward in (net, lambda x_, t_: ref_forward(net, x_, t_)):
        net.zero_grad()
        forward(x, t).abs().square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None})
    optimised, reference = grads
    assert optimised.keys() == reference.keys()
    for name in reference:
        scale = reference[name].abs().max().clamp_min(1e-12)
        assert float((optimised[name] - reference[name]).abs().max() / scale) < 1e-8, name
