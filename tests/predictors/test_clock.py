"""The cpu clock (`Protocol.clock`): validation, single-thread settings only, a real measurement
whose records say cpu and carry the busy-round columns, and the busy-round flag on runs that sleep
(wall time without CPU time) against runs that only spin."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import math
import random
import sys
import time
import warnings

import pytest
from latency_helpers import FAST_PROTOCOL, SHAPE

from dynabert.space import SearchSpace
from dynasearch_runtime.driver import Item, measure_items
from dynasearch_runtime.protocol import BUSY_RATIO, busy_rounds, check_clock, quiet_walls, time_interleaved
from dynasearch_runtime.schema import CLOCK_COLUMNS, QUIET_COLUMNS, RECORD_COLUMNS, append_rows, read_rows
from predictors import BackendSettings, MeasurementError, Protocol, measure, read_records
from predictors.measure import busy_warning
from predictors.samplers import uniform_configs

FAST_CPU = dataclasses.replace(FAST_PROTOCOL, clock="cpu")
# Never converges: every config is timed in the same 5 rounds (15 runs, 3 per visit), one warm-up run.
FIVE_ROUNDS_CPU = Protocol(min_runs=6, max_runs=15, max_seconds=100, rel_ci=1e-9, runs_per_visit=3, rewarm_runs=0,
                           warmup_min=1, warmup_max=1, clock="cpu")  # fmt: skip


def test_clock_is_validated_and_recorded():
    assert Protocol().clock == "wall" and Protocol(clock="cpu").clock == "cpu"
    with pytest.raises(MeasurementError, match="unknown clock 'x'; allowed: wall, cpu"):
        Protocol(clock="x")
    assert json.loads(Protocol(clock="cpu").to_json())["clock"] == "cpu"
    old = json.loads(Protocol().to_json())
    del old["clock"]  # the protocol of records written before the clock existed
    assert Protocol.from_dict(old).clock == "wall"
    for bad in (None, "fast", [1]):  # a kit.json's "protocol": null is one line, not a TypeError
        with pytest.raises(MeasurementError, match=r"^protocol settings must be a JSON object; got "):
            Protocol.from_dict(bad)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"threads": 2}, r"threads 2 with --clock cpu: the cpu clock needs 1 thread"),
        ({"threads": 1, "spinning": True}, r"spinning on with --clock cpu"),
        ({"threads": 1, "device": "cuda"}, r"device cuda with --clock cpu"),
    ],
)
def test_cpu_clock_needs_a_single_thread_cpu_setting(kwargs, match):
    with pytest.raises(MeasurementError, match=match) as e:
        check_clock("cpu", **kwargs)
    assert "\n" not in str(e.value)
    check_clock("wall", **kwargs)  # the wall clock takes any setting
    check_clock("cpu", threads=1)


def test_measure_refuses_the_cpu_clock_with_two_threads(tmp_path):
    path = tmp_path / "records.csv"
    with pytest.raises(MeasurementError, match=r"threads 2 with --clock cpu"):
        measure(
            SHAPE,
            uniform_configs(SearchSpace.default(SHAPE), 1),
            BackendSettings(backend="onnxruntime", threads=2, seq_len=8),
            path,
            FAST_CPU,
            progress=False,
        )
    assert not path.exists()
    # The driver refuses it too (the kit's runner measures through it, with its own --threads).
    item = Item("a", {"key": "a", "threads": 2, "spinning": False, "device": "cpu"}, lambda: lambda: None)
    with pytest.raises(MeasurementError, match=r"threads 2 with --clock cpu"):
        measure_items([item], FAST_CPU, lambda rows: None)


def test_cli_protocol_takes_the_clock():
    from dynasearch.commands.common import add_protocol_args, protocol_from_args

    p = argparse.ArgumentParser()
    add_protocol_args(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, nargs="+", default=[1])
    assert protocol_from_args(p.parse_args([])).clock == "wall"
    assert protocol_from_args(p.parse_args(["--clock", "cpu"])).clock == "cpu"
    with pytest.raises(MeasurementError, match=r"threads 2 with --clock cpu"):
        protocol_from_args(p.parse_args(["--clock", "cpu", "--threads", "1", "2"]))
    with pytest.raises(SystemExit):
        p.parse_args(["--clock", "x"])


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_measure_with_the_cpu_clock_writes_its_columns(tmp_path, backend):
    subnets = uniform_configs(SearchSpace.default(SHAPE), 2, seed=0)
    path = tmp_path / "records.csv"
    rows = measure(SHAPE, subnets, BackendSettings(backend=backend, seq_len=8), path, FAST_CPU, progress=False)
    assert len(rows) == 2 and (rows["status"] == "ok").all()
    assert all(json.loads(p)["clock"] == "cpu" for p in rows["protocol"])
    assert (rows["median_ms"] > 0).all() and (rows["wall_median_ms"] > 0).all()
    assert rows["busy_rounds"].notna().all() and rows["busy_share"].between(0, 1).all()
    assert (rows["quiet_runs"] <= rows["n_runs"]).all() and (rows["quiet_wall_median_ms"].dropna() > 0).all()
    assert (rows["corrected_median_ms"] > 0).all()
    df = read_records(path)
    assert list(df.columns) == list(RECORD_COLUMNS) and set(CLOCK_COLUMNS) <= set(df.columns)
    # A wall-clock run into the same file leaves the clock columns empty (and the protocol says wall).
    wall = Protocol(**{**FAST_CPU.__dict__, "clock": "wall"})
    more = measure(SHAPE, subnets, BackendSettings(backend=backend, seq_len=16), path, wall, progress=False)
    assert more["busy_share"].isna().all() and more["wall_median_ms"].isna().all()
    assert all(json.loads(p)["clock"] == "wall" for p in more["protocol"])
    # Resuming that setting with the other clock keeps the rows (the clock is not a setting) and says so.
    with pytest.warns(
        UserWarning, match=r"2 config\(s\) of threads 1 batch 1 seq 16 were already measured .* with the wall clock"
    ):
        again = measure(SHAPE, subnets, BackendSettings(backend=backend, seq_len=16), path, FAST_CPU, progress=False)
    assert again.attrs["already_measured"] == 2 and len(again) == 0


def test_records_without_the_clock_columns_still_read(tmp_path):
    """A records file of the version before the clock (no busy or wall-median columns) reads, with them empty."""
    from latency_helpers import additive_ms, rows

    path = tmp_path / "new.csv"
    append_rows(str(path), rows(uniform_configs(SearchSpace.default(SHAPE), 2, seed=1), additive_ms))
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    keep = [i for i, c in enumerate(header) if c not in CLOCK_COLUMNS]

    old = io.StringIO()
    w = csv.writer(old, lineterminator="\n")
    for rec in csv.reader(io.StringIO(path.read_text())):
        w.writerow([rec[i] for i in keep])
    path.write_text(old.getvalue())
    got = read_rows(str(path))
    assert len(got) == 2 and all(r[c] == "" for r in got for c in CLOCK_COLUMNS)
    assert len(read_records(path)) == 2
    # The version before the quiet columns (busy rounds and wall median only) reads too, with them empty.
    path.write_text("")
    append_rows(str(path), rows(uniform_configs(SearchSpace.default(SHAPE), 2, seed=1), additive_ms))
    keep = [i for i, c in enumerate(header) if c not in QUIET_COLUMNS]
    mid = io.StringIO()
    w = csv.writer(mid, lineterminator="\n")
    for rec in csv.reader(io.StringIO(path.read_text())):
        w.writerow([rec[i] for i in keep])
    path.write_text(mid.getvalue())
    assert all(r["quiet_runs"] == "" for r in read_rows(str(path))) and len(read_records(path)) == 2
    # Only part of the clock columns: named as missing.
    part = [c for c in RECORD_COLUMNS if c != "busy_share"]
    path.write_text(",".join(part) + "\n")
    with pytest.raises(MeasurementError, match=r"missing columns \['busy_share'\]"):
        read_rows(str(path))
    part = [c for c in RECORD_COLUMNS if c != "quiet_runs"]
    path.write_text(",".join(part) + "\n")
    with pytest.raises(MeasurementError, match=r"missing columns \['quiet_runs'\]"):
        read_rows(str(path))


def _spin(ms: float) -> None:
    """Burn `ms` of this thread's CPU time."""
    end = time.thread_time_ns() + int(ms * 1e6)
    while time.thread_time_ns() < end:
        pass


def test_busy_rounds_counts_rounds_whose_wall_time_exceeds_the_cpu_time():
    # (round, cpu ms, discarded) with wall ms: round 0 quiet, round 1 two of three runs lost the core.
    log = [(0, 1.0, False), (0, 1.0, False), (0, 1.0, False), (1, 1.0, False), (1, 1.0, False), (1, 1.0, False)]
    walls = [1.01, 1.0, 1.3, 1.0, 1.6, 2.0]
    assert busy_rounds(log, walls) == (1, 2)
    assert busy_rounds(log, [1.0] * 6) == (0, 2)
    assert busy_rounds(log, [BUSY_RATIO] * 6) == (0, 2)  # at the threshold: not busy


def test_sleeping_runs_are_busy_spinning_runs_are_not():
    """Sleep costs wall time but no CPU time: a run that sleeps 5 ms and spins 1 ms is flagged busy
    in every round (wall / CPU ~ 6); one that only spins 1 ms has a ratio ~ 1 and is not."""

    def sleepy():
        time.sleep(0.005)
        _spin(1.0)

    out = time_interleaved([("sleepy", sleepy), ("spin", lambda: _spin(1.0))], FIVE_ROUNDS_CPU, random.Random(0))
    s, q = out["sleepy"], out["spin"]
    assert s["n_runs"] == 15 and q["n_runs"] == 15
    # The CPU-clock median holds the spinning only; the wall median holds the sleep too.
    assert 0.9 < s["median_ms"] < 2.0 and s["wall_median_ms"] > 5.0
    assert s["busy_rounds"] == 5 and s["busy_share"] == 1.0
    # Spinning: its CPU-clock median holds the 1 ms of work whatever the host's load. Whether its rounds
    # count as busy depends on what else runs on this core (a loaded CI host does preempt it), so that
    # is not asserted here: the exact counting is tested on fixed numbers above.
    assert 0.9 < q["median_ms"] < 2.0 and q["wall_median_ms"] >= 0.9 * q["median_ms"]


def test_quiet_walls_keep_the_runs_that_held_their_core():
    runs = [(1.0, 1.0), (1.0, 1.15), (1.0, 1.16), (2.0, 5.0), (0.0, 1.0)]  # (CPU ms, wall ms)
    assert quiet_walls(runs) == [1.0, 1.15]  # at the threshold: undisturbed; no CPU time: left out


def test_runs_that_lose_their_core_are_left_out_of_the_quiet_wall_median():
    """Two of three calls sleep 5 ms (wall time, no CPU time) before spinning 1 ms: the wall median of
    all runs holds the sleep, the quiet wall median (the runs that kept their core) does not."""
    calls = []

    def sometimes_sleepy():
        calls.append(len(calls) % 3 != 0)
        if calls[-1]:
            time.sleep(0.005)
        _spin(1.0)

    s = time_interleaved([("mixed", sometimes_sleepy)], FIVE_ROUNDS_CPU, random.Random(0))["mixed"]
    slept = sum(calls[1:])  # the first call was the warm-up
    assert s["n_runs"] == 15 and slept == 10
    assert 1 <= s["quiet_runs"] <= 15 - slept  # a loaded host may preempt a spinning run too, never the reverse
    assert s["wall_median_ms"] > 5.0 and 0.9 < s["quiet_wall_median_ms"] < 1.15 * 2.0


def test_min_quiet_runs_keeps_timing_until_enough_undisturbed_runs():
    """Every run but each fifth sleeps 5 ms (wall time, no CPU time): with min_quiet_runs 3 a config
    capped at 6 runs keeps going (past max_runs) until it has 3 undisturbed runs; without, it stops at 6."""
    with pytest.raises(MeasurementError, match=r"min_quiet_runs 3 needs the cpu clock"):
        Protocol(min_quiet_runs=3)
    with pytest.raises(MeasurementError, match=r"min_quiet_runs must be <= 3 x max_runs \(120\); got 1000"):
        Protocol(min_quiet_runs=1000, clock="cpu")
    for bad in ("3", None, True, 2.5):  # a hand-edited kit.json: one line, not a TypeError
        with pytest.raises(MeasurementError, match=r"protocol setting min_quiet_runs must be an integer; got "):
            Protocol(min_quiet_runs=bad, clock="cpu")

    def rarely_quiet():
        calls = []

        def run():
            calls.append(len(calls) % 5 == 0)
            if not calls[-1]:
                time.sleep(0.005)
            _spin(0.5)

        return run

    base = dict(min_runs=3, max_runs=6, max_seconds=100, rel_ci=1e-9, runs_per_visit=1, rewarm_runs=0,
                warmup_min=0, warmup_max=0, clock="cpu")  # fmt: skip
    plain = time_interleaved([("a", rarely_quiet())], Protocol(**base), random.Random(0))["a"]
    assert plain["n_runs"] == 6 and plain["quiet_runs"] <= 2
    waited = time_interleaved([("a", rarely_quiet())], Protocol(**base, min_quiet_runs=3), random.Random(0))["a"]
    assert waited["quiet_runs"] >= 3 and waited["n_runs"] >= 11  # runs 1, 6, 11 are the quiet ones
    assert waited["quiet_wall_median_ms"] < 0.5 * 1.15 * 2  # the undisturbed runs' wall: no sleep in it

    def never_quiet():
        time.sleep(0.002)
        _spin(0.2)

    # Never an undisturbed run: the hard cap of 3 x max_runs stops it (the anchor's time is not in the seconds cap).
    capped = time_interleaved([("b", never_quiet)], Protocol(**base, min_quiet_runs=3), random.Random(0))["b"]
    assert capped["n_runs"] == 18 and capped["quiet_runs"] == 0 and math.isnan(capped["quiet_wall_median_ms"])


def test_verification_leaves_the_busy_warning_to_the_search(tmp_path, monkeypatch):
    """measure() warns of a busy machine; verify_latency (the search's verification, which judges wall time and
    says so in its own note) does not repeat the contradicting line."""
    from predictors import verify_latency

    # `predictors.measure` is the function (see predictors/__init__.py): patch its module through sys.modules.
    monkeypatch.setattr(sys.modules["predictors.measure"], "busy_warning", lambda rows: "the machine was busy (test)")
    subnets = uniform_configs(SearchSpace.default(SHAPE), 1, seed=0)
    settings = BackendSettings(backend="onnxruntime", seq_len=8)
    with pytest.warns(UserWarning, match=r"the machine was busy \(test\)"):
        measure(SHAPE, subnets, settings, tmp_path / "m.csv", FAST_CPU, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        verify_latency(SHAPE, subnets, settings, tmp_path / "v.csv", FAST_CPU, progress=False)


def test_busy_warning_when_over_a_third_of_the_rounds_were_busy():
    import pandas as pd

    def frame(shares):
        return pd.DataFrame(
            {
                "status": "ok",
                "settings_id": "s1",
                "threads": 1,
                "batch": 1,
                "seq_len": 128,
                "busy_share": shares,
                "median_ms": 8.88,
                "wall_median_ms": 17.19,
            }
        )

    line = busy_warning(frame([0.5, 0.6]))
    assert line is not None and "\n" not in line
    assert "busy in 55% of the rounds of threads 1 batch 1 seq 128" in line and "1.94" in line
    assert busy_warning(frame([0.2, 0.3])) is None
    assert busy_warning(frame([float("nan")] * 2)) is None  # wall-clock rows: no busy share


def test_kit_carries_the_cpu_clock_to_its_runner(tmp_path):
    """kit.json holds the protocol with its clock; the runner (no torch, no project imports) times on
    it, writes records whose protocol says cpu with the clock columns, and refuses 2 threads."""
    from test_latency_kit import run_runner

    from predictors import write_kit

    kit = tmp_path / "kit"
    subs = uniform_configs(SearchSpace.default(SHAPE), 2, seed=4)
    prot = Protocol(**{**FAST_CPU.__dict__, "max_runs": 4})
    write_kit(kit, SHAPE, subs, sampler="uniform", batches=[1], seq_lens=[8], protocol=prot, progress=False)
    assert json.loads((kit / "kit.json").read_text())["protocol"]["clock"] == "cpu"
    out, res = run_runner(kit, "--threads", "1")
    assert out["code"] in (0, None) and out["loaded"] == [], res.stderr
    df = read_records(kit / "records.csv")
    assert len(df) == 2 and (df["status"] == "ok").all()
    assert all(json.loads(p)["clock"] == "cpu" for p in df["protocol"])
    assert (df["wall_median_ms"] > 0).all() and df["busy_share"].between(0, 1).all()
    out, res = run_runner(kit, "--threads", "2", "--no-resume")
    assert out["code"] == 2 and "threads 2 with --clock cpu" in res.stderr


# ---- issue 23: one predictor fits one clock, and records it
def _clock_rows(clock: str, run_id: str, seed: int) -> list[dict]:
    """Records rows of one run timed with `clock` (its protocol cell says so, as `measure --clock` writes)."""
    from latency_helpers import additive_ms, rows

    out = rows(uniform_configs(SearchSpace.default(SHAPE), 30, seed=seed), additive_ms)
    for r in out:
        r.update(protocol=Protocol(clock=clock).to_json(), run_id=run_id)
    return out


def test_records_of_two_clocks_are_refused_naming_both_and_how_to_split(tmp_path):
    from latency_helpers import records

    from predictors import RecordsError, fit_and_evaluate, make_predictor

    df = records(tmp_path / "r.csv", _clock_rows("wall", "wallrun", 1) + _clock_rows("cpu", "cpurun", 2))
    msg = (
        r"^records mix clocks: 30 row\(s\) timed with the CPU clock \(--clock cpu\), run\(s\) cpurun; 30 row\(s\) "
        r"timed with the wall clock, run\(s\) wallrun; one predictor fits one clock: fit the records of one clock "
        r"only \(give only the files, or keep only the rows of the runs, of that clock\), or measure again into "
        r"another --out with one --clock$"
    )
    with pytest.raises(RecordsError, match=msg):
        make_predictor("layer-regression").fit(df)
    with pytest.raises(RecordsError, match=msg):
        fit_and_evaluate(df, ["layer-regression"], tmp_path / "out", plots=False)
    assert not (tmp_path / "out").exists()


def test_a_predictor_records_its_clock_and_an_older_one_reads_as_wall(tmp_path):
    from latency_helpers import records

    from predictors import PredictorError, load_predictor, make_predictor

    cpu = make_predictor("layer-regression").fit(records(tmp_path / "c.csv", _clock_rows("cpu", "c", 1)))
    wall = make_predictor("layer-regression").fit(records(tmp_path / "w.csv", _clock_rows("wall", "w", 1)))
    assert (cpu.fitted_on.clock, wall.fitted_on.clock) == ("cpu", "wall")
    cpu.save(tmp_path / "cpu")
    doc = json.loads((tmp_path / "cpu" / "predictor.json").read_text())
    assert doc["meta"]["clock"] == "cpu" and load_predictor(tmp_path / "cpu").fitted_on.clock == "cpu"
    # A predictor written before the clock was kept: no key, read as wall, and no warning about it.
    del doc["meta"]["clock"]
    (tmp_path / "cpu" / "predictor.json").write_text(json.dumps(doc))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_predictor(tmp_path / "cpu").fitted_on.clock == "wall"
    doc["meta"]["clock"] = "sundial"
    (tmp_path / "cpu" / "predictor.json").write_text(json.dumps(doc))
    with pytest.raises(PredictorError, match=r"key meta\.clock is \"sundial\"; expected 'wall' or 'cpu'"):
        load_predictor(tmp_path / "cpu")
