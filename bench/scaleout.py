"""Scale-out benchmark: trials per minute for 1, 2 and 4 `dynasearch search` workers on one
PostgreSQL and one SQLite study, the storage's overhead per trial, a kill drill, and the sampler's
cost per trial at 1k and 5k trials.

    OMP_NUM_THREADS=1 .venv/bin/python bench/scaleout.py --out bench/results/scaleout.json [--quick]

Everything runs on a tiny 3-layer model (trained for 3 steps) with a synthetic latency predictor
(--no-verify), so a trial is cheap and the numbers show the overhead of the study machinery, not
the evaluation. Needs PostgreSQL 15 (/usr/lib/postgresql/15/bin) and runs it as a throwaway server
on 127.0.0.1 (as the `postgres` user when run as root), like the tests.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))


def _conftest():
    spec = importlib.util.spec_from_file_location("scaleout_conftest", REPO / "tests" / "search" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def setup(root: Path) -> dict:
    from tinymodels import save_hf_model, tiny_bert_config, write_sst2_like

    from dynasearch.cli import main

    cf = _conftest()
    base = save_hf_model(root / "base", tiny_bert_config())
    data = write_sst2_like(root / "data", n_train=64, n_dev=24)
    run = root / "run"
    assert (
        main(
            [
                "train",
                "--model",
                str(base),
                "--task",
                "sst2",
                "--data-dir",
                str(data),
                "--out",
                str(run),
                "--max-steps",
                "3",
                "--max-seq-length",
                "32",
                "--batch-size",
                "16",
            ]
        )
        == 0
    )
    pred = cf.fit_synthetic_predictor(base, root / "predictor")
    slow = write_sst2_like(root / "slow", n_train=1, n_dev=600, seed=5) / "dev.tsv"
    return {"run": run, "predictor": pred, "slow_dev": slow}


def worker(sx: dict, out: Path, url: str, study: str, trials: int, *extra: str) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "dynasearch",
        "search",
        str(sx["run"]),
        "--predictor",
        str(sx["predictor"]),
        "--out",
        str(out),
        "--storage",
        url,
        "--study",
        study,
        "--trials",
        str(trials),
        "--no-verify",
        "--quiet",
        *extra,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def study_stats(url: str, study: str) -> dict:
    import optuna
    import sqlalchemy as sa
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    s = optuna.load_study(study_name=study, storage=url)
    complete = [t for t in s.trials if t.state == TrialState.COMPLETE]
    states: dict[str, int] = {}
    for t in s.trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    span = (max(t.datetime_complete for t in complete) - min(t.datetime_start for t in complete)).total_seconds()
    e = sa.create_engine(url)
    with e.connect() as c:
        keys = [r[0] for r in c.execute(sa.text("SELECT key FROM dynasearch_evaluations"))]
    e.dispose()
    failed = [t for t in s.trials if t.state == TrialState.FAIL]
    lost = [t.number for t in failed if not any(r.system_attrs.get("failed_trial") == t.number for r in complete)]
    return {
        "complete": len(complete),
        "states": states,
        "span_s": round(span, 2),
        "trials_per_min": round(60 * len(complete) / span, 1) if span else None,
        "evaluations": len(keys),
        "evaluated_twice": len(keys) - len(set(keys)),
        "failed_not_retried": lost,
    }


def new_database(admin_url: str, name: str) -> str:
    import sqlalchemy as sa

    e = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with e.connect() as c:
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    e.dispose()
    return admin_url.rsplit("/", 1)[0] + "/" + name


def throughput(sx: dict, pg_url: str, root: Path, workers: tuple[int, ...], trials: int) -> list[dict]:
    rows = []
    for backend in ("postgresql", "sqlite"):
        for w in workers:
            name = f"tp_{backend}_{w}"
            url = new_database(pg_url, name) if backend == "postgresql" else f"sqlite:///{root / (name + '.db')}"
            t0 = time.perf_counter()
            procs = [worker(sx, root / name / f"w{i}", url, "bench", trials) for i in range(w)]
            errs = [p.communicate()[1] for p in procs]
            wall = time.perf_counter() - t0
            bad = [e[-500:] for p, e in zip(procs, errs) if p.returncode != 0]
            st = study_stats(url, "bench")
            rows.append(
                {"backend": backend, "workers": w, "trials": trials, "wall_s": round(wall, 1), **st, "errors": bad}
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def storage_overhead(pg_url: str, root: Path, n: int) -> list[dict]:
    """ms per trial of a synthetic trial that makes our objective's storage calls (9 categorical
    suggestions, 5 user attributes, one constraint, two values), RandomSampler, heartbeat on, in
    memory vs SQLite vs PostgreSQL; the difference to in-memory is the storage's cost."""
    import warnings

    import optuna

    from search.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore")

    def objective(trial):
        for i in range(3):
            trial.suggest_categorical(f"l{i}_keep", [True, False])
            trial.suggest_categorical(f"l{i}_heads", [0, 1, 2, 3, 4])
            trial.suggest_categorical(f"l{i}_ffn", [0, 16, 32, 48, 64])
        trial.set_constraint("latency", random.random() - 0.5)
        for k in ("key", "subnet", "predicted_ms", "feasible", "cache_hit"):
            trial.set_user_attr(k, "x")
        return random.random(), random.random()

    out = []
    for name, make in (
        ("memory", lambda: None),
        ("sqlite", lambda: open_storage(f"sqlite:///{root / 'overhead.db'}", heartbeat_interval=30)),
        ("postgresql", lambda: open_storage(new_database(pg_url, "overhead"), heartbeat_interval=30)),
    ):
        storage = make()
        study = optuna.create_study(
            storage=storage, directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0)
        )
        study.optimize(objective, n_trials=5)  # warm-up
        t0 = time.perf_counter()
        study.optimize(objective, n_trials=n)
        ms = 1000 * (time.perf_counter() - t0) / n
        out.append({"storage": name, "ms_per_trial": round(ms, 2)})
        print(json.dumps(out[-1]), flush=True)
    base = out[0]["ms_per_trial"]
    for r in out:
        r["overhead_ms"] = round(r["ms_per_trial"] - base, 2)
    return out


def kill_drill(sx: dict, pg_url: str, root: Path, trials: int, every_s: float, workers: int = 4) -> dict:
    """`workers` workers on one PostgreSQL study; every `every_s` one is SIGKILLed and restarted.
    Against the same study undisturbed."""
    extra = ("--heartbeat", "2", "--dev-file", str(sx["slow_dev"]), "--max-seq-length", "32")
    res = {}
    for mode in ("undisturbed", "killed"):
        url = new_database(pg_url, f"drill_{mode}")
        t0 = time.perf_counter()
        procs = [worker(sx, root / f"drill_{mode}" / f"w{i}", url, "drill", trials, *extra) for i in range(workers)]
        kills, nxt, k = 0, t0 + every_s, 0
        while any(p.poll() is None for p in procs):
            time.sleep(0.2)
            if mode == "killed" and time.perf_counter() >= nxt:
                nxt += every_s
                i = k % workers
                k += 1
                if procs[i].poll() is None:
                    procs[i].send_signal(signal.SIGKILL)
                    procs[i].wait()
                    kills += 1
                    procs[i] = worker(sx, root / f"drill_{mode}" / f"w{i}r{k}", url, "drill", trials, *extra)
        wall = time.perf_counter() - t0
        errs = [p.stderr.read()[-300:] for p in procs if p.returncode != 0]
        res[mode] = {"wall_s": round(wall, 1), "kills": kills, **study_stats(url, "drill"), "errors": errs}
        print(json.dumps({mode: res[mode]}), flush=True)
    return res


def sampler_cost(sizes: tuple[int, ...], asks: int, n_layers: int = 12) -> list[dict]:
    """ms per ask+tell of NSGA-II and TPE (as `make_sampler` builds them) on an in-memory study
    already holding N completed trials of a BERT-base-like space (12 layers x keep/heads/FFN),
    synthetic objectives."""
    import warnings

    import optuna

    from search.study import make_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore")
    heads, ffn = [0, 3, 6, 9, 12], [0, 768, 1536, 2304, 3072]
    dists = {}
    for i in range(n_layers):
        dists[f"l{i}_keep"] = optuna.distributions.CategoricalDistribution([True, False])
        dists[f"l{i}_heads"] = optuna.distributions.CategoricalDistribution(heads)
        dists[f"l{i}_ffn"] = optuna.distributions.CategoricalDistribution(ffn)
    rng = random.Random(0)

    def synth(params):
        size = sum(
            params[f"l{i}_heads"] / 12 + params[f"l{i}_ffn"] / 3072 for i in range(n_layers) if params[f"l{i}_keep"]
        )
        return 80 + size - 0.02 * size * size + rng.gauss(0, 0.3), 1 + size

    out = []
    for n in sizes:
        for name in ("nsga2", "tpe"):
            study = optuna.create_study(directions=["maximize", "minimize"], sampler=make_sampler(name, 0, n))
            fill = []
            for _ in range(n):
                p = {k: rng.choice(d.choices) for k, d in dists.items()}
                v = synth(p)
                fill.append(
                    optuna.trial.create_trial(
                        params=p, distributions=dists, values=list(v), system_attrs={"constraints:latency": v[1] - 10.0}
                    )
                )
            study.add_trials(fill)
            t0 = time.perf_counter()
            for _ in range(asks):
                t = study.ask()
                p = {k: t.suggest_categorical(k, list(d.choices)) for k, d in dists.items()}
                v = synth(p)
                t.set_constraint("latency", v[1] - 10.0)
                study.tell(t, list(v))
            ms = 1000 * (time.perf_counter() - t0) / asks
            out.append({"sampler": name, "trials_in_study": n, "ms_per_trial": round(ms, 1), "asks": asks})
            print(json.dumps(out[-1]), flush=True)
    return out


def fingerprint() -> dict:
    cpu = ""
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    import optuna
    import sqlalchemy

    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit,
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_avg_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "optuna": optuna.__version__,
        "sqlalchemy": sqlalchemy.__version__,
        "postgresql": "15 (Debian), fsync off",
        "platform": platform.platform(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "scaleout.json"))
    ap.add_argument("--quick", action="store_true", help="fewer trials (a shared machine)")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: throughput,overhead,drill,sampler")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    cf = _conftest()
    res: dict = {"machine": fingerprint()}
    root = Path(tempfile.mkdtemp(prefix="dynasearch-scaleout-"))
    server = cf.PostgresServer()
    server.start()
    try:
        sx = setup(root)
        q = args.quick
        if "throughput" not in skip:
            res["throughput"] = throughput(sx, server.url, root, (1, 2, 4), 40 if q else 100)
        if "overhead" not in skip:
            res["overhead"] = storage_overhead(server.url, root, 100 if q else 300)
        if "drill" not in skip:
            res["kill_drill"] = kill_drill(sx, server.url, root, 100, 30.0)
        if "sampler" not in skip:
            res["sampler"] = sampler_cost((1000, 5000), 5 if q else 20)
        res["machine"]["load_avg_at_end"] = os.getloadavg()
    finally:
        server.cleanup()
    Path(args.out).write_text(json.dumps(res, indent=1, default=str) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
