"""Per-round speed correction: separate "this config is slower" from "the machine is slower now".

Within one run every config of a setting is timed in interleaved rounds, and an anchor config
in every round. A robust two-way model on the per-(config, round) medians,
    log time[c, r] = config effect[c] + round effect[r],
fitted by Tukey's median polish (iterated row and column medians, so a few odd cells do not move
it), gives each round a speed factor exp(round effect), normalised so the run's median round is
1.0. A config's corrected median is the median of its timings each divided by its round's
factor. Standalone (numpy only): copied verbatim into the kit's runner (see `_schema.py`).
"""

# <in-package>
from __future__ import annotations
# </in-package>
import math  # noqa: E402
from typing import Iterable, Mapping, Sequence  # noqa: E402

import numpy as np  # noqa: E402


def median_polish(cells: Mapping[tuple[str, int], float], max_iter: int = 50, tol: float = 1e-10) -> tuple[dict[str, float], dict[int, float]]:
    """(config effect, round effect) of log(cell) = config + round over the observed cells (missing
    cells are fine); round effects have median 0 over the rounds."""
    keys = sorted({k for k, _ in cells})
    rounds = sorted({r for _, r in cells})
    ki = {k: i for i, k in enumerate(keys)}
    ri = {r: j for j, r in enumerate(rounds)}
    table = np.full((len(keys), len(rounds)), np.nan)
    for (k, r), v in cells.items():
        table[ki[k], ri[r]] = math.log(v)
    row = np.zeros(len(keys))
    col = np.zeros(len(rounds))
    for _ in range(max_iter):
        resid = table - row[:, None] - col[None, :]
        d_row = np.nanmedian(resid, axis=1)
        row += d_row
        resid = table - row[:, None] - col[None, :]
        d_col = np.nanmedian(resid, axis=0)
        col += d_col
        shift = float(np.median(col))
        col -= shift
        row += shift
        if max(np.max(np.abs(d_row)), np.max(np.abs(d_col))) < tol:
            break
    return {k: float(row[ki[k]]) for k in keys}, {r: float(col[ri[r]]) for r in rounds}


def round_factors(timings: Mapping[str, Sequence[tuple[int, float]]], groups: Iterable[Sequence[str]] | None = None) -> dict[int, float]:
    """Speed factor of every round (1.0 = the group's median round; 1.2 = 20% slower) from each
    config's (round, ms) timings. groups: sets of configs that shared rounds, fitted separately
    (without an anchor, separate chunks share nothing); default: one group."""
    groups = [list(timings)] if groups is None else [list(g) for g in groups]
    factors: dict[int, float] = {}
    for group in groups:
        cells: dict[tuple[str, int], list[float]] = {}
        for key in group:
            for rnd, ms in timings.get(key, ()):
                if ms > 0:
                    cells.setdefault((key, rnd), []).append(ms)
        if not cells:
            continue
        _, effects = median_polish({c: float(np.median(v)) for c, v in cells.items()})
        factors.update({r: math.exp(e) for r, e in effects.items()})
    return factors


def corrected_median(timings: Sequence[tuple[int, float]], factors: Mapping[int, float]) -> float:
    """Median of a config's timings, each divided by its round's speed factor."""
    if not timings:
        return math.nan
    return float(np.median([ms / factors.get(rnd, 1.0) for rnd, ms in timings]))


def speed_spread(factors: Iterable[float]) -> float:
    """90th / 10th percentile of the round factors: how much the machine's speed moved in the run."""
    f = np.asarray(list(factors), dtype=float)
    if f.size == 0:
        return math.nan
    lo, hi = np.percentile(f, [10, 90])
    return float(hi / lo)
