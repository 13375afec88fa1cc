"""Keep freed memory in the process for CPU training (Linux with glibc).

glibc serves every allocation of 32 MiB or more with a fresh mmap and unmaps it on free. At the
paper size most activations are that large (128 channels x 256 x 256 fp32 is exactly 32 MiB),
so every training step faults in and zeroes gigabytes of new pages. Measured on a 2-core x86
VM, paper size, 1 thread, seconds (wall / user / system):
                                        training step (batch 1)   inference forward (T=256)
  glibc defaults                        38.0 / 30.1 / 7.9          8.6 / 7.6 / 1.0
  mmap_max=0, trim_threshold=64 GiB     29.9 / 29.4 / 0.0          8.0 / 7.9 / 0.0
The tunables below serve all memory from the heap and never give it back, so a step reuses the
pages of the step before. glibc reads them when a process starts, hence the re-exec: they
cannot be set from a running interpreter.

Only train.py uses this. For enhancement the gain is small and the price is not: the heap
fragments, and the peak RSS of enhancing a paper-size 8 s chunk rose from 2.0 to 2.7 GB, where
memory is what users of long recordings run out of. GPU runs are left alone (their activations
live on the GPU), and so is a process that preloads another allocator (jemalloc and tcmalloc
do the same job) or sets glibc.malloc tunables itself. ECHO_MALLOC=system switches this off.

Stdlib only: this must run before torch is imported.
"""
import os
import platform
import sys

TUNABLES = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736"
OPT_OUT = "ECHO_MALLOC"


def reuse_env(environ=None, gpu_expected=False):
    """The environment to re-run this process with, or None when nothing is to change: not
    Linux/glibc, already configured, another allocator preloaded, opted out, or a GPU run
    (its activations live on the GPU; host memory is small and variable-sized there)."""
    environ = os.environ if environ is None else environ
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    if environ.get(OPT_OUT, "").lower() == "system" or gpu_expected:
        return None
    if "glibc.malloc" in environ.get("GLIBC_TUNABLES", "") or "malloc" in environ.get("LD_PRELOAD", ""):
        return None
    tunables = ":".join(filter(None, [environ.get("GLIBC_TUNABLES"), TUNABLES]))
    return dict(environ, GLIBC_TUNABLES=tunables)


def reexec_reusing_memory(gpu_expected=False):
    """Replace this process by the same command under the tunables (same PID, arguments and
    interpreter flags); returns without doing anything when ``reuse_env`` says so."""
    env = reuse_env(gpu_expected=gpu_expected)
    if env is None:
        return
    argv = list(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *argv[1:]], env)


def describe(environ=None) -> str:
    environ = os.environ if environ is None else environ
    if "malloc" in environ.get("LD_PRELOAD", ""):
        return f"preloaded ({environ['LD_PRELOAD']})"
    if "glibc.malloc" in environ.get("GLIBC_TUNABLES", ""):
        return f"glibc, GLIBC_TUNABLES={environ['GLIBC_TUNABLES']}"
    return "glibc defaults" if platform.libc_ver()[0] == "glibc" else "system default"


def gpu_expected(argv, flag) -> bool:
    """Whether a command line will run on a GPU, judged without importing torch from the value
    of ``flag`` (``--accelerator`` of train.py, ``--device`` of enhancement.py): ``cpu`` says
    no, ``gpu``/``cuda``/``mps`` yes, anything else (``auto``) yes where an NVIDIA driver is loaded."""
    value = "auto"
    words = list(argv)
    for i, word in enumerate(words):
        if word == flag and i + 1 < len(words):
            value = words[i + 1]
        elif word.startswith(flag + "="):
            value = word.split("=", 1)[1]
    if value == "cpu":
        return False
    if value in ("gpu", "cuda", "mps") or value.startswith("cuda:"):
        return True
    return os.path.exists("/proc/driver/nvidia/version")
