#!/usr/bin/env python
"""Keep or drop the band above the model's Nyquist frequency: measured on full-band 48 kHz speech.

    python experiments/high_band.py [--ckpt pretrained/echo_cpu_small.ckpt] [--snrs 0 5 10 15]

The material is every full-band pair of ../shared/data/vbdmd_test_48k (the check of
``echo.high_band.has_high_band`` on the clean file picks them: p232_036 and p232_399; the other
five were published low-passed at 8 kHz) and mixtures made from their clean files at 48 kHz with
broadband noise at each of --snrs: white and pink generated noise, and the recorded DEMAND noise
of the other full-band pair (its noisy minus its clean file), looped to length. Each noisy file
is enhanced once per mode with the same seed (``echo.enhance.enhance_audio``, the checkpoint's
own sampler). Scores against the clean file:

  level 8-16k   mean Welch PSD from 8 to 16 kHz, in dB relative to the clean file's
  LSD > 8k      log-spectral distance above 8 kHz (dB; STFT 2048/512 at 48 kHz, power floored
                at 1e-8, about the 16-bit quantisation floor, so that silence is not infinite)
  SI-SDR 48k    scale-invariant SDR of the full-band 48 kHz signal
  PESQ, ESTOI, SI-SDR 16k   the file resampled to 16 kHz: the model's band, which the mode must
                not change

The five band-limited noisy files are enhanced both ways as well: with nothing above 8 kHz, keep
must give drop's output sample for sample. Writes NAME.md, NAME.json and NAME.png (spectrograms)
into --results_dir. The speakers are the VoiceBank-DEMAND test set's: measured, never tuned on
(the gain's band, frames and threshold were fixed before this ran).
"""
import argparse
import io
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.signal import stft, welch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from echo.checkpoints import load_model  # noqa: E402
from echo.data.generated_noise import coloured_noise  # noqa: E402
from echo.data.mix import noise_gain_for_snr, peak_gain  # noqa: E402
from echo.data.resample import resample  # noqa: E402
from echo.enhance import enhance_audio  # noqa: E402
from echo.high_band import HIGH_BAND_MODES, has_high_band  # noqa: E402
from echo.pretrained import DEFAULT_MODEL  # noqa: E402
from echo.util.audio import list_audio, read_audio  # noqa: E402
from echo.util.metrics import estoi, pesq_wb, si_sdr  # noqa: E402
from echo.util.seeding import derive_seed  # noqa: E402
from stats import mean_ci95  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "vbdmd_test_48k"
MODEL_SR = 16000
SYSTEMS = ("noisy",) + HIGH_BAND_MODES
LSD_FLOOR = 1e-8
METRICS = ("level_8_16k", "lsd_above_8k", "si_sdr_48k", "pesq_16k", "estoi_16k", "si_sdr_16k")


def build_parser():
    parser = argparse.ArgumentParser(description="Keep or drop the band above the model's: full-band 48 kHz test.")
    parser.add_argument("--data_dir", default=str(DATA),
                        help="folder with clean/ and noisy/ 48 kHz pairs (default: %(default)s)")
    parser.add_argument("--ckpt", default=str(DEFAULT_MODEL),
                        help="model to enhance with, its own sampler (default: the shipped CPU model)")
    parser.add_argument("--snrs", type=float, nargs="+", default=[0.0, 5.0, 10.0, 15.0],
                        help="SNRs in dB of the made mixtures (default: 0 5 10 15)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the generated noise and of the sampler (default: 0)")
    parser.add_argument("--results_dir", default=str(REPO / "experiments" / "results"),
                        help="where NAME.md/.json/.png go (default: experiments/results)")
    parser.add_argument("--name", default="high_band", help="file name stem of the results (default: %(default)s)")
    return parser


# --------------------------------------------------------------------------------------------
# material
# --------------------------------------------------------------------------------------------

def read_pairs(data_dir):
    """{name: (clean, noisy, sr)} of every pair in ``data_dir``."""
    pairs = {}
    for rel in list_audio(Path(data_dir) / "clean"):
        clean, sr = read_audio(Path(data_dir) / "clean" / rel, mono=True)
        noisy, _ = read_audio(Path(data_dir) / "noisy" / rel, expected_sr=sr, mono=True)
        pairs[Path(rel).stem] = (clean[0], noisy[0], sr)
    return pairs


def looped(noise, length):
    return np.tile(noise, math.ceil(length / len(noise)))[:length]


def mixtures(full_band, snrs, seed):
    """The full-band pairs as recorded, then their clean files in white, pink and the other
    pair's recorded noise at each SNR: a list of (name, clean, noisy, sr)."""
    items = [(name, clean, noisy, sr) for name, (clean, noisy, sr) in full_band.items()]
    names = sorted(full_band)
    for name in names:
        clean, _, sr = full_band[name]
        rng = np.random.default_rng(derive_seed(seed, name))
        noises = {"white": coloured_noise(rng, len(clean), 0.0), "pink": coloured_noise(rng, len(clean), 1.0)}
        for other in names:
            if other != name:
                other_clean, other_noisy, _ = full_band[other]
                noises[f"demand({other})"] = looped(other_noisy - other_clean, len(clean))
        for kind, noise in noises.items():
            for snr in snrs:
                noisy = clean + noise_gain_for_snr(clean, noise, snr, sr) * noise
                gain = peak_gain(clean, noisy)
                items.append((f"{name} + {kind} @ {snr:g} dB", gain * clean, (gain * noisy).astype(np.float32), sr))
    return items


# --------------------------------------------------------------------------------------------
# scores
# --------------------------------------------------------------------------------------------

def band_level_db(x, sr, lo=8000, hi=16000):
    f, p = welch(np.asarray(x, dtype=np.float64), sr, nperseg=2048)
    return float(10 * np.log10(max(p[(f >= lo) & (f < hi)].mean(), 1e-30)))


def lsd_above(reference, estimate, sr, lo=8000):
    """Mean over frames of the RMS over bins above ``lo`` of the dB difference of the powers."""
    def power(x):
        f, _, z = stft(np.asarray(x, dtype=np.float64), sr, nperseg=2048, noverlap=1536, boundary=None,
                       scaling="spectrum")
        return f, np.abs(z * 1024) ** 2  # back to |rfft of the windowed frame|^2
    f, p_ref = power(reference)
    _, p_est = power(estimate)
    band = f > lo
    diff = 10 * np.log10((p_est[band] + LSD_FLOOR) / (p_ref[band] + LSD_FLOOR))
    return float(np.mean(np.sqrt(np.mean(diff ** 2, axis=0))))


def score(clean, x, sr):
    clean16, x16 = resample(clean, sr, MODEL_SR), resample(x, sr, MODEL_SR)
    return {"level_8_16k": band_level_db(x, sr) - band_level_db(clean, sr),
            "lsd_above_8k": lsd_above(clean, x, sr), "si_sdr_48k": si_sdr(clean, x),
            "pesq_16k": pesq_wb(clean16, x16, MODEL_SR), "estoi_16k": estoi(clean16, x16, MODEL_SR),
            "si_sdr_16k": si_sdr(clean16, x16)}


def enhance_both(model, noisy, sr, seed, name):
    sampler = dict(model.shipped_sampler)
    return {mode: enhance_audio(model, noisy, sr, sampler, torch.Generator().manual_seed(derive_seed(seed, name)),
                                high_band=mode) for mode in HIGH_BAND_MODES}


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------

def groups(records):
    """Rows of the table: the recorded pairs, each made noise, and all files."""
    out = {"recorded pairs": [r for r in records if "@" not in r["name"]]}
    for kind in ("white", "pink", "demand"):
        out[f"made, {kind} noise"] = [r for r in records if f"+ {kind}" in r["name"]]
    out["made, all"] = [r for r in records if "@" in r["name"]]
    out["all"] = records
    return {k: v for k, v in out.items() if v}


def table(records):
    lines = ["| files | n | system | level 8-16k (dB re clean, median) | LSD > 8k (dB) | SI-SDR 48k (dB) | "
             "PESQ 16k | ESTOI 16k | SI-SDR 16k (dB) |", "|---|---|---|---|---|---|---|---|---|"]
    for group, rows in groups(records).items():
        for system in SYSTEMS:
            scores = [r["scores"][system] for r in rows]
            mean = {m: mean_ci95([s[m] for s in scores])[0] for m in METRICS}
            level = float(np.median([s["level_8_16k"] for s in scores]))
            lines.append(f"| {group} | {len(rows)} | {system} | {level:+.1f} | {mean['lsd_above_8k']:.2f} | "
                         f"{mean['si_sdr_48k']:.2f} | {mean['pesq_16k']:.3f} | {mean['estoi_16k']:.3f} | "
                         f"{mean['si_sdr_16k']:.2f} |")
    return lines


def wins(records):
    """How often keep beats drop and the noisy input, per file."""
    keep = [r["scores"]["keep"] for r in records]
    drop = [r["scores"]["drop"] for r in records]
    noisy = [r["scores"]["noisy"] for r in records]
    return {"lsd_keep_below_drop": sum(k["lsd_above_8k"] < d["lsd_above_8k"] for k, d in zip(keep, drop)),
            "lsd_keep_below_noisy": sum(k["lsd_above_8k"] < n["lsd_above_8k"] for k, n in zip(keep, noisy)),
            "si_sdr_48k_keep_not_below_drop": sum(k["si_sdr_48k"] >= d["si_sdr_48k"] for k, d in zip(keep, drop)),
            "files": len(records),
            "max_abs_change_16k": {m: max(abs(k[m] - d[m]) for k, d in zip(keep, drop))
                                   for m in ("pesq_16k", "estoi_16k", "si_sdr_16k")}}


def spectrogram_figure(path, examples, sr):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    columns = ("clean", "noisy", "drop", "keep")
    fig, axes = plt.subplots(len(examples), len(columns), figsize=(16, 3.2 * len(examples)), sharey=True,
                             squeeze=False)
    for row, (name, signals) in enumerate(examples):
        for col, key in enumerate(columns):
            f, t, z = stft(signals[key], sr, nperseg=1024, noverlap=768)
            ax = axes[row, col]
            ax.pcolormesh(t, f / 1000, 20 * np.log10(np.abs(z) + 1e-7), vmin=-140, vmax=-30, shading="auto",
                          cmap="magma")
            ax.axhline(8, color="w", lw=0.6, ls="--")
            ax.set_title(f"{name}: {key}", fontsize=9)
            ax.set_xlabel("s")
        axes[row, 0].set_ylabel("kHz")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=90)
    plt.close(fig)
    from PIL import Image  # installed with matplotlib
    # 64 colours: the spectrograms' noise floors do not compress, and a colour map needs no more
    Image.open(buffer).convert("RGB").quantize(64).save(path, optimize=True)


def main(argv=None):
    args = build_parser().parse_args(argv)
    if not Path(args.data_dir).is_dir():
        print(f"error: --data_dir {args.data_dir}: folder does not exist", file=sys.stderr)
        return 2
    model = load_model(args.ckpt)
    pairs = read_pairs(args.data_dir)
    full_band = {n: p for n, p in pairs.items() if has_high_band(p[0], p[2], MODEL_SR)}
    band_limited = sorted(set(pairs) - set(full_band))
    print(f"full-band pairs: {sorted(full_band)}; band-limited: {band_limited}", flush=True)

    started = time.perf_counter()
    limited_identical = {}
    for name in band_limited:
        _, noisy, sr = pairs[name]
        out = enhance_both(model, noisy, sr, args.seed, name)
        limited_identical[name] = bool(np.array_equal(out["keep"], out["drop"]))
    records, examples = [], []
    for name, clean, noisy, sr in mixtures(full_band, args.snrs, args.seed):
        out = enhance_both(model, noisy, sr, args.seed, name)
        scores = {"noisy": score(clean, noisy, sr), **{mode: score(clean, out[mode], sr) for mode in HIGH_BAND_MODES}}
        records.append({"name": name, "scores": scores})
        print(f"{name}: " + ", ".join(f"{s} LSD {scores[s]['lsd_above_8k']:.1f}" for s in SYSTEMS), flush=True)
        if name in full_band or name.endswith("white @ 5 dB") and not any("white" in e[0] for e in examples):
            examples.append((name, {"clean": clean, "noisy": noisy, **out}))

    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    summary = wins(records)
    summary["band_limited_keep_equals_drop"] = limited_identical
    config = dict(ckpt=str(Path(args.ckpt).resolve()), sampler=model.shipped_sampler, snrs=args.snrs,
                  seed=args.seed, data_dir=str(args.data_dir), full_band=sorted(full_band),
                  band_limited=band_limited, wall_seconds=round(time.perf_counter() - started, 1))
    (results_dir / f"{args.name}.json").write_text(json.dumps(dict(config=config, summary=summary,
                                                                   files=records), indent=1))
    spectrogram_figure(results_dir / f"{args.name}.png", examples, 48000)
    md = [f"# Band above 8 kHz: keep vs drop ({Path(args.ckpt).name}, sampler {model.shipped_sampler})", "",
          f"`python experiments/high_band.py{' --ckpt ' + args.ckpt if args.ckpt != str(DEFAULT_MODEL) else ''}`"
          f" — {len(records)} files at 48 kHz: the full-band pairs {sorted(full_band)} as recorded, and their "
          f"clean files in white, pink and recorded DEMAND noise at {', '.join(f'{s:g}' for s in args.snrs)} dB "
          "SNR. Means over files (level: median).", "", *table(records), "",
          f"- keep's LSD above 8 kHz is lower than drop's in {summary['lsd_keep_below_drop']} of {len(records)} "
          f"files and lower than the noisy input's in {summary['lsd_keep_below_noisy']}; its full-band SI-SDR is "
          f"not lower than drop's in {summary['si_sdr_48k_keep_not_below_drop']}.",
          "- Largest per-file change of the 16 kHz scores between keep and drop: "
          + ", ".join(f"{m} {v:.4f}" for m, v in summary["max_abs_change_16k"].items()) + ".",
          f"- Band-limited files ({', '.join(band_limited)}): keep's output equals drop's sample for sample in "
          f"{sum(limited_identical.values())} of {len(limited_identical)}.",
          f"- Spectrograms: [{args.name}.png]({args.name}.png).", ""]
    (results_dir / f"{args.name}.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
