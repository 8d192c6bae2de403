"""Issue 4 benchmark, report part: fits and evaluates predictors on the records that
`bench/latency_measure.py` took, and writes bench/results/latency_issue4.md (+ plots). Times nothing.

Splits are fixed by the sampling order (seeded): at batch 1 the first 100 random configs may be
used for fitting and the last 100 are held out; at batch 8 the first 50 and the last 30. Fitting sets
are capped at 100 records INCLUDING the 9 single-layer lookup-table records.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from dynabert.tables import markdown_table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from latency_measure import DATA, N_B1, N_B8, N_HELD, SEED, shape_and_pool, shape_split  # noqa: E402

OUT = REPO / "bench" / "results"
KINDS = ("lut", "layer-regression", "gbdt", "hybrid")
HELD = {1: N_HELD, 8: 30}
MEASURED = {1: N_B1, 8: N_B8}
CURVE = (10, 20, 40, 60, 80, 100)


def fmt(v, spec=".2f") -> str:
    return "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def mark(ok: bool) -> str:
    return "met" if ok else "**MISSED**"


def single_section(df: pd.DataFrame, pool, layer, shape, peak) -> tuple[list[str], list[dict], list[dict]]:
    from dynabert.subnet import SubnetConfig, count_flops
    from predictors._kinds import LookupTablePredictor
    from predictors.evaluate import _plots, cap_rows, evaluate_split, learning_curve, metrics, pick_best

    lines: list[str] = []
    summary = []
    quality = []
    incomplete: list[str] = []
    curves = []
    layer_keys = {s.key for s in layer}
    full_key = SubnetConfig.full(shape).key
    small = SubnetConfig.from_grid(shape, 0.25, 0.5)
    plot_dir = OUT / "latency_plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    for (backend, threads, batch), d in df.groupby(["backend", "threads", "batch"]):
        d = d[d["status"] == "ok"]
        n = MEASURED[int(batch)]
        keys = [s.key for s in pool[:n]]
        test_keys = set(keys[n - HELD[int(batch)] :])
        fit_keys = set(keys[: n - HELD[int(batch)]])
        test = d[d["key"].isin(test_keys) & (d["sampler"] == "uniform")].reset_index(drop=True)
        train_all = d[
            (d["key"].isin(fit_keys) & (d["sampler"] == "uniform"))
            | d["key"].isin(layer_keys) & (d["sampler"] == "layer-table")
        ]
        train = cap_rows(train_all.reset_index(drop=True), 100, SEED)
        if len(test) < 10 or len(train) < 30:
            incomplete.append(
                f"{backend} {threads} thread(s) batch {batch}: only {len(train)} fitting and {len(test)} "
                "held-out records were measured before the deadline; not evaluated"
            )
            continue
        results, fitted, preds = evaluate_split(train, test, KINDS, False, SEED)
        y = test["median_ms"].to_numpy(float)
        raw = LookupTablePredictor(calibrate=False).fit(d[d["sampler"] == "layer-table"], conformal=False)
        raw_m = metrics(y, raw.predict_records(test))
        curve = learning_curve(
            list(fitted), train, test, [c for c in CURVE if c < len(train)] + [len(train)], False, SEED
        )
        curve["setting"] = f"{backend} t{threads} b{batch}"
        curves.append(curve)
        ok = results[results["error"] == ""].set_index("kind", drop=False)
        best = ok.loc[pick_best(results)]
        name = f"{backend}-t{threads}-b{batch}"
        _plots_dir = plot_dir / name
        _plots_dir.mkdir(exist_ok=True)
        _plots(_plots_dir, test, preds, curve, f"{backend} CPU, {threads} thread(s), batch {batch}, seq 128")
        summary.append(
            {
                "backend": backend,
                "threads": int(threads),
                "batch": int(batch),
                "n_train": len(train),
                "n_test": len(test),
                "best": best["kind"],
                "mape": best["mape"],
                "within_5": best["within_5"],
                "within_10": best["within_10"],
                "tau": best["kendall_tau"],
                "spearman": best["spearman"],
                "results": results,
                "raw_lut": raw_m,
            }
        )
        meas = d[d["sampler"] != "layer-table"]
        by_key = d.drop_duplicates("key").set_index("key")
        gflops = {}
        for label, key, sub in (
            ("full", full_key, SubnetConfig.full(shape)),
            ("smallest grid (w0.25 d0.5)", small.key, small),
        ):
            if key in by_key.index:
                ms = float(by_key.loc[key, "median_ms"])
                gflops[label] = (ms, count_flops(shape, sub, int(batch), 128) / ms / 1e6)
        quality.append(
            {
                "setting": f"{backend} CPU, {threads} thread(s), batch {batch}",
                "rows": len(d),
                "median_cv": meas["cv"].median(),
                "p90_cv": meas["cv"].quantile(0.9),
                "converged": meas["converged"].mean(),
                "runs": meas["n_runs"].median(),
                "ms_range": (meas["median_ms"].min(), meas["median_ms"].max()),
                "measure_s": meas["measure_s"].mean(),
                "prepare_s": meas["prepare_s"].median(),
                "gflops": gflops,
                "disturbed": meas["disturbed_runs"].sum() / max(1, meas["disturbed_runs"].sum() + meas["n_runs"].sum()),
                "peak": peak[f"peak_t{threads}"],
            }
        )
    # ---- tables
    lines += [
        "## 1. Predictors at one input shape (seq 128), held-out random per-layer configs",
        "",
        "Targets (best predictor of each backend and thread setting, <= 100 fitting records): MAPE <= 2%, "
        ">= 99% of held-out predictions within +-5%, Kendall tau >= 0.98. 'best' is chosen WITHOUT the held-out "
        "configs: the kind with the lowest 5-fold cross-validated MAPE on the fitting records (the table below "
        "shows every kind's held-out numbers).",
        "",
        markdown_table(
            (
                "backend",
                "threads",
                "batch",
                "fit / held out",
                "best",
                "MAPE %",
                "within +-5%",
                "within +-10%",
                "Kendall tau",
                "Spearman",
                "MAPE <= 2",
                "+-5% >= 99%",
                "tau >= 0.98",
            ),
            (
                (
                    s["backend"],
                    s["threads"],
                    s["batch"],
                    f"{s['n_train']} / {s['n_test']}",
                    s["best"],
                    f"{s['mape']:.2f}",
                    f"{s['within_5']:.1%}",
                    f"{s['within_10']:.1%}",
                    f"{s['tau']:.3f}",
                    f"{s['spearman']:.3f}",
                    mark(s["mape"] <= 2),
                    mark(s["within_5"] >= 0.99),
                    mark(s["tau"] >= 0.98),
                )
                for s in summary
            ),
        ),
    ]
    lines += [
        "",
        "### Every predictor",
        "",
        "`lut raw`: the classical lookup table from the 9 single-layer records alone; `lut`: the same table with a "
        "two-number calibration on the whole-model fitting records. Interval: split-conformal 90% interval from "
        "5-fold cross-validation residuals of the fitting records; coverage measured on the held-out configs.",
        "",
    ]
    header = [
        "setting",
        "predictor",
        "CV MAPE % (fitting records)",
        "MAPE %",
        "RMSE ms",
        "within +-5%",
        "within +-10%",
        "max error %",
        "tau",
        "Spearman",
        "90% interval +-%",
        "its coverage",
    ]
    rows = []
    for s in summary:
        setting = f"{s['backend']} t{s['threads']} b{s['batch']}"
        r = s["raw_lut"]
        rows.append(
            [
                setting,
                "lut raw",
                "",
                f"{r['mape']:.2f}",
                f"{r['rmse_ms']:.3f}",
                f"{r['within_5']:.1%}",
                f"{r['within_10']:.1%}",
                f"{r['max_ape']:.1f}",
                f"{r['kendall_tau']:.3f}",
                f"{r['spearman']:.3f}",
                "",
                "",
            ]
        )
        for _, r in s["results"].iterrows():
            if r["error"]:
                rows.append([setting, r["kind"], f"failed: {r['error']}"] + [""] * 9)
                continue
            rows.append(
                [
                    setting,
                    r["kind"],
                    fmt(r.get("cv_mape")),
                    f"{r['mape']:.2f}",
                    f"{r['rmse_ms']:.3f}",
                    f"{r['within_5']:.1%}",
                    f"{r['within_10']:.1%}",
                    f"{r['max_ape']:.1f}",
                    f"{r['kendall_tau']:.3f}",
                    f"{r['spearman']:.3f}",
                    fmt(r.get("interval_90_halfwidth_pct")),
                    fmt(r.get("interval_90_coverage"), ".0%"),
                ]
            )
    lines.append(markdown_table(header, rows))
    for note in incomplete:
        lines.append(f"- {note}")
    lines.append("")
    curve = pd.concat(curves, ignore_index=True)
    curve = curve[curve["error"] == ""]
    sizes = sorted(curve["n_train"].unique())
    lines += [
        "",
        "### Learning curve (held-out MAPE % against fitting records, layer-table records included)",
        "",
    ]
    table = []
    for (setting, kind), g in curve.groupby(["setting", "kind"], sort=False):
        vals = {int(r["n_train"]): r["mape"] for _, r in g.iterrows()}
        table.append([setting, kind] + [fmt(vals.get(n)) for n in sizes])
    lines.append(markdown_table(["setting", "predictor"] + [f"n={n}" for n in sizes], table))
    lines += [
        "",
        "Plots per setting: `bench/results/latency_plots/<backend>-t<threads>-b<batch>/` "
        "(predicted_vs_measured.png, errors.png, learning_curve.png).",
        "",
    ]
    return lines, summary, quality


def shapes_section(shape) -> tuple[list[str], dict]:
    from predictors.evaluate import evaluate_split, learning_curve, pick_best
    from predictors.records import read_records

    path = DATA / "shapes.csv"
    if not path.exists():
        return ["## 2. One predictor across input shapes", "", "not measured", ""], {}
    df = read_records(path)
    df = df[df["status"] == "ok"]
    train_pairs, test_pairs = shape_split()
    _, _, pool = shape_and_pool()
    fit_keys = {s.key for s in pool[:100]}
    pair = list(zip(df["batch"].astype(int), df["seq_len"].astype(int)))
    in_train = np.array([p in set(map(tuple, train_pairs)) for p in pair])
    in_test = np.array([p in set(map(tuple, test_pairs)) for p in pair])
    train = df[in_train & df["key"].isin(fit_keys).to_numpy()].reset_index(drop=True)
    test = df[in_test & ~df["key"].isin(fit_keys).to_numpy()].reset_index(drop=True)
    kinds = ("layer-regression", "gbdt", "hybrid")
    if train.empty or test.empty:
        return [
            "## 2. One predictor across input shapes",
            "",
            f"incomplete: {len(train)} fitting and {len(test)} held-out measurements were taken before the time ran out",
            "",
        ], {}
    results, fitted, preds = evaluate_split(train, test, kinds, True, SEED)
    curve = learning_curve(list(fitted), train, test, [50, 100, 200, len(train)], True, SEED)
    best = results[results["error"] == ""].set_index("kind", drop=False).loc[pick_best(results)]
    lines = [
        "## 2. One predictor across input shapes (onnxruntime CPU, 1 thread)",
        "",
        f"Measured pairs: {len(set(zip(train['batch'], train['seq_len'])))} of {len(train_pairs)} fitting, "
        f"{len(set(zip(test['batch'], test['seq_len'])))} of {len(test_pairs)} held out.",
        "",
        f"Fitting: {len(train)} measurements over {len(train_pairs)} (batch, seq) pairs {train_pairs}. Held out: "
        f"{len(test)} measurements of configs never used for fitting, over {len(test_pairs)} OTHER pairs {test_pairs}. "
        f"Batch 1-32, seq 16-512, batch x seq <= 2048 tokens (larger inputs take seconds per run on one core; "
        f"the cap keeps the phase within its time budget). Target: MAPE <= 5% on held-out configs AND shapes.",
        "",
    ]
    header = [
        "predictor",
        "MAPE %",
        "RMSE ms",
        "within +-5%",
        "within +-10%",
        "max error %",
        "tau",
        "Spearman",
        "90% interval +-%",
        "its coverage",
        "MAPE <= 5",
    ]
    rows = []
    for _, r in results.iterrows():
        if r["error"]:
            rows.append([r["kind"], f"failed: {r['error']}"] + [""] * 9)
            continue
        rows.append(
            [
                r["kind"],
                f"{r['mape']:.2f}",
                f"{r['rmse_ms']:.2f}",
                f"{r['within_5']:.1%}",
                f"{r['within_10']:.1%}",
                f"{r['max_ape']:.1f}",
                f"{r['kendall_tau']:.3f}",
                f"{r['spearman']:.3f}",
                fmt(r.get("interval_90_halfwidth_pct")),
                fmt(r.get("interval_90_coverage"), ".0%"),
                mark(r["mape"] <= 5),
            ]
        )
    lines.append(markdown_table(header, rows))
    lines += [
        "",
        "Learning curve (held-out MAPE %): "
        + "; ".join(
            f"{k}: " + ", ".join(f"n={int(r['n_train'])} {r['mape']:.2f}" for _, r in g.iterrows())
            for k, g in curve[curve["error"] == ""].groupby("kind", sort=False)
        ),
        "",
    ]
    return lines, {"best": best["kind"], "mape": best["mape"]}


def repeat_pairs() -> list[tuple[int, Path, Path]]:
    pairs = []
    for k in range(1, 10):
        stem = "repeat" if k == 1 else f"repeat{k}"
        a, b = DATA / f"{stem}_run1.csv", DATA / f"{stem}_run2.csv"
        if a.exists() and b.exists():
            pairs.append((k, a, b))
    return pairs


def repeat_section() -> tuple[list[str], list[dict]]:
    from predictors.records import read_records, repeatability

    pairs = repeat_pairs()
    if not pairs:
        return ["## 3. Repeatability", "", "not measured", ""], []
    lines = [
        "## 3. Repeatability: the same 50 configs in two separate runs (separate processes), batch 1, seq 128",
        "",
        "Target: medians agree within +-3% for >= 95% of configs, at every thread setting. Every pair of runs "
        "taken is listed (run 2 starts right after run 1). 'run-wide shift': median of run 2 / run 1 - 1 over the "
        "configs, i.e. how much faster or slower the whole machine was in run 2; the last column divides it out "
        "(a diagnostic, not the target: it separates the protocol's own scatter from the host's speed changes).",
        "",
    ]
    header = [
        "pair",
        "backend",
        "threads",
        "runs (UTC)",
        "configs",
        "within +-3%",
        "median difference",
        "largest difference",
        "median CV (run 1 / 2)",
        "run-wide shift",
        "target",
        "within +-3% with the shift divided out",
    ]
    rows = []
    out = []
    for k, a_path, b_path in pairs:
        a, b = read_records(a_path), read_records(b_path)
        for (backend, threads), ga in a[a["status"] == "ok"].groupby(["backend", "threads"]):
            gb = b[(b["status"] == "ok") & (b["backend"] == backend) & (b["threads"] == threads)]
            if gb.empty:
                rows.append([str(k), backend, str(threads), "second run not measured before the deadline"] + [""] * 8)
                continue
            r = repeatability(ga, gb)
            m = ga[["key", "median_ms"]].merge(gb[["key", "median_ms"]], on="key", suffixes=("_a", "_b"))
            shift = float(np.median(m["median_ms_b"] / m["median_ms_a"]))
            adj = gb.assign(median_ms=gb["median_ms"] / shift)
            r_adj = repeatability(ga, adj)
            when = f"{str(ga['timestamp'].min())[11:16]}-{str(gb['timestamp'].max())[11:16]}"
            out.append({"pair": k, "backend": backend, "threads": int(threads), **r})
            rows.append(
                [
                    str(k),
                    backend,
                    str(threads),
                    when,
                    str(r["configs"]),
                    f"{r['within']:.0%}",
                    f"{r['median_rel_diff']:.2%}",
                    f"{r['max_rel_diff']:.1%}",
                    f"{ga['cv'].median():.1%} / {gb['cv'].median():.1%}",
                    f"{shift - 1:+.1%}",
                    mark(r["within"] >= 0.95),
                    f"{r_adj['within']:.0%}",
                ]
            )
    lines.append(markdown_table(header, rows))
    return lines + [""], out


def main() -> None:
    from predictors.records import read_records

    shape, layer, pool = shape_and_pool()
    peak = json.loads((DATA / "peak.json").read_text())
    df = read_records(DATA / "single.csv")
    first = df.iloc[0]
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO
    ).stdout.strip()
    single, summary, quality = single_section(df, pool, layer, shape, peak)
    shapes, shapes_sum = shapes_section(shape)
    repeat, rep = repeat_section()
    head = [
        "# Latency measurement and prediction (issue 4 benchmark)",
        "",
        f"- report written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; measurements {df['timestamp'].min()} to "
        f"{df['timestamp'].max()}; commit `{commit}`",
        f"- machine: {first['cpu_model']}, {first['cpu_cores']} cores usable, no GPU, {first['os']}, Python {first['python']}; "
        f"torch {first['torch_version']}, onnxruntime {first['onnxruntime_version']}, numpy {first['numpy_version']}",
        "- backbone: packaged MiniLM-L6 shape (6 layers, hidden 384, 12 heads x 32, FFN 1536), random weights; every config "
        "EXTRACTED (physically small model); onnxruntime: ONNX export, CPUExecutionProvider, ORT_ENABLE_ALL, "
        "intra_op_num_threads = threads, inter_op 1, spinning OFF; torch: eager, inference_mode, torch.set_num_threads(threads)",
        "- configs: random per-layer (each layer kept with p 1/2, heads in {3,6,9,12}, FFN in {384,768,1152,1536}) "
        f"from `SearchSpace.default`, seed {SEED}; plus 9 single-layer configs for the lookup table",
        "- protocol (one loop for both backends): warm-up until two 3-run medians agree within 5% (<= 1 s), rounds in "
        "random order over every config of a setting at once (layer-table, random and grid configs in one run), "
        "1 untimed + 2 timed runs per visit, stop when the 95% CI of the median is within +-1% (>= 8 runs from >= 4 "
        "rounds) or at 30 runs / 2 s (batch 1) / 1.5 s (batch 8) of timed runs; a timed run during "
        "which the process was preempted (an involuntary context switch: another process took a core) is discarded "
        "and counted (`disturbed_runs`)",
        "- every timing ran under an exclusive machine lock (`flock /tmp/dynasearch-cpu.lock`, one hold for all phases, "
        "`bench/run_latency.sh`); raw records in "
        "`bench/results/latency_records/` (dynasearch records format)",
        "",
        "## Summary against the targets",
        "",
    ]
    for s in summary:
        head.append(
            f"- {s['backend']} {s['threads']} thread(s) batch {s['batch']}: best `{s['best']}` MAPE {s['mape']:.2f}% "
            f"({mark(s['mape'] <= 2)}), within +-5% {s['within_5']:.1%} ({mark(s['within_5'] >= 0.99)}), "
            f"tau {s['tau']:.3f} ({mark(s['tau'] >= 0.98)})"
        )
    if shapes_sum:
        head.append(
            f"- across shapes: best `{shapes_sum['best']}` MAPE {shapes_sum['mape']:.2f}% on held-out configs and shapes "
            f"({mark(shapes_sum['mape'] <= 5)})"
        )
    for r in rep:
        head.append(
            f"- repeatability (pair {r['pair']}) {r['backend']} {r['threads']} thread(s): {r['within']:.0%} of {r['configs']} within +-3% "
            f"({mark(r['within'] >= 0.95)})"
        )
    head.append("")
    perf = [
        "## 4. Measurement quality, cost and the physical limit",
        "",
        f"Peak fp32 matrix multiply (best run of 1024 x 1024 and 2048 x 2048 products through each library's own GEMM, "
        f"each in a fresh process, measured by this benchmark {peak['date']}), GFLOP/s at 1 / 2 threads: torch "
        f"{peak['torch_t1']:.0f} / {peak['torch_t2']:.0f}; onnxruntime (MLAS) {peak['onnxruntime_t1']:.0f} / "
        f"{peak['onnxruntime_t2']:.0f}; numpy (OpenBLAS) {peak['numpy_t1']:.0f} / {peak['numpy_t2']:.0f}. Peak = the best "
        f"of the three: {peak['peak_t1']:.0f} / {peak['peak_t2']:.0f}. Achieved = encoder FLOPs (2 x multiply-adds) / "
        "median latency, against the peak at the same thread count.",
        "",
    ]
    table = []
    for q in quality:
        cells = []
        for label in ("full", "smallest grid (w0.25 d0.5)"):
            if label in q["gflops"]:
                ms, g = q["gflops"][label]
                cells.append(f"{ms:.2f} ms, {g:.1f}, {g / q['peak']:.0%}")
            else:
                cells.append("not measured")
        table.append(
            (
                q["setting"],
                q["rows"],
                f"{q['ms_range'][0]:.2f}-{q['ms_range'][1]:.1f}",
                f"{q['median_cv']:.2%}",
                f"{q['p90_cv']:.2%}",
                f"{q['converged']:.0%}",
                f"{q['runs']:.0f}",
                f"{q['disturbed']:.1%}",
                f"{q['measure_s']:.2f}",
                f"{q['prepare_s']:.2f}",
                cells[0],
                cells[1],
            )
        )
    header = (
        "setting",
        "records",
        "latency range ms",
        "median CV",
        "p90 CV",
        "converged to +-1%",
        "median timed runs",
        "timed runs discarded as disturbed",
        "measuring s / config",
        "preparing s / config (median)",
        "full model: ms, GFLOP/s, % of peak",
        "smallest grid: ms, GFLOP/s, % of peak",
    )
    perf.append(markdown_table(header, table))
    perf += [
        "",
        "Measuring seconds per config include warm-up, the untimed re-warm run of each visit and the timed runs; "
        "preparing = extraction + (onnxruntime) ONNX export, cached across settings, + session creation.",
        "",
    ]
    text = "\n".join(head + single + shapes + repeat + perf)
    (OUT / "latency_issue4.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
