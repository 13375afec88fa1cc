"""echo.util.requirements_check: what `make test` runs to install what is missing first."""
import subprocess
import sys

from conftest import REPO
from echo.util.requirements_check import main, requirements, unmet


def write(tmp_path, text):
    path = tmp_path / "requirements.txt"
    path.write_text(text)
    return path


def test_comments_options_and_blank_lines_are_not_requirements(tmp_path):
    path = write(tmp_path, "# heading\nnumpy>=1.0  # why\n\n-r other.txt\n--index-url x\npytest\n")
    assert requirements(path) == ["numpy>=1.0", "pytest"]


def test_missing_and_excluded_versions_are_named(tmp_path, capsys):
    path = write(tmp_path, "numpy>=1.0\nnumpy<1.0\nno-such-distribution-echo-test>=1\n")
    problems = unmet(requirements(path))
    assert len(problems) == 2
    assert problems[0].startswith("numpy ") and "wanted <1.0" in problems[0]
    assert problems[1] == "no-such-distribution-echo-test (not installed)"
    assert main([str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no-such-distribution-echo-test" in err[0]


def test_requirements_for_another_platform_are_skipped(tmp_path):
    assert unmet(["no-such-distribution-echo-test ; python_version < '3.0'"]) == []


def test_this_environment_meets_the_repositorys_requirements():
    """The suite runs, so what it needs is installed: the check must agree, or `make test`
    would reinstall on every run."""
    result = subprocess.run([sys.executable, "-m", "echo.util.requirements_check", "requirements.txt"], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
