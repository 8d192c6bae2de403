"""What the search needs from the latency side to check an answer: measure candidates interleaved
with the anchor (raw and speed-corrected latency, the host's speed index), the settings a
predictor was fitted for, and whether this machine is the one it was fitted on."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from dynabert.subnet import BackboneShape, SubnetConfig
from dynasearch_runtime.fingerprint import machine_info, setting_columns
from dynasearch_runtime.protocol import Protocol

from .backends import BackendSettings
from .base import TARGET_FIELDS, LatencyPredictor
from .errors import PredictorError
from .measure import measure, shape_key

VERIFY_COLUMNS = (
    "key",
    "subnet",
    "status",
    "error",
    "median_ms",
    "corrected_median_ms",
    "speed_index",
    "speed_spread",
    "p90_ms",
    "ci_low_ms",
    "ci_high_ms",
    "n_runs",
    "anchor_key",
    "anchor_ms",
    "run_id",
)


def verify_latency(
    shape: BackboneShape,
    subnets: Sequence[SubnetConfig],
    settings: BackendSettings,
    records_path: str | Path,
    protocol: Protocol = Protocol(),
    *,
    model: Any = None,
    anchor: SubnetConfig | str | None = "full",
    reference_ms: float | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Measure `subnets` now (never skipped as already measured), interleaved with the anchor, and
    append them to `records_path` (whose first run with this anchor is the speed reference).

    One row per sub-network (VERIFY_COLUMNS): raw `median_ms`, `corrected_median_ms` (speed-
    corrected, on the reference scale: judge targets on this), `speed_index` (the host's speed now
    against the reference; 1.0 on the first run of a records file; NaN without an anchor), `speed_spread`,
    `p90_ms` (raw), the median's CI and the number of timed runs."""
    subnets = list(subnets)
    if not subnets:
        raise PredictorError("verify_latency needs at least one sub-network")
    rows = measure(
        shape,
        subnets,
        settings,
        records_path,
        protocol,
        model=model,
        sampler="verify",
        anchor=anchor,
        reference_ms=reference_ms,
        resume=False,
        progress=progress,
        warn_busy=False,  # the caller judges wall time and says how busy the machine was (search.verify.busy_note)
    )
    order = {s.validate(shape).key: i for i, s in enumerate(subnets)}
    rows = rows[rows["key"].isin(order)].copy()
    rows["_order"] = rows["key"].map(order)
    return rows.sort_values("_order")[list(VERIFY_COLUMNS)].reset_index(drop=True)


def predictor_settings(
    predictor: LatencyPredictor, batch: int | None = None, seq_len: int | None = None
) -> BackendSettings:
    """The BackendSettings a fitted predictor was fitted for, at (batch, seq_len) when given (default:
    its first input shape when fitted across several)."""
    fitted = predictor.fitted_on
    fitted_batch, fitted_seq_len = fitted.shapes[0]
    return BackendSettings(
        backend=fitted.backend,
        device=fitted.device,
        threads=fitted.threads,
        spinning=fitted.spinning,
        dtype=fitted.dtype,
        batch=int(fitted_batch if batch is None else batch),
        seq_len=int(fitted_seq_len if seq_len is None else seq_len),
        provider=fitted.provider,
    )


def this_machine_target(predictor: LatencyPredictor, settings: BackendSettings | None = None) -> dict[str, Any]:
    """This machine's fingerprint and setting columns for `settings` (default: the predictor's)."""
    st = settings or predictor_settings(predictor)
    machine = machine_info(with_torch=st.backend == "torch")
    return setting_columns(
        machine,
        st.backend,
        st.device,
        st.provider,
        st.threads,
        st.spinning,
        st.dtype,
        st.batch,
        st.seq_len,
        shape_key(predictor.shape_),
    )


def check_this_machine(
    predictor: LatencyPredictor, settings: BackendSettings | None = None, force: bool = False
) -> None:
    """PredictorError (with force: a warning) naming both fingerprints when this machine, under
    `settings` (default: the predictor's), is not the one the predictor was fitted for."""
    target = this_machine_target(predictor, settings)
    fitted = predictor.fitted_on
    try:
        predictor.check_target(target, force=force)
    except PredictorError as e:
        there = ", ".join(f"{f}={v!s}" for f, v in fitted.target.items())
        here = ", ".join(f"{f}={target[f]!s}" for f in TARGET_FIELDS if f in target)
        raise PredictorError(
            f"{e}. Predictor fingerprint {fitted.fingerprint} ({there}); this machine {target['fingerprint']} ({here})"
        ) from None


def machine_matches(predictor: LatencyPredictor, settings: BackendSettings | None = None) -> bool:
    """True when this machine (under `settings`, default the predictor's) is the predictor's target."""
    try:
        check_this_machine(predictor, settings)
    except PredictorError:
        return False
    return True


__all__ = [
    "VERIFY_COLUMNS",
    "check_this_machine",
    "machine_matches",
    "predictor_settings",
    "this_machine_target",
    "verify_latency",
]
