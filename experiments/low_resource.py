#!/usr/bin/env python
"""Low-resource comparison of ECHO's ablations and the SGMSE+ baseline on real speech.

    python experiments/low_resource.py --variants echo dans own none no_deform ouve --max_steps 300

Builds a small training set from real speech and real noise recordings (echo.data.mix), trains
every variant with the same seed, data, model size and step budget (train.py), enhances a
held-out real test set from another corpus (enhancement.py) and scores it (calc_metrics.py).
Every stage runs as a subprocess of the repository's own scripts, so the experiment measures
exactly what a user would get from them. Writes into --results_dir:

  low_resource.md    the command, the budget and a table of mean +- 95% CI per metric
  low_resource.png   the same metrics per variant with CI error bars
  low_resource.json  the configuration, every per-file score and the timings

and links low_resource_notes.md (hand-written commentary) when that file exists. Scratch files
(data, checkpoints, enhanced audio, logs) go to --work_dir; with --resume, stages whose command
line and inputs are unchanged are reused, so --extra_rows echo@N20 echo@ddim3 adds sampler
settings to a finished run without training again.

The defaults are a CPU-sized run (a tiny network, a few hundred steps); the paper-sized
version is the same script with larger flags, e.g. --nf 128 --ch_mult 1 1 2 2 2 2 2
--num_res_blocks 2 --attn_resolutions 16 --num_frames 256 --batch_size 8 --lr 1e-4
--ema_decay 0.999 --max_steps 100000 --accelerator gpu --devices 1.
"""
import argparse
import csv
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from low_resource_report import (METRIC_LABELS, plot, result_rows, without_nan,  # noqa: E402
                                 without_resume_keys, write_markdown)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SCRIPT = Path(__file__).resolve().relative_to(REPO)

# variant name -> (label used in the results, train.py flags that make the variant)
VARIANTS = {
    "echo": ("ECHO (re-mixup: beta-blend of own + bank noise)", ["--remix", "echo"]),
    "dans": ("DANS-style re-mixup (bank noise only)", ["--remix", "dans"]),
    "own": ("own noise only (no re-mixup)", ["--remix", "own"]),
    "none": ("no real-noise term (Gaussian only)", ["--remix", "none"]),
    "no_deform": ("ECHO with plain NCSN++ (--no-deform)", ["--remix", "echo", "--no-deform"]),
    # SGMSE+ as published: OUVE score matching on the plain (non-deformable) NCSN++, so that
    # ouve vs no_deform isolates the forward process and the loss
    "ouve": ("SGMSE+ (OUVE score matching, plain NCSN++)", ["--sde", "ouve", "--no-deform"]),
}
# --extra_rows forms that name an enhancement.py --predictor (-> its label in the results); they
# step over the continuous ECHO marginal, so any N >= 1 works but only ECHO-SDE checkpoints qualify
ROW_PREDICTORS = {"ddim": "DDIM", "ddpm": "DDPM"}


class StageFailed(RuntimeError):
    """A subprocess stage exited with an error; the message names its log."""


# --------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------

def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    exp = parser.add_argument_group("experiment")
    exp.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                     help="variants to train and compare (each maps to train.py flags)")
    exp.add_argument("--seed", type=int, default=0, help="seed of the data mixing, of training and of sampling")
    exp.add_argument("--work_dir", default=str(REPO / "experiments" / "work"),
                     help="scratch folder for data, checkpoints, enhanced audio and logs (git-ignored)")
    exp.add_argument("--results_dir", default=str(REPO / "experiments" / "results"),
                     help="where low_resource.{md,png,json} go")
    exp.add_argument("--resume", action="store_true",
                     help="reuse the stages already finished in --work_dir (default: start from scratch)")
    exp.add_argument("--cpu_threads", type=int, default=0,
                     help="torch/BLAS threads per subprocess (0: leave the environment alone); on a "
                          "loaded CPU one thread is often faster than several competing ones")

    data = parser.add_argument_group("training data (real speech + real noise, echo.data.mix)")
    data.add_argument("--speech_dir", default=str(SHARED_DATA / "speech" / "librispeech_train-clean-100"),
                      help="clean speech recordings for training")
    data.add_argument("--noise_dir", default=str(SHARED_DATA / "noise" / "speech_commands_bg"),
                      help="noise recordings for training")
    data.add_argument("--n_train", type=int, default=100, help="training pairs (small: a low-resource setting)")
    data.add_argument("--n_valid", type=int, default=4, help="validation pairs (validation loss only)")
    data.add_argument("--segment_seconds", type=float, default=4.0,
                      help="length of each mixed pair in seconds (0: whole utterances)")
    data.add_argument("--snr_min", type=float, default=0.0, help="lowest training SNR in dB")
    data.add_argument("--snr_max", type=float, default=20.0, help="highest training SNR in dB")

    test = parser.add_argument_group("test data (held out, real, another corpus)")
    test.add_argument("--test_clean_dir", default=str(SHARED_DATA / "vbdmd_test" / "clean"),
                      help="clean references of the test set")
    test.add_argument("--test_noisy_dir", default=str(SHARED_DATA / "vbdmd_test" / "noisy"),
                      help="noisy inputs of the test set, paired with the clean files by name")
    test.add_argument("--n_test", type=int, default=0,
                      help="use this many test pairs, evenly spaced in name order (0: all)")
    test.add_argument("--metrics", nargs="+", default=["pesq", "estoi", "si_sdr"], choices=list(METRIC_LABELS),
                      help="calc_metrics.py metrics reported in the table and the plot")
    test.add_argument("--score_workers", type=int, default=0,
                      help="calc_metrics.py worker processes (0: its default, all cores)")

    model = parser.add_argument_group("model and training budget (the same for every variant)")
    model.add_argument("--nf", type=int, default=16, help="channels of the first U-Net level")
    model.add_argument("--ch_mult", type=int, nargs="+", default=[1, 2, 2, 2], help="channel multiplier per level")
    model.add_argument("--num_res_blocks", type=int, default=1, help="residual blocks per level")
    model.add_argument("--attn_resolutions", type=int, nargs="*", default=[],
                       help="frequency sizes with self-attention (none by default: tiny model)")
    model.add_argument("--num_frames", type=int, default=32, help="STFT frames per training crop")
    model.add_argument("--batch_size", type=int, default=4, help="examples per batch and device")
    model.add_argument("--lr", type=float, default=1e-3,
                       help="Adam learning rate (higher than the paper's 1e-4 to suit a short run)")
    model.add_argument("--ema_decay", type=float, default=0.99,
                       help="weight EMA decay (lower than the paper's 0.999 to suit a short run)")
    model.add_argument("--max_steps", type=int, default=300, help="optimizer steps per variant")
    model.add_argument("--max_time", default=None,
                       help="optional wall-clock cap per variant, DD:HH:MM:SS (makes results load-dependent)")
    model.add_argument("--accelerator", default="cpu", help="train.py --accelerator (cpu, gpu, auto)")
    model.add_argument("--devices", default="1", help="train.py --devices")

    sampler = parser.add_argument_group("sampling")
    sampler.add_argument("--echo_N", type=int, default=None,
                         help="reverse steps of the ECHO sampler (default: the checkpoint's, 20; "
                              "the discrete chain needs N = 1 or N >= 10)")
    sampler.add_argument("--ouve_N", type=int, default=None,
                         help="reverse steps of the SGMSE+ sampler (default: the checkpoint's, 30; "
                              "with the Langevin corrector NFE = 2 N)")
    sampler.add_argument("--single_step", action=argparse.BooleanOptionalAction, default=True,
                         help="also enhance with N = 1 (one network evaluation: the clean-speech "
                              "prediction alone) for every ECHO-SDE variant, as extra rows")
    sampler.add_argument("--extra_rows", nargs="*", default=[], metavar="VARIANT@<N|ddim|ddpm><steps>",
                         help="more rows enhanced with a trained variant's checkpoint (no extra training): "
                              "VARIANT@N<steps> keeps the checkpoint's sampler at another N, e.g. echo@N20 "
                              "(ECHO's chain: N = 1 or N >= 10); VARIANT@ddim<steps> and VARIANT@ddpm<steps> "
                              "switch to enhancement.py --predictor ddim (deterministic) or ddpm (stochastic) "
                              "at any N >= 1, e.g. echo@ddim3 (ECHO-SDE variants only, not ouve)")
    return parser


def check_args(args):
    if args.echo_N is not None and 1 < args.echo_N < 10:
        sys.exit("error: --echo_N must be 1 or >= 10 (the discrete chain needs beta_max / N <= 1)")
    for label, folder in (("--speech_dir", args.speech_dir), ("--noise_dir", args.noise_dir),
                          ("--test_clean_dir", args.test_clean_dir), ("--test_noisy_dir", args.test_noisy_dir)):
        if not Path(folder).is_dir():
            sys.exit(f"error: {label} {folder}: folder does not exist")
    if args.n_train < 1 or args.n_valid < 1 or args.max_steps < 1:
        sys.exit("error: --n_train, --n_valid and --max_steps must be at least 1")
    for row in args.extra_rows:
        variant, _, _ = parse_extra_row(row)
        if variant not in args.variants:
            sys.exit(f"error: --extra_rows {row}: '{variant}' is not among --variants")


def parse_extra_row(text):
    """'echo@N20' -> ('echo', None, 20): the checkpoint's own predictor; 'echo@ddim3' ->
    ('echo', 'ddim', 3)."""
    variant, _, setting = text.partition("@")
    match = re.fullmatch(rf"(N|{'|'.join(ROW_PREDICTORS)})([0-9]+)", setting)
    if variant not in VARIANTS or not match or int(match[2]) < 1:
        sys.exit(f"error: --extra_rows {text}: expected VARIANT@N<steps>, VARIANT@ddim<steps> or "
                 "VARIANT@ddpm<steps>, e.g. echo@N20 or echo@ddim3")
    predictor = None if match[1] == "N" else match[1]
    n_steps = int(match[2])
    if predictor is None and sde_of(variant) == "echo" and 1 < n_steps < 10:
        sys.exit(f"error: --extra_rows {text}: the ECHO chain needs N = 1 or N >= 10 "
                 f"(or {variant}@ddim{n_steps} for a few-step sampler)")
    if predictor is not None and sde_of(variant) != "echo":
        sys.exit(f"error: --extra_rows {text}: the {predictor} predictor needs an ECHO-SDE variant; "
                 f"'{variant}' is trained with --sde {sde_of(variant)} (use {variant}@N<steps>)")
    return variant, predictor, n_steps


def row_name(variant, predictor, n_steps):
    return f"{variant}@{predictor or 'N'}{n_steps}"


def sde_of(variant):
    flags = VARIANTS[variant][1]
    return flags[flags.index("--sde") + 1] if "--sde" in flags else "echo"


# --------------------------------------------------------------------------------------------
# Running the repository's scripts
# --------------------------------------------------------------------------------------------

def child_env(cpu_threads):
    env = dict(os.environ)
    if cpu_threads > 0:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[name] = str(cpu_threads)
    return env


def run_stage(name, argv, log_path, env):
    """Run ``python argv...`` from the repository root, its output into ``log_path``;
    returns the wall time in seconds."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, *argv]
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {shlex.join(argv)}", flush=True)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        log.write(shlex.join(command) + "\n\n")
        log.flush()
        code = subprocess.run(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - start
    if code != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
        raise StageFailed(f"{name} failed (exit {code}); log {log_path}:\n  " + "\n  ".join(tail))
    print(f"    done in {wall:.0f} s", flush=True)
    return wall


def cached_stage(record_path, resume, key, run):
    """``run()``'s record (a dict), saved as JSON with ``key`` (what the stage depends on: its
    command line and its inputs' keys). With --resume a saved record is reused when its key is
    the same, so a changed flag redoes the stages it affects and only those."""
    if resume and record_path.is_file():
        record = json.loads(record_path.read_text())
        if record.get("key") == key:
            print(f"    reusing {record_path.name}", flush=True)
            return record
    record = dict(run(), key=key)
    record_path.parent.mkdir(parents=True, exist_ok=True)
    record_path.write_text(json.dumps(without_nan(record), indent=2))
    return record


# --------------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------------

def mix_argv(args, data_dir):
    return ["-m", "echo.data.mix", "--speech_dir", args.speech_dir, "--noise_dir", args.noise_dir,
            "--out_dir", str(data_dir), "--n_train", str(args.n_train), "--n_valid", str(args.n_valid),
            "--n_test", "0", "--segment_seconds", str(args.segment_seconds), "--snr_min", str(args.snr_min),
            "--snr_max", str(args.snr_max), "--seed", str(args.seed), "--quiet"]


def make_training_set(args, work, env):
    data_dir = work / "data"
    argv = mix_argv(args, data_dir)

    def run():
        if data_dir.exists():
            shutil.rmtree(data_dir)
        wall = run_stage("mix training data", argv, work / "logs" / "mix.log", env)
        return {"data_dir": str(data_dir), "wall_s": wall}

    return cached_stage(work / "records" / "data.json", args.resume, {"argv": argv}, run)


def evenly_spaced(items, count):
    """``count`` items spread over the whole (sorted) list, first and last included, so that a
    subset of a set sorted by speaker or condition still covers all of it."""
    if count <= 0 or count >= len(items):
        return list(items)
    return [items[int(round(i))] for i in np.linspace(0, len(items) - 1, count)]


def make_test_subset(args, work):
    """Copy the chosen test pairs into work/test/{clean,noisy} (enhancement.py and
    calc_metrics.py work on whole folders)."""
    clean_names = sorted(p.name for p in Path(args.test_clean_dir).iterdir() if p.suffix in (".wav", ".flac"))
    missing = [n for n in clean_names if not (Path(args.test_noisy_dir) / n).is_file()]
    if missing:
        sys.exit(f"error: no noisy partner in {args.test_noisy_dir} for {', '.join(missing[:3])}")
    chosen = evenly_spaced(clean_names, args.n_test)
    test_dir = work / "test"
    for side, source in (("clean", args.test_clean_dir), ("noisy", args.test_noisy_dir)):
        folder = test_dir / side
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        for name in chosen:
            shutil.copy(Path(source) / name, folder / name)
    return test_dir / "clean", test_dir / "noisy", chosen


def train_argv(args, variant, data_dir, log_dir):
    argv = ["train.py", "--base_dir", str(data_dir), "--log_dir", str(log_dir), "--run_name", variant,
            "--nf", str(args.nf), "--ch_mult", *map(str, args.ch_mult), "--num_res_blocks", str(args.num_res_blocks),
            "--attn_resolutions", *map(str, args.attn_resolutions), "--num_frames", str(args.num_frames),
            "--batch_size", str(args.batch_size), "--lr", str(args.lr), "--ema_decay", str(args.ema_decay),
            "--max_steps", str(args.max_steps), "--seed", str(args.seed), "--accelerator", args.accelerator,
            "--devices", str(args.devices), "--num_workers", "0",
            # validation enhances nothing (that is what the test stage is for): loss only
            "--num_eval_files", "0", "--logger", "csv", "--log_every_n_steps", "10"]
    if args.max_time:
        argv += ["--max_time", args.max_time]
    return argv + VARIANTS[variant][1]


def parameter_count(ckpt_path):
    import torch
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)["state_dict"]
    return int(sum(v.numel() for k, v in state.items() if k.startswith("dnn.")))


def train_variant(args, variant, data, work, env):
    log_dir = work / "runs" / variant
    argv = train_argv(args, variant, data["data_dir"], log_dir)

    def run():
        if log_dir.exists():
            shutil.rmtree(log_dir)
        wall = run_stage(f"train {variant}", argv, work / "logs" / f"train_{variant}.log", env)
        ckpt = sorted(log_dir.glob(f"{variant}/version_*/checkpoints/last.ckpt"))[-1]
        import torch
        steps = int(torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"])
        return {"ckpt": str(ckpt), "wall_s": wall, "steps": steps, "params": parameter_count(ckpt)}

    key = {"argv": argv, "data": data["key"]}
    return cached_stage(work / "records" / f"train_{variant}.json", args.resume, key, run)


def enhancement_device(accelerator):
    return {"gpu": "cuda", "cuda": "cuda", "cpu": "cpu", "mps": "mps"}.get(accelerator, "auto")


def enhance_argv(args, ckpt, predictor, n_steps, noisy_dir, out_dir):
    """The checkpoint's own sampler settings except the predictor and N, where given (None:
    the checkpoint's)."""
    argv = ["enhancement.py", "--test_dir", str(noisy_dir), "--enhanced_dir", str(out_dir), "--ckpt", ckpt,
            "--seed", str(args.seed), "--device", enhancement_device(args.accelerator)]
    argv += ["--predictor", predictor] if predictor is not None else []
    return argv + (["--N", str(n_steps)] if n_steps is not None else [])


def enhance(args, row, trained, predictor, n_steps, noisy_dir, test_files, work, env):
    out_dir = work / "enhanced" / row
    argv = enhance_argv(args, trained["ckpt"], predictor, n_steps, noisy_dir, out_dir)

    def run():
        if out_dir.exists():
            shutil.rmtree(out_dir)
        wall = run_stage(f"enhance {row}", argv, work / "logs" / f"enhance_{row}.log", env)
        info = json.loads((out_dir / "run_info.json").read_text())
        return {"enhanced_dir": str(out_dir), "wall_s": wall, "sampler": info["sampler"],
                "nfe": info["nfe_per_sampling_pass"], "sampling_wall_s": info["wall_seconds"],
                "audio_s": info["audio_seconds"]}

    # argv names the predictor and N, so a record of another sampler setting is never reused
    key = {"argv": argv, "train": trained["key"], "test_files": test_files}
    return cached_stage(work / "records" / f"enhance_{row}.json", args.resume, key, run)


def score_argv(args, enhanced_dir, clean_dir, noisy_dir, out_dir):
    argv = ["calc_metrics.py", "--clean_dir", str(clean_dir), "--noisy_dir", str(noisy_dir),
            "--enhanced_dir", str(enhanced_dir), "--output_dir", str(out_dir), "--seed", str(args.seed)]
    return argv + (["--workers", str(args.score_workers)] if args.score_workers > 0 else [])


def score(args, row, enhanced, clean_dir, noisy_dir, work, env):
    """Per-file scores of the enhanced files and of the noisy input, from calc_metrics.py."""
    out_dir = work / "scores" / row
    argv = score_argv(args, enhanced["enhanced_dir"], clean_dir, noisy_dir, out_dir)

    def run():
        wall = run_stage(f"score {row}", argv, work / "logs" / f"score_{row}.log", env)
        return {"wall_s": wall, **read_scores(out_dir / "_results.csv")}

    key = {"argv": argv, "enhance": enhanced["key"]}
    return cached_stage(work / "records" / f"score_{row}.json", args.resume, key, run)


def read_scores(results_csv):
    """``{"files": [...], "noisy": {metric: [...]}, "enhanced": {metric: [...]}}`` from
    calc_metrics.py's per-file CSV (empty cells, i.e. not computable, become NaN)."""
    with open(results_csv) as handle:
        rows = list(csv.DictReader(handle))
    if any(r["error"] for r in rows):
        raise StageFailed(f"{results_csv}: some files could not be scored")
    metrics = [c[len("enhanced_"):] for c in rows[0] if c.startswith("enhanced_")]
    as_float = lambda text: float(text) if text not in ("", None) else math.nan  # noqa: E731
    return {"files": [r["file"] for r in rows],
            "noisy": {m: [as_float(r[f"noisy_{m}"]) for r in rows] for m in metrics},
            "enhanced": {m: [as_float(r[f"enhanced_{m}"]) for r in rows] for m in metrics}}


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------

def rows_for_variant(args, variant):
    """(row name, predictor, N) triples to enhance with: the checkpoint's sampler at the chosen N
    (None: the checkpoint's predictor or N), the one-step prediction for ECHO-SDE variants when
    --single_step, and the --extra_rows of this variant."""
    sde = sde_of(variant)
    n_steps = args.ouve_N if sde == "ouve" else args.echo_N
    rows = {variant: (None, n_steps)}
    if args.single_step and sde == "echo" and n_steps != 1:
        rows[row_name(variant, None, 1)] = (None, 1)
    for text in args.extra_rows:
        extra_variant, predictor, extra_steps = parse_extra_row(text)
        if extra_variant == variant and (predictor is not None or extra_steps != n_steps):
            rows[row_name(variant, predictor, extra_steps)] = (predictor, extra_steps)
    return [(row, predictor, steps) for row, (predictor, steps) in rows.items()]


def row_label(variant, row, predictor, n_steps):
    if row == variant:
        return VARIANTS[variant][0]
    if predictor is not None:
        return VARIANTS[variant][0] + f", {ROW_PREDICTORS[predictor]} N={n_steps}"
    return VARIANTS[variant][0] + (", one-step prediction" if n_steps == 1 else f", N={n_steps}")


def main(argv=None):
    args = build_parser().parse_args(argv)
    check_args(args)
    command = shlex.join(["python", str(SCRIPT), *(sys.argv[1:] if argv is None else argv)])
    work, results_dir = Path(args.work_dir), Path(args.results_dir)
    work.mkdir(parents=True, exist_ok=True)
    results_dir.mkdir(parents=True, exist_ok=True)
    env = child_env(args.cpu_threads)
    started = time.perf_counter()

    try:
        data = make_training_set(args, work, env)
        clean_dir, noisy_dir, test_files = make_test_subset(args, work)
        records, params, stage_walls = {}, {}, [data["wall_s"]]
        for variant in args.variants:
            trained = train_variant(args, variant, data, work, env)
            stage_walls.append(trained["wall_s"])
            params["plain" if "--no-deform" in VARIANTS[variant][1] else "deformable"] = trained["params"]
            for row, predictor, n_steps in rows_for_variant(args, variant):
                enhanced = enhance(args, row, trained, predictor, n_steps, noisy_dir, test_files, work, env)
                scores = score(args, row, enhanced, clean_dir, noisy_dir, work, env)
                stage_walls += [enhanced["wall_s"], scores["wall_s"]]
                records[row] = {"variant": variant, "label": row_label(variant, row, predictor, n_steps),
                                "train_flags": VARIANTS[variant][1], "train": trained, "enhance": enhanced,
                                "scores": scores}
    except StageFailed as err:
        sys.exit(f"error: {err}")

    # the sum over the stages, so that a run finished with --resume reports the whole cost
    total_wall = sum(stage_walls)
    rows = result_rows(records, args.metrics)
    write_markdown(results_dir / "low_resource.md", args, rows, args.metrics, len(test_files), params,
                   total_wall, command)
    plot(results_dir / "low_resource.png", rows, args.metrics,
         f"{args.max_steps} steps, n_train {args.n_train}, {len(test_files)} test files (mean ± 95% CI)")
    raw = {"command": command, "args": vars(args), "test_files": test_files, "stage_wall_sum_s": total_wall,
           "this_invocation_wall_s": time.perf_counter() - started,
           "data": data, "rows": rows, "records": without_resume_keys(records)}
    (results_dir / "low_resource.json").write_text(json.dumps(without_nan(raw), indent=1))
    print((results_dir / "low_resource.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
