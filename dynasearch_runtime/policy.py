"""The serving policy: which requests the next batch takes and which sub-network runs it, so that as
many requests as possible meet their deadline and, among those choices, accuracy is highest.

Part of the device runtime (standard library only; relative imports, Python 3.8 syntax): the server
and the discrete-event simulator (`simulator`) call the very same object.

The rule (SlackFit's idea, SuperServe NSDI 2025: the oldest request's remaining slack bounds the
batch's time), in three steps per decision:
1. the batch: the oldest requests in arrival order, as many as `max_batch` texts allow (under load a
   bigger batch is what keeps up; every request waits in one FIFO queue and has the same SLO, so the
   oldest request's deadline is the batch's tightest), fewer when the fastest config could not end
   them all before that deadline (`trim`: the requests left wait for the next batch; shedding the
   oldest instead, `trim=False`, the rule before the comparison below, held less);
2. the sub-network, by `rule`:
   - "lookahead" (the default): the most accurate config whose latency for that batch (the measured
     table, times the online correction) ends before the oldest request's deadline AND leaves the
     next batch feasible: after it, the fastest config must still meet the deadline of the oldest
     request left waiting (a one-step look-ahead: accuracy-greedy choices would otherwise eat the
     slack of the requests behind them);
   - "greedy": the same without the look-ahead;
   - "slackfit": SuperServe's SlackFit as we read the paper (it profiles the latency of every
     (sub-network, batch size) pair, groups the pairs into latency buckets of equal width and, for
     the most urgent request's remaining slack, takes the bucket of the highest latency below the
     slack and in it the pair with the largest batch). Here: the buckets split [0, SLO] into
     `SLACKFIT_BUCKETS` equal widths; the pairs are every config with the oldest n requests (n up
     to `max_batch` texts; the table at the bucket of their longest text, times the online
     correction); pairs that end after the oldest's deadline are out; in the highest non-empty
     bucket the most texts win, then the most accurate config. Its batch can be smaller than step 1's;
   - "fastest": always the fastest config (the maximum-throughput baseline).
   A static config (the server's --static) is a table of that config alone: every rule is the same.
3. overload: when even the fastest config cannot meet the oldest deadline with the oldest alone,
   `overload="shed"` drops the requests whose deadline has become unreachable (the server answers
   them 503 with Retry-After) and decides again; `overload="late"` serves the whole batch (step 1
   untrimmed) with the fastest config, late.

Why "lookahead", by measurement (bench/policy_compare.py, bench/results/policy.md: the simulator,
three seeds, a synthetic table and the serving benchmark's calibrated CPU table, 1 and 8 texts a
request, every rule with the server's SLO margin; the issue's schedules low, high, step and bursts plus
medium, heavy = 0.7x the fastest config's capacity, and heavy bursts). On the issue's four schedules
every accurate rule holds 100% with one text a request and beats the best static config in hindsight
(calibrated: 73.12 effective accuracy for lookahead, 73.10 slackfit, 72.32 the best static). With one
text a request the look-ahead never binds (greedy decides the same); with 8 it does: the smallest
attainment over all seven schedules is 97.0% for lookahead against 94.4% for greedy and 91.3% for
slackfit (synthetic), 99.0% against 98.6% and 94.2% (calibrated). Slackfit's smaller batches of a more
accurate config (on a CPU they cost little throughput) win only beyond the issue's schedules with one
text a request: mean effective accuracy 65.56 against 65.38, at 99.1% smallest attainment against 100%.
Trimming the batch raised lookahead's smallest attainment from 98.1/95.5/92.2/98.2% to
99.3/97.0/100.0/99.0% (synthetic 1 and 8 texts, calibrated 1 and 8 texts).
"""

from __future__ import annotations

import math
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from . import bounds
from .errors import DynasearchError

OVERLOADS = ("late", "shed")
# The server's default SLO margin, a share of the SLO (see Policy): on the serving benchmark (AMD EPYC) a
# client's time beyond the server's was p50 2.2 ms, p99 4.2 ms at an SLO of 32.6 ms, and without a margin
# 52 of 69 late answers at high load had left the server in time.
MARGIN_SHARE = 0.1
RULES = ("fastest", "greedy", "lookahead", "slackfit")  # step 2 of the module docstring; bench/policy_compare.py
SLACKFIT_BUCKETS = 10  # slackfit's latency buckets: [0, SLO] in this many equal widths


class PolicyError(DynasearchError):
    """A policy or latency table that cannot be used (one line naming the value and what is allowed)."""


class Request(NamedTuple):
    id: int
    arrival_s: float  # when the request reached the server (its SLO counts from here)
    texts: int  # texts it carries (each request's SLO covers all of them)
    length: int  # its longest text in tokens (the batch pads to the bucket above the longest)


class Decision(NamedTuple):
    config: str  # key of the sub-network that runs the batch
    requests: Tuple[Request, ...]  # the batch, oldest first
    bucket: int  # padded length of the batch
    expected_ms: float  # the table's latency for it, times the online correction
    slack_ms: float  # the oldest request's time to its deadline when decided
    shed: Tuple[Request, ...] = ()  # requests dropped first (overload="shed": their deadline is out of reach)
    late: bool = False  # even the fastest config misses the oldest deadline (overload="late")


class LatencyTable:
    """lat(config, batch texts, padded length bucket) in ms, measured on the serving machine, and the
    configs' accuracy. Batch sizes between measured ones are interpolated linearly (latency grows
    close to linearly in the batch on a CPU); a batch above the largest measured is refused."""

    def __init__(
        self,
        accuracy: Dict[str, float],
        ms: Dict[Tuple[str, int, int], float],
    ) -> None:
        if not accuracy:
            raise PolicyError("a latency table needs at least one config")
        for key, acc in accuracy.items():
            bounds.check("metric", acc, f"accuracy of config {key}", PolicyError)
        batches: Dict[str, set] = {k: set() for k in accuracy}
        buckets: Dict[str, set] = {k: set() for k in accuracy}
        for (key, batch, bucket), v in ms.items():
            if key not in accuracy:
                raise PolicyError(f"latency table names config {key!r}, which has no accuracy")
            bounds.check("batch", batch, f"batch of config {key}", PolicyError)
            bounds.check("seq_len", bucket, f"length bucket of config {key}", PolicyError)
            bounds.check("latency_ms", v, f"latency of config {key} at batch {batch}, bucket {bucket}", PolicyError)
            batches[key].add(batch)
            buckets[key].add(bucket)
        first = next(iter(accuracy))
        for key in accuracy:
            if not batches[key]:
                raise PolicyError(f"config {key} has no latency in the table")
            if buckets[key] != buckets[first] or batches[key] != batches[first]:
                raise PolicyError(f"config {key} was measured at other batches or buckets than config {first}")
        self.accuracy = dict(accuracy)
        self.ms = dict(ms)
        self.batches = tuple(sorted(batches[first]))
        self.buckets = tuple(sorted(buckets[first]))
        # most accurate first; the fastest (batch 1, smallest bucket) breaks ties
        self.by_accuracy = tuple(
            sorted(accuracy, key=lambda k: (-accuracy[k], ms[(k, self.batches[0], self.buckets[0])], k))
        )
        self.fastest = min(accuracy, key=lambda k: (ms[(k, self.batches[-1], self.buckets[-1])], -accuracy[k], k))
        # texts -> (measured batch below, above, where between): the interpolation's ends, found once (a
        # decision asks for them a dozen times; see the decision time in docs/deployment.md)
        self._span: Dict[int, Tuple[int, int, float]] = {}
        for n in range(1, self.batches[-1] + 1):
            lo = max((b for b in self.batches if b <= n), default=self.batches[0])
            hi = min(b for b in self.batches if b >= n)
            self._span[n] = (lo, hi, 0.0 if hi == lo else (n - lo) / (hi - lo))

    @property
    def max_batch(self) -> int:
        return self.batches[-1]

    def bucket_for(self, length: int) -> int:
        """The smallest bucket that holds `length` tokens (the largest when none does: texts are truncated)."""
        for b in self.buckets:
            if length <= b:
                return b
        return self.buckets[-1]

    def latency(self, key: str, texts: int, bucket: int) -> float:
        if texts > self.max_batch:
            raise PolicyError(f"batch of {texts} texts is above the table's largest, {self.max_batch}")
        lo, hi, frac = self._span[texts] if texts > 0 else (self.batches[0], self.batches[0], 0.0)
        a = self.ms[(key, lo, bucket)]
        return a if hi == lo else a + (self.ms[(key, hi, bucket)] - a) * frac


class Policy:
    """The decision rule of the module docstring (`rule`: one of RULES; `trim`: step 1's trimming, off
    only to measure the rule without it). `observe(expected_ms, actual_ms)` corrects the table
    online: the ratio of observed to tabled batch times, smoothed (a busy or slower machine than the
    calibration's moves the choices to smaller configs; a faster one back)."""

    def __init__(
        self,
        table: LatencyTable,
        slo_ms: float,
        overload: str = "shed",
        max_batch: Optional[int] = None,
        smoothing: float = 0.2,
        rule: str = "lookahead",
        trim: bool = True,
        margin_ms: float = 0.0,
    ) -> None:
        bounds.check("latency_ms", slo_ms, "SLO", PolicyError)
        if overload not in OVERLOADS:
            raise PolicyError(f"unknown overload mode {overload!r}; allowed: {', '.join(OVERLOADS)}")
        if rule not in RULES:
            raise PolicyError(f"unknown policy rule {rule!r}; allowed: {', '.join(RULES)}")
        self.rule = rule
        self.trim = bool(trim)
        self.table = table
        self.slo_ms = float(slo_ms)
        # What a request needs beyond the server's own time (its HTTP path both ways, the client's parsing):
        # each batch is planned to end this much before the deadline (the server's default: MARGIN_SHARE of
        # the SLO, `serve_bundle.prepare_policy`).
        ok = isinstance(margin_ms, (int, float)) and not isinstance(margin_ms, bool) and math.isfinite(margin_ms)
        if not ok or not 0 <= margin_ms < self.slo_ms:
            raise PolicyError(f"SLO margin must be a number in [0, the SLO {self.slo_ms:g}) ms; got {margin_ms!r}")
        self.margin_ms = float(margin_ms)
        self.overload = overload
        self.max_batch = table.max_batch if max_batch is None else max_batch
        bounds.check("batch", self.max_batch, "max batch", PolicyError, high=table.max_batch)
        bounds.check("fraction", smoothing, "smoothing", PolicyError)
        self.smoothing = smoothing
        self.correction = 1.0
        floor = table.latency(table.fastest, 1, table.buckets[0])
        if self.slo_ms - self.margin_ms < floor:
            less = f" less its margin ({self.margin_ms:.3g} ms)" if self.margin_ms else ""
            raise PolicyError(
                f"SLO {self.slo_ms:g} ms{less} is below the fastest config's batch-1 latency here ({floor:.3g} ms); "
                f"the smallest SLO that can be held is {floor + self.margin_ms:.3g} ms"
            )

    def observe(self, expected_ms: float, actual_ms: float) -> None:
        """A finished batch: fold its observed / expected time ratio into the correction."""
        if expected_ms > 0 and actual_ms > 0 and math.isfinite(actual_ms):
            ratio = actual_ms / (expected_ms / self.correction)
            self.correction = (1 - self.smoothing) * self.correction + self.smoothing * ratio

    def _ms(self, key: str, batch: Sequence[Request]) -> Tuple[float, int]:
        bucket = self.table.bucket_for(max(r.length for r in batch))
        return self.table.latency(key, sum(r.texts for r in batch), bucket) * self.correction, bucket

    def _take(self, queue: Sequence[Request], start: int) -> List[Request]:
        """The oldest requests from `start` on, as many as max_batch texts hold (at least one)."""
        batch: List[Request] = []
        texts = 0
        for i in range(start, len(queue)):
            r = queue[i]
            if batch and texts + r.texts > self.max_batch:
                break
            batch.append(r)
            texts += r.texts
        return batch

    def _slackfit(self, queue: Sequence[Request], start: int, slack_ms: float) -> Optional[Decision]:
        """SlackFit (see the module docstring): among the (config, the oldest n requests) pairs that end
        within `slack_ms`, those in the highest latency bucket; of them the largest batch, then the most
        accurate config. None when not even the oldest request alone fits with the fastest config."""
        width = self.slo_ms / SLACKFIT_BUCKETS
        best: Optional[Tuple[Tuple[int, int, float, float], str, int, int, float]] = None
        texts, longest = 0, 0
        for n in range(start, len(queue)):
            r = queue[n]
            if n > start and texts + r.texts > self.max_batch:
                break
            texts, longest = texts + r.texts, max(longest, r.length)
            bucket = self.table.bucket_for(longest)
            for key in self.table.by_accuracy:
                ms = self.table.latency(key, texts, bucket) * self.correction
                if ms > slack_ms:
                    continue
                rank = (int(ms // width), texts, self.table.accuracy[key], -ms)
                if best is None or rank > best[0]:
                    best = (rank, key, n + 1, bucket, ms)
        if best is None:
            return None
        _, key, end, bucket, ms = best
        return Decision(key, tuple(queue[start:end]), bucket, ms, slack_ms)

    def deadline_s(self, r: Request) -> float:
        """When `r`'s batch must end: its arrival + the SLO - the margin."""
        return r.arrival_s + (self.slo_ms - self.margin_ms) / 1000.0

    def decide(self, now_s: float, queue: Sequence[Request]) -> Optional[Decision]:
        """The next batch and its config for `queue` (oldest first) at `now_s`; None for an empty queue.
        Reads at most two batches of the queue beyond what it sheds (no copy of it): a decision costs the same with 10 or
        10,000 requests waiting."""
        shed: List[Request] = []
        start = 0
        while start < len(queue):
            batch = self._take(queue, start)
            slack_ms = (self.deadline_s(batch[0]) - now_s) * 1000.0
            fast_ms, bucket = self._ms(self.table.fastest, batch)
            while self.trim and fast_ms > slack_ms and len(batch) > 1:
                batch.pop()  # fewer requests in time rather than the oldest shed (bench/results/policy.md)
                fast_ms, bucket = self._ms(self.table.fastest, batch)
            if fast_ms > slack_ms:
                if self.overload == "shed":
                    # the oldest cannot be served in time by any config: drop it and decide again
                    shed.append(queue[start])
                    start += 1
                    continue
                batch = self._take(queue, start)  # late anyway: the whole batch, for throughput
                fast_ms, bucket = self._ms(self.table.fastest, batch)
                return Decision(self.table.fastest, tuple(batch), bucket, fast_ms, slack_ms, tuple(shed), True)
            if self.rule == "fastest":
                return Decision(self.table.fastest, tuple(batch), bucket, fast_ms, slack_ms, tuple(shed))
            if self.rule == "greedy":
                for key in self.table.by_accuracy:  # the fastest fits, so one does
                    ms, bucket = self._ms(key, batch)
                    if ms <= slack_ms:
                        return Decision(key, tuple(batch), bucket, ms, slack_ms, tuple(shed))
            if self.rule == "slackfit":
                pick = self._slackfit(queue, start, slack_ms)
                assert pick is not None  # the fastest config fits the batch, so a fortiori its oldest request
                return pick._replace(shed=tuple(shed))
            # the next batch's deadline and time with the fastest config: what a choice must leave room for
            nxt = self._take(queue, start + len(batch)) if start + len(batch) < len(queue) else []
            nxt_deadline = self.deadline_s(nxt[0]) if nxt else 0.0
            nxt_ms = self._ms(self.table.fastest, nxt)[0] if nxt else 0.0
            texts = sum(r.texts for r in batch)  # the batch's cell, once for every config
            for key in self.table.by_accuracy:
                ms = self.table.latency(key, texts, bucket) * self.correction
                if ms > slack_ms:
                    continue
                if nxt and key != self.table.fastest and now_s + (ms + nxt_ms) / 1000.0 > nxt_deadline:
                    continue  # this config would leave the next batch no way to meet its deadline
                return Decision(key, tuple(batch), bucket, ms, slack_ms, tuple(shed))
            return Decision(self.table.fastest, tuple(batch), bucket, fast_ms, slack_ms, tuple(shed))
        return Decision("", (), 0, 0.0, 0.0, tuple(shed)) if shed else None
