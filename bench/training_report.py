"""Issue 25, items 0 and 4: the training sweep's recipes judged on the WHOLE dev split of its task (resumable).

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
from typing import TYPE_CHECKING

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# The statistics and the page live in sibling modules, imported by plain name (as the other bench scripts do):
# bench/ is sys.path[0] when this file runs as a script, but not when tests load it by its path.
sys.path.insert(0, str(ROOT / "bench"))

from training_analysis import ALONE_SEED, BUDGET, DEPTH_ROWS, POINTS, RESAMPLES, TASK, analyse, name_of  # noqa: E402
from training_tables import render  # noqa: E402

from dynabert.io import atomic_dir, atomic_file, write_json, write_text  # noqa: E402

if TYPE_CHECKING:
    from predictors import Protocol

STEPS = ("alone", "correct", "latency", "report")
NPZ_KEYS = ("correct", "labels", "points", "subnet_keys", "dev_digest", "model_digest", "accuracy")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--results", type=Path, default=Path("runs/sweep/results.json"), help="the sweep's results JSON")
    p.add_argument("--sweep-out", type=Path, default=Path("runs/sweep"), help="the sweep's --out (NAME-sSEED runs)")
    p.add_argument("--work", type=Path, default=Path("runs/alone"), help="the trained-alone runs")
    p.add_argument("--latency", type=Path, default=Path("runs/grid-latency.json"), help="grid latency cache")
    p.add_argument("--latency-from", type=Path, default=None, help="reuse this grid latency file (measure nothing)")
    p.add_argument("--no-latency", action="store_true", help="skip the latency step (the report then has no HV)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "training.md")
    p.add_argument(
        "--task",
        default=TASK,
        help=f"the sweep's task (default {TASK}; its runs record their data, so only the page's labels and the "
        "alone step, which is the tweets reference of item 0, depend on it)",
    )
    p.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}")
    p.add_argument("--report-only", action="store_true", help="only the report, from the caches")
    p.add_argument("--threads", type=int, default=1, help="torch threads (evaluation and the alone trainings)")
    p.add_argument("--resamples", type=int, default=RESAMPLES)
    args = p.parse_args(argv)
    args.steps = ["report"] if args.report_only else [s.strip() for s in args.steps.split(",") if s.strip()]
    bad = [s for s in args.steps if s not in STEPS]
    if bad:
        p.error(f"unknown step(s) {bad}; known: {', '.join(STEPS)}")
    if args.task != TASK and "alone" in args.steps:
        p.error(f"the alone step trains item 0's references on {TASK}; with --task {args.task} give --steps without it")
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


def train_alone(args: argparse.Namespace) -> None:
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


def measure_correct(args: argparse.Namespace) -> None:
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


def measure_latency(
    path: Path, protocol: Protocol | None = None, points: list[str] | None = None, records: Path | None = None
) -> dict:
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


def load_caches(args: argparse.Namespace) -> dict:
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
    return dict(
        runs=runs, missing=missing, teachers=teachers, alone=alone, labels=labels, latency=latency, task=args.task
    )


# ---------------------------------------------------------------------------------------------- report


def report(args: argparse.Namespace) -> dict:
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


def main(argv: list[str] | None = None) -> int:
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
