"""Small helpers shared by the NCSN++ layers."""
import math

import torch

INV_SQRT2 = 1.0 / math.sqrt(2.0)


def residual_sum(x: torch.Tensor, h: torch.Tensor, rescale: bool) -> torch.Tensor:
    """x + h, divided by sqrt(2) when ``rescale`` so that the variance stays put across blocks."""
    return (x + h) * INV_SQRT2 if rescale else x + h


def complex_to_channels(x: torch.Tensor) -> torch.Tensor:
    """[B, C, F, T] complex -> [B, 2C, F, T] real as (Re c0, Im c0, Re c1, Im c1, ...)."""
    return torch.view_as_real(x).permute(0, 1, 4, 2, 3).reshape(x.shape[0], -1, *x.shape[2:])


def channels_to_complex(h: torch.Tensor) -> torch.Tensor:
    """[B, 2C, F, T] real (Re, Im pairs) -> [B, C, F, T] complex."""
    b, c2, f, t = h.shape
    pairs = h.reshape(b, c2 // 2, 2, f, t).permute(0, 1, 3, 4, 2).contiguous()
    return torch.view_as_complex(pairs)
