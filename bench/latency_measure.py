"""Issue 4 benchmark, measuring part: every timing the report quotes is taken here.

Run every phase under the machine's exclusive lock (another benchmark shares the 2 vCPUs):
    bench/run_latency.sh      (takes the lock once for all phases, then writes the report)
Phases (each resumable: a killed phase re-run skips what its records hold):
    peak     peak fp32 matrix-multiply GFLOP/s of this machine (torch and numpy, 1 and 2 threads)
    single   packaged MiniLM-L6 shape, onnxruntime CPU and torch CPU, 1 and 2 threads, batch 1 and 8,
             seq 128: 9 layer-table configs + random per-layer configs (150 at batch 1, 80 at batch 8)
    repeat   the same 50 configs in two separate processes (`dynasearch measure`), both backends,
             1 and 2 threads, batch 1
    shapes   onnxruntime CPU 1 thread: 150 fitting measurements over 21 (batch, seq) pairs and 45
             held-out ones over 9 other pairs (batch 1-32, seq 16-512, batch*seq <= 2048)
Then `bench/latency_report.py` fits and writes bench/results/latency_issue4.md (no timing there).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# DYNASEARCH_BENCH_SMOKE=DIR: a few configs only, records under DIR (checks the script, quotes nothing).
SMOKE = os.environ.get("DYNASEARCH_BENCH_SMOKE")
DATA = (
    Path(SMOKE)
    if SMOKE
    else Path(os.environ.get("DYNASEARCH_BENCH_DATA", REPO / "bench" / "results" / "latency_records"))
)
CACHE = REPO / "bench" / ".cache" / "onnx"

# Sizes chosen so that all phases fit in about 45 minutes on 2 vCPUs (see the report).
N_B1 = 6 if SMOKE else 200  # random configs timed at batch 1 (at most 100 for fitting + 100 held out)
N_B8 = 3 if SMOKE else 80  # random configs timed at batch 8 (at most 50 for fitting + 30 held out)
N_HELD = 2 if SMOKE else 100  # the held-out end of the batch-1 pool
N_REPEAT = 2 if SMOKE else 50  # repeatability configs: the last ones of the pool
SEED = 1
CHUNK = 256  # configs alive and interleaved at once: every config of a setting (memory: one extracted model each)
SHAPE_BATCHES = (1, 2, 4, 8, 16, 32)
SHAPE_SEQS = (16, 32, 64, 128, 256, 512)
MAX_TOKENS = 2048  # batch * seq cap: batch 32 x seq 512 takes ~4 s per run on one core
# Fitting measurements across shapes (the target allows up to 300) and held-out ones per held-out pair.
N_SHAPES_FIT = 300
N_SHAPES_TEST_PER_PAIR = 5


def shape_and_pool():
    from dynabert.space import SearchSpace
    from predictors.measure import load_shape
    from predictors.samplers import layer_table_configs, uniform_configs

    shape = load_shape(None)
    space = SearchSpace.default(shape)
    return shape, layer_table_configs(space), uniform_configs(space, N_B1, SEED)


def protocol(batch_tokens: int):
    from predictors import Protocol

    # Every config's timed runs span at least 4 rounds over (up to) 100 configs alive at once, so slow
    # drift of this shared host hits all configs alike; long runs (batch 8) are capped by time.
    return Protocol(
        rel_ci=0.01,
        min_runs=8,
        min_visits=4,
        runs_per_visit=2,
        max_runs=30,
        max_seconds=2.0 if batch_tokens <= 128 else 1.5,
        warmup_max_seconds=1.0,
        rewarm_runs=1,
        chunk_size=CHUNK,
        seed=SEED,
    )


PEAK_CODE = r"""
import sys, time
lib, threads, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
import numpy as np
rng = np.random.default_rng(0)
a = rng.standard_normal((n, n), dtype=np.float32)
b = rng.standard_normal((n, n), dtype=np.float32)
if lib == "torch":
    import torch
    torch.set_num_threads(threads)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    f = lambda: torch.mm(ta, tb)
elif lib == "onnxruntime":
    import onnx, onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    g = helper.make_graph([helper.make_node("MatMul", ["A", "B"], ["C"])], "mm",
                          [helper.make_tensor_value_info("A", TensorProto.FLOAT, [n, n])],
                          [helper.make_tensor_value_info("C", TensorProto.FLOAT, [n, n])], [numpy_helper.from_array(b, "B")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    o = ort.SessionOptions(); o.intra_op_num_threads = threads; o.inter_op_num_threads = 1
    o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    s = ort.InferenceSession(m.SerializeToString(), o, providers=["CPUExecutionProvider"])
    f = lambda: s.run(None, {"A": a})
else:
    f = lambda: a @ b
for _ in range(3):
    f()
best = 1e9
t_end = time.perf_counter() + 4.0
for i in range(40):
    t = time.perf_counter(); f(); best = min(best, time.perf_counter() - t)
    if time.perf_counter() > t_end and i >= 8:
        break
print(2 * n ** 3 / best / 1e9)
"""


def phase_peak() -> None:
    """Peak fp32 matrix-multiply GFLOP/s at 1 and 2 threads: the best run of square products
    (1024 and 2048) through each library's own GEMM (torch, onnxruntime's MLAS, numpy's BLAS), each in
    a fresh process whose thread count is fixed before import (OpenBLAS and OpenMP read it at start)."""
    out: dict = {"matrix": [1024, 2048], "libraries": ["torch", "onnxruntime", "numpy"]}
    for threads in (1, 2):
        env = dict(
            os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads)
        )
        for lib in ("torch", "onnxruntime", "numpy"):
            best = 0.0
            for n in (1024, 2048):
                res = subprocess.run(
                    [sys.executable, "-c", PEAK_CODE, lib, str(threads), str(n)],
                    capture_output=True,
                    text=True,
                    env=env,
                    check=True,
                )
                best = max(best, float(res.stdout.strip()))
            out[f"{lib}_t{threads}"] = best
        out[f"peak_t{threads}"] = max(out[f"{lib}_t{threads}"] for lib in ("torch", "onnxruntime", "numpy"))
    out["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    DATA.mkdir(parents=True, exist_ok=True)
    (DATA / "peak.json").write_text(json.dumps(out, indent=2) + "\n")
    print(out)


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def phase_single(backends: tuple[str, ...] = ("onnxruntime", "torch")) -> None:
    from dynabert.subnet import SubnetConfig
    from predictors import BackendSettings, measure

    shape, layer, pool = shape_and_pool()
    path = DATA / "single.csv"
    for backend in backends:
        for batch, n in ((1, N_B1), (8, N_B8)):
            for threads in (1, 2):
                st = BackendSettings(backend=backend, threads=threads, batch=batch, seq_len=128)
                t0 = time.time()
                # ONE measuring run per setting: the layer-table configs, the random ones and (for achieved
                # GFLOP/s against the peak) the full model and the smallest grid point, all alive and
                # interleaved together, so machine drift hits all of them alike (split into chunks, the
                # 2-thread torch run once saw a 29% speed change between two chunks 80 s apart).
                grid = [SubnetConfig.full(shape), SubnetConfig.from_grid(shape, 0.25, 0.5)]
                subnets = layer + pool[:n] + grid
                labels = ["layer-table"] * len(layer) + ["uniform"] * n + ["grid"] * len(grid)
                measure(shape, subnets, st, path, protocol(batch * 128), sampler=labels, onnx_cache=CACHE)
                print(f"{backend} b{batch} t{threads}: {time.time() - t0:.0f} s", flush=True)


def phase_repeat(backends: tuple[str, ...] = ("onnxruntime", "torch")) -> None:
    _, _, pool = shape_and_pool()
    configs = pool[N_B1 - N_REPEAT :]  # the held-out end of the pool
    DATA.mkdir(parents=True, exist_ok=True)
    subnets = DATA / "repeat_configs.json"
    subnets.write_text(json.dumps([s.to_dict() for s in configs]) + "\n")
    exe = str(REPO / ".venv" / "bin" / "dynasearch")
    # DYNASEARCH_REPEAT_PAIR=k (k >= 2) takes another pair of runs into repeat{k}_run1/2.csv; the report lists every pair.
    pair = int(os.environ.get("DYNASEARCH_REPEAT_PAIR", "1"))
    stem = "repeat" if pair == 1 else f"repeat{pair}"
    for backend in backends:
        for run in (1, 2):
            # A separate process per run: nothing (sessions, caches, allocator state) is shared.
            cmd = [
                exe,
                "measure",
                "--out",
                str(DATA / f"{stem}_run{run}.csv"),
                "--subnets",
                str(subnets),
                "--backend",
                backend,
                "--threads",
                "1",
                "2",
                "--batch",
                "1",
                "--seq-len",
                "128",
                "--rel-ci",
                "0.01",
                "--min-runs",
                "8",
                "--min-visits",
                "4",
                "--runs-per-visit",
                "2",
                "--max-runs",
                "30",
                "--max-seconds",
                "2",
                "--chunk-size",
                str(CHUNK),
                "--seed",
                str(run),
                "--no-progress",
            ]
            if backend == "onnxruntime":
                cmd += ["--onnx-cache", str(CACHE)]
            t0 = time.time()
            subprocess.run(cmd, check=True)
            print(f"repeat run {run} {backend}: {time.time() - t0:.0f} s", flush=True)


def shape_split():
    pairs = [(b, s) for b in SHAPE_BATCHES for s in SHAPE_SEQS if b * s <= MAX_TOKENS]
    rng = random.Random(SEED)
    rng.shuffle(pairs)
    n_test = round(0.3 * len(pairs))
    return sorted(pairs[n_test:]), sorted(pairs[:n_test])


def phase_shapes() -> None:
    from predictors import BackendSettings, Protocol, measure

    shape, _, pool = shape_and_pool()
    train_pairs, test_pairs = shape_split()
    fit_configs, test_configs = pool[: N_B1 - N_HELD], pool[N_B1 - N_HELD :]
    rng = random.Random(SEED)
    path = DATA / "shapes.csv"
    prot = Protocol(
        rel_ci=0.01,
        min_runs=6,
        min_visits=3,
        runs_per_visit=2,
        max_runs=16,
        max_seconds=1.0,
        warmup_max_seconds=0.4,
        rewarm_runs=1,
        chunk_size=CHUNK,
        seed=SEED,
    )
    per_train = [
        N_SHAPES_FIT // len(train_pairs) + (1 if i < N_SHAPES_FIT % len(train_pairs) else 0)
        for i in range(len(train_pairs))
    ]
    per_train = [min(k, len(fit_configs)) for k in per_train]
    plan = [(p, rng.sample(fit_configs, k)) for p, k in zip(train_pairs, per_train)]
    plan += [(p, rng.sample(test_configs, min(N_SHAPES_TEST_PER_PAIR, len(test_configs)))) for p in test_pairs]
    if SMOKE:
        plan = [(p, c[:1]) for p, c in plan[:2]] + [(p, c[:1]) for p, c in plan[-1:]]
    t0 = time.time()
    for (batch, seq), configs in plan:
        st = BackendSettings(backend="onnxruntime", threads=1, batch=batch, seq_len=seq)
        measure(shape, configs, st, path, prot, sampler="uniform", onnx_cache=CACHE, progress=False)
        print(f"shapes b{batch} s{seq}: {len(configs)} configs, {time.time() - t0:.0f} s so far", flush=True)
    (DATA / "shapes_split.json").write_text(json.dumps({"train": train_pairs, "test": test_pairs}) + "\n")


if __name__ == "__main__":
    phases = {
        "peak": phase_peak,
        "single": phase_single,
        "repeat": phase_repeat,
        "shapes": phase_shapes,
        "single-ort": lambda: phase_single(("onnxruntime",)),
        "single-torch": lambda: phase_single(("torch",)),
        "repeat-ort": lambda: phase_repeat(("onnxruntime",)),
        "repeat-torch": lambda: phase_repeat(("torch",)),
    }
    if len(sys.argv) != 2 or sys.argv[1] not in phases:
        sys.exit(f"usage: latency_measure.py {{{'|'.join(phases)}}}")
    t0 = time.time()
    phases[sys.argv[1]]()
    print(f"phase {sys.argv[1]} done in {time.time() - t0:.0f} s", flush=True)
