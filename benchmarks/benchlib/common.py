"""Timing helpers, the benchmarked models and their inputs, the audio the parts enhance."""
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
BENCH_SCRIPT = REPO / "benchmarks" / "bench.py"  # the child processes run it again
SHARED_DATA = REPO.parent / "shared" / "data"
VBDMD_TEST = SHARED_DATA / "vbdmd_test"
SAMPLE_RATE = 16000
FWD_FRAMES = 256
CEILING_SHAPE = (1, 128, 256, 256)  # the conv of the first level: 128 -> 128 channels, 3x3


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------

def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    """(wall seconds, process CPU seconds, result) of one call."""
    synchronize(device)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    result = fn()
    synchronize(device)
    return time.perf_counter() - wall0, time.process_time() - cpu0, result


def median_wall(fn, device, repeats):
    return statistics.median(timed(fn, device)[0] for _ in range(repeats))


def conv_flops(shape, out_channels, kernel):
    batch, channels, height, width = shape
    return 2 * batch * out_channels * channels * kernel * kernel * height * width


# --------------------------------------------------------------------------------------------
# Models and inputs
# --------------------------------------------------------------------------------------------

def paper_backbone(device):
    from echo.backbones import NCSNppDeform

    torch.manual_seed(0)
    return NCSNppDeform().to(device).eval()


def paper_model(device):
    """ScoreModel with the paper-size backbone and random weights."""
    from echo.model import ScoreModel

    torch.manual_seed(0)
    return ScoreModel().to(device)


def checkpoint_model(path, device):
    """The model of a trained checkpoint (its EMA weights), as enhancement.py loads it."""
    from echo.checkpoints import load_model

    return load_model(path, device)


def backbone_input(device, frames, batch=1):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 2, 256, frames, dtype=torch.complex64, generator=generator)
    return x.to(device), torch.full((batch,), 0.5, device=device)


def count_forward_flops(net, x, t):
    """FLOPs of one forward pass; see bench.py's docstring for what is counted."""
    from torch.utils.flop_counter import FlopCounterMode
    from echo.backbones.ncsnpp_utils import deform_conv

    previous = deform_conv.backend()
    deform_conv.set_backend("torch")
    try:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            net(x, t)
    finally:
        deform_conv.set_backend(previous)
    return counter.get_total_flops()


class CeilingConv:
    """The reference convolution in both memory formats; the faster format is the ceiling."""

    def __init__(self, device, dtype=torch.float32, formats=("contiguous", "channels_last")):
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(CEILING_SHAPE, generator=generator).to(device, dtype)
        self.weight = (torch.randn(128, 128, 3, 3, generator=generator) * 0.03).to(device, dtype)
        self.bias = torch.zeros(128, device=device, dtype=dtype)
        inputs = {"contiguous": x, "channels_last": x.contiguous(memory_format=torch.channels_last)}
        self.inputs = {name: inputs[name] for name in formats}
        self.device = device
        self.flops = conv_flops(CEILING_SHAPE, 128, 3)

    def rates(self, repeats=3):
        """{format: (GFLOP/s by wall time, GFLOP/s by process CPU time)}, medians of ``repeats`` calls."""
        rates = {}
        with torch.inference_mode():
            for name, x in self.inputs.items():
                def conv():
                    return torch.nn.functional.conv2d(x, self.weight, self.bias, padding=1)

                conv()  # oneDNN builds its primitive on the first call of a shape
                calls = [timed(conv, self.device)[:2] for _ in range(repeats)]
                rates[name] = tuple(self.flops / statistics.median(c[i] for c in calls) / 1e9 for i in (0, 1))
        return rates

    def best(self, repeats=3):
        """(wall GFLOP/s, CPU-time GFLOP/s) of the faster format."""
        return max(self.rates(repeats).values())

    def gflops(self, repeats=3):
        return self.best(repeats)[0]


# --------------------------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------------------------

def read_mono(path):
    import soundfile as sf

    audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return audio.mean(axis=1), sr


def vbdmd_noisy_files():
    folder = VBDMD_TEST / "noisy"
    return sorted(folder.glob("*.wav")) if folder.is_dir() else []


def pick_enhancement_file(target_seconds=2.5):
    """The VB-DMD test file closest to ``target_seconds`` (among 2-3 s), or a synthetic one."""
    import soundfile as sf

    candidates = [(abs(sf.info(str(p)).duration - target_seconds), p) for p in vbdmd_noisy_files()]
    candidates = [c for c in candidates if c[0] <= 0.5]
    if candidates:
        path = min(candidates)[1]
        audio, sr = read_mono(path)
        return audio, sr, path.name
    return synthetic_audio(target_seconds), SAMPLE_RATE, f"synthetic {target_seconds} s"


def synthetic_audio(seconds, seed=0):
    """Speech-like test audio from echo.data.synth (noisy mixture), any length."""
    from echo.data.synth import make_dataset

    with tempfile.TemporaryDirectory() as folder:
        root = make_dataset(Path(folder) / "synth", n_train=0, n_valid=0, n_test=1, seconds=seconds, seed=seed)
        audio, _ = read_mono(next((root / "test" / "noisy").glob("*.wav")))
    return audio


def long_test_audio(seconds):
    """Real VB-DMD noisy speech, files joined end to end, cut to ``seconds``; synthetic without data."""
    needed = int(round(seconds * SAMPLE_RATE))
    pieces, total = [], 0
    for path in vbdmd_noisy_files():
        audio, sr = read_mono(path)
        if sr != SAMPLE_RATE:
            continue
        pieces.append(audio)
        total += len(audio)
        if total >= needed:
            return np.concatenate(pieces)[:needed]
    return synthetic_audio(seconds)[:needed]
