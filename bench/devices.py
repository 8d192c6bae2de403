"""One trained model, many devices, two precisions (issue 18): three devices on this machine plus
int8 on the onnxruntime ones, one multi-device search against separate single-device searches,
int8 against fp32 on the 12 grid points, and the bundle loaded by a process without torch.

Run alone (nothing else busy on the machine):
    .venv/bin/python bench/devices.py all --run runs/bench-perlayer/sst2/grid+4 --task sst2 \\
        --data-dir path/to/glue/SST-2 --work runs/bench-devices
Phases: measure (a predictor per device and precision), search (one multi-device search and one
single-device search per fp32 device, each with its own accuracy cache), int8 (the 12 grid points
at both precisions: measured latency and whole-dev accuracy), bundle (export --bundle, then a fresh
process without torch loads it, picks its entry and --checks it), report (bench/results/devices.md).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from perlayer import _log, machine  # noqa: E402

from dynabert.io import write_json  # noqa: E402

# name -> (backend, threads, batch, dtype); length 64 for all (one tokenisation for one search)
DEVICES: dict[str, tuple[str, int, int, str]] = {
    "ort1": ("onnxruntime", 1, 1, "float32"),
    "ort1:int8": ("onnxruntime", 1, 1, "int8"),
    "ort2b8": ("onnxruntime", 2, 8, "float32"),
    "ort2b8:int8": ("onnxruntime", 2, 8, "int8"),
    "torch1": ("torch", 1, 1, "float32"),
}
SEQ = 64
TRIALS = 60
RANK = 300


def phase_measure(work: Path, run: Path) -> dict[str, Path]:
    from dynabert.backbone import load_model
    from dynabert.extract import model_shape
    from dynabert.runs import run_model_dir
    from dynasearch.demo import DEMO_PROTOCOL, DemoConfig, measure_configs
    from predictors import BackendSettings, Protocol, fit_and_evaluate, measure, read_records

    model = load_model(run_model_dir(run)).eval()
    shape = model_shape(model)
    subnets, labels = measure_configs(shape, DemoConfig(random_configs=15))
    out = {}
    for name, (backend, threads, batch, dtype) in DEVICES.items():
        pred = work / "predictors" / name.replace(":", "-")
        out[name] = pred
        if (pred / "metrics.json").is_file():
            continue
        records = work / "records" / f"{name.replace(':', '-')}.csv"
        st = BackendSettings(backend, "cpu", threads, False, dtype, batch, SEQ)
        _log(f"measure {name}: {len(subnets)} configs, {st}")
        t0 = time.perf_counter()
        measure(shape, subnets, st, records, Protocol(**DEMO_PROTOCOL, seed=0), model=model, sampler=labels,
                onnx_cache=work / "onnx-cache" / name.replace(":", "-"), progress=False)  # fmt: skip
        rep = fit_and_evaluate(read_records(records), ("layer-regression", "gbdt"), out_dir=pred, overwrite=True)
        _log(f"measure {name}: {time.perf_counter() - t0:.0f} s, predictor {rep['best']}")
        import shutil

        shutil.rmtree(work / "onnx-cache" / name.replace(":", "-"), ignore_errors=True)
    return out


def _full_predicted(pred: Path, shape) -> float:
    from dynabert.subnet import SubnetConfig
    from predictors import find_predictor

    p, _ = find_predictor(pred)
    return float(p.predict([SubnetConfig.full(shape)])[0])


def phase_search(work: Path, run: Path, preds: dict[str, Path], data_dir: str | None) -> None:
    from dynabert.backbone import load_model
    from dynabert.extract import model_shape
    from dynabert.runs import run_model_dir
    from search.devices import Device, run_devices
    from search.study import SearchConfig, run_search

    out = work / "search.json"
    doc = json.loads(out.read_text()) if out.is_file() else {"machine": machine()}
    shape = model_shape(load_model(run_model_dir(run)))
    targets = {n.split(":")[0]: round(0.5 * _full_predicted(preds[n.split(":")[0]], shape), 2) for n in DEVICES}
    base = dict(run=run, data_dir=data_dir, search_dev=RANK, racing=True, trials=TRIALS, progress=False)
    if "multi" not in doc:
        devices = [Device(n.split(":")[0], "int8" if n.endswith(":int8") else "fp32", preds[n], targets[n.split(":")[0]])
                   for n in DEVICES]  # fmt: skip
        t0 = time.perf_counter()
        index = run_devices(SearchConfig(predictor=preds["ort1"], out=work / "multi", **base), devices)
        doc["multi"] = {"wall_s": round(time.perf_counter() - t0, 1), "index": index, "targets": targets}
        write_json(out, doc)
    for name in [n for n in DEVICES if ":" not in n]:
        key = f"single/{name}"
        if key in doc:
            continue
        t0 = time.perf_counter()
        o = run_search(SearchConfig(predictor=preds[name], out=work / "single" / name, target_ms=targets[name], **base))
        doc[key] = {"wall_s": round(time.perf_counter() - t0, 1), "summary": o.meta["summary"], "answer": o.answer,
                    "timing": o.meta["timing"]}  # fmt: skip
        write_json(out, doc)


def phase_int8(work: Path, run: Path, task: str, data_dir: str | None) -> None:
    """The 12 grid points at fp32 and int8: accuracy on the whole dev split (fp32: PyTorch, int8: the
    quantised ONNX model), latency from the ort1 / ort1:int8 records (one run each)."""
    import numpy as np

    from dynabert.backbone import load_model
    from dynabert.evaluate import load_dev_set, predict
    from dynabert.extract import model_shape
    from dynabert.metrics import paired_bootstrap
    from dynabert.quantize import onnx_logits, quantized_subnet
    from dynabert.runs import run_model_dir
    from dynabert.subnet import paper_grid
    from dynabert.tasks import get_task
    from predictors import read_records

    out = work / "int8.json"
    if out.is_file():
        return
    model = load_model(run_model_dir(run)).eval()
    shape = model_shape(model)
    dev = load_dev_set(get_task(task), run_model_dir(run), data_dir=data_dir, max_seq_length=SEQ)
    labels = np.asarray(dev.labels)
    rows = []
    lat = {}
    for name in ("ort1", "ort1:int8", "ort2b8", "ort2b8:int8"):
        df = read_records(work / "records" / f"{name.replace(':', '-')}.csv")
        lat[name] = dict(
            zip(df["key"], df["corrected_median_ms"].where(df["corrected_median_ms"] > 0, df["median_ms"]))
        )
    tmp = work / "int8-models"
    for w, d, s in paper_grid(shape):
        fp = (predict(model, dev, s).argmax(-1) == labels).astype(int)
        t0 = time.perf_counter()
        path = quantized_subnet(model, s, tmp)
        q_s = time.perf_counter() - t0
        i8 = (onnx_logits(path, dev).argmax(-1) == labels).astype(int)
        diff, lo, hi = paired_bootstrap(i8, fp)
        rows.append({"grid": f"{w:g}x{d:g}", "key": s.key, "fp32_acc": 100 * fp.mean(), "int8_acc": 100 * i8.mean(),
                     "diff": diff, "lo": lo, "hi": hi, "quantise_s": q_s,
                     **{f"{n}_ms": lat[n].get(s.key) for n in lat}})  # fmt: skip
        for f in tmp.glob(f"{s.key}-*"):
            f.unlink()
        _log(f"int8 {w:g}x{d:g}: fp32 {rows[-1]['fp32_acc']:.2f} int8 {rows[-1]['int8_acc']:.2f}")
    write_json(out, {"machine": machine(), "examples": int(len(labels)), "rows": rows})


def phase_bundle(work: Path) -> None:
    out = work / "bundle.json"
    bundle = work / "bundle"
    index = bundle / "devices.json"
    # A bundle exported before check_ms existed (the loader's --check loop timed at export) is exported again.
    stale = index.is_file() and not any(e.get("check_ms") for e in json.loads(index.read_text())["devices"])
    if not index.is_file() or stale:
        rc = subprocess.run([str(REPO / ".venv/bin/dynasearch"), "export", "--results", str(work / "multi"), "--bundle",
                             "--out", str(bundle), "--overwrite"], capture_output=True, text=True)  # fmt: skip
        if rc.returncode != 0:
            raise SystemExit(f"bundle export failed: {rc.stderr.strip()}")
    # a fresh process that cannot import torch loads the bundle, picks its entry and predicts
    code = (
        "import sys, time; sys.modules['torch'] = None; sys.path.insert(0, sys.argv[1]); t0 = time.perf_counter(); "
        "import dynasearch_bundle as b; m = b.load(sys.argv[1], device='ort1'); t1 = time.perf_counter(); "
        "print(repr(m.predict(['a great film', 'dull and slow']))); "
        "print('PICK_S', t1 - t0); print('TORCH', 'torch' in sys.modules and sys.modules['torch'] is not None)"
    )
    r = subprocess.run([sys.executable, "-c", code, str(bundle)], capture_output=True, text=True, cwd="/tmp")
    checks = []
    for _ in range(3):  # three fresh processes per device: --check's own spread is part of the answer
        for dev in ("ort1", "ort2b8"):
            c = subprocess.run([sys.executable, "-m", "dynasearch_bundle", str(bundle), "--check", "--device", dev],
                               capture_output=True, text=True, cwd=str(bundle))  # fmt: skip
            checks.append({"device": dev, "rc": c.returncode, "stdout": c.stdout, "stderr": c.stderr[-2000:]})
    write_json(out, {"machine": machine(), "load": {"rc": r.returncode, "stdout": r.stdout, "stderr": r.stderr[-2000:]},
                     "check": checks[0], "checks": checks})  # fmt: skip


def _evaluation_order(results: Path) -> list[tuple[str, str, float]]:
    """(key, subnet JSON, ranking metric) of a study's configs in the order their evaluation ran (the
    first trial of each key that was not a cache hit), fully ranked ones only."""
    import pandas as pd

    t = pd.read_csv(results / "trials.csv").sort_values("trial")
    t = t[~t["cache_hit"].astype(bool)].drop_duplicates("key")
    return list(zip(t["key"], t["subnet"], t["metric_search"]))


def evaluations_to_95(work: Path, preds: dict[str, Path]) -> dict:
    """Evaluations until every fp32 device's front (ranking metric against ITS predicted latency)
    reaches 95% of its best-known hypervolume (the union of every run's configs), for the multi-device
    search (its studies' evaluations in the order they ran) and for each single-device search."""

    from dynabert.subnet import SubnetConfig
    from predictors import find_predictor
    from search.pareto import hypervolume_2d

    names = [n for n in DEVICES if ":" not in n]
    multi = json.loads((work / "multi" / "devices.json").read_text())
    runs = {"multi": [x for d in multi["devices"] if d["precision"] == "fp32"
                      for x in _evaluation_order(work / "multi" / d["results"])]}  # fmt: skip
    for n in names:
        runs[n] = _evaluation_order(work / "single" / n)
    every = {k: (j, m) for r in runs.values() for k, j, m in r}
    keys = sorted(every)
    lat = {}
    for n in names:
        p, _ = find_predictor(preds[n])
        lat[n] = dict(zip(keys, p.predict([SubnetConfig.from_json(every[k][0]) for k in keys])))
    metric = {k: float(every[k][1]) for k in keys}
    ref = {n: (min(metric.values()) - 1.0, 1.05 * max(lat[n].values())) for n in names}
    best = {n: hypervolume_2d([metric[k] for k in keys], [lat[n][k] for k in keys], *ref[n]) for n in names}

    def reached(order, devs):
        for i in range(1, len(order) + 1):
            ks = [k for k, _, _ in order[:i]]
            if all(hypervolume_2d([metric[k] for k in ks], [lat[n][k] for k in ks], *ref[n]) >= 0.95 * best[n]
                   for n in devs):  # fmt: skip
                return i
        return None

    out = {"multi": reached(runs["multi"], names), "multi_total": len(runs["multi"])}
    for n in names:
        out[n] = reached(runs[n], [n])
        out[f"{n}_total"] = len(runs[n])
    return out


def int8_fronts(work: Path) -> dict:
    """Per onnxruntime device: each fp32 front config in the middle of the range (predicted latency 30-80%
    of the full model's) and the fastest int8 front config at least as accurate (reported metric)."""
    import pandas as pd

    out = {}
    for dev in ("ort1", "ort2b8"):
        d, d8 = work / "multi" / dev, work / "multi" / f"{dev}-int8"
        if not (d / "front.csv").is_file() or not (d8 / "front.csv").is_file():
            continue
        trials = pd.read_csv(d / "trials.csv", dtype={"key": str, "grid": str})
        full = float(trials.loc[trials["grid"] == "1x1", "predicted_ms"].iloc[0])
        f32 = pd.read_csv(d / "front.csv", dtype={"key": str}).sort_values("predicted_ms")
        i8 = pd.read_csv(d8 / "front.csv", dtype={"key": str}).sort_values("predicted_ms")
        mid = f32[(f32["predicted_ms"] >= 0.3 * full) & (f32["predicted_ms"] <= 0.8 * full)]
        rows = []
        for _, r in mid.iterrows():
            ok = i8[i8["metric_full"] >= r["metric_full"]]
            best = ok.iloc[0] if len(ok) else None
            rows.append({"key": r["key"], "fp32_metric": r["metric_full"], "fp32_ms": r["predicted_ms"],
                         "int8_key": best["key"] if best is not None else None,
                         "int8_metric": best["metric_full"] if best is not None else None,
                         "int8_ms": best["predicted_ms"] if best is not None else None,
                         "speedup": r["predicted_ms"] / best["predicted_ms"] if best is not None else None})  # fmt: skip
        out[dev] = {"full_ms": full, "rows": rows}
    return out


def phase_report(work: Path) -> Path:
    import numpy as np

    from dynabert.io import write_text
    from dynabert.tables import markdown_table

    doc = json.loads((work / "search.json").read_text())
    m = doc["machine"]
    multi = doc["multi"]["index"]
    lines = [
        "# One model, many devices, two precisions (issue 18)",
        "",
        f"- machine: {m['cpu']}, {m['cores']} cores; Python {m['python']}, torch {m['torch']}; commit `{m['commit']}`; "
        f"{m['date']}; written by `bench/devices.py`, run alone",
        f"- devices on this machine (length {SEQ}): "
        + "; ".join(f"{n}: {b}, {t} thread(s), batch {bs}, {dt}" for n, (b, t, bs, dt) in DEVICES.items()),
        f"- search: TPE, {TRIALS} trials per device, racing, ranked on {RANK} dev examples, reported on the rest; "
        "targets: half of each device's predicted full-model latency",
        "",
        "## Per-device answers (one multi-device search)",
        "",
    ]
    import pandas as pd

    for d in multi["devices"]:  # configs each study evaluated itself (first trial of a key not a cache hit)
        t = pd.read_csv(work / "multi" / d["results"] / "trials.csv")
        d["evaluations_new"] = int(t[~t["cache_hit"].astype(bool)]["key"].nunique())
    multi["distinct_configs_evaluated"] = sum(d["evaluations_new"] for d in multi["devices"])
    rows = []
    for d in multi["devices"]:
        a = d.get("answer") or {}
        rows.append([d["label"], d["target_ms"], a.get("key", "-"), f"{a.get('metric_full') or float('nan'):.2f}",
                     f"{a.get('predicted_ms') or float('nan'):.3f}", f"{a.get('measured_ms') or float('nan'):.3f}",
                     "yes" if d["met"] else "NO", d["evaluations_new"], d["warm_started_with"]])  # fmt: skip
    lines += [markdown_table(["device", "target ms", "answer", "acc (report)", "predicted ms", "measured ms",
                              "meets target when measured", "new evaluations", "warm start"], rows), ""]  # fmt: skip
    for name, verdict in multi.get("precision", {}).items():
        lines.append(f"- {name}: {verdict}")
    singles = {k.split("/", 1)[1]: v for k, v in doc.items() if k.startswith("single/")}
    one = [int(v["summary"]["configs_evaluated"]) for v in singles.values()]
    preds = {n: work / "predictors" / n.replace(":", "-") for n in DEVICES}
    e95 = evaluations_to_95(work, preds)
    fp32 = [n for n in DEVICES if ":" not in n]
    singles95 = [e95[n] for n in fp32]
    mean95 = np.mean([x for x in singles95 if x]) if any(singles95) else float("nan")
    lines += [
        "",
        "## Evaluations shared",
        "",
        f"Multi-device search: {multi['distinct_configs_evaluated']} evaluations in all, int8 ones included "
        f"({doc['multi']['wall_s']:.0f} s); single-device searches: {', '.join(f'{k} {v}' for k, v in zip(singles, one))} "
        f"(sum {sum(one)}).",
        "",
        "Evaluations (fp32, in the order they ran) until every device's front reaches 95% of its best-known "
        "hypervolume (the union of all runs' configs; ranking metric against that device's predicted latency):",
        "",
        markdown_table(
            ["search", "evaluations to 95% (all its devices)", "evaluations in all"],
            [["multi-device (3 fp32 devices)", e95["multi"], e95["multi_total"]]]
            + [[f"single: {n}", e95[n], e95[f"{n}_total"]] for n in fp32],
        ),  # fmt: skip
        "",
        f"Multi-device against one single-device search (their mean to 95%: {mean95:.0f}): "
        f"{(e95['multi'] or float('nan')) / mean95:.2f}x (target <= 1.3x); against the sum of the three "
        f"({sum(x or 0 for x in singles95)}): {(e95['multi'] or float('nan')) / max(sum(x or 0 for x in singles95), 1):.2f}x.",
        "",
    ]
    if (work / "int8.json").is_file():
        i8 = json.loads((work / "int8.json").read_text())
        rows = [[r["grid"], f"{r['fp32_acc']:.2f}", f"{r['int8_acc']:.2f}", f"{r['diff']:+.2f} [{r['lo']:+.2f}, {r['hi']:+.2f}]",
                 f"{r['ort1_ms']:.2f}" if r.get("ort1_ms") else "-", f"{r['ort1:int8_ms']:.2f}" if r.get("ort1:int8_ms") else "-",
                 f"{r['ort1_ms'] / r['ort1:int8_ms']:.2f}x" if r.get("ort1_ms") and r.get("ort1:int8_ms") else "-",
                 f"{r['ort2b8_ms'] / r['ort2b8:int8_ms']:.2f}x" if r.get("ort2b8_ms") and r.get("ort2b8:int8_ms") else "-",
                 f"{r['quantise_s']:.1f}"] for r in i8["rows"]]  # fmt: skip
        lines += [f"## int8 against fp32 on the 12 grid points (whole dev, {i8['examples']} examples; paired bootstrap)", "",
                  markdown_table(["grid", "fp32 acc", "int8 acc", "int8 - fp32 [95%]", "ort1 fp32 ms", "ort1 int8 ms",
                                  "ort1 speed-up", "ort2b8 speed-up", "export+quantise s"], rows), ""]  # fmt: skip
    fronts = int8_fronts(work)
    if fronts:
        rows = [[dev, r["key"], f"{r['fp32_metric']:.2f}", f"{r['fp32_ms']:.2f}",
                 r["int8_key"] or "-", f"{r['int8_metric']:.2f}" if r["int8_key"] else "-",
                 f"{r['int8_ms']:.2f}" if r["int8_key"] else "-", f"{r['speedup']:.2f}x" if r["int8_key"] else "-"]
                for dev, f in fronts.items() for r in f["rows"]]  # fmt: skip
        lines += ["## int8 front against fp32 front (the multi-device search)", "",
                  "Every fp32 front config in the middle of the range (predicted latency 30-80% of the full model's) against "
                  "the fastest int8 front config whose reported accuracy is at least as high (stricter than 'within the "
                  "paired interval'); latencies are each precision's predictor's (the fronts' axis), accuracy on the "
                  "report examples.", "",
                  markdown_table(["device", "fp32 config", "fp32 acc", "fp32 ms", "int8 config", "int8 acc", "int8 ms",
                                  "speed-up"], rows), ""]  # fmt: skip
    if (work / "bundle.json").is_file():
        b = json.loads((work / "bundle.json").read_text())
        bm = b.get("machine") or m
        lines += ["## The bundle in a process without torch", "",
                  f"Exported and checked at commit `{bm['commit']}`, {bm['date']} (the search results above are of `{m['commit']}`).",
                  "", "```", b["load"]["stdout"].strip(),
                  b["load"]["stderr"].strip()[-600:], "```", "",
                  "`python -m dynasearch_bundle BUNDLE --check --device NAME`, fresh processes (check_ms: the loader's own "
                  "loop at export, median of 3 timings; the search's verified latency beside it):",
                  "", "```", *[c["stdout"].strip() for c in b.get("checks") or [b["check"]]], "```", ""]  # fmt: skip
    lines += ["## Verification on a busy machine", "",
              "Measured in [busy-verify.md](busy-verify.md) (`bench/busy_verify.py`): the same configs verified quiet and "
              "with 2 and 4 busy processes, with a plain wall-clock loop, the wall protocol and the search's verification.",
              ""]  # fmt: skip
    lines += ["## Targets", ""]
    met_all = all(d["met"] for d in multi["devices"] if d["target_ms"])
    lines.append(
        f"- every per-device answer meets its target when measured (the search verifies each answer by timing the extracted model on this machine): **{'met' if met_all else 'MISSED'}**"
    )
    ratio = (e95["multi"] or float("nan")) / mean95
    lines.append(
        f"- evaluations to 95% of every device's best-known hypervolume <= 1.3x one single-device search: {ratio:.2f}x "
        f"(multi {e95['multi']}, singles {', '.join(str(x) for x in singles95)}, their sum {sum(x or 0 for x in singles95)}): "
        f"**{'met' if ratio <= 1.3 else 'MISSED'}**"
    )
    if (work / "int8.json").is_file():
        i8 = json.loads((work / "int8.json").read_text())
        full = next(r for r in i8["rows"] if r["grid"] == "1x1")["ort1_ms"]
        mid = [r for r in i8["rows"] if 0.3 <= r["ort1_ms"] / full <= 0.8 and r["lo"] <= 0 <= r["hi"]]
        for dev in ("ort1", "ort2b8"):
            sp = [r[f"{dev}_ms"] / r[f"{dev}:int8_ms"] for r in mid]
            listed = ", ".join(f"{r['grid']} {x:.2f}x" for r, x in zip(mid, sp))
            lines.append(
                f"- int8 >= 1.8x faster at equal accuracy (paired interval holds 0) in the middle (grid points at 30-80% of "
                f"the full model's fp32 latency), {dev}: {listed}; "
                f"median {np.median(sp):.2f}x: **{'met' if np.median(sp) >= 1.8 else 'MISSED'}**"
            )
            if np.median(sp) < 1.8:
                lines.append(
                    "  - cause, measured: int8 speeds up the GEMMs, and at 2 threads batch 8 the fp32 GEMMs are already "
                    "efficient while the parts int8 does not touch (embeddings, softmax, layer norms, the dynamic "
                    "quantisation of activations) weigh more, most in narrow configs (0.25x1 1.01x). Static quantisation "
                    "does not close it: QDQ S8S8 calibrated on 128 train examples is SLOWER than fp32 here (median 0.53x "
                    "at ort2b8, 0.43x at ort1) and loses 2-9 points; MatMul-only static 0.74x "
                    "([int8-static.md](int8-static.md)). Dynamic stays the int8 mode."
                )
    for dev, f in fronts.items():
        sp = [r["speedup"] for r in f["rows"] if r["int8_key"]]
        med = float(np.median(sp)) if sp else float("nan")
        lines.append(
            f"- int8 FRONT against fp32 FRONT, {dev}: middle of the fp32 front ({len(f['rows'])} configs, "
            f"{len(sp)} with an int8 front config at least as accurate): median {med:.2f}x: "
            f"**{'met' if med >= 1.8 else 'MISSED'}**"
        )
    if (work / "bundle.json").is_file():
        b = json.loads((work / "bundle.json").read_text())
        out = b["load"]["stdout"]
        pick = float(out.split("PICK_S")[1].split()[0]) if "PICK_S" in out else float("nan")
        no_torch = "TORCH False" in out
        checks = b.get("checks") or [dict(b["check"], device="ort1")]
        index = json.loads((work / "bundle" / "devices.json").read_text())
        ratios = []
        for c in checks:
            here = (
                float(c["stdout"].split(" ms here")[0].rsplit(" ", 1)[1]) if " ms here" in c["stdout"] else float("nan")
            )
            line = next(x for x in c["stdout"].splitlines() if x.startswith(f"device {c['device']} ("))
            prec = line.split("(", 1)[1].split(")", 1)[0]  # the entry --check picked
            e = next(d for d in index["devices"] if d["name"] == c["device"] and d["precision"] == prec)
            ratios.append((c["device"], here, e.get("check_ms"), e.get("measured_raw_ms"), c["rc"]))
        listed = "; ".join(
            f"{d} {h:.3f} ms: {h / k:.2f} of check_ms {k:.3f}, {h / m:.2f} of the verified raw {m:.3f}"
            for d, h, k, m, _ in ratios
            if k and m
        )
        lines.append(
            f"- the loader imports no torch ({'yes' if no_torch else 'NO'}) and picks its entry in < 1 s ({pick:.2f} s): "
            f"**{'met' if no_torch and pick < 1 else 'MISSED'}**; `--check` within 10% of the recorded latency (check_ms, "
            f"timed at export with --check's own loop), {len(ratios)} fresh processes: "
            f"**{'met' if all(rc == 0 for *_, rc in ratios) else 'MISSED'}** ({listed})"
        )
    lines.append("")
    path = REPO / "bench" / "results" / "devices.md"
    write_text(path, "\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("phase", choices=("measure", "search", "int8", "bundle", "report", "all"))
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--work", type=Path, default=Path("runs/bench-devices"))
    a = ap.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    preds = phase_measure(a.work, a.run) if a.phase in ("measure", "search", "all") else {}
    if a.phase in ("search", "all"):
        phase_search(a.work, a.run, preds, a.data_dir)
    if a.phase in ("int8", "all"):
        phase_int8(a.work, a.run, a.task, a.data_dir)
    if a.phase in ("bundle", "all"):
        phase_bundle(a.work)
    if a.phase in ("report", "all"):
        _log(f"report: {phase_report(a.work)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
