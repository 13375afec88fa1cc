"""Helpers for the command-line entry points."""
import argparse
import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from echo.util.audio import staged_file


def group_values(parser: argparse.ArgumentParser, args: argparse.Namespace, titles) -> dict:
    """The parsed values of the arguments that belong to the argument groups named ``titles``."""
    values = {}
    for group in parser._action_groups:  # argparse has no public API for a group's actions
        if group.title in titles:
            for action in group._group_actions:
                if action.dest != argparse.SUPPRESS and hasattr(args, action.dest):
                    values[action.dest] = getattr(args, action.dest)
    return values


def git_commit(repo_dir=None, full=False):
    """The commit checked out in ``repo_dir`` (default: this code's): the short hash, or
    "unknown" outside a git checkout; ``full``: the whole hash with "+dirty" when tracked files
    differ from it, or None outside a checkout (benchmark results record which code made them)."""
    def run(*cmd):
        try:
            out = subprocess.run(["git", *cmd], cwd=repo_dir or Path(__file__).parent, capture_output=True,
                                 text=True, timeout=5)
        except Exception:
            return None
        return out.stdout.strip() or None if out.returncode == 0 else None

    if not full:
        return run("rev-parse", "--short", "HEAD") or "unknown"
    commit = run("rev-parse", "HEAD")
    dirty = run("status", "--porcelain", "--untracked-files=no")
    return None if commit is None else commit + ("+dirty" if dirty else "")


VERSIONED_PACKAGES = ("torch", "lightning", "numpy", "scipy", "soundfile", "soxr", "pesq", "pystoi", "tqdm")


def software_versions(extra=()) -> dict:
    """Versions of Python, the packages results depend on (``extra`` too) and this code.
    Read from the installed metadata, so nothing is imported for it."""
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in VERSIONED_PACKAGES + tuple(extra):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["echo_commit"] = git_commit()
    return versions


def write_text_atomic(path, text: str) -> Path:
    """Write ``text`` so that ``path`` is either the old file or the complete new one."""
    with staged_file(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)
    return Path(path)


def write_run_info(folder, **fields):
    """A small JSON next to results with the seed, the arguments and the software versions."""
    from echo.util.allocator import describe

    info = dict(fields, versions=software_versions(), allocator=describe())
    write_text_atomic(Path(folder) / "run_info.json", json.dumps(info, indent=2, default=str))
    return info


def positive_int(text):
    """argparse type: a whole number >= 1, with a one-line message otherwise."""
    import argparse
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not >= 1")
    return value

