"""Kill drills: `dynasearch train` and `dynasearch measure` are SIGKILLed, the same command is run
again to completion, and the result must equal an uninterrupted run's: nothing lost, nothing done
twice, nothing half-written.

Each command is killed at named points the test controls (dynabert.killpoints: the child SIGKILLs
itself there: a checkpoint complete, a stage saved but not recorded, a chunk of records written),
and once at a random moment drawn from a seeded generator (DYNASEARCH_DRILL_SEED, default: from the
clock); the seed and the moment are in every failure message so a failing drill can be replayed.
(search: tests/search/test_study.py; demo: tests/search/test_demo.py.)
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from tinymodels import write_sst2_like

from dynasearch.cli import main

REPO = Path(__file__).resolve().parent.parent
SEED = int(os.environ.get("DYNASEARCH_DRILL_SEED", time.time_ns() % 100_000))
# The temporaries dynabert.io makes (.NAME.ds<host>-<pid>-<random>.tmp): none may outlive a re-run.
TEMPORARY = re.compile(r"\.ds[0-9a-f]{6}-\d+-(?:[a-z0-9_]{8}|old)\.tmp$")


def child_env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def kill_midway(args: list[str], started, delay: float, timeout: float = 120) -> tuple[bool, str]:
    """Run the CLI in a child process; once `started()` holds, wait `delay` s and SIGKILL it.
    (True, '') when it was killed while still working, (False, its stderr) when it ended first."""
    import tempfile

    log = tempfile.TemporaryFile()  # not a pipe: a chatty child must never block on a full pipe
    proc = subprocess.Popen(
        [sys.executable, "-m", "dynasearch", *args], cwd=REPO, env=child_env(), stdout=subprocess.DEVNULL, stderr=log
    )
    deadline = time.monotonic() + timeout
    try:
        while not started():
            if proc.poll() is not None:
                break
            assert time.monotonic() < deadline, f"{args[0]} did not start working within {timeout} s"
            time.sleep(0.01)
        end = time.monotonic() + delay
        while time.monotonic() < end and proc.poll() is None:
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    if proc.returncode == -signal.SIGKILL:
        return True, ""
    log.seek(0)
    err = log.read().decode(errors="replace")[-3000:]
    assert proc.returncode == 0, f"the run to be killed failed (exit {proc.returncode}): {err}"
    return False, err


def drill(args: list[str], started, span: float, reset) -> str:
    """Kill a child run of `args` at a random moment in [0, span) s after `started()`; when the
    child ended before the kill, reset and try again earlier. Returns a description of the kill."""
    rng = random.Random(SEED)
    delay = rng.uniform(0, span)
    for attempt in range(4):
        killed, err = kill_midway(args, started, delay)
        if killed:
            return f"seed {SEED}: killed {delay:.2f} s after it started working (attempt {attempt + 1})"
        assert "Traceback" not in err, f"the run to be killed failed: {err}"
        reset()
        delay = delay / 3 if attempt < 2 else 0.0
    raise AssertionError(f"seed {SEED}: the run always ended before it could be killed")


def leftover_temporaries(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if TEMPORARY.search(p.name))


# ---------------------------------------------------------------------------------------------- train
TRAIN_OPTS = [
    "--task",
    "sst2",
    "--stages",
    "teacher,rewire,width,depth",
    "--max-steps",
    "3",
    "--checkpoint-every",
    "1",
    "--batch-size",
    "8",
    "--max-seq-length",
    "32",
    "--no-progress",
]


def safetensors_equal(a: Path, b: Path) -> list[str]:
    """Names of tensors that differ (or exist in one file only)."""
    import torch
    from safetensors.torch import load_file

    x, y = load_file(str(a)), load_file(str(b))
    return sorted(set(x) ^ set(y)) + [k for k in sorted(set(x) & set(y)) if not torch.equal(x[k], y[k])]


def comparable_state(run: Path) -> dict:
    """state.json without what depends on the invocation (throughput, loss parts of this call)."""
    import json

    s = json.loads((run / "state.json").read_text())
    return {k: s[k] for k in ("completed", "model", "scores")}


def kill_at(args: list[str], point: str) -> str:
    """Run the CLI in a child that SIGKILLs itself at a named point (dynabert.killpoints, test-only)."""
    from dynabert.killpoints import ENV

    p = subprocess.run(
        [sys.executable, "-m", "dynasearch", *args],
        cwd=REPO,
        env={**child_env(), ENV: point},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=300,
    )
    assert p.returncode == -signal.SIGKILL, f"not killed at {point} (exit {p.returncode}): {p.stderr[-2000:]}"
    return f"killed at {point}"


@pytest.fixture(scope="module")
def train_ref(tiny_bert_dir, tmp_path_factory):
    """(data dir, base argv, uninterrupted run dir, its seconds)."""
    root = tmp_path_factory.mktemp("train-ref")
    data = write_sst2_like(root / "data", n_train=48, n_dev=16)
    base = ["train", "--model", str(tiny_bert_dir), "--data-dir", str(data), *TRAIN_OPTS]
    t0 = time.monotonic()
    assert main([*base, "--out", str(root / "ref")]) == 0  # uninterrupted, in this process
    return data, base, root / "ref", time.monotonic() - t0


@pytest.mark.parametrize("point", ["train-checkpoint@2", "train-stage-done@1", "train-stage-done@3", "random"])
def test_train_killed_then_resumed_equals_an_uninterrupted_run(point, train_ref, tmp_path):
    data, base, ref, span = train_ref
    run = tmp_path / "run"
    args = [*base, "--out", str(run)]
    if point == "random":
        how = drill(args, lambda: (run / "run.json").is_file(), span, lambda: shutil.rmtree(run, ignore_errors=True))
    else:
        how = kill_at(args, point)
    assert main([*args, "--resume"]) == 0, how  # the same command again (a run is continued with --resume)
    assert comparable_state(run) == comparable_state(ref), how  # stages, best checkpoints, every dev score of the grid
    final = comparable_state(ref)["model"]
    assert final == "width_depth"
    for stage_dir in ("teacher", "rewired", "width", "width_depth"):
        diff = safetensors_equal(ref / stage_dir / "model.safetensors", run / stage_dir / "model.safetensors")
        assert not diff, f"{how}: {stage_dir} weights differ from the uninterrupted run's: {diff[:5]}"
    assert not leftover_temporaries(run), f"{how}: {leftover_temporaries(run)}"


# -------------------------------------------------------------------------------------------- measure
MEASURE_OPTS = [
    "--backend",
    "torch",
    "--sampler",
    "uniform",
    "--n",
    "9",
    "--chunk-size",
    "3",
    "--max-runs",
    "4",
    "--min-runs",
    "3",
    "--max-seconds",
    "0.1",
    "--seq-len",
    "16",
    "--no-progress",
]


@pytest.fixture(scope="module")
def measure_ref(tiny_bert_dir, tmp_path_factory):
    ref = tmp_path_factory.mktemp("measure-ref") / "ref.csv"
    t0 = time.monotonic()
    assert main(["measure", str(tiny_bert_dir), "--out", str(ref), *MEASURE_OPTS]) == 0  # uninterrupted
    return ref, time.monotonic() - t0


@pytest.mark.parametrize("point", ["measure-chunk-written@1", "measure-chunk-written@2", "random"])
def test_measure_killed_then_rerun_measures_every_config_once(point, measure_ref, tiny_bert_dir, tmp_path):
    ref, span = measure_ref
    out = tmp_path / "r.csv"
    args = ["measure", str(tiny_bert_dir), "--out", str(out), *MEASURE_OPTS]

    def reset():
        out.unlink(missing_ok=True)
        shutil.rmtree(tmp_path / "r.raw", ignore_errors=True)

    if point == "random":
        how = drill(args, out.is_file, 0.6 * span, reset)  # the first chunk is done when the file appears
    else:
        how = kill_at(args, point)
    kept = pd.read_csv(out)  # what the killed run left: whole rows only
    assert (kept["status"] == "ok").all() and kept["key"].is_unique, how
    assert main(args) == 0, how  # the same command again
    got, want = pd.read_csv(out), pd.read_csv(ref)
    assert set(got["key"]) == set(want["key"]), how
    assert got["key"].is_unique, f"{how}: a config was measured twice: {got['key'][got['key'].duplicated()].tolist()}"
    assert (got["status"] == "ok").all(), how
    assert got["median_ms"].notna().all() and (got["median_ms"] > 0).all(), how
    assert set(kept["key"]) <= set(got["key"]), how  # nothing the killed run finished was lost
    assert len(got) == len(want), how


# ------------------------------------------------------------ issue 23: temporaries of a killed command
def test_killed_export_leftover_goes_with_the_next_command_writing_beside_it(tiny_bert_dir, tmp_path, capsys):
    """A SIGKILLed export leaves its hidden `.o.*.tmp/` folder; the next command that writes in the
    same folder (here fit-predictor, another command and another output) removes it. A dead run's
    `-old` one (an output moved aside while being replaced) whose output is missing is the only copy
    of that output: it is kept, and a warning names it and how to restore it."""
    from fakes import additive_ms, fake_rows

    from dynabert.io import _HOST
    from dynabert.space import SearchSpace
    from dynasearch_runtime.schema import append_rows
    from predictors.measure import load_shape

    out = tmp_path / "o"
    args = ["export", str(tiny_bert_dir), "--width", "1", "--depth", "1", "--format", "onnx,hf", "--out", str(out)]
    for _attempt in range(3):
        if kill_midway(args, lambda: any(tmp_path.glob(".o.*.tmp")), 0.0)[0]:
            break
        shutil.rmtree(out)  # it finished before the kill: try again
    else:
        pytest.fail("the export always finished before it could be killed")
    left = list(tmp_path.glob(".o.*.tmp"))
    assert left and not out.exists(), "the killed export should leave its temporary folder (and no output)"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # reaped: its id names no process now
    only_copy = tmp_path / f".prev.ds{_HOST}-{dead.pid}-old.tmp"
    only_copy.mkdir()
    (only_copy / "manifest.json").write_text("{}")
    shape = load_shape(tiny_bert_dir)
    rng = random.Random(0)
    records = tmp_path / "in" / "records.csv"
    configs = {c.key: c for c in (SearchSpace.default(shape).sample(rng) for _ in range(30))}
    append_rows(str(records), fake_rows(shape, list(configs.values()), additive_ms))
    capsys.readouterr()
    fit = ["fit-predictor", str(records), "--out", str(tmp_path / "pred"), "--kind", "layer-regression", "--no-plots"]
    assert main(fit) == 0
    assert not any(p.exists() for p in left), "a command writing beside the killed export's folder removes it"
    assert only_copy.is_dir() and (only_copy / "manifest.json").is_file(), "the only copy of 'prev' is kept"
    warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert len(warned) == 1 and f"{only_copy} holds the previous prev" in warned[0], warned
    assert f"rename it to {tmp_path / 'prev'} to restore it" in warned[0], warned


def test_a_run_folder_made_beside_dead_runs_temporaries_removes_them(tiny_bert_dir, tmp_path):
    """train makes its run folder with mkdir (no atomic write beside it): it cleans the folder it is
    made in all the same (temporaries named with a dead process's id: an export's folder, a file)."""
    from dynabert.io import _HOST

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # reaped: its id names no process now
    folder = tmp_path / f".bundle.ds{_HOST}-{dead.pid}-abcdefgh.tmp"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"\0" * 100)
    half = tmp_path / f".results.json.ds{_HOST}-{dead.pid}-k2j4_x9q.tmp"
    half.write_text("half a file")
    data = write_sst2_like(tmp_path / "data", n_train=32, n_dev=16)
    args = ["train", "--model", str(tiny_bert_dir), "--task", "sst2", "--data-dir", str(data), "--stages", "teacher"]
    args += ["--max-steps", "1", "--max-seq-length", "32", "--out", str(tmp_path / "run"), "--no-progress"]
    assert main(args) == 0
    assert not folder.exists() and not half.exists()
