"""The demo's summary (OUT/summary.json, what the report and the console show): the grid, the
predictor, the answer, and the answer against the best paper grid point under the target."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from dynabert.errors import DynasearchError
from dynabert.runs import resolve_run
from dynabert.subnet import SubnetConfig
from dynabert.tasks import get_task
from search.config import RESCORE_SEED
from search.results import load_results

if TYPE_CHECKING:
    from .demo import DemoConfig  # type only: demo imports this module


SEARCH_DEV_SEED = 0  # which seeded slice of dev the demo's search ranks on (its score step leaves it out)


def log(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def grid_csv(out: Path) -> Path:
    found = sorted((out / "eval").glob("*-grid.csv"))
    if not found:
        raise DynasearchError(f"no grid scores in {out / 'eval'}; delete {out / 'steps.json'} to redo the demo's steps")
    return found[0]


def report_dev(cfg: DemoConfig, info):
    """The dev examples the demo's search reports on (dev less its ranking slice, then eval_dev of them)."""
    from dynabert.evaluate import load_dev_parts  # torch: not on the --help path

    return load_dev_parts(
        get_task(cfg.task),
        info.model_dir,
        rank=cfg.search_dev,
        rank_seed=SEARCH_DEV_SEED,
        report_subset=cfg.eval_dev,
        report_seed=RESCORE_SEED,
        data_dir=cfg.data_dir,
        max_seq_length=info.max_seq_length or 128,
    ).report


def against_grid(cfg: DemoConfig, out: Path, answer: dict, target: float) -> dict[str, Any] | None:
    """The answer against the best paper grid point predicted under the target, on the report examples
    (none of them ranked the configs): both sub-networks' per-example predictions, the accuracy
    difference with a paired bootstrap 95% interval, and the latency each takes."""
    from dynabert.backbone import load_model  # torch: not on the --help path
    from dynabert.evaluate import predict  # torch: not on the --help path
    from dynabert.metrics import paired_bootstrap  # numpy only, beside the torch imports above

    _, trials, _ = load_results(out / "search")
    metric = get_task(cfg.task).metrics[0]
    grid = trials[(trials["grid"].astype(str) != "") & trials["metric_full"].notna()].drop_duplicates("key")
    under = grid[grid["predicted_ms"] <= target].sort_values(["metric_full", "predicted_ms"], ascending=[False, True])
    is_grid = bool(str(answer.get("grid") or ""))
    if under.empty:
        return {"answer_is_grid": is_grid, "grid": None}
    g = under.iloc[0]
    info = resolve_run(out / "run")
    dev = report_dev(cfg, info)
    model = load_model(info.model_dir).eval()
    labels = np.asarray(dev.labels)
    ok = {
        k: (predict(model, dev, SubnetConfig.from_json(sub)).argmax(-1) == labels).astype(int)
        for k, sub in ((answer["key"], json.dumps(answer["subnet"])), (g["key"], g["subnet"]))
    }
    diff, lo, hi = paired_bootstrap(ok[answer["key"]], ok[g["key"]])
    g_ms = g["measured_ms"] if pd.notna(g["measured_ms"]) else None
    a_ms = answer.get("measured_ms") or answer.get("predicted_ms")
    return {
        "answer_is_grid": is_grid,
        "grid": {
            "label": str(g["grid"]),
            "key": str(g["key"]),
            metric: float(g["metric_full"]),
            "predicted_ms": float(g["predicted_ms"]),
            "measured_ms": g_ms,
        },  # fmt: skip
        "metric_diff": diff,
        "metric_diff_95": [lo, hi],
        "examples": int(len(labels)),
        "latency_ratio": (a_ms / (g_ms or float(g["predicted_ms"]))) if a_ms else None,
    }


def summarize(
    cfg: DemoConfig,
    out: Path,
    grid: pd.DataFrame,
    fit: dict,
    full_ms: float,
    target: float,
    meta: dict,
    answer: dict | None,
    shape,
) -> dict[str, Any]:
    metric = meta["study"]["metric"]
    full_key = SubnetConfig.full(shape).key
    full_row = grid[grid["key"] == full_key]
    full_score = float(full_row[metric].iloc[0]) if len(full_row) else math.nan
    majority = float(grid["dev_majority_share"].iloc[0]) * 100 if "dev_majority_share" in grid else None
    teacher_csv = sorted((out / "eval" / "teacher").glob("*.csv"))
    teacher = float(pd.read_csv(teacher_csv[0])[metric].iloc[0]) if teacher_csv else None
    warnings = []
    if "classes_predicted" in grid:
        one = grid[grid["classes_predicted"] <= 1]
        if len(one):
            pts = ", ".join(f"{w:g}x{d:g}" for w, d in zip(one["width"], one["depth"]))
            warnings.append(
                f"{len(one)} of {len(grid)} grid sub-networks predict a single class on dev ({pts}): "
                "they are broken models whatever their accuracy; train longer or with a larger learning rate"
            )
    if majority is not None:
        low = grid[grid[metric] < majority + 8]
        if len(low):
            warnings.append(
                f"{len(low)} grid sub-network(s) score less than 8 points above the majority class ({majority:.1f}%)"
            )
    if teacher is not None and full_score < teacher - 1:
        warnings.append(f"the full model scores {full_score:.2f}, more than 1 point below its teacher ({teacher:.2f})")
    chosen = None
    if answer is not None:
        measured = answer.get("measured_ms")
        chosen = {
            "key": answer["key"],
            "subnet": answer["subnet"],
            metric: answer.get("metric_full"),
            "predicted_ms": answer.get("predicted_ms"),
            "measured_ms": measured,
            "measured_raw_ms": answer.get("measured_raw_ms"),
            "speed_index": answer.get("speed_index"),
            "speedup": full_ms / measured if measured else None,
            "meets_target": bool(measured is not None and measured <= target),
        }
    return {
        "task": cfg.task,
        "metric": metric,
        "backbone": str(cfg.model_dir or "packaged MiniLM-L6"),
        "dev_majority": majority,
        "teacher": {metric: teacher},
        "full": {"key": full_key, metric: full_score, "median_ms": full_ms},
        "target_ms": target,
        "target_rule": "given" if cfg.target_ms is not None else "half of the full model's measured latency",
        "predictor": fit,
        "grid": grid.to_dict(orient="records"),
        "chosen": chosen,
        "met": meta.get("met"),
        "search_message": meta.get("message", ""),
        "warnings": warnings + list(meta.get("warnings", [])),
        "latency_setting": {
            "backend": cfg.backend,
            "threads": cfg.threads,
            "batch": cfg.latency_batch,
            "seq_len": cfg.latency_seq_len,
        },
        "files": {
            "run": str(out / "run"),
            "grid": str(grid_csv(out)),
            "latency_records": str(out / "latency" / "records.csv"),
            "predictor": str(out / "predictor"),
            "search": str(out / "search"),
            "export": str(out / "export"),
            "report_md": str(out / "report.md"),
            "report_html": str(out / "report.html"),
        },
    }


def print_summary(s: dict, out: Path, seconds: float) -> None:
    metric = s["metric"]
    cols = [c for c in ("width", "depth", "params", metric, "classes_predicted") if s["grid"] and c in s["grid"][0]]
    print(pd.DataFrame(s["grid"])[cols].to_string(index=False))
    for w in s["warnings"]:
        log(f"warning: {w}")
    c = s["chosen"]
    if c is None:
        log(f"no sub-network met {s['target_ms']:.2f} ms: {s['search_message']}")
    else:
        log(
            f"full model: {metric} {s['full'][metric]:.2f}, {s['full']['median_ms']:.2f} ms; answer for {s['target_ms']:.2f} ms: "
            f"{c['key']} {metric} {c[metric]:.2f}, measured {c['measured_ms']:.2f} ms ({c['speedup']:.2f}x faster); "
            f"exported to {out / 'export'}"
        )
    log(f"report: {out / 'report.md'} and {out / 'report.html'} ({seconds:.0f} s this invocation)")
