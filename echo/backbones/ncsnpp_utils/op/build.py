"""Choice between the CUDA kernels and the PyTorch path, and the lazy build of the kernels.

The reference projects compile their kernels when the module is imported, which breaks every
machine without a working CUDA toolchain. Here nothing is compiled until an op first meets a CUDA
tensor, and the environment variable ``ECHO_OPS`` decides what happens then:

- ``auto`` (default): use the kernels when they build, else the PyTorch path with one warning
  that says why;
- ``cuda``: the kernels or a loud ``OpsUnavailableError`` with a one-line reason;
- ``native``: the PyTorch path, never compile.

Built extensions live in torch's extension cache (``TORCH_EXTENSIONS_DIR``, by default
``~/.cache/torch_extensions``), so only the first use on a machine pays for the compiler.
"""
import contextlib
import os
import threading
import warnings
from pathlib import Path
from typing import NamedTuple

import torch

SOURCE_DIR = Path(__file__).resolve().parent
EXTENSION_SOURCES = {
    "upfirdn2d": ("upfirdn2d.cpp", "upfirdn2d_kernel.cu"),
    "fused_bias_act": ("fused_bias_act.cpp", "fused_bias_act_kernel.cu"),
}
MODES = ("auto", "cuda", "native")
MODE_ENV_VAR = "ECHO_OPS"
# Used when no GPU is visible (e.g. a build machine): Turing to Hopper, plus PTX that newer GPUs
# can JIT. All of these are accepted by every CUDA toolkit that current torch releases support.
DEFAULT_ARCH_LIST = "7.5;8.0;8.6;8.9;9.0+PTX"


class OpsUnavailableError(RuntimeError):
    """The CUDA kernels were required but cannot be used. The message is a single line."""


class BackendChoice(NamedTuple):
    backend: str  # "cuda" or "native"
    reason: str


_built = {}  # extension name -> loaded module
_build_failures = {}  # extension name -> one-line reason; failures are not retried
_build_lock = threading.Lock()
_fallback_warned = False


def requested_mode() -> str:
    mode = os.environ.get(MODE_ENV_VAR, "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise ValueError(f"{MODE_ENV_VAR}={mode!r} is not one of {', '.join(MODES)}")
    return mode


def _one_line(text: str, limit: int = 300) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    line = lines[0] if lines else "unknown error"
    return line if len(line) <= limit else line[: limit - 3] + "..."


def toolchain_problem():
    """Why the kernels cannot be built here, found without running a compiler; None if no reason."""
    if torch.version.cuda is None:
        return f"this torch build has no CUDA support (torch {torch.__version__})"
    from torch.utils import cpp_extension

    if not cpp_extension.is_ninja_available():
        return "ninja is not installed (pip install ninja)"
    if cpp_extension.CUDA_HOME is None:
        return "no CUDA toolkit (nvcc) was found; set CUDA_HOME"
    return None


def arch_list_for_build() -> str:
    """TORCH_CUDA_ARCH_LIST to compile for: the user's, else the visible GPUs', else a default."""
    user_choice = os.environ.get("TORCH_CUDA_ARCH_LIST")
    if user_choice:
        return user_choice
    if torch.cuda.is_available():
        capabilities = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
        return ";".join(f"{major}.{minor}" for major, minor in sorted(capabilities))
    return DEFAULT_ARCH_LIST


@contextlib.contextmanager
def _env_var(name: str, value: str):
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def load_extension(name: str, verbose: bool = False):
    """Build (first time) or load (cached) one extension; OpsUnavailableError with the reason if not."""
    with _build_lock:
        if name in _built:
            return _built[name]
        if name in _build_failures:
            raise OpsUnavailableError(_build_failures[name])
        problem = toolchain_problem()
        if problem is not None:
            _build_failures[name] = problem
            raise OpsUnavailableError(problem)
        from torch.utils import cpp_extension

        sources = [str(SOURCE_DIR / source) for source in EXTENSION_SOURCES[name]]
        try:
            # The arch list is set only for the build so that the process environment stays as it was.
            with _env_var("TORCH_CUDA_ARCH_LIST", arch_list_for_build()):
                module = cpp_extension.load(
                    name=f"echo_{name}",
                    sources=sources,
                    extra_cflags=["-O2"],
                    extra_cuda_cflags=["-O3"],
                    verbose=verbose,
                )
        except Exception as exc:
            _build_failures[name] = f"building the {name} CUDA extension failed: {_one_line(exc)}"
            raise OpsUnavailableError(_build_failures[name]) from exc
        _built[name] = module
        return module


def _warn_fallback_once(reason: str) -> None:
    global _fallback_warned
    if not _fallback_warned:
        _fallback_warned = True
        warnings.warn(
            f"echo ops: using the PyTorch path on CUDA tensors because {reason} "
            f"(set {MODE_ENV_VAR}=native to silence this, or {MODE_ENV_VAR}=cuda to make it an error)",
            RuntimeWarning,
            stacklevel=4,  # the code that called the op (or ops_backend)
        )


def select_backend(device, extensions=tuple(EXTENSION_SOURCES)) -> BackendChoice:
    """The backend that ops on ``device`` use under the current ECHO_OPS, building kernels if needed."""
    mode = requested_mode()
    device = torch.device(device)
    if mode == "native":
        return BackendChoice("native", f"{MODE_ENV_VAR}=native")
    if mode == "cuda":
        return _require_kernels(device, extensions)
    if device.type != "cuda":
        return BackendChoice("native", f"the tensor is on {device.type}; the CUDA kernels take CUDA tensors only")
    try:
        for name in extensions:
            load_extension(name)
    except OpsUnavailableError as exc:
        _warn_fallback_once(str(exc))
        return BackendChoice("native", f"the CUDA kernels are unavailable: {exc}")
    return BackendChoice("cuda", "the CUDA kernels are built")


def _require_kernels(device: torch.device, extensions) -> BackendChoice:
    if torch.version.cuda is None:
        raise OpsUnavailableError(
            f"{MODE_ENV_VAR}=cuda but this torch build has no CUDA support (torch {torch.__version__}); "
            f"install a CUDA build of torch or set {MODE_ENV_VAR}=auto or native"
        )
    if device.type != "cuda":
        raise OpsUnavailableError(
            f"{MODE_ENV_VAR}=cuda but the tensor is on {device.type}; the CUDA kernels take CUDA tensors "
            f"only (set {MODE_ENV_VAR}=auto to use the PyTorch path there)"
        )
    for name in extensions:
        try:
            load_extension(name)
        except OpsUnavailableError as exc:
            raise OpsUnavailableError(f"{MODE_ENV_VAR}=cuda but {exc}") from exc
    return BackendChoice("cuda", f"{MODE_ENV_VAR}=cuda and the kernels are built")


def ops_backend(device="cpu") -> BackendChoice:
    """Which backend ``upfirdn2d``/``fused_bias_act`` use for tensors on ``device``, and why.

    For a CUDA device under ``auto`` or ``cuda`` this builds (or loads from the cache) the kernels,
    exactly as the first op call would; under ``cuda`` it raises the same OpsUnavailableError.
    """
    return select_backend(device)
