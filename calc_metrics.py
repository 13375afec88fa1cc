#!/usr/bin/env python
"""Score enhanced speech against clean references, next to the unprocessed (noisy) input.

    python calc_metrics.py --clean_dir data/test/clean --noisy_dir data/test/noisy \\
        --enhanced_dir enhanced/ [--workers 4] [--dnsmos]

Files are paired by their path relative to each folder (sub-folders included, extension
ignored). Writes, into --output_dir (default: the enhanced folder):
  _results.csv      one row per file: noisy_* (input) and enhanced_* metrics, notes, error
  _avg_results.txt  mean ± std per metric for the input and the enhanced files
  _run_info.json    seed, command line and package versions
and prints a table: metric | noisy | enhanced | improvement.

Metrics (see echo/util/metrics.py): wide-band PESQ, ESTOI, STOI, SI-SDR/SI-SIR/SI-SAR,
CSIG/CBAK/COVL (Hu & Loizou 2008, fed with wide-band PESQ), segmental SNR; with --dnsmos also
DNSMOS P.835 SIG/BAK/OVRL, which needs no clean reference (then --clean_dir may be left out).

A file that cannot be read or scored is reported on one line naming it; the others are still
scored and the exit status is 1. Setup errors (missing or empty folders, unpaired files, an
output folder that cannot be written) print one line and exit with 2, before any scoring.
"""
import argparse
import csv
import functools
import io
import json
import math
import os
import random
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

if __name__ == "__main__":
    # Parallelism comes from --workers processes; BLAS/OpenMP thread pools inside each process
    # would only compete for the same cores. This must happen before numpy is first imported,
    # and only when run as a script, so that importing this module changes no environment.
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from echo.util.audio import AudioError, check_writable_folder, pair_audio, read_audio  # noqa: E402
from echo.util.other import software_versions, write_text_atomic  # noqa: E402
from echo.util.metrics import (DNSMOS_METRICS, PAIR_METRICS, DnsmosUnavailable,  # noqa: E402
                               LengthMismatchError, check_dnsmos_available, dnsmos_p835,
                               score_pair, trim_to_shortest)

RESULTS_CSV = "_results.csv"
AVERAGES_TXT = "_avg_results.txt"
RUN_INFO_JSON = "_run_info.json"
MAX_PRINTED_NOTES = 20
DNSMOS_PACKAGES = ("speechmos", "onnxruntime", "librosa")


class SetupError(Exception):
    """A problem with the arguments or folders as a whole; the run cannot start."""


def build_parser():
    parser = argparse.ArgumentParser(
        description="Score enhanced speech (PESQ, ESTOI, STOI, SI-SDR/SIR/SAR, CSIG/CBAK/COVL, "
                    "segSNR, optionally DNSMOS) next to the noisy input.")
    parser.add_argument("--clean_dir", default=None,
                        help="folder of clean reference files; may be left out with --dnsmos "
                             "(then only DNSMOS is computed)")
    parser.add_argument("--noisy_dir", required=True,
                        help="folder of noisy input files (the enhancer's input)")
    parser.add_argument("--enhanced_dir", required=True, help="folder of enhanced files to score")
    parser.add_argument("--output_dir", default=None,
                        help="where the result files go (default: the enhanced folder)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="number of worker processes (default: all CPU cores, here "
                             f"{os.cpu_count() or 1})")
    parser.add_argument("--dnsmos", action="store_true",
                        help="also compute DNSMOS P.835 SIG/BAK/OVRL (needs the speechmos and "
                             "onnxruntime packages; runs offline)")
    parser.add_argument("--seed", type=int, default=0,
                        help="random seed; the metrics are deterministic, so it only makes the "
                             "interface match the other scripts (default: 0)")
    return parser


# --------------------------------------------------------------------------------------------
# Pairing
# --------------------------------------------------------------------------------------------

def find_jobs(clean_dir, noisy_dir, enhanced_dir):
    """``[(name, clean_path or None, noisy_path, enhanced_path)]`` paired by relative name."""
    for label, folder in (("--clean_dir", clean_dir), ("--noisy_dir", noisy_dir),
                          ("--enhanced_dir", enhanced_dir)):
        if folder is not None and not Path(folder).is_dir():
            raise SetupError(f"{label} {folder}: folder does not exist")
    problems = []
    if clean_dir is None:
        pairs = _pair_or_collect(noisy_dir, enhanced_dir, ("noisy", "enhanced"), problems)
        jobs = [(key, None, noisy, enhanced) for key, noisy, enhanced in pairs]
    else:
        noisy_pairs = _pair_or_collect(clean_dir, noisy_dir, ("clean", "noisy"), problems)
        enhanced_pairs = _pair_or_collect(clean_dir, enhanced_dir, ("clean", "enhanced"), problems)
        if problems:
            raise SetupError("; ".join(problems))
        noisy_of = {key: noisy for key, _, noisy in noisy_pairs}
        jobs = [(key, clean, noisy_of[key], enhanced) for key, clean, enhanced in enhanced_pairs]
    if problems:
        raise SetupError("; ".join(problems))
    if not jobs:
        raise SetupError(f"no audio files (.wav, .flac) found in {enhanced_dir}")
    return jobs


def _pair_or_collect(dir_a, dir_b, what, problems):
    """``pair_audio``'s pairs, or [] with its message added to ``problems`` (so that the files
    missing from every folder are listed together)."""
    try:
        return pair_audio(dir_a, dir_b, what=what)
    except AudioError as err:
        problems.append(str(err))
        return []


# --------------------------------------------------------------------------------------------
# Scoring one file (runs in the worker processes)
# --------------------------------------------------------------------------------------------

def _read_mono(path):
    audio, sr = read_audio(path)
    if audio.shape[0] != 1:
        raise AudioError(f"{path}: {audio.shape[0]} channels; the metrics need mono files")
    return audio[0].astype(np.float64), sr


def _read_same_rate(paths):
    signals, rates = [], []
    for path in paths:
        signal, sr = _read_mono(path)
        signals.append(signal)
        rates.append(sr)
    if len(set(rates)) > 1:
        described = ", ".join(f"{path} is {sr} Hz" for path, sr in zip(paths, rates))
        raise AudioError(f"sample rates differ: {described}")
    return signals, rates[0]


def _scores(job, use_dnsmos, dnsmos_threads, notes):
    key, clean_path, noisy_path, enhanced_path = job
    scores = {"noisy": {}, "enhanced": {}}
    if clean_path is None:
        (noisy, enhanced), sr = _read_same_rate([noisy_path, enhanced_path])
    else:
        paths = [clean_path, noisy_path, enhanced_path]
        (clean, noisy, enhanced), sr = _read_same_rate(paths)
        (clean, noisy, enhanced), note = trim_to_shortest([clean, noisy, enhanced], sr, paths)
        if note:
            notes.append(note)
        scores["noisy"].update(score_pair(clean, noisy, noisy, sr, notes=notes))
        scores["enhanced"].update(score_pair(clean, noisy, enhanced, sr, notes=notes))
    if use_dnsmos:
        scores["noisy"].update(dnsmos_p835(noisy, sr, notes=notes, threads=dnsmos_threads))
        scores["enhanced"].update(dnsmos_p835(enhanced, sr, notes=notes, threads=dnsmos_threads))
    return scores


def score_job(job, use_dnsmos=False, dnsmos_threads=0):
    """Score one ``(name, clean, noisy, enhanced)`` job. Never raises: returns
    ``{name, noisy, enhanced, notes, error}`` where ``error`` is a one-line message or None."""
    key, _, _, enhanced_path = job
    notes = []
    result = {"name": key, "noisy": {}, "enhanced": {}, "notes": notes, "error": None}
    try:
        with warnings.catch_warnings():
            # library warnings would interleave with the progress bar; the ones that matter
            # are turned into notes by the metric functions
            warnings.simplefilter("ignore")
            result.update(_scores(job, use_dnsmos, dnsmos_threads, notes))
    except (AudioError, LengthMismatchError) as err:
        result["error"] = str(err)
    except Exception as err:  # a library failure on one file must not stop the others
        detail = str(err).strip().splitlines()
        result["error"] = (f"{enhanced_path}: scoring failed ({type(err).__name__}"
                           + (f": {detail[-1]}" if detail else "") + ")")
    return result


def run_jobs(jobs, workers, use_dnsmos):
    """Score all jobs with ``workers`` processes, in order, with a progress bar."""
    workers = max(1, min(workers, len(jobs)))
    # one onnxruntime thread per process when the processes already share the cores
    score = functools.partial(score_job, use_dnsmos=use_dnsmos,
                              dnsmos_threads=1 if workers > 1 else 0)
    progress = dict(total=len(jobs), unit="file", disable=None, file=sys.stderr,
                    desc="scoring")
    if workers == 1:
        return list(tqdm(map(score, jobs), **progress))
    # a few chunks per worker: large enough to amortise the inter-process traffic, small
    # enough to balance files of different lengths
    chunksize = max(1, len(jobs) // (workers * 4))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(tqdm(pool.map(score, jobs, chunksize=chunksize), **progress))


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------

def metric_names(with_clean, use_dnsmos):
    return (PAIR_METRICS if with_clean else ()) + (DNSMOS_METRICS if use_dnsmos else ())


def summarize(values):
    """(mean, std, count) over the finite values. NaN (not computable) and ±inf (SI-SDR of a
    perfect estimate) are left out so that one file cannot dominate the average; when no value
    is finite, the mean is the common infinity (or NaN)."""
    present = [v for v in values if v is not None and not math.isnan(v)]
    finite = np.array([v for v in present if math.isfinite(v)], dtype=float)
    if len(finite) == 0:
        mean = present[0] if present and len(set(present)) == 1 else math.nan
        return mean, math.nan, 0
    return float(np.mean(finite)), float(np.std(finite)), len(finite)


def _format_value(value):
    return "" if value is None else f"{value:.6f}"


def results_csv_text(results, metrics):
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file"] + [f"noisy_{m}" for m in metrics]
                    + [f"enhanced_{m}" for m in metrics] + ["notes", "error"])
    for result in results:
        writer.writerow([result["name"]]
                        + [_format_value(result["noisy"].get(m)) for m in metrics]
                        + [_format_value(result["enhanced"].get(m)) for m in metrics]
                        + ["; ".join(result["notes"]), result["error"] or ""])
    return buffer.getvalue()


def averages(results, metrics):
    """``{metric: {"noisy": (mean, std, n), "enhanced": (mean, std, n)}}`` over scored files."""
    scored = [r for r in results if r["error"] is None]
    return {m: {side: summarize([r[side].get(m) for r in scored]) for side in ("noisy", "enhanced")}
            for m in metrics}


def averages_text(summary, n_scored, n_failed, args):
    lines = [f"# calc_metrics: {n_scored} file(s) scored, {n_failed} failed",
             f"# clean_dir: {args.clean_dir}", f"# noisy_dir: {args.noisy_dir}",
             f"# enhanced_dir: {args.enhanced_dir}",
             "# mean ± std over the files where the metric could be computed (n)",
             f"{'metric':<12} {'noisy':>26} {'enhanced':>26}"]
    for metric, sides in summary.items():
        cells = []
        for side in ("noisy", "enhanced"):
            mean, std, count = sides[side]
            cells.append(f"{mean:.4f} ± {std:.4f} (n={count})")
        lines.append(f"{metric:<12} {cells[0]:>26} {cells[1]:>26}")
    return "\n".join(lines) + "\n"


def table_text(summary):
    lines = [f"{'metric':<12} | {'noisy':>9} | {'enhanced':>9} | {'improvement':>11}",
             f"{'-' * 12}-+-{'-' * 9}-+-{'-' * 9}-+-{'-' * 11}"]
    for metric, sides in summary.items():
        noisy, enhanced = sides["noisy"][0], sides["enhanced"][0]
        lines.append(f"{metric:<12} | {noisy:>9.6f} | {enhanced:>9.6f} | {enhanced - noisy:>+11.6f}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------

def print_notes(results, limit=MAX_PRINTED_NOTES):
    """The first ``limit`` notes on stderr; all of them are in the results file."""
    notes = [f"{r['name']}: {note}" for r in results for note in r["notes"]]
    for line in notes[:limit]:
        print(f"calc_metrics: note: {line}", file=sys.stderr)
    if len(notes) > limit:
        print(f"calc_metrics: note: ... {len(notes) - limit} more note(s) in the notes column of "
              f"{RESULTS_CSV}", file=sys.stderr)


def _error(message):
    print(f"calc_metrics: error: {message}", file=sys.stderr)


def main(argv=None):
    args = build_parser().parse_args(argv)
    random.seed(args.seed)
    np.random.seed(args.seed)
    started = time.time()
    try:
        if args.workers < 1:
            raise SetupError(f"--workers must be at least 1, got {args.workers}")
        if args.clean_dir is None and not args.dnsmos:
            raise SetupError("--clean_dir is required unless --dnsmos is given "
                             "(without clean references only DNSMOS can be computed)")
        if args.dnsmos:
            try:
                check_dnsmos_available()
            except DnsmosUnavailable as err:
                raise SetupError(f"--dnsmos: {err}") from None
        jobs = find_jobs(args.clean_dir, args.noisy_dir, args.enhanced_dir)
        output_dir = Path(args.output_dir or args.enhanced_dir)
        check_writable_folder(output_dir)  # before the scoring, not after it
    except (SetupError, AudioError, OSError) as err:
        _error(err)
        return 2

    try:
        results = run_jobs(jobs, args.workers, args.dnsmos)
    except BrokenProcessPool:
        _error("a worker process died (out of memory?); rerun with fewer --workers")
        return 1
    failed = [r for r in results if r["error"] is not None]
    print_notes(results)
    for result in failed:
        _error(result["error"])

    metrics = metric_names(args.clean_dir is not None, args.dnsmos)
    summary = averages(results, metrics)
    n_scored = len(results) - len(failed)
    run_info = {"seed": args.seed, "argv": sys.argv if argv is None else ["calc_metrics.py"] + list(argv),
                "workers": max(1, min(args.workers, len(jobs))), "files": len(results),
                "failed": len(failed), "seconds": round(time.time() - started, 3),
                "versions": software_versions(DNSMOS_PACKAGES if args.dnsmos else ())}
    try:
        write_text_atomic(output_dir / RESULTS_CSV, results_csv_text(results, metrics))
        write_text_atomic(output_dir / AVERAGES_TXT, averages_text(summary, n_scored, len(failed), args))
        write_text_atomic(output_dir / RUN_INFO_JSON, json.dumps(run_info, indent=2) + "\n")
    except OSError as err:
        _error(f"cannot write the results into {output_dir}: {err}")
        return 2

    print(table_text(summary))
    print(f"{n_scored} file(s) scored, {len(failed)} failed; results in {output_dir}")
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        _error("interrupted")
        sys.exit(130)
