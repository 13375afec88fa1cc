"""experiments/low_resource.py's row handling and report helpers, without training anything."""
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "experiments"))
import low_resource  # noqa: E402
import low_resource_report  # noqa: E402


def parse(*argv):
    return low_resource.build_parser().parse_args(list(argv))


@pytest.mark.parametrize("text, expected", [
    ("echo@N20", ("echo", None, 20)),
    ("echo@N1", ("echo", None, 1)),
    ("ouve@N5", ("ouve", None, 5)),  # SGMSE+'s sampler has no lower bound on N
    ("echo@ddim3", ("echo", "ddim", 3)),
    ("no_deform@ddpm2", ("no_deform", "ddpm", 2)),
    ("dans@ddim1", ("dans", "ddim", 1)),
])
def test_parse_extra_row(text, expected):
    assert low_resource.parse_extra_row(text) == expected


@pytest.mark.parametrize("text, message", [
    ("echo", "expected VARIANT@N<steps>"),
    ("echo@20", "expected VARIANT@N<steps>"),
    ("echo@N0", "expected VARIANT@N<steps>"),
    ("echo@ddim", "expected VARIANT@N<steps>"),
    ("echo@dpm3", "expected VARIANT@N<steps>"),
    ("sgmse@N20", "expected VARIANT@N<steps>"),
    ("echo@N5", "N = 1 or N >= 10"),
    ("own@N9", "N = 1 or N >= 10"),
    ("ouve@ddim3", "needs an ECHO-SDE variant"),
    ("ouve@ddpm10", "needs an ECHO-SDE variant"),
])
def test_parse_extra_row_refusals(text, message):
    with pytest.raises(SystemExit) as err:
        low_resource.parse_extra_row(text)
    assert str(err.value).startswith("error: ") and message in str(err.value)


def test_rows_for_variant_with_predictor_rows():
    args = parse("--echo_N", "10", "--extra_rows", "echo@N20", "echo@ddim3", "echo@ddpm10", "ouve@N5")
    assert low_resource.rows_for_variant(args, "echo") == [
        ("echo", None, 10), ("echo@N1", None, 1), ("echo@N20", None, 20),
        ("echo@ddim3", "ddim", 3), ("echo@ddpm10", "ddpm", 10)]
    assert low_resource.rows_for_variant(args, "ouve") == [("ouve", None, None), ("ouve@N5", None, 5)]


def test_predictor_row_at_the_main_rows_n_is_kept():
    # same N as the variant's own row, but another predictor: a different result, not a duplicate
    args = parse("--echo_N", "10", "--no-single_step", "--extra_rows", "echo@N10", "echo@ddim10")
    assert low_resource.rows_for_variant(args, "echo") == [("echo", None, 10), ("echo@ddim10", "ddim", 10)]


def test_row_labels():
    base = low_resource.VARIANTS["echo"][0]
    assert low_resource.row_label("echo", "echo", None, 10) == base
    assert low_resource.row_label("echo", "echo@N1", None, 1) == base + ", one-step prediction"
    assert low_resource.row_label("echo", "echo@N20", None, 20) == base + ", N=20"
    assert low_resource.row_label("echo", "echo@ddim3", "ddim", 3) == base + ", DDIM N=3"
    assert low_resource.row_label("echo", "echo@ddpm3", "ddpm", 3) == base + ", DDPM N=3"


def test_enhance_argv_names_the_predictor():
    args = parse("--seed", "3")
    argv = low_resource.enhance_argv(args, "last.ckpt", "ddim", 3, "noisy", "out")
    assert " --predictor ddim --N 3" in " ".join(argv)
    # rows on the checkpoint's own predictor keep the command line (and so the --resume key) of
    # runs made before predictor rows existed
    plain = low_resource.enhance_argv(args, "last.ckpt", None, 20, "noisy", "out")
    assert "--predictor" not in plain and plain[-2:] == ["--N", "20"]
    assert low_resource.enhance_argv(args, "last.ckpt", None, None, "noisy", "out")[-2:] == ["--device", "cpu"]


def test_sampler_text_shows_the_predictor():
    sampler = {"predictor": "ddim", "corrector": "none", "N": 3, "t_eps": 0.04, "snr": 0.5, "corrector_steps": 1}
    assert low_resource_report.sampler_text(sampler) == "ddim, N=3"
    ouve = {"predictor": "reverse_diffusion", "corrector": "ald", "N": 5, "snr": 0.5}
    assert low_resource_report.sampler_text(ouve) == "reverse_diffusion + ald (snr 0.5), N=5"
    assert low_resource_report.sampler_text(None) == "-"
