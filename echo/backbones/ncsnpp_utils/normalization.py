"""Normalisation layers of NCSN++."""
import torch.nn as nn


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with min(C/4, 32) groups and eps 1e-6, as everywhere in NCSN++."""
    return nn.GroupNorm(num_groups=min(channels // 4, 32), num_channels=channels, eps=1e-6)
