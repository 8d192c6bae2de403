"""Honest error reports for latency predictors: held-out MAPE, RMSE, share within +-5% and +-10%,
Kendall tau, Spearman, conformal coverage, a learning curve and plots."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dynabert.figures import pyplot, save_figure
from dynabert.subnet import SubnetConfig

from .base import LatencyPredictor
from .errors import PredictorError, RecordsError
from .latency import FIT_FORMAT, FIT_VERSION, PREDICTORS, make_predictor
from .records import LATENCY_COLUMN, check_one_target, ok_records, records_clock
from .samplers import is_layer_table_config

COVERAGES = (0.9, 0.95)


def metrics(measured: Sequence[float], predicted: Sequence[float]) -> dict[str, float]:
    """MAPE (%), RMSE (ms), share of predictions within +-5% / +-10% of the measurement, largest
    relative error (%), Kendall tau and Spearman rank correlation."""
    from scipy.stats import kendalltau, spearmanr

    y = np.asarray(measured, dtype=float)
    p = np.asarray(predicted, dtype=float)
    if y.shape != p.shape or y.size == 0:
        raise PredictorError(f"metrics need equally long, non-empty arrays; got {y.shape} and {p.shape}")
    if np.any(~np.isfinite(y)) or np.any(y <= 0):
        raise RecordsError("measured latencies must be finite and > 0")
    ape = np.abs(p - y) / y
    tau = kendalltau(y, p).statistic if y.size > 1 else float("nan")
    rho = spearmanr(y, p).statistic if y.size > 1 else float("nan")
    return {
        "n": int(y.size),
        "mape": float(100 * ape.mean()),
        "rmse_ms": float(np.sqrt(np.mean((p - y) ** 2))),
        "within_5": float(np.mean(ape <= 0.05)),
        "within_10": float(np.mean(ape <= 0.10)),
        "max_ape": float(100 * ape.max()),
        "kendall_tau": float(tau),
        "spearman": float(rho),
    }


def _layer_mask(df: pd.DataFrame) -> np.ndarray:
    return np.array([is_layer_table_config(SubnetConfig.from_json(s)) for s in df["subnet"]], dtype=bool)


def split_holdout(
    df: pd.DataFrame,
    test_fraction: float = 0.3,
    seed: int = 0,
    max_train: int | None = None,
    holdout_shapes: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train / test rows with disjoint configs (and, with holdout_shapes, disjoint (batch, seq_len)
    pairs too). Layer-table rows always go to training (they are the lookup table). max_train caps
    the training rows (layer rows first, then a random subset)."""
    if not 0 < test_fraction < 1:
        raise PredictorError(f"test fraction must be in (0, 1); got {test_fraction}")
    rng = np.random.default_rng(seed)
    layer = _layer_mask(df)
    keys = np.array(sorted(set(df.loc[~layer, "key"])))
    rng.shuffle(keys)
    n_test = max(1, int(round(test_fraction * len(keys))))
    if len(keys) - n_test < 1:
        raise RecordsError(f"too few distinct configs ({len(keys)}) to hold some out for testing")
    test_keys = set(keys[:n_test])
    in_test_key = df["key"].isin(test_keys).to_numpy() & ~layer
    if holdout_shapes:
        shapes = sorted({(int(b), int(s)) for b, s in zip(df["batch"], df["seq_len"])})
        if len(shapes) < 2:
            raise RecordsError("holding out input shapes needs records of at least two (batch, seq_len) pairs")
        order = rng.permutation(len(shapes))
        n_shape_test = max(1, int(round(test_fraction * len(shapes))))
        test_shapes = {shapes[i] for i in order[:n_shape_test]}
        in_test_shape = np.array([(int(b), int(s)) in test_shapes for b, s in zip(df["batch"], df["seq_len"])])
        train = df[~in_test_key & ~in_test_shape]
        test = df[in_test_key & in_test_shape]
    else:
        train, test = df[~in_test_key], df[in_test_key]
    if max_train is not None and len(train) > max_train:
        train = cap_rows(train, max_train, seed)
    if test.empty:
        raise RecordsError("the held-out split is empty: measure more configs (or shapes)")
    return train.reset_index(drop=True), test.reset_index(drop=True)


def cap_rows(train: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """n training rows: every layer-table row first, then a seeded random subset of the others."""
    layer = _layer_mask(train)
    fixed = train[layer]
    rest = train[~layer]
    take = max(0, n - len(fixed))
    return pd.concat([fixed, rest.sample(n=min(take, len(rest)), random_state=seed)]).reset_index(drop=True)


def learning_curve(
    kinds: Sequence[str],
    train: pd.DataFrame,
    test: pd.DataFrame,
    sizes: Sequence[int],
    across_shapes: bool,
    seed: int = 0,
) -> pd.DataFrame:
    """Held-out error against the number of measured configs used for fitting."""
    rows = []
    y = test[LATENCY_COLUMN].to_numpy(float)
    for n in sorted(set(int(s) for s in sizes if s <= len(train))):
        part = cap_rows(train, n, seed)
        for kind in kinds:
            try:
                pred = (
                    make_predictor(kind, across_shapes=across_shapes, seed=seed)
                    .fit(part, conformal=False)
                    .predict_records(test)
                )
            except PredictorError as e:
                rows.append({"kind": kind, "n_train": n, "error": str(e)})
                continue
            rows.append({"kind": kind, "n_train": n, "error": "", **metrics(y, pred)})
    return pd.DataFrame(rows)


def _plots(out: Path, test: pd.DataFrame, preds: dict[str, np.ndarray], curve: pd.DataFrame, title: str) -> list[str]:
    plt = pyplot()
    y = test[LATENCY_COLUMN].to_numpy(float)
    files = []
    fig, ax = plt.subplots(figsize=(5.5, 5))
    lo, hi = y.min() * 0.9, y.max() * 1.1
    ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
    ax.fill_between([lo, hi], [lo * 0.95, hi * 0.95], [lo * 1.05, hi * 1.05], color="0.85", label="+-5%")
    for kind, p in preds.items():
        ax.scatter(y, p, s=10, label=kind, alpha=0.7)
    ax.set_xlabel("measured median latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out / "predicted_vs_measured.png", dpi=110)
    files.append("predicted_vs_measured.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(-15, 15, 61)
    for kind, p in preds.items():
        ax.hist(np.clip(100 * (p - y) / y, -15, 15), bins=bins, histtype="step", label=kind)
    ax.axvline(-5, color="0.5", ls=":")
    ax.axvline(5, color="0.5", ls=":")
    ax.set_xlabel("relative error of prediction (%), clipped to +-15")
    ax.set_ylabel("held-out configs")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out / "errors.png", dpi=110)
    files.append("errors.png")

    if not curve.empty and "mape" in curve:
        fig, ax = plt.subplots(figsize=(6, 4))
        for kind, g in curve[curve["error"] == ""].groupby("kind"):
            ax.plot(g["n_train"], g["mape"], "o-", label=kind)
        ax.set_xlabel("measured records used for fitting")
        ax.set_ylabel("held-out MAPE (%)")
        ax.set_yscale("log")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        save_figure(fig, out / "learning_curve.png", dpi=110)
        files.append("learning_curve.png")
    return files


def evaluate_split(
    train: pd.DataFrame,
    test: pd.DataFrame,
    kinds: Sequence[str],
    across_shapes: bool = False,
    seed: int = 0,
) -> tuple[pd.DataFrame, dict[str, LatencyPredictor], dict[str, np.ndarray]]:
    """Fit each kind on `train`, evaluate on `test`: (metrics table, fitted predictors, predictions).
    A kind that cannot be fitted (e.g. a lookup table without layer records) gets its error in the
    table; if none can, PredictorError."""
    y = test[LATENCY_COLUMN].to_numpy(float)
    fitted: dict[str, LatencyPredictor] = {}
    preds: dict[str, np.ndarray] = {}
    table = []
    for kind in kinds:
        try:
            p = make_predictor(kind, across_shapes=across_shapes, seed=seed).fit(train)
        except PredictorError as e:
            table.append({"kind": kind, "n_train": len(train), "error": str(e)})
            continue
        pred = p.predict_records(test)
        scores = p.conformal_scores_
        row = {
            "kind": kind,
            "n_train": len(train),
            "error": "",
            **metrics(y, pred),
            "cv_mape": 100 * float(np.mean(scores)) if len(scores) else float("nan"),
        }
        for c in COVERAGES:
            try:
                q = p.conformal_quantile(c)
            except PredictorError:
                continue
            inside = (y >= pred * (1 - q)) & (y <= pred * (1 + q))
            row[f"interval_{int(c * 100)}_halfwidth_pct"] = 100 * q
            row[f"interval_{int(c * 100)}_coverage"] = float(inside.mean())
        table.append(row)
        fitted[kind], preds[kind] = p, pred
    if not fitted:
        raise PredictorError("no predictor could be fitted: " + "; ".join(f"{r['kind']}: {r['error']}" for r in table))
    return pd.DataFrame(table), fitted, preds


def pick_best(results: pd.DataFrame) -> str:
    """The kind with the lowest cross-validated MAPE on the FITTING records (what a user can know
    without held-out data); held-out MAPE only where no kind has CV scores. Choosing by held-out error
    would flatter the reported winner."""
    ok = results[results["error"] == ""]
    if "cv_mape" in ok and ok["cv_mape"].notna().any():
        return str(ok.sort_values("cv_mape", na_position="last").iloc[0]["kind"])
    return str(ok.sort_values("mape").iloc[0]["kind"])


def predictor_kinds(text: str, across_shapes: bool = False) -> list[str]:
    """The predictor kinds a comma-separated list names ('all': every kind); with `across_shapes`,
    those of them that serve several input shapes. PredictorError when none is left or a name is unknown."""
    kinds = list(PREDICTORS) if text == "all" else [k.strip() for k in text.split(",") if k.strip()]
    if not kinds:
        raise PredictorError(f"--kind {text!r} names no predictor kind; allowed: {', '.join(PREDICTORS)} or all")
    bad = [k for k in kinds if k not in PREDICTORS]
    if bad:
        raise PredictorError(f"unknown predictor kind(s) {bad}; allowed: {', '.join(PREDICTORS)}")
    if across_shapes:
        one_shape = [k for k in kinds if not PREDICTORS[k].supports_shapes]
        kinds = [k for k in kinds if PREDICTORS[k].supports_shapes]
        if not kinds:
            raise PredictorError(
                f"predictor kind {', '.join(one_shape)} serves one batch and sequence length; --across-shapes "
                f"fits {', '.join(k for k, c in PREDICTORS.items() if c.supports_shapes)}"
            )
    return kinds


def fit_and_evaluate(
    records: pd.DataFrame,
    kinds: Sequence[str] = tuple(PREDICTORS),
    out_dir: str | Path | None = None,
    *,
    test_fraction: float = 0.3,
    seed: int = 0,
    max_train: int | None = None,
    across_shapes: bool = False,
    curve_sizes: Sequence[int] | None = None,
    overwrite: bool = False,
    plots: bool = True,
) -> dict[str, Any]:
    """Split, fit every kind on the training part, evaluate on the held-out part; optionally
    write metrics.csv/json, predictions.csv, learning_curve.csv, plots and the fitted predictors."""
    from dynabert.io import atomic_dir, write_json, write_text

    bad = [k for k in kinds if k not in PREDICTORS]
    if bad or not kinds:
        raise PredictorError(f"unknown predictor kind(s) {bad or list(kinds)}; allowed: {', '.join(PREDICTORS)}")
    df = ok_records(records)
    if df.empty:
        raise RecordsError("no records with status ok")
    check_one_target(df, allow_shapes=across_shapes)
    train, test = split_holdout(df, test_fraction, seed, max_train, holdout_shapes=across_shapes)
    results, fitted, preds = evaluate_split(train, test, kinds, across_shapes, seed)
    if curve_sizes is None:
        n = len(train)
        curve_sizes = sorted({max(10, int(n * f)) for f in (0.2, 0.4, 0.6, 0.8)} | {n})
    curve = learning_curve(list(fitted), train, test, curve_sizes, across_shapes, seed)
    best = pick_best(results)
    first = df.iloc[0]
    report: dict[str, Any] = {
        "target_id": str(first["target_id"]),
        "backend": str(first["backend"]),
        "provider": str(first["provider"]),
        "device": str(first["device"]),
        "threads": int(first["threads"]),
        "spinning": bool(first["spinning"]),
        "dtype": str(first["dtype"]),
        "cpu_model": str(first["cpu_model"]),
        "shapes_train": sorted({(int(b), int(s)) for b, s in zip(train["batch"], train["seq_len"])}),
        "shapes_test": sorted({(int(b), int(s)) for b, s in zip(test["batch"], test["seq_len"])}),
        "n_train": len(train),
        "n_test": len(test),
        "best": best,
        "across_shapes": across_shapes,
        "latency_column": LATENCY_COLUMN,
        "clock": records_clock(df),  # what latency_column times: wall, or cpu (the timing thread's CPU time)
        "speed_index": _speed_summary(df),
        "results": results,
        "learning_curve": curve,
        "predictors": fitted,
    }
    if out_dir is not None:
        out = Path(out_dir)
        with atomic_dir(out, overwrite) as tmp:
            results.to_csv(tmp / "metrics.csv", index=False)
            curve.to_csv(tmp / "learning_curve.csv", index=False)
            pred_df = test[["key", "subnet", "batch", "seq_len", "median_ms", LATENCY_COLUMN]].copy()
            for kind, p in preds.items():
                pred_df[f"pred_{kind}_ms"] = p
            pred_df.to_csv(tmp / "predictions.csv", index=False)
            summary = {"format": FIT_FORMAT, "version": FIT_VERSION}  # read back by find_predictor (search --predictor)
            summary.update({k: v for k, v in report.items() if k not in ("results", "learning_curve", "predictors")})
            summary["metrics"] = json.loads(results.to_json(orient="records"))
            title = f"{report['backend']} {report['provider'] or report['device']} threads {report['threads']}"
            if plots:
                summary["plots"] = _plots(tmp, test, preds, curve, title)
            write_json(tmp / "metrics.json", summary)
            for kind, p in fitted.items():
                p.save(tmp / "predictors" / kind)
            write_text(tmp / "README.txt", _readme(report))
        report["out_dir"] = str(out)
    return report


def _speed_summary(df: pd.DataFrame) -> dict[str, Any]:
    """How the fitting records' runs compare to their reference speed (NaN index: uncorrected runs)."""
    si = df.drop_duplicates("run_id")["speed_index"].astype(float)
    return {
        "runs": int(df["run_id"].nunique()),
        "runs_uncorrected": int(si.isna().sum()),
        "min": float(si.min()) if si.notna().any() else None,
        "max": float(si.max()) if si.notna().any() else None,
    }


def _readme(report: dict[str, Any]) -> str:
    return (
        "dynasearch fit-predictor output\n"
        "metrics.csv / metrics.json   held-out errors of each predictor (MAPE %, RMSE ms, share within +-5/10%,\n"
        "                             Kendall tau, Spearman, conformal interval half-width and measured coverage)\n"
        "learning_curve.csv/.png      held-out error against the number of records used for fitting\n"
        f"predictions.csv              held-out configs: measured ({LATENCY_COLUMN}, speed-corrected; raw median_ms beside it) and predicted ms\n"
        "predicted_vs_measured.png, errors.png\n"
        "predictors/<kind>/           fitted predictors (predictor.json + arrays.npz); load with\n"
        "                             predictors.load_predictor(dir)\n"
        f"best predictor (lowest cross-validated MAPE on the fitting records): {report['best']} (train {report['n_train']} records, test {report['n_test']})\n"
    )


def format_table(results: pd.DataFrame) -> str:
    cols = [
        "kind",
        "n_train",
        "n",
        "cv_mape",
        "mape",
        "rmse_ms",
        "within_5",
        "within_10",
        "kendall_tau",
        "spearman",
        "interval_90_halfwidth_pct",
        "interval_90_coverage",
        "error",
    ]
    shown = results[[c for c in cols if c in results]].copy()
    # A kind that could not be fitted has no held-out count: its row's NaN makes the column float64,
    # which cannot take the "" a blank cell shows (pandas warns); counts print as integers or blank.
    for c in ("n_train", "n"):
        if c in shown:
            shown[c] = shown[c].map(lambda v: "" if pd.isna(v) else str(int(v)))
    for c in ("cv_mape", "mape", "rmse_ms", "interval_90_halfwidth_pct"):
        if c in shown:
            shown[c] = shown[c].map(lambda v: f"{v:.3f}" if isinstance(v, float) and math.isfinite(v) else "")
    for c in ("within_5", "within_10", "kendall_tau", "spearman", "interval_90_coverage"):
        if c in shown:
            shown[c] = shown[c].map(lambda v: f"{v:.3f}" if isinstance(v, float) and math.isfinite(v) else "")
    return shown.fillna("").to_string(index=False)
