"""Small helpers shared by the NCSN++ layers."""
import math

import torch

INV_SQRT2 = 1.0 / math.sqrt(2.0)


def residual_sum(x: torch.Tensor, h: torch.Tensor, rescale: bool) -> torch.Tensor:
    """x + h, divided by sqrt(2) when ``rescale`` so that the variance stays put across blocks.

    ``h`` must be a temporary that the caller no longer needs (a branch output): outside
    autograd it becomes the result, which saves allocating (and page-faulting in) a new tensor
    per block; under autograd one new tensor is allocated and scaled in place. Summing h + x
    rather than x + h gives the same bits (IEEE addition commutes) and keeps h's memory format.
    """
    if torch.is_grad_enabled():
        out = torch.add(h, x)
    else:
        out = h.add_(x)
    return out.mul_(INV_SQRT2) if rescale else out


def complex_to_channels(x: torch.Tensor) -> torch.Tensor:
    """[B, C, F, T] complex -> [B, 2C, F, T] real as (Re c0, Im c0, Re c1, Im c1, ...)."""
    return torch.view_as_real(x).permute(0, 1, 4, 2, 3).reshape(x.shape[0], -1, *x.shape[2:])


def channels_to_complex(h: torch.Tensor) -> torch.Tensor:
    """[B, 2C, F, T] real (Re, Im pairs) -> [B, C, F, T] complex."""
    b, c2, f, t = h.shape
    pairs = h.reshape(b, c2 // 2, 2, f, t).permute(0, 1, 3, 4, 2).contiguous()
    return torch.view_as_complex(pairs)


def is_channels_last(x: torch.Tensor) -> bool:
    """True when a 4-D tensor is laid out [N, H, W, C] in memory (and not also plain contiguous,
    as tensors with one channel or a 1x1 image are)."""
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
