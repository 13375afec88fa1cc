"""Parts rss (peak memory of enhancing long files, in fresh processes) and metrics
(calc_metrics.py throughput with 1 and 2 workers)."""
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from .common import (BENCH_SCRIPT, REPO, SAMPLE_RATE, VBDMD_TEST, long_test_audio, paper_model, timed)


# --------------------------------------------------------------------------------------------
# Part: peak memory of enhancing long files (fresh processes)
# --------------------------------------------------------------------------------------------

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
        cmd = [sys.executable, str(BENCH_SCRIPT), "--rss-child", str(seconds),
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
