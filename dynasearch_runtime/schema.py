"""The latency records schema and its files: the records CSV (read, upgraded from older schema
versions, rewritten atomically) and the raw-timings CSV kept beside it.

Part of the device runtime (standard library + numpy; see `dynasearch_runtime`): the kit's runner
writes the very same records. Do not import torch or pandas here. Each row's check, with the bounds
of every number column (`RECORD_BOUNDS`), is `records_check`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import socket
import tempfile
from typing import Any, Iterable, Mapping, Sequence

from .bounds import BOUNDS, describe
from .errors import MeasurementError
from .records_check import RECORD_BOUNDS, Bad, check_row  # noqa: F401  (RECORD_BOUNDS re-exported)

# The host's short hash in temporaries' names (the same as dynabert.io's: a process id names a process
# of this host only).
HOST_TAG = hashlib.blake2b(socket.gethostname().encode(), digest_size=3).hexdigest()

SCHEMA = "dynasearch-latency-records/2"
# Older versions this one reads (and upgrades on the next write): /1 had no speed correction.
OLD_SCHEMAS = ("dynasearch-latency-records/1",)

# (column, type, meaning). One row per (config, settings, run); `key` + `settings_id` identify a config.
RECORD_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("schema", "str", f"records format, '{SCHEMA}' (rows of {', '.join(OLD_SCHEMAS)} read as uncorrected)"),
    ("run_id", "str", "id of the measuring run that wrote the row"),
    ("timestamp", "str", "UTC time the config's measurement finished (ISO 8601)"),
    ("sampler", "str", "how the config was chosen: grid, uniform, flops, layer-table, file, kit"),
    ("key", "str", "SubnetConfig.key (12 hex digits); joins every table"),
    ("subnet", "str", "SubnetConfig canonical JSON: layers, heads, ffn"),
    ("depth", "int", "kept layers"),
    ("heads_sum", "int", "attention heads summed over kept layers"),
    ("ffn_sum", "int", "FFN neurons summed over kept layers"),
    ("params", "int", "parameters of the extracted model"),
    ("flops", "int", "encoder FLOPs (2 x MACs) at this batch and sequence length"),
    ("shape_key", "str", "12-hex key of the backbone shape"),
    ("shape", "str", "backbone shape JSON (layers, heads, head_dim, hidden, FFN, vocab, ...)"),
    ("backend", "str", "torch or onnxruntime"),
    ("device", "str", "cpu or cuda"),
    ("provider", "str", "onnxruntime execution provider (empty for torch)"),
    ("threads", "int", "intra-op threads (torch.set_num_threads / intra_op_num_threads)"),
    ("spinning", "bool", "onnxruntime intra-op thread spinning (always False for torch)"),
    ("dtype", "str", "weights and activations dtype"),
    ("batch", "int", "batch size"),
    ("seq_len", "int", "sequence length (all tokens real, no padding)"),
    ("cpu_model", "str", "CPU model name"),
    ("cpu_cores", "int", "CPU cores this process may use"),
    ("gpu_name", "str", "GPU name (empty without a GPU)"),
    ("gpu_driver", "str", "GPU driver version (empty without a GPU)"),
    ("os", "str", "operating system"),
    ("python", "str", "Python version"),
    ("numpy_version", "str", "numpy version"),
    ("torch_version", "str", "torch version (empty where torch is absent, e.g. the kit)"),
    ("onnxruntime_version", "str", "onnxruntime version (empty where absent)"),
    ("fingerprint", "str", "hash of CPU, cores, GPU, driver, backend, its version, device, provider"),
    ("target_id", "str", "hash of fingerprint + threads + spinning + dtype + backbone shape: one predictor's target"),
    ("settings_id", "str", "hash of target_id + batch + seq_len: what a re-run skips"),
    ("status", "str", "ok or failed"),
    ("error", "str", "why a failed config failed (empty when ok)"),
    ("median_ms", "float", "RAW median latency of the timed runs, milliseconds"),
    (
        "corrected_median_ms",
        "float",
        "median after the per-round speed correction, on the anchor's reference scale "
        "(median_ms / run speed factors, divided by speed_index); what predictors fit. Empty: same as median_ms",
    ),
    (
        "speed_index",
        "float",
        "the run's speed: the anchor's (round-corrected) median / its reference (first run of this "
        "settings_id); 1.10 = 10% slower than the reference. Empty without an anchor or in old records",
    ),
    ("speed_spread", "float", "90th / 10th percentile of the run's per-round speed factors (1.0 = steady machine)"),
    ("anchor_key", "str", "key of the anchor config timed in every round of the run (empty: none)"),
    ("anchor_ms", "float", "the anchor's round-corrected median in this run"),
    ("mean_ms", "float", "mean latency"),
    ("p90_ms", "float", "90th percentile"),
    ("p99_ms", "float", "99th percentile"),
    ("iqr_ms", "float", "inter-quartile range"),
    ("cv", "float", "coefficient of variation (std / mean) of the timed runs"),
    ("ci_low_ms", "float", "lower end of the confidence interval of the median"),
    ("ci_high_ms", "float", "upper end of the confidence interval of the median"),
    ("n_runs", "int", "timed runs"),
    ("warmup_runs", "int", "warm-up runs before the first timed round"),
    ("disturbed_runs", "int", "timed runs discarded because another process preempted this one (a busy machine)"),
    (
        "busy_rounds",
        "int",
        "--clock cpu: rounds of this config whose median wall / CPU time ratio exceeded 1.15 (the machine "
        "was busy: another process held the core); empty with the wall clock and in older records",
    ),
    ("busy_share", "float", "--clock cpu: busy_rounds / the rounds that timed this config (empty: not timed so)"),
    (
        "wall_median_ms",
        "float",
        "--clock cpu: wall-clock median of the same timed runs (median_ms is then their CPU-time median; "
        "empty with the wall clock)",
    ),
    (
        "quiet_runs",
        "int",
        "--clock cpu: timed runs whose own wall / CPU time ratio was within 1.15 (undisturbed: no other process "
        "held the core for long); empty with the wall clock and in older records",
    ),
    (
        "quiet_wall_median_ms",
        "float",
        "--clock cpu: wall-clock median of the undisturbed runs (quiet_runs): the latency verification judges "
        "on a busy machine; empty when there were none or with the wall clock",
    ),
    ("converged", "bool", "True: the median's CI met rel_ci; False: a cap stopped it"),
    ("measure_s", "float", "wall seconds spent running this config (warm-up, re-warm and timed runs)"),
    ("prepare_s", "float", "wall seconds to prepare it (extraction, export, session creation)"),
    (
        "protocol",
        "str",
        "protocol settings JSON; its clock says what median_ms and the others time: wall (also when absent) or cpu",
    ),
)
RECORD_COLUMNS: tuple[str, ...] = tuple(name for name, _, _ in RECORD_FIELDS)
RECORD_TYPES: dict[str, str] = {name: typ for name, typ, _ in RECORD_FIELDS}
SPEED_COLUMNS = ("corrected_median_ms", "speed_index", "speed_spread", "anchor_key", "anchor_ms")
# Written since the cpu clock (--clock cpu); a file without them (an older version's) is read with them empty.
# The quiet columns came one version later: a file may hold the first three without them.
QUIET_COLUMNS = ("quiet_runs", "quiet_wall_median_ms")
CLOCK_COLUMNS = ("busy_rounds", "busy_share", "wall_median_ms") + QUIET_COLUMNS
_V1_COLUMNS = tuple(c for c in RECORD_COLUMNS if c not in SPEED_COLUMNS)
_HEADERS = tuple(
    frozenset(c for c in cols if c not in dropped)
    for cols in (RECORD_COLUMNS, _V1_COLUMNS)
    for dropped in ((), QUIET_COLUMNS, CLOCK_COLUMNS)
)
RAW_COLUMNS = ("key", "round", "run", "ms", "disturbed")


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


def check_records_path(path: str) -> None:
    """Refuse, before any timing, a records path that is empty, a directory, not a regular file (a
    device such as /dev/full or /dev/null: records are rewritten by temp file + rename, which would
    replace it) or in a place that cannot take a file (no permission, no space left)."""
    import stat

    if not str(path):
        raise MeasurementError("records file path is empty; give a file name such as records.csv")
    if os.path.isdir(path):
        raise MeasurementError(
            f"records file '{path}' is a directory; give a file name such as {os.path.join(path, 'records.csv')}"
        )
    if os.path.exists(path) and not stat.S_ISREG(os.stat(path).st_mode):
        kind = "a character device" if stat.S_ISCHR(os.stat(path).st_mode) else "not a regular file"
        raise MeasurementError(
            f"cannot write records file '{path}': it is {kind}, not a records CSV (records are rewritten "
            "through a temporary file beside it); give a file name such as records.csv"
        )
    directory = os.path.dirname(os.path.abspath(path))
    probe = directory
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise MeasurementError(f"cannot write records file '{path}': '{probe}' is a file, not a directory")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".dynasearch-probe-", dir=probe)
        with os.fdopen(fd, "wb") as f:  # a few KiB, flushed: a full disk fails here, not after the timing
            f.write(b"\0" * 65536)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise MeasurementError(f"cannot write records file '{path}': {e.strerror or e} (in '{probe}')") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def read_rows(path: str) -> list[dict[str, str]]:
    """Rows of a records CSV as strings ([] for a 0-byte or header-only file), every cell checked;
    rows of an older schema come upgraded (corrected = raw, no speed index). MeasurementError, one
    line naming the file, the row (1-based, after the header) and what was expected, for another
    schema, a cut or damaged row, a cell that does not hold its column's type (a word in a number
    column, a non-finite number, a JSON cell that does not parse), or a sub-network outside the
    row's backbone shape."""
    if os.path.isdir(path):
        raise MeasurementError(f"records file '{path}' is a directory, not a records CSV")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a table tool's byte-order mark is no damage
            text = f.read()
    except UnicodeDecodeError as e:
        raise MeasurementError(f"cannot read records file '{path}': {e}") from None
    except OSError as e:
        raise MeasurementError(f"cannot read records file '{path}': {e.strerror or e}") from None
    if "\0" in text:
        line = text.count("\n", 0, text.index("\0")) + 1
        raise MeasurementError(
            f"records file '{path}' line {line} holds a NUL byte: the file is damaged (not a records CSV)"
        )
    reader = csv.DictReader(io.StringIO(text))
    try:
        header = tuple(reader.fieldnames or ())
        if not header:
            return []
        if len(set(header)) != len(header) or frozenset(header) not in _HEADERS:
            # Compare with the version the header is closest to: a v2 file that lost a speed column
            # must name that column, not read as a v1 file with surplus columns (the same for the
            # clock columns: all of them, all but the quiet ones, or none).
            closest = _V1_COLUMNS if not set(header) & set(SPEED_COLUMNS) else RECORD_COLUMNS
            if not set(header) & set(CLOCK_COLUMNS):
                closest = tuple(c for c in closest if c not in CLOCK_COLUMNS)
            elif not set(header) & set(QUIET_COLUMNS):
                closest = tuple(c for c in closest if c not in QUIET_COLUMNS)
            missing = [c for c in closest if c not in header]
            extra = [c for c in header if c not in RECORD_COLUMNS]
            twice = sorted({c for c in header if header.count(c) > 1})
            raise MeasurementError(
                f"records file '{path}' has another schema (expected {SCHEMA}): missing columns {missing[:6]}, "
                f"unknown columns {extra[:6]}" + (f", repeated columns {twice[:6]}" if twice else "")
            )
        rows = []
        bad_latency: list[tuple[int, int, str, str]] = []
        for n, r in enumerate(reader, 1):
            where = f"records file '{path}' row {n} (line {reader.line_num})"
            schema = r.get("schema") or ""
            if schema not in (SCHEMA, *OLD_SCHEMAS):
                raise MeasurementError(
                    f"{where} holds schema {schema!r}; this version reads {SCHEMA} and {', '.join(OLD_SCHEMAS)}"
                )
            try:
                for col in check_row(r, header, RECORD_TYPES):
                    bad_latency.append((n, reader.line_num, r["key"], col))
            except Bad as e:
                col, want = e.args
                cell = f" {col} is {str(r.get(col))[:60]!r};" if col else ""
                raise MeasurementError(f"{where}:{cell} expected {want}") from None
            rows.append(r)
    except csv.Error as e:
        raise MeasurementError(f"records file '{path}' line {reader.line_num}: not CSV ({e})") from None
    if rows and not text.endswith(("\n", "\r")):
        raise MeasurementError(
            f"records file '{path}' row {len(rows)} (line {reader.line_num}), the last one, is cut: the file does not end "
            "with a line end (an interrupted write or copy); remove that row or re-measure it"
        )
    if bad_latency:
        n, line, key, col = bad_latency[0]
        value = float(next(r for i, r in enumerate(rows, 1) if i == n)[col])
        kind = RECORD_BOUNDS[col]
        # "NaN, zero or negative" (infinite too): what a broken timer or a hand edit leaves; else it is too long
        low = not math.isfinite(value) or value <= BOUNDS[kind].low
        what = "a NaN, zero or negative latency" if low else "a latency above its range"
        raise MeasurementError(
            f"records file '{path}': {len(bad_latency)} record(s) have {what}, e.g. key {key} {col}={value}; first at "
            f"row {n} (line {line}); {col} must be {describe(kind)} (remove or re-measure those rows)"
        )
    for r in rows:
        for c in SPEED_COLUMNS + CLOCK_COLUMNS:
            r.setdefault(c, "")
        if r["schema"] in OLD_SCHEMAS and not r["corrected_median_ms"]:
            r["corrected_median_ms"] = r["median_ms"]  # an old run was not corrected: read it as measured
    return rows


def write_text_atomic(path: str, text: str) -> None:
    """Write a file by temp file + rename: a kill at any moment leaves the old or the new file."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    # Named as dynabert.io names its temporaries (.NAME.ds<host>-<pid>-<random>.tmp): a killed run's
    # leftover is then recognised, and removed, by the next command that writes in this folder.
    fd, tmp = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}.ds{HOST_TAG}-{os.getpid()}-", suffix=".tmp", dir=directory
    )
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _row_id(r: Mapping[str, Any]) -> tuple[str, str, str]:
    return str(r.get("run_id", "")), str(r.get("settings_id", "")), str(r.get("key", ""))


def append_rows(path: str, rows: Iterable[Mapping[str, Any]]) -> None:
    """Add rows to a records CSV, rewriting it atomically. A row with the run_id, settings_id and
    key of one already there replaces it (a run updates its rows once its speed fit is final)."""
    new = [{c: _cell(r.get(c, "")) for c in RECORD_COLUMNS} for r in rows]
    ids = {_row_id(r) for r in new}
    old = read_rows(path) if os.path.exists(path) and os.path.getsize(path) > 0 else []
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(RECORD_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for r in old:
        if _row_id(r) not in ids:
            writer.writerow(r)
    for r in new:
        writer.writerow(r)
    try:
        write_text_atomic(path, buf.getvalue())
    except OSError as e:
        raise MeasurementError(f"cannot write records file '{path}': {e.strerror or e}") from None


def done_keys(path: str, settings_id: str, retry_failed: bool) -> set[str]:
    """Keys already measured under `settings_id` (failed ones too unless retry_failed)."""
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return set()
    return {
        r["key"]
        for r in read_rows(path)
        if r["settings_id"] == settings_id and (r["status"] == "ok" or not retry_failed)
    }


def protocol_clock(cell: Any) -> str:
    """The clock a records row's protocol cell names (read_rows checked it): wall when it names none."""
    if not isinstance(cell, str) or not cell:
        return "wall"
    return str(json.loads(cell).get("clock", "wall"))


def row_clocks(path: str, settings_id: str) -> set[str]:
    """The clocks (Protocol.clock) the rows measured under `settings_id` were timed with."""
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return set()
    return {protocol_clock(r.get("protocol")) for r in read_rows(path) if r["settings_id"] == settings_id}


def anchor_reference(path: str, settings_id: str, anchor_key: str) -> float | None:
    """The anchor's reference median for a settings_id: its anchor_ms in the first run of the
    records file at `path` that timed this anchor (None when no run has): what a new measurement
    is corrected against. Not to be confused with `predictors.base.anchor_references` (per input
    shape, the reference the records a predictor is fitted on are on the scale of, kept in its
    metadata) or `FittedOn.anchor_ms` / `search.verify.anchor_reference` (read that back from a
    fitted predictor); the runtime imports nothing outside dynasearch_runtime/, so it reads the file."""
    if not anchor_key or not os.path.exists(path) or os.path.getsize(path) == 0:
        return None
    for r in read_rows(path):
        if r["settings_id"] == settings_id and r["anchor_key"] == anchor_key:
            try:
                v = float(r["anchor_ms"])
            except ValueError:
                continue
            if math.isfinite(v) and v > 0:
                return v
    return None


# ----------------------------------------------------------------------------------- raw timings
def raw_timings_path(records_path: str, run_id: str, settings_id: str) -> str:
    """Where a run keeps its raw timings: <records stem>.raw/<run_id>-<settings_id>.csv beside the records."""
    stem = os.path.splitext(os.path.basename(records_path))[0]
    return os.path.join(os.path.dirname(os.path.abspath(records_path)), stem + ".raw", f"{run_id}-{settings_id}.csv")


def write_raw_timings(path: str, timings: Sequence[tuple[str, int, int, float, bool]]) -> None:
    """Every timed run of a run and setting: (config key, round, run index within the config, ms,
    disturbed), written atomically; `read_raw_timings` gives the same tuples back. ms are on the
    run's protocol clock (its records' protocol cell): wall, or the timing thread's CPU time."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(RAW_COLUMNS)
    for key, rnd, run, ms, disturbed in timings:
        w.writerow([key, int(rnd), int(run), repr(float(ms)), int(bool(disturbed))])
    write_text_atomic(path, buf.getvalue())


def read_raw_timings(path: str) -> list[tuple[str, int, int, float, bool]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = tuple(next(reader, ()))
        if header != RAW_COLUMNS:
            raise MeasurementError(
                f"raw timings file '{path}' has columns {list(header)}; expected {list(RAW_COLUMNS)}"
            )
        return [(k, int(r), int(i), float(ms), d == "1") for k, r, i, ms, d in reader]
