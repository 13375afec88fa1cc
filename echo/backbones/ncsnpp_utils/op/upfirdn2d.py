"""upfirdn2d: upsample by zero insertion, pad, FIR-filter, downsample, on [N, C, H, W] tensors.

Two implementations with the same semantics:

- the PyTorch ("native") path: one depthwise convolution, differentiable by plain autograd, on
  any device and dtype;
- the CUDA kernel (``upfirdn2d_kernel.cu``), built on first use, with an autograd Function whose
  backward is again upfirdn2d, so it can be differentiated any number of times.

Native path design. The reference approach folds the channels into the batch, runs a
one-channel convolution of the zero-inserted signal at full resolution and then keeps every
down-th sample: it filters 4x more samples than it keeps and copies the tensor several times.
Measured with benchmarks/bench_ops.py (float32 forward, FIR [1,3,3,1], best of 5x5 runs, 2-core
AMD EPYC VM under load from other jobs, 1 thread; ms):

    shape               op     folded batch   strided depthwise   separable 1-D passes
    [1,128,256,256]     down       532               50                  39
    [1,128,128,128]     down       117              4.8                 7.1
    [1,4,256,256]       down       6.3              0.54                2.1
    [1,256,8,8]         up         2.8              0.41                1.4
    [1,256,64,64]       up         253               11                  19
    [1,128,128,128]     up         557               56                  63
    all resampling of one paper-size forward pass:
                                  3062              263                 287

With 2 threads on the busy machine: 3175 / 811 / 1274 ms per forward pass. Strided depthwise
conv2d (down) and conv_transpose2d (up) win everywhere except the largest downsampling, where
the separable passes won with 1 thread (39 vs 50 ms) but lost with 2 (106 vs 83 ms), so the
native path uses the depthwise convolutions only, letting them do the padding (F.pad would copy
the tensor) whenever it is symmetric. A polyphase upsampling (conv2d with four phases per channel +
pixel_shuffle) was 2-4x slower than conv_transpose2d.
"""
import torch
import torch.nn.functional as F

from .build import load_extension, select_backend


def output_size(in_size: int, kernel_size: int, up: int, down: int, pad0: int, pad1: int) -> int:
    return (in_size * up + pad0 + pad1 - kernel_size) // down + 1


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1, pad=(0, 0)) -> torch.Tensor:
    """Upsample by ``up`` (zero insertion), pad by ``pad`` = (before, after) (negative crops),
    convolve with ``kernel`` (a true convolution: correlation with the flipped kernel), keep every
    ``down``-th sample. Same factors and padding on both spatial axes.

    x: [N, C, H, W]; kernel: [kh, kw]. Output: [N, C, (H*up + p0 + p1 - kh) // down + 1, ...(W)].

    The CUDA kernel treats ``kernel`` as a constant; when it requires grad the PyTorch path is
    used so that its gradient is right.
    """
    up, down, pad0, pad1 = _check_args(x, kernel, up, down, pad)
    if not kernel.requires_grad and select_backend(x.device, ("upfirdn2d",)).backend == "cuda":
        pads = (pad0, pad1, pad0, pad1)
        return _Upfirdn2dCuda.apply(x, kernel, up, down, pads)
    return upfirdn2d_native(x, kernel, up, down, (pad0, pad1))


def _check_args(x, kernel, up, down, pad):
    if x.dim() != 4:
        raise ValueError(f"upfirdn2d expects x of shape [N, C, H, W], got {tuple(x.shape)}")
    if kernel.dim() != 2:
        raise ValueError(f"upfirdn2d expects a 2-D kernel, got shape {tuple(kernel.shape)}")
    up, down = int(up), int(down)
    if up < 1 or down < 1:
        raise ValueError(f"up and down must be >= 1, got up={up}, down={down}")
    pad0, pad1 = (int(p) for p in pad)
    for axis, size, taps in (("H", x.shape[2], kernel.shape[0]), ("W", x.shape[3], kernel.shape[1])):
        if output_size(size, taps, up, down, pad0, pad1) < 1:
            raise ValueError(f"upfirdn2d: empty output along {axis} (size {size}, kernel {taps}, pad {pad})")
    return up, down, pad0, pad1


def upfirdn2d_native(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1, pad=(0, 0)) -> torch.Tensor:
    """The PyTorch path of :func:`upfirdn2d` (no argument checks)."""
    pad0, pad1 = pad
    kernel = kernel.to(device=x.device, dtype=x.dtype)
    if up == 1:
        return _filter_and_downsample(x, kernel, down, pad0, pad1)
    y = _upsample_and_filter(x, kernel, up, pad0, pad1)
    return y if down == 1 else y[:, :, ::down, ::down]


def _depthwise_weight(kernel: torch.Tensor, channels: int) -> torch.Tensor:
    return kernel[None, None].expand(channels, 1, *kernel.shape).contiguous()


def _filter_and_downsample(x, kernel, down, pad0, pad1):
    # conv2d correlates, so the flipped kernel gives the convolution. Symmetric non-negative
    # padding is left to conv2d; anything else goes through F.pad (which crops for negative pads).
    conv_pad = max(0, min(pad0, pad1))
    if (pad0, pad1) != (conv_pad, conv_pad):
        x = F.pad(x, [pad0 - conv_pad, pad1 - conv_pad] * 2)
    weight = _depthwise_weight(kernel.flip(0, 1), x.shape[1])
    return F.conv2d(x, weight, stride=down, padding=conv_pad, groups=x.shape[1])


def _upsample_and_filter(x, kernel, up, pad0, pad1):
    # conv_transpose2d(stride=up) with the unflipped kernel is the full convolution of the
    # zero-inserted signal, minus its last up-1 (zero) samples; the requested window of it starts
    # kh-1-pad0 samples in and ends kh-up-pad1 samples before its end (per axis). The part of
    # the cropping that is the same on both ends is done by conv_transpose2d's own padding.
    channels = x.shape[1]
    weight = _depthwise_weight(kernel, channels)
    crops = [(taps - 1 - pad0, taps - up - pad1) for taps in kernel.shape]  # (H), (W)
    conv_crop = [max(0, min(start, end)) for start, end in crops]
    y = F.conv_transpose2d(x, weight, stride=up, padding=tuple(conv_crop), groups=channels)
    (start_h, end_h), (start_w, end_w) = crops
    remaining = [conv_crop[1] - start_w, conv_crop[1] - end_w, conv_crop[0] - start_h, conv_crop[0] - end_h]
    return F.pad(y, remaining) if any(remaining) else y


def _backward_pads(in_size, out_size, kernel_size, up, down, pad0):
    """Padding of the upfirdn2d (up and down swapped, kernel flipped) that is the adjoint."""
    return kernel_size - 1 - pad0, in_size * up - out_size * down + pad0 - up + 1


class _Upfirdn2dCuda(torch.autograd.Function):
    """The CUDA kernel; ``pads`` = (y0, y1, x0, x1), per axis because the backward needs that."""

    @staticmethod
    def forward(ctx, x, kernel, up, down, pads):
        extension = load_extension("upfirdn2d")
        y = extension.upfirdn2d(x, kernel, up, down, *pads)
        ctx.save_for_backward(kernel)
        ctx.geometry = (x.shape[2], x.shape[3], y.shape[2], y.shape[3], up, down, pads)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        (kernel,) = ctx.saved_tensors
        in_h, in_w, out_h, out_w, up, down, (pad_y0, _, pad_x0, _) = ctx.geometry
        grad_pads = (
            *_backward_pads(in_h, out_h, kernel.shape[0], up, down, pad_y0),
            *_backward_pads(in_w, out_w, kernel.shape[1], up, down, pad_x0),
        )
        grad_x = _Upfirdn2dCuda.apply(grad_y, kernel.flip(0, 1), down, up, grad_pads)
        return grad_x, None, None, None, None
