"""Helpers for the command-line entry points."""
import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path


def group_values(parser: argparse.ArgumentParser, args: argparse.Namespace, titles) -> dict:
    """The parsed values of the arguments that belong to the argument groups named ``titles``."""
    values = {}
    for group in parser._action_groups:  # argparse has no public API for a group's actions
        if group.title in titles:
            for action in group._group_actions:
                if action.dest != argparse.SUPPRESS and hasattr(args, action.dest):
                    values[action.dest] = getattr(args, action.dest)
    return values


def git_commit(repo_dir=None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo_dir or Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except Exception:
        return "unknown"


def software_versions() -> dict:
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in ("torch", "lightning", "numpy", "soundfile", "pesq", "pystoi", "soxr"):
        try:
            module = __import__(name)
            versions[name] = getattr(module, "__version__", "unknown")
        except Exception:
            pass
    versions["echo_commit"] = git_commit()
    return versions


def write_run_info(folder, **fields):
    """A small JSON next to results with the seed, the arguments and the software versions."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    from echo.util.allocator import describe

    info = dict(fields, versions=software_versions(), allocator=describe())
    tmp = folder / ".run_info.json.partial"
    tmp.write_text(json.dumps(info, indent=2, default=str))
    tmp.replace(folder / "run_info.json")
    return info
