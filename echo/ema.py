"""Exponential moving average of the weights, on Lightning's WeightAveraging callback.

The callback swaps the averaged weights in for validation and writes them as the
checkpoint's ``state_dict`` (the training weights go to ``current_model_state``), so a
checkpoint loaded for enhancement holds the EMA weights.
"""
import torch
from lightning.pytorch.callbacks import WeightAveraging


def ema_decay_at(decay: float, num_updates: int) -> float:
    """The warm-up of SGMSE+/torch_ema: early on the average follows the weights closely."""
    return min(decay, (1 + num_updates) / (10 + num_updates))


class EMA(WeightAveraging):
    def __init__(self, decay: float = 0.999):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        self.decay = decay

        @torch.no_grad()
        def multi_avg_fn(averaged, current, num_averaged):
            d = ema_decay_at(decay, int(num_averaged))
            torch._foreach_lerp_(averaged, current, 1.0 - d)

        # buffers are not averaged: the backbone has none that training changes
        super().__init__(use_buffers=False, multi_avg_fn=multi_avg_fn)
