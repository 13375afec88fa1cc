"""Reports of experiments/low_resource.py: the Markdown table, the plot and the JSON helpers.

Kept apart from the experiment's stages so that a finished run's JSON can be rendered again
without touching its training or sampling code.
"""
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stats import mean_ci95, paired_gain  # noqa: E402

METRIC_LABELS = {"pesq": "PESQ", "estoi": "ESTOI", "stoi": "STOI", "si_sdr": "SI-SDR (dB)",
                 "si_sir": "SI-SIR (dB)", "si_sar": "SI-SAR (dB)", "csig": "CSIG", "cbak": "CBAK",
                 "covl": "COVL", "ssnr": "segSNR (dB)"}
NOISY_ROW = "noisy"


def result_rows(records, metrics):
    """Table rows, the noisy input first: dicts with the label, NFE, times and statistics."""
    first = next(iter(records.values()))
    rows = [{"row": NOISY_ROW, "label": "noisy input (no enhancement)", "nfe": 0,
             "stats": {m: mean_ci95(first["scores"]["noisy"][m]) for m in metrics}, "gain": {}}]
    for row, rec in records.items():
        scores = rec["scores"]
        rows.append({"row": row, "variant": rec["variant"], "label": rec["label"], "nfe": rec["enhance"]["nfe"],
                     "sampler": rec["enhance"]["sampler"], "train_wall_s": rec["train"]["wall_s"],
                     "steps": rec["train"]["steps"], "params": rec["train"]["params"],
                     "enhance_wall_s": rec["enhance"]["wall_s"],
                     "rtf": rec["enhance"]["sampling_wall_s"] / max(rec["enhance"]["audio_s"], 1e-9),
                     "stats": {m: mean_ci95(scores["enhanced"][m]) for m in metrics},
                     "gain": {m: paired_gain(scores["enhanced"][m], scores["noisy"][m]) for m in metrics}})
    return rows


def fmt_ci(stat, digits):
    mean, half, _ = stat
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {half:.{digits}f}" if math.isfinite(half) else f"{mean:.{digits}f}"


def digits_for(metric):
    return 2 if metric.startswith("si_") or metric == "ssnr" else 3


def sampler_text(sampler):
    if not sampler:
        return "-"
    text = f"{sampler['predictor']}"
    if sampler.get("corrector", "none") != "none":
        text += f" + {sampler['corrector']} (snr {sampler['snr']:g})"
    return f"{text}, N={sampler['N']}"


def train_wall_cell(row):
    """The training time, or which row's checkpoint a one-step row reuses (trained once)."""
    if "train_wall_s" not in row:
        return "-"
    if row["row"] != row["variant"]:  # another sampler setting of a trained variant
        return f"(= `{row['variant']}`)"
    return f"{row['train_wall_s']:.0f}"


def markdown_table(rows, metrics):
    head = ["variant", *[METRIC_LABELS[m] for m in metrics], "NFE", "sampler", "train wall (s)",
            "enhance wall (s)", "RTF"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"`{r['row']}`", *[fmt_ci(r["stats"][m], digits_for(m)) for m in metrics], str(r["nfe"]),
                 sampler_text(r.get("sampler")),
                 train_wall_cell(r),
                 f"{r['enhance_wall_s']:.0f}" if "enhance_wall_s" in r else "-",
                 f"{r['rtf']:.2f}" if "rtf" in r else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def gain_table(rows, metrics):
    head = ["variant", *[f"Δ {METRIC_LABELS[m]}" for m in metrics]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows[1:]:
        cells = [f"`{r['row']}`"]
        for m in metrics:
            mean, half, _ = r["gain"][m]
            mark = " *" if math.isfinite(half) and abs(mean) > half else ""  # CI excludes 0
            cells.append(fmt_ci(r["gain"][m], digits_for(m)) + mark)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_lines(rows, metrics):
    """What the table says, computed rather than written by hand, so a rerun cannot leave a
    stale sentence behind."""
    lines = []
    for m in metrics:
        best = max(rows[1:], key=lambda r: r["stats"][m][0])
        better = [f"`{r['row']}`" for r in rows[1:] if r["gain"][m][0] - r["gain"][m][1] > 0]
        lines.append(f"- {METRIC_LABELS[m]}: best row `{best['row']}` ({fmt_ci(best['stats'][m], digits_for(m))}; "
                     f"noisy {fmt_ci(rows[0]['stats'][m], digits_for(m))}); significantly above the noisy "
                     f"input (paired CI above 0): {', '.join(better) or 'none'}.")
    return "\n".join(lines)


def variant_legend(rows):
    return "\n".join(f"- `{r['row']}`: {r['label']}" for r in rows)


def budget_text(args, n_test, params, total_wall):
    model = (f"NCSN++ nf={args.nf}, ch_mult={' '.join(map(str, args.ch_mult))}, "
             f"num_res_blocks={args.num_res_blocks}, attention at {args.attn_resolutions or 'none'} "
             f"({', '.join(f'{k}: {v:,}' for k, v in params.items())} parameters)")
    return "\n".join([
        f"- Training data: {args.n_train} pairs of {args.segment_seconds:g} s "
        f"({args.n_train * args.segment_seconds / 60:.1f} min), {Path(args.speech_dir).name} speech + "
        f"{Path(args.noise_dir).name} noise at {args.snr_min:g}..{args.snr_max:g} dB SNR "
        f"(`echo.data.mix`, seed {args.seed}); {args.n_valid} validation pairs (loss only).",
        f"- Model: {model}.",
        f"- Budget per variant: {args.max_steps} steps, batch {args.batch_size}, {args.num_frames}-frame crops, "
        f"Adam lr {args.lr:g}, EMA {args.ema_decay:g} (EMA weights enhance), seed {args.seed}, "
        f"accelerator {args.accelerator}" + (f", max_time {args.max_time}" if args.max_time else "") + ".",
        f"- Test: {n_test} pairs of `{args.test_noisy_dir}` (evenly spaced in name order); "
        "a cross-dataset condition: other speakers, other noises, other recording chain than training.",
        f"- Total wall time of the experiment (sum of its stages): {total_wall / 60:.1f} min.",
    ])


def without_nan(value):
    """A copy for JSON with NaN as null (JSON has no NaN) and tuples as lists."""
    if isinstance(value, dict):
        return {k: without_nan(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [without_nan(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def without_resume_keys(value):
    """A copy without the stages' resume keys: they repeat every command line and only matter
    inside --work_dir."""
    if isinstance(value, dict):
        return {k: without_resume_keys(v) for k, v in value.items() if k != "key"}
    return value


def write_markdown(path, args, rows, metrics, n_test, params, total_wall, command):
    notes = path.with_name(path.stem + "_notes.md")  # hand-written commentary, if any
    commentary = f"\nCommentary on this run: [{notes.name}]({notes.name}).\n" if notes.is_file() else ""
    text = f"""# Low-resource experiment: ECHO ablations and the SGMSE+ baseline

```
{command}
```

## Budget

{budget_text(args, n_test, params, total_wall)}

## Results (mean ± 95% CI over the {n_test} test files)

{markdown_table(rows, metrics)}

{summary_lines(rows, metrics)}
{commentary}
Variants:

{variant_legend(rows)}

Paired improvement over the noisy input (per-file difference, mean ± 95% CI; * = the interval
excludes zero):

{gain_table(rows, metrics)}

![metrics per variant](low_resource.png)

Notes:
- 95% CIs are Student-t intervals of the mean over files; NFE = network evaluations per file.
- Wall times are whole subprocesses (start-up and model loading included) on a shared, loaded
  machine: compare them with care. RTF = sampling time / audio duration, without the loading.
- Every variant used the same data, seed, model size and step budget; only the flags of
  `experiments/low_resource.py`'s variant table differ. Per-file scores are in `low_resource.json`.
- Metric definitions: `calc_metrics.py` (wide-band PESQ, ESTOI, SI-SDR by energy decomposition).
"""
    path.write_text(text)


def plot(path, rows, metrics, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 4.2), squeeze=False)
    names = [r["row"] for r in rows]
    x = np.arange(len(rows))
    colors = ["0.55" if r["row"] == NOISY_ROW else ("C3" if r.get("sampler", {}).get("predictor") ==
                                                    "reverse_diffusion" else "C0") for r in rows]
    for ax, metric in zip(axes[0], metrics):
        means = np.array([r["stats"][metric][0] for r in rows])
        halves = np.nan_to_num(np.array([r["stats"][metric][1] for r in rows]))
        noisy_mean, noisy_half, _ = rows[0]["stats"][metric]
        ax.axhspan(noisy_mean - noisy_half, noisy_mean + noisy_half, color="0.85", zorder=0)
        ax.axhline(noisy_mean, color="0.5", lw=1, ls="--", zorder=1)
        for xi, mean, half, color, name in zip(x, means, halves, colors, names):
            resampled = "@" in name  # hollow: another sampler setting of a checkpoint shown before
            ax.errorbar(xi, mean, yerr=half, fmt="s" if resampled else "o", color=color, capsize=4, ms=6,
                        mfc="white" if resampled else color, zorder=2)
        ax.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
        ax.set_title(METRIC_LABELS[metric])
        ax.grid(axis="y", alpha=0.3)
    # 'another N' alone would misdescribe a row that switches the predictor (echo@ddim3)
    other = "another N or predictor" if any("@" in n and "@N" not in n for n in names) else "another N"
    fig.suptitle(f"{title}\nfilled: each variant at its sampler; hollow: the same checkpoint at {other}; "
                 "red: SGMSE+; dashed line and grey band: noisy input", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
