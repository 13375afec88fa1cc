"""NCSN++ with modulated deformable convolutions: the ECHO backbone (METHOD.md sections 3, 5).

A U-Net over the complex spectrogram seen as 4 real channels [Re x_t, Im x_t, Re y, Im y].
Deformable convolutions replace three ordinary ones: the 3x3 stem, the 1x1 projections that
feed the downsampled input into each level (progressive input), and the final 1x1 output
layer. Everything else is SGMSE+'s NCSN++ at the paper configuration.
"""
import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F

from .ncsnpp_utils.layers import conv3x3, dense
from .ncsnpp_utils.layerspp import (AttnBlockpp, GaussianFourierProjection, PyramidCombine,
                                    ResnetBlockBigGANpp, input_conv)
from .ncsnpp_utils.normalization import group_norm, norm_act
from .ncsnpp_utils import up_or_down_sampling as resample
from .ncsnpp_utils.op import fused_bias_act
from .ncsnpp_utils.utils import channels_to_complex, complex_to_channels
from .shared import BackboneRegistry

NUM_INPUT_CHANNELS = 4  # Re/Im of the current state x_t and of the noisy condition y


@BackboneRegistry.register("ncsnpp_deform")
class NCSNppDeform(nn.Module):
    """Input [B, 2, F, T] complex (x_t, y) and t [B]; output [B, 1, F, T] complex.

    F and T must be divisible by ``downsampling_factor`` (2**(levels-1); 64 at paper size).

    ``channels_last``: run the pass in channels-last memory format (True), in the plain layout
    (False), or choose (None, the default): channels-last for CPU passes without autograd
    (sampling, enhancement), the plain layout otherwise. It changes the memory layout of the
    activations only, never the parameters or the state_dict. Measured on a 2-core AVX2 EPYC,
    1 thread, paper size, T=256, CPU seconds (torch 2.13):
      inference forward: 7.24 plain -> 6.78 channels-last (oneDNN convs, the depthwise FIR
        resampling and GroupNorm are all faster on [N, H, W, C] memory);
      forward + backward: 25.7 plain -> 49.0 channels-last (oneDNN's channels-last conv
        backward is 2-3x slower than its plain one here), hence plain under autograd.
    """

    channels_last = None

    @staticmethod
    def add_argparse_args(parser):
        group = parser.add_argument_group("NCSN++ (deformable) backbone")
        group.add_argument("--nf", type=int, default=128, help="Channels of the first level (default 128)")
        group.add_argument("--ch_mult", type=int, nargs="+", default=[1, 1, 2, 2, 2, 2, 2],
                           help="Channel multiplier of each level; its length is the number of levels (default 1 1 2 2 2 2 2)")
        group.add_argument("--num_res_blocks", type=int, default=2, help="Residual blocks per level (default 2)")
        group.add_argument("--attn_resolutions", type=int, nargs="*", default=[16],
                           help="Frequency-axis sizes at which self-attention is applied (default 16; give none to disable)")
        group.add_argument("--dropout", type=float, default=0.0, help="Dropout in the residual blocks (default 0)")
        group.add_argument("--fourier_scale", type=float, default=16.0, help="Scale of the Fourier time features (default 16)")
        group.add_argument("--deform", action=argparse.BooleanOptionalAction, default=True,
                           help="Deformable stem, pyramid combiners and output layer; --no-deform gives plain NCSN++ (default on)")
        group.add_argument("--zero_init_offsets", action=argparse.BooleanOptionalAction, default=False,
                           help="Start the stem/combiner offset predictors at zero (the release does not; default off)")
        group.add_argument("--scale_by_sigma", action=argparse.BooleanOptionalAction, default=None,
                           help="Older spelling of --output_scaling release (--scale_by_sigma) or none "
                                "(--no-scale_by_sigma); default: as --output_scaling says")
        return parser

    def __init__(self, nf=128, ch_mult=(1, 1, 2, 2, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,),
                 dropout=0.0, fourier_scale=16.0, deform=True, zero_init_offsets=False, scale_by_sigma=True,
                 fir_kernel=(1, 3, 3, 1), skip_rescale=True, init_scale=0.0, image_size=256, **ignored):
        super().__init__()
        ch_mult = list(ch_mult)
        if not ch_mult or nf < 4 or nf % 4:
            raise ValueError(f"need nf a positive multiple of 4 and a non-empty ch_mult, got nf={nf}, ch_mult={ch_mult}")
        self.num_levels = len(ch_mult)
        self.downsampling_factor = 2 ** (self.num_levels - 1)
        self.num_res_blocks = num_res_blocks
        self.scale_by_sigma = scale_by_sigma
        self.fir_kernel = tuple(fir_kernel)
        resolutions = [image_size // 2 ** i for i in range(self.num_levels)]
        self.attn_levels = [res in set(attn_resolutions) for res in resolutions]
        self.act = act = nn.SiLU()  # 'swish' in the score_sde configs

        temb_dim = 4 * nf
        self.time_embed = GaussianFourierProjection(embedding_size=nf, scale=fourier_scale)
        self.time_dense_0 = dense(2 * nf, temb_dim)
        self.time_dense_1 = dense(temb_dim, temb_dim)

        def block(in_ch, out_ch=None, **kw):
            return ResnetBlockBigGANpp(act, in_ch, out_ch, temb_dim=temb_dim, dropout=dropout,
                                       fir_kernel=fir_kernel, skip_rescale=skip_rescale,
                                       init_scale=init_scale, **kw)

        def attention(ch):
            return AttnBlockpp(ch, skip_rescale=skip_rescale, init_scale=init_scale)

        self.stem = input_conv(NUM_INPUT_CHANNELS, nf, 3, deform, zero_init_offsets=zero_init_offsets)

        # encoder: per level, residual blocks (+ attention), then a downsampling block and the
        # combiner that adds the downsampled input spectrogram
        skip_channels = [nf]
        ch = nf
        self.down_levels = nn.ModuleList()
        for level, mult in enumerate(ch_mult):
            stage = nn.Module()
            stage.blocks = nn.ModuleList()
            stage.attn = nn.ModuleList()
            for _ in range(num_res_blocks):
                stage.blocks.append(block(ch, nf * mult))
                ch = nf * mult
                stage.attn.append(attention(ch) if self.attn_levels[level] else nn.Identity())
                skip_channels.append(ch)
            if level != self.num_levels - 1:
                stage.downsample = block(ch, down=True)
                stage.combine = PyramidCombine(NUM_INPUT_CHANNELS, ch, deform, zero_init_offsets)
                skip_channels.append(ch)
            self.down_levels.append(stage)

        self.mid_block_0 = block(ch)
        self.mid_attn = attention(ch)
        self.mid_block_1 = block(ch)

        # decoder: per level, residual blocks over the concatenated skips (+ attention), an
        # output-skip head adding to the upsampled 4-channel output pyramid, then upsampling
        self.up_levels = nn.ModuleList()
        for level in reversed(range(self.num_levels)):
            stage = nn.Module()
            stage.blocks = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                out_ch = nf * ch_mult[level]
                stage.blocks.append(block(ch + skip_channels.pop(), out_ch))
                ch = out_ch
            stage.attn = attention(ch) if self.attn_levels[level] else nn.Identity()
            stage.pyramid_norm = group_norm(ch)
            stage.pyramid_conv = conv3x3(ch, NUM_INPUT_CHANNELS, init_scale=init_scale)
            if level != 0:
                stage.upsample = block(ch, up=True)
            self.up_levels.append(stage)
        assert not skip_channels

        self.output_layer = input_conv(NUM_INPUT_CHANNELS, 2, 1, deform, init_scale=init_scale)

    def forward(self, x, t):
        if x.shape[-2] % self.downsampling_factor or x.shape[-1] % self.downsampling_factor:
            raise ValueError(f"spectrogram of {x.shape[-2]}x{x.shape[-1]} bins x frames: both must be "
                             f"divisible by {self.downsampling_factor}; pad the time axis first")
        h_in = complex_to_channels(x)
        if self.uses_channels_last(h_in):
            h_in = h_in.contiguous(memory_format=torch.channels_last)
        act_temb = self.act(self.time_embedding(t))

        pyramid_in = h_in
        skips = [self.stem(h_in)]
        for level, stage in enumerate(self.down_levels):
            for blk, attn in zip(stage.blocks, stage.attn):
                skips.append(attn(blk(skips[-1], act_temb=act_temb)))
            if level != self.num_levels - 1:
                h = stage.downsample(skips[-1], act_temb=act_temb)
                pyramid_in = resample.downsample_2d(pyramid_in, self.fir_kernel, factor=2)
                skips.append(stage.combine(pyramid_in, h))

        h = self.mid_block_0(skips[-1], act_temb=act_temb)
        h = self.mid_block_1(self.mid_attn(h), act_temb=act_temb)

        pyramid = None
        for stage in self.up_levels:
            for blk in stage.blocks:
                h = blk(torch.cat([h, skips.pop()], dim=1), act_temb=act_temb)
            h = stage.attn(h)
            head = stage.pyramid_conv(norm_act(stage.pyramid_norm, self.act, h))
            pyramid = head if pyramid is None else resample.upsample_2d(pyramid, self.fir_kernel, factor=2) + head
            if hasattr(stage, "upsample"):
                h = stage.upsample(h, act_temb=act_temb)
        assert not skips

        if self.scale_by_sigma:
            pyramid = pyramid / t.reshape(-1, 1, 1, 1)
        return channels_to_complex(self.output_layer(pyramid))

    def time_embedding(self, t):
        """Fourier features of log t through the two-layer MLP (before the blocks' activation)."""
        # first MLP layer: bias and SiLU in one op (a single CUDA kernel where the ops are built)
        temb = F.linear(self.time_embed(torch.log(t)), self.time_dense_0.weight)
        return self.time_dense_1(fused_bias_act(temb, self.time_dense_0.bias, act="silu"))

    def uses_channels_last(self, h: torch.Tensor) -> bool:
        """Whether this pass runs in channels-last memory format (see ``channels_last``)."""
        if self.channels_last is None:
            return h.device.type == "cpu" and not torch.is_grad_enabled()
        return bool(self.channels_last)
