"""The check of one latency records row (`check_row`): every cell holds its column's type, every number
lies within its kind's range in the bounds table (`RECORD_BOUNDS`, column -> kind), and the backbone
shape, sub-network and protocol cells are whole. `schema.read_rows` runs it on every row it reads.

Part of the device runtime (standard library + numpy; relative imports, Python 3.8 syntax): the kit's
runner checks the records it appends to with it.
"""

from __future__ import annotations

import json
import math
from typing import Any, Dict, List, Mapping, Sequence

from .bounds import violation
from .clocks import CLOCKS
from .field_bounds import SHAPE_BOUNDS, SUBNET_BOUNDS, first_violation
from .fingerprint import max_seq_len
from .protocol import PROTOCOL_FIELDS

# Every int and float column of the records (schema.RECORD_FIELDS) by its kind in the bounds table.
# seq_len is also capped by the row's backbone positions (its shape cell).
RECORD_BOUNDS: Dict[str, str] = {
    "depth": "depth",
    "heads_sum": "count0",
    "ffn_sum": "count0",
    "params": "params",
    "flops": "flops",
    "threads": "threads",
    "batch": "batch",
    "seq_len": "seq_len",
    "cpu_cores": "cpu_cores",
    "median_ms": "latency_ms",
    "corrected_median_ms": "latency_ms",
    "speed_index": "ratio",
    "speed_spread": "ratio",
    "anchor_ms": "latency_ms",
    "mean_ms": "latency_ms",
    "p90_ms": "latency_ms",
    "p99_ms": "latency_ms",
    "iqr_ms": "latency0_ms",
    "cv": "spread",
    "ci_low_ms": "latency_ms",
    "ci_high_ms": "latency_ms",
    "n_runs": "runs0",  # a failed row ran none
    "warmup_runs": "runs0",
    "disturbed_runs": "runs0",
    "busy_rounds": "runs0",
    "busy_share": "share",
    "wall_median_ms": "latency_ms",
    "quiet_runs": "runs0",
    "quiet_wall_median_ms": "latency_ms",
    "measure_s": "elapsed_s",
    "prepare_s": "elapsed_s",
}

# Cells every row must fill; `median_ms` is also needed in rows of status ok. Other cells may be
# empty (a failed row has no latencies, the kit's runner may leave FLOPs out, older rows lack the
# speed columns); when filled they must hold a value of their column's type.
REQUIRED = frozenset(
    (
        "schema",
        "run_id",
        "key",
        "subnet",
        "depth",
        "heads_sum",
        "ffn_sum",
        "shape",
        "backend",
        "device",
        "threads",
        "spinning",
        "dtype",
        "batch",
        "seq_len",
        "cpu_cores",
        "fingerprint",
        "target_id",
        "settings_id",
        "status",
    )
)
# Latencies of an ok row outside their range are reported together, after the whole file is read
# (p90/median judges p90 targets; anchor_ms is the speed reference); other cells stop at the first.
GATHERED = (
    "median_ms",
    "corrected_median_ms",
    "wall_median_ms",
    "quiet_wall_median_ms",
    "mean_ms",
    "p90_ms",
    "p99_ms",
    "anchor_ms",
    "speed_index",
)
_BOOLS = {"true": True, "1": True, "false": False, "0": False}
# The backbone numbers a sub-network cell is checked against (the rest of SHAPE_BOUNDS may be absent).
_SHAPE_NEEDED = ("num_layers", "num_heads", "head_dim", "hidden_size", "intermediate_size")
_HEX = frozenset("0123456789abcdef")


class Bad(Exception):
    """One cell's damage: (column, what was expected); turned into one MeasurementError line."""


def _int_cell(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        f = float(text)  # "5.0" (a table tool's rewrite of an int column) is 5; "5.5", "abc" are not ints
        if not (math.isfinite(f) and f.is_integer()):
            raise ValueError(text) from None
        return int(f)


def _json_cell(col: str, text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise Bad(col, "JSON (the cell is cut or not JSON)") from None


def _int_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)


def _check_shape_cell(text: str) -> dict:
    shape = _json_cell("shape", text)
    if not isinstance(shape, dict):
        raise Bad("shape", "a JSON object (the backbone shape)")
    missing = [k for k in _SHAPE_NEEDED if k not in shape]
    if missing:
        raise Bad("shape", f"the backbone shape with a positive integer {missing[0]!r} (it lacks it)")
    bad = first_violation(shape, SHAPE_BOUNDS)
    if bad:
        raise Bad("shape", f"the backbone shape with {bad[0]} {bad[2]} (got {bad[1]!r})")
    return shape


def _check_subnet_cell(text: str, shape: Mapping[str, Any], cells: Mapping[str, Any]) -> None:
    sub = _json_cell("subnet", text)
    if not isinstance(sub, dict) or not all(k in sub for k in ("layers", "heads", "ffn")):
        raise Bad("subnet", "a JSON object with layers, heads and ffn")
    layers, heads, ffn = sub["layers"], sub["heads"], sub["ffn"]
    if not (_int_list(layers) and _int_list(heads) and _int_list(ffn)) or not len(layers) == len(heads) == len(ffn):
        raise Bad("subnet", "layers, heads and ffn as lists of non-negative integers of one length")
    bad = first_violation(sub, SUBNET_BOUNDS)
    if bad:
        raise Bad("subnet", f"{bad[0]} {bad[2]} (got {bad[1]!r})")
    if any(b <= a for a, b in zip(layers, layers[1:])):
        raise Bad("subnet", f"layers in ascending order without repeats (got {layers})")
    n_layers, n_heads, n_ffn = shape["num_layers"], shape["num_heads"], shape["intermediate_size"]
    for name, values, limit, what in (
        ("layers", layers, n_layers - 1, f"layer indices 0..{n_layers - 1} (its backbone has {n_layers} layers)"),
        ("heads", heads, n_heads, f"at most {n_heads} heads per layer (its backbone has {n_heads})"),
        ("ffn", ffn, n_ffn, f"at most {n_ffn} FFN neurons per layer (its backbone has {n_ffn})"),
    ):
        over = [v for v in values if v > limit]
        if over:
            raise Bad("subnet", f"{what}; {name} holds {over[0]}")
    for col, want in (("depth", len(layers)), ("heads_sum", sum(heads)), ("ffn_sum", sum(ffn))):
        if cells.get(col) is not None and cells[col] != want:
            raise Bad(col, f"{want} to agree with the subnet cell {text} (got {cells[col]})")


def check_row(r: Mapping[str, Any], header: Sequence[str], types: Mapping[str, str]) -> List[str]:
    """Validate one row's cells (strings; `types`: column -> int, float, bool or str); returns the
    GATHERED columns of an ok row whose number is outside its kind's range (reported together after
    the whole file is read). Bad(column, expected) for anything else."""
    if None in r:  # csv.DictReader keeps surplus cells under the key None
        raise Bad("", f"{len(header)} cells; the row has {len(header) + len(r[None])}")
    empty = [c for c in header if r.get(c) is None]
    if empty:  # a short row: DictReader fills the missing cells with None
        raise Bad(
            "", f"{len(header)} cells; the row has {len(header) - len(empty)} (it is cut: from column {empty[0]!r} on)"
        )
    status = r["status"]
    if status not in ("ok", "failed"):
        raise Bad("status", "ok or failed")
    need = REQUIRED | ({"median_ms"} if status == "ok" else set())
    cells: Dict[str, Any] = {}
    bad_latency = []
    for col in header:
        text = r[col]
        typ = types.get(col)
        if text == "":
            if col in need:
                raise Bad(col, "a value (the cell is empty)")
            continue
        if typ in ("int", "float"):
            try:
                v: Any = _int_cell(text) if typ == "int" else float(text)
            except ValueError:
                raise Bad(col, "an integer" if typ == "int" else "a number") from None
            rule = violation(RECORD_BOUNDS[col], v)
            if rule is not None:
                if col in GATHERED and status == "ok":
                    bad_latency.append(col)
                else:
                    raise Bad(col, rule)
            cells[col] = v
        elif typ == "bool":
            if text.lower() not in _BOOLS:
                raise Bad(col, "True or False")
    key = r["key"]
    if len(key) != 12 or not set(key) <= _HEX:
        raise Bad("key", "12 hexadecimal digits (a SubnetConfig key)")
    shape = _check_shape_cell(r["shape"])
    rule = violation("seq_len", cells["seq_len"], max_seq_len(shape))
    if rule is not None:
        raise Bad("seq_len", f"{rule} (the backbone's positions)")
    _check_subnet_cell(r["subnet"], shape, cells)
    for part, whole in (("quiet_runs", "n_runs"), ("busy_rounds", "n_runs")):
        if part in cells and whole in cells and cells[part] > cells[whole]:
            raise Bad(part, f"at most {whole} ({cells[whole]}): a count of the timed runs or their rounds")
    if r.get("protocol"):
        proto = _json_cell("protocol", r["protocol"])
        if not isinstance(proto, dict):
            raise Bad("protocol", "a JSON object (the protocol settings)")
        if proto.get("clock", "wall") not in CLOCKS:
            raise Bad("protocol", f"a protocol whose clock is {' or '.join(CLOCKS)}")
        bad = first_violation(proto, PROTOCOL_FIELDS)
        if bad:
            raise Bad("protocol", f"a protocol whose {bad[0]} is {bad[2]} (got {bad[1]!r})")
    return bad_latency
