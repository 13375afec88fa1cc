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

The CUDA toolkit is the one torch guesses (``CUDA_HOME``, ``CUDA_PATH``, else the folder above the
``bin/`` that holds ``nvcc``), unless that folder has no CUDA runtime library to link against.
That happens when the ``nvcc`` on the PATH is a wrapper script or a symlink in a folder such as
``/usr/local/bin``: torch then guesses ``/usr/local`` and the link fails with ``cannot find
-lcudart``. :func:`find_cuda_toolkit` follows such an ``nvcc`` to the toolkit it runs.
"""
import contextlib
import glob
import os
import re
import shutil
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import NamedTuple, Optional

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


class CudaToolkit(NamedTuple):
    home: Optional[str]  # None: no toolkit with a runtime library was found
    how: str  # how it was found, or why none was; one line


_built = {}  # extension name -> loaded module
_toolkit = None  # CudaToolkit, looked up once per process
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


# --------------------------------------------------------------------------------------------
# Finding the CUDA toolkit


def runtime_library_dir(home) -> Path:
    """The folder torch's extension builder passes to the linker for ``-lcudart``: lib64, or lib
    where only that exists (the rule of torch.utils.cpp_extension)."""
    home = Path(home)
    if sys.platform == "win32":
        return home / "lib" / "x64"
    if not (home / "lib64").exists() and (home / "lib").exists():
        return home / "lib"
    return home / "lib64"


def _nvcc_in(home) -> Path:
    return Path(home) / "bin" / ("nvcc.exe" if sys.platform == "win32" else "nvcc")


def has_cuda_runtime(home) -> bool:
    """Whether ``home`` is a toolkit the build can use: bin/nvcc and the CUDA runtime library."""
    if not home:
        return False
    names = ("cudart.lib",) if sys.platform == "win32" else ("libcudart.so*", "libcudart_static.a")
    library = runtime_library_dir(home)
    return _nvcc_in(home).is_file() and any(glob.glob(str(library / name)) for name in names)


def _missing_part(home) -> str:
    return "bin/nvcc" if not _nvcc_in(home).is_file() else f"the CUDA runtime library in {runtime_library_dir(home)}"


def _home_of(nvcc) -> str:
    return str(Path(nvcc).parent.parent)


def _nvcc_named_by_script(path: Path):
    """The absolute path of another nvcc that a wrapper script runs (``exec /opt/cuda/bin/nvcc "$@"``)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(65536)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None  # a binary: nothing to read
    for match in re.finditer(rb"(/[^\s'\"`;|&<>()$]*/bin/nvcc)(?![\w.-])", head):
        candidate = Path(match.group(1).decode(errors="replace"))
        if candidate.is_file() and candidate.resolve() != path.resolve():
            return candidate.resolve()
    return None


def _nvcc_reported_home(nvcc: str, timeout: float = 30.0):
    """The toolkit ``nvcc`` runs from, as its dry run reports it (``_HERE_=<toolkit>/bin``). This
    sees through wrappers that a script cannot reveal: binaries, or scripts that compute the path."""
    try:
        result = subprocess.run([nvcc, "--dryrun", "-c", "echo_probe.cu"], capture_output=True, text=True,
                                timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"^#\$ _HERE_=(.+)$", result.stdout + "\n" + result.stderr, flags=re.MULTILINE)
    return _home_of(Path(match.group(1).strip()) / "nvcc") if match else None


def _candidate_homes(environ, nvcc, default_homes):
    """(home, how it was found), cheapest first; a generator, so nvcc's dry run only runs when
    the looks before it found nothing."""
    for variable in ("CUDA_HOME", "CUDA_PATH"):
        if environ.get(variable):
            yield environ[variable], f"{variable}={environ[variable]}"
    if nvcc:
        real = Path(nvcc).resolve()
        if real != Path(nvcc).absolute():
            yield _home_of(real), f"the nvcc on the PATH ({nvcc}) links to {real}"
        named = _nvcc_named_by_script(real)
        if named is not None:
            yield _home_of(named), f"the nvcc on the PATH ({nvcc}) is a wrapper script that runs {named}"
        reported = _nvcc_reported_home(nvcc)
        if reported is not None:
            yield reported, f"the nvcc on the PATH ({nvcc}) runs from {reported} (its dry run says so)"
    for home in default_homes:
        yield home, f"the default location {home}"


def find_cuda_toolkit(environ=None, guess=None, which=shutil.which, default_homes=("/usr/local/cuda",)) -> CudaToolkit:
    """The CUDA toolkit to build with.

    ``guess`` is torch's choice (``torch.utils.cpp_extension.CUDA_HOME``). It is kept when it has
    ``bin/nvcc`` and the runtime library (libcudart). Otherwise the first of these that has both:
    ``CUDA_HOME``, ``CUDA_PATH``, the real location of the ``nvcc`` on the PATH (through symlinks,
    then through a wrapper script that names another nvcc, then as nvcc's own dry run reports
    it), ``default_homes``.
    """
    environ = os.environ if environ is None else environ
    if has_cuda_runtime(guess):
        return CudaToolkit(str(guess), "torch's choice")
    nvcc = which("nvcc", path=environ.get("PATH"))
    tried = [str(guess)] if guess else []
    for home, how in _candidate_homes(environ, nvcc, default_homes):
        if has_cuda_runtime(home):
            if guess:
                how += f"; torch's guess {guess} lacks {_missing_part(guess)}"
            return CudaToolkit(str(home), how)
        if str(home) not in tried:
            tried.append(str(home))
    looked = ", ".join(tried) if tried else "nowhere (no nvcc on the PATH, CUDA_HOME and CUDA_PATH unset)"
    return CudaToolkit(None, f"no CUDA toolkit with nvcc and its runtime library (libcudart) was found; "
                             f"looked in {looked}")


def cuda_toolkit() -> CudaToolkit:
    """find_cuda_toolkit for this process, with torch's guess; looked up once."""
    global _toolkit
    if _toolkit is None:
        from torch.utils import cpp_extension

        _toolkit = find_cuda_toolkit(guess=cpp_extension.CUDA_HOME)
    return _toolkit


@contextlib.contextmanager
def _torch_cuda_home(home: str):
    """Point torch's extension builder at ``home`` for one build: it reads the module global
    CUDA_HOME (not the environment) for nvcc, the include folder and the library folder."""
    from torch.utils import cpp_extension

    previous = cpp_extension.CUDA_HOME
    cpp_extension.CUDA_HOME = home
    try:
        yield
    finally:
        cpp_extension.CUDA_HOME = previous


def toolchain_problem():
    """Why the kernels cannot be built here, found without running a compiler; None if no reason."""
    if torch.version.cuda is None:
        return f"this torch build has no CUDA support (torch {torch.__version__})"
    from torch.utils import cpp_extension

    if not cpp_extension.is_ninja_available():
        return "ninja is not installed (pip install ninja)"
    toolkit = cuda_toolkit()
    if toolkit.home is None:
        return f"{toolkit.how}; set CUDA_HOME"
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


def _cached_build_exists(name: str) -> bool:
    """Whether torch's extension cache holds a build of ``name`` (which may still be rebuilt if
    the sources or flags changed; this only decides whether to announce a compile)."""
    from torch.utils import cpp_extension

    try:
        folder = Path(cpp_extension._get_build_directory(f"echo_{name}", verbose=False))
    except Exception:  # a private helper of torch: if it moves, announce every build
        return False
    return any(folder.glob(f"echo_{name}*.so")) or any(folder.glob(f"echo_{name}*.pyd"))


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

        toolkit = cuda_toolkit()
        arch_list = arch_list_for_build()
        sources = [str(SOURCE_DIR / source) for source in EXTENSION_SOURCES[name]]
        if verbose or not _cached_build_exists(name):
            # a first build takes a minute or more; say so, and with which toolkit, before it starts
            print(f"echo ops: compiling the {name} CUDA extension for archs {arch_list} with the CUDA toolkit "
                  f"at {toolkit.home} ({toolkit.how}); it is cached for later runs", file=sys.stderr, flush=True)
        try:
            # The arch list is set only for the build so that the process environment stays as it was.
            with _env_var("TORCH_CUDA_ARCH_LIST", arch_list), _torch_cuda_home(toolkit.home):
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
