"""The one timing protocol: statistics, warm-up, interleaved rounds, stopping rules.

Part of the device runtime (standard library + numpy; see `dynasearch_runtime`): a device without
torch times its models with the very same loop. Do not import torch or pandas here.

The protocol (`time_interleaved`), for a chunk of prepared configs:
1. warm-up, each config in turn: run until the median of the last `warmup_window` runs is within
   `warmup_tol` of the window before it (at least `warmup_min`, at most `warmup_max` runs or
   `warmup_max_seconds`);
2. rounds: every round visits the unfinished configs in a fresh random order (machine drift hits
   all of them alike); a visit does `rewarm_runs` untimed runs (caches were evicted by the other
   configs) then `runs_per_visit` timed runs;
3. a config is finished when the distribution-free confidence interval of its median (order
   statistics of the binomial(n, 1/2)) has a half-width within `rel_ci` of the median after at
   least `min_runs` runs taken in at least `min_visits` separate rounds ("converged": a median
   drawn from one moment of the machine can be 10-20% off on a shared host even with a tight
   CI, so it must span several moments), or at the cap: `max_runs` runs or `max_seconds` of timed
   runs (after at least 3 runs).
A timed run during which the process was preempted (an involuntary context switch: another
process took the core) is discarded and counted in `disturbed_runs`, so a shared machine yields
clean medians or says how busy it was. The Python garbage collector is off while timing.
Every timed run is logged with its round number, for the per-round speed correction
(`speed.py`) that the driver (`driver.py`) applies.

The clock (`Protocol.clock`): "wall" (the default) times each run with `time.perf_counter_ns`;
"cpu" with `time.thread_time_ns`, the CPU time of the timing thread, for measuring (and fitting)
on a busy machine: the time another process holds the core is wall time but not this thread's CPU
time. It is valid for single-thread settings only (onnxruntime with 1 intra-op thread and no
spinning, torch with torch.set_num_threads(1): both run the graph on the calling thread, whose CPU
time then equals the process's; see `check_clock`). With the cpu clock every run is also timed in
wall time: warm-up, statistics and speed correction are in CPU time (the caps' seconds stay
wall seconds: what a user waits), preempted runs are kept (their CPU time does not hold the
preemption), and each (config, round) whose median wall / CPU ratio exceeds `BUSY_RATIO` is a busy
round (`busy_rounds`, `busy_share`, and the wall median `wall_median_ms` of the same runs). A run
whose own wall / CPU ratio is within `BUSY_RATIO` is undisturbed: `quiet_runs` counts them and
`quiet_wall_median_ms` is their wall median, the latency a target is judged on when verifying on a
busy machine (wall time, without the time other processes held the core). `min_quiet_runs` keeps a
config from finishing (converged or capped) before it has that many undisturbed runs, up to the hard
caps of 3 x `max_seconds` and 3 x `max_runs` (verification asks for 3).
"""

from __future__ import annotations

import gc
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Dict, Mapping, Sequence, Tuple

import numpy as np

from . import bounds
from .clocks import BUSY_RATIO, CLOCKS, busy_rounds, check_clock, quiet_walls, undisturbed  # noqa: F401  (re-exported)
from .errors import MeasurementError
from .field_bounds import Field
from .stats import STATS_COLUMNS, ci_half_width, median_ci, summarize  # noqa: F401  (re-exported: used from here)

# ----------------------------------------------------------------------------------- protocol
# Every number of the protocol settings (records' protocol cell, kit.json's protocol) by its kind in the bounds
# table; Protocol also checks how they relate (max_runs >= min_runs, ...).
PROTOCOL_BOUNDS: Dict[str, str] = {
    "rel_ci": "fraction",
    "confidence": "confidence",
    "min_runs": "runs",
    "min_visits": "runs",
    "max_runs": "runs",
    "max_seconds": "duration_s",
    "runs_per_visit": "runs",
    "rewarm_runs": "runs0",
    "warmup_min": "runs0",
    "warmup_max": "runs0",
    "warmup_window": "runs",
    "warmup_tol": "fraction",
    "warmup_max_seconds": "duration0_s",
    "chunk_size": "chunk_size",
    "max_disturbed": "runs",
    "seed": "seed",
    "min_quiet_runs": "runs0",
}
PROTOCOL_FIELDS: Tuple[Field, ...] = tuple((name, kind, False) for name, kind in PROTOCOL_BOUNDS.items())


@dataclass(frozen=True)
class Protocol:
    """Settings of the timing loop (see the module docstring for what each one does)."""

    rel_ci: float = 0.01  # stop when the CI half-width of the median is within this fraction of it
    confidence: float = 0.95
    min_runs: int = 5
    min_visits: int = 3  # rounds that contributed timed runs before a config may converge
    max_runs: int = 40
    max_seconds: float = 4.0  # cap on timed seconds per config
    runs_per_visit: int = 3
    rewarm_runs: int = 1
    warmup_min: int = 3
    warmup_max: int = 30
    warmup_window: int = 3
    warmup_tol: float = 0.05
    warmup_max_seconds: float = 3.0
    chunk_size: int = 64  # configs alive (interleaved) at once; bounds memory (one extracted model each)
    discard_disturbed: bool = True  # drop timed runs during which another process preempted this one
    max_disturbed: int = 100  # stop a config after this many discarded runs (the machine is too busy)
    seed: int = 0
    clock: str = "wall"  # "wall" (perf_counter) or "cpu" (thread CPU time; single-thread settings only)
    # cpu clock: a config is not finished (converged or capped) before this many undisturbed runs
    # (wall <= BUSY_RATIO x CPU), up to the hard caps 3 x max_seconds, 3 x max_runs: verification judges their wall
    # median, and on a busy machine they come rarely (the wall clock's counterpart is max_disturbed).
    min_quiet_runs: int = 0

    def __post_init__(self) -> None:
        # Types first (a kit.json is edited by hand): "3", None, True or 2.5 for a count is one line, not a TypeError.
        for f in fields(self):
            value = getattr(self, f.name)
            ok = {
                "int": isinstance(value, int) and not isinstance(value, bool),
                "float": isinstance(value, (int, float)) and not isinstance(value, bool),
                "bool": isinstance(value, bool),
                "str": isinstance(value, str),
            }[f.type]
            if not ok:
                want = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}[f.type]
                raise MeasurementError(f"protocol setting {f.name} must be {want}; got {value!r}")
        if self.clock not in CLOCKS:
            raise MeasurementError(f"unknown clock {self.clock!r}; allowed: {', '.join(CLOCKS)}")
        if self.min_quiet_runs and self.clock != "cpu":
            raise MeasurementError(
                f"protocol setting min_quiet_runs {self.min_quiet_runs!r} needs the cpu clock (undisturbed runs are "
                "those whose wall time stays within 1.15 x their CPU time); got clock 'wall'"
            )
        for name, kind in PROTOCOL_BOUNDS.items():  # each number within its kind's range (the bounds table)
            bounds.check(kind, getattr(self, name), f"protocol setting {name}", MeasurementError)
        relations = [
            ("max_runs", self.max_runs >= self.min_runs, f">= min_runs ({self.min_runs})"),
            ("warmup_max", self.warmup_max >= self.warmup_min, f">= warmup_min ({self.warmup_min})"),
            # More could never be had: a config stops at 3 x max_runs runs whatever else.
            ("min_quiet_runs", self.min_quiet_runs <= 3 * self.max_runs, f"<= 3 x max_runs ({3 * self.max_runs})"),
        ]
        for name, ok, rule in relations:
            if not ok:
                raise MeasurementError(f"protocol setting {name} must be {rule}; got {getattr(self, name)!r}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Protocol":
        if not isinstance(data, Mapping):
            raise MeasurementError(f"protocol settings must be a JSON object; got {data!r}"[:200])
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise MeasurementError(f"unknown protocol setting(s) {unknown}; allowed: {sorted(known)}")
        return cls(**data)  # a protocol of older records has no clock: wall


def _time_ms(run: Callable[[], Any]) -> float:
    t0 = time.perf_counter_ns()
    run()
    return (time.perf_counter_ns() - t0) / 1e6


def _time_cpu(run: Callable[[], Any]) -> tuple[float, float]:
    """(CPU ms of this thread, wall ms) of one run."""
    c0 = time.thread_time_ns()
    t0 = time.perf_counter_ns()
    run()
    t1 = time.perf_counter_ns()
    c1 = time.thread_time_ns()
    return (c1 - c0) / 1e6, (t1 - t0) / 1e6


def _timed(run: Callable[[], Any], clock: str) -> tuple[float, float]:
    """(ms on the protocol's clock, wall ms) of one run."""
    if clock == "cpu":
        return _time_cpu(run)
    ms = _time_ms(run)
    return ms, ms


try:
    import resource

    def _preemptions() -> int:
        """Involuntary context switches of this process so far (all its threads): the kernel took
        a core away from it, i.e. another process competed for the CPU."""
        return resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw
except ImportError:  # Windows: no detection, every run counts as undisturbed

    def _preemptions() -> int:
        return 0


def _time_checked(run: Callable[[], Any], clock: str = "wall") -> tuple[float, float, bool]:
    """(ms on the clock, wall ms, disturbed): disturbed when the process was preempted during the run."""
    before = _preemptions()
    ms, wall = _timed(run, clock)
    return ms, wall, _preemptions() != before


@dataclass
class _State:
    key: str
    run: Callable[[], Any]
    times: list
    warmup_runs: int = 0
    busy_s: float = 0.0
    disturbed: int = 0
    visits: int = 0  # visits that added at least one clean timed run
    disturbed_times: list = field(default_factory=list)
    done: bool = False
    converged: bool = False
    error: str = ""
    log: list = field(default_factory=list)  # every timed run: (round, ms, disturbed)
    kept_disturbed: bool = False  # too busy: the disturbed runs were kept in `times`
    walls: list = field(default_factory=list)  # wall ms of every timed run, parallel to `log`
    quiet: int = 0  # cpu clock: timed runs whose wall time was within BUSY_RATIO x their CPU time


def _warm_up(st: _State, p: Protocol) -> None:
    times: list[float] = []
    t_start = time.perf_counter()
    w = p.warmup_window
    while len(times) < p.warmup_max:
        times.append(_timed(st.run, p.clock)[0])
        n = len(times)
        if n >= max(p.warmup_min, 2 * w):
            prev, last = float(np.median(times[-2 * w : -w])), float(np.median(times[-w:]))
            if abs(last - prev) <= p.warmup_tol * prev:
                break
        if n >= p.warmup_min and time.perf_counter() - t_start >= p.warmup_max_seconds:
            break
    st.warmup_runs = len(times)
    st.busy_s += time.perf_counter() - t_start


def _visit(st: _State, p: Protocol, rnd: int = 0, anchor: bool = False) -> None:
    """One visit in round `rnd`. The anchor is visited in every round and never finishes."""
    t_start = time.perf_counter()
    for _ in range(p.rewarm_runs):
        st.run()
    n_before = len(st.times)
    # The cpu clock keeps preempted runs: the time another process held the core is not in them.
    discard = p.discard_disturbed and p.clock == "wall"
    # Past max_runs only while waiting for undisturbed runs (min_quiet_runs): then a visit's usual count.
    waiting = st.quiet < p.min_quiet_runs
    room = p.runs_per_visit if waiting else max(p.max_runs - len(st.times), 0)
    for _ in range(p.runs_per_visit if anchor else min(p.runs_per_visit, room)):
        ms, wall, disturbed = _time_checked(st.run, p.clock)
        st.log.append((rnd, ms, disturbed and discard))
        st.walls.append(wall)
        st.quiet += p.clock == "cpu" and undisturbed(ms, wall)
        if disturbed and discard:
            st.disturbed += 1  # another process took the CPU: not this model's latency
            st.disturbed_times.append(ms)
        else:
            st.times.append(ms)
    st.busy_s += time.perf_counter() - t_start
    n = len(st.times)
    st.visits += n > n_before
    if anchor:
        return
    # The caps' seconds are wall seconds (what a user waits) on either clock.
    timed_s = (sum(st.times) + sum(st.disturbed_times)) / 1e3 if p.clock == "wall" else sum(st.walls) / 1e3
    if timed_s >= 3 * p.max_seconds or n >= 3 * p.max_runs:
        # The hard caps, whatever else; the runs cap bounds the rounds (and so the anchor's time, not
        # in timed_s) while a config waits for undisturbed runs on a busy machine.
        st.done = True
    elif st.quiet < p.min_quiet_runs:
        return  # cpu clock: not finished before enough undisturbed runs (see min_quiet_runs)
    if n >= p.min_runs and st.visits >= p.min_visits and ci_half_width(st.times, p.confidence) <= p.rel_ci:
        st.done, st.converged = True, True
    elif n >= p.max_runs or (n >= 3 and timed_s >= p.max_seconds) or st.disturbed >= p.max_disturbed or st.done:
        st.done = True
        if n < 3:  # a machine this busy leaves too few clean runs: keep the disturbed ones, flagged by the count
            st.times.extend(st.disturbed_times)
            st.kept_disturbed = True


def _error_text(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".replace("\n", " ").replace("\r", " ")
    return text[:500]


class _Rounds:
    """Round numbers of one run, shared by its chunks (so every round has its own number)."""

    def __init__(self, on_round: Callable[[int], None] | None = None):
        self.next = 0
        self.on_round = on_round

    def start(self) -> int:
        rnd, self.next = self.next, self.next + 1
        if self.on_round is not None:
            self.on_round(rnd)
        return rnd


def _interleave(
    states: Sequence[_State],
    protocol: Protocol,
    rng: random.Random,
    anchor: _State | None = None,
    rounds: _Rounds | None = None,
) -> None:
    """Warm up, then rounds in random order until every state is done; the anchor (already
    warm, or warmed here on its first chunk) joins every round."""
    rounds = rounds or _Rounds()
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        order = list(states) + ([anchor] if anchor is not None and not anchor.error and not anchor.warmup_runs else [])
        rng.shuffle(order)
        for st in order:
            try:
                _warm_up(st, protocol)
            except Exception as e:  # a crash or out-of-memory is recorded, the run goes on
                st.done, st.error = True, _error_text(e)
        while True:
            active = [st for st in states if not st.done]
            if not active:
                break
            if anchor is not None and not anchor.error:
                active.append(anchor)
            rnd = rounds.start()
            rng.shuffle(active)
            for st in active:
                try:
                    _visit(st, protocol, rnd, anchor=st is anchor)
                except Exception as e:
                    st.done, st.error = True, _error_text(e)
        if anchor is not None and not anchor.error and len(anchor.times) < 3 and not anchor.kept_disturbed:
            # The configs' rule for the anchor too (it never finishes, so _visit does not apply it): on a
            # machine this busy its disturbed runs are kept, flagged by the count, rather than losing the
            # speed correction and failing the anchor's own row.
            anchor.times.extend(anchor.disturbed_times)
            anchor.kept_disturbed = bool(anchor.disturbed_times)
    finally:
        if gc_was_enabled:
            gc.enable()


def _result(st: _State, protocol: Protocol) -> dict[str, Any]:
    if st.error or not st.times:
        busy = (
            f"no undisturbed timed run: all {st.disturbed} were preempted by other processes (the machine is too busy)"
        )
        return {
            "error": st.error or (busy if st.disturbed else "no timed runs"),
            "measure_s": st.busy_s,
            "warmup_runs": st.warmup_runs,
            "disturbed_runs": st.disturbed,
        }
    stats = summarize(st.times, protocol.confidence)
    stats.update(warmup_runs=st.warmup_runs, converged=st.converged, measure_s=st.busy_s, disturbed_runs=st.disturbed)
    if protocol.clock == "cpu":
        busy, rounds = busy_rounds(st.log, st.walls)
        used = [(ms, w) for (_, ms, d), w in zip(st.log, st.walls) if st.kept_disturbed or not d]
        quiet = quiet_walls(used)
        stats.update(
            busy_rounds=busy,
            busy_share=busy / rounds if rounds else 0.0,
            wall_median_ms=float(np.median([w for _, w in used])) if used else math.nan,
            quiet_runs=len(quiet),
            quiet_wall_median_ms=float(np.median(quiet)) if quiet else math.nan,
        )
    return stats


def _used(st: _State) -> list[tuple[int, float]]:
    """(round, ms) of the timed runs a config's statistics use."""
    return [(r, ms) for r, ms, d in st.log if st.kept_disturbed or not d]


def time_interleaved(
    runs: Sequence[tuple[str, Callable[[], Any]]], protocol: Protocol, rng: random.Random
) -> dict[str, dict[str, Any]]:
    """Time every (key, run_once) with the protocol, interleaved in random order across rounds.

    Returns key -> stats (see `summarize`) plus warmup_runs, converged, measure_s (and with the cpu
    clock busy_rounds, busy_share, wall_median_ms, quiet_runs, quiet_wall_median_ms), or key -> {"error": ...} for a config whose run
    raised (it is dropped; the others go on)."""
    states = [_State(key, run, []) for key, run in runs]
    _interleave(states, protocol, rng)
    return {st.key: _result(st, protocol) for st in states}
