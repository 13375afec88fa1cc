"""Two sections of experiments/compare.py's report beyond the paired table: the gains in the
lowest and highest thirds of the pairs by input SNR, and DNSMOS of every system on recordings
without a clean reference (such as the DNS-3 blind recordings)."""
import math

import numpy as np

from stats import fmt_ci, mean_ci95, paired_gain

SNR_METRICS = ("pesq", "estoi", "si_sdr")
DNSMOS_METRICS = ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl")
DNSMOS_LABELS = {"dnsmos_sig": "SIG", "dnsmos_bak": "BAK", "dnsmos_ovrl": "OVRL"}


def input_snr_db(clean_dir, noisy_dir, files):
    """Per pair: 10 log10(|clean|^2 / |noisy - clean|^2), the SNR the enhancer was given."""
    from echo.util.audio import pair_audio, read_audio

    paths = {key: (clean, noisy) for key, clean, noisy in pair_audio(clean_dir, noisy_dir)}
    snrs = []
    for key in files:
        clean, noisy = (read_audio(p)[0].mean(axis=0).astype(np.float64) for p in paths[key])
        n = min(len(clean), len(noisy))
        noise = np.sum((noisy[:n] - clean[:n]) ** 2)
        snrs.append(10 * math.log10(max(np.sum(clean[:n] ** 2), 1e-20) / max(noise, 1e-20)))
    return snrs


def snr_thirds(snrs):
    """(indices of the lowest third, indices of the highest third, their SNR ranges) by input SNR."""
    order = np.argsort(snrs)
    third = len(snrs) // 3
    low, high = order[:third].tolist(), order[len(snrs) - third:].tolist()
    return low, high, [(min(snrs[i] for i in part), max(snrs[i] for i in part)) for part in (low, high)]


def snr_section(rows, per_file, snrs):
    """Markdown lines: the paired gain over the noisy input within each SNR third."""
    low, high, ranges = snr_thirds(snrs)
    lines = ["", f"Paired improvement over the noisy input by input SNR (lowest third: {len(low)} pairs at "
             f"{ranges[0][0]:.1f} to {ranges[0][1]:.1f} dB; highest third: {len(high)} pairs at "
             f"{ranges[1][0]:.1f} to {ranges[1][1]:.1f} dB):", "",
             "| system | " + " | ".join(f"Δ {m} low | Δ {m} high" for m in SNR_METRICS) + " |",
             "|---" * (2 * len(SNR_METRICS) + 1) + "|"]
    noisy = per_file["noisy"]
    for row in rows[1:]:
        mine = per_file[row["row"]]
        cells = []
        for metric in SNR_METRICS:
            for part in (low, high):
                gain = paired_gain([mine[metric][i] for i in part], [noisy[metric][i] for i in part])
                cells.append(fmt_ci(*gain[:2], 2 if metric == "si_sdr" else 3, star=True))
        lines.append(f"| `{row['row']}` | " + " | ".join(cells) + " |")
    return lines


def dnsmos_section(dnsmos, folder):
    """Markdown lines: DNSMOS per system (mean ± 95% CI over the recordings) and the paired change
    against the noisy input. ``dnsmos``: {system: {"noisy": {...}, "enhanced": {...}}} from
    calc_metrics.py --dnsmos, in the report's row order."""
    first = next(iter(dnsmos.values()))
    n = len(first["noisy"]["dnsmos_ovrl"])
    head = [DNSMOS_LABELS[m] for m in DNSMOS_METRICS]
    lines = ["", f"DNSMOS P.835 on the {n} recordings of `{folder}` (no clean reference; mean ± 95% CI, "
             "and the paired change against the noisy input, * = above zero):", "",
             "| system | " + " | ".join(head) + " | " + " | ".join(f"Δ {h}" for h in head) + " |",
             "|---" * (2 * len(head) + 1) + "|",
             "| `noisy` | " + " | ".join(fmt_ci(*mean_ci95(first["noisy"][m])[:2], 3) for m in DNSMOS_METRICS)
             + " |" + " |" * len(head)]
    for name, record in dnsmos.items():
        stats = [fmt_ci(*mean_ci95(record["enhanced"][m])[:2], 3) for m in DNSMOS_METRICS]
        gains = [fmt_ci(*paired_gain(record["enhanced"][m], record["noisy"][m])[:2], 3, star=True)
                 for m in DNSMOS_METRICS]
        lines.append(f"| `{name}` | " + " | ".join(stats + gains) + " |")
    return lines

