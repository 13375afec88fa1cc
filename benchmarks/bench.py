#!/usr/bin/env python
"""Speed and memory of the ECHO backbone and pipeline, measured in one process on one device.

    python benchmarks/bench.py [--device auto|cpu|cuda] [--only fwd,train,...] [--skip ...]
                               [--quick] [--threads auto|N] [--allocator auto|jemalloc|system]
                               [--ckpt PATH] [--enh-steps N] [--quality-files N]
                               [--bf16-forward-probe] [--out PATH]

Prints a table and writes JSON (default benchmarks/results/latest.json, replaced atomically;
parts not run are null with the reason under "notes"). Parts (benchmarks/benchlib/):

  fwd      conv ceiling and the paper-size ncsnpp_deform forward pass at T=256 frames,
           interleaved round by round so that both see the same machine load:
           ceiling_conv_gflops, fwd_gflop, fwd_s, fwd_fraction_of_conv_ceiling
  bf16     where the device has bf16 units (CPU: AVX512-BF16 or AMX; CUDA: native bf16), the
           paper-size forward at T=256 in fp32 and in bf16 (enhancement.py --precision bf16:
           bf16 weights and activations), rounds interleaved: fwd_s_bf16, bf16_fwd_speedup,
           bf16_max_abs_diff (random weights: not a quality measure); with --ckpt the same for
           that model: ckpt_fwd_s, ckpt_fwd_s_bf16, ckpt_bf16_fwd_speedup. Without bf16 units
           all null with the reason, and a cheap probe under bf16_probe (the ceiling conv in
           bf16; --bf16-forward-probe adds a 64-frame forward)
  train    train_step_s: one paper-size training step at batch 1 (ScoreModel loss, backward,
           the model's Adam, the EMA update of echo.ema), in a child process under train.py's
           allocator settings
  bf16train train.py --precision bf16-mixed against 32-true: seconds per training step under bf16
           autocast and in fp32, rounds interleaved, at the shipped CPU model's size (batch 4, 64
           frames) and the paper's (batch 1, 256 frames): shipped_bf16_train_speedup,
           paper_bf16_train_speedup. Without bf16 units only the shipped size, at batch 1, once
  enh      enh_rtf: enhance_audio of a real ~2.5 s 16 kHz file with the paper-size model
           (random weights) and the SDE's default sampler (N=20; --enh-steps changes N); wall
           seconds per audio second. Where bf16 units exist also enh_rtf_bf16 and
           bf16_enh_speedup; with --ckpt the same for that model (ckpt_enh_rtf, ...)
  rss      enh_peak_rss_mb_10s, enh_peak_rss_mb_60s: peak resident memory of fresh processes
           that build the paper-size model and enhance a 10 s / 60 s file (N=1, default chunking)
  metrics  metrics_files_per_s_w1, metrics_files_per_s_w2: calc_metrics.py with 1 and 2 worker
           processes on 24 VB-DMD test files (noisy scored as enhanced); timed from its own
           run_info "seconds" (pairing + scoring, interpreter start-up and imports excluded)
  bf16q    with --ckpt (a trained model): the first --quality-files (8) VB-DMD test files
           enhanced in fp32 and in bf16 with the same seeds and the checkpoint's sampler (--quick:
           ddim, N=5), scored with wide-band PESQ and SI-SDR: bf16_pesq_diff and
           bf16_sisdr_diff_db (mean of bf16 - fp32), bf16_pesq_max_abs_diff and
           bf16_sisdr_max_abs_diff_db (largest per file). Runs with or without bf16 units (the
           rounding is the same; without them it is only slower)
  bf16parity train.py at the shipped model's size for 300 steps (--quick: 40) on generated data,
           float32 and bf16-mixed with the same seed, and float32 with another seed:
           parity_valid_loss_fp32/_bf16/_fp32_seed1, bf16_valid_loss_rel_diff and
           seed_valid_loss_rel_diff (relative to the float32 run), parity_s_per_step_fp32/_bf16.
           Only where bf16 units exist (elsewhere hours)

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
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `python benchmarks/bench.py` puts benchmarks/, not the repository, on the path
sys.path.insert(0, str(REPO / "benchmarks"))  # benchlib, also when this file is loaded by path
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


import torch  # noqa: E402

from benchlib.bf16 import QUALITY_BOUNDS, QUALITY_FILES, QUALITY_KEYS, bench_bf16, bench_bf16_quality  # noqa: E402
from benchlib.parity import PARITY_BOUND, PARITY_KEYS, bench_bf16_parity  # noqa: E402
from benchlib.memory import bench_metrics, bench_rss, rss_child  # noqa: E402
from benchlib.speed import (bench_enhancement, bench_forward, bench_train, bench_train_bf16,  # noqa: E402
                            bench_train_in_child)
from echo.util.other import git_commit, write_text_atomic  # noqa: E402

DEFAULT_OUT = REPO / "benchmarks" / "results" / "latest.json"
PARTS = ("fwd", "bf16", "train", "bf16train", "enh", "rss", "metrics", "bf16q", "bf16parity")

# Reference implementation, measured earlier on this machine: training step at batch 1 took
# 10.1 s when the ceiling conv ran at 384 GFLOP/s.
REFERENCE_TRAIN_STEP_S = 10.1
REFERENCE_CEILING_GFLOPS = 384.0
TARGETS = dict(fwd_fraction=0.77, train_speedup=1.6, rss_growth=1.3, rss_limit_mb=3000.0,
               metrics_scaling=1.7, bf16_enh_speedup=1.8)


# --------------------------------------------------------------------------------------------
# Arguments and environment
# --------------------------------------------------------------------------------------------

def build_parser():
    parser = argparse.ArgumentParser(description="Benchmark the ECHO backbone and pipeline.")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="where to measure; auto (default): CUDA if visible, else the CPU")
    parser.add_argument("--only", default=None, help=f"comma-separated parts to run ({','.join(PARTS)}; default: all)")
    parser.add_argument("--skip", default="", help="comma-separated parts to leave out (default: none)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer repetitions (2 forward rounds, 1 training step, 12 metric files) and the "
                             "few-step sampler (ddim, N=5) for bf16q")
    parser.add_argument("--threads", default="auto",
                        help="intra-op CPU threads: a number, or auto (default) = the cores not busy with "
                             "other jobs at start (1-minute load average), at least 1")
    parser.add_argument("--ckpt", default=None,
                        help="a trained checkpoint (the shipped model, or any train.py checkpoint): bf16 and enh "
                             "also measure it, and bf16q compares its bf16 and fp32 output quality (default: none)")
    parser.add_argument("--enh-steps", type=int, default=None,
                        help="sampler steps N for the enh part, fewer for a quicker check (default: the SDE's own, 20; "
                             "its echo_posterior chain takes N >= 10)")
    parser.add_argument("--quality-files", type=int, default=QUALITY_FILES,
                        help=f"VB-DMD test files bf16q enhances in both precisions (default {QUALITY_FILES})")
    parser.add_argument("--bf16-forward-probe", action="store_true",
                        help="where bf16 does not pay, also time a 64-frame bf16 forward (minutes on such CPUs)")
    parser.add_argument("--allocator", default="auto", choices=("auto", "jemalloc", "system"),
                        help="auto (default): the settings train.py and enhancement.py use here "
                             "(echo/util/allocator.py); system: the C library's defaults; jemalloc: LD_PRELOAD "
                             "libjemalloc.so.2")
    parser.add_argument("--jemalloc-lib", default=None,
                        help="path of libjemalloc.so.2 if not in a standard place (default: searched)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help=f"JSON output (default {DEFAULT_OUT})")
    parser.add_argument("--rss-child", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--train-child", action="store_true", help=argparse.SUPPRESS)
    return parser


def check_args(args):
    if args.ckpt and not Path(args.ckpt).is_file():
        raise SystemExit(f"bench: --ckpt {args.ckpt}: no such file")
    if args.enh_steps is not None and args.enh_steps < 1:
        raise SystemExit(f"bench: --enh-steps must be at least 1, got {args.enh_steps}")
    if args.quality_files < 1:
        raise SystemExit(f"bench: --quality-files must be at least 1, got {args.quality_files}")


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


def load_average():
    return [round(v, 2) for v in os.getloadavg()]


# --------------------------------------------------------------------------------------------
# Targets, report
# --------------------------------------------------------------------------------------------

PART_KEYS = {
    "fwd": ("ceiling_conv_gflops", "fwd_gflop", "fwd_s", "fwd_fraction_of_conv_ceiling"),
    "bf16": ("fwd_s_bf16", "bf16_max_abs_diff", "bf16_fwd_speedup", "ckpt_fwd_s", "ckpt_fwd_s_bf16",
             "ckpt_bf16_fwd_speedup"),
    "train": ("train_step_s",),
    "bf16train": ("shipped_train_step_s", "shipped_train_step_s_bf16", "shipped_bf16_train_speedup",
                  "paper_train_step_s", "paper_train_step_s_bf16", "paper_bf16_train_speedup"),
    "enh": ("enh_rtf", "enh_rtf_bf16", "bf16_enh_speedup", "ckpt_enh_rtf", "ckpt_enh_rtf_bf16",
            "ckpt_bf16_enh_speedup"),
    "rss": ("enh_peak_rss_mb_10s", "enh_peak_rss_mb_60s"),
    "metrics": ("metrics_files_per_s_w1", "metrics_files_per_s_w2"),
    "bf16q": QUALITY_KEYS,
    "bf16parity": PARITY_KEYS,
}
RESULT_KEYS = tuple(key for part in PARTS for key in PART_KEYS[part])


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
    speedup = r.get("bf16_enh_speedup")
    rows.append(("bf16 enhancement speed-up", speedup, f">= {TARGETS['bf16_enh_speedup']} (paper size)",
                 speedup >= TARGETS["bf16_enh_speedup"] if speedup is not None else None))
    wanted = f"|mean| <= {QUALITY_BOUNDS['pesq']} / {QUALITY_BOUNDS['si_sdr_db']} dB"
    if known("bf16_pesq_diff", "bf16_sisdr_diff_db"):
        pesq, sisdr = r["bf16_pesq_diff"], r["bf16_sisdr_diff_db"]
        rows.append(("bf16 - fp32 PESQ / SI-SDR", f"{pesq:+.4f} / {sisdr:+.3f} dB", wanted,
                     abs(pesq) <= QUALITY_BOUNDS["pesq"] and abs(sisdr) <= QUALITY_BOUNDS["si_sdr_db"]))
    else:
        rows.append(("bf16 - fp32 PESQ / SI-SDR", None, wanted, None))
    parity = r.get("bf16_valid_loss_rel_diff")
    rows.append(("bf16 training valid loss vs fp32", parity, f"|relative difference| <= {PARITY_BOUND}",
                 abs(parity) <= PARITY_BOUND if parity is not None else None))
    return rows


def print_report(results, target_rows):
    print()
    print(f"ECHO benchmark  device={results['device']}  torch={results['torch_version']}  "
          f"threads={results['threads']}  load at start={results['load_average_start']}  "
          f"commit={results['git_commit']}")
    train_allocator = results["details"].get("train", {}).get("allocator")
    print(f"  allocator: {results['allocator']}"
          + (f" (training step: {train_allocator})" if train_allocator and train_allocator != results["allocator"] else ""))
    print(f"  bf16: {results['bf16_units']}")
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
        return bench_bf16(device, args.quick, args.bf16_forward_probe, args.ckpt)
    if part == "train":
        return bench_train_in_child(device, args, threads)
    if part == "bf16train":
        return bench_train_bf16(device, args.quick)
    if part == "enh":
        return bench_enhancement(device, args.quick, args.enh_steps, args.ckpt)
    if part == "rss":
        return bench_rss(device)
    if part == "metrics":
        return bench_metrics(args.quick)
    if part == "bf16parity":
        return bench_bf16_parity(device, args.quick, threads)
    return bench_bf16_quality(device, args.quick, args.ckpt, args.quality_files)


def describe_bf16_units(device):
    from echo.util.precision import bf16_units

    has_units, reason = bf16_units(device)
    return f"{'yes' if has_units else 'no'}: {reason}"


def main(argv=None):
    args = build_parser().parse_args(argv)
    check_args(args)
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
                   bf16_units=describe_bf16_units(device), ckpt=args.ckpt,
                   git_commit=git_commit(REPO, full=True), load_average_start=load_start, quick=args.quick, parts=parts,
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
