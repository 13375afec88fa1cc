"""FIR up- and down-sampling by 2 as used by NCSN++ (the StyleGAN2 resampling filters)."""
import torch

from .op import upfirdn2d


def _fir_kernel(k, scale: float, like: torch.Tensor) -> torch.Tensor:
    """2-D kernel from a 1-D FIR (outer product), normalised to sum 1, then scaled."""
    taps = torch.as_tensor(k, dtype=like.dtype, device=like.device)
    if taps.dim() == 1:
        taps = torch.outer(taps, taps)
    return taps / taps.sum() * scale


def upsample_2d(x: torch.Tensor, k=(1, 3, 3, 1), factor: int = 2, gain: float = 1) -> torch.Tensor:
    """[N, C, H, W] -> [N, C, H*factor, W*factor] with the FIR filter k.

    The kernel is scaled by factor^2 because zero insertion leaves only one sample in factor^2
    non-zero, so a constant image stays constant (times gain).
    """
    kernel = _fir_kernel(k, gain * factor**2, x)
    p = kernel.shape[0] - factor
    return upfirdn2d(x, kernel, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2))


def downsample_2d(x: torch.Tensor, k=(1, 3, 3, 1), factor: int = 2, gain: float = 1) -> torch.Tensor:
    """[N, C, H, W] -> [N, C, H/factor, W/factor]: FIR low-pass with k, keep every factor-th sample."""
    kernel = _fir_kernel(k, gain, x)
    p = kernel.shape[0] - factor
    return upfirdn2d(x, kernel, down=factor, pad=((p + 1) // 2, p // 2))
