"""Process-wide settings that a test must leave as it found them.

The suite runs many tests in one process per xdist worker. A library function that sets torch's
thread count (or the default dtype, grad mode, an environment variable, the working folder) and
does not restore it changes every later test of that worker: on two threads instead of one a
training loss sums in another order, and a test that passes alone fails after another one.
conftest takes a ``ProcessState`` once it has configured the process; after every test,
``process_state_unchanged`` compares, restores what changed (so that one leak fails one test,
not every test after it) and fails the test that changed it.
"""
import os
from dataclasses import dataclass, fields

import pytest
import torch


# variables that libraries set for themselves, whose value depends on nothing a test does
IGNORED_ENVIRON = {
    "PYTEST_CURRENT_TEST",  # pytest's name of the running test
    "TORCHINDUCTOR_CACHE_DIR",  # torch's default cache folder, written on first use of the compiler
    "KMP_INIT_AT_FORK",  # an OpenMP workaround joblib and scikit-learn set on import (librosa, for DNSMOS)
    "KMP_DUPLICATE_LIB_OK",  # the same, set by scikit-learn on import (pyroomacoustics, for simulated rooms)
}


def _environ():
    return tuple(sorted((name, value) for name, value in os.environ.items() if name not in IGNORED_ENVIRON))


@dataclass(frozen=True)
class ProcessState:
    num_threads: int
    default_dtype: torch.dtype
    default_device: str
    grad_enabled: bool
    inference_mode: bool
    deterministic_algorithms: bool
    float32_matmul_precision: str
    cudnn_benchmark: bool
    cudnn_deterministic: bool
    cwd: str
    environ: tuple  # sorted (name, value) pairs

    @classmethod
    def take(cls):
        return cls(num_threads=torch.get_num_threads(), default_dtype=torch.get_default_dtype(),
                   default_device=str(torch.get_default_device()), grad_enabled=torch.is_grad_enabled(),
                   inference_mode=torch.is_inference_mode_enabled(),
                   deterministic_algorithms=torch.are_deterministic_algorithms_enabled(),
                   float32_matmul_precision=torch.get_float32_matmul_precision(),
                   cudnn_benchmark=torch.backends.cudnn.benchmark,
                   cudnn_deterministic=torch.backends.cudnn.deterministic,
                   cwd=os.getcwd(), environ=_environ())

    def changes(self, now):
        """What differs in ``now``, one readable item per setting (environment: per variable)."""
        found = []
        for field in fields(self):
            if field.name == "environ":
                continue
            was, is_ = getattr(self, field.name), getattr(now, field.name)
            if was != is_:
                found.append(f"{field.name} {was!r} -> {is_!r}")
        was, is_ = dict(self.environ), dict(now.environ)
        for name in sorted(set(was) | set(is_)):
            if was.get(name) != is_.get(name):
                found.append(f"${name} {was.get(name, '<unset>')!r} -> {is_.get(name, '<unset>')!r}")
        return found

    def restore(self, now):
        """Set back what differs in ``now`` (only that: setting a default device, even the CPU,
        would put a dispatch mode around every later torch call)."""
        setters = {
            "num_threads": torch.set_num_threads, "default_dtype": torch.set_default_dtype,
            "default_device": torch.set_default_device, "grad_enabled": torch.set_grad_enabled,
            "deterministic_algorithms": torch.use_deterministic_algorithms,
            "float32_matmul_precision": torch.set_float32_matmul_precision,
            "cudnn_benchmark": lambda value: setattr(torch.backends.cudnn, "benchmark", value),
            "cudnn_deterministic": lambda value: setattr(torch.backends.cudnn, "deterministic", value),
            "cwd": os.chdir,
        }
        for name, setter in setters.items():
            if getattr(self, name) != getattr(now, name):
                setter(getattr(self, name))
        if self.environ != now.environ:
            kept = {name: os.environ[name] for name in IGNORED_ENVIRON if name in os.environ}
            os.environ.clear()
            os.environ.update(dict(self.environ), **kept)


_expected = []


def expect_current():
    """Take the state every test must leave behind: call once the process is configured."""
    _expected[:] = [ProcessState.take()]
    return _expected[0]


@pytest.fixture(autouse=True)
def process_state_unchanged(request):
    if not _expected:
        raise RuntimeError("conftest must call process_state.expect_current() once it has configured the process")
    expected = _expected[0]
    yield
    now = ProcessState.take()
    changes = expected.changes(now)
    if changes:
        expected.restore(now)  # an inference-mode context left open cannot be closed from here
        pytest.fail(f"{request.node.nodeid} left process-wide state changed (restore it where it is set): "
                    + "; ".join(changes), pytrace=False)
