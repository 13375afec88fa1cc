"""Mutation check: does the test suite fail when the method breaks?

    python tools/mutants.py                  # every mutant of tools/mutant_list.py, its own tests
    python tools/mutants.py --only remix ema # mutants whose name contains one of these words
    python tools/mutants.py --full           # the whole suite for each mutant (slow)
    python tools/mutants.py --count          # run every selected test, not just up to the first failure
    python tools/mutants.py --list

The working tree (tracked files and untracked ones git does not ignore) is copied to a temporary
folder, with ../shared linked beside it as the tests expect. Each mutant's tests first run on the
unchanged copy (they must pass, or a "caught" would mean nothing); then each mutant is applied
alone, its tests run, and the file is put back. A mutant is caught when pytest reports failures
or errors (exit status 1 or 2; a timeout counts as missed). Exit status: 0 all caught, 1 some missed,
2 a mutant no longer applies, or tests that fail unchanged left some mutants unjudged.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutant_list import MUTANTS  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


class ListRotted(Exception):
    pass


def check_applies(mutant, root=REPO):
    """The mutant's source text occurs exactly once in its file (else ListRotted)."""
    path = Path(root) / mutant.path
    if not path.is_file():
        raise ListRotted(f"{mutant.name}: {mutant.path} does not exist")
    count = path.read_text().count(mutant.old)
    if count != 1:
        raise ListRotted(f"{mutant.name}: its text occurs {count} times in {mutant.path} (must be once): "
                         f"{mutant.old!r}")
    return path


def copy_worktree(destination):
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        source = REPO / rel
        if source.is_file():  # listed but deleted in the working tree: left out
            target = destination / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def run_tests(copy, tests, workers, count, timeout):
    """(pytest exit status, failed test ids, seconds); status None on timeout."""
    command = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", "-n", str(workers),
               *([] if count else ["-x"]), *tests]
    started = time.monotonic()
    try:
        done = subprocess.run(command, cwd=copy, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, [], time.monotonic() - started
    summary = done.stdout.rpartition("short test summary info")[2]  # not the output of inner pytest runs
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", summary, flags=re.M)
    return done.returncode, failed, time.monotonic() - started


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--only", nargs="+", default=None, help="mutants whose name contains one of these words")
    parser.add_argument("--full", action="store_true", help="run the whole suite (tests/) for every mutant")
    parser.add_argument("--count", action="store_true", help="run all selected tests and count the failures")
    parser.add_argument("--workers", type=int, default=2, help="pytest-xdist workers (0: one process)")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per pytest run")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)

    mutants = [m for m in MUTANTS if not args.only or any(word in m.name for word in args.only)]
    if args.list:
        for m in mutants:
            print(f"{m.name:40s} {m.path:32s} {m.why}")
        return 0
    try:
        for m in mutants:
            check_applies(m)
    except ListRotted as err:
        print(f"error: {err}; update tools/mutant_list.py", file=sys.stderr)
        return 2

    def tests_of(mutant):
        return ("tests",) if args.full else tuple(mutant.tests)

    with tempfile.TemporaryDirectory(prefix="echo-mutants-") as tmp:
        copy = Path(tmp) / REPO.name
        copy_worktree(copy)
        if (REPO.parent / "shared").exists():
            os.symlink(REPO.parent / "shared", Path(tmp) / "shared")
        broken = set()  # test selections that fail without a mutant: their mutants cannot be judged
        for tests in dict.fromkeys(tests_of(m) for m in mutants):
            status, failed, seconds = run_tests(copy, tests, args.workers, False, args.timeout)
            if status != 0:
                broken.add(tests)
                print(f"error: the unchanged tests fail ({' '.join(tests)}): {failed or status}", file=sys.stderr)
            else:
                print(f"unchanged: {' '.join(tests)} pass ({seconds:.0f} s)", flush=True)
        missed, skipped = [], []
        for m in mutants:
            if tests_of(m) in broken:
                skipped.append(m)
                print(f"skipped {m.name:40s} its tests fail without it", flush=True)
                continue
            path = check_applies(m, copy)
            original = path.read_text()
            path.write_text(original.replace(m.old, m.new))
            try:
                status, failed, seconds = run_tests(copy, tests_of(m), args.workers, args.count, args.timeout)
            finally:
                path.write_text(original)
            if status in (1, 2):  # failures, or errors while collecting the tests
                first = failed[0] if failed else "a collection error"
                where = f"{len(failed)} failing, first {first}" if args.count else f"by {first}"
                print(f"caught  {m.name:40s} {where} ({seconds:.0f} s)", flush=True)
            else:
                verdict = "timeout" if status is None else f"pytest exit {status}"
                missed.append(m)
                print(f"MISSED  {m.name:40s} {verdict}: {m.why} ({seconds:.0f} s)", flush=True)
    judged = len(mutants) - len(skipped)
    print(f"{judged - len(missed)} of {judged} mutants caught" + (f", {len(skipped)} not judged" if skipped else ""))
    return 1 if missed else 2 if skipped else 0


if __name__ == "__main__":
    sys.exit(main())
