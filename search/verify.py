"""Verified answers: the search's candidates measured as EXTRACTED models on this machine.

A predictor is a model of the hardware, not the hardware: a well-known search tool returned a
"200 ms" answer that measured 270 ms. So the feasible candidates are taken best metric first,
measured with the predictor's own setting (backend, threads, batch, length) in small interleaved
groups, and the first whose measured latency meets the target is the answer. The measurement rows
are appended to RESULTS/measured.csv (a records file `dynasearch fit-predictor` reads).
When the records carry a speed-corrected median (an anchor config timed in every round), the
target is judged on the corrected value unless `raw`.

On a busy machine (verify_protocol, busy_note): targets are wall time, but the wall time of a run
during which another process held the core is not the model's. Where the setting allows it (one CPU
thread, no spinning) verification times every run on both clocks, the timing thread's CPU time and
wall time, and judges the wall median of the undisturbed runs (wall within 1.15 x CPU); a config
with fewer than MIN_QUIET_RUNS of them is judged on all its runs (pessimistic) and measured again by
the next run. Multi-thread settings keep the wall clock, whose preempted runs are discarded. Either
way the search says how busy the machine was and what was judged.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dynabert.subnet import BackboneShape, SubnetConfig
from dynasearch_runtime.clocks import BUSY_RATIO
from dynasearch_runtime.schema import protocol_clock
from predictors import (
    MeasurementError,
    Protocol,
    check_clock,
    check_this_machine,
    load_predictor,
    load_shape,
    predictor_settings,
    read_records,
    verify_latency,
)
from predictors.errors import PredictorError

from .errors import SearchError
from .results import load_results, write_results

PERCENTILES = {"p50": "median_ms", "p90": "p90_ms"}
MEASURED_FILE = "measured.csv"


def check_machine(predictor, settings) -> None:
    """Refuse, naming both fingerprints, when this machine is not the one the predictor was fitted on."""
    try:
        check_this_machine(predictor, settings)
    except PredictorError as e:
        raise SearchError(
            f"cannot verify on this machine: {e}; pass --no-verify (answers are then predictions), or search "
            "with a predictor fitted here"
        ) from None


# The speed correction stands for drift (a shared host, turbo, throttling: 10-30% within minutes).
# A speed index beyond this factor is not drift but another machine state or a predictor that is
# off: correcting by it would hide exactly the miss verification exists to catch, so the raw value
# is judged then (and the search warns).
MAX_DRIFT = 1.4


# With the cpu clock, a config needs this many undisturbed runs for their wall median to be judged;
# with fewer (the machine was busy throughout) the wall median of all its runs is judged: pessimistic.
MIN_QUIET_RUNS = 3
# The verification note says the machine was busy when more than this share of the measured configs'
# rounds were busy (cpu clock) or of their timed runs were preempted and discarded (wall clock).
BUSY_NOTE_SHARE = 0.10


@dataclass
class Measured:
    """What verification measured of one config. raw_ms: the WALL-clock latency judged (with the cpu
    clock: the wall median of its undisturbed runs), corrected_ms: the same speed-corrected."""

    key: str
    raw_ms: float
    corrected_ms: float | None
    speed_index: float | None
    clock: str = "wall"
    busy_share: float = 0.0  # cpu clock: share of busy rounds; wall clock: share of preempted (discarded) runs
    runs: int = 0  # timed runs
    undisturbed_runs: int = 0  # timed runs that held their core (cpu clock) or were not preempted (wall clock)
    busy_throughout: bool = False  # cpu clock, fewer than MIN_QUIET_RUNS undisturbed runs: all runs judged

    def answer_fields(self) -> dict[str, Any]:
        """What an answer records of its verification (search.json, query --verify)."""
        return {
            "speed_index": self.speed_index,
            "verify_clock": self.clock,
            "busy_share": round(self.busy_share, 4),
            "undisturbed_runs": self.undisturbed_runs,
            "timed_runs": self.runs,
        }

    @property
    def drift_ok(self) -> bool:
        return self.speed_index is None or 1 / MAX_DRIFT <= self.speed_index <= MAX_DRIFT

    def judged(self, raw: bool) -> float:
        """The latency a target is judged on: speed-corrected unless `raw` or the speed index is
        beyond plausible drift (MAX_DRIFT)."""
        return self.raw_ms if raw or self.corrected_ms is None or not self.drift_ok else self.corrected_ms


def _num(value: Any) -> float:
    v = pd.to_numeric(value, errors="coerce")
    return math.nan if pd.isna(v) else float(v)


def _count(value: Any) -> int:
    v = _num(value)
    return 0 if math.isnan(v) else int(v)


def measured_from_row(r: Any, percentile: str) -> Measured:
    """One measured.csv row (records format) as the verification reads it. With the cpu clock the
    CPU-time medians are not what a target means (a user waits wall time): the wall median of the
    undisturbed runs is judged (at p90 scaled by the row's p90 / median), speed-corrected by the
    row's own correction factor (corrected / raw median, on the CPU clock)."""
    median = float(r["median_ms"])
    ratio = float(r[PERCENTILES[percentile]]) / median  # the percentile against the median, on the row's clock
    corr = _num(r.get("corrected_median_ms"))
    factor = math.nan if math.isnan(corr) else corr / median  # the speed correction is one factor per config
    speed = _num(r.get("speed_index"))
    n, disturbed = _count(r.get("n_runs")), _count(r.get("disturbed_runs"))
    clock = protocol_clock(r.get("protocol"))
    if clock == "cpu":
        quiet_runs = _count(r.get("quiet_runs"))
        quiet = _num(r.get("quiet_wall_median_ms"))
        wall_all = _num(r.get("wall_median_ms"))
        throughout = not (quiet_runs >= MIN_QUIET_RUNS and quiet > 0)
        wall = wall_all if throughout else quiet
        if not wall > 0:  # an older row without wall columns: its CPU median
            wall, throughout = median, False
        raw = wall * ratio
        busy, undisturbed = _num(r.get("busy_share")), quiet_runs
        busy = 0.0 if math.isnan(busy) else busy
    else:
        raw, undisturbed = median * ratio, n
        busy, throughout = (disturbed / (n + disturbed) if n + disturbed else 0.0), False
    return Measured(
        str(r["key"]),
        raw,
        None if math.isnan(factor) else raw * factor,
        None if math.isnan(speed) else speed,
        clock=clock,
        busy_share=busy,
        runs=n if clock == "cpu" else n + disturbed,
        undisturbed_runs=undisturbed,
        busy_throughout=throughout,
    )


def read_measured(results_dir: str | Path, percentile: str) -> dict[str, Measured]:
    """What RESULTS/measured.csv says about each key (the latest ok row per key)."""
    path = Path(results_dir) / MEASURED_FILE
    if not path.is_file():
        return {}
    df = read_records(path)
    df = df[df["status"] == "ok"]
    # later rows (re-measurements) win
    return {str(r["key"]): measured_from_row(r, percentile) for _, r in df.iterrows()}


def verify_protocol(settings) -> Protocol:
    """The protocol verification measures with: the thread CPU-time clock where the setting allows it
    (one CPU thread, no spinning, a fine thread clock), so that every run is timed on both clocks and
    a busy machine is seen run by run (targets are still judged in wall time: the undisturbed runs'),
    else the wall clock (its preempted runs are discarded)."""
    try:
        check_clock("cpu", settings.threads, settings.spinning, settings.device)
    except MeasurementError:
        return Protocol()
    return Protocol(clock="cpu", min_quiet_runs=MIN_QUIET_RUNS)


def anchor_reference(predictor, settings) -> float | None:
    """The anchor (full model) reference median the predictor's corrected latencies are on, at the
    verification shape (`FittedOn.anchor_ms` of the full model's key); None when its records had
    no anchor (then measured.csv's first run is the reference)."""
    return predictor.fitted_on.anchor_ms(settings.batch, settings.seq_len, SubnetConfig.full(predictor.shape_).key)


def measure_configs(
    model,
    shape: BackboneShape,
    subnets: Sequence[SubnetConfig],
    settings,
    results_dir: str | Path,
    percentile: str,
    progress: bool = True,
    reference_ms: float | None = None,
) -> dict[str, Measured]:
    """Measure `subnets` (extracted from `model`) interleaved with the anchor (the full model, timed
    in every round: the speed correction), appended to measured.csv. reference_ms: the anchor's
    median on the predictor's scale (its speed index 1.0)."""
    path = Path(results_dir) / MEASURED_FILE
    verify_latency(
        shape,
        list(subnets),
        settings,
        path,
        verify_protocol(settings),
        model=model,
        anchor="full",
        reference_ms=reference_ms,
        progress=progress,
    )
    got = read_measured(results_dir, percentile)
    missing = [s.key for s in subnets if s.key not in got]
    if missing:
        raise SearchError(f"measuring configs {missing} failed on this machine (see {path}, column error)")
    return got


@dataclass
class Verdict:
    answer: dict[str, Any] | None  # the chosen front row plus its measurement
    measured: dict[str, Measured]
    tried: list[str]
    seconds: float


def verify_candidates(
    candidates: pd.DataFrame,
    target_ms: float,
    measure_fn: Callable[[list[SubnetConfig]], dict[str, Measured]],
    known: dict[str, Measured],
    raw: bool = False,
    group: int = 3,
    max_candidates: int = 10,
) -> Verdict:
    """Take `candidates` (rows with key, subnet, ordered best metric first) in groups of `group`,
    measure each group (skipping keys already measured), return the first that meets the target."""
    t0 = time.perf_counter()
    measured = dict(known)
    tried: list[str] = []
    rows = candidates.head(max_candidates).to_dict("records")
    for start in range(0, len(rows), group):
        chunk = rows[start : start + group]
        # A config judged on busy runs only (pessimistic) is measured again: the machine may be quiet now.
        todo = [
            SubnetConfig.from_json(r["subnet"])
            for r in chunk
            if r["key"] not in measured or measured[r["key"]].busy_throughout
        ]
        if todo:
            measured.update(measure_fn(todo))
        for r in chunk:
            tried.append(r["key"])
            m = measured[r["key"]]
            if m.judged(raw) <= target_ms:
                return Verdict(dict(r), measured, tried, time.perf_counter() - t0)
    return Verdict(None, measured, tried, time.perf_counter() - t0)


def drift_warning(measured: dict[str, Measured]) -> str | None:
    """A warning when the anchor says this machine is far faster or slower than when the
    predictor's records were measured (then raw latencies are judged)."""
    bad = sorted({round(m.speed_index, 3) for m in measured.values() if not m.drift_ok})
    if not bad:
        return None
    return (
        f"this machine's speed index against the predictor's records is {bad} (the full model now against then), beyond "
        f"plausible drift (1/{MAX_DRIFT:g}..{MAX_DRIFT:g}): the target was judged on RAW measured latency; measure this "
        "machine again and refit the predictor"
    )


def busy_note(measured: dict[str, Measured], keys: Sequence[str] | None = None) -> str | None:
    """One line when the machine was busy while verifying `keys` (default: every measured config):
    how busy, and what the targets were judged on; None on a quiet machine."""
    ms = [measured[k] for k in (keys if keys is not None else measured) if k in measured]
    if not ms:
        return None
    share = float(np.mean([m.busy_share for m in ms]))
    throughout = [m.key for m in ms if m.busy_throughout]
    if share <= BUSY_NOTE_SHARE and not throughout:
        return None
    runs, undisturbed = sum(m.runs for m in ms), sum(m.undisturbed_runs for m in ms)
    if all(m.busy_throughout for m in ms):
        text = (
            f"the machine was busy while verifying: {share:.0%} of the measured configs' rounds had wall time above "
            f"{BUSY_RATIO} x the timing thread's CPU time (another process held the core) and {undisturbed} of {runs} "
            "timed runs were undisturbed"
        )
    elif any(m.clock == "cpu" for m in ms):
        text = (
            f"the machine was busy while verifying: {share:.0%} of the measured configs' rounds had wall time above "
            f"{BUSY_RATIO} x the timing thread's CPU time (another process held the core); {undisturbed} of {runs} timed "
            "runs were undisturbed and the targets were judged on their wall time"
        )
    else:
        text = (
            f"the machine was busy while verifying: {share:.0%} of the timed runs were preempted by another process and "
            f"discarded; the targets were judged on the wall time of the {undisturbed} undisturbed runs of {runs} (a "
            "multi-thread setting cannot use the cpu clock, so a run's own CPU time is not known)"
        )
    if throughout:
        text += (
            f"; {len(throughout)} config(s) ({', '.join(throughout[:3])}) had fewer than {MIN_QUIET_RUNS} undisturbed runs "
            "and were judged on the wall time of all their runs (pessimistic); the next search run measures them "
            "again: run it when the machine is quiet"
        )
    return text


def bias_warning(pred: Sequence[float], meas: Sequence[float]) -> str | None:
    """A warning when measured latencies sit systematically above the predictions."""
    pred, meas = np.asarray(pred, float), np.asarray(meas, float)
    if len(pred) == 0:
        return None
    ratio = meas / pred
    med = float(np.median(ratio))
    # One config is weak evidence (its own noise): warn only on a large gap.
    if (len(pred) == 1 and med > 1.25) or (len(pred) > 1 and med > 1.05 and (ratio > 1).mean() >= 0.75):
        return (
            f"measured latencies sit {100 * (med - 1):.1f}% above the predictions (median over {len(pred)} verified configs): "
            "the machine is slower than when the predictor was fitted, or the predictor is off; refit it with the "
            "verified rows added (dynasearch fit-predictor RECORDS RESULTS/measured.csv)"
        )
    return None


def verify_results_answer(results_dir: str | Path, answer: dict[str, Any]) -> dict[str, Any]:
    """Measure one answer of `query` on this machine (with the search's predictor setting) and
    record it in the results (measured.csv, trials.csv, front.csv); returns the answer, measured."""
    from dynabert.backbone import load_model  # torch: not on the query path

    meta, trials, front = load_results(results_dir)
    study = meta["study"]
    pred = load_predictor(study["predictor_dir"])
    settings = predictor_settings(pred, batch=study["latency"]["batch"], seq_len=study["latency"]["seq_len"])
    check_machine(pred, settings)
    model = load_model(study["model_dir"])
    shape = load_shape(study["model_dir"])
    percentile = study.get("percentile", "p50")
    got = measure_configs(
        model,
        shape,
        [SubnetConfig.from_dict(answer["subnet"])],
        settings,
        results_dir,
        percentile,
        reference_ms=anchor_reference(pred, settings),
    )
    m = got[answer["key"]]
    raw = bool(meta.get("raw"))
    for df in (trials, front):
        df.loc[df["key"] == answer["key"], "measured_ms"] = m.judged(raw)
        df.loc[df["key"] == answer["key"], "measured_raw_ms"] = m.raw_ms
    write_results(results_dir, meta, trials, front)
    busy = busy_note(got)
    if busy:
        warnings.warn(busy, stacklevel=2)
    return dict(
        answer,
        measured_ms=m.judged(raw),
        measured_raw_ms=m.raw_ms,
        verified=True,
        **m.answer_fields(),
    )
