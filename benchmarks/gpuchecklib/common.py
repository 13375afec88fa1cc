"""Constants and helpers shared by the parts of benchmarks/gpu_check.py: the paper-size network
and its input, timing, the ECHO_OPS switch, the environment record."""
import contextlib
import datetime
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from echo.util.other import git_commit  # noqa: E402

RESULTS_DIR = REPO / "benchmarks" / "results"
SHARED_DATA = REPO.parent / "shared" / "data"
PARTS = ("parity", "speed", "bf16", "ddp", "rtf")
# max |kernel - float64 reference| allowed, relative to max |reference|: a few units of the
# format's rounding (2^-24, 2^-11, 2^-8) times the taps a 4x4 FIR sums
TOLERANCES = {"float32": 1e-5, "float16": 1e-2, "bfloat16": 4e-2}
# |bf16 autocast output - float32 output| / |float32 output| (L2) of the whole network: bf16 keeps
# 8 bits, about 0.4 % per rounding; measured 0.7-1.9 % for the network without deformable convs
BF16_TOLERANCE = 0.05
FEW_STEP_PREDICTOR, FEW_STEP_N = "ddim", 3
DEFAULT_N = 20
ENH_SECONDS = 2.5


@contextlib.contextmanager
def ops_mode(mode):
    """ECHO_OPS for the code inside; the ops read it at every call."""
    previous = os.environ.get("ECHO_OPS")
    os.environ["ECHO_OPS"] = mode
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("ECHO_OPS", None)
        else:
            os.environ["ECHO_OPS"] = previous


def synchronize(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_median(fn, device, repeats, warmup=2):
    """Median wall milliseconds of ``fn`` over ``repeats`` calls, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - started) * 1e3)
    return round(statistics.median(times), 3), [round(t, 3) for t in times]


def environment():
    import torch

    from echo.backbones.ncsnpp_utils.op import build

    gpus = [torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())]
    toolkit = build.cuda_toolkit() if torch.version.cuda else None
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "git_commit": git_commit(REPO, full=True),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "gpus": [{"name": p.name, "capability": f"{p.major}.{p.minor}", "memory_gb": round(p.total_memory / 2**30, 1)}
                 for p in gpus],
        "cuda_toolkit": None if toolkit is None else {"home": toolkit.home, "how": toolkit.how},
        "arch_list": build.arch_list_for_build(),
        "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32},
        "host": f"{platform.machine()}, {os.cpu_count()} cores",
    }


def default_out(env):
    name = env["gpus"][0]["name"] if env["gpus"] else "gpu"
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    count = len(env["gpus"])
    return RESULTS_DIR / f"gpu-check-{datetime.date.today().isoformat()}-{count}x-{slug}.json"


def paper_backbone(device):
    import torch

    from echo.backbones import NCSNppDeform

    torch.manual_seed(0)
    return NCSNppDeform().to(device)


def paper_model(device):
    import torch

    from echo.model import ScoreModel

    torch.manual_seed(0)
    return ScoreModel().to(device)


def backbone_input(device, frames, batch=1):
    import torch

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 2, 256, frames, dtype=torch.complex64, generator=generator)
    return x.to(device), torch.full((batch,), 0.5, device=device)


def max_abs(a, b=None):
    """max |a - b| (|a| without b), in double precision; complex tensors by their modulus."""
    import torch

    def wide(z):
        return z.to(torch.complex128) if z.is_complex() else z.double()

    return float((wide(a) - (0 if b is None else wide(b))).abs().max().item())
