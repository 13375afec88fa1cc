#!/usr/bin/env python
"""Two enhanced versions of the same files, compared file by file: a markdown table with the noisy
input's mean, each version's mean, and the paired difference B - A (mean ± 95% CI; * = above
zero, ! = below zero).

    python experiments/paired.py OUT_A OUT_B [--metrics pesq estoi si_sdr] [--names old new]

OUT_A and OUT_B are folders (or ``_results.csv`` files) that ``calc_metrics.py`` wrote. Only the
files scored in both are paired; a file that one side lacks or could not score is left out and
counted under the table. Pairing takes the files' difficulty out of the comparison, so the
interval is much tighter than the difference of two unpaired means.
"""
import argparse
import csv
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calc_metrics import RESULTS_CSV  # noqa: E402
from experiments.stats import fmt_ci, mean_ci95, paired_gain  # noqa: E402

DEFAULT_METRICS = ("pesq", "estoi", "si_sdr", "csig", "cbak", "covl", "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl")


class PairedError(Exception):
    pass


def read_results(path) -> dict:
    """{file: row} of one calc_metrics.py results table."""
    path = Path(path)
    table = path / RESULTS_CSV if path.is_dir() else path
    if not table.is_file():
        raise PairedError(f"{table}: no calc_metrics.py results there (run calc_metrics.py first)")
    with open(table, newline="") as f:
        return {row["file"]: row for row in csv.DictReader(f)}


def number(row, key):
    try:
        value = float(row.get(key) or "nan")
    except ValueError:
        return math.nan
    return value


def compare(a: dict, b: dict, metrics):
    """[(metric, noisy mean, A mean, B mean, (diff mean, diff half-width, n))] for the metrics both
    tables hold, and the files left out."""
    shared = sorted(set(a) & set(b))
    left_out = sorted(set(a) ^ set(b))
    rows = []
    for metric in metrics:
        key = f"enhanced_{metric}"
        if not shared or key not in a[shared[0]] or key not in b[shared[0]]:
            continue
        pairs = [(number(a[f], key), number(b[f], key), number(a[f], f"noisy_{metric}")) for f in shared]
        pairs = [p for p in pairs if math.isfinite(p[0]) and math.isfinite(p[1])]
        if not pairs:
            continue
        noisy = mean_ci95([p[2] for p in pairs])[0]
        rows.append((metric, noisy, mean_ci95([p[0] for p in pairs])[0], mean_ci95([p[1] for p in pairs])[0],
                     paired_gain([p[1] for p in pairs], [p[0] for p in pairs])))
    return rows, left_out


def markdown(rows, names, left_out, digits=3):
    lines = [f"| metric | noisy | {names[0]} | {names[1]} | {names[1]} - {names[0]} (paired, 95% CI) | n |",
             "|---|---|---|---|---|---|"]
    for metric, noisy, mean_a, mean_b, (diff, half, n) in rows:
        d = 2 if metric.startswith("si_") or metric.startswith("seg") else digits
        text = fmt_ci(diff, half, d, star=True)
        if math.isfinite(half) and diff + half < 0:
            text += " !"
        lines.append(f"| {metric} | {noisy:.{d}f} | {mean_a:.{d}f} | {mean_b:.{d}f} | {text} | {n} |")
    if left_out:
        lines.append(f"\n{len(left_out)} file(s) in only one of the two tables, left out: {', '.join(left_out[:5])}"
                     + (" ..." if len(left_out) > 5 else ""))
    return "\n".join(lines)


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", help="calc_metrics.py output of version A (folder or _results.csv)")
    parser.add_argument("b", help="calc_metrics.py output of version B (folder or _results.csv)")
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS),
                        help="metrics to compare, where both tables have them (default: %(default)s)")
    parser.add_argument("--names", nargs=2, default=("A", "B"), help="column names of A and B (default: A B)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        rows, left_out = compare(read_results(args.a), read_results(args.b), args.metrics)
    except PairedError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not rows:
        print(f"error: {args.a} and {args.b} share no scored file for {', '.join(args.metrics)}", file=sys.stderr)
        return 2
    print(markdown(rows, args.names, left_out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
