"""Export a config chosen from a search's results (by target latency or by key) with the existing
exporter; the manifest adds what the search knows about it: metric, predicted and measured
latency, the target, and the fingerprint of the machine it was measured on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dynabert.io import check_output_dir
from dynabert.runs import model_digest
from dynabert.subnet import SubnetConfig

from .errors import ResultsError, SearchError
from .results import answer_row, best_under, check_target, read_results


def pick(
    results_dir: str | Path, target_ms: float | None = None, key: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(search.json, the chosen answer) by target (as `query`) or by key (any searched config);
    the directory is read once, through `read_results` (ResultsError on any damage), and
    NoAnswerError when no config meets the target."""
    if (target_ms is None) == (key is None):
        raise SearchError("choose the config by a target latency or by a key (one of them)")
    if target_ms is not None:
        check_target(target_ms)
    results = read_results(results_dir)
    if key is not None:
        rows = results.trials[results.trials["key"] == key]
        if rows.empty:
            raise SearchError(f"key {key!r} is not a config of {results_dir} (see its trials.csv)")
        return results.meta, answer_row(rows.iloc[0], None, results.meta)
    return results.meta, best_under(results, target_ms)


def export_from_results(
    results_dir: str | Path,
    out: str | Path,
    *,
    target_ms: float | None = None,
    key: str | None = None,
    formats: str = "onnx,hf",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Export the chosen config of a search; returns the manifest."""
    from dynabert.backbone import load_model  # torch: not on the query path
    from dynabert.export import export_subnet, parse_formats  # torch: not on the query path

    parse_formats(formats)
    check_output_dir(out, overwrite)  # before any slow work
    meta, ans = pick(results_dir, target_ms, key)
    model_dir = Path(meta["study"]["model_dir"])  # read_results checked it is a non-empty string
    if not (model_dir / "config.json").is_file():
        raise ResultsError(
            f"the searched model {model_dir} (from {Path(results_dir) / 'search.json'}) is no longer there"
        )
    if model_digest(model_dir) != meta["study"]["checkpoint"]:
        raise ResultsError(
            f"the model in {model_dir} changed since the search (its weights' digest differs): search again"
        )
    model = load_model(model_dir)
    subnet = SubnetConfig.from_dict(ans["subnet"])
    extra = {
        "search": {
            "results_dir": str(Path(results_dir).resolve()),
            "task": meta["study"]["task"],
            "metric": meta["study"]["metric"],
            "metric_full_dev": ans["metric_full"],
            "metric_search_dev": ans["metric_search"],
            "predicted_ms": ans["predicted_ms"],
            "measured_ms": ans["measured_ms"],
            "measured_raw_ms": ans["measured_raw_ms"],
            "verified": ans["verified"],
            "target_ms": target_ms,
            "latency_setting": meta["study"]["latency"],
            "fingerprint": meta.get("fingerprint"),
        }
    }
    grid = None
    if ans.get("grid"):
        w, d = str(ans["grid"]).split("x")
        grid = (float(w), float(d))
    precision = meta["study"].get("precision", "fp32")  # an int8 search's answer ships its int8 ONNX model
    manifest = export_subnet(
        None,
        subnet,
        out,
        formats,
        overwrite,
        grid_point=grid,
        model=model,
        source_dir=model_dir,
        extra=extra,
        precision=precision,
    )
    return manifest
