"""Figures of a demo run: spectrograms of a few test files and the metric comparison.

    python -m demo.plots --data_dir demo_out/data --enhanced_dir demo_out/enhanced \\
        --results_dir demo_out/results

Both figures are drawn with the non-interactive Agg backend, so they work on a machine
without a display.
"""
import argparse
import csv
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from echo.util.audio import list_audio, read_audio  # noqa: E402

SPECTROGRAMS_PNG = "spectrograms.png"
METRICS_PNG = "metrics.png"
RESULTS_CSV = "_results.csv"

# Spectrogram display: a 32 ms window at 16 kHz shows both harmonics and onsets clearly.
DISPLAY_N_FFT = 512
DISPLAY_HOP = 128
DYNAMIC_RANGE_DB = 80.0

# Metrics shown in the comparison figure, in this order, with their readable names and
# whether higher is better (all of these are).
METRIC_LABELS = {
    "pesq": "PESQ (wb)", "estoi": "ESTOI", "stoi": "STOI", "si_sdr": "SI-SDR [dB]",
    "si_sir": "SI-SIR [dB]", "si_sar": "SI-SAR [dB]", "csig": "CSIG", "cbak": "CBAK",
    "covl": "COVL", "ssnr": "segSNR [dB]",
}
NOISY_COLOR = "#9e9e9e"
ENHANCED_COLOR = "#1f77b4"


# --------------------------------------------------------------------------------------------
# Reading the results
# --------------------------------------------------------------------------------------------

def read_results(results_csv):
    """Rows of calc_metrics' ``_results.csv`` that were scored, values as floats."""
    rows = []
    with open(results_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get("error"):
                continue
            rows.append({key: _as_float(value) if key.startswith(("noisy_", "enhanced_")) else value
                         for key, value in row.items()})
    return rows


def _as_float(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def metrics_in(rows):
    """Metric names present for both sides, in METRIC_LABELS order (unknown ones last)."""
    if not rows:
        return []
    names = [key[len("noisy_"):] for key in rows[0] if key.startswith("noisy_")]
    names = [name for name in names if f"enhanced_{name}" in rows[0]]
    order = list(METRIC_LABELS)
    return sorted(names, key=lambda name: order.index(name) if name in order else len(order))


def mean_and_std(values):
    """Over the finite values only: a perfect estimate has an infinite SI-SDR, an
    uncomputable metric is NaN; neither should hide the others."""
    finite = np.array([v for v in values if math.isfinite(v)], dtype=float)
    if finite.size == 0:
        return math.nan, math.nan
    return float(finite.mean()), float(finite.std())


def summarize(rows):
    """``{metric: (noisy mean, noisy std, enhanced mean, enhanced std)}``."""
    summary = {}
    for name in metrics_in(rows):
        noisy = mean_and_std([row[f"noisy_{name}"] for row in rows])
        enhanced = mean_and_std([row[f"enhanced_{name}"] for row in rows])
        summary[name] = (*noisy, *enhanced)
    return summary


# --------------------------------------------------------------------------------------------
# Metrics figure
# --------------------------------------------------------------------------------------------

def plot_metrics(results_csv, out_png, title=None):
    """One small bar chart per metric (their scales differ): mean over the files of the noisy
    input and of the enhanced output, with the standard deviation as error bar."""
    rows = read_results(results_csv)
    summary = summarize(rows)
    if not summary:
        raise ValueError(f"{results_csv}: no scored files to plot")
    n_cols = min(5, len(summary))
    n_rows = math.ceil(len(summary) / n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.6 * n_cols, 2.9 * n_rows), squeeze=False,
                             layout="constrained")
    for ax, (name, (noisy_mean, noisy_std, enh_mean, enh_std)) in zip(axes.flat, summary.items()):
        ax.bar([0, 1], [noisy_mean, enh_mean], yerr=[noisy_std, enh_std], capsize=4,
               color=[NOISY_COLOR, ENHANCED_COLOR], width=0.6)
        # the values go under the bars, where no error bar can hide them
        ax.set_xticks([0, 1], [f"noisy\n{noisy_mean:.2f}", f"enhanced\n{enh_mean:.2f}"])
        ax.set_title(METRIC_LABELS.get(name, name), fontsize=10)
        ax.axhline(0.0, color="black", linewidth=0.6)
        delta = enh_mean - noisy_mean
        ax.set_xlabel(f"change {delta:+.2f}", fontsize=9, color="green" if delta > 0 else "red")
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[len(summary):]:
        ax.axis("off")
    fig.suptitle(title or f"Test split, mean ± std over {len(rows)} files", fontsize=11)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return Path(out_png)


# --------------------------------------------------------------------------------------------
# Spectrogram figure
# --------------------------------------------------------------------------------------------

def find_audio(folder, key):
    """The file below ``folder`` whose relative name without extension is ``key``."""
    for rel in list_audio(folder):
        if rel.rsplit(".", 1)[0] == key or rel == key:
            return Path(folder) / rel
    raise FileNotFoundError(f"{folder}: no audio file named {key}.*")


def magnitude_db(signal):
    """|STFT| in dB of a mono signal (Hann window), [frequency, frame]."""
    window = np.hanning(DISPLAY_N_FFT + 1)[:-1]
    padded = np.pad(signal, DISPLAY_N_FFT // 2)
    if padded.size < DISPLAY_N_FFT:
        padded = np.pad(padded, (0, DISPLAY_N_FFT - padded.size))
    frames = np.lib.stride_tricks.sliding_window_view(padded, DISPLAY_N_FFT)[::DISPLAY_HOP]
    spectrum = np.abs(np.fft.rfft(frames * window, axis=1)).T
    return 20.0 * np.log10(spectrum + 1e-10)


def pick_examples(rows, count):
    """Keys of ``count`` files spread over the input quality, from the hardest (lowest noisy
    SI-SDR) to the easiest, so the figure shows more than one situation."""
    ranked = sorted(rows, key=lambda row: row.get("noisy_si_sdr", math.nan)
                    if math.isfinite(row.get("noisy_si_sdr", math.nan)) else math.inf)
    if len(ranked) <= count:
        return [row["file"] for row in ranked]
    positions = np.linspace(0, len(ranked) - 1, count).round().astype(int)
    return [ranked[i]["file"] for i in positions]


def _file_caption(row):
    if row is None:
        return ""
    parts = []
    for name, label in (("si_sdr", "SI-SDR"), ("pesq", "PESQ")):
        noisy, enhanced = row.get(f"noisy_{name}", math.nan), row.get(f"enhanced_{name}", math.nan)
        if math.isfinite(noisy) and math.isfinite(enhanced):
            parts.append(f"{label} {noisy:.1f} → {enhanced:.1f}" if name == "si_sdr"
                         else f"{label} {noisy:.2f} → {enhanced:.2f}")
    return ", ".join(parts)


def plot_spectrograms(clean_dir, noisy_dir, enhanced_dir, out_png, results_csv=None, count=3):
    """A row per example file: noisy | enhanced | clean, in dB relative to the peak of the
    clean file of that row (down to DYNAMIC_RANGE_DB below it), so that the three panels of a
    row compare directly."""
    rows = read_results(results_csv) if results_csv and Path(results_csv).is_file() else []
    by_key = {row["file"]: row for row in rows}
    keys = pick_examples(rows, count) if rows else \
        [rel.rsplit(".", 1)[0] for rel in list_audio(enhanced_dir)[:count]]
    if not keys:
        raise ValueError(f"{enhanced_dir}: no enhanced files to plot")
    columns = (("noisy", noisy_dir), ("enhanced", enhanced_dir), ("clean", clean_dir))
    fig, axes = plt.subplots(len(keys), 3, figsize=(12, 2.7 * len(keys)), squeeze=False,
                             sharex=True, sharey=True, layout="constrained")
    image = None
    for row_axes, key in zip(axes, keys):
        spectra, sr = {}, None
        for label, folder in columns:
            audio, sr = read_audio(find_audio(folder, key))
            spectra[label] = magnitude_db(audio[0])
        top = spectra["clean"].max()
        for ax, (label, _) in zip(row_axes, columns):
            spectrum = spectra[label] - top
            seconds = spectrum.shape[1] * DISPLAY_HOP / sr
            image = ax.imshow(spectrum, origin="lower", aspect="auto", cmap="magma",
                              vmin=-DYNAMIC_RANGE_DB, vmax=0.0,
                              extent=(0.0, seconds, 0.0, sr / 2000.0))
            ax.set_title(f"{key}: {label}", fontsize=9)
        row_axes[0].set_ylabel("kHz")
        row_axes[1].set_title(f"{key}: enhanced\n{_file_caption(by_key.get(key))}", fontsize=9)
    for ax in axes[-1]:
        ax.set_xlabel("time [s]")
    if rows:
        fig.suptitle("Test files from the hardest to the easiest input (noisy SI-SDR)", fontsize=11)
    fig.colorbar(image, ax=axes, shrink=0.8, label="dB re. clean peak")
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return Path(out_png)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def build_parser():
    parser = argparse.ArgumentParser(prog="python -m demo.plots",
                                     description="Draw the spectrogram and metric figures of a demo run.")
    parser.add_argument("--data_dir", required=True, help="data set folder holding test/{clean,noisy}")
    parser.add_argument("--enhanced_dir", required=True, help="folder of the enhanced test files")
    parser.add_argument("--results_dir", required=True,
                        help=f"folder of calc_metrics' {RESULTS_CSV}; the PNGs are written there")
    parser.add_argument("--examples", type=int, default=3, help="files in the spectrogram figure (default: 3)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    results_dir = Path(args.results_dir)
    results_csv = results_dir / RESULTS_CSV
    test_dir = Path(args.data_dir) / "test"
    written = [
        plot_spectrograms(test_dir / "clean", test_dir / "noisy", args.enhanced_dir,
                          results_dir / SPECTROGRAMS_PNG, results_csv, args.examples),
        plot_metrics(results_csv, results_dir / METRICS_PNG),
    ]
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
