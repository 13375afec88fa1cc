"""Process-wide settings changed for one call and set back afterwards.

Torch's thread count and the environment belong to the whole process: a function that sets them
and returns without restoring them changes everything its caller runs next (in the test suite, every
later test of the same worker process).
"""
import os
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(threads):
    """torch's intra-op thread count set to ``threads`` for the block (0 or None: left alone)."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def environment_restored(*names):
    """The environment variables ``names`` as they were before the block, whatever it set."""
    before = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
