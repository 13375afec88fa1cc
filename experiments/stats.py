"""Statistics shared by the experiments: means with 95% Student-t intervals, paired gains."""
import math

import numpy as np


def mean_ci95(values):
    """(mean, half-width of the 95% t-interval of the mean, n) over the finite values (a
    record read back from JSON holds None where a metric was not computable)."""
    from scipy import stats
    finite = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = len(finite)
    if n == 0:
        return math.nan, math.nan, 0
    if n == 1:
        return float(finite[0]), math.nan, 1
    half = stats.t.ppf(0.975, n - 1) * finite.std(ddof=1) / math.sqrt(n)
    return float(finite.mean()), float(half), n


def paired_gain(enhanced, noisy):
    """Mean +- 95% CI of the per-file improvement over the noisy input: much tighter than the
    difference of two unpaired intervals, since the files' difficulty cancels out."""
    return mean_ci95([e - n for e, n in zip(enhanced, noisy) if e is not None and n is not None])


def fmt_ci(mean, half, digits=2, star=False):
    if not math.isfinite(mean):
        return "-"
    text = f"{mean:+.{digits}f}" if star is not None and star is not False else f"{mean:.{digits}f}"
    if math.isfinite(half):
        text += f" ± {half:.{digits}f}"
        if star and mean - half > 0:
            text += " *"
    return text
