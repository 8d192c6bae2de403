"""Per-round speed correction: separate "this config is slower" from "the machine is slower now".

Within one run every config of a setting is timed in interleaved rounds, and an anchor config
in every round. A robust two-way model on the per-(config, round) medians,
    log time[c, r] = config effect[c] + round effect[r],
fitted by Huber-weighted least squares (a few odd cells barely move it; why not Tukey's median
polish: see `two_way_fit`), gives each round a speed factor exp(round effect), normalised so the
run's median round is 1.0. A config's corrected median is the median of its timings each divided
by its round's factor. Part of the device runtime (numpy only; see `dynasearch_runtime`).
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np


def two_way_fit(
    cells: Mapping[tuple[str, int], float], max_iter: int = 10, huber_k: float = 1.345
) -> tuple[dict[str, float], dict[int, float]]:
    """(config effect, round effect) of log(cell) = config + round over the observed cells (missing
    cells are fine), by Huber-weighted least squares; round effects have median 0 over the rounds.

    Not Tukey's median polish: a chunk's rounds are tied to the other chunks' rounds only through
    the anchor, and in those rounds the chunk's own configs outnumber it, so iterated medians let
    them absorb a slow chunk into their config effects. Least squares uses the anchor's bridge; the
    Huber weights (scale: MAD of the residuals) keep a few wild cells from moving the fit."""
    keys = sorted({k for k, _ in cells})
    rounds = sorted({r for _, r in cells})
    ki = {k: i for i, k in enumerate(keys)}
    ri = {r: j for j, r in enumerate(rounds)}
    obs = list(cells.items())
    X = np.zeros((len(obs), len(keys) + len(rounds) - 1))
    y = np.empty(len(obs))
    for n, ((k, r), v) in enumerate(obs):
        X[n, ki[k]] = 1.0
        if ri[r] > 0:  # round 0 is the baseline: one round column less keeps the design full rank
            X[n, len(keys) + ri[r] - 1] = 1.0
        y[n] = math.log(v)
    w = np.ones(len(obs))
    beta = np.zeros(X.shape[1])
    for _ in range(max_iter):
        sw = np.sqrt(w)
        beta = np.linalg.lstsq(X * sw[:, None], y * sw, rcond=None)[0]
        resid = y - X @ beta
        scale = 1.4826 * float(np.median(np.abs(resid)))
        if scale <= 1e-12:
            break
        w_new = np.minimum(1.0, huber_k * scale / np.maximum(np.abs(resid), 1e-300))
        if np.max(np.abs(w_new - w)) < 1e-6:
            break
        w = w_new
    row = beta[: len(keys)]
    col = np.concatenate([[0.0], beta[len(keys) :]])
    shift = float(np.median(col))
    return {k: float(row[ki[k]] + shift) for k in keys}, {r: float(col[ri[r]] - shift) for r in rounds}


def round_factors(
    timings: Mapping[str, Sequence[tuple[int, float]]], groups: Iterable[Sequence[str]] | None = None
) -> dict[int, float]:
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
        _, effects = two_way_fit({c: float(np.median(v)) for c, v in cells.items()})
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
