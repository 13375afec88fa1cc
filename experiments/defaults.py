"""Training defaults decided at equal budget: re-mixup mode and zero-initialised offsets, each
trained for the same wall-clock time on the same data, scored on held-out pairs (speakers and
noise recordings that training never saw; never the VoiceBank-DEMAND test set).

    python experiments/defaults.py --base_dir runs/cpu_small/data --max_time 00:00:07:00 \
        --settings ddim:1 ddim:3 echo_posterior:1 echo_posterior:20

Every variant trains with ``--threads`` threads, ``--parallel`` at a time (each gets the same
share of the CPU), from the same seed. The sampler rows score the first variant's checkpoint.
Results: experiments/results/defaults.{md,json}.
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sampler_eval import evaluate, load_pairs, parse_setting, summary  # noqa: E402
from stats import fmt_ci  # noqa: E402

VARIANTS = {  # name -> train.py flags; the first is the reference the others differ from
    "remix echo": ["--remix", "echo"],
    "remix dans": ["--remix", "dans"],
    "remix none": ["--remix", "none"],
    "remix echo, zero-init offsets": ["--remix", "echo", "--zero_init_offsets"],
}


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--base_dir", required=True, help="data set with train/valid/test splits (test: held out)")
    parser.add_argument("--work_dir", default=str(REPO / "experiments" / "work" / "defaults"),
                        help="checkpoints and logs (git-ignored)")
    parser.add_argument("--results_dir", default=str(REPO / "experiments" / "results"), help="where defaults.{md,json} go")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), help="variants to train")
    parser.add_argument("--max_time", default="00:00:07:00", help="wall-clock budget of each variant, DD:HH:MM:SS")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads of each training process and of the scoring that follows")
    parser.add_argument("--parallel", type=int, default=2, help="variants trained at the same time")
    parser.add_argument("--network", type=shlex.split,
                        default="--nf 16 --ch_mult 1 2 2 2 --num_res_blocks 1 --attn_resolutions --num_frames 64 "
                                "--batch_size 4 --lr 1e-3 --ema_decay 0.99",
                        help="train.py flags shared by every variant, as one quoted string (give it as "
                             "--network='--nf 16 ...'); a small network: the budget is minutes")
    parser.add_argument("--settings", nargs="+", type=parse_setting,
                        default=[parse_setting("ddim:1"), parse_setting("ddim:3")],
                        help="sampler settings (predictor:N); every variant is scored with the first, the "
                             "reference variant with all")
    parser.add_argument("--n_files", type=int, default=24, help="held-out test pairs scored (0: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of training and sampling")
    parser.add_argument("--resume", action="store_true", help="reuse variants already trained in --work_dir")
    return parser


def train_variant(args, name):
    log_dir = Path(args.work_dir) / name.replace(" ", "_").replace(",", "")
    last = log_dir / "echo" / "version_0" / "checkpoints" / "last.ckpt"
    if args.resume and last.exists():
        return name, last
    command = [sys.executable, str(REPO / "train.py"), "--base_dir", args.base_dir, "--log_dir", str(log_dir),
               *args.network, *VARIANTS[name], "--max_time", args.max_time, "--seed", str(args.seed),
               "--num_eval_files", "0", "--num_workers", "0", "--accelerator", "cpu", "--progress_every", "100"]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / "train.log", "w") as log:
        status = subprocess.call(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    if status or not last.exists():
        raise SystemExit(f"error: training of '{name}' failed (exit {status}); see {log_dir / 'train.log'}")
    return name, last


def steps_of(ckpt_path):
    import torch
    return int(torch.load(ckpt_path, map_location="cpu", weights_only=True)["global_step"])


def markdown(rows, args):
    lines = [f"# Training defaults at equal budget ({args.max_time} of training each)", "",
             "```", "python experiments/defaults.py " + " ".join(sys.argv[1:]), "```", "",
             f"Held-out pairs: {rows[0]['n_files']} of `{args.base_dir}/test` (speakers and noise recordings "
             "that training never saw). Mean ± 95% CI; Δ: paired gain over the noisy input (* CI above 0).", "",
             "| variant | sampler | steps | PESQ | Δ PESQ | Δ ESTOI | Δ SI-SDR (dB) | level (dB) | RTF |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r["summary"]
        lines.append(f"| {r['variant']} | {r['sampler']} | {r['steps']} | {fmt_ci(*s['pesq'])} | "
                     f"{fmt_ci(*s['d_pesq'], 3, True)} | {fmt_ci(*s['d_estoi'], 3, True)} | "
                     f"{fmt_ci(*s['d_si_sdr'], 2, True)} | {s['level_db_median']:+.1f} | {s['rtf']:.3f} |")
    return lines


def main(argv=None):
    args = build_parser().parse_args(argv)
    base = Path(args.base_dir)
    pairs = load_pairs(base / "test" / "clean", base / "test" / "noisy", args.n_files)
    with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        trained = list(pool.map(lambda name: train_variant(args, name), args.variants))
    rows = []
    for index, (name, ckpt) in enumerate(trained):
        settings = args.settings if index == 0 else args.settings[:1]
        results = evaluate(ckpt, pairs, settings, args.seed, threads=args.threads)
        table = summary(results)
        for setting in settings:
            key = setting.name
            rows.append({"variant": name, "sampler": key, "steps": steps_of(ckpt), "n_files": len(pairs),
                         "summary": table[key]})
            print(f"{name:32s} {key:18s} PESQ {table[key]['pesq'][0]:.3f} (Δ {table[key]['d_pesq'][0]:+.3f}) "
                  f"SI-SDR Δ {table[key]['d_si_sdr'][0]:+.2f} dB", flush=True)
    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "defaults.md").write_text("\n".join(markdown(rows, args)) + "\n")
    (results_dir / "defaults.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1, default=str))
    print(f"wrote {results_dir / 'defaults.md'}")


if __name__ == "__main__":
    main()
