"""The results directory of a search, and answering questions from it alone (no torch, no Optuna).

RESULTS/
  search.json    format, version, the study's identity (space, task, checkpoint, predictor, target,
                 sampler, ...), storage URL and study name, summary counts, timing, the answer
  space.json     the search space (backbone shape, head and FFN choices, drops, min layers)
  trials.csv     one row per finished trial (TRIAL_COLUMNS)
  front.csv      the Pareto front of distinct configs (metric on the search selection against
                 predicted latency), every row re-scored on the whole dev split
  measured.csv   latency records of the verified configs (a records file fit-predictor reads)
  front.png, hypervolume.png, shapes.png
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from .errors import ResultsError, SearchError

FORMAT = "dynasearch-search"
VERSION = 1

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
    ("metric_full", "the same on the whole dev split (front and grid configs only)"),
    ("predicted_ms", "predicted latency at the predictor's setting"),
    ("measured_ms", "measured latency (the search's percentile; speed-corrected when available) if verified"),
    ("measured_raw_ms", "the raw measured latency, if verified"),
    ("feasible", "predicted_ms <= target (True when no target)"),
    ("on_front", "the config is on the Pareto front"),
    ("duplicate_of", "earlier trial with the same config (empty for the first)"),
    ("cache_hit", "the metric came from the accuracy cache (no evaluation)"),
)
TRIAL_COLUMNS = tuple(c for c, _ in TRIAL_FIELDS)


def _read_json(path: Path, what: str) -> dict:
    from dynabert.io import read_json

    return read_json(path, what, error=ResultsError)


def load_results(results_dir: str | Path) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """(search.json, trials, front) of a results directory, checked; ResultsError when it is
    missing, corrupted, or not a dynasearch search's."""
    d = Path(results_dir)
    if not d.is_dir():
        raise ResultsError(f"results directory {d} does not exist")
    meta_path = d / "search.json"
    if not meta_path.is_file():
        raise ResultsError(f"{d} is not a dynasearch search results directory (no search.json)")
    meta = _read_json(meta_path, "search results file")
    if meta.get("format") != FORMAT:
        raise ResultsError(f"{meta_path} is not a dynasearch search results file (format {meta.get('format')!r})")
    if meta.get("version") != VERSION:
        raise ResultsError(f"{meta_path} has results version {meta.get('version')!r}; this dynasearch reads version {VERSION}")
    tables = []
    for name in ("trials.csv", "front.csv"):
        p = d / name
        if not p.is_file():
            raise ResultsError(f"results directory {d} lacks {name} (the search did not finish writing it)")
        try:
            df = pd.read_csv(p, dtype={"key": str, "grid": str}, keep_default_na=True)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise ResultsError(f"{p} is corrupted ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
        missing = [c for c in TRIAL_COLUMNS if c not in df.columns]
        if missing:
            raise ResultsError(f"{p} is not a dynasearch trials table (missing columns {missing[:5]})")
        tables.append(df)
    return meta, tables[0], tables[1]


def write_results(results_dir: str | Path, meta: Mapping[str, Any], trials: pd.DataFrame, front: pd.DataFrame) -> None:
    """trials.csv, front.csv and (last, so a reader never sees a search.json without its tables) search.json."""
    from dynabert.io import write_json, write_text

    d = Path(results_dir)
    write_text(d / "trials.csv", trials[list(TRIAL_COLUMNS)].to_csv(index=False))
    write_text(d / "front.csv", front[list(TRIAL_COLUMNS)].to_csv(index=False))
    write_json(d / "space.json", meta["study"]["space"])
    write_json(d / "search.json", dict(meta))


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def answer_row(row: Mapping[str, Any], target_ms: float | None, meta: Mapping[str, Any]) -> dict[str, Any]:
    measured = _num(row.get("measured_ms"))
    return {
        "key": str(row["key"]), "subnet": json.loads(row["subnet"]), "grid": row.get("grid") if isinstance(row.get("grid"), str) else "",
        "metric": meta["study"]["metric"], "metric_full": _num(row.get("metric_full")), "metric_search": _num(row.get("metric_search")),
        "predicted_ms": _num(row.get("predicted_ms")), "measured_ms": measured, "measured_raw_ms": _num(row.get("measured_raw_ms")),
        "verified": measured is not None, "target_ms": target_ms, "depth": int(row["depth"]),
    }


def query(results_dir: str | Path, target_ms: float) -> dict[str, Any]:
    """The best config under `target_ms` from a results directory alone: among the front's configs
    whose latency (measured where measured, else predicted) meets the target, the highest metric
    on the whole dev split. `verified` says whether that latency was measured. SearchError when
    no front config is predicted to meet the target (with the fastest one)."""
    if not (isinstance(target_ms, (int, float)) and math.isfinite(target_ms) and target_ms > 0):
        raise SearchError(f"target latency must be a positive number of milliseconds; got {target_ms!r}")
    meta, _, front = load_results(results_dir)
    if front.empty:
        raise ResultsError(f"{Path(results_dir) / 'front.csv'} holds no configs")
    lat = front["measured_ms"].where(front["measured_ms"].notna(), front["predicted_ms"])
    metric = front["metric_full"].where(front["metric_full"].notna(), front["metric_search"])
    ok = front[lat <= target_ms].assign(_m=metric[lat <= target_ms])
    if ok.empty:
        i = lat.idxmin()
        f = answer_row(front.loc[i], target_ms, meta)
        raise SearchError(f"no config of the front meets {target_ms:g} ms; the fastest is {f['key']} ({_shape(f['subnet'])}) at "
                          f"{lat.loc[i]:.3g} ms ({'measured' if f['verified'] else 'predicted'}), {f['metric']} {metric.loc[i]:.2f}")
    best = ok.sort_values(["_m", "predicted_ms"], ascending=[False, True]).iloc[0]
    return answer_row(best, target_ms, meta)


def _shape(subnet: Mapping[str, Any]) -> str:
    return f"{len(subnet['layers'])} layers, heads {subnet['heads']}, ffn {subnet['ffn']}"


def describe_answer(a: Mapping[str, Any]) -> str:
    """Human-readable lines for one answer."""
    metric = a.get("metric_full") if a.get("metric_full") is not None else a.get("metric_search")
    lines = [f"config {a['key']}: {_shape(a['subnet'])}" + (f" (grid point {a['grid']})" if a.get("grid") else "")]
    lines.append(f"  {a['metric']} {metric:.2f}" + (" (whole dev split)" if a.get("metric_full") is not None else " (search subset)"))
    lat = f"  predicted {a['predicted_ms']:.3f} ms"
    if a.get("verified"):
        lat += f", measured {a['measured_ms']:.3f} ms"
        if a.get("measured_raw_ms") is not None and abs(a["measured_raw_ms"] - a["measured_ms"]) > 1e-9:
            lat += f" (raw {a['measured_raw_ms']:.3f} ms)"
    else:
        lat += "  [not verified: never measured; add --verify]"
    lines.append(lat)
    return "\n".join(lines)
