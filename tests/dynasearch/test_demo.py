"""The demo pipeline end to end on a tiny backbone and a synthetic SST-2-layout task: train, score,
measure, fit, search under a target, verify, export, report; resume and re-target; kill drill."""

import dataclasses
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from tinymodels import write_sst2_like

from dynabert.backbone import load_model
from dynabert.errors import OutputExistsError
from dynabert.extract import model_shape
from dynasearch.cli import main
from dynasearch.demo import DemoConfig, measure_configs, run_demo
from predictors import Protocol
from search.pareto import pareto_mask

REPO = Path(__file__).resolve().parents[2]


# Timing and fitting cut to what a tiny model needs (the CLI's defaults are for the real one).
FAST = Protocol(
    rel_ci=0.05,
    min_runs=3,
    min_visits=1,
    runs_per_visit=2,
    max_runs=6,
    max_seconds=0.2,
    warmup_max=3,
    warmup_max_seconds=0.05,
    chunk_size=64,
)


def tiny_cfg(out, data, tiny_bert_dir, **kw) -> DemoConfig:
    return DemoConfig(
        out_dir=out,
        model_dir=tiny_bert_dir,
        task="sst2",
        data_dir=data,
        max_steps=2,
        max_seq_length=32,
        latency_seq_len=16,
        random_configs=6,
        trials=10,
        measure_protocol=FAST,
        predictor_kinds=("layer-regression",),
        **kw,
    )


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, tiny_bert_dir):
    """One uninterrupted demo on the default target: (out dir, data dir, summary)."""
    root = tmp_path_factory.mktemp("demo")
    data = write_sst2_like(root / "sst2")
    out = root / "demo"
    return out, data, run_demo(tiny_cfg(out, data, tiny_bert_dir), progress=False)


def test_pareto_mask_by_hand():
    score = [90, 85, 85, 80, 91]
    latency = [10, 5, 6, 5, 20]
    # (85,6) is dominated by (85,5); (80,5) by (85,5); the others trade off.
    assert pareto_mask(score, latency).tolist() == [True, True, False, False, True]


def test_demo_end_to_end_retarget_and_resume(demo_run, tiny_bert_dir, capsys):
    out, data, summary = demo_run
    cfg = tiny_cfg(out, data, tiny_bert_dir)
    # Default target: half the full model's measured latency (what the summary and report say).
    records = pd.read_csv(out / "latency" / "records.csv")
    full = records[records["key"] == summary["full"]["key"]].iloc[0]
    assert summary["target_ms"] == pytest.approx(full["corrected_median_ms"] / 2, abs=1e-3)
    assert summary["target_rule"].startswith("half")
    # One interleaved run of layer-table, grid and random configs; the predictor's held-out error reported.
    assert set(records["sampler"]) == {"layer-table", "grid", "uniform"} and records["run_id"].nunique() == 1
    assert len(records) == len(measure_configs(model_shape(load_model(tiny_bert_dir)), cfg)[0])
    assert summary["predictor"]["n_test"] > 0 and summary["predictor"]["mape"] >= 0
    assert not (out / "latency" / "onnx-cache").exists()  # the exported ONNX files go once all are timed
    grid = pd.read_csv(next((out / "eval").glob("*-grid.csv")))
    assert len(grid) == 12 and {"classes_predicted", "top_class_share", "dev_majority_share"} <= set(grid.columns)
    report = (out / "report.md").read_text()
    for part in (
        "## Pareto front",
        "## The 12 grid sub-networks",
        "## Latency predictor",
        "## Time per step",
        "dynasearch train --out",
        "dynasearch search",
        "dynasearch export --results",
    ):
        assert part in report
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "<table" in html
    # trained for the space it searches, and the report says what the answer is against the grid
    run_cfg = json.loads((out / "run" / "run.json").read_text())["config"]
    assert run_cfg["space_samples"] == cfg.space_samples > 0 and run_cfg["sampling"] == cfg.sampling
    if summary["chosen"] is not None:
        q = summary["int8"]  # the answer at int8, beside fp32: measured metric and latency
        assert q["key"] == summary["chosen"]["key"] and 0 <= q["metric_int8"] <= 100 and q["int8_ms"] > 0
        assert q["metric_diff"] == pytest.approx(q["metric_int8"] - q["metric_fp32"], abs=1e-9)
        assert "int8 (onnxruntime dynamic QInt8) of the same config" in report
        a = summary["against_grid"]
        assert a["answer_is_grid"] == bool(summary["chosen"]["key"] in set(grid["key"]))
        assert "the answer is a" in report
        if a["grid"] is not None and a["grid"]["key"] != summary["chosen"]["key"]:
            lo, hi = a["metric_diff_95"]
            assert lo <= a["metric_diff"] <= hi and "paired bootstrap 95%" in report

    # A generous target: met, verified by measurement, exported; the report and summary say so.
    capsys.readouterr()
    summary = run_demo(tiny_cfg(out, data, tiny_bert_dir, target_ms=1000.0), progress=False)
    c = summary["chosen"]
    assert c is not None and c["meets_target"] and c["measured_ms"] <= 1000
    manifest = json.loads((out / "export" / "manifest.json").read_text())
    assert manifest["subnet_key"] == c["key"] and manifest["search"]["target_ms"] == 1000.0
    assert "meets the target" in (out / "report.md").read_text()
    assert summary["against_grid"]["grid"] is not None  # every grid point is under 1000 ms
    logged = capsys.readouterr().out
    assert "training: already done" in logged and "1/7" not in logged and "3/7" not in logged  # not redone

    # The same command again: nothing re-trained, re-timed, re-searched or re-exported.
    before = {
        p: p.stat().st_mtime_ns
        for p in (out / "latency" / "records.csv", out / "search" / "trials.csv", out / "export" / "manifest.json")
    }
    run_demo(tiny_cfg(out, data, tiny_bert_dir, target_ms=1000.0), progress=False)
    assert {p: p.stat().st_mtime_ns for p in before} == before
    steps = json.loads((out / "steps.json").read_text())
    assert all(steps[s]["done"] for s in ("train", "score", "measure", "fit", "search", "export", "int8", "report"))


def test_demo_refuses_foreign_output(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("mine")
    assert main(["demo", "--out", str(tmp_path / "x")]) == 2
    assert "holds something other than a dynasearch demo" in capsys.readouterr().err


def test_demo_refuses_other_settings_once_started(tmp_path, tiny_bert_dir):
    out = tmp_path / "d"
    (out / "run").mkdir(parents=True)  # training had begun under the saved settings
    (out / "demo.json").write_text(json.dumps(DemoConfig(out_dir=out, model_dir=tiny_bert_dir, epochs=2).settings()))
    # the differing field by name, the saved value -> the asked one (issue 23), not the whole settings
    with pytest.raises(
        OutputExistsError, match=r"holds a demo run with other settings than asked \(epochs: 2 -> 1\.0; in "
    ):
        run_demo(DemoConfig(out_dir=out, model_dir=tiny_bert_dir), progress=False)


def test_demo_takes_corrected_settings_when_nothing_started(tmp_path, tiny_bert_dir):
    """A first try that failed on its arguments before training started: the corrected command runs."""
    from dynasearch.demo import _prepare_out

    out = tmp_path / "d"
    out.mkdir()
    (out / "demo.json").write_text(json.dumps({"task": "bogus"}))
    cfg = DemoConfig(out_dir=out, model_dir=tiny_bert_dir)
    _prepare_out(cfg)
    saved = json.loads((out / "demo.json").read_text())
    assert saved["task"] == cfg.task and {k: v for k, v in saved.items() if k != "target_ms"} == cfg.settings()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--target-latency", "fast"], r"latency 'fast' is not a number with a unit"),
        (["--target-latency", "4"], r"latency '4' has no unit; write e.g. 4ms"),
        (["--target-latency=-3ms"], r"latency '-3ms' is negative; a target is a positive time"),
    ],
)
def test_demo_bad_input_is_one_line(tmp_path, capsys, args, message):
    assert main(["demo", "--out", str(tmp_path / "d"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert re.search(message, err[-1]) and not (tmp_path / "d").exists()


def test_demo_out_is_a_file(tmp_path, capsys):
    (tmp_path / "f").write_text("mine")
    assert main(["demo", "--out", str(tmp_path / "f")]) == 2
    assert "is a file; choose another --out" in capsys.readouterr().err
    assert (tmp_path / "f").read_text() == "mine"


DRILL_SEED = int(os.environ.get("DYNASEARCH_DRILL_SEED", time.time_ns() % 100_000))


@pytest.mark.parametrize("kill", ["study-created", "trial-running@4", "demo-step-done@3", "random"])
def test_demo_kill_drill(kill, demo_run, tmp_path, tiny_bert_dir):
    """SIGKILL the demo, re-run: it finishes, the grid scores equal an uninterrupted run's, no config
    is timed twice, the study holds exactly the trials. Killed at a named point (dynabert.killpoints:
    inside the search's study-creation window; after the measure step's work, before steps.json says
    so), or at a seeded random moment after training started (DYNASEARCH_DRILL_SEED replays it)."""
    clean, data, _ = demo_run
    out = tmp_path / "killed"
    code = (
        f"from predictors import Protocol\nfrom dynasearch.demo import DemoConfig, run_demo\n"
        f"run_demo(DemoConfig(out_dir={str(out)!r}, model_dir={str(tiny_bert_dir)!r}, task='sst2', data_dir={str(data)!r}, "
        f"max_steps=2, max_seq_length=32, latency_seq_len=16, random_configs=6, trials=10, target_ms=1000.0, "
        f"measure_protocol=Protocol(**{dataclasses.asdict(FAST)!r}), predictor_kinds=('layer-regression',)), progress=False)\n"
    )
    cmd = [sys.executable, "-c", code]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    how = f"killed at {kill}"
    if kill == "random":
        delay = random.Random(DRILL_SEED).uniform(
            0.5, 15.0
        )  # somewhere in training, scoring, timing, fitting or the search
        how = f"seed {DRILL_SEED}: killed {delay:.2f} s after training started"
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (out / "run" / "run.json").exists():
            time.sleep(0.2)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    else:
        from dynabert.killpoints import ENV

        killed = subprocess.run(cmd, cwd=REPO, env={**env, ENV: kill}, capture_output=True, text=True, timeout=300)
        assert killed.returncode == -signal.SIGKILL, f"{how}: exit {killed.returncode}: {killed.stderr[-2000:]}"
    # The re-run in this process (the kill needs a process of its own, the resumption does not): the same config.
    run_demo(
        DemoConfig(
            out_dir=str(out), model_dir=str(tiny_bert_dir), task="sst2", data_dir=str(data), max_steps=2,
            max_seq_length=32, latency_seq_len=16, random_configs=6, trials=10, target_ms=1000.0,
            measure_protocol=Protocol(**dataclasses.asdict(FAST)), predictor_kinds=("layer-regression",),
        ),
        progress=False,
    )  # fmt: skip
    a = pd.read_csv(next((out / "eval").glob("*-grid.csv")))
    b = pd.read_csv(next((clean / "eval").glob("*-grid.csv")))
    assert a["key"].tolist() == b["key"].tolist() and a["accuracy"].tolist() == b["accuracy"].tolist(), how
    rec = pd.read_csv(out / "latency" / "records.csv")
    assert not rec["key"].duplicated().any() and set(rec["key"]) == set(
        pd.read_csv(clean / "latency" / "records.csv")["key"]
    ), how
    assert len(pd.read_csv(out / "search" / "trials.csv")) == 10, how
    assert json.loads((out / "export" / "manifest.json").read_text())["search"]["target_ms"] == 1000.0
