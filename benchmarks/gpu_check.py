#!/usr/bin/env python
"""Whether ECHO's CUDA kernels are right and fast on this GPU machine, in one command (<= 5 min).

    python benchmarks/gpu_check.py [--out PATH] [--only PARTS] [--skip PARTS] [--time_budget S]
                                   [--repeats N] [--batch_size B] [--frames T] [--ddp_steps S]

Parts (all by default), each a section of the JSON written to --out:

  parity  the CUDA kernels (upfirdn2d, fused_bias_act) against the PyTorch path, forward and
          backward, in float32, float16 and bfloat16, for every distinct call the paper-size
          network makes (recorded from one forward pass at T frames). Both are compared with
          the PyTorch path in float64 on the same rounded inputs: a row passes when the kernel's
          max abs difference is within the stated tolerance times max |reference|
          (float32 1e-5, float16 1e-2, bfloat16 4e-2). The kernels' build time is recorded.
  speed   the paper-size network with ECHO_OPS=cuda and ECHO_OPS=native: forward at batch 1 and
          a training step (loss, backward, Adam, EMA) at --batch_size, median of --repeats.
  bf16    the same forward and training step under bfloat16 autocast: the forward's relative
          L2 difference from float32 (passes within 0.05), finite losses, the times.
  ddp     train.py with --strategy ddp over all visible GPUs for --ddp_steps steps on generated
          data (paper-size model, --batch_size per GPU): finite losses, the step count reached.
  rtf     enhancement real-time factor (wall seconds per audio second) of a ~2.5 s file with
          the paper-size model: the default sampler at N = 20, and the few-step sampler
          (predictor "ddim", N = 3) when it is registered.

On a machine without a CUDA GPU it checks its arguments, says that there is nothing to measure
and exits with status 0 without writing anything. With a GPU the exit status is 1 when a parity
row, the bf16 comparison, the DDP run or any part failed, 0 otherwise; parts that would not fit
into --time_budget are recorded as skipped.
"""
import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `python benchmarks/gpu_check.py` puts benchmarks/, not the repository, on the path
sys.path.insert(0, str(REPO / "benchmarks"))  # gpuchecklib, also when this file is loaded by path
from echo.util.other import positive_int  # noqa: E402
from gpuchecklib import common  # noqa: E402,F401  (tests replace its model factories)
from gpuchecklib.common import (BF16_TOLERANCE, PARTS, TOLERANCES, backbone_input,  # noqa: E402,F401
                                default_out, environment)
from gpuchecklib.ddp import check_ddp  # noqa: E402
from gpuchecklib.parity import check_parity, parity_row, record_op_calls  # noqa: E402,F401
from gpuchecklib.report import summary_lines  # noqa: E402
from gpuchecklib.rtf import check_rtf  # noqa: E402
from gpuchecklib.speed import check_bf16, check_speed  # noqa: E402


def build_parser():
    parser = argparse.ArgumentParser(
        description="Check ECHO's CUDA kernels (parity, speed), bf16, DDP and enhancement speed on this GPU "
                    "machine; writes JSON. Without a GPU it says so and exits 0.")
    parser.add_argument("--out", default="auto",
                        help="JSON output; auto = benchmarks/results/gpu-check-<date>-<gpu>.json (default auto)")
    parser.add_argument("--only", default="", help=f"comma-separated parts to run ({','.join(PARTS)}; default all)")
    parser.add_argument("--skip", default="", help="comma-separated parts to leave out (default none)")
    parser.add_argument("--time_budget", type=float, default=300.0,
                        help="seconds for the whole check; parts that would start after it are skipped (default 300)")
    parser.add_argument("--repeats", type=positive_int, default=10,
                        help="timed repetitions per speed measurement, after 2 warm-up runs (default 10)")
    parser.add_argument("--batch_size", type=positive_int, default=8,
                        help="examples per GPU in the training steps, the paper's 8 (default 8)")
    parser.add_argument("--frames", type=positive_int, default=256,
                        help="STFT frames of the network input, the paper's 256; a multiple of 64 (default 256)")
    parser.add_argument("--ddp_steps", type=positive_int, default=20, help="training steps of the DDP run (default 20)")
    return parser


def check_arguments(args, parser):
    """Every problem with the arguments as one parser error (exit 2), before anything is measured."""
    def parts_of(text, flag):
        names = [p.strip() for p in text.split(",") if p.strip()]
        unknown = [p for p in names if p not in PARTS]
        if unknown:
            parser.error(f"{flag}: unknown part(s) {', '.join(unknown)}; known: {', '.join(PARTS)}")
        return names

    only, skip = parts_of(args.only, "--only"), parts_of(args.skip, "--skip")
    parts = [p for p in PARTS if (not only or p in only) and p not in skip]
    if not parts:
        parser.error("--only/--skip leave no part to run")
    if not math.isfinite(args.time_budget) or args.time_budget <= 0:
        parser.error(f"--time_budget must be a positive number of seconds, got {args.time_budget}")
    if args.frames % 64:
        parser.error(f"--frames {args.frames} is not a multiple of 64 (the network halves it 6 times)")
    if args.out != "auto":
        out = Path(args.out)
        if out.is_dir():
            parser.error(f"--out {out} is a folder; give a file name such as {out / 'gpu-check.json'}")
        folder = next((p for p in [out.absolute().parent, *out.absolute().parents] if p.exists()), None)
        if folder is None or not folder.is_dir() or not os.access(folder, os.W_OK):
            parser.error(f"--out {out}: cannot create files in {out.parent}")
    return parts


def run_checks(args, parts, device=None, env=None):
    """The parts on ``device`` (the first GPU by default); the JSON report is written to --out."""
    import torch

    started = time.perf_counter()
    deadline = started + args.time_budget
    device = torch.device("cuda", 0) if device is None else device
    env = environment() if env is None else env
    out = default_out(env) if args.out == "auto" else Path(args.out)
    report = {"environment": env, "arguments": {k: v for k, v in vars(args).items()}, "tolerances": TOLERANCES,
              "parts": {}, "part_seconds": {}}
    # a part expected to take longer than what is left is skipped rather than cut off
    expected_s = {"parity": 90, "speed": 40, "bf16": 30, "ddp": 90, "rtf": 30}
    for name in parts:
        left = deadline - time.perf_counter()
        if left < expected_s[name] * 0.5:
            report["parts"][name] = {"skipped": f"time budget: {left:.0f} s left of {args.time_budget:.0f} s"}
            continue
        print(f"gpu_check: {name} ...", file=sys.stderr, flush=True)
        part_started = time.perf_counter()
        try:
            if name == "parity":
                report["parts"][name] = check_parity(device, args.frames)
            elif name == "speed":
                report["parts"][name] = check_speed(device, args)
            elif name == "bf16":
                report["parts"][name] = check_bf16(device, args)
            elif name == "ddp":
                report["parts"][name] = check_ddp(args, deadline)
            else:
                report["parts"][name] = check_rtf(device)
        except Exception as err:  # one broken part must not lose the others' numbers
            report["parts"][name] = {"error": f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}",
                                     "passed": False}
        finally:
            report["part_seconds"][name] = round(time.perf_counter() - part_started, 1)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    failed = [name for name, part in report["parts"].items() if part.get("passed") is False]
    report["passed"] = not failed
    from echo.util.other import write_text_atomic

    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, json.dumps(report, indent=2, default=str) + "\n")
    for line in summary_lines(report):
        print(line)
    print(f"gpu_check: {'all checks passed' if not failed else 'FAILED: ' + ', '.join(failed)}; written: {out}")
    return 0 if not failed else 1


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    parts = check_arguments(args, parser)
    import torch

    if not torch.cuda.is_available():
        build = "a CUDA build" if torch.version.cuda else "a CPU-only build"
        print(f"gpu_check: no CUDA GPU is visible (torch {torch.__version__}, {build}); nothing to measure here. "
              f"Run it on a machine with a GPU; it would run: {', '.join(parts)}.")
        return 0
    return run_checks(args, parts)


if __name__ == "__main__":
    sys.exit(main())
