"""Dataset tools. Each writes the layout the trainer reads:

    base_dir/{train,valid,test}/{clean,noisy}/<same relative names>.wav   (16 kHz mono)

plus ``base_dir/manifest.csv`` describing how each pair was made.

- ``python -m echo.data.synth``  synthetic speech-like signals in synthetic noise (no downloads)
- ``python -m echo.data.vbdmd``  VoiceBank-DEMAND (48 kHz official folders) -> 16 kHz layout
- ``python -m echo.data.mix``    any speech corpus + any noise corpus mixed at random SNRs

This module holds what the tools share: the split names, the output-folder policy, the
manifest writer and the job runner.
"""
import csv
import io
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tqdm import tqdm

from echo.util.audio import check_writable_folder, write_audio_atomic
from echo.util.other import write_text_atomic

SPLITS = ("train", "valid", "test")
KINDS = ("clean", "noisy")
MANIFEST_NAME = "manifest.csv"


class OutputExistsError(FileExistsError):
    """The output folder already holds data; ``str(err)`` is a complete one-line message."""


def prepare_output_dir(out_dir, overwrite: bool = False) -> Path:
    """Create ``out_dir`` or check that it is empty.

    A non-empty folder is refused unless ``overwrite``; then only what these tools write
    (the split folders and the manifest) is removed, so that no stale pair of an earlier,
    larger dataset survives next to the new one.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputExistsError(f"{out_dir}: exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise OutputExistsError(f"{out_dir}: folder is not empty; choose a new folder "
                                    "or pass --overwrite to replace the dataset in it")
        for split in SPLITS:
            shutil.rmtree(out_dir / split, ignore_errors=True)
        (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
    check_writable_folder(out_dir)  # creates it; a read-only place fails here, before any work
    return out_dir


def pair_paths(out_dir, split: str, name: str):
    """(clean path, noisy path) of the pair ``name`` (relative, with extension) in ``split``."""
    out_dir = Path(out_dir)
    return out_dir / split / "clean" / name, out_dir / split / "noisy" / name


def write_pair_atomic(paths, signals, sr, subtype="PCM_16"):
    """Write the clean and noisy file of a pair, each atomically, or neither: a lone clean file
    would break the pairing of the data set."""
    written = []
    try:
        for path, audio in zip(paths, signals):
            write_audio_atomic(path, audio, sr, subtype=subtype)
            written.append(Path(path))
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise


def write_manifest(out_dir, rows, fieldnames) -> Path:
    """Write ``rows`` (dicts) as ``out_dir/manifest.csv``, atomically."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=fieldnames, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return write_text_atomic(Path(out_dir) / MANIFEST_NAME, text.getvalue())


def read_manifest(out_dir):
    """Rows of ``out_dir/manifest.csv`` as dicts of strings."""
    with open(Path(out_dir) / MANIFEST_NAME, newline="") as handle:
        return list(csv.DictReader(handle))


def run_jobs(work, jobs, *, workers=1, chunksize=8, desc="", progress=False, failures=None,
             error_type=RuntimeError, initializer=None, initargs=()):
    """Manifest rows of ``work(job)`` for every job, in ``workers`` processes (1: here).

    ``work`` returns ``(row, None)`` or ``(None, one-line message)`` for an output that could not
    be made, so that one bad input stops neither the other jobs nor the pool. ``failures``: a
    list that receives those messages; None: the first one raises ``error_type``.
    ``initializer(*initargs)`` prepares each worker process (or this one when serial).
    """
    rows = []

    def collect(row, error):
        if error is None:
            rows.append(row)
        elif failures is None:
            raise error_type(error)
        else:
            failures.append(error)

    with tqdm(total=len(jobs), unit="pair", desc=desc, disable=not progress, file=sys.stderr) as bar:
        if workers > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(max_workers=workers, initializer=initializer, initargs=initargs) as pool:
                for outcome in pool.map(work, jobs, chunksize=chunksize):
                    collect(*outcome)
                    bar.update()
        else:
            if initializer is not None:
                initializer(*initargs)
            for job in jobs:
                collect(*work(job))
                bar.update()
    return rows


def run_tool(build_rows, expected_errors, summary):
    """The shared command-line behaviour of the dataset tools.

    ``build_rows(log, failures)`` makes the data set and returns its manifest rows; errors of
    ``expected_errors`` end the run with one line and exit status 2; files that failed alone are
    listed one per line and give exit status 1; ``summary(rows, seconds)`` is the closing line.
    """
    import time

    started = time.perf_counter()
    failures = []
    try:
        rows = build_rows(lambda text: print(text, file=sys.stderr), failures)
    except expected_errors as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for message in failures:
        print(f"error: {message}", file=sys.stderr)
    print(summary(rows, time.perf_counter() - started)
          + (f"; {len(failures)} failed and are left out" if failures else ""))
    return 1 if failures else 0
