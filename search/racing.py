"""Racing: score a proposed config on a growing slice of the ranking examples and stop it as soon as
it is clearly below the front at its latency; finish the promising ones on the whole ranking part.

Why (bench/results/perlayer.md): on a few hundred examples the standard error of an accuracy is
2.5-3.5 points, more than the gap between neighbouring configs; scoring every proposal on many
more examples costs minutes per hundred configs on a CPU. Most proposals of a search are far below
the front, and a quarter of the examples tells so: racing spends the full ranking slice only on
configs that may join the front.

The rule, after each chunk but the last: with p the accuracy so far on n examples, stop when
    p + Z * sqrt(p (1 - p) / n) < best
where `best` is the highest accuracy, on the WHOLE ranking part, of the configs scored so far that
are predicted no slower (the front at this config's latency). Z = 2.0: one-sided about 97.7% per
look, two looks (after a quarter and after half). A stopped config keeps its partial score (it is
dominated anyway); its trial says `stopped_at`. Only a mean over examples (accuracy) can be cut
this way: a metric such as F1 or a correlation is scored on the whole ranking part at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Z = 2.0
CHUNK_FRACTIONS = (0.25, 0.25, 0.5)  # examples seen after each chunk: a quarter, half, all
RACEABLE_METRICS = ("accuracy",)  # a mean of per-example scores: chunks combine exactly


@dataclass(frozen=True)
class RaceResult:
    metric: float  # percent on the examples scored
    examples: int  # how many examples were scored
    stopped: bool  # True: stopped before the whole ranking part
    chunks: int  # chunks scored
    cached: bool = False  # every chunk scored was answered by the accuracy cache


def upper_bound(p_percent: float, n: int, z: float = Z) -> float:
    """The accuracy's upper confidence bound in percent (normal approximation)."""
    p = min(max(p_percent / 100.0, 0.0), 1.0)
    return 100.0 * (p + z * math.sqrt(p * (1 - p) / max(n, 1)))


def race(
    score_chunk: Callable[[int], tuple[float, bool]],
    sizes: Sequence[int],
    best_at_latency: float | None,
    z: float = Z,
) -> RaceResult:
    """Score chunks in order (score_chunk(i) -> (percent on chunk i, answered by the cache)) until
    the config is clearly below `best_at_latency` (None: nothing to beat yet: every chunk)."""
    total, seen, cached = 0.0, 0, True
    for i, k in enumerate(sizes):
        value, hit = score_chunk(i)
        total += value * k
        seen += k
        cached = cached and hit
        p = total / seen
        if i < len(sizes) - 1 and best_at_latency is not None and upper_bound(p, seen, z) < best_at_latency:
            return RaceResult(p, seen, True, i + 1, cached)
    return RaceResult(total / max(seen, 1), seen, False, len(sizes), cached)


def best_at_latency(points: Sequence[tuple[float, float]], latency_ms: float) -> float | None:
    """The best metric among (metric, predicted ms) points predicted no slower than `latency_ms`."""
    vals = [m for m, ms in points if ms <= latency_ms]
    return max(vals) if vals else None
