"""experiments/defaults.py: every variant trains with its own flags for the same budget, is scored
on the held-out split, and the table says which sampler and steps each row used."""
import argparse
import json
import sys

import pytest
import torch

from conftest import REPO, TINY_ARGS

sys.path.insert(0, str(REPO / "experiments"))
import defaults  # noqa: E402
import sampler_eval  # noqa: E402


def test_variants_train_at_equal_budget_and_are_scored_on_held_out_pairs(synth_dataset, tmp_path, monkeypatch):
    scored_on = []  # torch threads while each checkpoint is scored
    real_evaluate = sampler_eval._evaluate
    monkeypatch.setattr(sampler_eval, "_evaluate",
                        lambda *args: scored_on.append(torch.get_num_threads()) or real_evaluate(*args))
    threads = torch.get_num_threads() + 1  # not what the process has: the flag must set it
    defaults.main(["--base_dir", str(synth_dataset), "--work_dir", str(tmp_path / "work"),
                   "--results_dir", str(tmp_path / "results"), "--variants", "remix echo", "remix none",
                   "--max_time", "00:00:00:04", "--n_files", "2", "--settings", "ddim:1", "ddim:2",
                   "--threads", str(threads),
                   "--network=" + " ".join([*TINY_ARGS, "--num_frames", "16", "--batch_size", "2"])])
    assert scored_on == [threads, threads] and torch.get_num_threads() == threads - 1  # and set back
    report = json.loads((tmp_path / "results" / "defaults.json").read_text())
    rows = [(r["variant"], r["sampler"]) for r in report["rows"]]
    assert rows == [("remix echo", "ddim:1"), ("remix echo", "ddim:2"), ("remix none", "ddim:1")]
    for row in report["rows"]:
        assert row["steps"] > 0 and row["n_files"] == 2
        assert set(row["summary"]) >= {"pesq", "d_pesq", "d_si_sdr", "rtf"}
    for name, remix in (("remix_echo", "echo"), ("remix_none", "none")):
        ckpt = torch.load(tmp_path / "work" / name / "echo" / "version_0" / "checkpoints" / "last.ckpt",
                          weights_only=True)
        assert ckpt["hyper_parameters"]["remix"] == remix
    table = (tmp_path / "results" / "defaults.md").read_text()
    assert "| remix none | ddim:1 |" in table and "00:00:00:04 of training each" in table


def test_sampler_settings_parse_with_and_without_a_warm_start():
    plain, warm = sampler_eval.parse_setting("ddim:3"), sampler_eval.parse_setting("ddpm:2@0.5")
    assert (plain.name, plain.kwargs()) == ("ddim:3", {"predictor": "ddim", "N": 3})
    assert (warm.name, warm.kwargs()) == ("ddpm:2@0.5", {"predictor": "ddpm", "N": 2, "t_start": 0.5})
    for bad in ("ddim", "ddim:x", "ddim:3@", "ddim:3@late"):
        with pytest.raises(argparse.ArgumentTypeError, match="predictor:N"):
            sampler_eval.parse_setting(bad)
