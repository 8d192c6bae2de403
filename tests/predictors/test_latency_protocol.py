"""The one timing protocol: statistics against hand-computed values, stopping rules, interleaving,
failures recorded, and a real measurement of a tiny backbone on both backends (small caps)."""

from __future__ import annotations

import importlib
import math
import random

import numpy as np
import pytest
from latency_helpers import FAST_PROTOCOL, SHAPE

from dynabert.space import SearchSpace
from dynasearch_runtime.driver import Item, measure_items
from dynasearch_runtime.protocol import ci_half_width, median_ci, summarize, time_interleaved
from predictors import BackendSettings, MeasurementError, Protocol, RecordsError, measure, read_records
from predictors.samplers import layer_table_configs, uniform_configs

FAST = FAST_PROTOCOL


def test_median_ci_order_statistics():
    x = list(range(1, 11))  # n = 10: P(B <= 1) = 11/1024 <= 0.025 < P(B <= 2) = 56/1024, so j = 2
    assert median_ci(x, 0.95) == (2.0, 9.0)
    assert median_ci([1, 2, 3, 4, 5], 0.95) == (1.0, 5.0)  # too few runs: the full range
    assert ci_half_width(x, 0.95) == pytest.approx((9 - 2) / 2 / 5.5)


def test_summarize_hand_computed():
    s = summarize([4.0, 1.0, 3.0, 2.0], 0.95)
    assert s["median_ms"] == 2.5 and s["mean_ms"] == 2.5 and s["n_runs"] == 4
    assert s["iqr_ms"] == pytest.approx(3.25 - 1.75)
    assert s["p90_ms"] == pytest.approx(3.7)
    assert s["cv"] == pytest.approx(np.std([1, 2, 3, 4], ddof=1) / 2.5)


@pytest.mark.parametrize(
    "field,value",
    [
        ("rel_ci", 0),
        ("rel_ci", 1.5),
        ("min_runs", 0),
        ("max_runs", 2),
        ("max_seconds", -1),
        ("chunk_size", 0),
        ("confidence", 1.0),
    ],
)
def test_protocol_rejects_bad_settings(field, value):
    kw = {"min_runs": 3} if field == "max_runs" else {}
    with pytest.raises(MeasurementError, match=field):
        Protocol(**{**kw, field: value})


def test_stops_at_cap_interleaves_and_records_failures():
    calls: list[str] = []

    def runner(name: str, fail_after: int | None = None):
        count = [0]

        def run():
            count[0] += 1
            calls.append(name)
            if fail_after is not None and count[0] > fail_after:
                raise RuntimeError("out of memory (simulated)")

        return run

    p = Protocol(
        min_runs=3,
        max_runs=9,
        max_seconds=100,
        rel_ci=1e-9,
        runs_per_visit=3,
        rewarm_runs=1,
        warmup_min=2,
        warmup_max=2,
        warmup_window=1,
    )
    out = time_interleaved(
        [("a", runner("a")), ("b", runner("b")), ("bad", runner("bad", fail_after=3))], p, random.Random(0)
    )
    assert out["a"]["n_runs"] == 9 and out["b"]["n_runs"] == 9  # rel_ci unreachable: the cap stops them
    assert out["a"]["converged"] is False and out["a"]["warmup_runs"] == 2
    assert "out of memory" in out["bad"]["error"]
    # Rounds visit configs in turn: after warm-up, a's 12 runs are not one block.
    timed = [c for c in calls[6:] if c != "bad"]
    first_b = timed.index("b") if timed[0] == "a" else timed.index("a")
    assert first_b <= 4


def test_converges_on_constant_timings():
    p = Protocol(min_runs=5, max_runs=40, rel_ci=0.5, runs_per_visit=5, warmup_min=1, warmup_max=1)
    out = time_interleaved([("a", lambda: sum(range(2000)))], p, random.Random(0))
    assert out["a"]["n_runs"] >= 5 and out["a"]["median_ms"] > 0


@pytest.mark.parametrize("min_visits,expected_runs", [(1, 2), (3, 6)])
def test_convergence_needs_runs_from_min_visits_rounds(min_visits, expected_runs, monkeypatch):
    # Constant 1 ms runs (a fake clock) converge as soon as the rules allow: after min_runs runs AND
    # min_visits rounds.
    from dynasearch_runtime import protocol

    monkeypatch.setattr(protocol, "_time_ms", lambda run: (run(), 1.0)[1])
    p = Protocol(
        min_runs=2,
        min_visits=min_visits,
        max_runs=40,
        rel_ci=0.01,
        runs_per_visit=2,
        rewarm_runs=0,
        warmup_min=1,
        warmup_max=1,
        discard_disturbed=False,
    )
    out = time_interleaved([("a", lambda: None)], p, random.Random(0))
    assert out["a"]["converged"] is True and out["a"]["n_runs"] == expected_runs


def test_protocol_rejects_zero_min_visits():
    with pytest.raises(MeasurementError, match="min_visits"):
        Protocol(min_visits=0)


def test_failed_preparation_becomes_a_failed_row():
    written: list[list[dict]] = []

    def bad():
        raise MemoryError("simulated")

    items = [Item("good", {"key": "good"}, lambda: lambda: None), Item("bad", {"key": "bad"}, bad)]
    rows = measure_items(items, FAST, written.append)
    by = {r["key"]: r for r in rows}
    assert by["good"]["status"] == "ok" and by["good"]["n_runs"] >= 3
    assert by["bad"]["status"] == "failed" and "MemoryError" in by["bad"]["error"]
    assert sum(len(w) for w in written) == 2


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_measure_tiny_backbone_and_resume(tmp_path, backend):
    space = SearchSpace.default(SHAPE)
    subnets = uniform_configs(space, 3, seed=0) + layer_table_configs(space)[:1]
    path = tmp_path / "records.csv"
    settings = [
        BackendSettings(backend=backend, batch=1, seq_len=8),
        BackendSettings(backend=backend, batch=2, seq_len=8),
    ]
    rows = measure(SHAPE, subnets, settings, path, FAST, progress=False)
    assert len(rows) == 8 and (rows["status"] == "ok").all()
    assert (rows["median_ms"] > 0).all() and (rows["n_runs"] >= 3).all()
    assert rows["settings_id"].nunique() == 2 and rows["target_id"].nunique() == 1
    assert set(rows["backend"]) == {backend} and (rows["threads"] == 1).all() and not rows["spinning"].any()
    assert rows["cpu_model"].str.len().min() > 0 and math.isfinite(rows["cv"].max())
    # Resume: the same settings again measure nothing; a new setting only its own rows.
    again = measure(SHAPE, subnets, settings, path, FAST, progress=False)
    assert len(again) == 0
    assert len(read_records(path)) == 8


def test_measure_refuses_records_of_another_schema(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(RecordsError, match="another schema"):
        measure(
            SHAPE,
            uniform_configs(SearchSpace.default(SHAPE), 1),
            BackendSettings(backend="torch", seq_len=8),
            path,
            FAST,
            progress=False,
        )


def test_killed_run_resumes_where_it_stopped(tmp_path, monkeypatch):
    import importlib

    pm = importlib.import_module("predictors.measure")  # the module (the package re-exports a function of that name)

    space = SearchSpace.default(SHAPE)
    subnets = uniform_configs(space, 4, seed=7)
    path = tmp_path / "records.csv"
    real_append = pm.append_rows
    calls = []

    def append_then_die(p, rows):
        real_append(p, rows)
        calls.append(len(rows))
        raise KeyboardInterrupt  # killed right after the first chunk was saved

    monkeypatch.setattr(pm, "append_rows", append_then_die)
    prot = Protocol(**{**FAST.__dict__, "chunk_size": 2})
    with pytest.raises(KeyboardInterrupt):
        measure(SHAPE, subnets, BackendSettings(backend="torch", seq_len=8), path, prot, progress=False)
    assert calls == [2] and len(read_records(path)) == 2
    monkeypatch.setattr(pm, "append_rows", real_append)
    rest = measure(SHAPE, subnets, BackendSettings(backend="torch", seq_len=8), path, prot, progress=False)
    assert len(rest) == 2 and set(read_records(path)["key"]) == {s.key for s in subnets}


def test_preempted_runs_are_discarded_and_counted(monkeypatch):
    core = importlib.import_module("dynasearch_runtime.protocol")
    switches = [0]
    monkeypatch.setattr(core, "_preemptions", lambda: switches[0])
    state = {"i": 0}

    def run():
        state["i"] += 1
        if state["i"] % 4 == 0:
            switches[0] += 1  # every 4th run: another process took the core meanwhile

    p = Protocol(
        min_runs=3,
        max_runs=8,
        max_seconds=100,
        rel_ci=1e-9,
        runs_per_visit=4,
        rewarm_runs=0,
        warmup_min=0,
        warmup_max=0,
    )
    out = time_interleaved([("a", run)], p, random.Random(0))
    assert out["a"]["n_runs"] == 8 and out["a"]["disturbed_runs"] == 2
    always = Protocol(
        min_runs=3,
        max_runs=8,
        max_seconds=100,
        rel_ci=1e-9,
        runs_per_visit=2,
        rewarm_runs=0,
        warmup_min=0,
        warmup_max=0,
        max_disturbed=6,
    )

    def busy():
        switches[0] += 1

    out = time_interleaved([("b", busy)], always, random.Random(0))
    # Too busy: stops after max_disturbed and keeps the disturbed runs, flagged by their count.
    assert out["b"]["disturbed_runs"] == 6 and out["b"]["n_runs"] == 6 and out["b"]["converged"] is False


def test_an_anchor_whose_every_run_was_preempted_keeps_its_runs(monkeypatch):
    """A machine so busy that every anchor run is preempted: the anchor keeps its disturbed runs (as a
    config does) instead of losing the speed correction and failing its row."""
    core = importlib.import_module("dynasearch_runtime.protocol")
    switches = [0]
    monkeypatch.setattr(core, "_preemptions", lambda: switches[0])
    p = Protocol(min_runs=3, max_runs=6, max_seconds=100, rel_ci=1e-9, runs_per_visit=2, rewarm_runs=0,
                 warmup_min=0, warmup_max=0)  # fmt: skip

    def busy():
        switches[0] += 1

    config, anchor = core._State("c", lambda: None, []), core._State("a", busy, [])
    core._interleave([config], p, random.Random(0), anchor)
    assert config.times and not config.disturbed  # the config was never preempted
    assert anchor.disturbed >= 2 and anchor.kept_disturbed and len(anchor.times) == anchor.disturbed
    assert core._result(anchor, p)["n_runs"] == anchor.disturbed
    never = core._State("n", busy, [])
    never.disturbed, never.done = 5, True
    assert core._result(never, p)["error"] == (
        "no undisturbed timed run: all 5 were preempted by other processes (the machine is too busy)"
    )


def test_an_anchor_that_kept_preempted_runs_gives_no_speed_index(monkeypatch):
    """Every anchor run preempted (kept, flagged by the count) times the machine's load, not its speed:
    dividing the configs by it would make them look faster, so the run has no speed index."""
    core = importlib.import_module("dynasearch_runtime.protocol")
    switches = [0]
    monkeypatch.setattr(core, "_preemptions", lambda: switches[0])

    def busy():
        switches[0] += 1

    p = Protocol(min_runs=3, max_runs=6, max_seconds=100, rel_ci=1e-9, runs_per_visit=2, rewarm_runs=0,
                 warmup_min=0, warmup_max=0)  # fmt: skip
    anchor = Item("a", {"key": "a"}, lambda: busy)
    rows = measure_items(  # the anchor asked for too: its own row is written
        [Item("c", {"key": "c"}, lambda: lambda: None), anchor], p, lambda rows: None, anchor=anchor, reference_ms=1e-6
    )
    by = {r["key"]: r for r in rows}
    assert by["a"]["status"] == "ok" and by["a"]["disturbed_runs"] >= 2  # the anchor's row is kept, flagged
    assert math.isnan(by["c"]["speed_index"]) and by["a"]["anchor_key"] == ""


def test_measure_times_the_anchor_and_verify_reports_speed(tmp_path):
    from dynabert.subnet import SubnetConfig
    from predictors import VERIFY_COLUMNS, read_raw_timings, verify_latency

    space = SearchSpace.default(SHAPE)
    subnets = uniform_configs(space, 3, seed=0)
    path = tmp_path / "records.csv"
    st = BackendSettings(backend="torch", batch=1, seq_len=8)
    rows = measure(SHAPE, subnets, st, path, FAST, progress=False)
    full = SubnetConfig.full(SHAPE)
    assert len(rows) == 3 and full.key not in set(rows["key"])  # the anchor is timed, not recorded, unless asked for
    assert (rows["anchor_key"] == full.key).all() and (rows["speed_index"] == 1.0).all()
    assert (rows["corrected_median_ms"] > 0).all() and (rows["speed_spread"] >= 1.0).all()
    raw_files = list((tmp_path / "records.raw").glob("*.csv"))
    assert len(raw_files) == 1
    keys = {k for k, *_ in read_raw_timings(str(raw_files[0]))}
    assert keys == {s.key for s in subnets} | {full.key}
    # Verification: measured again (not skipped), against the first run's anchor as the reference.
    out = verify_latency(SHAPE, [subnets[1], full], st, path, FAST, progress=False)
    assert list(out.columns) == list(VERIFY_COLUMNS) and out["key"].tolist() == [subnets[1].key, full.key]
    assert (out["status"] == "ok").all() and out["speed_index"].between(0.3, 3).all()
    assert (out["p90_ms"] >= out["median_ms"] * 0.999).all()
    assert len(read_records(path)) == 5


def test_measure_rejects_sequences_beyond_the_positions(tmp_path):
    with pytest.raises(MeasurementError, match="--seq-len 65 is longer than the backbone's 64 positions"):
        measure(
            SHAPE,
            uniform_configs(SearchSpace.default(SHAPE), 1),
            BackendSettings(backend="torch", seq_len=65),
            tmp_path / "r.csv",
            FAST,
            progress=False,
        )


def test_measure_rejects_a_bad_anchor(tmp_path):
    with pytest.raises(MeasurementError, match="anchor must be 'full', a SubnetConfig or None; got 'biggest'"):
        measure(
            SHAPE,
            uniform_configs(SearchSpace.default(SHAPE), 1),
            BackendSettings(backend="torch", seq_len=8),
            tmp_path / "r.csv",
            FAST,
            anchor="biggest",
            progress=False,
        )
