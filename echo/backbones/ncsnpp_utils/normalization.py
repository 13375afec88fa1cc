"""Normalisation layers of NCSN++."""
import torch
import torch.nn as nn
import torch.nn.functional as F


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with min(C/4, 32) groups and eps 1e-6, as everywhere in NCSN++."""
    return nn.GroupNorm(num_groups=min(channels // 4, 32), num_channels=channels, eps=1e-6)


def norm_act(norm: nn.GroupNorm, act: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """act(norm(x)), the pre-activation of every NCSN++ block.

    Outside autograd the SiLU overwrites the normalised tensor instead of allocating another
    one (under autograd in-place SiLU would only make autograd save a copy of its input). A
    fused GroupNorm+SiLU pass was not worth a custom kernel here: on the 2-core CPU the
    GroupNorm is one statistics pass and one normalising pass, SiLU one more pass over memory
    that is still in cache, and together they were ~8 % of a paper-size forward pass.
    """
    h = norm(x)
    if isinstance(act, nn.SiLU):
        return F.silu(h, inplace=not torch.is_grad_enabled())
    return act(h)
