#!/usr/bin/env python
"""Which output scaling lets ECHO's clean-speech network sample well? Equal-budget comparison.

    python experiments/output_scaling.py --base_dir data/real_mix --max_steps 600

Trains one CPU-sized model per variant of ``--output_scaling`` (same data, seed, size and step
budget; train.py as a user runs it), then enhances the data set's held-out test split (speakers
and noise recordings that training never saw) with one step, the DDIM step and the posterior
chain, and scores them (experiments/sampler_eval.py). Writes output_scaling.{md,json} into
--results_dir. Build the data set first with ``python -m echo.recipes.real_data``.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from sampler_eval import markdown_table, parse_setting, summary  # noqa: E402

# variant -> (what it is, train.py flags)
VARIANTS = {
    "release": ("divide the output pyramid by t (the release)", ["--output_scaling", "release"]),
    "none": ("no division", ["--output_scaling", "none"]),
    "after": ("divide the final output by t", ["--output_scaling", "after"]),
    "edm": ("EDM preconditioning (c_skip, c_out, c_in)", ["--output_scaling", "edm"]),
    "none_filepeak": ("no division, crops normalised by the file's peak",
                      ["--output_scaling", "none", "--normalize_span", "file"]),
}
DEFAULT_SETTINGS = ["echo_posterior:1", "ddim:3", "ddim:5", "echo_posterior:10", "echo_posterior:20"]


def train_command(args, variant, log_dir):
    return [sys.executable, str(REPO / "train.py"), "--base_dir", args.base_dir, "--log_dir", str(log_dir),
            "--run_name", variant, "--seed", str(args.seed), "--nf", str(args.nf), "--ch_mult",
            *map(str, args.ch_mult), "--num_res_blocks", str(args.num_res_blocks), "--attn_resolutions",
            "--num_frames", str(args.num_frames), "--batch_size", str(args.batch_size), "--lr", str(args.lr),
            "--ema_decay", str(args.ema_decay), "--max_steps", str(args.max_steps), "--num_eval_files", "0",
            "--num_workers", "0", "--accelerator", "cpu", "--log_every_n_steps", "25", *VARIANTS[variant][1]]


def run_parallel(jobs, parallel):
    """Run (name, command, log path) jobs, ``parallel`` at a time, one thread each."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    pending, running, walls = list(jobs), [], {}
    while pending or running:
        while pending and len(running) < parallel:
            name, cmd, log = pending.pop(0)
            log.parent.mkdir(parents=True, exist_ok=True)
            running.append((name, subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env),
                            time.time(), log))
        for item in list(running):
            name, proc, started, log = item
            if proc.poll() is not None:
                running.remove(item)
                if proc.returncode:
                    raise RuntimeError(f"{name} failed, see {log}")
                walls[name] = time.time() - started
        time.sleep(2)
    return walls


def last_ckpt(log_dir, variant):
    found = sorted((Path(log_dir) / variant).glob("version_*/checkpoints/last.ckpt"))
    return found[-1] if found else None


def report(args, records, walls):
    lines = ["# Output scaling of the clean-speech network: equal-budget comparison", "", "```",
             "python " + " ".join(sys.argv), "```", "",
             f"- Data: `{args.base_dir}` built by `python -m echo.recipes.real_data` (LibriSpeech, CMU ARCTIC, "
             "SiSEC speech; ESC-50, ambient, UrbanSound8K and Speech Commands noise, plus the noise of the "
             "p287 and DNS-3 pairs as noisy - clean; SNR -5..20 dB).",
             f"- Test: {args.n_files} files of its test split, evenly spaced: speakers and noise recordings "
             "unseen in training. Not VoiceBank-DEMAND p232.",
             f"- Model: nf {args.nf}, ch_mult {' '.join(map(str, args.ch_mult))}, {args.num_res_blocks} res block(s), "
             f"no attention; {args.max_steps} steps, batch {args.batch_size}, {args.num_frames}-frame crops, lr {args.lr}, "
             f"EMA {args.ema_decay}, seed {args.seed}, 1 CPU thread per run.", "",
             "Paired gain over the noisy input (mean ± 95% CI; * = interval above zero), median output "
             "level relative to the clean reference, largest share of clipped samples of a file.", ""]
    for variant, record in records.items():
        table = summary(record["results"])
        lines += [f"## `{variant}`: {VARIANTS[variant][0]} (train {walls.get(variant, float('nan')):.0f} s)", "",
                  *markdown_table(table)]
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base_dir", required=True, help="data set from python -m echo.recipes.real_data")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), help="variants to train")
    parser.add_argument("--work_dir", default=str(REPO / "experiments" / "work" / "output_scaling"),
                        help="checkpoints and logs (git-ignored)")
    parser.add_argument("--results_dir", default=str(REPO / "experiments" / "results"), help="where the report goes")
    parser.add_argument("--seed", type=int, default=0, help="seed of training and sampling")
    parser.add_argument("--nf", type=int, default=16, help="channels of the first level")
    parser.add_argument("--ch_mult", type=int, nargs="+", default=[1, 2, 2, 2], help="channel multipliers")
    parser.add_argument("--num_res_blocks", type=int, default=1, help="residual blocks per level")
    parser.add_argument("--num_frames", type=int, default=64, help="frames per training crop")
    parser.add_argument("--batch_size", type=int, default=4, help="batch size")
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate")
    parser.add_argument("--ema_decay", type=float, default=0.99, help="EMA decay")
    parser.add_argument("--max_steps", type=int, default=600, help="training steps per variant")
    parser.add_argument("--settings", nargs="+", default=DEFAULT_SETTINGS, help="sampler settings, predictor:N")
    parser.add_argument("--n_files", type=int, default=16, help="test files, evenly spaced")
    parser.add_argument("--parallel", type=int, default=2, help="runs at a time (one thread each)")
    parser.add_argument("--resume", action="store_true", help="reuse trained variants found in --work_dir")
    args = parser.parse_args(argv)
    for text in args.settings:
        parse_setting(text)  # fail on a malformed setting before training
    work = Path(args.work_dir)
    todo = [v for v in args.variants if not (args.resume and last_ckpt(work, v))]
    walls = run_parallel([(v, train_command(args, v, work), work / f"{v}.log") for v in todo], args.parallel)
    walls_file = work / "walls.json"
    if walls_file.exists():
        walls = {**json.loads(walls_file.read_text()), **walls}
    walls_file.write_text(json.dumps(walls))
    evals = []
    for v in args.variants:
        out = work / f"{v}.eval.json"
        cmd = [sys.executable, str(Path(__file__).parent / "sampler_eval.py"), "--ckpt", str(last_ckpt(work, v)),
               "--clean_dir", str(Path(args.base_dir) / "test" / "clean"),
               "--noisy_dir", str(Path(args.base_dir) / "test" / "noisy"), "--n_files", str(args.n_files),
               "--seed", str(args.seed), "--threads", "1", "--out", str(out), "--settings", *args.settings]
        if not (args.resume and out.exists()):
            evals.append((f"eval {v}", cmd, work / f"{v}.eval.log"))
    run_parallel(evals, args.parallel)
    records = {v: json.loads((work / f"{v}.eval.json").read_text()) for v in args.variants}
    results = Path(args.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    (results / "output_scaling.md").write_text(report(args, records, walls) + "\n")
    (results / "output_scaling.json").write_text(json.dumps(
        {"args": vars(args), "train_wall_s": walls, "variants": records}, indent=1))
    print((results / "output_scaling.md").read_text())


if __name__ == "__main__":
    main()
