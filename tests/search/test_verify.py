"""Verified answers (search/verify.py): the candidate loop with a fake measurement, the bias
warning, and the real `dynasearch search --target-latency` path on the tiny model."""

import json
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # searchkit

from searchkit import additive_ms, cli, fit_predictor_dir, search_args, this_machine  # noqa: E402

from dynabert.subnet import SubnetConfig
from search.verify import Measured, bias_warning, verify_candidates

pytest_plugins = [
    "searchkit"
]  # its session fixtures, shared by every module (importing them would copy them per module)

SUBS = [
    SubnetConfig((0, 1, 2), (4, 4, 4), (64, 64, 64)),
    SubnetConfig((0, 1), (4, 2), (64, 32)),
    SubnetConfig((0,), (2,), (32,)),
    SubnetConfig((1,), (1,), (16,)),
]


def candidates(subs=SUBS) -> pd.DataFrame:
    return pd.DataFrame(
        [{"key": s.key, "subnet": s.to_json(), "metric_full": 90 - i, "predicted_ms": 5.0} for i, s in enumerate(subs)]
    )


class FakeMeasure:
    def __init__(self, ms: dict):
        self.ms, self.calls = ms, []

    def __call__(self, subnets):
        self.calls.append([s.key for s in subnets])
        return {s.key: Measured(s.key, self.ms[s.key] * 1.1, self.ms[s.key], 1.0) for s in subnets}


def test_rejects_a_candidate_that_misses_the_target_and_takes_the_next():
    fake = FakeMeasure({SUBS[0].key: 6.0, SUBS[1].key: 4.5, SUBS[2].key: 3.0, SUBS[3].key: 1.0})
    v = verify_candidates(candidates(), 5.0, fake, {}, group=1)
    assert v.answer["key"] == SUBS[1].key  # the first (best metric) measured 6.0 > 5.0: rejected
    assert v.tried == [SUBS[0].key, SUBS[1].key]
    assert fake.calls == [[SUBS[0].key], [SUBS[1].key]]
    assert v.measured[SUBS[0].key].judged(False) == 6.0


def test_judges_raw_or_corrected_latency():
    fake = FakeMeasure({s.key: 4.8 for s in SUBS})  # corrected 4.8, raw 5.28
    assert verify_candidates(candidates(), 5.0, fake, {}).answer["key"] == SUBS[0].key
    assert verify_candidates(candidates(), 5.0, FakeMeasure({s.key: 4.8 for s in SUBS}), {}, raw=True).answer is None


def test_groups_and_known_measurements():
    known = {SUBS[0].key: Measured(SUBS[0].key, 9.0, 9.0, None)}
    fake = FakeMeasure({s.key: 9.0 for s in SUBS})
    v = verify_candidates(candidates(), 5.0, fake, known, group=3, max_candidates=4)
    assert v.answer is None
    assert v.tried == [s.key for s in SUBS]
    assert fake.calls == [[SUBS[1].key, SUBS[2].key], [SUBS[3].key]]  # the known one is not measured again


def test_max_candidates():
    fake = FakeMeasure({s.key: 9.0 for s in SUBS})
    v = verify_candidates(candidates(), 5.0, fake, {}, max_candidates=2)
    assert v.tried == [SUBS[0].key, SUBS[1].key] and v.answer is None


def test_bias_warning():
    assert bias_warning([1.0, 2.0, 3.0, 4.0], [1.1, 2.2, 3.3, 4.4]) is not None
    msg = bias_warning([1.0, 2.0, 3.0, 4.0], [1.1, 2.2, 3.3, 4.4])
    assert "10.0% above the predictions" in msg and "refit" in msg
    assert bias_warning([1.0, 2.0, 3.0, 4.0], [1.04, 2.08, 3.12, 4.16]) is None  # within 5%
    assert bias_warning([1.0, 2.0, 3.0, 4.0], [0.9, 1.8, 2.7, 3.6]) is None  # below
    assert bias_warning([1.0, 2.0, 3.0, 4.0], [2.0, 0.5, 0.5, 4.0]) is None  # not systematic
    assert bias_warning([1.0], [1.2]) is None  # one point within its noise says nothing
    assert "above the predictions" in bias_warning([1.0], [2.0])  # one point far off (e.g. 40x on a tiny model) does


def test_verify_refuses_another_machine(sk_run, sk_predictor, fast_tmp, capsys):
    out = fast_tmp / "r"
    assert cli(*search_args(sk_run, sk_predictor, out, "--trials", 12, "--target-latency", "4ms")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "Test CPU" in err and "--no-verify" in err  # names the predictor's machine and the way out
    assert not (out / "search.json").exists()


def test_search_target_latency_returns_a_verified_answer(sk_run, sk_local_predictor, fast_tmp, capsys):
    out = fast_tmp / "r"
    t0 = time.monotonic()
    rc = cli(
        *search_args(sk_run, sk_local_predictor, out, "--trials", 14, "--target-latency", "4ms", "--max-candidates", 3)
    )
    secs = time.monotonic() - t0
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "answer: (verified on this machine)" in text
    meta = json.loads((out / "search.json").read_text())
    a = meta["answer"]
    assert meta["verified"] and meta["met"] and a["verified"]
    assert a["measured_ms"] is not None and a["measured_ms"] <= 4.0 and a["predicted_ms"] <= 4.0
    assert meta["fingerprint"]["cpu_model"] == this_machine()["cpu_model"]
    measured = pd.read_csv(out / "measured.csv")
    assert a["key"] in set(measured["key"].astype(str))  # rows a next fit-predictor can read
    front = pd.read_csv(out / "front.csv", dtype={"key": str})
    assert front.loc[front["key"] == a["key"], "measured_ms"].notna().all()
    assert secs < 60, f"the verified search took {secs:.0f} s"
    # One thread: verified with the cpu clock, judged on the wall time of the undisturbed runs.
    row = measured[measured["key"].astype(str) == a["key"]].iloc[-1]
    assert json.loads(row["protocol"])["clock"] == "cpu" and a["verify_clock"] == "cpu"
    assert 0 < a["undisturbed_runs"] <= a["timed_runs"] == row["n_runs"] and 0 <= a["busy_share"] <= 1
    assert a["measured_raw_ms"] == pytest.approx(row["quiet_wall_median_ms"])


@pytest.fixture(scope="session")
def optimistic_predictor(sk_base, sk_fast):
    """Predicts 1000x faster than the tiny model runs on this machine: nothing can meet its answers."""
    return fit_predictor_dir(
        sk_base, sk_fast / "optimistic", machine=this_machine(), fn=lambda s, b, q: additive_ms(s, b, q) / 1000
    )


def test_nothing_meets_the_target(sk_run, optimistic_predictor, fast_tmp, capsys):
    out = fast_tmp / "r"
    rc = cli(
        *search_args(
            sk_run, optimistic_predictor, out, "--trials", 12, "--target-latency", "4us", "--max-candidates", 2
        )
    )
    cap = capsys.readouterr()
    assert rc == 1
    assert "no config met 0.004 ms when measured" in cap.out and "the fastest config found" in cap.out
    assert "predicted" in cap.out and "measured" in cap.out
    # (The bias warning needs two measured configs; this tiny model's front holds one, see test_bias_warning.)
    meta = json.loads((out / "search.json").read_text())
    assert meta["met"] is False and meta["answer"] is None


def test_speed_correction_only_within_plausible_drift():
    from search.verify import Measured, drift_warning

    drift = Measured("a", raw_ms=11.0, corrected_ms=10.0, speed_index=1.1)
    assert drift.judged(raw=False) == 10.0 and drift.judged(raw=True) == 11.0
    off = Measured("b", raw_ms=5.0, corrected_ms=0.005, speed_index=1000.0)  # not drift: a predictor 1000x off
    assert off.judged(raw=False) == 5.0
    assert drift_warning({"a": drift}) is None
    assert "judged on RAW" in drift_warning({"a": drift, "b": off})


# --------------------------------------------------------------------- verification on a busy machine
def _row(clock="cpu", **cells):
    base = {
        "key": "k",
        "median_ms": 8.88,  # the CPU median (cpu clock) or the wall median
        "p90_ms": 9.768,
        "corrected_median_ms": 8.0,  # speed factor 8.0 / 8.88
        "speed_index": 1.1,
        "n_runs": 40,
        "disturbed_runs": 0,
        "busy_share": 0.5,
        "wall_median_ms": 17.19,
        "quiet_runs": 12,
        "quiet_wall_median_ms": 9.0,
        "protocol": json.dumps({"clock": clock}),
    }
    return {**base, **cells}


def test_cpu_clock_rows_are_judged_on_the_wall_time_of_undisturbed_runs():
    from search.verify import measured_from_row

    m = measured_from_row(_row(), "p50")
    assert m.clock == "cpu" and m.raw_ms == 9.0 and not m.busy_throughout  # not 8.88 (CPU) nor 17.19 (all runs)
    assert m.corrected_ms == pytest.approx(9.0 * 8.0 / 8.88) and m.judged(raw=True) == 9.0
    assert (m.undisturbed_runs, m.runs, m.busy_share) == (12, 40, 0.5)
    assert measured_from_row(_row(), "p90").raw_ms == pytest.approx(9.0 * 1.1)  # the row's p90 / median, on wall
    # Busy throughout (fewer than 3 undisturbed runs): the wall median of ALL runs, pessimistic, flagged.
    busy = measured_from_row(_row(quiet_runs=2, quiet_wall_median_ms=9.1), "p50")
    assert busy.raw_ms == 17.19 and busy.busy_throughout and busy.undisturbed_runs == 2
    none = measured_from_row(_row(quiet_runs=0, quiet_wall_median_ms=""), "p50")
    assert none.raw_ms == 17.19 and none.busy_throughout
    # A wall-clock row: its own median; the busy share is the share of preempted (discarded) runs.
    wall = measured_from_row(_row("wall", median_ms=8.76, disturbed_runs=10, busy_share="", quiet_runs=""), "p50")
    assert (
        wall.raw_ms == 8.76 and wall.busy_share == pytest.approx(0.2) and (wall.runs, wall.undisturbed_runs) == (50, 40)
    )


def test_busy_note_says_when_the_machine_was_busy_and_what_was_judged():
    from search.verify import busy_note, measured_from_row

    quiet = measured_from_row(_row(busy_share=0.0, quiet_runs=40), "p50")
    assert busy_note({"k": quiet}) is None
    note = busy_note({"k": measured_from_row(_row(), "p50")})
    assert "\n" not in note and "busy while verifying: 50% of the measured configs' rounds" in note
    assert "12 of 40 timed runs were undisturbed and the targets were judged on their wall time" in note
    thr = busy_note({"k": measured_from_row(_row(quiet_runs=1), "p50")})
    assert "1 config(s) (k) had fewer than 3 undisturbed runs" in thr and "pessimistic" in thr
    wall = busy_note({"k": measured_from_row(_row("wall", disturbed_runs=30, busy_share=""), "p50")})
    assert "43% of the timed runs were preempted" in wall and "multi-thread" in wall
    assert busy_note({"k": quiet}, keys=["other"]) is None  # only the judged keys count


def test_configs_judged_on_busy_runs_only_are_measured_again():
    known = {SUBS[0].key: Measured(SUBS[0].key, 9.0, 9.0, None, clock="cpu", busy_throughout=True)}
    fake = FakeMeasure({s.key: 4.0 for s in SUBS})
    v = verify_candidates(candidates(), 5.0, fake, known, group=1)
    assert fake.calls == [[SUBS[0].key]] and v.answer["key"] == SUBS[0].key


def test_verification_takes_the_cpu_clock_where_the_setting_allows_it():
    from predictors import BackendSettings
    from search.verify import verify_protocol

    assert verify_protocol(BackendSettings(backend="onnxruntime", threads=1)).clock == "cpu"
    assert verify_protocol(BackendSettings(backend="torch", threads=1)).clock == "cpu"
    assert verify_protocol(BackendSettings(backend="onnxruntime", threads=2)).clock == "wall"
    assert verify_protocol(BackendSettings(backend="onnxruntime", threads=1, spinning=True)).clock == "wall"


def test_a_cpu_clock_predictor_is_named_in_one_warning_line(sk_run, sk_predictor, fast_tmp, capsys):
    """A predictor fitted on CPU-clock records (measure --clock cpu) prices CPU time while the target and
    verification are wall time: the search says so once; a wall-clock predictor gets no such line."""
    import shutil

    cpu = Path(shutil.copytree(sk_predictor, fast_tmp / "cpu-pred"))
    doc = json.loads((cpu / "predictor.json").read_text())
    doc["meta"]["clock"] = "cpu"  # as fit-predictor writes it for CPU-clock records
    (cpu / "predictor.json").write_text(json.dumps(doc))
    assert cli(*search_args(sk_run, cpu, fast_tmp / "r", "--trials", 12, "--no-verify")) == 0
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if "CPU-clock" in line]
    assert said == [
        f"warning: predictor {cpu} was fitted on CPU-clock records (--clock cpu): it predicts CPU time, while the "
        "target and its verification are wall time (the two agree only while the inference thread keeps its core)"
    ], err
    search_json = json.loads((fast_tmp / "r" / "search.json").read_text())
    assert any("CPU-clock" in w for w in search_json["warnings"])
    assert cli(*search_args(sk_run, sk_predictor, fast_tmp / "w", "--trials", 12, "--no-verify")) == 0
    assert "CPU-clock" not in capsys.readouterr().err
