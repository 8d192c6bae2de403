"""Synthetic records for predictor tests: real records rows whose latency is a known function."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pandas as pd
from fakes import FAKE_MACHINE as MACHINE
from fakes import (
    additive_ms,  # noqa: F401 - the test modules import it from here
    fake_rows,
)

from dynabert.subnet import BackboneShape, SubnetConfig
from dynasearch_runtime.protocol import Protocol
from dynasearch_runtime.schema import append_rows
from predictors.records import read_records

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
    return fake_rows(SHAPE, subnets, fn, batch, seq, threads, sampler, machine or MACHINE, backend)


def records(path, row_list: list[dict]) -> pd.DataFrame:
    append_rows(str(path), row_list)
    return read_records(path)


# A protocol cut for tiny models (a few runs, short warm-up): the tests' timing settings, one home.
FAST_PROTOCOL = Protocol(
    min_runs=3,
    max_runs=6,
    max_seconds=0.2,
    runs_per_visit=2,
    warmup_min=1,
    warmup_max=4,
    warmup_window=1,
    warmup_max_seconds=0.05,
    chunk_size=3,
)
