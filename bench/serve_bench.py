"""The serving benchmark (issue 24, item 8): a bundle's front served dynamically against every front
config served statically, live over HTTP and in the simulator, on the same seeded schedules.

Setting: onnxruntime with one inference thread pinned to core 0 (the server's model thread), the
server's event loop and the load generator on core 1; run ALONE (nothing else busy on the machine).

    .venv/bin/python bench/serve_bench.py --bundle BUNDLE --work runs/bench-serve [--seconds 30]

Phases (each resumable: a finished step's JSON under WORK is kept and skipped on the next run):
1. calibrate: the bundle is copied to WORK/bundle and a dynamic server started once there calibrates
   its latency table on core 0 (cached; every later dynamic start reads the cache). SLO = 2 x the
   full (most accurate) config's calibrated batch-1 latency at the model's length (the length its
   search measured at).
2. capacity: each config's capacity = the highest Poisson rate at which it, served statically with
   the server's batching, keeps >= 99% SLO attainment: bisection in the simulator on the calibrated
   table and the report examples' real token lengths; then one 60 s live run of it at that rate.
3. live: schedules low (50% of the full config's capacity), high (min(2x full, 70% of the fastest's)),
   step (low, high, low) and bursts (low with short high bursts), each for --seconds; every front config
   statically once (seed 0); dynamic --repeats times (seeds 0..); the best static in hindsight per
   schedule (the most accurate config holding >= 99% on it) --repeats times. Every run's requests
   carry the bundle's report examples in the seeded order of its seed (paired across modes).
4. http: 300 sequential requests to the static full config: the client's latency against the
   server's model time and its own time (the HTTP path's cost); the policy's decision time with
   1,000 requests queued (core 0); the servers' resident memory (dynamic, K models, against static full).
5. report: bench/results/serve.md, with the simulator's column for every live run and every target.

Imports are inside the functions: the server child pins its threads before it imports the runtime, and
the parent loads each phase's modules only when that phase runs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

CORE_MODEL, CORE_LOOP = 0, 1
TARGET = 0.99  # attainment a config must keep at its capacity


# ----------------------------------------------------------------------------------- server child
def child(argv: list[str]) -> None:
    """`serve_bench.py _serve BUNDLE SLO PORT [STATIC]`: the product's `serve`, with the model thread
    pinned to CORE_MODEL and the event loop to CORE_LOOP (calibration runs on CORE_MODEL)."""
    bundle, slo, port = argv[0], float(argv[1]), int(argv[2])
    static = argv[3] if len(argv) > 3 else None
    os.sched_setaffinity(0, {CORE_LOOP})
    from dynasearch_runtime import serve_bundle

    pinned: set[int] = set()
    run = serve_bundle.BundleEngine.run

    def pinned_run(self, *args):
        tid = threading.get_native_id()
        if tid not in pinned:  # executor threads start on the loop's core: move each to the model's once
            os.sched_setaffinity(0, {CORE_MODEL})
            pinned.add(tid)
        return run(self, *args)

    prepare = serve_bundle.prepare_policy

    def pinned_prepare(*a, **kw):
        os.sched_setaffinity(0, {CORE_MODEL})
        try:
            return prepare(*a, **kw)
        finally:
            os.sched_setaffinity(0, {CORE_LOOP})

    serve_bundle.BundleEngine.run = pinned_run
    serve_bundle.prepare_policy = pinned_prepare
    serve_bundle.serve(bundle, slo, port=port, static=static)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """A server child, started and ready (or an error with its output)."""

    def __init__(self, bundle: Path, slo_ms: float, static: str | None, log: Path) -> None:
        import httpx

        self.port = free_port()
        cmd = [sys.executable, __file__, "_serve", str(bundle), repr(slo_ms), str(self.port)]
        cmd += [static] if static else []
        self.log = log
        self.proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, cwd=REPO)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited {self.proc.returncode}: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise SystemExit(f"server not ready in 600 s: {log.read_text()[-2000:]}")

    def rss_mib(self) -> dict[str, float]:
        out = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS", "VmHWM")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024.0
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ----------------------------------------------------------------------------------------- inputs
def load_inputs(work: Path):
    """(policy of the dynamic front on the cached table, front configs, report examples' token lengths)."""
    from dynasearch_runtime.serve_bundle import BundleEngine, prepare_policy

    def refuse(msg):
        raise SystemExit(f"the calibration cache is missing ({msg}): run the calibrate phase first")

    engine = BundleEngine(str(work / "bundle"))
    policy = prepare_policy(engine, 1000.0, progress=refuse)
    return engine, policy


def report_lengths(engine, bundle: Path) -> list[int]:
    from dynasearch.loadtest import report_examples

    texts, pairs, _labels = report_examples(str(bundle), None)
    lengths = []
    for i in range(len(texts)):
        n, _ = engine.length([texts[i]], None if pairs is None else [pairs[i]])
        lengths.append(min(n, engine.max_length))
    return lengths


def arrivals(schedule, seed: int, lengths: list[int]):
    """The live run's requests as the simulator's: the same Poisson draw as `dynasearch loadtest`
    (poisson(schedule, seed)) and each request's length that of the report example it carries."""
    from dynasearch_runtime.policy import Request
    from dynasearch_runtime.simulator import poisson

    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)  # loadtest's order of the report examples
    reqs = poisson(schedule, seed=seed, texts=1)
    return [Request(r.id, r.arrival_s, 1, lengths[order[r.id % len(order)]]) for r in reqs]


def static_policy(policy, key: str, slo_ms: float):
    from dynasearch_runtime.calibrate import restrict
    from dynasearch_runtime.policy import MARGIN_SHARE, Policy

    # the server's own policy: its default margin
    return Policy(restrict(policy.table, [key]), slo_ms, overload=policy.overload, margin_ms=MARGIN_SHARE * slo_ms)


def dynamic_policy(policy, slo_ms: float):
    from dynasearch_runtime.policy import MARGIN_SHARE, Policy

    return Policy(policy.table, slo_ms, overload=policy.overload, margin_ms=MARGIN_SHARE * slo_ms)


def mode_policy(policy, mode: str, slo_ms: float):
    """A fresh policy (its online correction at 1) for a mode: "dynamic" or a config's key (static)."""
    return dynamic_policy(policy, slo_ms) if mode == "dynamic" else static_policy(policy, mode, slo_ms)


def simulate(policy, schedule, seed, lengths) -> dict[str, float]:
    from dynasearch_runtime.simulator import simulate as sim

    out = sim(policy, arrivals(schedule, seed, lengths))
    acc = {k: v / 100.0 for k, v in policy.table.accuracy.items()}
    return {
        "attainment": out.attainment(),
        "effective_accuracy": out.effective_accuracy(acc),
        "served_accuracy": out.served_accuracy(acc),
        "p99_ms": out.percentile_ms(99),
        "switches": out.switches(),
    }


def capacity(policy, key, slo_ms, lengths) -> float:
    """Highest Poisson rate (requests/s, one text each) keeping >= TARGET attainment, served statically:
    the simulator's bisection, lengths drawn from the report examples' (two seeds, >= 60 s and 3,000 requests)."""
    from dynasearch_runtime.simulator import capacity as bisect

    return bisect(
        lambda: static_policy(policy, key, slo_ms),
        seconds=60.0,
        seeds=(0, 1),
        target=TARGET,
        length=lambda rng: rng.choice(lengths),
        min_requests=3000,
    )


# ------------------------------------------------------------------------------------------ phases
def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def read(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def phase_calibrate(work: Path, bundle: Path) -> dict:
    from dynabert.io import write_json

    out = work / "calibrate.json"
    if out.exists():
        return read(out)
    if not (work / "bundle").exists():
        shutil.copytree(bundle, work / "bundle", ignore=shutil.ignore_patterns(".serving"))
    log("calibrating the dynamic front on core 0 (a server start)")
    t0 = time.monotonic()
    s = Served(work / "bundle", 1000.0, None, work / "calibrate.log")
    took = time.monotonic() - t0
    s.stop()
    engine, policy = load_inputs(work)
    t = policy.table
    full = t.by_accuracy[0]
    slo = 2.0 * t.latency(full, 1, t.buckets[-1])
    doc = {
        "slo_ms": slo,
        "full": full,
        "fastest": t.fastest,
        "start_s": took,
        "accuracy": t.accuracy,
        "cells": [[k, b, L, v] for (k, b, L), v in sorted(t.ms.items())],
        "buckets": list(t.buckets),
    }
    write_json(out, doc)
    return doc


def phase_capacity(
    work: Path, cal: dict, lengths: list[int], policy, seconds_confirm: float, max_live_rate: float
) -> dict:
    from dynabert.io import write_json
    from dynasearch.loadtest import LoadtestConfig, loadtest

    out = work / "capacity.json"
    doc = read(out) or {"sim": {}, "live": {}}
    slo = cal["slo_ms"]
    for key in policy.table.by_accuracy:
        if key not in doc["sim"]:
            doc["sim"][key] = capacity(policy, key, slo, lengths)
            log(f"capacity of {key} in the simulator: {doc['sim'][key]:.1f}/s")
            write_json(out, doc)
    for key in policy.table.by_accuracy:
        if key in doc["live"]:
            continue
        rate = min(doc["sim"][key], max_live_rate)  # above it the generator's core, not the config, is measured
        s = Served(work / "bundle", slo, key, work / f"capacity-{key}.log")
        try:
            cfg = LoadtestConfig(url=s.url, bundle=str(work / "bundle"), schedule=((seconds_confirm, rate),), seed=0)
            r = loadtest(cfg)
        finally:
            s.stop()
        r.pop("rows", None)
        r["rate"] = rate
        r["sim"] = simulate(static_policy(policy, key, slo), [(seconds_confirm, rate)], 0, lengths)
        doc["live"][key] = r
        log(f"capacity of {key} live at {rate:.1f}/s: attainment {100 * r['attainment']:.2f}%")
        write_json(out, doc)
    return doc


def schedules(cap: dict, full: str, fastest: str, seconds: float) -> dict[str, list[tuple[float, float]]]:
    low = 0.5 * cap["sim"][full]
    high = min(2.0 * cap["sim"][full], 0.7 * cap["sim"][fastest])
    third = seconds / 3.0
    burst = []
    while sum(s for s, _ in burst) < seconds - 1e-9:
        burst += [(min(4.0, seconds - sum(s for s, _ in burst)), low)]
        if sum(s for s, _ in burst) < seconds - 1e-9:
            burst += [(min(1.0, seconds - sum(s for s, _ in burst)), high)]
    return {
        "low": [(seconds, low)],
        "high": [(seconds, high)],
        "step": [(third, low), (third, high), (third, low)],
        "bursts": burst,
    }


def live_run(work: Path, name: str, slo: float, static: str | None, schedule, seed: int) -> dict:
    """One live run (kept under WORK/runs with its rows)."""
    from dynabert.io import write_json
    from dynasearch.loadtest import LoadtestConfig, loadtest

    path = work / "runs" / f"{name}.json"
    if path.exists():
        return read(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    s = Served(work / "bundle", slo, static, work / "runs" / f"{name}.log")
    try:
        cfg = LoadtestConfig(url=s.url, bundle=str(work / "bundle"), schedule=tuple(schedule), seed=seed)
        r = loadtest(cfg, keep_rows=True)
        r["memory_mib"] = s.rss_mib()
    finally:
        s.stop()
    write_json(path, r)
    log(
        f"{name}: attainment {100 * r['attainment']:.2f}%, effective {100 * r['effective_accuracy']:.2f}%, "
        f"p99 {r['p99_ms']:.1f} ms, lag p99 {r['send_lag_p99_ms']:.2f} ms{' UNRELIABLE' if r['unreliable'] else ''}"
    )
    return r


def phase_live(work: Path, cal: dict, cap: dict, policy, seconds: float, repeats: int) -> dict:
    slo = cal["slo_ms"]
    plan = schedules(cap, cal["full"], cal["fastest"], seconds)
    keys = list(policy.table.by_accuracy)
    runs: dict[str, dict] = {}
    for sched, phases in plan.items():
        for seed in range(repeats):
            runs[f"{sched}-dynamic-s{seed}"] = live_run(work, f"{sched}-dynamic-s{seed}", slo, None, phases, seed)
        for key in keys:
            runs[f"{sched}-{key}-s0"] = live_run(work, f"{sched}-{key}-s0", slo, key, phases, 0)
        best = best_static(runs, sched, keys)
        for seed in range(1, repeats):
            runs[f"{sched}-{best}-s{seed}"] = live_run(work, f"{sched}-{best}-s{seed}", slo, best, phases, seed)
    return {"plan": plan, "runs": runs}


def best_static(runs: dict, sched: str, keys: list[str]) -> str:
    """The most accurate config (keys: most accurate first) holding >= TARGET on the schedule's seed-0 run;
    the one with the highest attainment when none holds."""
    for key in keys:
        if runs[f"{sched}-{key}-s0"]["attainment"] >= TARGET:
            return key
    return max(keys, key=lambda k: runs[f"{sched}-{k}-s0"]["attainment"])


def phase_http(work: Path, cal: dict, policy) -> dict:
    import httpx

    from dynabert.io import write_json
    from dynasearch.loadtest import report_examples

    out = work / "http.json"
    if out.exists():
        return read(out)
    texts, _pairs, _ = report_examples(str(work / "bundle"), None)
    # a loose SLO: this measures the HTTP path on one request at a time, not the policy (nothing is shed)
    s = Served(work / "bundle", 1000.0, cal["full"], work / "http.log")
    rows = []
    try:
        with httpx.Client(timeout=30) as c:
            for i in range(320):
                body = {
                    "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [texts[i % len(texts)]]}]
                }
                t0 = time.monotonic()
                r = c.post(f"{s.url}/v2/models/dynabert/infer", json=body)
                ms = (time.monotonic() - t0) * 1000.0
                if r.status_code != 200:
                    raise SystemExit(f"request {i} to the static full server: HTTP {r.status_code} {r.text}")
                p = r.json()["parameters"]
                if i >= 20:  # warm-up
                    rows.append((ms, p["model_ms"], p["server_ms"]))
        static_mem = s.rss_mib()
    finally:
        s.stop()
    d = Served(work / "bundle", cal["slo_ms"], None, work / "http-dynamic.log")
    try:
        dyn_mem = d.rss_mib()
    finally:
        d.stop()
    doc = {
        "client_ms": [r[0] for r in rows],
        "model_ms": [r[1] for r in rows],
        "server_ms": [r[2] for r in rows],
        "memory_static_full_mib": static_mem,
        "memory_dynamic_mib": dyn_mem,
        "models": len(policy.table.accuracy),
    }
    write_json(out, doc)
    return doc


def phase_decision(work: Path, cal: dict, policy) -> dict:
    """The policy's decision time with 1,000 one-text requests queued, on the model's core (3 x 5,000)."""
    from dynabert.io import write_json
    from dynasearch_runtime.policy import Request

    out = work / "decision.json"
    if out.exists():
        return read(out)
    os.sched_setaffinity(0, {CORE_MODEL})
    pol = dynamic_policy(policy, cal["slo_ms"])
    queue = [Request(i, 0.0 + i * 1e-5, 1, 16 + i % 48) for i in range(1000)]
    times = []
    for _rep in range(3):
        for _ in range(5000):
            t0 = time.perf_counter_ns()
            pol.decide(0.001, queue)
            times.append((time.perf_counter_ns() - t0) / 1000.0)
    os.sched_setaffinity(0, {CORE_LOOP})
    times.sort()
    doc = {"decision_us_p50": times[len(times) // 2], "decision_us_p99": times[int(0.99 * len(times))]}
    write_json(out, doc)
    return doc


# ------------------------------------------------------------------------------------------ report
def effective(rows, slo: float) -> dict[int, float]:
    """request index -> correct within the SLO (0/1)."""
    return {r["i"]: float(r["status"] == 200 and r["latency_ms"] <= slo and r["correct"] == r["texts"]) for r in rows}


def paired_interval(pairs: list[tuple[int, float]], n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(mean difference, 2.5%, 97.5%) of per-request differences, resampling TEXTS (a text repeats across
    requests and runs: its requests move together)."""
    import numpy as np

    by_text: dict[int, list[float]] = {}
    for text, d in pairs:
        by_text.setdefault(text, []).append(d)
    sums = np.array([sum(v) for v in by_text.values()])
    counts = np.array([len(v) for v in by_text.values()])
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(sums), size=(n_boot, len(sums)))
    boots = sums[pick].sum(1) / counts[pick].sum(1)
    return float(sums.sum() / counts.sum()), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def compare(runs: dict, a_names: list[str], b_names: list[str], slo: float, metric: str = "effective"):
    """Paired difference a - b over (seed, request) pairs; a and b ran the same seeds."""
    pairs = []
    for a_name, b_name in zip(a_names, b_names):
        a, b = runs[a_name], runs[b_name]
        if metric == "effective":
            ea, eb = effective(a["rows"], slo), effective(b["rows"], slo)
        else:  # served: correct, late or not (shed = wrong)
            ea = {r["i"]: float(r["status"] == 200 and r["correct"] == r["texts"]) for r in a["rows"]}
            eb = {r["i"]: float(r["status"] == 200 and r["correct"] == r["texts"]) for r in b["rows"]}
        text = {r["i"]: r["picks"][0] for r in a["rows"]}
        pairs += [(text[i], 100.0 * (ea[i] - eb[i])) for i in ea if i in eb]
    return paired_interval(pairs)


def phase_report(work: Path, out_md: Path, cal, cap, live, http, policy, lengths, seconds, repeats) -> None:
    sys.path.insert(0, str(REPO / "bench"))
    from perlayer import machine

    from dynabert.io import atomic_file
    from dynabert.tables import markdown_table

    slo = cal["slo_ms"]
    t = policy.table
    keys = list(t.by_accuracy)
    acc = t.accuracy
    runs = live["runs"]
    plan = live["plan"]
    m = machine()
    short = {k: k[:6] for k in keys}
    L: list[str] = []
    add = L.append
    add("# Serving benchmark: dynamic sub-network switching against every static config")
    add("")
    add(
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}; commit {m['commit']}, {m['date']}. "
        "Script: `bench/serve_bench.py` (run alone). Bundle: the demo model (tweets, packaged MiniLM-L6, "
        "`dynasearch demo`) exported with `export --bundle --front 6`; its 6 front configs, accuracy on the "
        "1,000 held-out report examples."
    )
    add("")
    add(
        f"Setting: onnxruntime, one inference thread pinned to core {CORE_MODEL}; the server's event loop and the "
        f"load generator (`dynasearch loadtest`, open-loop Poisson, one text per request) on core {CORE_LOOP}. "
        f"SLO = 2 x the full config's calibrated batch-1 latency at length {t.buckets[-1]} = **{slo:.2f} ms**. "
        f"Overload mode: {policy.overload}; SLO margin (batches planned to end this much before the deadline: "
        f"the server's default, a tenth of the SLO) {dynamic_policy(policy, slo).margin_ms:.2f} ms. Schedules of {seconds:g} s; dynamic and the best static {repeats} "
        "times each (seeds 0..), every other static config once (seed 0); a run's requests carry the report "
        "examples in its seed's order, so runs of one seed are paired request by request."
    )
    add("")
    add("## Calibrated latency table (ms, batch 1 and 16 per length bucket) and capacities")
    add("")
    rows = []
    for k in keys:
        cells = [f"{t.latency(k, 1, b):.2f} / {t.latency(k, t.max_batch, b):.1f}" for b in t.buckets]
        lv = cap["live"].get(k, {})
        rows.append(
            [
                short[k],
                f"{acc[k]:.1f}",
                *cells,
                f"{cap['sim'][k]:.1f}",
                (f"{lv['rate']:.0f}/s: " if lv else "")
                + f"{100 * lv.get('attainment', float('nan')):.2f}"
                + (" (unreliable)" if lv.get("unreliable") else ""),
                f"{100 * lv['sim']['attainment']:.2f}" if lv else "",
            ]
        )
    add(
        markdown_table(
            [
                "config",
                "accuracy",
                *[f"len {b}" for b in t.buckets],
                "capacity (sim, /s)",
                "60 s live at min(capacity, max live rate): attainment %",
                "simulated %",
            ],
            rows,
        )
    )
    add("")
    add(
        f"full = `{short[cal['full']]}`, fastest = `{short[cal['fastest']]}`. Capacity: bisection on the Poisson rate "
        "in the simulator (60 s, seeds 0 and 1, the report examples' token lengths), confirmed by one 60 s live run."
    )
    add("")
    add("## Schedules")
    add("")
    add(
        markdown_table(
            ["schedule", "phases (rate/s for seconds)"],
            [[s, ", ".join(f"{r:.1f} for {d:g}" for d, r in p)] for s, p in plan.items()],
        )
    )
    add("")
    add("## Live runs (and the simulator's column for the same arrivals)")
    add("")
    rows = []
    for sched, phases in plan.items():
        for mode in ["dynamic", *keys]:
            names = sorted(n for n in runs if n.startswith(f"{sched}-{mode}-s"))
            if not names:
                continue
            rs = [runs[n] for n in names]
            seeds = [int(n.rsplit("-s", 1)[1]) for n in names]
            sims = [simulate(mode_policy(policy, mode, slo), phases, s, lengths) for s in seeds]

            def mean(field: str, rs=rs) -> float:
                return statistics.mean(r[field] for r in rs)

            rows.append(
                [
                    sched,
                    "dynamic" if mode == "dynamic" else f"static {short[mode]} ({acc[mode]:.1f})",
                    len(rs),
                    f"{100 * mean('attainment'):.2f}",
                    f"{100 * statistics.mean(s['attainment'] for s in sims):.2f}",
                    f"{100 * mean('effective_accuracy'):.2f}",
                    f"{100 * mean('served_accuracy'):.2f}",
                    f"{mean('p50_ms'):.1f} / {mean('p99_ms'):.1f}",
                    f"{mean('shed'):.0f}",
                    f"{mean('switches'):.0f}",
                    f"{max(r['send_lag_p99_ms'] for r in rs):.2f}" + (" !" if any(r["unreliable"] for r in rs) else ""),
                ]
            )
    add(
        markdown_table(
            [
                "schedule",
                "mode",
                "runs",
                "attainment %",
                "simulated %",
                "effective acc %",
                "served acc %",
                "p50 / p99 ms",
                "shed",
                "switches",
                "gen lag p99 ms",
            ],
            rows,
        )
    )
    add("")
    add(
        "Effective accuracy: answers correct AND within the SLO / requests; served: correct answers / requests "
        "(late ones count, shed ones are wrong). '!': the generator's send-lag p99 exceeded 10% of the SLO."
    )
    add("")
    # ---------------------------------------------------------------------------------- targets
    add("## Targets")
    add("")
    trows = []
    fastest_cap = cap["sim"][cal["fastest"]]
    for sched, phases in plan.items():
        peak = max(r for _, r in phases)
        if peak <= 0.7 * fastest_cap + 1e-9:
            names = [n for n in runs if n.startswith(f"{sched}-dynamic-s")]
            worst = min(runs[n]["attainment"] for n in names)
            trows.append(
                [
                    f"dynamic >= 99% attainment on {sched} (peak {peak:.0f}/s <= 70% of the fastest's "
                    f"{fastest_cap:.0f}/s)",
                    f"min over {len(names)} runs {100 * worst:.2f}%",
                    "met" if worst >= TARGET else "MISSED",
                ]
            )
    full_high = runs[f"high-{cal['full']}-s0"]["attainment"]
    trows.append(
        ["static full below 90% at high load", f"{100 * full_high:.2f}%", "met" if full_high < 0.90 else "MISSED"]
    )
    for sched in ("step", "bursts"):
        best = best_static(runs, sched, keys)
        a = [f"{sched}-dynamic-s{s}" for s in range(repeats)]
        b = [f"{sched}-{best}-s{s}" for s in range(repeats)]
        d, lo, hi = compare(runs, a, b, slo)
        trows.append(
            [
                f"{sched}: dynamic's effective accuracy above the best static in hindsight "
                f"(`{short[best]}`, {acc[best]:.1f}), paired 95% interval resampling texts",
                f"{d:+.2f} [{lo:+.2f}, {hi:+.2f}] points",
                "met" if lo > 0 else "MISSED",
            ]
        )
    a = ["low-dynamic-s0"]
    b = [f"low-{cal['full']}-s0"]
    d, lo, hi = compare(runs, a, b, slo, metric="served")
    trows.append(
        [
            "constant low: dynamic's served accuracy within 0.5 point of the full model's (seed 0, paired)",
            f"{d:+.2f} [{lo:+.2f}, {hi:+.2f}] points",
            "met" if d >= -0.5 else "MISSED",
        ]
    )
    trows.append(
        [
            "policy decision p99 < 50 us with 1,000 queued (core 0)",
            f"p50 {http['decision_us_p50']:.1f} us, p99 {http['decision_us_p99']:.1f} us",
            "met" if http["decision_us_p99"] < 50 else "MISSED",
        ]
    )
    over = statistics.median(c - mm for c, mm in zip(http["client_ms"], http["model_ms"]))
    over_srv = statistics.median(c - s for c, s in zip(http["client_ms"], http["server_ms"]))
    trows.append(
        [
            "the HTTP path adds < 1.5 ms p50 over the model's own time (300 sequential requests, static full)",
            f"client - model p50 {over:.2f} ms (client - server {over_srv:.2f} ms; model p50 "
            f"{statistics.median(http['model_ms']):.2f} ms)",
            "met" if over < 1.5 else "MISSED",
        ]
    )
    gaps = []
    for name, r in runs.items():
        sched, rest = name.split("-", 1)
        mode, seed = rest.rsplit("-s", 1)
        sim = simulate(mode_policy(policy, mode, slo), plan[sched], int(seed), lengths)
        gaps.append((abs(100 * (sim["attainment"] - r["attainment"])), name))
    worst_gap = max(gaps)
    per_sched = {}
    for g, name in gaps:
        per_sched.setdefault(name.split("-", 1)[0], []).append(g)
    trows.append(
        [
            "simulator's attainment within 2 points of the measured, each schedule",
            "; ".join(f"{s}: max {max(v):.2f}" for s, v in per_sched.items()) + f" (worst: {worst_gap[1]})",
            "met" if worst_gap[0] <= 2 else "MISSED",
        ]
    )
    add(markdown_table(["target", "measured", ""], trows))
    add("")
    add("## Memory")
    add("")
    add(
        markdown_table(
            ["server", "RSS MiB", "peak RSS MiB"],
            [
                [
                    f"dynamic ({http['models']} front models, one onnxruntime session each)",
                    f"{http['memory_dynamic_mib']['VmRSS']:.0f}",
                    f"{http['memory_dynamic_mib']['VmHWM']:.0f}",
                ],
                [
                    "static full (one model)",
                    f"{http['memory_static_full_mib']['VmRSS']:.0f}",
                    f"{http['memory_static_full_mib']['VmHWM']:.0f}",
                ],
            ],
        )
    )
    add("")
    text = "\n".join(L) + "\n"
    with atomic_file(out_md) as f:
        f.write(text)
    log(f"wrote {out_md}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        child(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "bench-serve")
    ap.add_argument("--seconds", type=float, default=30.0, help="each schedule's length")
    ap.add_argument("--confirm-seconds", type=float, default=60.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--max-live-rate",
        type=float,
        default=300.0,
        help="a capacity above this is confirmed live at this rate (the generator and the event loop share one core)",
    )
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "serve.md")
    ap.add_argument("--until", choices=("calibrate", "capacity", "live", "http", "report"), default="report")
    args = ap.parse_args()
    if os.cpu_count() < 2:
        raise SystemExit("the benchmark pins the model and the event loop to two cores; this machine has one")
    os.sched_setaffinity(0, {CORE_LOOP})
    args.work.mkdir(parents=True, exist_ok=True)
    cal = phase_calibrate(args.work, args.bundle)
    log(f"SLO {cal['slo_ms']:.2f} ms (full {cal['full']}, fastest {cal['fastest']})")
    engine, policy = load_inputs(args.work)
    lengths = report_lengths(engine, args.work / "bundle")
    del engine
    if args.until == "calibrate":
        return
    cap = phase_capacity(args.work, cal, lengths, policy, args.confirm_seconds, args.max_live_rate)
    if args.until == "capacity":
        return
    live = phase_live(args.work, cal, cap, policy, args.seconds, args.repeats)
    if args.until == "live":
        return
    http = phase_http(args.work, cal, policy)
    http.update(phase_decision(args.work, cal, policy))
    if args.until == "http":
        return
    phase_report(args.work, args.out, cal, cap, live, http, policy, lengths, args.seconds, args.repeats)


if __name__ == "__main__":
    main()
