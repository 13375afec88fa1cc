"""Seeds derived from a run's seed and a position in the run.

Training draws every random number from generators seeded by (seed, what, where): the data
order by (seed, epoch), a crop by (seed, epoch, file index), the noise of a training step by
(seed, rank, global step, batch index). A run resumed from a checkpoint therefore draws the
same numbers as the run that was never interrupted, whatever happened to the global random
state in between (a restart, data-loader workers, another library).
"""
import hashlib

import torch


def derive_seed(*parts) -> int:
    """A 63-bit seed from ``parts`` (ints and strings), stable across runs, machines and Python
    versions (unlike ``hash()``), and unrelated for neighbouring parts (unlike ``seed + epoch``,
    which gives seed 1 at epoch 0 the order of seed 0 at epoch 1)."""
    digest = hashlib.sha256("\0".join(str(part) for part in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2 ** 63 - 1)


def seeded_generator(*parts, device="cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(derive_seed(*parts))
