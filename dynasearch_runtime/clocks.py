"""The two clocks of the timing protocol (`Protocol.clock`): where the thread CPU-time clock is valid
(`check_clock`), and what the two clocks together say of a busy machine: busy rounds and the
undisturbed runs whose wall median verification judges (see `protocol`'s docstring).

Part of the device runtime (standard library + numpy).
"""

from __future__ import annotations

import math
import time
from typing import Sequence

import numpy as np

from .errors import MeasurementError

CLOCKS = ("wall", "cpu")
# A config's round is busy when the median, over its timed runs in that round, of wall time / CPU
# time of the timing thread exceeds this. On a quiet machine the ratio of a single-thread run is
# 1.000 (median; p90 1.003-1.015 for 0.3-20 ms onnxruntime runs, measured on this project's 2-core
# host) and with two busy processes competing for its 2 cores it was 1.94 (17.19 ms wall for
# 8.88 ms CPU). 1.15 is far above the quiet noise (no quiet round is flagged) and means the thread
# was off its core for over 13% of the round's runs: 13x the default rel_ci, a wall median that
# would no longer be this config's latency.
BUSY_RATIO = 1.15


def _thread_clock_resolution() -> float:
    """Seconds of resolution of the thread CPU clock (inf where there is none)."""
    if not hasattr(time, "thread_time_ns"):
        return math.inf
    try:
        return float(time.get_clock_info("thread_time").resolution)
    except (OSError, ValueError):
        return math.inf


def check_clock(clock: str, threads: int | None = None, spinning: bool = False, device: str = "cpu") -> None:
    """Refuse (MeasurementError, one line) the cpu clock where it does not measure a run: more than
    one thread (the other threads' work is not the timing thread's CPU time), thread spinning, a
    GPU device, or a platform without a fine thread CPU clock. threads None: not known here."""
    if clock != "cpu":
        return
    if threads is not None and int(threads) != 1:
        raise MeasurementError(
            f"threads {threads} with --clock cpu: the cpu clock needs 1 thread (it counts the CPU time of the "
            "timing thread only); use --threads 1 or --clock wall"
        )
    if spinning:
        raise MeasurementError(
            "thread spinning on with --clock cpu: the cpu clock needs 1 thread without spinning; "
            "use --spinning off or --clock wall"
        )
    if device not in ("cpu", "", None):
        raise MeasurementError(
            f"device {device} with --clock cpu: the cpu clock counts CPU time, not the GPU's; use --clock wall"
        )
    res = _thread_clock_resolution()
    if res > 1e-6:
        raise MeasurementError(
            f"--clock cpu needs a thread CPU clock of 1 microsecond or finer; this platform's "
            f"{'has none' if res == math.inf else f'resolves {res:g} s'}; use --clock wall"
        )


def busy_rounds(
    log: Sequence[tuple[int, float, bool]], walls: Sequence[float], threshold: float = BUSY_RATIO
) -> tuple[int, int]:
    """(busy rounds, rounds) of one config: its timed runs `log` ((round, CPU ms, discarded)) with
    their wall ms `walls`, grouped by round; a round is busy when the median wall / CPU ratio of its
    runs exceeds `threshold`. Runs without measurable CPU time are left out."""
    ratios: dict[int, list[float]] = {}
    for (rnd, ms, _), wall in zip(log, walls):
        if ms > 0:
            ratios.setdefault(rnd, []).append(wall / ms)
    busy = sum(float(np.median(r)) > threshold for r in ratios.values())
    return int(busy), len(ratios)


def quiet_walls(runs: Sequence[tuple[float, float]], threshold: float = BUSY_RATIO) -> list[float]:
    """Wall ms of the undisturbed runs among `runs` ((CPU ms, wall ms) of one config's timed runs):
    those whose wall time is within `threshold` x their CPU time (no other process held the core for
    long during the run). Their median is the wall-clock latency on a busy machine."""
    return [w for ms, w in runs if undisturbed(ms, w, threshold)]


def undisturbed(cpu_ms: float, wall_ms: float, threshold: float = BUSY_RATIO) -> bool:
    """Whether one run held its core: measurable CPU time and wall time within `threshold` x it."""
    return cpu_ms > 0 and wall_ms <= threshold * cpu_ms
