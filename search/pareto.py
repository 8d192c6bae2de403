"""Pareto fronts of accuracy (higher is better) against latency (lower is better), and their plot."""

from __future__ import annotations

import numpy as np


def pareto_mask(score: np.ndarray, latency: np.ndarray) -> np.ndarray:
    """True where no other point is at least as good on both axes and strictly better on one."""
    score, latency = np.asarray(score, float), np.asarray(latency, float)
    if score.shape != latency.shape:
        raise ValueError(f"score and latency differ in length: {score.shape} vs {latency.shape}")
    n = len(score)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        dominated_by = (score >= score[i]) & (latency <= latency[i]) & ((score > score[i]) | (latency < latency[i]))
        keep[i] = not dominated_by.any()
    return keep


def hypervolume_2d(score: np.ndarray, latency: np.ndarray, ref_score: float, ref_latency: float) -> float:
    """Area dominated by the points (maximise score, minimise latency) and bounded by the
    reference point (ref_score below every useful score, ref_latency above every useful latency).
    Points outside the reference box add nothing."""
    s, t = np.asarray(score, float), np.asarray(latency, float)
    keep = (s > ref_score) & (t < ref_latency)
    s, t = s[keep], t[keep]
    if len(s) == 0:
        return 0.0
    order = np.argsort(t, kind="stable")
    area, best = 0.0, ref_score
    ts, ss = t[order], s[order]
    # Sweep latency from fast to slow: each point extends the covered score up to the next point's latency.
    for i in range(len(ts)):
        best = max(best, ss[i])
        right = ts[i + 1] if i + 1 < len(ts) else ref_latency
        area += (right - ts[i]) * (best - ref_score)
    return float(area)


def hypervolume_history(score: np.ndarray, latency: np.ndarray, ref_score: float, ref_latency: float) -> np.ndarray:
    """Hypervolume after each of the points in order (an O(n^2) sweep; n is a few thousand at most)."""
    s, t = np.asarray(score, float), np.asarray(latency, float)
    return np.array([hypervolume_2d(s[: i + 1], t[: i + 1], ref_score, ref_latency) for i in range(len(s))])
