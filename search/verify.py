"""Verified answers: the search's candidates measured as EXTRACTED models on this machine.

A predictor is a model of the hardware, not the hardware: a well-known search tool returned a
"200 ms" answer that measured 270 ms. So the feasible candidates are taken best metric first,
measured with the predictor's own setting (backend, threads, batch, length) in small interleaved
groups, and the first whose measured latency meets the target is the answer. The measurement rows
are appended to RESULTS/measured.csv (a records file `dynasearch fit-predictor` reads).
When the records carry a speed-corrected median (an anchor config timed in every round), the
target is judged on the corrected value unless `raw`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dynabert.subnet import BackboneShape, SubnetConfig
from predictors import (
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


@dataclass
class Measured:
    key: str
    raw_ms: float
    corrected_ms: float | None
    speed_index: float | None

    @property
    def drift_ok(self) -> bool:
        return self.speed_index is None or 1 / MAX_DRIFT <= self.speed_index <= MAX_DRIFT

    def judged(self, raw: bool) -> float:
        """The latency a target is judged on: speed-corrected unless `raw` or the speed index is
        beyond plausible drift (MAX_DRIFT)."""
        return self.raw_ms if raw or self.corrected_ms is None or not self.drift_ok else self.corrected_ms


def read_measured(results_dir: str | Path, percentile: str) -> dict[str, Measured]:
    """What RESULTS/measured.csv says about each key (the latest ok row per key)."""
    path = Path(results_dir) / MEASURED_FILE
    if not path.is_file():
        return {}
    df = read_records(path)
    df = df[df["status"] == "ok"]
    out = {}
    for _, r in df.iterrows():  # later rows (re-measurements) win
        raw = float(r[PERCENTILES[percentile]])
        corr = r.get("corrected_median_ms", math.nan)
        # The speed correction is one factor per config: apply it to the percentile too.
        corr = math.nan if pd.isna(corr) else raw * float(corr) / float(r["median_ms"])
        speed = r.get("speed_index", math.nan)
        out[str(r["key"])] = Measured(
            str(r["key"]), raw, None if pd.isna(corr) else corr, None if pd.isna(speed) else float(speed)
        )
    return out


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
        shape, list(subnets), settings, path, model=model, anchor="full", reference_ms=reference_ms, progress=progress
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
        todo = [SubnetConfig.from_json(r["subnet"]) for r in chunk if r["key"] not in measured]
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
    return dict(answer, measured_ms=m.judged(raw), measured_raw_ms=m.raw_ms, verified=True, speed_index=m.speed_index)
