#!/usr/bin/env python
"""Compile and import the CUDA kernels (upfirdn2d, fused_bias_act) the way a GPU user gets them.

    python benchmarks/check_cuda_build.py [--venv DIR] [--torch SPEC] [--pip_args ARGS]
                                          [--arch_list LIST] [--nice N] [--keep_build DIR]

Works without a GPU. It creates (or reuses) a virtual environment outside the repository with the
CUDA build of torch (several GB; pip's default torch wheel on Linux x86-64 is that build), then,
in that environment, compiles both extensions with torch's JIT builder for the default arch list
(the one used when no GPU is visible), imports them, and prints the CUDA toolkit the build used
and how it was found, the nvcc and host compiler versions, the arch list, the architectures found
in each compiled binary, and the build times. The build goes to a fresh folder, so it is a real
compile every time, not a hit in torch's extension cache. Nothing outside the venv and that
folder is changed; CUDA_HOME is neither needed nor set.

Exit status 0 when both extensions compiled and imported, 1 with a one-line reason otherwise.
"""
import argparse
import importlib.util
import json
import os
import re
import shlex
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUILD_PY = REPO / "echo" / "backbones" / "ncsnpp_utils" / "op" / "build.py"
DEFAULT_VENV = Path(os.environ.get("ECHO_CUDA_VENV", Path.home() / ".cache" / "echo" / "cuda-venv"))
ARCH_ITEM = r"\d+\.\d+(\+PTX)?"
FATBIN_MAGIC = 0xBA55ED50


class CheckFailed(Exception):
    """One-line reason the check failed."""


def build_parser():
    parser = argparse.ArgumentParser(
        description="Compile and import ECHO's CUDA kernels with the CUDA build of torch, in a venv "
                    "outside the repository (no GPU needed).")
    parser.add_argument("--venv", default=str(DEFAULT_VENV),
                        help="virtual environment to create or reuse; must be outside the repository "
                             "(default $ECHO_CUDA_VENV or ~/.cache/echo/cuda-venv)")
    parser.add_argument("--torch", default="torch",
                        help="pip requirement for torch, installed when the venv has no CUDA build of torch "
                             "(default: torch, whose Linux x86-64 wheel on PyPI is the CUDA build)")
    parser.add_argument("--pip_args", default="",
                        help="extra pip arguments for that install, e.g. "
                             "'--index-url https://download.pytorch.org/whl/cu130' (default: none)")
    parser.add_argument("--arch_list", default=None,
                        help="TORCH_CUDA_ARCH_LIST to compile for, e.g. '8.0;9.0+PTX' "
                             "(default: the ops' list for machines without a GPU)")
    parser.add_argument("--nice", type=int, default=10,
                        help="niceness of the compile, so that it yields the CPUs to other work (default 10; 0 keeps it)")
    parser.add_argument("--keep_build", default=None,
                        help="build into this folder and keep it (default: a temporary folder, removed afterwards)")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    return parser


def check_arguments(args):
    venv = Path(args.venv).expanduser().absolute()
    if venv == REPO or REPO in venv.parents:
        raise CheckFailed(f"--venv {venv} is inside the repository; the CUDA build of torch is several GB, "
                          "give a folder outside it")
    if venv.exists() and not venv.is_dir():
        raise CheckFailed(f"--venv {venv} exists and is not a folder")
    if args.arch_list is not None and not re.fullmatch(rf"{ARCH_ITEM}([; ]{ARCH_ITEM})*", args.arch_list.strip()):
        raise CheckFailed(f"--arch_list {args.arch_list!r} is not a list such as '7.5;8.0;9.0+PTX'")
    if not 0 <= args.nice <= 19:
        raise CheckFailed(f"--nice {args.nice} is not in 0..19")
    try:
        shlex.split(args.pip_args)
    except ValueError as err:
        raise CheckFailed(f"--pip_args {args.pip_args!r} cannot be split into arguments: {err}") from None
    if args.keep_build is not None:
        folder = Path(args.keep_build).expanduser()
        if folder.exists() and not folder.is_dir():
            raise CheckFailed(f"--keep_build {folder} exists and is not a folder")
    return venv


# --------------------------------------------------------------------------------------------
# Outside the venv: create it, install torch, run the build in it


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


# ninja runs the build, torch.utils.cpp_extension imports setuptools, torch warns at import without numpy
HELPERS = ("ninja", "setuptools", "numpy")


def venv_state(python: Path):
    """(torch version or None, its CUDA version or None, helper packages missing) in the venv."""
    probe = ("import importlib.util, json\n"
             "try:\n    import torch; found = [torch.__version__, torch.version.cuda]\n"
             "except Exception:\n    found = [None, None]\n"
             f"print(json.dumps(found + [[m for m in {list(HELPERS)!r} if importlib.util.find_spec(m) is None]]))")
    result = subprocess.run([str(python), "-c", probe], capture_output=True, text=True)
    if result.returncode != 0:
        raise CheckFailed(f"the venv's python does not run: {(result.stderr.strip().splitlines() or ['?'])[-1]}")
    return tuple(json.loads(result.stdout.strip().splitlines()[-1]))


def prepare_venv(venv: Path, torch_spec: str, pip_args: str):
    python = venv_python(venv)
    state = "reused"
    started = time.perf_counter()
    if not python.exists():
        print(f"check-cuda-build: creating the venv {venv}", flush=True)
        venv.parent.mkdir(parents=True, exist_ok=True)
        if subprocess.run([sys.executable, "-m", "venv", str(venv)]).returncode != 0:
            raise CheckFailed(f"{sys.executable} -m venv {venv} failed (on Debian/Ubuntu: apt-get install python3-venv)")
        state = "created"
    version, cuda, missing = venv_state(python)
    wanted = ([torch_spec] if cuda is None else []) + list(missing)
    if wanted:
        if cuda is None:
            print(f"check-cuda-build: installing {torch_spec} (the CUDA build, several GB) into {venv}", flush=True)
        command = [str(python), "-m", "pip", "install", *shlex.split(pip_args), *wanted]
        if subprocess.run(command).returncode != 0:
            raise CheckFailed(f"pip could not install {' '.join(wanted)} into {venv} (see its output above)")
        version, cuda, missing = venv_state(python)
        state += f", installed {' '.join(wanted)}"
        if version is None:
            raise CheckFailed(f"torch does not import in {venv} after installing it")
        if cuda is None:
            raise CheckFailed(f"pip installed a CPU build of torch ({version}) into {venv}; pass a CUDA wheel, "
                              "e.g. --pip_args '--index-url https://download.pytorch.org/whl/cu130'")
    return python, (version, cuda), state, time.perf_counter() - started


def run_outer(args, venv: Path) -> int:
    python, (torch_version, torch_cuda), state, setup_s = prepare_venv(venv, args.torch, args.pip_args)
    print(f"check-cuda-build: venv {venv} ({state}, {setup_s:.0f} s): torch {torch_version}, CUDA {torch_cuda}",
          flush=True)
    env = dict(os.environ)
    bin_dir = str(python.parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")  # the venv's ninja
    env.pop("PYTHONPATH", None)
    with tempfile.TemporaryDirectory(prefix="echo-cuda-build-") as scratch:
        build_dir = Path(args.keep_build).expanduser().absolute() if args.keep_build else Path(scratch)
        build_dir.mkdir(parents=True, exist_ok=True)
        env["TORCH_EXTENSIONS_DIR"] = str(build_dir)
        command = [str(python), str(Path(__file__).resolve()), "--inner", "--nice", str(args.nice)]
        if args.arch_list:
            command += ["--arch_list", args.arch_list]
        return subprocess.run(command, env=env, cwd=str(REPO)).returncode


# --------------------------------------------------------------------------------------------
# Inside the venv: build, import, report


def load_build_module():
    """echo's op/build.py alone, without the echo package (whose imports the venv does not need)."""
    spec = importlib.util.spec_from_file_location("echo_ops_build", BUILD_PY)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def first_line_with(command, pattern=None):
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as err:
        return f"unknown ({err})"
    lines = [line.strip() for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    for line in lines:
        if pattern is None or re.search(pattern, line):
            return line
    return lines[0] if lines else "unknown"


def fatbin_archs(path):
    """Architectures in the CUDA fat binaries embedded in a shared library: (["sm_75", ...] of
    the compiled cubins, ["compute_90", ...] of the PTX). Reads the fatbin container headers
    (magic 0xBA55ED50; per entry: kind 1 = PTX, 2 = ELF, and the arch as major*10+minor)."""
    data = Path(path).read_bytes()
    cubins, ptx = set(), set()
    start = data.find(struct.pack("<I", FATBIN_MAGIC))
    while start != -1:
        if start + 16 <= len(data):
            _, _, header_size, fat_size = struct.unpack_from("<IHHQ", data, start)
            entry, end = start + header_size, min(start + header_size + fat_size, len(data))
            while entry + 32 <= end:
                kind, _, entry_header, payload = struct.unpack_from("<HHIQ", data, entry)
                arch = struct.unpack_from("<I", data, entry + 28)[0]
                if kind == 1:
                    ptx.add(arch)
                elif kind == 2:
                    cubins.add(arch)
                if entry_header == 0:
                    break
                entry += entry_header + payload
        start = data.find(struct.pack("<I", FATBIN_MAGIC), start + 4)
    return [f"sm_{a}" for a in sorted(cubins)], [f"compute_{a}" for a in sorted(ptx)]


def expected_archs(arch_list):
    items = [item for item in re.split(r"[; ]+", arch_list.strip()) if item]
    cubins = [f"sm_{item.split('+')[0].replace('.', '')}" for item in items]
    ptx = [f"compute_{item.split('+')[0].replace('.', '')}" for item in items if item.endswith("+PTX")]
    return sorted(cubins), sorted(ptx)


def run_inner(args) -> int:
    if args.nice:
        os.nice(args.nice)
    build = load_build_module()
    import torch

    arch_list = args.arch_list or build.DEFAULT_ARCH_LIST
    os.environ["TORCH_CUDA_ARCH_LIST"] = arch_list
    if torch.version.cuda is None:
        raise CheckFailed(f"torch {torch.__version__} in this venv has no CUDA support")
    problem = build.toolchain_problem()
    if problem is not None:
        raise CheckFailed(problem)
    toolkit = build.cuda_toolkit()
    nvcc = Path(toolkit.home) / "bin" / "nvcc"
    compiler = os.environ.get("CXX", "c++")
    print(f"  torch:        {torch.__version__} (CUDA {torch.version.cuda}); "
          f"GPU visible: {torch.cuda.is_available()}")
    print(f"  CUDA_HOME:    {os.environ.get('CUDA_HOME', 'not set')}")
    print(f"  toolkit:      {toolkit.home} ({toolkit.how})")
    print(f"  nvcc:         {first_line_with([str(nvcc), '--version'], r'release')}")
    print(f"  host c++:     {first_line_with([compiler, '--version'])}")
    print(f"  arch list:    {arch_list}")
    print(f"  build folder: {os.environ.get('TORCH_EXTENSIONS_DIR')}", flush=True)
    wanted = expected_archs(arch_list)
    total = 0.0
    for name in build.EXTENSION_SOURCES:
        started = time.perf_counter()
        try:
            module = build.load_extension(name)
        except build.OpsUnavailableError as err:
            raise CheckFailed(str(err)) from None
        seconds = time.perf_counter() - started
        total += seconds
        if not callable(getattr(module, name, None)):
            raise CheckFailed(f"the {name} extension imported but has no function {name}")
        found = fatbin_archs(module.__file__)
        print(f"  {name:<15} built in {seconds:6.1f} s, imported from {module.__file__}")
        print(f"  {'':<15} binary holds {' '.join(found[0]) or 'no cubins'} + PTX {' '.join(found[1]) or 'none'}",
              flush=True)
        if found != wanted:
            raise CheckFailed(f"{name}: the binary holds {found[0]} + PTX {found[1]}, "
                              f"expected {wanted[0]} + PTX {wanted[1]} for {arch_list}")
    print(f"  build time:   {total:.1f} s for both extensions")
    print("check-cuda-build: OK, both CUDA extensions compile and import")
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.inner:
            return run_inner(args)
        return run_outer(args, check_arguments(args))
    except CheckFailed as err:
        print(f"check-cuda-build: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
