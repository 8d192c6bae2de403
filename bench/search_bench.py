"""Issue 8 benchmark: the search on a model trained by `dynasearch train` and a predictor fitted by
`fit-predictor` on this machine (onnxruntime CPU, 1 thread, batch 1, seq 128).

    .venv/bin/python bench/search_bench.py --run RUN [--run-random RUN2] --predictor PRED --work DIR --phase P

Phases (each writes DIR/<phase>.json; bench/search_report.py turns them into bench/results/search.md):
    samplers  hypervolume against evaluations for nsga2, tpe, random (and gp, fewer runs: its cost per
              trial is measured too), SEEDS seeds x TRIALS trials each, one shared accuracy cache on the
              same dev subset, in-process studies (storage round trips are measured in `cost`)
    perlayer  per-layer front against the grid on MEASURED latency of extracted models, for RUN (paper
              training) and RUN2 (--random-subnets): one search each, then the front and the 12 grid
              points timed together in one interleaved run (anchor = full model)
    targets   5 targets over the latency range: the verified answer for each (query + verification as
              `dynasearch query --verify`), then every returned config re-measured in a second run
    cost      a 200-trial `dynasearch search --target-latency` (default SQLite storage) timed end to end
              with its split; `dynasearch query` wall time (median of 5 processes)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _config(run, predictor, out, **kw):
    from search import SearchConfig

    return SearchConfig(run=run, predictor=predictor, out=out, progress=False, **kw)


def phase_samplers(a) -> dict:
    import numpy as np

    runs = []
    names = a.samplers.split(",")
    plan = [(name, seed) for name in names if name != "gp" for seed in range(a.seed_start, a.seeds)]
    plan += [("gp", seed) for seed in range(a.gp_seeds) if "gp" in names]
    for name, seed in plan:
        trials = a.gp_trials if name == "gp" else a.trials
        out_dir = Path(a.work) / "samplers" / f"{name}-s{seed}"
        cfg = _config(
            a.run,
            a.predictor,
            out_dir,
            sampler=name,
            seed=seed,
            trials=trials,
            search_dev=a.search_dev,
            storage=":memory:",
            cache=f"sqlite:///{Path(a.work).resolve() / 'cache.db'}",
            verify=False,
            bf16=a.bf16,
        )
        t0 = time.perf_counter()
        out, wall, s = _search_keep(cfg)
        s.close()
        t = out.trials
        first = ~t["key"].duplicated()
        runs.append(
            {
                "sampler": name,
                "seed": seed,
                "trials": int(len(t)),
                "distinct": int(first.sum()),
                "repeat_proposals": int((~first).sum()),
                "metric": t["metric_search"].tolist(),
                "latency": t["predicted_ms"].tolist(),
                "keys": t["key"].tolist(),
                "optimize_s": wall,
                "evaluation_s": s.counters.evaluation_s,
                "evaluations": s.counters.evaluations,
                "seconds": time.perf_counter() - t0,
            }
        )
        print(
            f"{name} seed {seed}: {len(t)} trials, {int(first.sum())} distinct, {s.counters.evaluations} new evaluations, "
            f"{wall:.0f} s",
            flush=True,
        )
    from search.storage import AccuracyCache

    cache = AccuracyCache(f"sqlite:///{Path(a.work).resolve() / 'cache.db'}")
    import sqlalchemy as sa

    with cache.engine.connect() as c:
        n, distinct = c.execute(
            sa.text("select count(*), count(distinct digest || selection || key) from dynasearch_evaluations")
        ).first()
    return {
        "runs": runs,
        "evaluations_logged": int(n),
        "distinct_evaluated": int(distinct),
        "search_dev": a.search_dev,
        "np": np.__version__,
    }


def _measure_front_and_grid(out, s, work: Path, label: str) -> dict:
    """Time the front's configs and the 12 grid points together (one interleaved run, anchored)."""
    from dynabert.subnet import SubnetConfig
    from search.verify import anchor_reference, measure_configs

    front = out.front
    grid = out.trials[out.trials["grid"] != ""].drop_duplicates("key")
    keys = list(dict.fromkeys(list(front["key"]) + list(grid["key"])))
    rows = out.trials.drop_duplicates("key").set_index("key").loc[keys].reset_index()
    subnets = [SubnetConfig.from_json(j) for j in rows["subnet"]]
    t0 = time.perf_counter()
    got = measure_configs(
        s.model,
        s.shape,
        subnets,
        s.settings,
        work / f"perlayer-{label}",
        "p50",
        False,
        reference_ms=anchor_reference(s.estimator.predictor, s.settings),
    )
    rows["measured_ms"] = rows["key"].map({k: m.judged(False) for k, m in got.items()})
    rows["measured_raw_ms"] = rows["key"].map({k: m.raw_ms for k, m in got.items()})
    rows["speed_index"] = rows["key"].map({k: m.speed_index for k, m in got.items()})
    rows["on_front"] = rows["key"].isin(set(front["key"]))
    return {
        "rows": rows[
            [
                "key",
                "subnet",
                "grid",
                "metric_full",
                "predicted_ms",
                "measured_ms",
                "measured_raw_ms",
                "speed_index",
                "on_front",
            ]
        ].to_dict("records"),
        "measure_s": time.perf_counter() - t0,
    }


def phase_perlayer(a) -> dict:
    res = {}
    for label, run in (("paper", a.run), ("random-subnets", a.run_random)):
        if not run:
            continue
        work = Path(a.work)
        (work / f"perlayer-{label}").mkdir(parents=True, exist_ok=True)
        cfg = _config(
            run,
            a.predictor,
            work / f"perlayer-{label}",
            sampler=a.sampler,
            seed=0,
            trials=a.trials,
            search_dev=a.search_dev,
            storage=":memory:",
            cache=f"sqlite:///{work.resolve() / 'cache.db'}",
            verify=False,
            bf16=a.bf16,
        )
        s_out, wall, s = _search_keep(cfg)
        from predictors import predictor_settings
        from search.verify import check_machine

        s.settings = predictor_settings(s.estimator.predictor, batch=s.estimator.batch, seq_len=s.estimator.seq_len)
        check_machine(s.estimator.predictor, s.settings)
        res[label] = _measure_front_and_grid(s_out, s, work, label) | {"optimize_s": wall, "run": str(run)}
        s.close()
        print(f"perlayer {label}: front {len(s_out.front)} configs measured", flush=True)
    return res


def _search_keep(cfg):
    """A search run step by step, the Search object kept (its model and settings are reused)."""
    from search.study import Search

    s = Search(cfg)
    s.prepare()
    s.load()
    s.open_study()
    t0 = time.perf_counter()
    s.optimize()
    wall = time.perf_counter() - t0
    return s.finish(), wall, s


def phase_cost(a) -> dict:
    out_dir = Path(a.work) / "cost"
    cmd = [
        sys.executable,
        "-m",
        "dynasearch",
        "search",
        str(a.run),
        "--predictor",
        str(a.predictor),
        "--out",
        str(out_dir),
        "--target-latency",
        a.cost_target,
        "--trials",
        str(a.trials),
        "--quiet",
    ]
    if a.search_dev:
        cmd += ["--search-dev", str(a.search_dev)]
    if a.bf16:
        cmd += ["--bf16"]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"))
    wall = time.perf_counter() - t0
    meta = json.loads((out_dir / "search.json").read_text())
    q = []
    for _ in range(5):
        t1 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "dynasearch", "query", str(out_dir), "--target-latency", a.cost_target],
            capture_output=True,
            text=True,
            cwd=REPO,
            check=True,
        )
        q.append(time.perf_counter() - t1)
    return {
        "wall_s": wall,
        "rc": p.returncode,
        "stdout": p.stdout[-3000:],
        "stderr": p.stderr[-2000:],
        "timing": meta["timing"],
        "summary": meta["summary"],
        "answer": meta["answer"],
        "query_s": q,
        "command": " ".join(cmd[1:]),
    }


def phase_targets(a) -> dict:
    """5 targets over the cost search's front: verified answers (query + measure, as `query --verify`)."""
    import pandas as pd

    from search.results import query
    from search.verify import verify_results_answer

    res_dir = Path(a.work) / "cost"
    front = pd.read_csv(res_dir / "front.csv")
    lo, hi = front["predicted_ms"].min(), front["predicted_ms"].max()
    targets = [round(float(lo + f * (hi - lo)), 2) for f in (0.1, 0.3, 0.5, 0.7, 0.9)]
    answers = []
    for t in targets:
        ans = query(res_dir, t)
        tries = 0
        while not ans["verified"] and tries < 5:
            ans = verify_results_answer(res_dir, ans)
            tries += 1
            if ans["measured_ms"] > t:
                ans = query(res_dir, t)
        answers.append({"target_ms": t, **ans})
        print(f"target {t} ms: {ans['key']} measured {ans['measured_ms']}", flush=True)
    # Re-measure every returned config once more, in one run (anchored): does it still meet its target?
    from dynabert.backbone import load_model
    from dynabert.subnet import SubnetConfig
    from predictors import load_predictor, predictor_settings
    from predictors.measure import load_shape
    from search.verify import anchor_reference, measure_configs

    meta = json.loads((res_dir / "search.json").read_text())
    pred = load_predictor(meta["study"]["predictor_dir"])
    st = predictor_settings(pred, batch=meta["study"]["latency"]["batch"], seq_len=meta["study"]["latency"]["seq_len"])
    model = load_model(meta["study"]["model_dir"])
    shape = load_shape(meta["study"]["model_dir"])
    subs = list({a_["key"]: SubnetConfig.from_dict(a_["subnet"]) for a_ in answers}.values())
    again = measure_configs(
        model, shape, subs, st, Path(a.work) / "remeasure", "p50", False, reference_ms=anchor_reference(pred, st)
    )
    for a_ in answers:
        m = again[a_["key"]]
        a_["remeasured_ms"], a_["remeasured_raw_ms"], a_["remeasured_speed_index"] = (
            m.judged(False),
            m.raw_ms,
            m.speed_index,
        )
    return {"targets": targets, "answers": answers}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--run-random", default=None)
    ap.add_argument("--predictor", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--phase", required=True, choices=("samplers", "perlayer", "targets", "cost"))
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--seeds", type=int, default=5, help="samplers phase: seeds seed-start .. seeds-1")
    ap.add_argument("--seed-start", type=int, default=0)
    ap.add_argument("--gp-seeds", type=int, default=1)
    ap.add_argument("--gp-trials", type=int, default=60)
    ap.add_argument("--search-dev", type=int, default=300)
    ap.add_argument("--sampler", default="nsga2")
    ap.add_argument("--cost-target", default="15ms")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--samplers", default="nsga2,tpe,random,gp", help="samplers phase: which samplers")
    ap.add_argument("--tag", default="", help="suffix of the phase's JSON file (parallel parts of one phase)")
    a = ap.parse_args()
    Path(a.work).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    t0 = time.time()
    res = {"samplers": phase_samplers, "perlayer": phase_perlayer, "targets": phase_targets, "cost": phase_cost}[
        a.phase
    ](a)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO
    ).stdout.strip()
    res["_meta"] = {
        "phase": a.phase,
        "args": vars(a),
        "commit": commit,
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t0)),
        "seconds": time.time() - t0,
        "cpu": _cpu(),
        "load_before": os.getloadavg(),
    }
    name = a.phase + (f"-{a.tag}" if a.tag else "")
    from dynabert.io import write_text

    write_text(Path(a.work) / f"{name}.json", json.dumps(res, indent=1, default=float))


def _cpu() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f", {os.cpu_count()} vCPU"
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
