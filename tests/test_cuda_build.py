"""Finding the CUDA toolkit for the kernels' build when the nvcc on the PATH is a wrapper, and the
argument checks of benchmarks/check_cuda_build.py (the build itself, with the multi-GB CUDA build
of torch, is `make check-cuda-build`, outside the test suite)."""
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from echo.backbones.ncsnpp_utils.op import build

CHECK_SCRIPT = REPO / "benchmarks" / "check_cuda_build.py"


def executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def fake_toolkit(root: Path, lib="lib64") -> Path:
    """A toolkit folder as the build needs it: bin/nvcc (answering --version and --dryrun like
    the real one) and the CUDA runtime library."""
    executable(root / "bin" / "nvcc", "#!/bin/sh\n"
               'case "$*" in\n'
               '  *--version*) echo "Cuda compilation tools, release 13.0, V13.0.88" ;;\n'
               f'  *--dryrun*) echo "#$ _HERE_={root}/bin" >&2 ;;\n'
               "esac\n")
    (root / lib).mkdir(parents=True, exist_ok=True)
    (root / lib / "libcudart.so.13").write_bytes(b"")
    return root


def environ_with_path(*folders):
    return {"PATH": os.pathsep.join(str(f) for f in folders)}


def find(environ, guess=None):
    # no default locations: the machine running the tests may have a real /usr/local/cuda
    return build.find_cuda_toolkit(environ=environ, guess=guess, default_homes=())


def test_guess_with_runtime_is_kept(tmp_path):
    home = fake_toolkit(tmp_path / "cuda")
    found = find(environ_with_path(home / "bin"), guess=str(home))
    assert found.home == str(home) and "torch's choice" in found.how


def test_wrapper_script_on_path_leads_to_the_real_toolkit(tmp_path):
    # as on machines where /usr/local/bin/nvcc is `exec /usr/local/cuda-13.0/bin/nvcc "$@"`:
    # torch guesses the folder above the wrapper's bin/, which has no libcudart
    home = fake_toolkit(tmp_path / "cuda-13.0")
    wrapper = executable(tmp_path / "local" / "bin" / "nvcc", f'#!/bin/sh\nexec {home}/bin/nvcc "$@"\n')
    (tmp_path / "local" / "lib").mkdir()
    guess = str(tmp_path / "local")
    assert not build.has_cuda_runtime(guess)

    found = find(environ_with_path(wrapper.parent, "/usr/bin", "/bin"), guess=guess)
    assert found.home == str(home)
    assert "wrapper script" in found.how and str(wrapper) in found.how
    assert f"torch's guess {guess} lacks the CUDA runtime library in {tmp_path / 'local' / 'lib'}" in found.how


def test_symlinked_nvcc_is_followed(tmp_path):
    home = fake_toolkit(tmp_path / "opt" / "cuda", lib="lib")  # a toolkit with lib/ only
    link = tmp_path / "bin" / "nvcc"
    link.parent.mkdir()
    link.symlink_to(home / "bin" / "nvcc")
    found = find(environ_with_path(link.parent), guess=str(tmp_path))
    assert found.home == str(home) and "links to" in found.how


def test_wrapper_that_hides_the_path_is_asked_for_it(tmp_path):
    # the script computes the path, so reading it does not help; nvcc's dry run does
    home = fake_toolkit(tmp_path / "toolkits" / "cuda")
    wrapper = executable(tmp_path / "bin" / "nvcc",
                         '#!/bin/sh\nexec "$(dirname "$0")/../toolkits/cuda/bin/nvcc" "$@"\n')
    found = find(environ_with_path(wrapper.parent, "/usr/bin", "/bin"), guess=str(tmp_path))
    assert found.home == str(home) and "dry run" in found.how


def test_cuda_home_and_cuda_path_are_candidates(tmp_path):
    home = fake_toolkit(tmp_path / "cuda")
    assert find({"PATH": "", "CUDA_PATH": str(home)}, guess=str(tmp_path / "missing")).home == str(home)
    found = find({"PATH": "", "CUDA_HOME": str(tmp_path / "missing"), "CUDA_PATH": str(home)},
                 guess=str(tmp_path / "missing"))
    assert found.home == str(home) and "CUDA_PATH" in found.how


def test_no_toolkit_is_one_line_naming_where_it_looked(tmp_path):
    wrapper = executable(tmp_path / "bin" / "nvcc", "#!/bin/sh\nexit 1\n")
    found = find(environ_with_path(wrapper.parent), guess=str(tmp_path))
    assert found.home is None
    assert "\n" not in found.how and str(tmp_path) in found.how and "libcudart" in found.how


def test_the_build_uses_the_found_home_and_says_so(tmp_path, monkeypatch, capsys):
    """load_extension hands the found home to torch's builder and names it before compiling."""
    from torch.utils import cpp_extension

    home = fake_toolkit(tmp_path / "cuda-13.0")
    seen = {}

    def fake_load(**kwargs):
        seen["home"] = cpp_extension.CUDA_HOME
        seen["arch"] = os.environ.get("TORCH_CUDA_ARCH_LIST")
        return type("Module", (), {"upfirdn2d": staticmethod(lambda *a: None)})

    monkeypatch.setattr(cpp_extension, "load", fake_load)
    monkeypatch.setattr(build, "_built", {})
    monkeypatch.setattr(build, "_build_failures", {})
    monkeypatch.setattr(build, "toolchain_problem", lambda: None)
    monkeypatch.setattr(build, "_toolkit", build.CudaToolkit(str(home), "test"))
    monkeypatch.setattr(build, "_cached_build_exists", lambda name: False)
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.0")
    guess_before = cpp_extension.CUDA_HOME
    build.load_extension("upfirdn2d")
    assert seen == {"home": str(home), "arch": "8.0"}
    assert cpp_extension.CUDA_HOME == guess_before  # restored after the build
    message = capsys.readouterr().err
    assert f"CUDA toolkit at {home} (test)" in message and "upfirdn2d" in message


def test_missing_toolkit_is_the_build_problem(monkeypatch):
    import torch
    from torch.utils import cpp_extension

    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(cpp_extension, "is_ninja_available", lambda: True)
    monkeypatch.setattr(build, "_toolkit", build.CudaToolkit(None, "no CUDA toolkit ... looked in /x"))
    assert build.toolchain_problem() == "no CUDA toolkit ... looked in /x; set CUDA_HOME"


def machine_nvcc_wrapper():
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    return nvcc if Path(nvcc).resolve().parent.parent != Path(nvcc).parent.parent or \
        build._nvcc_named_by_script(Path(nvcc)) is not None else None


@pytest.mark.skipif(machine_nvcc_wrapper() is None, reason="no nvcc wrapper or link on this machine's PATH")
def test_this_machines_nvcc_wrapper_is_seen_through():
    nvcc = machine_nvcc_wrapper()
    guess = str(Path(nvcc).parent.parent)  # what torch guesses from the PATH
    found = build.find_cuda_toolkit(guess=guess, default_homes=())
    assert found.home is not None and build.has_cuda_runtime(found.home)
    # and the real nvcc's own dry run agrees with where the lookup went
    assert Path(build._nvcc_reported_home(nvcc)).resolve() == Path(found.home).resolve()


# --------------------------------------------------------------------------------------------
# benchmarks/check_cuda_build.py: arguments (the build is `make check-cuda-build`)


def run_check(*arguments):
    return subprocess.run([sys.executable, str(CHECK_SCRIPT), *arguments], capture_output=True, text=True,
                          cwd=REPO, timeout=120)


@pytest.mark.parametrize("arguments,message", [
    (["--venv", str(REPO / "venv")], "is inside the repository"),
    (["--arch_list", "sm_80"], "is not a list such as"),
    (["--nice", "40"], "is not in 0..19"),
])
def test_check_cuda_build_refuses_bad_arguments_in_one_line(tmp_path, arguments, message):
    result = run_check(*arguments)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and message in result.stderr
    assert not (REPO / "venv").exists()


def test_check_cuda_build_help():
    result = run_check("--help")
    assert result.returncode == 0
    for flag in ("--venv", "--torch", "--pip_args", "--arch_list", "--nice", "--keep_build"):
        assert flag in result.stdout
    assert "--inner" not in result.stdout


def test_fatbin_reader_and_expected_archs(tmp_path):
    import struct

    check = load_check_module()
    entries = b""
    for kind, arch in ((2, 75), (2, 90), (1, 90)):
        payload = b"\0" * 16
        entries += struct.pack("<HHIQ", kind, 0, 64, len(payload)) + b"\0" * 12 + struct.pack("<I", arch)
        entries += b"\0" * (64 - 32) + payload
    blob = b"junk" + struct.pack("<IHHQ", check.FATBIN_MAGIC, 1, 16, len(entries)) + entries + b"tail"
    (tmp_path / "x.so").write_bytes(blob)
    assert check.fatbin_archs(tmp_path / "x.so") == (["sm_75", "sm_90"], ["compute_90"])
    assert check.expected_archs("7.5;9.0+PTX") == (["sm_75", "sm_90"], ["compute_90"])
    assert check.expected_archs(build.DEFAULT_ARCH_LIST)[0] == ["sm_75", "sm_80", "sm_86", "sm_89", "sm_90"]


def load_check_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_cuda_build", CHECK_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
