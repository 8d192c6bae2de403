"""Issue 25, items 0 and 4: the training sweep's recipes judged on the WHOLE tweets dev split (resumable).

    python bench/training_report.py --no-latency        # alone references + per-example scores, report without HV
    python bench/training_report.py                     # ... and the grid latency (once; needs a quiet CPU)
    python bench/training_report.py --report-only       # the report again from the caches, in seconds
    python bench/training_report.py --latency-from runs/grid-latency.json

Steps (each skips what its cache already holds, so a killed run continues where it stopped):
  alone    the six depth < 1 grid shapes at widths >= 0.5, sliced naively from the packaged MiniLM backbone
           (leading heads/neurons, layers floor(i / depth)) and fine-tuned ALONE with the demo's teacher
           stage (`dynasearch train --stages teacher`, the sweep's base-run flags) into WORK/alone-WxD-sSEED.
           Its 125 steps are evaluated once, at the last step, so the kept model is the last step's
           (asserted from state.json: one history entry, at the last step).
  correct  per-example correctness on the whole dev split, through dynabert.evaluate (the code path of
           `dynasearch evaluate RUN --grid`), of the 12 grid points of every run in the sweep's results,
           of each seed's teacher (OUT/base-sSEED, stage teacher) and of each alone model (as built);
           cached in RUN/correct-whole.npz (base: correct-whole-teacher.npz), checked against the
           sweep's grid CSV accuracies to 0.01 point.
  latency  the 12 grid shapes extracted and timed once: onnxruntime CPU, 1 thread, batch 1, length 64,
           the demo's protocol, through predictors.measure (runs/grid-latency.json).
  report   bench/results/training.md from the caches only (--report-only runs this step alone).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dynabert.io import atomic_dir, atomic_file, write_json, write_text  # noqa: E402
from dynabert.metrics import paired_bootstrap  # noqa: E402
from dynabert.tables import markdown_table  # noqa: E402
from search.pareto import hypervolume_2d  # noqa: E402

WIDTHS = (1.0, 0.75, 0.5, 0.25)
DEPTHS = (1.0, 0.75, 0.5)
# The paper grid in dynabert.subnet.paper_grid's order (depth outer, width inner), named WxD.
POINTS = [f"{w:g}x{d:g}" for d in DEPTHS for w in WIDTHS]
# Issue 25 item 0: the depth < 1 shapes at widths >= 0.5, each trained alone as the reference.
DEPTH_ROWS = [(w, d) for d in (0.75, 0.5) for w in (1.0, 0.75, 0.5)]
ALONE_SEED = 42
TODAY = "today"
RESAMPLES = 1000
BOOT_SEED = 0
STEPS = ("alone", "correct", "latency", "report")
# The demo's budget (dynasearch/demo.py DemoConfig; bench/training_sweep.py's base run).
TASK = "tweets"
BUDGET = dict(train_subset=4000, dev_subset=500, max_seq_length=64, batch_size=32, lr=1e-4)
NPZ_KEYS = ("correct", "labels", "points", "subnet_keys", "dev_digest", "model_digest", "accuracy")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def name_of(w: float, d: float) -> str:
    return f"{w:g}x{d:g}"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--results", type=Path, default=Path("runs/sweep/results.json"), help="the sweep's results JSON")
    p.add_argument("--sweep-out", type=Path, default=Path("runs/sweep"), help="the sweep's --out (NAME-sSEED runs)")
    p.add_argument("--work", type=Path, default=Path("runs/alone"), help="the trained-alone runs")
    p.add_argument("--latency", type=Path, default=Path("runs/grid-latency.json"), help="grid latency cache")
    p.add_argument("--latency-from", type=Path, default=None, help="reuse this grid latency file (measure nothing)")
    p.add_argument("--no-latency", action="store_true", help="skip the latency step (the report then has no HV)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "training.md")
    p.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}")
    p.add_argument("--report-only", action="store_true", help="only the report, from the caches")
    p.add_argument("--threads", type=int, default=1, help="torch threads (evaluation and the alone trainings)")
    p.add_argument("--resamples", type=int, default=RESAMPLES)
    args = p.parse_args(argv)
    args.steps = ["report"] if args.report_only else [s.strip() for s in args.steps.split(",") if s.strip()]
    bad = [s for s in args.steps if s not in STEPS]
    if bad:
        p.error(f"unknown step(s) {bad}; known: {', '.join(STEPS)}")
    if args.no_latency and "latency" in args.steps:
        args.steps.remove("latency")
    return args


# ---------------------------------------------------------------------------------------------- facts


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), platform.processor())
    except OSError:
        return platform.processor()


def fingerprint() -> dict:
    import onnxruntime
    import torch

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit.stdout.strip(),
    }


def read_state(run: Path) -> dict | None:
    p = run / "state.json"
    return json.loads(p.read_text()) if p.is_file() else None


def load_results(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


# ---------------------------------------------------------------------------------------------- alone


def alone_dir(work: Path, w: float, d: float, seed: int = ALONE_SEED) -> Path:
    return work / f"alone-{name_of(w, d)}-s{seed}"


def alone_command(init: Path, run: Path, seed: int) -> list[str]:
    """bench/training_sweep.py's base run (the demo's teacher stage), on the sliced model."""
    b = BUDGET
    return [
        *[sys.executable, "-m", "dynasearch", "train", "--out", str(run), "--stages", "teacher"],
        *["--model", str(init), "--task", TASK, "--seed", str(seed), "--no-progress"],
        *["--train-subset", str(b["train_subset"]), "--dev-subset", str(b["dev_subset"])],
        *["--max-seq-length", str(b["max_seq_length"]), "--batch-size", str(b["batch_size"]), "--group-by-length"],
        *["--stage-lr", f"teacher={b['lr']:g}", "--stage-epochs", "teacher=1"],
    ]


def check_last_step_kept(state: dict, where: Path) -> None:
    """The kept model must be the last step's, never one chosen on dev: one evaluation, at the last step."""
    hist = state["scores"]["teacher"]["history"]
    steps = state["compute"]["teacher"]["steps"]
    if len(hist) != 1 or hist[0]["step"] != steps:
        raise SystemExit(
            f"{where}: expected one dev evaluation at the last step ({steps}); history has "
            f"{[h['step'] for h in hist]}: the kept model may have been chosen on dev"
        )


def slice_init(init: Path, w: float, d: float, seed: int) -> None:
    """The packaged backbone with a seeded 3-way head (as the base run's), the grid shape cut out naively."""
    if (init / "config.json").is_file():
        return
    from dynabert.backbone import load_model, tokenizer_files
    from dynabert.extract import extract_subnet
    from dynabert.subnet import BackboneShape, SubnetConfig
    from dynabert.tasks import get_task

    pre = load_model(None, num_labels=get_task(TASK).num_labels, seed=seed)
    sub = SubnetConfig.from_grid(BackboneShape.from_config(pre.config), w, d)
    small = extract_subnet(pre, sub)
    with atomic_dir(init) as tmp:
        small.save_pretrained(str(tmp))
        for f in tokenizer_files(None):
            shutil.copy2(f, tmp / f.name)
    log(f"sliced {name_of(w, d)} ({sub.describe()}) into {init}")


def train_alone(args) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    for w, d in DEPTH_ROWS:
        run = alone_dir(args.work, w, d)
        state = read_state(run)
        if state and "teacher" in state.get("completed", []):
            log(f"{run}: done")
        else:
            init = args.work / f"init-{name_of(w, d)}-s{ALONE_SEED}"
            slice_init(init, w, d, ALONE_SEED)
            if (run / "run.json").is_file():
                cmd = [sys.executable, "-m", "dynasearch", "train", "--out", str(run), "--resume", "--no-progress"]
            else:
                cmd = alone_command(init, run, ALONE_SEED)
            log(f"training {name_of(w, d)} alone: {' '.join(cmd)}")
            t0 = time.time()
            subprocess.run(cmd, check=True, env=env)
            log(f"{name_of(w, d)} alone: {time.time() - t0:.0f} s")
            state = read_state(run)
        check_last_step_kept(state, run)


# ---------------------------------------------------------------------------------------------- correctness


def read_npz(path: Path, points: list[str] | None) -> dict | None:
    """The cache as a dict, or None when it is missing or malformed (then it is recomputed)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in NPZ_KEYS}
    except Exception as e:  # a torn or foreign file: recompute
        log(f"{path}: unreadable ({e}); recomputing")
        return None
    c, lab, pts = data["correct"], data["labels"], [str(p) for p in data["points"]]
    ok = (
        c.ndim == 2
        and lab.ndim == 1
        and c.shape == (len(pts), len(lab))
        and data["accuracy"].shape == (len(pts),)
        and len(data["subnet_keys"]) == len(pts)
        and (points is None or pts == points)
    )
    if not ok:
        log(f"{path}: shapes/keys invalid ({c.shape}, {lab.shape}, {pts}); recomputing")
        return None
    data["points"] = pts
    data["dev_digest"], data["model_digest"] = str(data["dev_digest"]), str(data["model_digest"])
    return data


def write_npz(path: Path, data: dict) -> None:
    with atomic_file(path, "wb") as f:
        np.savez(f, **{k: np.asarray(data[k]) for k in NPZ_KEYS})


def whole_dev_correct(run: Path, stage: str | None, grid: bool, cache: Path) -> dict:
    """Per-example correctness (points x examples) of the run's model on the whole dev split: the steps of
    dynabert.evaluate.evaluate_run (resolve_run, its length and data, load_dev_set, predict), cached."""
    from dynabert.backbone import load_model
    from dynabert.evaluate import load_dev_set, predict
    from dynabert.extract import check_uniform
    from dynabert.metrics import compute_metrics
    from dynabert.runs import model_digest, read_run_record, resolve_run
    from dynabert.subnet import BackboneShape, paper_grid
    from dynabert.tasks import get_task

    info = resolve_run(run, stage)
    digest = model_digest(info.model_dir)
    have = read_npz(cache, POINTS if grid else None)
    if have is not None and have["model_digest"] == digest:
        return have
    if have is not None:
        log(f"{cache}: model changed since it was cached; recomputing")
    task = info.task or get_task(TASK)
    model = load_model(info.model_dir)
    recorded = (read_run_record(info.run_dir) or {}).get("data", {}) if info.run_dir else {}
    dev = load_dev_set(
        task,
        info.model_dir,
        data_dir=recorded.get("data_dir"),
        dev_file=recorded.get("dev_file"),
        max_seq_length=info.max_seq_length or 128,
        batch_size=128,
    )
    if grid:
        check_uniform(model, "the paper grid's width/depth multipliers")
        plan = [(name_of(w, d), s) for w, d, s in paper_grid(BackboneShape.from_config(model.config))]
        if [p for p, _ in plan] != POINTS:
            raise SystemExit(f"{run}: unexpected grid {[p for p, _ in plan]}")
    else:
        plan = [(info.model_dir.name, None)]
    t0 = time.time()
    rows, acc, keys = [], [], []
    for i, (pt, sub) in enumerate(plan):
        logits = predict(model, dev, sub)
        rows.append(logits.argmax(axis=1) == dev.labels)
        acc.append(compute_metrics(("accuracy",), logits, dev.labels)["accuracy"])
        keys.append(sub.key if sub is not None else "as-built")
        log(f"  {run.name} {pt}: {acc[-1]:.2f} ({i + 1}/{len(plan)}, {time.time() - t0:.0f} s)")
    data = dict(
        correct=np.stack(rows),
        labels=np.asarray(dev.labels),
        points=np.array([p for p, _ in plan]),
        subnet_keys=np.array(keys),
        dev_digest=np.array(dev.digest),
        model_digest=np.array(digest),
        accuracy=np.array(acc),
    )
    write_npz(cache, data)
    return read_npz(cache, POINTS if grid else None)


def check_against_grid(key: str, data: dict, record: dict) -> None:
    """The cached accuracies equal the sweep's `dynasearch evaluate --grid` CSV (to 0.01 point)."""
    rows = record.get("grid") or []
    for r in rows:
        pt = name_of(float(r["width"]), float(r["depth"]))
        if pt in data["points"]:
            mine = float(data["accuracy"][data["points"].index(pt)])
            if abs(mine - float(r["accuracy"])) > 0.01:
                raise SystemExit(f"{key} {pt}: whole-dev accuracy {mine:.4f} != the grid CSV's {r['accuracy']}")
    if rows:
        log(f"{key}: the {len(rows)} grid CSV accuracies agree to 0.01 point")


def measure_correct(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    results = load_results(args.results)
    for key, rec in sorted(results.items()):
        run = args.sweep_out / key
        if not (run / "state.json").is_file():
            log(f"{key}: no run at {run}; skipped")
            continue
        log(f"{key}: whole-dev correctness of the 12 grid points")
        check_against_grid(key, whole_dev_correct(run, None, True, run / "correct-whole.npz"), rec)
    for seed in sorted({int(r["seed"]) for r in results.values()} | {ALONE_SEED}):
        base = args.sweep_out / f"base-s{seed}"
        if (base / "teacher").is_dir():
            log(f"base-s{seed}: whole-dev correctness of the teacher")
            whole_dev_correct(base, "teacher", False, base / "correct-whole-teacher.npz")
    for w, d in DEPTH_ROWS:
        run = alone_dir(args.work, w, d)
        if "teacher" in (read_state(run) or {}).get("completed", []):
            log(f"{run.name}: whole-dev correctness")
            whole_dev_correct(run, None, False, run / "correct-whole.npz")


# ---------------------------------------------------------------------------------------------- latency


def measure_latency(path: Path, protocol=None, points: list[str] | None = None, records: Path | None = None) -> dict:
    """The grid shapes extracted from the packaged backbone, timed as the demo times (predictors.measure:
    onnxruntime CPU, 1 thread, batch 1, length 64, DEMO_PROTOCOL); written to `path` (JSON)."""
    from dynabert.subnet import paper_grid
    from dynasearch.demo import DEMO_PROTOCOL, DemoConfig
    from predictors import BackendSettings, Protocol, measure, read_records
    from predictors.measure import load_shape

    cfg = DemoConfig()
    shape = load_shape(None)
    grid = [(name_of(w, d), s) for w, d, s in paper_grid(shape) if points is None or name_of(w, d) in points]
    settings = BackendSettings(
        cfg.backend, "cpu", cfg.threads, False, "float32", cfg.latency_batch, cfg.latency_seq_len
    )
    protocol = protocol or Protocol(**DEMO_PROTOCOL, seed=cfg.seed)
    records = records or path.with_suffix("") / "records.csv"
    log(f"timing {len(grid)} extracted grid shapes: {settings}")
    measure(
        shape,
        [s for _, s in grid],
        settings,
        records,
        protocol,
        sampler="grid",
        onnx_cache=records.parent / "onnx-cache",
        progress=False,
    )
    shutil.rmtree(records.parent / "onnx-cache", ignore_errors=True)  # the exports are only needed while timing
    df = read_records(records)
    df = df[(df["status"] == "ok") & (df["settings_id"] == df[df["key"] == grid[0][1].key]["settings_id"].iloc[-1])]
    out = {
        "cpu_model": cpu_model(),
        "fingerprint": fingerprint(),
        "settings": settings.__dict__,
        "protocol": protocol.__dict__,
        "records": str(records),
        "points": {},
    }
    for pt, s in grid:
        r = df[df["key"] == s.key].iloc[-1]
        c = r.get("corrected_median_ms")
        ms = float(c) if c is not None and np.isfinite(float(c)) and float(c) > 0 else float(r["median_ms"])
        out["points"][pt] = {"key": s.key, "ms": ms, "median_ms": float(r["median_ms"]), "cpu_model": r["cpu_model"]}
    write_json(path, out)
    return out


# ---------------------------------------------------------------------------------------------- loading caches


def load_caches(args) -> dict:
    """Everything the report needs, from the caches only (nothing is trained, scored or timed)."""
    results = load_results(args.results)
    runs, missing = {}, []
    for key, rec in sorted(results.items()):
        data = read_npz(args.sweep_out / key / "correct-whole.npz", POINTS)
        if data is None:
            missing.append(key)
            continue
        runs[key] = {**rec, "correct": data["correct"], "labels": data["labels"], "dev": data["dev_digest"]}
    teachers = {}
    for seed in sorted({int(r["seed"]) for r in results.values()} | {ALONE_SEED}):
        data = read_npz(args.sweep_out / f"base-s{seed}" / "correct-whole-teacher.npz", None)
        if data is not None:
            teachers[seed] = {"correct": data["correct"][0], "labels": data["labels"], "dev": data["dev_digest"]}
    alone = {}
    for w, d in DEPTH_ROWS:
        run = alone_dir(args.work, w, d)
        data, state = read_npz(run / "correct-whole.npz", None), read_state(run)
        if data is not None and state is not None:
            comp = state["compute"]["teacher"]
            alone[name_of(w, d)] = {
                "correct": data["correct"][0],
                "labels": data["labels"],
                "dev": data["dev_digest"],
                "seconds": comp["seconds"],
                "steps": comp["steps"],
                "tflops": comp["flops"] / 1e12,
                "dev_subset_score": state["scores"]["teacher"]["best"],
            }
    digests = {v["dev"] for v in [*runs.values(), *teachers.values(), *alone.values()]}
    if len(digests) > 1:
        raise SystemExit(f"the caches were scored on different dev sets: {sorted(digests)}")
    labels = next((v["labels"] for v in [*runs.values(), *teachers.values(), *alone.values()]), None)
    lat_path = args.latency_from or args.latency
    latency = json.loads(lat_path.read_text()) if lat_path.is_file() else None
    if latency is not None and set(POINTS) - set(latency.get("points", {})):
        raise SystemExit(f"{lat_path}: no latency for {sorted(set(POINTS) - set(latency.get('points', {})))}")
    return dict(runs=runs, missing=missing, teachers=teachers, alone=alone, labels=labels, latency=latency)


# ---------------------------------------------------------------------------------------------- statistics


def majority(labels: np.ndarray) -> float:
    return 100.0 * float(np.bincount(labels).max() / len(labels))


def boot_counts(n: int, resamples: int) -> np.ndarray:
    """(resamples, n) counts of each dev example in each resample: the SAME for every recipe (paired)."""
    idx = np.random.default_rng(BOOT_SEED).integers(0, n, size=(resamples, n))
    counts = np.zeros((resamples, n), dtype=np.float32)
    np.add.at(counts, (np.arange(resamples)[:, None], idx), 1.0)
    return counts


def hv_of(acc: np.ndarray, lat: np.ndarray, ref_s: float, ref_t: float) -> float:
    return hypervolume_2d(acc, lat, ref_s, ref_t)


def hv_boot(correct: np.ndarray, counts: np.ndarray, lat: np.ndarray, ref_s: float, ref_t: float) -> np.ndarray:
    """The hypervolume of the 12 grid points in each resample (their accuracies recomputed on it)."""
    acc = 100.0 * (counts @ correct.T.astype(np.float32)) / correct.shape[1]  # (resamples, 12)
    return np.array([hv_of(a, lat, ref_s, ref_t) for a in acc])


def interval(x: np.ndarray) -> tuple[float, float]:
    lo, hi = np.quantile(x, [0.025, 0.975])
    return float(lo), float(hi)


def analyse(data: dict, resamples: int = RESAMPLES) -> dict:
    """The numbers of the report (pure: the caches in, a dict out)."""
    runs, labels = data["runs"], data["labels"]
    out: dict = {"recipes": {}, "seeds": sorted({int(r["seed"]) for r in runs.values()})}
    if labels is None:
        return out
    n = len(labels)
    out["n_dev"], out["majority"] = n, majority(labels)
    by_recipe: dict[str, dict[int, dict]] = {}
    for r in sorted(runs.values(), key=lambda r: (r["recipe"] != TODAY, r["recipe"], int(r["seed"]))):
        by_recipe.setdefault(r["recipe"], {})[int(r["seed"])] = r
    lat = data["latency"]
    counts = boot_counts(n, resamples)
    if lat is not None:
        t = np.array([lat["points"][p]["ms"] for p in POINTS])
        ref_t = lat["points"]["1x1"]["ms"]
        out["ref"] = (out["majority"], ref_t)
    for name, seeds in by_recipe.items():
        rec: dict = {"seeds": sorted(seeds), "per_seed": {}}
        for seed, r in sorted(seeds.items()):
            c = r["correct"]
            ps = {"acc": 100.0 * c.mean(axis=1), "record": r}
            comp = r.get("compute") or {}
            ps["flops"] = sum(v["flops"] for s, v in comp.items() if s in ("width", "depth", "final"))
            ps["seconds"] = (comp.get("total") or {}).get("seconds")
            if lat is not None:
                ps["hv"] = hv_of(ps["acc"], t, out["majority"], ref_t)
                ps["hv_boot"] = hv_boot(c, counts, t, out["majority"], ref_t)
            teacher = data["teachers"].get(seed)
            if teacher is not None:
                ps["teacher"] = 100.0 * teacher["correct"].mean()
            rec["per_seed"][seed] = ps
        # the mean over seeds: per-example mean correctness (same dev examples), so bootstraps stay paired
        rec["correct_mean"] = np.mean([seeds[s]["correct"].astype(float) for s in sorted(seeds)], axis=0)
        rec["acc"] = 100.0 * rec["correct_mean"].mean(axis=1)
        if lat is not None:
            rec["hv"] = float(np.mean([rec["per_seed"][s]["hv"] for s in seeds]))
            rec["hv_boot"] = np.mean([rec["per_seed"][s]["hv_boot"] for s in seeds], axis=0)
        out["recipes"][name] = rec
    today = out["recipes"].get(TODAY)
    for name, rec in out["recipes"].items():
        for seed, ps in rec["per_seed"].items():
            ref = today["per_seed"].get(seed) if today else None
            ps["flops_ratio"] = ps["flops"] / ref["flops"] if ref and ref["flops"] else None
            if lat is not None and ref is not None:
                ps["hv_ratio"] = ps["hv"] / ref["hv"] if ref["hv"] else float("nan")
                ps["hv_ratio_ci"] = interval(ps["hv_boot"] / ref["hv_boot"])
        if lat is not None:
            rec["hv_ci"] = interval(rec["hv_boot"])
            if today is not None:
                rec["hv_ratio"] = rec["hv"] / today["hv"] if today["hv"] else float("nan")
                rec["hv_ratio_ci"] = interval(rec["hv_boot"] / today["hv_boot"])
        # depth rows: the gap to the full-depth sibling, and the paired difference against the alone shape
        rec["depth"] = {}
        for w, d in DEPTH_ROWS:
            pt, sib = POINTS.index(name_of(w, d)), POINTS.index(name_of(w, 1.0))
            row = {"gap": float(rec["acc"][sib] - rec["acc"][pt]), "limit": 3.0 if d == 0.75 else 5.0}
            alone = data["alone"].get(name_of(w, d))
            if alone is not None:
                row["alone_acc"] = 100.0 * alone["correct"].mean()
                row["vs_alone"] = paired_bootstrap(
                    rec["correct_mean"][pt], alone["correct"].astype(float), resamples, BOOT_SEED
                )
            rec["depth"][name_of(w, d)] = row
        # the full-depth points against today's (on the mean over seeds)
        rec["vs_today"] = {}
        if today is not None and name != TODAY:
            common = sorted(set(rec["per_seed"]) & set(today["per_seed"]))
            if common:
                mine = np.mean([rec["per_seed"][s]["record"]["correct"].astype(float) for s in common], axis=0)
                theirs = np.mean([today["per_seed"][s]["record"]["correct"].astype(float) for s in common], axis=0)
                for w in WIDTHS:
                    i = POINTS.index(name_of(w, 1.0))
                    rec["vs_today"][name_of(w, 1.0)] = paired_bootstrap(mine[i], theirs[i], resamples, BOOT_SEED)
                rec["vs_today_seeds"] = common
    for name, rec in out["recipes"].items():
        rec["targets"] = targets(rec, out, name)
        for x in rec["targets"]:  # numpy booleans would print as n/a
            x["met"] = None if x["met"] is None else bool(x["met"])
    out["winner"] = winner(out["recipes"])
    return out


def targets(rec: dict, out: dict, name: str) -> list[dict]:
    """Each target of issue 25 item 4: what it asks, the measured value, met (True/False) or None (no data)."""
    t = []
    gaps = rec["depth"]
    worst75 = max(gaps[name_of(w, 0.75)]["gap"] for w in (1.0, 0.75, 0.5))
    worst50 = max(gaps[name_of(w, 0.5)]["gap"] for w in (1.0, 0.75, 0.5))
    t.append(
        dict(
            target="at widths >= 0.5 every depth-0.75 grid point within 3 points of its full-depth sibling",
            value=f"largest gap {worst75:.2f}",
            met=worst75 <= 3.0,
            depth_row=True,
        )
    )
    t.append(
        dict(
            target="at widths >= 0.5 every depth-0.5 point within 5 points of its full-depth sibling",
            value=f"largest gap {worst50:.2f}",
            met=worst50 <= 5.0,
            depth_row=True,
        )
    )
    va = [(pt, r["vs_alone"]) for pt, r in gaps.items() if "vs_alone" in r]
    if len(va) == len(gaps):
        pt, (m, lo, hi) = min(va, key=lambda x: (x[1][0] >= -0.5 and x[1][1] > -2, x[1][0]))
        met = all(v[0] >= -0.5 and v[1] > -2 for _, v in va)
        value = f"weakest {pt}: {m:+.2f} [{lo:+.2f}, {hi:+.2f}]"
    else:
        met, value = None, f"alone references for {len(va)} of {len(gaps)} shapes"
    t.append(
        dict(
            target="each of them at least as accurate as the same shape trained alone (paired point estimate >= -0.5, "
            "interval's lower end > -2)",
            value=value,
            met=met,
            depth_row=True,
        )
    )
    if name == TODAY:
        t.append(dict(target="every full-depth point not worse than today's recipe", value="(is today's)", met=None))
    elif rec["vs_today"]:
        vt = rec["vs_today"]
        pt, (m, lo, hi) = min(vt.items(), key=lambda x: (x[1][0] >= -0.5 and x[1][1] >= -1.5, x[1][0]))
        met = all(v[0] >= -0.5 and v[1] >= -1.5 for v in vt.values())
        seeds = "two-seed mean" if len(rec["vs_today_seeds"]) > 1 else f"seed {rec['vs_today_seeds'][0]} only"
        t.append(
            dict(
                target="every full-depth point not worse than today's recipe (judged on the two-seed mean: paired point "
                "estimate >= -0.5 and the interval's lower end >= -1.5)",
                value=f"weakest {pt}: {m:+.2f} [{lo:+.2f}, {hi:+.2f}] ({seeds})",
                met=met,
            )
        )
    else:
        t.append(dict(target="every full-depth point not worse than today's", value="no today run", met=None))
    diffs = {s: ps["teacher"] - ps["acc"][0] for s, ps in rec["per_seed"].items() if "teacher" in ps}
    if diffs:
        worst = max(diffs.values())
        value = ", ".join(
            f"s{s}: {rec['per_seed'][s]['acc'][0]:.2f} vs {rec['per_seed'][s]['teacher']:.2f}" for s in sorted(diffs)
        )
        t.append(
            dict(
                target="the full model within 1 point of its teacher (every seed; not more than 1 below it)",
                value=value,
                met=worst <= 1.0,
            )
        )
    else:
        t.append(dict(target="the full model within 1 point of its teacher", value="no teacher scored", met=None))
    floor = out["majority"] + 8
    low = min(float(ps["acc"].min()) for ps in rec["per_seed"].values())
    t.append(
        dict(
            target=f"no grid point below the majority class + 8 (= {floor:.2f}; every seed)",
            value=f"lowest {low:.2f}",
            met=low >= floor,
        )
    )
    if "hv_ratio" in rec and name != TODAY:
        lo_r, hi_r = rec["hv_ratio_ci"]
        today = out["recipes"][TODAY]
        outside = rec["hv_ci"][0] > today["hv_ci"][1]
        t.append(
            dict(
                target="the grid front's hypervolume >= 10% above today's recipe (outside both intervals: its 95% lower "
                "end above today's upper end)",
                value=f"x{rec['hv_ratio']:.3f} [x{lo_r:.3f}, x{hi_r:.3f}]; intervals "
                f"{'apart' if outside else 'overlap'}",
                met=rec["hv_ratio"] >= 1.10 and outside,
            )
        )
    else:
        t.append(
            dict(
                target="grid-front hypervolume >= 10% above today's",
                value="(is today's)" if name == TODAY else "no latency or no today run",
                met=None,
            )
        )
    return t


def winner(recipes: dict) -> dict | None:
    """The recipe that best meets the targets; where hypervolume and depth rows disagree, the depth rows
    decide (so they are compared first), then the other targets, then the hypervolume ratio."""
    if not recipes:
        return None

    def rank(item):
        name, rec = item
        depth_met = sum(bool(x["met"]) for x in rec["targets"] if x.get("depth_row"))
        other_met = sum(bool(x["met"]) for x in rec["targets"] if not x.get("depth_row"))
        return (depth_met, other_met, rec.get("hv_ratio", 0.0))

    name, rec = max(recipes.items(), key=rank)
    misses = [x["target"] for x in rec["targets"] if x["met"] is False]
    unjudged = [x["target"] for x in rec["targets"] if x["met"] is None]
    return {
        "recipe": name,
        "met": sum(bool(x["met"]) for x in rec["targets"]),
        "of": len(rec["targets"]),
        "misses": misses,
        "unjudged": unjudged,
    }


# ---------------------------------------------------------------------------------------------- markdown


def f2(x) -> str:
    return "" if x is None else (f"{x:.2f}" if isinstance(x, (float, np.floating)) else str(x))


def ci3(m: float, lo: float, hi: float) -> str:
    return f"{m:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def mark(met) -> str:
    return "met" if met is True else ("MISSED" if met is False else "n/a")


def render(data: dict, res: dict, fp: dict) -> str:
    lines = [
        "# Training recipes on the whole tweets dev split (issue 25, items 0 and 4)",
        "",
        f"- machine: {fp['cpu']}, {fp['cores']} cores; torch {fp['torch']}, onnxruntime {fp['onnxruntime']}, "
        f"Python {fp['python']}",
        f"- date: {fp['date']}; commit `{fp['commit']}`; generated by `bench/training_report.py` from the caches "
        "(`--report-only` redoes this page in seconds)",
        f"- budget (the demo's): task {TASK}, {BUDGET['train_subset']} training examples, max length "
        f"{BUDGET['max_seq_length']}, batch {BUDGET['batch_size']}, length-grouped batches, lr 1e-4 for every stage, "
        "teacher 1 epoch, then each recipe's width / width+depth (/final) steps at today's compute "
        f"(bench/training_sweep.py); checkpoints chosen on a {BUDGET['dev_subset']}-example dev subset",
    ]
    if "n_dev" not in res:
        return "\n".join([*lines, "", "No scored run yet: nothing to report.", ""])
    lines += [
        f"- scoring: all {res['n_dev']} examples of the dev split, through `dynabert.evaluate` (the numbers of "
        f"`dynasearch evaluate RUN --grid`); majority class {res['majority']:.2f}%",
        "- intervals: 95% percentile bootstrap over dev examples, "
        f"{RESAMPLES} resamples, the same resamples for every recipe (paired); differences in points",
    ]
    lat = data["latency"]
    if lat is not None:
        st = lat["settings"]
        lines.append(
            f"- latency (x-axis of the hypervolume, same for all recipes): the 12 grid shapes extracted, "
            f"{st['backend']} CPU, {st['threads']} thread(s), batch {st['batch']}, length {st['seq_len']}, the demo's "
            f"protocol, measured on {lat['cpu_model']} ({lat['fingerprint']['date']}); hypervolume reference point "
            f"(majority-class accuracy {res['majority']:.2f}, full model's latency {res['ref'][1]:.3f} ms)"
        )
    else:
        lines.append("- latency: not measured yet (run without --no-latency, or --latency-from FILE): no hypervolume")
    if data["missing"]:
        lines.append(f"- runs in the results without a whole-dev cache (left out): {', '.join(data['missing'])}")
    lines.append(
        "- wall times were taken while other jobs shared the 2 cores (the sweep, the alone trainings, scoring): "
        "compare compute, not seconds"
    )
    lines += ["", "## References", ""]
    for seed, teacher in sorted(data["teachers"].items()):
        lines.append(
            f"- teacher of seed {seed} (base-s{seed}/teacher, full model): {100 * teacher['correct'].mean():.2f}"
        )
    if data["alone"]:
        rows = [
            [
                pt,
                f"{100 * a['correct'].mean():.2f}",
                f"{a['dev_subset_score']:.2f}",
                str(a["steps"]),
                f"{a['tflops']:.2f}",
                f"{a['seconds']:.0f}",
            ]
            for pt, a in data["alone"].items()
        ]
        lines += [
            "",
            f"Trained alone (seed {ALONE_SEED}): each shape sliced naively from the packaged backbone, then the "
            "teacher stage's budget (125 steps, lr 1e-4); the kept model is the last step's (one dev evaluation, "
            "at it; asserted from state.json):",
            "",
            markdown_table(["shape", "whole dev", "dev subset (500)", "steps", "TFLOPs", "train s"], rows),
        ]
    recipes = res["recipes"]
    if not recipes:
        return "\n".join([*lines, "", "No sweep run has a whole-dev cache yet: no recipe to report.", ""])
    head_acc = list(POINTS)
    for seed in res["seeds"]:
        rows = []
        for name, rec in recipes.items():
            ps = rec["per_seed"].get(seed)
            if ps is None:
                continue
            r = ps["record"]
            comp = r.get("compute") or {}
            stages = [s for s in ("width", "depth", "final") if s in comp]
            rows.append(
                [
                    name,
                    " ".join(r.get("flags") or []) or "-",
                    "/".join(f"{s[0]}{comp[s]['steps']}" for s in stages),
                    "/".join(str(comp[s].get("subnets_per_step", "")) for s in stages),
                    f"{ps['flops'] / 1e12:.2f}",
                    "" if ps["flops_ratio"] is None else f"{ps['flops_ratio']:.4f}",
                    "" if ps["seconds"] is None else f"{ps['seconds']:.0f}",
                    *[f"{a:.2f}" for a in ps["acc"]],
                    f"{res['majority']:.2f}",
                ]
            )
        lines += [
            "",
            f"## Seed {seed}",
            "",
            "Steps and sub-networks per step: w = width stage, d = width+depth, "
            "f = final. Compute: width+depth(+final) TFLOPs counted by the run; the rule is within 2% of today's.",
            "",
            markdown_table(
                ["recipe", "flags", "steps", "sub-nets/step", "TFLOPs", "x today", "train s", *head_acc, "majority"],
                rows,
            ),
        ]
    multi = {n: r for n, r in recipes.items() if len(r["seeds"]) > 1}
    if multi:
        rows = [[n, ",".join(map(str, r["seeds"])), *[f"{a:.2f}" for a in r["acc"]]] for n, r in multi.items()]
        lines += ["", "## Mean over seeds", "", markdown_table(["recipe", "seeds", *head_acc], rows)]
    if lat is not None:
        rows = []
        for name, rec in recipes.items():
            for seed, ps in sorted(rec["per_seed"].items()):
                lo, hi = interval(ps["hv_boot"])
                ratio = ""
                if "hv_ratio" in ps and name != TODAY:
                    ratio = f"x{ps['hv_ratio']:.3f} [x{ps['hv_ratio_ci'][0]:.3f}, x{ps['hv_ratio_ci'][1]:.3f}]"
                rows.append([name, str(seed), f"{ps['hv']:.1f} [{lo:.1f}, {hi:.1f}]", ratio])
            if len(rec["seeds"]) > 1:
                ratio = ""
                if "hv_ratio" in rec and name != TODAY:
                    ratio = f"x{rec['hv_ratio']:.3f} [x{rec['hv_ratio_ci'][0]:.3f}, x{rec['hv_ratio_ci'][1]:.3f}]"
                rows.append([name, "mean", f"{rec['hv']:.1f} [{rec['hv_ci'][0]:.1f}, {rec['hv_ci'][1]:.1f}]", ratio])
        lat_row = ", ".join(f"{p} {lat['points'][p]['ms']:.2f}" for p in POINTS)
        lines += [
            "",
            "## Grid-front hypervolume",
            "",
            "Accuracy points x ms over the 12 grid points, reference (majority class, full model's latency); "
            "the ratio to today's with its paired interval (same seed; `mean`: two-seed mean).",
            "",
            markdown_table(["recipe", "seed", "hypervolume [95%]", "ratio to today's [95%]"], rows),
            "",
            f"Grid latency (ms): {lat_row}.",
        ]
    rows = []
    for w, d in DEPTH_ROWS:
        pt = name_of(w, d)
        for name, rec in recipes.items():
            r = rec["depth"][pt]
            seeds = "mean" if len(rec["seeds"]) > 1 else str(rec["seeds"][0])
            rows.append(
                [
                    pt,
                    name,
                    seeds,
                    f"{r['gap']:.2f}",
                    f"{r['limit']:g}",
                    mark(r["gap"] <= r["limit"]),
                    f2(r.get("alone_acc")),
                    ci3(*r["vs_alone"]) if "vs_alone" in r else "",
                    mark(r["vs_alone"][0] >= -0.5 and r["vs_alone"][1] > -2) if "vs_alone" in r else "n/a",
                ]
            )
    lines += [
        "",
        "## Depth rows",
        "",
        "Gap: accuracy of the full-depth sibling (same width, depth 1) minus the point's. Against alone: the "
        f"point minus the same shape sliced from the pretrained backbone and fine-tuned alone (seed {ALONE_SEED},"
        " the teacher stage's budget), paired bootstrap: point [lower, upper].",
        "",
        markdown_table(
            ["point", "recipe", "seed(s)", "gap", "limit", "gap ok", "alone", "vs alone [95%]", "vs alone ok"], rows
        ),
    ]
    lines += [
        "",
        "## Targets",
        "",
        "Issue 25 (demo budget, tweets, whole dev). Where the hypervolume and the depth "
        "rows disagree, the depth rows decide.",
        "",
    ]
    for name, rec in recipes.items():
        seeds = ",".join(map(str, rec["seeds"]))
        lines += [
            f"### {name} (seeds {seeds})",
            "",
            markdown_table(
                ["target", "measured", ""], [[x["target"], x["value"], mark(x["met"])] for x in rec["targets"]]
            ),
            "",
        ]
    win = res.get("winner")
    if win:
        lines += [
            "## Winning recipe",
            "",
            f"`{win['recipe']}`: {win['met']} of {win['of']} targets met"
            + (f"; MISSED: {'; '.join(win['misses'])}" if win["misses"] else "")
            + (f"; not judged: {'; '.join(win['unjudged'])}" if win["unjudged"] else "")
            + ".",
            "",
        ]
    return "\n".join(lines) + "\n"


def report(args) -> dict:
    data = load_caches(args)
    res = analyse(data, args.resamples)
    write_text(args.out, render(data, res, fingerprint()))
    log(f"wrote {args.out}")
    for name, rec in res["recipes"].items():
        met = sum(bool(x["met"]) for x in rec["targets"])
        missed = [x["target"].split(" (")[0] for x in rec["targets"] if x["met"] is False]
        print(f"{name}: {met}/{len(rec['targets'])} targets met" + (f"; MISSED: {'; '.join(missed)}" if missed else ""))
    win = res.get("winner")
    if win:
        msg = f"winning recipe: {win['recipe']} ({win['met']}/{win['of']} targets met"
        msg += f"; MISSED: {'; '.join(win['misses'])}" if win["misses"] else ""
        print(msg + ")")
    return res


def main(argv=None) -> int:
    args = parse_args(argv)
    if "alone" in args.steps:
        train_alone(args)
    if "correct" in args.steps:
        measure_correct(args)
    if "latency" in args.steps:
        if args.latency_from is not None:
            log(f"grid latency from {args.latency_from}")
        elif args.latency.is_file():
            log(f"grid latency cached in {args.latency}")
        else:
            measure_latency(args.latency)
    if "report" in args.steps:
        report(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
