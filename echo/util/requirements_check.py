"""Which requirements of a pip requirements file are not installed, or installed at a version the
file excludes. Standard library only (``packaging`` is used for versions when it is there), so
that it runs on a fresh machine, before anything is installed.

    python -m echo.util.requirements_check requirements.txt

Exit status 0 when every requirement is met; otherwise 1, with one line naming what is missing.
`make test` runs it to install what is missing first.
"""
import re
import sys
from importlib import metadata

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def requirements(path) -> list:
    """The requirement lines of ``path`` (comments, blank lines and pip options left out)."""
    lines = []
    with open(path) as handle:
        for line in handle:
            line = line.split("#", 1)[0].strip()
            if line and not line.startswith("-"):
                lines.append(line)
    return lines


def unmet(lines) -> list:
    """The requirements of ``lines`` that the running interpreter does not satisfy."""
    try:
        from packaging.requirements import Requirement
    except ImportError:  # a fresh interpreter: presence is all that can be checked
        Requirement = None
    problems = []
    for line in lines:
        name = _NAME.match(line).group(1)
        if Requirement is not None and Requirement(line).marker is not None \
                and not Requirement(line).marker.evaluate():
            continue  # not for this platform or Python
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            problems.append(f"{name} (not installed)")
            continue
        if Requirement is not None:
            spec = Requirement(line).specifier
            if not spec.contains(installed, prereleases=True):
                problems.append(f"{name} {installed} (wanted {spec})")
    return problems


def main(argv=None) -> int:
    paths = sys.argv[1:] if argv is None else argv
    problems = [p for path in paths for p in unmet(requirements(path))]
    if problems:
        print(f"requirements not met: {', '.join(problems)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
