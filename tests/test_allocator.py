"""echo/util/allocator.py: when CPU runs re-exec under glibc tunables, and that the re-exec keeps
the process, its arguments and its interpreter flags."""
import platform
import subprocess
import sys

import pytest

from conftest import REPO
from echo.util import allocator

LINUX_GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
needs_glibc = pytest.mark.skipif(not LINUX_GLIBC, reason="the tunables are glibc's (Linux only)")


@needs_glibc
def test_a_plain_environment_gets_the_tunables_and_keeps_the_rest():
    env = allocator.reuse_env({"PATH": "/bin", "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX512F"})
    assert env["PATH"] == "/bin"
    assert env["GLIBC_TUNABLES"] == "glibc.cpu.hwcaps=-AVX512F:" + allocator.TUNABLES
    assert "mmap_max=0" in allocator.TUNABLES


@pytest.mark.parametrize("environ, gpu", [
    ({"ECHO_MALLOC": "system"}, False),  # opted out
    ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, False),  # the user's own malloc settings win
    ({"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}, False),  # another allocator
    ({}, True),  # a GPU run
])
def test_nothing_changes_when_not_wanted(environ, gpu):
    assert allocator.reuse_env(environ, gpu_expected=gpu) is None


def test_cpu_or_gpu_is_read_from_the_command_line(monkeypatch):
    assert not allocator.gpu_expected(["--accelerator", "cpu", "--base_dir", "d"], "--accelerator")
    assert not allocator.gpu_expected(["--device=cpu"], "--device")
    assert allocator.gpu_expected(["--accelerator", "gpu"], "--accelerator")
    assert allocator.gpu_expected(["--device", "cuda:1"], "--device")
    monkeypatch.setattr(allocator.os.path, "exists", lambda path: False)
    assert not allocator.gpu_expected(["--device", "auto"], "--device")
    monkeypatch.setattr(allocator.os.path, "exists", lambda path: path == "/proc/driver/nvidia/version")
    assert allocator.gpu_expected([], "--device")


@needs_glibc
def test_reexec_keeps_pid_arguments_and_interpreter_flags(tmp_path):
    script = tmp_path / "entry.py"
    script.write_text(
        "import os, sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from echo.util.allocator import reexec_reusing_memory\n"
        "print('start', os.getpid(), flush=True)\n"
        "reexec_reusing_memory()\n"
        "print('after', os.getpid(), os.environ['GLIBC_TUNABLES'], sys.argv[1:], sys.flags.dont_write_bytecode)\n")
    env = {"PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-B", str(script), "a", "b c"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["start", "start", "after"]  # ran twice, then went on
    pid = lines[0].split()[1]
    assert lines[1].split()[1] == pid and lines[2].split()[1] == pid
    assert lines[2] == f"after {pid} {allocator.TUNABLES} ['a', 'b c'] 1"
