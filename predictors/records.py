"""The latency records table: reading, validating, grouping.

One CSV file, one row per (sub-network, settings); the columns and their meaning are
`RECORD_FIELDS` (documented in README and `dynasearch measure --help`). Written only through
`runtime.schema.append_rows` (atomic rewrite), so the library and the kit's runner write the same format.
"""

from __future__ import annotations

import csv
import json
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dynabert.checks import differences
from dynabert.subnet import BackboneShape, SubnetConfig, count_flops
from dynabert.tables import markdown_table
from dynasearch_runtime.errors import MeasurementError
from dynasearch_runtime.schema import (
    OLD_SCHEMAS,
    RECORD_COLUMNS,
    RECORD_FIELDS,
    RECORD_TYPES,
    SCHEMA,
    protocol_clock,
    read_rows,
)

from .errors import RecordsError

# What predictors fit and are judged on: the speed-corrected median (raw median where a run was
# not corrected: old records, or a run without rounds to correct).
LATENCY_COLUMN = "corrected_median_ms"

# Columns that must agree for rows to feed one predictor (besides target_id, their hash).
TARGET_COLUMNS = (
    "cpu_model",
    "cpu_cores",
    "gpu_name",
    "backend",
    "device",
    "provider",
    "threads",
    "spinning",
    "dtype",
    "shape_key",
)


def schema_markdown() -> str:
    return markdown_table(["column", "type", "meaning"], ((f"`{n}`", t, d) for n, t, d in RECORD_FIELDS))


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for col, typ in RECORD_TYPES.items():
        if typ == "str":
            out[col] = out[col].fillna("").astype(str)
        elif typ == "bool":
            out[col] = out[col].astype(str).str.lower().isin(["true", "1"])
        else:
            out[col] = pd.to_numeric(out[col].replace("", np.nan), errors="coerce")
            if typ == "int" and out[col].notna().all():
                out[col] = out[col].astype("int64")
    return out


def read_records(
    paths: str | Path | Sequence[str | Path], allow_empty: bool = False, shape: BackboneShape | None = None
) -> pd.DataFrame:
    """THE reader of latency records: one DataFrame from one or more records CSVs.

    Every cell is checked (`runtime.schema.read_rows`: columns of this schema, every row whole, numbers
    that are numbers and finite, latencies of ok rows > 0, JSON cells that parse, each row's
    sub-network inside its backbone shape, its key that sub-network's key); with `shape`, every row
    must also be for that backbone. Any damage: RecordsError, one line naming the file, the row
    (1-based, after the header) and what was expected. A file holding no records is refused unless
    allow_empty. Rows of the older schema (dynasearch-latency-records/1, before the speed
    correction) load with a warning saying so: their corrected_median_ms is the raw median and
    speed_index is NaN."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise RecordsError("no records file given")
    seen: dict[str, Path] = {}
    for p in map(Path, paths):  # one file given twice would count every record twice (and leak into the held-out part)
        key = os.path.realpath(p)
        if key in seen:
            how = "the same path" if seen[key] == p else f"also as '{seen[key]}'"
            raise RecordsError(
                f"records file '{p}' is given twice ({how}): its records would count twice and held-out records "
                "would repeat fitted ones; give each file once"
            )
        seen[key] = p
    frames = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            raise RecordsError(f"records file '{p}' is a directory; give the records CSV inside it")
        if not p.is_file():
            if p.exists():
                raise RecordsError(f"records file '{p}' is not a regular file (a device or a pipe); give a records CSV")
            raise RecordsError(f"records file '{p}' does not exist")
        try:
            rows = read_rows(str(p))
        except MeasurementError as e:
            raise RecordsError(str(e)) from None
        except (UnicodeDecodeError, OSError, csv.Error) as e:
            raise RecordsError(f"cannot read records file '{p}': {e}") from None
        if not rows and not allow_empty:
            raise RecordsError(
                f"records file '{p}' holds no records (it is empty or has only a header); measure into it first"
            )
        _check_rows(p, rows, shape)
        old = [r["schema"] for r in rows if r["schema"] in OLD_SCHEMAS]
        if old:
            warnings.warn(
                f"records file '{p}' holds {len(old)} row(s) of the older format {old[0]} (before the speed "
                f"correction): read as measured (corrected_median_ms = median_ms, no speed index); this version "
                f"writes {SCHEMA}",
                stacklevel=2,
            )
        frames.append(pd.DataFrame(rows, columns=list(RECORD_COLUMNS)))
    df = _typed(pd.concat(frames, ignore_index=True))
    # No correction stored (a run with nothing to correct): the corrected median is the raw one.
    df[LATENCY_COLUMN] = df[LATENCY_COLUMN].fillna(df["median_ms"])
    # The kit's runner may leave FLOPs empty for a batch/length it had not precomputed: fill them
    # from the backbone shape and the config (the formula lives in dynabert only).
    missing = df["flops"].isna() & (df["shape"] != "")
    for i in df.index[missing]:
        shape_i = BackboneShape(**json.loads(df.at[i, "shape"]))
        df.at[i, "flops"] = count_flops(
            shape_i, SubnetConfig.from_json(df.at[i, "subnet"]), int(df.at[i, "batch"]), int(df.at[i, "seq_len"])
        )
    for col in ("flops", "params"):
        if df[col].notna().all():
            df[col] = df[col].astype("int64")
    return df


def _check_rows(path: Path, rows: list[dict[str, str]], shape: BackboneShape | None) -> None:
    """What the standalone row check cannot see: each row's key is its sub-network's key, its shape
    cell is a backbone shape, and (with `shape`) the one the caller works on."""
    from dynabert.errors import InvalidSubnetError

    shapes: dict[str, BackboneShape] = {}
    for n, r in enumerate(rows, 1):
        where = f"records file '{path}' row {n} (key {r['key']})"
        if r["shape"] not in shapes:
            try:
                shapes[r["shape"]] = BackboneShape(**json.loads(r["shape"]))
            except TypeError as e:
                raise RecordsError(f"{where}: shape is not a backbone shape ({e})") from None
        row_shape = shapes[r["shape"]]
        if shape is not None and row_shape != shape:
            diffs = "; ".join(differences(row_shape.to_dict(), shape.to_dict()))  # the row's -> the one expected
            raise RecordsError(f"{where}: measured on another backbone than expected ({diffs})")
        try:
            sub = SubnetConfig.from_json(r["subnet"]).validate(row_shape)
        except InvalidSubnetError as e:
            raise RecordsError(f"{where}: {e}") from None
        if sub.key != r["key"]:
            raise RecordsError(
                f"{where}: key is not the key of its subnet cell {r['subnet']} ({sub.key}); the row is damaged"
            )


def ok_records(df: pd.DataFrame) -> pd.DataFrame:
    """Rows with status ok, checked: every raw and corrected median finite and > 0 (RecordsError otherwise)."""
    ok = df[df["status"] == "ok"].copy()
    for col in ("median_ms", LATENCY_COLUMN):
        v = ok[col].astype(float)
        bad = ok[~np.isfinite(v) | (v <= 0)]
        if len(bad):
            first = bad.iloc[0]
            raise RecordsError(
                f"{len(bad)} record(s) have a NaN, zero or negative latency, e.g. key {first['key']} {col}="
                f"{float(first[col])}; latencies must be finite and > 0 (remove or re-measure those rows)"
            )
    return ok


def check_one_target(df: pd.DataFrame, allow_shapes: bool) -> None:
    """Records given to one predictor must share fingerprint and settings; batch and sequence
    length may vary only for a predictor across input shapes."""
    groups = df.groupby("target_id")
    if len(groups) > 1:
        desc = [
            f"{tid}: "
            + ", ".join(
                f"{c}={g[c].iloc[0]}"
                for c in ("backend", "provider", "device", "threads", "spinning", "dtype", "cpu_model")
            )
            + f" ({len(g)} rows)"
            for tid, g in groups
        ]
        raise RecordsError(
            "records of mixed fingerprints or settings cannot feed one predictor; select one target_id "
            "(--target): " + "; ".join(desc)
        )
    check_one_clock(df)
    shapes = sorted({(int(b), int(s)) for b, s in zip(df["batch"], df["seq_len"])})
    if not allow_shapes and len(shapes) > 1:
        raise RecordsError(
            f"records mix input shapes (batch, seq_len) {shapes[:8]}; fit a predictor across shapes "
            "(--across-shapes) or select one batch and sequence length (--batch, --seq-len)"
        )


def records_clock(df: pd.DataFrame) -> str:
    """The one clock (wall or cpu) the rows were timed with (check_one_clock refuses a mix)."""
    check_one_clock(df)
    return protocol_clock(df["protocol"].iloc[0]) if len(df) else "wall"


def check_one_clock(df: pd.DataFrame) -> None:
    """Rows timed with the wall clock and with the CPU clock (--clock cpu) time different things (on a
    busy machine CPU time leaves out another process's share), so one predictor fits one clock."""
    clocks = df["protocol"].map(protocol_clock)
    if clocks.nunique() < 2:
        return
    parts = []
    for clock, rows in df.groupby(clocks, sort=True):
        runs = sorted({str(r) for r in rows["run_id"] if r})
        parts.append(
            f"{len(rows)} row(s) timed with the {'CPU clock (--clock cpu)' if clock == 'cpu' else 'wall clock'}"
            + (f", run(s) {', '.join(runs[:3])}{' ...' if len(runs) > 3 else ''}" if runs else "")
        )
    raise RecordsError(
        f"records mix clocks: {'; '.join(parts)}; one predictor fits one clock: fit the records of one clock only "
        "(give only the files, or keep only the rows of the runs, of that clock), or measure again into another "
        "--out with one --clock"
    )


def select_records(
    df: pd.DataFrame, target_id: str | None = None, batch: int | None = None, seq_len: int | None = None
) -> pd.DataFrame:
    """The rows of one target_id, batch size and sequence length (each only when given); RecordsError
    naming the asked value and the values present when no row has it."""
    for column, value, option in (
        ("target_id", target_id, "--target"),
        ("batch", batch, "--batch"),
        ("seq_len", seq_len, "--seq-len"),
    ):
        if value:
            df = _select(df, column, value, option)
    return df


def _select(df: pd.DataFrame, column: str, value, option: str) -> pd.DataFrame:
    picked = df[df[column] == value]
    if picked.empty:
        present = sorted(set(df[column].tolist()))
        raise RecordsError(
            f"no records with {column} {value!r} ({option} {value}); the records hold {column} "
            f"{', '.join(repr(v) if isinstance(v, str) else str(v) for v in present[:12])}"
            + (" ..." if len(present) > 12 else "")
        )
    return picked


def subnets_of(df: pd.DataFrame) -> list[SubnetConfig]:
    return [SubnetConfig.from_json(s) for s in df["subnet"]]


def shape_of(df: pd.DataFrame) -> BackboneShape:
    shapes = set(df["shape"])
    if len(shapes) != 1:
        raise RecordsError(f"records hold {len(shapes)} backbone shapes; one predictor serves one backbone")
    return BackboneShape(**json.loads(next(iter(shapes))))


def targets_table(df: pd.DataFrame) -> pd.DataFrame:
    """One line per target_id with its settings and row counts (for messages and listings)."""
    cols = ["target_id", "backend", "provider", "device", "threads", "spinning", "dtype", "cpu_model"]
    return df.groupby(cols, dropna=False).agg(rows=("key", "size"), shapes=("settings_id", "nunique")).reset_index()


def repeatability(
    a: pd.DataFrame, b: pd.DataFrame, tolerance: float = 0.03, column: str = "median_ms"
) -> dict[str, float]:
    """Two runs of the same configs: share of configs whose medians (`column`: raw median_ms or
    corrected_median_ms) agree within +-tolerance (relative to their mean), and the median and
    largest relative difference."""
    m = a[["key", column]].merge(b[["key", column]], on="key", suffixes=("_a", "_b"))
    if m.empty:
        raise RecordsError("the two runs share no configs")
    rel = (m[f"{column}_a"] - m[f"{column}_b"]).abs() / ((m[f"{column}_a"] + m[f"{column}_b"]) / 2)
    return {
        "configs": int(len(m)),
        "within": float((rel <= tolerance).mean()),
        "median_rel_diff": float(rel.median()),
        "max_rel_diff": float(rel.max()),
    }


def as_float(values: Iterable) -> np.ndarray:
    arr = np.asarray(list(values), dtype=float)
    if not np.all(np.isfinite(arr)):
        raise RecordsError("non-finite value in a numeric column")
    return arr


__all__ = [
    "LATENCY_COLUMN",
    "RECORD_COLUMNS",
    "RECORD_FIELDS",
    "SCHEMA",
    "TARGET_COLUMNS",
    "check_one_clock",
    "check_one_target",
    "ok_records",
    "read_records",
    "records_clock",
    "repeatability",
    "schema_markdown",
    "select_records",
    "shape_of",
    "subnets_of",
    "targets_table",
]
