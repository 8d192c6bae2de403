"""The serving policy: which requests the next batch takes and which sub-network runs it, so that as
many requests as possible meet their deadline and, among those choices, accuracy is highest.

Part of the device runtime (standard library only; relative imports, Python 3.8 syntax): the server
and the discrete-event simulator (`simulator`) call the very same object.

The rule (SlackFit's idea, SuperServe NSDI 2025: the oldest request's remaining slack bounds the
batch's time), in three steps per decision:
1. the batch: the oldest requests in arrival order, as many as `max_batch` texts allow (under load a
   bigger batch is what keeps up; every request waits in one FIFO queue and has the same SLO, so the
   oldest request's deadline is the batch's tightest);
2. the sub-network: the most accurate config whose latency for that batch (the measured table, times
   the online correction) ends before the oldest request's deadline AND leaves the next batch
   feasible: after it, the fastest config must still meet the deadline of the oldest request left
   waiting (a one-step look-ahead: accuracy-greedy choices would otherwise eat the slack of the
   requests behind them and the queue would tip into misses);
3. overload: when even the fastest config cannot meet the oldest deadline, `overload="shed"` drops
   the requests whose deadline has become unreachable (the server answers them 503 with Retry-After)
   and decides again; `overload="late"` serves them with the fastest config, late.
"""

from __future__ import annotations

import math
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from . import bounds
from .errors import DynasearchError

OVERLOADS = ("late", "shed")


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
        lo = max((b for b in self.batches if b <= texts), default=self.batches[0])
        hi = min((b for b in self.batches if b >= texts), default=self.batches[-1])
        a, b = self.ms[(key, lo, bucket)], self.ms[(key, hi, bucket)]
        if hi == lo:
            return a
        return a + (b - a) * (texts - lo) / (hi - lo)


class Policy:
    """The decision rule of the module docstring. `observe(expected_ms, actual_ms)` corrects the table
    online: the ratio of observed to tabled batch times, smoothed (a busy or slower machine than the
    calibration's moves the choices to smaller configs; a faster one back)."""

    def __init__(
        self,
        table: LatencyTable,
        slo_ms: float,
        overload: str = "shed",
        max_batch: Optional[int] = None,
        smoothing: float = 0.2,
    ) -> None:
        bounds.check("latency_ms", slo_ms, "SLO", PolicyError)
        if overload not in OVERLOADS:
            raise PolicyError(f"unknown overload mode {overload!r}; allowed: {', '.join(OVERLOADS)}")
        self.table = table
        self.slo_ms = float(slo_ms)
        self.overload = overload
        self.max_batch = table.max_batch if max_batch is None else max_batch
        bounds.check("batch", self.max_batch, "max batch", PolicyError, high=table.max_batch)
        bounds.check("fraction", smoothing, "smoothing", PolicyError)
        self.smoothing = smoothing
        self.correction = 1.0
        floor = table.latency(table.fastest, 1, table.buckets[0])
        if self.slo_ms < floor:
            raise PolicyError(
                f"SLO {self.slo_ms:g} ms is below the fastest config's batch-1 latency here ({floor:.3g} ms); "
                f"the smallest SLO that can be held is {floor:.3g} ms"
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

    def deadline_s(self, r: Request) -> float:
        return r.arrival_s + self.slo_ms / 1000.0

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
            if fast_ms > slack_ms:
                if self.overload == "shed":
                    # the oldest cannot be served in time by any config: drop it and decide again
                    shed.append(queue[start])
                    start += 1
                    continue
                return Decision(self.table.fastest, tuple(batch), bucket, fast_ms, slack_ms, tuple(shed), True)
            # the next batch's deadline and time with the fastest config: what a choice must leave room for
            nxt = self._take(queue, start + len(batch)) if start + len(batch) < len(queue) else []
            nxt_deadline = self.deadline_s(nxt[0]) if nxt else 0.0
            nxt_ms = self._ms(self.table.fastest, nxt)[0] if nxt else 0.0
            for key in self.table.by_accuracy:
                ms, bucket = self._ms(key, batch)
                if ms > slack_ms:
                    continue
                if nxt and key != self.table.fastest and now_s + (ms + nxt_ms) / 1000.0 > nxt_deadline:
                    continue  # this config would leave the next batch no way to meet its deadline
                return Decision(key, tuple(batch), bucket, ms, slack_ms, tuple(shed))
            return Decision(self.table.fastest, tuple(batch), bucket, fast_ms, slack_ms, tuple(shed))
        return Decision("", (), 0, 0.0, 0.0, tuple(shed)) if shed else None
