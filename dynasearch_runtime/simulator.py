"""A discrete-event simulator of one serving worker: replays an arrival schedule through the serving
policy (`policy.Policy`) and a latency table, deterministically, for the policy's tests and the
simulated column of the serving benchmark.

Part of the device runtime (standard library only; relative imports, Python 3.8 syntax).

One worker runs one batch at a time, as the server does: whenever it is idle and the queue holds
requests it asks the policy for the next batch, runs it for the table's latency times `slowdown`
(a busy or slower machine than the table's), then tells the policy the observed time (its online
correction). Arrival schedules: `poisson(rates, seed)` draws open-loop Poisson arrivals for a
piecewise-constant rate schedule (constant, steps, bursts). `capacity(...)` bisects the Poisson rate
a policy holds at >= 99% SLO attainment (a config's capacity when the policy's table has it alone).
"""

from __future__ import annotations

import math
import random
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from . import bounds
from .policy import Decision, Policy, PolicyError, Request


class Served(NamedTuple):
    request: Request
    config: str  # "" when shed
    start_s: float
    end_s: float  # when the answer left (the batch's end); the shed time for a shed request
    shed: bool

    @property
    def latency_ms(self) -> float:
        return (self.end_s - self.request.arrival_s) * 1000.0


class Outcome(NamedTuple):
    served: Tuple[Served, ...]
    decisions: Tuple[Decision, ...]
    slo_ms: float

    def attainment(self) -> float:
        """Share of requests answered within the SLO (a shed request is a miss)."""
        if not self.served:
            return float("nan")
        ok = sum(1 for s in self.served if not s.shed and s.latency_ms <= self.slo_ms + 1e-9)
        return ok / len(self.served)

    def effective_accuracy(self, accuracy: Dict[str, float]) -> float:
        """Expected share of requests answered correctly AND within the SLO (a config's accuracy as the
        chance its answer is right; Model-Switching's "effective accuracy")."""
        if not self.served:
            return float("nan")
        total = sum(accuracy[s.config] for s in self.served if not s.shed and s.latency_ms <= self.slo_ms + 1e-9)
        return total / len(self.served)

    def served_accuracy(self, accuracy: Dict[str, float]) -> float:
        """Expected accuracy of the answers given (late ones included; shed requests count as wrong)."""
        if not self.served:
            return float("nan")
        return sum(accuracy[s.config] for s in self.served if not s.shed) / len(self.served)

    def percentile_ms(self, q: float) -> float:
        return percentile([s.latency_ms for s in self.served if not s.shed], q)

    def switches(self) -> int:
        """How often the config changed from one batch to the next."""
        keys = [d.config for d in self.decisions if d.requests]
        return sum(1 for a, b in zip(keys, keys[1:]) if a != b)


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank q-th percentile (NaN for none): what the simulator and the load test report."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, int(math.ceil(q / 100.0 * len(ordered))) - 1))]


def poisson(
    schedule: Sequence[Tuple[float, float]],
    seed: int = 0,
    texts: int = 1,
    length: int | Callable[[random.Random], int] = 64,
) -> List[Request]:
    """Open-loop arrivals: `schedule` is [(seconds, requests per second), ...], each phase's Poisson
    arrivals after the one before; every request carries `texts` texts of `length` tokens (or a
    length drawn by the callable from the seeded generator)."""
    rng = random.Random(seed)
    out: List[Request] = []
    start = 0.0
    for i, (seconds, rate) in enumerate(schedule):
        bounds.check("duration_s", seconds, f"schedule phase {i}'s seconds", PolicyError)
        bounds.check("rate", rate, f"schedule phase {i}'s rate", PolicyError)
        t = start
        while True:
            t += rng.expovariate(rate)
            if t >= start + seconds:
                break
            n = length(rng) if callable(length) else length
            out.append(Request(len(out), t, texts, n))
        start += seconds
    return out


def capacity(
    make_policy: Callable[[], Policy],
    seconds: float = 20.0,
    seeds: Sequence[int] = (0,),
    target: float = 0.99,
    texts: int = 1,
    length: int | Callable[[random.Random], int] = 64,
    rel_tol: float = 0.02,
    min_requests: int = 0,
) -> float:
    """The highest Poisson rate (requests/s) at which a fresh `make_policy()` keeps SLO attainment >=
    `target` on every seed's constant schedule of `seconds`, or longer where that holds fewer than
    `min_requests` arrivals at the probed rate (99% of 30 requests says little; an hour at most).
    The serving benchmark's capacity of a config: a policy over a table of that config alone.
    Bisection between 0 and the rate of back-to-back full batches of the table's fastest config, to
    `rel_tol` of the upper end; returns the lower end (a rate that held). Attainment need not fall
    monotonically with the rate on one seed: several seeds make the answer less lumpy."""
    bounds.check("duration_s", seconds, "capacity's seconds", PolicyError)
    bounds.check("fraction", target, "capacity's target attainment", PolicyError)
    bounds.check("fraction", rel_tol, "capacity's relative tolerance", PolicyError)
    if not seeds:
        raise PolicyError("capacity needs at least one seed")
    if isinstance(min_requests, bool) or not isinstance(min_requests, int) or min_requests < 0:
        raise PolicyError(f"capacity's min_requests must be an integer >= 0; got {min_requests!r}")
    probe = make_policy()
    per_batch = max(1, probe.max_batch // texts)
    table = probe.table
    longest = table.buckets[-1] if callable(length) else table.bucket_for(length)
    batch_ms = table.latency(table.fastest, per_batch * texts, longest)
    lo, hi = 0.0, per_batch * 1000.0 / batch_ms

    def holds(rate: float) -> bool:
        for seed in seeds:
            span = max(seconds, min(min_requests / rate, 3600.0))  # an hour at most: a rate near 0 holds little
            arrivals = poisson([(span, rate)], seed=seed, texts=texts, length=length)
            if arrivals and simulate(make_policy(), arrivals).attainment() < target:
                return False
        return True

    if holds(hi):
        return hi
    while hi - lo > rel_tol * hi:
        mid = (lo + hi) / 2.0
        if holds(mid):
            lo = mid
        else:
            hi = mid
    return lo


def simulate(
    policy: Policy,
    arrivals: Sequence[Request],
    slowdown: Callable[[float], float] | float = 1.0,
) -> Outcome:
    """Replay `arrivals` (sorted by arrival) through `policy`; each batch takes the table's latency
    times `slowdown` (a number, or a function of the batch's start time for a machine that becomes
    busy). Deterministic: the same inputs give the same outcome."""
    slow: Callable[[float], float] = slowdown if callable(slowdown) else (lambda _t, s=float(slowdown): s)
    pending = sorted(arrivals, key=lambda r: (r.arrival_s, r.id))
    queue: List[Request] = []
    served: List[Served] = []
    decisions: List[Decision] = []
    now = 0.0
    i = 0
    while i < len(pending) or queue:
        while i < len(pending) and pending[i].arrival_s <= now + 1e-12:
            queue.append(pending[i])
            i += 1
        if not queue:
            now = pending[i].arrival_s
            continue
        d: Optional[Decision] = policy.decide(now, queue)
        if d is None:  # pragma: no cover - the queue is not empty here
            break
        decisions.append(d)
        gone = {r.id for r in d.shed} | {r.id for r in d.requests}
        for r in d.shed:
            served.append(Served(r, "", now, now, True))
        queue = [r for r in queue if r.id not in gone]
        if not d.requests:
            continue
        table_ms = d.expected_ms / policy.correction
        actual_ms = table_ms * slow(now)
        end = now + actual_ms / 1000.0
        for r in d.requests:
            served.append(Served(r, d.config, now, end, False))
        policy.observe(d.expected_ms, actual_ms)
        now = end
    served.sort(key=lambda s: s.request.id)
    return Outcome(tuple(served), tuple(decisions), policy.slo_ms)
