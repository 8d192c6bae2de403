"""The results directory of a search, and answering questions from it alone (no torch, no Optuna).

RESULTS/
  search.json    format, version, the study's identity (space, task, checkpoint, predictor, target,
                 sampler, ...), storage URL and study name, summary counts, timing, the answer, and
                 (version 2) the sha256 of trials.csv and front.csv as written
  space.json     the search space (backbone shape, head and FFN choices, drops, min layers)
  trials.csv     one row per finished trial (TRIAL_COLUMNS)
  front.csv      the Pareto front of distinct configs (metric on the search selection against
                 predicted latency), every row re-scored on the whole dev split
  measured.csv   latency records of the verified configs (a records file fit-predictor reads)
  front.png, hypervolume.png, shapes.png

`write_results` is the only writer and `read_results` the only reader of search.json, trials.csv
and front.csv: `query`, `export --results`, `query --verify` and the demo all read through it.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from dynabert.errors import InvalidSubnetError
from dynabert.io import read_json, read_utf8, write_json, write_text
from dynabert.space import DROP_RULES, SearchSpace
from dynabert.subnet import BackboneShape, SubnetConfig
from dynasearch_runtime.bounds import check, describe, violation
from dynasearch_runtime.field_bounds import first_violation
from dynasearch_runtime.fingerprint import max_seq_len

from .errors import NoAnswerError, ResultsError, SearchError
from .results_bounds import GRID_KIND, SEARCH_BOUNDS, TRIAL_BOUNDS

FORMAT = "dynasearch-search"
# Results format versions (search.json "version"); a reader reads OLDEST_VERSION..VERSION:
#   1  search.json, trials.csv, front.csv (TRIAL_COLUMNS), space.json, measured.csv.
#   2  search.json also records "tables": {"trials.csv": sha256, "front.csv": sha256} of the tables
#      as written, so a change that leaves every cell well-formed (a flipped digit, a row cut at a
#      line end, a hand edit) is caught too. A version-1 directory is still read (every cell is
#      checked the same way; only the digests are missing) with a warning saying so.
VERSION = 2
OLDEST_VERSION = 1
PERCENTILE_NAMES = ("p50", "p90")  # search --percentile (search/verify.py's PERCENTILES)
FLAVORS = ("bert", "roberta")  # BackboneShape.flavor: the architectures dynabert supports

# (column, meaning) of trials.csv; front.csv has the same columns, one row per distinct config.
TRIAL_FIELDS: tuple[tuple[str, str], ...] = (
    ("trial", "Optuna trial number"),
    ("key", "SubnetConfig.key of the decoded (repaired) config"),
    ("subnet", "sub-network JSON: layers, heads, ffn"),
    ("depth", "kept layers"),
    ("width", "mean kept heads per kept layer / backbone heads (a width summary)"),
    ("ffn_width", "mean kept FFN neurons per kept layer / backbone FFN size"),
    ("grid", "'WxD' when the config is a paper grid point, else empty"),
    ("metric_search", "primary task metric (percent) on the search dev selection"),
    ("metric_full", "the same on the report examples (front and grid configs only; search.json summary says which)"),
    ("predicted_ms", "predicted latency at the predictor's setting"),
    ("measured_ms", "measured latency (the search's percentile; speed-corrected when available) if verified"),
    ("measured_raw_ms", "the raw measured latency, if verified"),
    ("feasible", "predicted_ms <= target (True when no target)"),
    ("on_front", "the config is on the Pareto front"),
    ("duplicate_of", "earlier trial with the same config (empty for the first)"),
    ("cache_hit", "the metric came from the accuracy cache (no evaluation)"),
)
TRIAL_COLUMNS = tuple(c for c, _ in TRIAL_FIELDS)
TABLES = ("trials.csv", "front.csv")
REWRITE = "re-run the same `dynasearch search` command to rewrite it (its study resumes)"


@dataclass(frozen=True)
class Results:
    """A results directory as `read_results` checked it."""

    path: Path
    meta: dict[str, Any]  # search.json
    space: SearchSpace  # search.json's study.space
    trials: pd.DataFrame  # TRIAL_COLUMNS, typed: ints, floats (NaN for an empty cell), bools, str
    front: pd.DataFrame
    version: int


# ------------------------------------------------------------------------------------- reading
def read_results(results_dir: str | Path) -> Results:
    """Read and check a results directory; ResultsError with ONE line naming the file, the key or
    the (1-based data) row and column, and what was expected, on any damage. Nothing is written.

    search.json: a JSON object; `format` is "dynasearch-search"; `version` an integer in
      OLDEST_VERSION..VERSION (newer: refused, upgrade dynasearch; older than OLDEST_VERSION:
      refused; an older readable one: read, with a warning); the keys every reader uses present
      with their types: study.{task, metric, checkpoint, model_dir, predictor_dir} non-empty
      strings, study.space a valid search space (backbone shape, head and FFN choices inside it),
      study.latency.{batch, seq_len}, study.target_ms (or null), summary.{trials, front_size},
      study.percentile p50 or p90, raw and met booleans, message a string, warnings a list of
      strings, fingerprint and answer null or objects; version 2: tables.{trials.csv, front.csv}
      sha256 digests; every number it holds within its kind's range in the bounds table
      (results_bounds.SEARCH_BOUNDS; the latency's seq_len at most the backbone's positions).
    trials.csv, front.csv: regular UTF-8 files ending with a line end, well-formed CSV whose header
      is exactly TRIAL_COLUMNS (none missing, unknown or repeated), every row with one cell per
      column; per cell: every number within its kind's range (results_bounds.TRIAL_BOUNDS: words,
      NaN, inf refused); subnet JSON that parses into a sub-network inside the recorded backbone;
      key its SubnetConfig.key; depth its number of layers; grid empty or 'WxD' with W, D in
      (0, 1]; metric_full empty or a number; measured_ms and measured_raw_ms both empty or both
      numbers; feasible, on_front, cache_hit True or False; duplicate_of empty or a trial number.
      Across rows: trial numbers unique; front.csv's keys unique, every one on the front
      (on_front True) and exactly trials.csv's on_front configs; row counts equal search.json's
      summary.trials and summary.front_size; version 2: each table's sha256 is the recorded one.
    space.json and measured.csv are not read here (measured.csv is a records file:
    predictors.records.read_records reads it)."""
    d = Path(results_dir)
    if not d.exists():
        raise ResultsError(f"results directory {d} does not exist")
    if not d.is_dir():
        raise ResultsError(f"results path {d} is not a directory (a results directory of `dynasearch search` is)")
    meta_path = d / "search.json"
    if not meta_path.exists():
        raise ResultsError(f"{d} is not a dynasearch search results directory (no search.json)")
    # A search finishing while we read rewrites the tables, then search.json: tables that do not
    # match their search.json (digest, row counts) may be that, so read again while search.json
    # keeps changing under us; damage that stays is reported.
    message = ""
    for _ in range(3):
        raw_meta = _read_bytes(meta_path)
        try:
            return _read_once(d, meta_path)
        except ResultsError as e:
            message = str(e)
            if _read_bytes(meta_path) == raw_meta:
                break
    raise ResultsError(message)


def load_results(results_dir: str | Path) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """(search.json, trials, front) of a results directory, as `read_results` checked them."""
    r = read_results(results_dir)
    return r.meta, r.trials, r.front


def _read_once(d: Path, meta_path: Path) -> Results:

    meta = read_json(meta_path, "search results file", error=ResultsError)
    version = _check_version(meta_path, meta)
    try:
        space = _check_meta(meta_path, meta, version)
        tables = {name: _read_table(d / name, space.shape) for name in TABLES}
        trials, front = (tables[n][0] for n in TABLES)
        _check_tables(d, meta, trials, front)
    except ResultsError as e:
        if version < VERSION:  # say which format was met: an older writer may be the cause
            raise ResultsError(f"{e} (results format version {version}, written by an older dynasearch)") from None
        raise
    if version >= 2:
        for name in TABLES:
            if tables[name][1] != meta["tables"][name]:
                raise ResultsError(
                    f"{d / name} is not the table the search wrote (its sha256 differs from search.json's "
                    f"tables.{name}): it was changed after the search; {REWRITE}"
                )
    else:
        warnings.warn(
            f"{meta_path} has results format version {version}, older than this dynasearch's {VERSION}: read "
            f"without checking the tables' digests; {REWRITE}",
            stacklevel=3,
        )
    return Results(d, meta, space, trials, front, version)


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _check_version(path: Path, meta: Mapping[str, Any]) -> int:
    if meta.get("format") != FORMAT:
        raise ResultsError(
            f"{path} is not a dynasearch search results file (format {meta.get('format')!r}; expected {FORMAT!r})"
        )
    v = _want(path, meta, "version", _is_int(0), "an integer (the results format version)")
    if v > VERSION:
        raise ResultsError(
            f"{path} has results format version {v}, newer than this dynasearch reads "
            f"({OLDEST_VERSION}..{VERSION}): upgrade dynasearch"
        )
    if v < OLDEST_VERSION:
        raise ResultsError(
            f"{path} has results format version {v}, older than this dynasearch reads "
            f"({OLDEST_VERSION}..{VERSION}): {REWRITE}"
        )
    return v


def _check_meta(path: Path, meta: Mapping[str, Any], version: int) -> SearchSpace:
    """Every key of search.json a reader uses, with its type; the search space it records."""
    for key in ("study.task", "study.metric", "study.checkpoint", "study.model_dir", "study.predictor_dir"):
        _want(path, meta, key, lambda v: isinstance(v, str) and v != "", "a non-empty string")
    for key in ("study.latency.batch", "study.latency.seq_len", "summary.trials", "summary.front_size"):
        _want_number(path, meta, key)
    _want_number(path, meta, "study.target_ms")
    _want(path, meta, "study.percentile", lambda v: v in PERCENTILE_NAMES, f"one of {', '.join(PERCENTILE_NAMES)}")
    for key in ("raw", "met"):
        _want(path, meta, key, lambda v: isinstance(v, bool), "true or false")
    _want(path, meta, "message", lambda v: isinstance(v, str), "a string")
    _want(
        path,
        meta,
        "warnings",
        lambda v: isinstance(v, list) and all(isinstance(w, str) for w in v),
        "a list of strings",
    )
    _want(path, meta, "fingerprint", lambda v: v is None or isinstance(v, dict), "null or a JSON object")
    _want(path, meta, "answer", lambda v: v is None or isinstance(v, dict), "null or a JSON object")
    if meta["answer"] is not None:
        _want(path, meta, "answer.key", lambda v: isinstance(v, str) and v != "", "a non-empty string")
        _want(path, meta, "answer.subnet", lambda v: isinstance(v, dict), "a JSON object")
    if version >= 2:
        for name in TABLES:
            _want(
                path,
                meta,
                ("tables", name),
                lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) is not None,
                "a sha256 digest (64 hexadecimal digits)",
            )
    if "report_dev" in meta:  # absent in results written before it was recorded
        _want(path, meta, "report_dev", lambda v: isinstance(v, dict), "a JSON object")
        _want(path, meta, "report_dev.task", lambda v: isinstance(v, str) and v != "", "a non-empty string")
        _want(path, meta, "report_dev.held_out", lambda v: isinstance(v, bool), "true or false")
        _want(
            path,
            meta,
            "report_dev.sha256",
            lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) is not None,
            "a sha256 digest (64 hexadecimal digits)",
        )
    space = _check_space(path, meta)
    # every other number search.json holds, each within its kind's range (results_bounds.SEARCH_BOUNDS)
    positions = (max_seq_len(space.shape.to_dict()), "the backbone's positions")
    sh = space.shape  # the answer's sub-network and the evaluation length within the searched backbone
    highs = {
        "seq_len": positions,
        "max_seq_length": positions,
        "layer": (sh.num_layers - 1, "the backbone's last layer"),
        "depth": (sh.num_layers, "the backbone's layers"),
        "heads": (sh.num_heads, "the backbone's heads"),
        "ffn": (sh.intermediate_size, "the backbone's FFN"),
    }
    bad = first_violation(meta, SEARCH_BOUNDS, highs)
    if bad:
        raise ResultsError(f"{path}: key '{bad[0]}' must be {bad[2]}; got {_show_json(bad[1])}")
    return space


def _check_space(path: Path, meta: Mapping[str, Any]) -> SearchSpace:
    doc = _want(path, meta, "study.space.shape", lambda v: isinstance(v, dict), "a JSON object")
    fields = {f.name: f for f in dataclasses.fields(BackboneShape)}
    unknown = sorted(set(doc) - set(fields))
    if unknown:
        raise ResultsError(
            f"{path}: key 'study.space.shape' has unknown key(s) {unknown}; expected {', '.join(fields)}"
        )
    shape: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in doc and f.default is not dataclasses.MISSING:
            continue  # an optional field an older writer may not have written
        if name == "flavor":
            shape[name] = _want(
                path, meta, "study.space.shape.flavor", lambda v: v in FLAVORS, f"one of {', '.join(FLAVORS)}"
            )
        else:
            shape[name] = _want_number(path, meta, f"study.space.shape.{name}")
    lists = []
    for key in ("study.space.head_choices", "study.space.ffn_choices"):
        kind = _KINDS[key + ".*"][0]
        lists.append(
            _want(
                path,
                meta,
                key,
                lambda v, kind=kind: isinstance(v, list) and len(v) > 0 and all(violation(kind, c) is None for c in v),
                f"a non-empty list, each item {describe(kind)}",
            )
        )
    heads, ffn = lists
    allow_drop = _want(path, meta, "study.space.allow_drop", lambda v: isinstance(v, bool), "true or false")
    min_layers = _want_number(path, meta, "study.space.min_layers")
    rule = "any" if allow_drop else "none"  # results written before drop rules: allow_drop said it all
    if "drop_rule" in (meta.get("study") or {}).get("space", {}):
        rule = _want(path, meta, "study.space.drop_rule", lambda v: v in DROP_RULES, f"one of {', '.join(DROP_RULES)}")
    try:
        return SearchSpace(BackboneShape(**shape), tuple(heads), tuple(ffn), allow_drop, min_layers, rule)
    except InvalidSubnetError as e:
        raise ResultsError(f"{path}: key 'study.space' is not a valid search space: {e}") from None


def _want(
    path: Path, doc: Mapping[str, Any], key: str | tuple[str, ...], ok: Callable[[Any], bool], expected: str
) -> Any:
    """doc's value at `key` ('study.latency.batch', or a tuple of parts when a part holds a dot)
    when `ok` accepts it; ResultsError naming the key and what was expected otherwise (absent included)."""
    value: Any = doc
    parts = key.split(".") if isinstance(key, str) else key
    dotted = ".".join(parts)
    for i, part in enumerate(parts):
        if not isinstance(value, dict):
            raise ResultsError(f"{path}: key '{'.'.join(parts[:i])}' must be a JSON object; got {_show_json(value)}")
        if part not in value:
            where = ".".join(parts[: i + 1])
            what = expected if where == dotted else f"a JSON object with key '{dotted}': {expected}"
            raise ResultsError(f"{path} lacks key '{where}' ({what})")
        value = value[part]
    if not ok(value):
        raise ResultsError(f"{path}: key '{dotted}' must be {expected}; got {_show_json(value)}")
    return value


def _is_int(lo: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo


_KINDS = {key: (kind, nullable) for key, kind, nullable in SEARCH_BOUNDS}


def _want_number(path: Path, doc: Mapping[str, Any], key: str) -> Any:
    """`_want` for a number of SEARCH_BOUNDS: present, and within its kind's range (NaN and Infinity,
    which json.loads reads as floats, never are)."""
    kind, nullable = _KINDS[key]
    ok = lambda v: (nullable and v is None) or violation(kind, v) is None  # noqa: E731
    return _want(path, doc, key, ok, ("null or " if nullable else "") + describe(kind))


def _show_json(v: Any) -> str:
    text = json.dumps(v) if not isinstance(v, float) or math.isfinite(v) else repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


# --------------------------------------------------------------------------------------- tables
class _CellError(Exception):
    """What a cell should have held (formatted with file, row, column and the cell by _read_table)."""


_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_INT = re.compile(r"[-+]?\d+")
_GRID = re.compile(r"(\d+(?:\.\d+)?)x(\d+(?:\.\d+)?)")


def _number(text: str, column: str, *, empty_ok: bool = False) -> float:
    """A number cell of `column`, within its kind's range (TRIAL_BOUNDS)."""
    if text == "" and empty_ok:
        return math.nan
    # float() also takes 'nan', 'inf', '1_000', ' 1': only plain decimal numbers are written ('1e400' is inf).
    if not _NUMBER.fullmatch(text) or violation(TRIAL_BOUNDS[column], float(text)) is not None:
        raise _CellError(describe(TRIAL_BOUNDS[column]) + (" or an empty cell" if empty_ok else ""))
    return float(text)


def _integer(text: str, column: str, *, empty_ok: bool = False) -> int | str:
    """An integer cell of `column`, within its kind's range (TRIAL_BOUNDS)."""
    if text == "" and empty_ok:
        return ""
    # An integral float ('3.0') is what pandas writes for an integer column that held an empty cell.
    if _INT.fullmatch(text) or re.fullmatch(r"\d+\.0", text):
        v = int(float(text)) if "." in text else int(text)
        if violation(TRIAL_BOUNDS[column], v) is None:
            return v
    raise _CellError(describe(TRIAL_BOUNDS[column]) + (" or an empty cell" if empty_ok else ""))


def _boolean(text: str) -> bool:
    if text in ("True", "False"):
        return text == "True"
    raise _CellError("True or False")


def _subnet(text: str, shape: BackboneShape) -> SubnetConfig:
    if text == "":
        raise _CellError("a sub-network as JSON (layers, heads, ffn)")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise _CellError(f"a sub-network as JSON (layers, heads, ffn); it is not valid JSON ({e.msg})") from None
    try:
        return SubnetConfig.from_dict(data).validate(shape)
    except InvalidSubnetError as e:
        raise _CellError(
            f"a sub-network inside the searched backbone ({shape.num_layers} layers, {shape.num_heads} heads, "
            f"FFN {shape.intermediate_size}): {e}"
        ) from None


def _grid(text: str) -> str:
    m = _GRID.fullmatch(text)
    if text == "" or (m and all(violation(GRID_KIND, float(g)) is None for g in m.groups())):
        return text
    raise _CellError(f"empty or a grid point 'WxD' with W and D each {describe(GRID_KIND)}")


def _row(cells: Mapping[str, str], shape: BackboneShape) -> dict[str, Any]:
    """One typed row; _CellError (with the column) on the first bad cell."""
    out: dict[str, Any] = {}

    def cell(col: str, parse: Callable[[str], Any]) -> Any:
        try:
            out[col] = parse(cells[col])
        except _CellError as e:
            raise _CellError(col, *e.args) from None
        return out[col]

    cell("trial", lambda t: _integer(t, "trial"))
    sub = cell("subnet", lambda t: _subnet(t, shape))
    out["subnet"] = cells["subnet"]  # the JSON text, as written (answer_row parses it)
    cell("key", lambda t: t if t == sub.key else _fail(f"the key of its subnet, {sub.key}"))
    cell(
        "depth",
        lambda t: t if _integer(t, "depth") == sub.depth else _fail(f"{sub.depth}, the number of layers of its subnet"),
    )
    out["depth"] = sub.depth
    cell("width", lambda t: _number(t, "width"))
    cell("ffn_width", lambda t: _number(t, "ffn_width"))
    cell("grid", _grid)
    cell("metric_search", lambda t: _number(t, "metric_search"))
    cell("metric_full", lambda t: _number(t, "metric_full", empty_ok=True))
    cell("predicted_ms", lambda t: _number(t, "predicted_ms"))
    measured = cell("measured_ms", lambda t: _number(t, "measured_ms", empty_ok=True))
    cell(
        "measured_raw_ms",
        lambda t: (
            _number(t, "measured_raw_ms", empty_ok=True)
            if (t == "") == math.isnan(measured)
            else _fail(
                "an empty cell, as measured_ms is empty"
                if math.isnan(measured)
                else "a number, as measured_ms is given"
            )
        ),
    )
    for col in ("feasible", "on_front", "cache_hit"):
        cell(col, _boolean)
    cell("duplicate_of", lambda t: _integer(t, "duplicate_of", empty_ok=True))
    return {c: out[c] for c in TRIAL_COLUMNS}


def _fail(expected: str) -> Any:
    raise _CellError(expected)


def _read_table(path: Path, shape: BackboneShape) -> tuple[pd.DataFrame, str]:
    """(typed table, sha256 of its text) of trials.csv or front.csv; ResultsError naming the row."""
    if not path.exists():
        raise ResultsError(f"results directory {path.parent} lacks {path.name} (the search did not finish writing it)")
    if not path.is_file():
        raise ResultsError(f"{path} is not a regular file (a CSV table of trials is expected)")
    text = read_utf8(path, "results table", error=ResultsError, expected="a CSV table")
    if not text.strip():
        raise ResultsError(
            f"{path} is empty; expected a header ({', '.join(TRIAL_COLUMNS[:3])}, ...) and one row per config"
        )
    cut = not text.endswith("\n")  # the writer ends every row with a line end: a file without one was cut short
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        lines = list(reader)
    except csv.Error as e:
        raise ResultsError(
            f"{path} is not well-formed CSV (line {reader.line_num}: {e})" + (": truncated" if cut else "")
        ) from None
    header, body = lines[0], lines[1:]
    missing = [c for c in TRIAL_COLUMNS if c not in header]
    unknown = [c for c in header if c not in TRIAL_COLUMNS]
    repeated = sorted({c for c in header if header.count(c) > 1})
    if missing or unknown or repeated:
        raise ResultsError(
            f"{path} is not a dynasearch trials table: header line "
            + "; ".join(
                part
                for part in (
                    f"missing columns {missing[:5]}" if missing else "",
                    f"unknown columns {unknown[:5]}" if unknown else "",
                    f"repeated columns {repeated[:5]}" if repeated else "",
                )
                if part
            )
            + f" (expected exactly {', '.join(TRIAL_COLUMNS)})"
            + (": truncated" if cut and not body else "")
        )
    if not body:
        raise ResultsError(f"{path} holds no rows (a search writes at least one)")
    rows = []
    for n, cells in enumerate(body, start=1):
        end = " (the file ends in this row without a line end: truncated)" if cut and n == len(body) else ""
        if len(cells) != len(header):
            raise ResultsError(f"{path}: row {n} has {len(cells)} cell(s); expected {len(header)}, one per column{end}")
        try:
            rows.append(_row(dict(zip(header, cells)), shape))
        except _CellError as e:
            col, expected = e.args
            got = cells[header.index(col)]
            raise ResultsError(
                f"{path}: row {n}, column '{col}': expected {expected}; got {_show_cell(got)}{end}"
            ) from None
    if cut:
        raise ResultsError(f"{path} is truncated: its last row (row {len(body)}) has no line end")
    return pd.DataFrame(rows, columns=list(TRIAL_COLUMNS)), _digest(text)


def _show_cell(text: str) -> str:
    if text == "":
        return "an empty cell"
    return repr(text) if len(text) <= 40 else repr(text[:37]) + "..."


def _digest(text: str) -> str:
    # Of the text with '\n' line ends, so a text-mode write that translated them still matches.
    return hashlib.sha256(text.replace("\r\n", "\n").encode("utf-8")).hexdigest()


def _check_tables(d: Path, meta: Mapping[str, Any], trials: pd.DataFrame, front: pd.DataFrame) -> None:
    """What holds between rows and files: the row counts search.json's summary records (first: a
    cut row breaks the rest), unique trial numbers and front keys, the front is the trials'
    on_front configs."""
    tp, fp = d / "trials.csv", d / "front.csv"
    for p, df, key in ((tp, trials, "trials"), (fp, front, "front_size")):
        want = meta["summary"][key]
        if len(df) != want:
            raise ResultsError(
                f"{p} holds {len(df)} row(s); search.json's summary.{key} says {want}: rows were cut or "
                f"added after the search; {REWRITE}"
            )
    dup = trials["trial"].duplicated()
    if dup.any():
        n = int(dup.to_numpy().nonzero()[0][0]) + 1
        raise ResultsError(f"{tp}: row {n} repeats trial number {trials['trial'].iloc[n - 1]} (each trial has one row)")
    dup = front["key"].duplicated()
    if dup.any():
        n = int(dup.to_numpy().nonzero()[0][0]) + 1
        raise ResultsError(
            f"{fp}: row {n} repeats config {front['key'].iloc[n - 1]} (the front lists distinct configs)"
        )
    off = ~front["on_front"]
    if off.any():
        n = int(off.to_numpy().nonzero()[0][0]) + 1
        raise ResultsError(
            f"{fp}: row {n}, column 'on_front': expected True (every front config is on the front); got 'False'"
        )
    on = set(trials.loc[trials["on_front"], "key"])
    if set(front["key"]) != on:
        extra, lacking = sorted(set(front["key"]) - on), sorted(on - set(front["key"]))
        raise ResultsError(
            f"{fp} does not list trials.csv's front configs (on_front True there): "
            + (f"not on trials.csv's front: {extra[:3]}" if extra else f"missing: {lacking[:3]}")
        )


# ------------------------------------------------------------------------------------- writing
def write_results(results_dir: str | Path, meta: Mapping[str, Any], trials: pd.DataFrame, front: pd.DataFrame) -> None:
    """trials.csv, front.csv and (last, so a reader never sees a search.json without its tables)
    search.json, which this writer stamps with FORMAT, VERSION and the tables' digests."""

    d = Path(results_dir)
    texts = {
        "trials.csv": trials[list(TRIAL_COLUMNS)].to_csv(index=False),
        "front.csv": front[list(TRIAL_COLUMNS)].to_csv(index=False),
    }
    for name, text in texts.items():
        write_text(d / name, text)
    write_json(d / "space.json", meta["study"]["space"])
    doc = {**meta, "format": FORMAT, "version": VERSION, "tables": {n: _digest(t) for n, t in texts.items()}}
    write_json(d / "search.json", doc)


# ------------------------------------------------------------------------------------- answers
def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def answer_row(row: Mapping[str, Any], target_ms: float | None, meta: Mapping[str, Any]) -> dict[str, Any]:
    measured = _num(row.get("measured_ms"))
    return {
        "key": str(row["key"]),
        "subnet": json.loads(row["subnet"]),
        "grid": row.get("grid") if isinstance(row.get("grid"), str) else "",
        "metric": meta["study"]["metric"],
        "metric_full": _num(row.get("metric_full")),
        "metric_search": _num(row.get("metric_search")),
        "metric_on": meta.get("rescore_dev") or "all",  # where metric_full was scored (dev selection)
        "predicted_ms": _num(row.get("predicted_ms")),
        "measured_ms": measured,
        "measured_raw_ms": _num(row.get("measured_raw_ms")),
        "verified": measured is not None,
        "target_ms": target_ms,
        "depth": int(row["depth"]),
    }


def check_target(target_ms: float) -> None:
    check("latency_ms", target_ms, "target latency", SearchError)


def best_under(results: Results, target_ms: float) -> dict[str, Any]:
    """The best config of checked `results` under `target_ms` (see `query`)."""
    check_target(target_ms)
    front, meta = results.front, results.meta
    lat = front["measured_ms"].where(front["measured_ms"].notna(), front["predicted_ms"])
    metric = front["metric_full"].where(front["metric_full"].notna(), front["metric_search"])
    ok = front[lat <= target_ms].assign(_m=metric[lat <= target_ms])
    if ok.empty:
        i = lat.idxmin()
        f = answer_row(front.loc[i], target_ms, meta)
        fastest = (
            f"{f['key']} ({_shape(f['subnet'])}) at {lat.loc[i]:.3g} ms "
            f"({'measured' if f['verified'] else 'predicted'}), {f['metric']} {metric.loc[i]:.2f}"
        )
        raise NoAnswerError(f"no config of the front meets {target_ms:g} ms; the fastest is {fastest}", fastest=fastest)
    best = ok.sort_values(["_m", "predicted_ms"], ascending=[False, True]).iloc[0]
    return answer_row(best, target_ms, meta)


def query(results_dir: str | Path, target_ms: float) -> dict[str, Any]:
    """The best config under `target_ms` from a results directory alone: among the front's configs
    whose latency (measured where measured, else predicted) meets the target, the highest metric
    on the whole dev split. `verified` says whether that latency was measured. SearchError on a
    bad target, ResultsError on a damaged directory, NoAnswerError (a SearchError: the command
    exits 1) when no front config meets the target (naming the fastest one)."""
    check_target(target_ms)
    return best_under(read_results(results_dir), target_ms)


def _shape(subnet: Mapping[str, Any]) -> str:
    return f"{len(subnet['layers'])} layers, heads {subnet['heads']}, ffn {subnet['ffn']}"


def reported_on(selection: str | None) -> str:
    """Where the front's (reported) metric was scored, for people: search.json's `rescore_dev`."""
    if not selection or selection == "all":
        return "whole dev split"
    if selection.startswith("rest-"):
        return f"{selection[5:]} dev examples held out from the ranking"
    if selection.startswith("subset-"):
        n, seed = selection[7:].split("-seed", 1) if "-seed" in selection else (selection[7:], "?")
        return f"{n} dev examples, seed {seed}"
    return f"dev examples {selection}"


def describe_answer(a: Mapping[str, Any]) -> str:
    """Human-readable lines for one answer."""
    metric = a.get("metric_full") if a.get("metric_full") is not None else a.get("metric_search")
    lines = [f"config {a['key']}: {_shape(a['subnet'])}" + (f" (grid point {a['grid']})" if a.get("grid") else "")]
    lines.append(
        f"  {a['metric']} {metric:.2f}"
        + (f" ({reported_on(a.get('metric_on'))})" if a.get("metric_full") is not None else " (search subset)")
    )
    lat = f"  predicted {a['predicted_ms']:.3f} ms"
    if a.get("verified"):
        lat += f", measured {a['measured_ms']:.3f} ms"
        if a.get("measured_raw_ms") is not None and abs(a["measured_raw_ms"] - a["measured_ms"]) > 1e-9:
            lat += f" (raw {a['measured_raw_ms']:.3f} ms)"
    else:
        lat += "  [not verified: never measured; add --verify]"
    lines.append(lat)
    return "\n".join(lines)
