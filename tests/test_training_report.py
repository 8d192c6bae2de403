"""bench/training_report.py: caches, statistics and the report, on synthetic per-example scores (no model)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
from benchload import load_bench


@pytest.fixture(scope="module")
def tr():
    return load_bench("training_report")


@pytest.fixture(scope="module")
def ta(tr):
    # The statistics live in bench/training_analysis.py, which training_report imports by plain name once it has
    # put bench/ on sys.path: importing it by name here gives that same module.
    return importlib.import_module("training_analysis")


def _npz(tr, path: Path, accs, points, labels, rng):
    c = np.stack([rng.random(len(labels)) < a for a in accs])
    path.parent.mkdir(parents=True, exist_ok=True)
    tr.write_npz(
        path,
        dict(
            correct=c,
            labels=labels,
            points=np.array(points),
            subnet_keys=np.array(["k"] * len(points)),
            dev_digest=np.array("d"),
            model_digest=np.array("m"),
            accuracy=100 * c.mean(1),
        ),
    )


def _fake(tr, tmp_path: Path, n: int = 400):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, n)
    sweep, alone = tmp_path / "sweep", tmp_path / "alone"
    base = np.array([0.73, 0.72, 0.70, 0.62, 0.71, 0.70, 0.67, 0.58, 0.66, 0.65, 0.62, 0.52])
    results = {}
    runs = [("today", 42, 0.0), ("today", 43, 0.0), ("a2", 42, 0.05), ("a2", 43, 0.05), ("a2bf16", 42, -0.1)]
    for rec, seed, bump in runs:
        key = f"{rec}-s{seed}"
        probs = base + (bump if rec == "a2bf16" else bump * (np.arange(12) >= 4))  # a2bf16: every point 10 worse
        _npz(tr, sweep / key / "correct-whole.npz", probs, tr.POINTS, labels, rng)
        comp = {s: {"flops": 1e14, "steps": 31, "seconds": 1.0, "subnets_per_step": 4} for s in ("width", "depth")}
        comp["total"] = {"flops": 2e14, "seconds": 2.0, "steps": 62}
        results[key] = {"recipe": rec, "seed": seed, "flags": [], "compute": comp}
    for seed in (42, 43):
        _npz(tr, sweep / f"base-s{seed}" / "correct-whole-teacher.npz", [0.735], ["teacher"], labels, rng)
    for w, d in tr.DEPTH_ROWS:
        run = alone / f"alone-{tr.name_of(w, d)}-s42"
        _npz(tr, run / "correct-whole.npz", [0.6], ["teacher"], labels, rng)
        state = {
            "completed": ["teacher"],
            "scores": {"teacher": {"best": 60.0, "history": [{"step": 125}]}},
            "compute": {"teacher": {"flops": 5e12, "steps": 125, "seconds": 9.0}},
        }
        (run / "state.json").write_text(json.dumps(state))
    (tmp_path / "results.json").write_text(json.dumps(results))
    lat = {
        "cpu_model": "x",
        "fingerprint": {"date": "now"},
        "settings": {"backend": "onnxruntime", "threads": 1, "batch": 1, "seq_len": 64},
        "points": {p: {"ms": float(12 - i)} for i, p in enumerate(tr.POINTS)},
    }
    (tmp_path / "lat.json").write_text(json.dumps(lat))
    return tr.parse_args(
        [
            "--report-only",
            "--results",
            str(tmp_path / "results.json"),
            "--sweep-out",
            str(sweep),
            "--work",
            str(alone),
            "--latency-from",
            str(tmp_path / "lat.json"),
            "--out",
            str(tmp_path / "training.md"),
            "--resamples",
            "200",
        ]
    )


def test_cache_validation(tr, tmp_path):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 50)
    p = tmp_path / "c.npz"
    _npz(tr, p, [0.5] * 12, tr.POINTS, labels, rng)
    assert tr.read_npz(p, tr.POINTS)["correct"].shape == (12, 50)
    assert tr.read_npz(p, tr.POINTS[:3]) is None  # other points: recomputed
    p.write_bytes(b"torn")
    assert tr.read_npz(p, None) is None
    assert tr.read_npz(tmp_path / "missing.npz", None) is None


def test_last_step_check(tr):
    ok = {"scores": {"teacher": {"history": [{"step": 125}]}}, "compute": {"teacher": {"steps": 125}}}
    tr.check_last_step_kept(ok, Path("x"))
    two = {"scores": {"teacher": {"history": [{"step": 60}, {"step": 125}]}}, "compute": {"teacher": {"steps": 125}}}
    with pytest.raises(SystemExit):
        tr.check_last_step_kept(two, Path("x"))


def test_report_from_caches(tr, ta, tmp_path):
    args = _fake(tr, tmp_path)
    res = tr.report(args)
    text = args.out.read_text()
    assert "## Depth rows" in text and "## Targets" in text and "## Grid-front hypervolume" in text
    a2, today = res["recipes"]["a2"], res["recipes"]["today"]
    # the depth points of a2 are 5 points better than today's: a paired difference against the same alone shape
    assert a2["depth"]["0.5x0.5"]["vs_alone"][0] > today["depth"]["0.5x0.5"]["vs_alone"][0]
    assert a2["hv_ratio"] > 1.0 and a2["hv_ratio_ci"][0] <= a2["hv_ratio"] <= a2["hv_ratio_ci"][1]
    assert all(x["met"] in (True, False, None) for x in a2["targets"])
    assert res["winner"]["recipe"] == "a2"
    # bf16 against float32: a2bf16 against a2 on their common seed (42), every grid point about 10 points worse
    b = res["bf16"]["a2bf16"]
    assert b["fp32"] == "a2" and b["seeds"] == [42] and b["met"] is False
    assert all(-20 < m < -2 for m, _, _ in b["rows"].values())
    assert "## bf16 against float32: `a2bf16` against `a2` (seeds 42)" in text and "**MISSED**" in text
    # the resamples are the same for every recipe: the same data give the same interval
    assert (
        ta.interval(ta.hv_boot(np.ones((12, 5), bool), ta.boot_counts(5, 50), np.arange(12.0), 0, 20))
        == (pytest.approx(ta.hv_of(np.full(12, 100.0), np.arange(12.0), 0, 20)),) * 2
    )


def test_alone_step_is_refused_for_another_task(tr, capsys):
    with pytest.raises(SystemExit) as e:
        tr.parse_args(["--task", "sst2", "--steps", "alone,report"])
    assert e.value.code == 2
    assert "the alone step trains item 0's references on tweets; with --task sst2" in capsys.readouterr().err
    assert tr.parse_args(["--task", "sst2", "--steps", "correct,report"]).task == "sst2"
