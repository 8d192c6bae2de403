"""The two things the search sees: an accuracy evaluator and a latency estimator.

AccuracyEvaluator: the task metric of the ACTIVE sub-network of one loaded checkpoint on a dev
selection tokenised once, answered from the storage's cache whenever that (checkpoint digest,
selection, key) was evaluated before. LatencyEstimator: a fitted predictor at its own setting,
checked against the backbone and against the per-layer widths it was fitted on.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dynabert.io import process_tag
from dynabert.killpoints import kill_point
from dynabert.space import SearchSpace
from dynabert.subnet import BackboneShape, SubnetConfig
from predictors.errors import PredictorError

from .errors import SearchError
from .racing import RACEABLE_METRICS, RaceResult, race
from .storage import AccuracyCache

SHAPE_FIELDS = ("num_layers", "num_heads", "head_dim", "hidden_size", "intermediate_size")


@dataclass
class Counters:
    """Where a search's time goes (seconds) and how often the cache answered."""

    evaluations: int = 0
    cache_hits: int = 0
    evaluation_s: float = 0.0
    prediction_s: float = 0.0
    measurement_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def cache_selection(dev: Any, bf16: bool, precision: str = "fp32") -> str:
    """The accuracy cache's selection key: every input of a score besides the checkpoint (its own
    key column) and the sub-network: the digest of the tokenised dev selection (examples, order,
    tokenizer, length, labels) and the evaluation's precision (fp32, bf16 matrix products, or the
    onnxruntime int8 model). Caches written before this key ("all", "subset-N-seedS") never match
    it, so they are not reused wrongly."""
    if precision == "int8":
        return f"v2-{dev.digest}-int8"
    return f"v2-{dev.digest}-{'bf16' if bf16 else 'fp32'}"


class AccuracyEvaluator:
    """metric(subnet, full=False): percent on the ranking examples (or, full=True, the report ones).

    chunks: the ranking examples cut for racing (search/racing.py); None or one chunk: every config
    is scored on all of them at once. A score on chunks is their example-weighted mean (exact for
    accuracy, the only metric raced)."""

    def __init__(
        self,
        model,
        metrics: Sequence[str],
        dev_search,
        dev_full,
        digest: str,
        cache: AccuracyCache,
        bf16: bool = False,
        counters: Counters | None = None,
        chunks: Sequence[Any] | None = None,
        precision: str = "fp32",
        int8_dir: str | Path | None = None,
    ):
        self.model, self.metrics, self.digest, self.cache, self.bf16 = model, tuple(metrics), digest, cache, bf16
        # int8: each config is extracted, exported, quantised (onnxruntime dynamic QInt8, cached in
        # int8_dir) and scored by running the quantised ONNX model: its metric is measured, never assumed.
        self.precision, self.int8_dir = precision, int8_dir
        self._int8_last: str | None = None  # the config whose int8 files int8_dir holds
        self.dev = {"search": dev_search, "full": dev_full}
        self.counters = counters or Counters()
        self.chunks = list(chunks) if chunks and len(chunks) > 1 and self.metric in RACEABLE_METRICS else None

    @property
    def metric(self) -> str:
        return self.metrics[0]

    @property
    def racing(self) -> bool:
        return self.chunks is not None

    def selection(self, full: bool = False) -> str:
        return self.dev["full" if full else "search"].selection

    def cache_selection(self, full: bool = False) -> str:
        """The cache's selection key of the search (or full) dev set: see `cache_selection`. Racing
        scores the ranking part chunk by chunk: every evaluation starts with the first chunk, whose
        key counts the evaluations."""
        if not full and self.chunks:
            return cache_selection(self.chunks[0], self.bf16, self.precision)
        return cache_selection(self.dev["full" if full else "search"], self.bf16, self.precision)

    def _score_on(self, dev, subnet: SubnetConfig) -> tuple[float, bool]:
        from dynabert.evaluate import score_subnet  # torch: not on the --help path

        selection = cache_selection(dev, self.bf16, self.precision)
        hit = self.cache.get(self.digest, selection, subnet.key)
        if hit is not None and self.metric in hit.metrics:
            self.counters.cache_hits += 1
            return float(hit.metrics[self.metric]), True
        kill_point("trial-evaluating")
        t0 = time.perf_counter()
        if self.precision == "int8":
            scores = self._score_int8(dev, subnet)
        else:
            scores = score_subnet(self.model, dev, subnet, self.metrics, self.bf16)
        secs = time.perf_counter() - t0
        kill_point("cache-put")
        self.cache.put(self.digest, selection, subnet.key, scores, secs)
        self.counters.evaluations += 1
        self.counters.evaluation_s += secs
        self.counters.extra["examples_scored"] = self.counters.extra.get("examples_scored", 0) + dev.n
        return float(scores[self.metric]), False

    def _score_int8(self, dev, subnet: SubnetConfig) -> dict[str, float]:
        """The metric of the quantised ONNX model. Its files (~4x smaller than fp32, still tens of MB
        for a full MiniLM) are kept for the last config only: racing chunks reuse them."""
        from dynabert.quantize import quantized_subnet, score_onnx  # onnxruntime: not on the --help path
        from predictors.backends import ONNX_TMP_PREFIX, remove_dead_onnx_folders  # the same

        if self.int8_dir is None:  # a killed run's folder is removed by the next run (its PID is dead)
            remove_dead_onnx_folders()
            self.int8_dir = tempfile.mkdtemp(prefix=f"{ONNX_TMP_PREFIX}{process_tag()}-int8-")
        if self._int8_last not in (None, subnet.key):
            for f in Path(self.int8_dir).glob(f"{self._int8_last}-*"):
                f.unlink(missing_ok=True)
        self._int8_last = subnet.key
        try:
            return score_onnx(quantized_subnet(self.model, subnet, self.int8_dir), dev, self.metrics)
        except BaseException:
            shutil.rmtree(self.int8_dir, ignore_errors=True)
            self.int8_dir = None
            raise

    def close(self) -> None:
        """Remove the int8 files this evaluator made."""
        if self.precision == "int8" and self.int8_dir is not None:
            shutil.rmtree(self.int8_dir, ignore_errors=True)
            self.int8_dir = None

    def score(self, subnet: SubnetConfig, full: bool = False) -> tuple[float, bool]:
        """(primary metric in percent, True when answered from the cache): on the report examples
        (full), or on every ranking example (all chunks when racing)."""
        if full or not self.chunks:
            return self._score_on(self.dev["full" if full else "search"], subnet)
        r = self.rank(subnet, None)
        return r.metric, r.cached

    def rank(self, subnet: SubnetConfig, best_at_latency: float | None) -> RaceResult:
        """The ranking score of a proposal, raced against the front at its latency (racing.race)."""
        if not self.chunks:
            value, hit = self._score_on(self.dev["search"], subnet)
            return RaceResult(value, self.dev["search"].n, False, 1, hit)
        r = race(lambda i: self._score_on(self.chunks[i], subnet), [c.n for c in self.chunks], best_at_latency)
        if r.stopped and not r.cached:
            self.counters.extra["stopped_early"] = self.counters.extra.get("stopped_early", 0) + 1
        return r


class LatencyEstimator:
    """Predicted milliseconds of sub-networks at one (batch, seq_len) of a fitted predictor."""

    def __init__(
        self,
        predictor,
        shape: BackboneShape,
        batch: int | None = None,
        seq_len: int | None = None,
        counters: Counters | None = None,
        source: str | Path | None = None,
    ):
        self.predictor, self.source = predictor, str(source) if source else None
        self.counters = counters or Counters()
        fitted = predictor.fitted_on
        ps = predictor.shape_
        diffs = [
            f"{f} {getattr(ps, f)} vs {getattr(shape, f)}" for f in SHAPE_FIELDS if getattr(ps, f) != getattr(shape, f)
        ]
        if diffs:
            raise SearchError(
                f"predictor {self.source or ''} was fitted for another backbone ({'; '.join(diffs)}: predictor vs model)"
            )
        shapes = list(fitted.shapes)
        b0, s0 = shapes[0]
        self.batch = int(b0 if batch is None else batch)
        self.seq_len = int(s0 if seq_len is None else seq_len)
        if not fitted.across_shapes and (self.batch, self.seq_len) not in shapes:
            raise SearchError(
                f"predictor {self.source or ''} was fitted for (batch, seq_len) {shapes}; asked ({self.batch}, {self.seq_len}): "
                "measure that shape and fit again, or fit one across shapes (--across-shapes)"
            )
        if fitted.across_shapes:
            bs, ss = fitted.batches, fitted.seq_lens
            if not (min(bs) <= self.batch <= max(bs) and min(ss) <= self.seq_len <= max(ss)):
                raise SearchError(
                    f"(batch {self.batch}, seq_len {self.seq_len}) is outside the predictor's fitted ranges "
                    f"batch {min(bs)}-{max(bs)}, seq_len {min(ss)}-{max(ss)}"
                )
        try:
            predictor.predict([SubnetConfig.full(ps)], self.batch, self.seq_len)
        except PredictorError as e:
            raise SearchError(f"predictor {self.source or ''} cannot price this shape: {e}") from None

    @property
    def setting(self) -> dict[str, Any]:
        fitted = self.predictor.fitted_on
        keys = (
            "kind",
            "backend",
            "device",
            "provider",
            "threads",
            "spinning",
            "dtype",
            "cpu_model",
            "cpu_cores",
            "gpu_name",
            "fingerprint",
            "target_id",
        )
        return {**{k: getattr(fitted, k) for k in keys}, "batch": self.batch, "seq_len": self.seq_len}

    def predict(self, subnets: Sequence[SubnetConfig]) -> np.ndarray:
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = np.asarray(self.predictor.predict(list(subnets), self.batch, self.seq_len), dtype=float)
        self.counters.prediction_s += time.perf_counter() - t0
        return out

    def unmeasured_widths(self, space: SearchSpace) -> dict[str, list[int]] | None:
        """Widths the space offers that the predictor never measured (None: the predictor does not
        record what it was fitted on). A zero width (the sub-block skipped) needs no measurement."""
        seen = self.predictor.fitted_on.widths_seen
        if seen is None:
            return None
        out = {
            "heads": [h for h in space.head_choices if h and h not in set(seen.heads)],
            "ffn": [f for f in space.ffn_choices if f and f not in set(seen.ffn)],
        }
        return out

    def fastest(self, space: SearchSpace) -> tuple[SubnetConfig, float]:
        """The fastest sub-network of the space by prediction: min_layers layers, each at the
        cheapest (heads, FFN) pair the predictor prices (checked over every pair and depth, since
        a learned predictor need not be monotone)."""
        cands = []
        for depth in range(
            space.min_layers, (space.shape.num_layers if space.allow_drop else space.shape.num_layers) + 1
        ):
            if not space.allow_drop and depth != space.shape.num_layers:
                continue
            for h in space.head_choices:
                for f in space.ffn_choices:
                    if h or f:
                        cands.append(SubnetConfig(tuple(range(depth)), (h,) * depth, (f,) * depth))
            if len(cands) > 2000:
                break
        ms = self.predict(cands)
        i = int(np.argmin(ms))
        return cands[i], float(ms[i])


def check_widths(estimator: LatencyEstimator, space: SearchSpace, allow_unmeasured: bool) -> str | None:
    """Refuse (or, when allowed, return a warning) if the search would ask the predictor to price
    widths it never measured: a predictor priced 20 configs with unmeasured head counts and FFN
    steps of 64 at 3.6% MAPE (max 10.3%) against 2.0% on its measured widths."""
    missing = estimator.unmeasured_widths(space)
    if missing is None:
        return (
            f"predictor {estimator.source or ''} does not record which per-layer widths it was fitted on "
            "(fitted by an older dynasearch): its error on the space's widths is unknown"
        )
    if not missing["heads"] and not missing["ffn"]:
        return None
    seen = estimator.predictor.fitted_on.widths_seen
    msg = (
        f"the search space offers widths the predictor never measured (heads {missing['heads'] or 'none'}, "
        f"FFN {missing['ffn'] or 'none'}; measured heads {list(seen.heads)}, FFN {list(seen.ffn)})"
    )
    if not allow_unmeasured:
        raise SearchError(
            msg + ": measure those widths (dynasearch measure --sampler layer-table with the same choices) and "
            "fit again, restrict --head-choices/--ffn-choices, or pass --allow-unmeasured-widths"
        )
    return msg + ": its predictions there are extrapolations"


def cpu_clock_note(predictor_dir: str | Path | None) -> str:
    """The warning for a predictor fitted on CPU-clock records (measure --clock cpu): it prices the timing
    thread's CPU time, which is the wall time only while that thread holds its core, and the target and
    verification judge wall time (a machine busy when deployed runs slower than predicted)."""
    return (
        f"predictor {predictor_dir or ''} was fitted on CPU-clock records (--clock cpu): it predicts CPU time, "
        "while the target and its verification are wall time (the two agree only while the inference thread "
        "keeps its core)"
    )
