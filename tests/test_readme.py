"""Every command the README shows is one the project accepts: each `python ...` line parses with
the flags of the script it names (the scripts' behaviour is tested in their own files) and each
`make` target exists. A renamed flag or script then breaks this test instead of a reader's run."""
import importlib
import importlib.util
import re
import shlex

import pytest

from conftest import REPO

README = (REPO / "README.md").read_text()
MAKEFILE = (REPO / "Makefile").read_text()

# script or module -> where its argparse parser is built
PARSERS = {
    "train.py": ("train", "build_parser"),
    "enhancement.py": ("enhancement", "build_parser"),
    "calc_metrics.py": ("calc_metrics", "build_parser"),
    "demo/run_demo.py": ("demo.run_demo", "build_parser"),
    "benchmarks/bench.py": (REPO / "benchmarks" / "bench.py", "build_parser"),
    "benchmarks/gpu_check.py": (REPO / "benchmarks" / "gpu_check.py", "build_parser"),
    "benchmarks/check_cuda_build.py": (REPO / "benchmarks" / "check_cuda_build.py", "build_parser"),
    "echo.data.vbdmd": ("echo.data.vbdmd", "build_parser"),
    "echo.data.mix": ("echo.data.mix", "build_parser"),
    "echo.data.synth": ("echo.data.synth", "build_parser"),
    "echo.recipes.real_data": ("echo.recipes.real_data", "build_parser"),
    "echo.recipes.cpu_small": ("echo.recipes.cpu_small", "build_parser"),
    "echo.recipes.cpu_mix": ("echo.recipes.cpu_mix", "build_parser"),
    "experiments/heldout_mixtures.py": (REPO / "experiments" / "heldout_mixtures.py", "build_parser"),
    "echo.pretrained": ("echo.pretrained", "build_parser"),
    "experiments/compare.py": (REPO / "experiments" / "compare.py", "build_parser"),
    "experiments/paired.py": (REPO / "experiments" / "paired.py", "build_parser"),
    "experiments/defaults.py": (REPO / "experiments" / "defaults.py", "build_parser"),
    "experiments/high_band.py": (REPO / "experiments" / "high_band.py", "build_parser"),
    "tools/mutants.py": (REPO / "tools" / "mutants.py", "build_parser"),
}


def readme_commands():
    """Commands of the fenced shell blocks (continuation lines joined, comments dropped) and of
    inline code spans that start with `python` or `make`."""
    commands = []
    for block in re.findall(r"```(?:bash|sh)\n(.*?)```", README, flags=re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                commands.append(line)
    for span in re.findall(r"(?<!`)`([^`]+)`(?!`)", README):
        span = " ".join(span.split())
        if span.startswith(("python ", "make ")):
            commands.append(span)
    return commands


def load_parser(target):
    where, name = PARSERS[target]
    if isinstance(where, str):
        module = importlib.import_module(where)
    else:
        spec = importlib.util.spec_from_file_location(f"readme_{where.stem}", where)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return getattr(module, name)


COMMANDS = readme_commands()
PYTHON_COMMANDS = [c for c in COMMANDS if c.startswith("python ")]
MAKE_COMMANDS = [c for c in COMMANDS if c.startswith("make ")]


def test_the_readme_shows_the_main_commands():
    shown = " ".join(COMMANDS)
    for command in ("make demo", "make test", "python train.py", "python enhancement.py", "python calc_metrics.py",
                    "python -m echo.data.vbdmd", "python -m echo.data.mix", "make bench"):
        assert command in shown, f"README lost `{command}`"
    assert README.index("make demo") < README.index("## Installing"), "the quickstart must come first"


@pytest.mark.parametrize("command", PYTHON_COMMANDS)
def test_python_command_parses(command, capsys):
    words = shlex.split(command)[1:]
    if words[0] == "-m":
        target, arguments = words[1], words[2:]
    else:
        target, arguments = words[0], words[1:]
    assert target in PARSERS, f"README runs {target}, which this test does not know"
    build = load_parser(target)
    parser = build(arguments) if target == "train.py" else build()  # train.py's flags depend on --sde
    if "--help" in arguments:
        with pytest.raises(SystemExit) as stop:
            parser.parse_args(arguments)
        assert stop.value.code == 0 and "--" in capsys.readouterr().out
        return
    try:
        parser.parse_args(arguments)
    except SystemExit as stop:
        pytest.fail(f"`{command}` is refused by {target}: {capsys.readouterr().err.strip()} (exit {stop.code})")


@pytest.mark.parametrize("command", MAKE_COMMANDS)
def test_make_target_exists(command):
    for target in shlex.split(command)[1:]:
        assert re.search(rf"^{re.escape(target)}:", MAKEFILE, flags=re.MULTILINE), f"no make target {target}"
