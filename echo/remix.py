"""Noise re-mixup (METHOD.md section 2): the real noise of a batch, blended with noise taken
from earlier training batches, augments the Gaussian noise of the forward process.

The bank lives with the model rather than the data module: it must hold noise on the device
the model trains on, its content depends on the order of training steps (not on data-loader
workers, which each hold a separate copy of the data module), and it must be saved and
restored with the optimizer state so that a resumed run continues the same way.
"""
import torch

REMIX_MODES = ("echo", "dans", "own", "none")


def decouple_noise(clean: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:
    """n = y - s, divided by the largest |n| of the batch (one scalar, as in the paper)."""
    noise = noisy - clean
    peak = noise.abs().max()
    return noise / peak if peak > 0 else noise


class NoiseBank:
    """A FIFO of the normalised noise spectrograms of the last ``capacity`` training examples.

    Only training steps ``push``; validation reads without writing, so the bank never grows
    outside training and its memory is bounded by ``capacity`` examples.
    """

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"noise bank capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self._noise = None  # [capacity, C, F, T] ring buffer, allocated on the first push
        self._count = 0     # examples stored so far (<= capacity)
        self._next = 0      # ring position of the next write

    def __len__(self):
        return self._count

    def push(self, noise: torch.Tensor):
        noise = noise.detach()
        if self._noise is not None and (self._noise.shape[1:] != noise.shape[1:]
                                        or self._noise.device != noise.device
                                        or self._noise.dtype != noise.dtype):
            self.clear()  # crop size or device changed: old entries no longer fit
        if self._noise is None:
            self._noise = noise.new_zeros((self.capacity, *noise.shape[1:]))
        for example in noise[-self.capacity:]:
            self._noise[self._next] = example
            self._next = (self._next + 1) % self.capacity
            self._count = min(self._count + 1, self.capacity)

    def draw(self, batch_size: int, generator=None) -> torch.Tensor:
        """``batch_size`` examples drawn uniformly (with replacement) from the bank."""
        if self._count == 0:
            raise RuntimeError("the noise bank is empty")
        idx = torch.randint(self._count, (batch_size,), generator=generator, device="cpu")
        return self._noise[idx.to(self._noise.device)]

    def compatible(self, like: torch.Tensor) -> bool:
        return (self._count > 0 and self._noise.shape[1:] == like.shape[1:]
                and self._noise.device == like.device)

    def clear(self):
        self._noise, self._count, self._next = None, 0, 0

    def state_dict(self):
        stored = None if self._noise is None else self._noise[: self._count].cpu()
        return {"capacity": self.capacity, "noise": stored, "next": self._next}

    def load_state_dict(self, state, device=None):
        self.clear()
        self.capacity = int(state["capacity"])
        stored = state["noise"]
        if stored is not None and len(stored):
            self._noise = stored.new_zeros((self.capacity, *stored.shape[1:]))
            self._noise[: len(stored)] = stored
            if device is not None:
                self._noise = self._noise.to(device)
            self._count = len(stored)
            self._next = int(state["next"]) % self.capacity


def foreign_noise(bank: NoiseBank, own: torch.Tensor, generator=None) -> torch.Tensor:
    """Noise of other recordings for each example of the batch.

    From the bank when it holds noise of the batch's shape; while it is empty (the very
    first training step, or validation before any training), from a random permutation of
    the batch itself, which for a batch of one is the example's own noise.
    """
    if bank.compatible(own):
        return bank.draw(own.shape[0], generator)
    perm = torch.randperm(own.shape[0], generator=generator, device="cpu").to(own.device)
    return own[perm]


def remix(mode: str, own: torch.Tensor, foreign: torch.Tensor, generator=None):
    """The real-noise term n_mix of the perturbation, or None for ``none``.

    echo: beta n + (1 - beta) n', beta ~ U(0, 1) per example; dans: n' only (ECHO's
    predecessor); own: the example's own noise n (noise interpolation as in SGMSE+).
    """
    if mode == "none":
        return None
    if mode == "own":
        return own
    if mode == "dans":
        return foreign
    if mode == "echo":
        beta = torch.rand(own.shape[0], generator=generator, device="cpu").to(own.device)
        beta = beta.reshape(-1, *([1] * (own.dim() - 1))).to(own.real.dtype)
        return beta * own + (1 - beta) * foreign
    raise ValueError(f"unknown remix mode '{mode}' (known: {', '.join(REMIX_MODES)})")
