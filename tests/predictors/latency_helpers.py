"""Synthetic records for predictor tests: real records rows whose latency is a known function."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pandas as pd
from fakes import FAKE_MACHINE as MACHINE
from fakes import additive_ms  # noqa: F401 - the test modules import it from here

from dynabert.subnet import BackboneShape, SubnetConfig
from predictors.measure import shape_key, static_row
from predictors.records import read_records
from predictors.runtime.fingerprint import setting_columns
from predictors.runtime.schema import RECORD_COLUMNS, SCHEMA, append_rows

SHAPE = BackboneShape(
    num_layers=4, num_heads=4, head_dim=8, hidden_size=32, intermediate_size=64, vocab_size=100, max_positions=64
)


def rows(
    subnets: Iterable[SubnetConfig],
    fn: Callable[[SubnetConfig, int, int], float],
    batch: int = 1,
    seq: int = 16,
    threads: int = 1,
    sampler: str = "uniform",
    machine: dict | None = None,
    backend: str = "onnxruntime",
) -> list[dict]:
    provider = "CPUExecutionProvider" if backend == "onnxruntime" else ""
    cols = setting_columns(
        machine or MACHINE, backend, "cpu", provider, threads, False, "float32", batch, seq, shape_key(SHAPE)
    )
    out = []
    for s in subnets:
        r = {c: "" for c in RECORD_COLUMNS}
        r.update(static_row(SHAPE, s, sampler, cols, "test"))
        ms = fn(s, batch, seq)
        r.update(
            schema=SCHEMA,
            timestamp="2026-01-01T00:00:00Z",
            status="ok",
            median_ms=ms,
            mean_ms=ms,
            p90_ms=ms,
            p99_ms=ms,
            iqr_ms=0.0,
            cv=0.0,
            ci_low_ms=ms,
            ci_high_ms=ms,
            n_runs=5,
            warmup_runs=3,
            converged=True,
            measure_s=0.1,
            prepare_s=0.1,
            protocol="{}",
        )
        out.append(r)
    return out


def records(path, row_list: list[dict]) -> pd.DataFrame:
    append_rows(str(path), row_list)
    return read_records(path)
