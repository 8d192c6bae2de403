"""Statistics of one config's timed runs: the median, its distribution-free confidence interval and the
other summary columns of a record (see `protocol`, which stops timing on them).

Part of the device runtime (standard library + numpy).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

STATS_COLUMNS = (
    "median_ms",
    "mean_ms",
    "p90_ms",
    "p99_ms",
    "iqr_ms",
    "cv",
    "ci_low_ms",
    "ci_high_ms",
    "n_runs",
    "converged",
)


def median_ci(sorted_ms: Sequence[float], confidence: float) -> tuple[float, float]:
    """Distribution-free CI of the median: [x_(j), x_(n-j+1)] with the largest j such that
    P(Binomial(n, 1/2) < j) <= (1 - confidence) / 2. Too few runs for the confidence: the full range."""
    n = len(sorted_ms)
    tail = (1.0 - confidence) / 2.0
    cdf, j = 0.0, 0
    for k in range(n + 1):
        cdf += math.comb(n, k) / 2.0**n
        if cdf > tail:
            break
        j = k + 1
    if j == 0 or j > n - j + 1:
        return float(sorted_ms[0]), float(sorted_ms[-1])
    return float(sorted_ms[j - 1]), float(sorted_ms[n - j])


def summarize(times_ms: Sequence[float], confidence: float) -> dict[str, float]:
    """median, mean, p90, p99, IQR, CV and the CI of the median of one config's timed runs (ms)."""
    x = np.sort(np.asarray(times_ms, dtype=float))
    lo, hi = median_ci(x.tolist(), confidence)
    mean = float(x.mean())
    q25, q75 = np.percentile(x, [25, 75])
    return {
        "median_ms": float(np.median(x)),
        "mean_ms": mean,
        "p90_ms": float(np.percentile(x, 90)),
        "p99_ms": float(np.percentile(x, 99)),
        "iqr_ms": float(q75 - q25),
        "cv": float(x.std(ddof=1) / mean) if len(x) > 1 and mean > 0 else 0.0,
        "ci_low_ms": lo,
        "ci_high_ms": hi,
        "n_runs": int(len(x)),
    }


def ci_half_width(times_ms: Sequence[float], confidence: float) -> float:
    """Half-width of the median's CI relative to the median."""
    x = sorted(times_ms)
    lo, hi = median_ci(x, confidence)
    med = float(np.median(x))
    return (hi - lo) / 2.0 / med if med > 0 else math.inf
