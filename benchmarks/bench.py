#!/usr/bin/env python
"""Speed and memory of the ECHO backbone and pipeline, measured in one process on one device.

    python benchmarks/bench.py [--device auto|cpu|cuda] [--only fwd,train,...] [--skip ...]
                               [--quick] [--threads auto|N] [--allocator auto|jemalloc|system]
                               [--bf16-forward-probe] [--out PATH]

Prints a table and writes JSON (default benchmarks/results/latest.json, replaced atomically;
parts not run are null with the reason under "notes"). Parts:

  fwd      conv ceiling and the paper-size ncsnpp_deform forward pass at T=256 frames,
           interleaved round by round so that both see the same machine load:
           ceiling_conv_gflops, fwd_gflop, fwd_s, fwd_fraction_of_conv_ceiling
  bf16     fwd_s_bf16 and bf16_max_abs_diff under bfloat16 autocast, at T=256 where a bf16
           path pays (CUDA, CPUs with bf16 units); otherwise null with the reason, and a cheap
           probe under bf16_probe (the ceiling conv in bf16; --bf16-forward-probe adds a
           64-frame forward)
  train    train_step_s: one paper-size training step at batch 1 (ScoreModel loss, backward,
           the model's Adam, the EMA update of echo.ema), in a child process under train.py's
           allocator settings
  enh      enh_rtf: enhance_audio of a real ~2.5 s 16 kHz file with the paper-size model
           (random weights) and the SDE's default sampler (N=20); wall seconds per audio second
  rss      enh_peak_rss_mb_10s, enh_peak_rss_mb_60s: peak resident memory of fresh processes
           that build the paper-size model and enhance a 10 s / 60 s file (N=1, default chunking)
  metrics  metrics_files_per_s_w1, metrics_files_per_s_w2: calc_metrics.py with 1 and 2 worker
           processes on 24 VB-DMD test files (noisy scored as enhanced); timed from its own
           run_info "seconds" (pairing + scoring, interpreter start-up and imports excluded)

The ceiling is a 128->128 3x3 convolution on [1, 128, 256, 256] in float32, in whichever memory
format (plain or channels-last) is faster here: the best this machine does on the network's
dominant layer. FLOPs are counted by torch.utils.flop_counter.FlopCounterMode (2 per
multiply-add) over one forward pass with the pure-PyTorch deformable convolution, whose
offset/mask convs and column matmuls are ordinary aten ops and so are counted (torchvision's
deform_conv2d would not be, so the count forces the pure path); the depthwise FIR resampling
convs and the attention matmuls are counted; elementwise ops, GroupNorm, softmax and the
bilinear gathers are not. The ceiling conv is counted the same way.

On a shared machine the numbers move with the load of other jobs: the load average is recorded
at the start of every part, medians are reported, and --threads auto uses only the cores other
jobs leave free (with a busy OpenMP team, every parallel region waits for a descheduled thread).
The memory allocator matters on CPU. With --allocator auto each part runs under the settings of
the command it stands for: the training step in a child process under train.py's (glibc tunables
that keep freed memory for reuse, echo/util/allocator.py), the inference parts under
enhancement.py's (the C library's defaults). --allocator system runs everything under the
defaults, --allocator jemalloc everything under jemalloc (LD_PRELOAD). "allocator" in the JSON
and details.train.allocator say which.
"""
import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `python benchmarks/bench.py` puts benchmarks/, not the repository, on the path
from echo.util import allocator  # noqa: E402  (stdlib only; torch is not imported yet)

JEMALLOC_SEARCH = ("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
                   "/usr/lib64/libjemalloc.so.2", "/usr/local/lib/libjemalloc.so.2", "/usr/lib/libjemalloc.so.2")
# keep freed pages for reuse, as the glibc tunables of echo.util.allocator do
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"


def choose_allocator(argv):
    """Before torch is imported: re-run this script under the chosen allocator (see the module
    docstring). With ``auto`` every part runs under the settings of the command it stands for:
    the training step in a child process under train.py's (echo/util/allocator.py), the
    inference parts under enhancement.py's (the C library's defaults)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--allocator", default="auto")
    pre.add_argument("--jemalloc-lib", default=None)
    pre.add_argument("--device", default="auto")
    known, _ = pre.parse_known_args(argv)
    if known.allocator == "auto" and "--train-child" in argv:
        allocator.reexec_reusing_memory(gpu_expected=allocator.gpu_expected(argv, "--device"))
    elif known.allocator == "jemalloc" and "jemalloc" not in os.environ.get("LD_PRELOAD", ""):
        candidates = [known.jemalloc_lib] if known.jemalloc_lib else JEMALLOC_SEARCH
        library = next((c for c in candidates if c and os.path.exists(c)), None)
        if library is None:
            raise SystemExit("bench: --allocator jemalloc but no libjemalloc.so.2 found "
                             "(apt-get install libjemalloc2, or give --jemalloc-lib)")
        env = dict(os.environ, LD_PRELOAD=library, MALLOC_CONF=os.environ.get("MALLOC_CONF", JEMALLOC_CONF))
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


if __name__ == "__main__":
    choose_allocator(sys.argv[1:])


import numpy as np  # noqa: E402
import torch  # noqa: E402

from echo.util.other import write_text_atomic  # noqa: E402

DEFAULT_OUT = REPO / "benchmarks" / "results" / "latest.json"
SHARED_DATA = REPO.parent / "shared" / "data"
VBDMD_TEST = SHARED_DATA / "vbdmd_test"
PARTS = ("fwd", "bf16", "train", "enh", "rss", "metrics")
SAMPLE_RATE = 16000
FWD_FRAMES = 256
CEILING_SHAPE = (1, 128, 256, 256)  # the conv of the first level: 128 -> 128 channels, 3x3

# Reference implementation, measured earlier on this machine: training step at batch 1 took
# 10.1 s when the ceiling conv ran at 384 GFLOP/s.
REFERENCE_TRAIN_STEP_S = 10.1
REFERENCE_CEILING_GFLOPS = 384.0
TARGETS = dict(fwd_fraction=0.77, train_speedup=1.6, rss_growth=1.3, rss_limit_mb=3000.0,
               metrics_scaling=1.7)


# --------------------------------------------------------------------------------------------
# Arguments and environment
# --------------------------------------------------------------------------------------------

def build_parser():
    parser = argparse.ArgumentParser(description="Benchmark the ECHO backbone and pipeline.")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--only", default=None, help=f"comma-separated parts to run ({','.join(PARTS)})")
    parser.add_argument("--skip", default="", help="comma-separated parts to leave out")
    parser.add_argument("--quick", action="store_true",
                        help="fewer repetitions (2 forward rounds, 1 training step, 12 metric files)")
    parser.add_argument("--threads", default="auto",
                        help="intra-op CPU threads: a number, or auto = the cores not busy with "
                             "other jobs at start (1-minute load average), at least 1")
    parser.add_argument("--bf16-forward-probe", action="store_true",
                        help="where bf16 does not pay, also time a 64-frame bf16 forward (minutes on such CPUs)")
    parser.add_argument("--allocator", default="auto", choices=("auto", "jemalloc", "system"),
                        help="auto: the settings train.py and enhancement.py use here (echo/util/allocator.py); "
                             "system: the C library's defaults; jemalloc: LD_PRELOAD libjemalloc.so.2")
    parser.add_argument("--jemalloc-lib", default=None, help="path of libjemalloc.so.2 if not in a standard place")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help=f"JSON output (default {DEFAULT_OUT})")
    parser.add_argument("--rss-child", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--train-child", action="store_true", help=argparse.SUPPRESS)
    return parser


def selected_parts(args):
    parts = PARTS if not args.only else tuple(p.strip() for p in args.only.split(",") if p.strip())
    skipped = {p.strip() for p in args.skip.split(",") if p.strip()}
    unknown = (set(parts) | skipped) - set(PARTS)
    if unknown:
        raise SystemExit(f"bench: unknown part(s) {', '.join(sorted(unknown))}; known: {', '.join(PARTS)}")
    return [p for p in PARTS if p in parts and p not in skipped]


def resolve_device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench: --device cuda but torch sees no CUDA device")
    return torch.device(name)


def threads_for(setting, load_at_start):
    """``auto``: the cores left free by other jobs. With 2 cores and a load of 5, a 2-thread
    OpenMP team waits at every barrier for a thread the scheduler has parked; measured here,
    paper-size forward at load ~6: 10.3 s wall with 1 thread, 15-28 s with 2."""
    cores = os.cpu_count() or 1
    if setting != "auto":
        return max(1, int(setting))
    return max(1, min(cores, cores - round(load_at_start)))


def git_commit():
    def run(*cmd):
        result = subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True)
        return result.stdout.strip() if result.returncode == 0 else None

    commit = run("rev-parse", "HEAD")
    dirty = run("status", "--porcelain", "--untracked-files=no")
    return None if commit is None else commit + ("+dirty" if dirty else "")


def load_average():
    return [round(v, 2) for v in os.getloadavg()]


# --------------------------------------------------------------------------------------------
# Timing helpers
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


def backbone_input(device, frames, batch=1):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 2, 256, frames, dtype=torch.complex64, generator=generator)
    return x.to(device), torch.full((batch,), 0.5, device=device)


def count_forward_flops(net, x, t):
    """FLOPs of one forward pass; see the module docstring for what is counted."""
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


# --------------------------------------------------------------------------------------------
# Part: conv ceiling and forward pass
# --------------------------------------------------------------------------------------------

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


def bench_forward(device, quick):
    """Rounds of ceiling, forward, ceiling: each forward is compared with the ceiling measured
    just before and after it, so that a change of machine load between rounds cancels out."""
    rounds = 2 if quick else 4
    net = paper_backbone(device)
    x, t = backbone_input(device, FWD_FRAMES)
    flops = count_forward_flops(net, x, t)
    ceiling = CeilingConv(device)
    with torch.inference_mode():
        net(x, t)  # warm-up: oneDNN primitives, allocator
        memory_format = "channels_last" if net.uses_channels_last(x.real) else "contiguous"
    ceiling_by_format = {k: round(v[0], 1) for k, v in ceiling.rates().items()}
    samples = [ceiling.best()]
    walls, cpus = [], []
    for _ in range(rounds):
        with torch.inference_mode():
            wall, cpu, _ = timed(lambda: net(x, t), device)
        walls.append(wall)
        cpus.append(cpu)
        samples.append(ceiling.best())
    around = [((a[0] + b[0]) / 2, (a[1] + b[1]) / 2) for a, b in zip(samples, samples[1:])]
    fractions = [flops / w / 1e9 / c[0] for w, c in zip(walls, around)]
    cpu_fractions = [flops / w / 1e9 / c[1] for w, c in zip(cpus, around)]
    return {
        "ceiling_conv_gflops": round(statistics.median(s[0] for s in samples), 1),
        "fwd_gflop": round(flops / 1e9, 1),
        "fwd_s": round(statistics.median(walls), 3),
        "fwd_fraction_of_conv_ceiling": round(statistics.median(fractions), 3),
        "details": {"fwd": {
            "frames": FWD_FRAMES,
            "activation_memory_format": memory_format,
            "fwd_gflops": round(flops / statistics.median(walls) / 1e9, 1),
            "fwd_s_rounds": [round(w, 3) for w in walls],
            "fwd_cpu_s_rounds": [round(c, 3) for c in cpus],
            "ceiling_gflops_samples": [round(s[0], 1) for s in samples],
            "ceiling_gflops_by_format_at_start": ceiling_by_format,
            "fraction_rounds": [round(f, 3) for f in fractions],
            # the same ratio from process CPU time: insensitive to time slicing by other jobs
            "fraction_cpu_time_rounds": [round(f, 3) for f in cpu_fractions],
        }},
    }


# --------------------------------------------------------------------------------------------
# Part: bfloat16
# --------------------------------------------------------------------------------------------

def bf16_pays(device):
    """bf16 is worth timing at full size only where the hardware has bf16 arithmetic."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def bf16_forward(net, x, t, device):
    """(wall seconds, max |bf16 - fp32| of the output, max |fp32 output|)."""
    with torch.inference_mode():
        reference = net(x, t)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            net(x, t)  # warm-up
            wall, _, out = timed(lambda: net(x, t), device)
    diff = (out.to(reference.dtype) - reference).abs().max().item()
    return wall, diff, reference.abs().max().item()


def bench_bf16(device, forward_probe):
    """Full-size bf16 timing where it pays; otherwise the ceiling conv in bf16 (seconds) and,
    with ``forward_probe``, a 64-frame forward (minutes on a CPU without bf16 units: measured
    here 41 s bf16 vs 4.8 s fp32 at load ~5, 1 thread)."""
    net = paper_backbone(device)
    if bf16_pays(device):
        x, t = backbone_input(device, FWD_FRAMES)
        wall, diff, scale = bf16_forward(net, x, t, device)
        return {"fwd_s_bf16": round(wall, 3), "bf16_max_abs_diff": diff,
                "details": {"bf16": {"output_max_abs": scale, "relative_diff": diff / scale}}}

    fp32 = CeilingConv(device, formats=("channels_last",)).gflops(repeats=2)
    bf16 = CeilingConv(device, torch.bfloat16, formats=("channels_last",)).gflops(repeats=1)
    probe = {"conv_gflops_fp32": round(fp32, 1), "conv_gflops_bf16": round(bf16, 1)}
    if forward_probe:
        frames = 64
        x, t = backbone_input(device, frames)
        with torch.inference_mode():
            net(x, t)
            fp32_s = timed(lambda: net(x, t), device)[0]
        wall, diff, scale = bf16_forward(net, x, t, device)
        probe.update(frames=frames, fwd_s_fp32=round(fp32_s, 3), fwd_s_bf16=round(wall, 3), max_abs_diff=diff,
                     output_max_abs=scale, relative_diff=diff / scale)
    reason = (f"no bf16 path pays on this {device.type}: no bf16 arithmetic units (oneDNN bf16 "
              f"unsupported); the 3x3 conv runs at {probe['conv_gflops_bf16']} GFLOP/s in bf16 vs "
              f"{probe['conv_gflops_fp32']} in fp32 (bf16_probe; --bf16-forward-probe adds a 64-frame forward)")
    return {"fwd_s_bf16": None, "bf16_max_abs_diff": None,
            "notes": {"fwd_s_bf16": reason, "bf16_max_abs_diff": reason},
            "details": {"bf16_probe": probe}}


# --------------------------------------------------------------------------------------------
# Part: training step
# --------------------------------------------------------------------------------------------

def ema_averaged_model(model):
    """The weight average of echo.ema.EMA, updated the way its Lightning callback does."""
    from torch.optim.swa_utils import AveragedModel
    from echo.ema import EMA

    callback = EMA(decay=model.hparams.get("ema_decay", 0.999))
    return AveragedModel(model, multi_avg_fn=callback._kwargs["multi_avg_fn"], use_buffers=False)


def training_batch(device, frames):
    generator = torch.Generator().manual_seed(1)
    clean = 0.3 * torch.randn(1, 1, 256, frames, dtype=torch.complex64, generator=generator)
    noise = 0.3 * torch.randn(1, 1, 256, frames, dtype=torch.complex64, generator=generator)
    return clean.to(device), (clean + noise).to(device)


def bench_train(device, quick):
    model = paper_model(device).train()
    optimizer = model.configure_optimizers()
    averaged = ema_averaged_model(model)
    batch = training_batch(device, int(model.hparams.get("num_frames", FWD_FRAMES)))

    def step():
        loss = model._step(batch, training=True)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        averaged.update_parameters(model)
        return loss

    timed(step, device)  # warm-up: Adam's state, oneDNN primitives
    walls = [timed(step, device)[0] for _ in range(1 if quick else 2)]
    return {"train_step_s": round(statistics.median(walls), 3),
            "details": {"train": {"step_s_runs": [round(w, 3) for w in walls], "batch": 1,
                                  "frames": batch[0].shape[-1], "optimizer": type(optimizer).__name__,
                                  "allocator": allocator.describe()}}}


def bench_train_in_child(device, args, threads):
    """bench_train in a fresh process, which re-execs itself under train.py's allocator
    settings (see choose_allocator); its result comes back as the last line of its output."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--train-child", "--device", device.type,
           "--threads", str(threads), "--allocator", args.allocator]
    if args.jemalloc_lib:
        cmd += ["--jemalloc-lib", args.jemalloc_lib]
    if args.quick:
        cmd.append("--quick")
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"training step failed: {result.stderr.strip().splitlines()[-1:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# Part: enhancement speed
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


def bench_enhancement(device, quick):
    from echo.enhance import enhance_audio
    from echo.sampling import sampler_defaults

    model = paper_model(device).eval()
    audio, sr, name = pick_enhancement_file()
    stats = {}
    wall, _, _ = timed(lambda: enhance_audio(model, audio, sr, stats=stats), device)
    seconds = len(audio) / sr
    frames = model.spectrogram.frames_for_samples(len(audio))
    return {"enh_rtf": round(wall / seconds, 3),
            "details": {"enh": {"file": name, "audio_s": round(seconds, 3), "wall_s": round(wall, 2),
                                "frames": frames, "padded_frames": -(-frames // model.frames_multiple) * model.frames_multiple,
                                "N": sampler_defaults(model.sde)["N"], "nfe": stats.get("nfe")}}}


# --------------------------------------------------------------------------------------------
# Part: peak memory of enhancing long files (fresh processes)
# --------------------------------------------------------------------------------------------

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


def peak_rss_mb():
    """Peak resident memory of this process since its exec, in MiB.

    Linux's getrusage/wait4 ru_maxrss is not that: exec keeps the high-water mark of the memory
    the process had before it, and a child made by vfork (as subprocess does) starts in its
    parent's memory, so both children of a 4.8 GB parent reported a 4.8 GB peak. VmHWM of
    /proc/self/status belongs to the new address space alone.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    per_mib = 2**20 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB elsewhere
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / per_mib, 1)


def rss_child(seconds, device):
    """Runs in a fresh process: build the paper-size model, enhance ``seconds`` of audio (N=1,
    default chunking), print a JSON line."""
    from echo.enhance import enhance_audio

    model = paper_model(device).eval()
    audio = long_test_audio(seconds)
    stats = {}
    wall, _, _ = timed(lambda: enhance_audio(model, audio, SAMPLE_RATE, sampler_kwargs={"N": 1}, stats=stats),
                       device)
    report = {"seconds": seconds, "wall_s": round(wall, 2), "chunks": stats.get("chunks"),
              "peak_rss_mb": peak_rss_mb()}
    if device.type == "cuda":
        report["cuda_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    print(json.dumps(report), flush=True)


def bench_rss(device):
    """Both files at once, each in its own fresh process that reports its own peak (see
    peak_rss_mb); the wall times are not the point of this part."""
    children = {}
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for seconds in (10, 60):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--rss-child", str(seconds),
               "--device", device.type, "--threads", "1"]
        children[seconds] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    results, runs = {}, {}
    for seconds, child in children.items():
        out, err = child.communicate()
        if child.returncode != 0:
            raise RuntimeError(f"enhancing {seconds} s failed: {err.strip().splitlines()[-1:]}")
        runs[f"{seconds}s"] = json.loads(out.strip().splitlines()[-1])
        results[f"enh_peak_rss_mb_{seconds}s"] = runs[f"{seconds}s"]["peak_rss_mb"]
    return {**results, "details": {"rss": runs}}


# --------------------------------------------------------------------------------------------
# Part: metric throughput
# --------------------------------------------------------------------------------------------

def metric_files(count):
    """(clean dir, noisy dir) holding ``count`` pairs: VB-DMD test files, or synthetic ones."""
    clean, noisy = VBDMD_TEST / "clean", VBDMD_TEST / "noisy"
    if clean.is_dir() and noisy.is_dir():
        names = sorted(p.name for p in noisy.glob("*.wav") if (clean / p.name).exists())[:count]
        return clean, noisy, names, "vbdmd_test"
    from echo.data.synth import make_dataset

    root = make_dataset(Path(tempfile.mkdtemp()) / "synth", n_train=0, n_valid=0, n_test=count, seconds=3.0)
    names = sorted(p.name for p in (root / "test" / "noisy").glob("*.wav"))
    return root / "test" / "clean", root / "test" / "noisy", names, "synthetic"


def link_files(names, source, folder):
    folder.mkdir(parents=True)
    for name in names:
        (folder / name).symlink_to(source / name)
    return folder


def calc_metrics_seconds(folder, workers):
    """Seconds calc_metrics.py itself reports for pairing and scoring (no start-up)."""
    out = folder / f"out_w{workers}"
    cmd = [sys.executable, str(REPO / "calc_metrics.py"), "--clean_dir", str(folder / "clean"),
           "--noisy_dir", str(folder / "noisy"), "--enhanced_dir", str(folder / "enhanced"),
           "--output_dir", str(out), "--workers", str(workers)]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"calc_metrics.py failed: {result.stderr.strip().splitlines()[-1:]}")
    return json.loads((out / "_run_info.json").read_text())["seconds"]


def bench_metrics(quick):
    count = 12 if quick else 24
    clean, noisy, names, source = metric_files(count)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        link_files(names, clean, folder / "clean")
        link_files(names, noisy, folder / "noisy")
        link_files(names, noisy, folder / "enhanced")  # noisy scored as the enhanced output
        seconds = {w: calc_metrics_seconds(folder, w) for w in (1, 2)}
    rates = {w: len(names) / s for w, s in seconds.items()}
    return {"metrics_files_per_s_w1": round(rates[1], 3), "metrics_files_per_s_w2": round(rates[2], 3),
            "details": {"metrics": {"files": len(names), "source": source,
                                    "seconds": {f"w{w}": s for w, s in seconds.items()}}}}


# --------------------------------------------------------------------------------------------
# Targets, report
# --------------------------------------------------------------------------------------------

RESULT_KEYS = ("ceiling_conv_gflops", "fwd_gflop", "fwd_s", "fwd_fraction_of_conv_ceiling", "fwd_s_bf16",
               "bf16_max_abs_diff", "train_step_s", "enh_rtf", "enh_peak_rss_mb_10s", "enh_peak_rss_mb_60s",
               "metrics_files_per_s_w1", "metrics_files_per_s_w2")
PART_KEYS = {"fwd": RESULT_KEYS[:4], "bf16": RESULT_KEYS[4:6], "train": ("train_step_s",), "enh": ("enh_rtf",),
             "rss": RESULT_KEYS[8:10], "metrics": RESULT_KEYS[10:12]}


def train_step_target_s(ceiling_gflops):
    """The reference step time carried over to this machine's speed (time scales inversely with
    the ceiling: a machine half as fast takes twice as long), then divided by the wanted speed-up."""
    return REFERENCE_TRAIN_STEP_S * (REFERENCE_CEILING_GFLOPS / ceiling_gflops) / TARGETS["train_speedup"]


def evaluate_targets(r):
    """[(name, measured, wanted, holds or None when not measured)]."""
    def known(*keys):
        return all(r.get(k) is not None for k in keys)

    rows = []
    fraction = r.get("fwd_fraction_of_conv_ceiling")
    rows.append(("fwd fraction of conv ceiling", fraction, f">= {TARGETS['fwd_fraction']}",
                 fraction >= TARGETS["fwd_fraction"] if known("fwd_fraction_of_conv_ceiling") else None))
    if known("train_step_s", "ceiling_conv_gflops"):
        limit = train_step_target_s(r["ceiling_conv_gflops"])
        rows.append(("train step s", r["train_step_s"],
                     f"<= {limit:.2f} (10.1 x 384/{r['ceiling_conv_gflops']} / 1.6)", r["train_step_s"] <= limit))
    else:
        rows.append(("train step s", r.get("train_step_s"), "<= 10.1 x 384/ceiling / 1.6", None))
    if known("enh_peak_rss_mb_10s", "enh_peak_rss_mb_60s"):
        short, long_ = r["enh_peak_rss_mb_10s"], r["enh_peak_rss_mb_60s"]
        holds = long_ <= TARGETS["rss_growth"] * short and max(short, long_) < TARGETS["rss_limit_mb"]
        rows.append(("peak RSS 60 s / 10 s (MB)", f"{long_} / {short} = {long_ / short:.2f}",
                     "ratio <= 1.3, both < 3000", holds))
    else:
        rows.append(("peak RSS 60 s / 10 s (MB)", None, "ratio <= 1.3, both < 3000", None))
    if known("metrics_files_per_s_w1", "metrics_files_per_s_w2"):
        ratio = r["metrics_files_per_s_w2"] / r["metrics_files_per_s_w1"]
        rows.append(("metrics w2 / w1", round(ratio, 2), f">= {TARGETS['metrics_scaling']}",
                     ratio >= TARGETS["metrics_scaling"]))
    else:
        rows.append(("metrics w2 / w1", None, f">= {TARGETS['metrics_scaling']}", None))
    return rows


def print_report(results, target_rows):
    print()
    print(f"ECHO benchmark  device={results['device']}  torch={results['torch_version']}  "
          f"threads={results['threads']}  load at start={results['load_average_start']}  "
          f"commit={results['git_commit']}")
    train_allocator = results["details"].get("train", {}).get("allocator")
    print(f"  allocator: {results['allocator']}"
          + (f" (training step: {train_allocator})" if train_allocator and train_allocator != results["allocator"] else ""))
    width = max(len(k) for k in RESULT_KEYS)
    for key in RESULT_KEYS:
        value = results.get(key)
        note = results["notes"].get(key, "")
        print(f"  {key:<{width}}  {'-' if value is None else value!s:>12}  {note[:90]}")
    print("targets:")
    for name, value, wanted, holds in target_rows:
        verdict = {True: "holds", False: "MISSED", None: "not measured"}[holds]
        print(f"  {name:<28} {'-' if value is None else value!s:>24}  {wanted:<44} {verdict}")


def run_part(part, device, args, threads):
    if part == "fwd":
        return bench_forward(device, args.quick)
    if part == "bf16":
        return bench_bf16(device, args.bf16_forward_probe)
    if part == "train":
        return bench_train_in_child(device, args, threads)
    if part == "enh":
        return bench_enhancement(device, args.quick)
    if part == "rss":
        return bench_rss(device)
    return bench_metrics(args.quick)


def main(argv=None):
    args = build_parser().parse_args(argv)
    load_start = load_average()
    device = resolve_device(args.device)
    threads = threads_for(args.threads, load_start[0])
    torch.set_num_threads(threads)
    if args.rss_child is not None:
        return rss_child(args.rss_child, device)
    if args.train_child:
        print(json.dumps(bench_train(device, args.quick)), flush=True)
        return 0

    parts = selected_parts(args)
    results = {key: None for key in RESULT_KEYS}
    results.update(device=str(torch.cuda.get_device_name(device)) if device.type == "cuda" else
                   f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
                   torch_version=torch.__version__, threads=threads, allocator=allocator.describe(),
                   git_commit=git_commit(), load_average_start=load_start, quick=args.quick, parts=parts,
                   notes={}, details={}, part_seconds={}, load_average_at_part={})
    for part in PARTS:
        if part not in parts:
            for key in PART_KEYS[part]:
                results["notes"].setdefault(key, "not run (--only/--skip)")
    for part in parts:
        print(f"bench: {part} ...", file=sys.stderr, flush=True)
        results["load_average_at_part"][part] = load_average()
        started = time.perf_counter()
        try:
            measured = run_part(part, device, args, threads)
        except Exception as err:  # one broken part must not lose the others' numbers
            for key in PART_KEYS[part]:
                results["notes"][key] = f"{part} failed: {type(err).__name__}: {err}"
            continue
        finally:
            results["part_seconds"][part] = round(time.perf_counter() - started, 1)
        results["notes"].update(measured.pop("notes", {}))
        results["details"].update(measured.pop("details", {}))
        results.update(measured)
    results["load_average_end"] = load_average()
    target_rows = evaluate_targets(results)
    results["targets"] = [dict(name=n, value=v, wanted=w, holds=h) for n, v, w, h in target_rows]
    write_text_atomic(args.out, json.dumps(results, indent=2) + "\n")
    print_report(results, target_rows)
    print(f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
