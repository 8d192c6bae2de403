"""Records: round trip, documented schema, refusals (another schema, mixed settings, bad latencies)."""

from __future__ import annotations

import pytest
from latency_helpers import MACHINE, additive_ms, records, rows

from dynabert.space import SearchSpace
from dynasearch_runtime.schema import RECORD_FIELDS, append_rows
from predictors import RECORD_COLUMNS, RecordsError, read_records
from predictors.records import check_one_target, ok_records, repeatability, schema_markdown
from predictors.samplers import uniform_configs

SUBNETS = uniform_configs(SearchSpace.default(__import__("latency_helpers").SHAPE), 6, seed=3)


def test_round_trip_keeps_values_and_types(tmp_path):
    r = rows(SUBNETS, additive_ms)
    df = records(tmp_path / "r.csv", r)
    assert list(df.columns) == list(RECORD_COLUMNS)
    assert len(df) == 6
    assert df["median_ms"].tolist() == pytest.approx([x["median_ms"] for x in r])
    assert df["converged"].dtype == bool and df["threads"].dtype.kind == "i"
    assert df["subnet"].tolist() == [s.to_json() for s in SUBNETS]
    # Appending keeps the old rows.
    append_rows(str(tmp_path / "r.csv"), rows(SUBNETS[:2], additive_ms, batch=2))
    assert len(read_records(tmp_path / "r.csv")) == 8


def test_schema_is_documented():
    md = schema_markdown()
    assert all(f"`{name}`" in md for name, _, _ in RECORD_FIELDS)


def test_another_schema_is_refused(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("key,latency\nabc,1.0\n")
    with pytest.raises(RecordsError, match="another schema.*missing columns"):
        read_records(p)


def test_rows_of_another_schema_version_are_refused(tmp_path):
    r = rows(SUBNETS[:1], additive_ms)
    r[0]["schema"] = "dynasearch-latency-records/99"
    append_rows(str(tmp_path / "r.csv"), r)
    with pytest.raises(RecordsError, match="records/99"):
        read_records(tmp_path / "r.csv")


def test_missing_file():
    with pytest.raises(RecordsError, match="does not exist"):
        read_records("/nonexistent/records.csv")


def test_mixed_fingerprints_refused(tmp_path):
    other = dict(MACHINE, cpu_model="Another CPU")
    df = records(tmp_path / "r.csv", rows(SUBNETS, additive_ms) + rows(SUBNETS, additive_ms, machine=other))
    with pytest.raises(RecordsError, match="mixed fingerprints or settings.*Another CPU"):
        check_one_target(df, allow_shapes=False)


def test_mixed_threads_refused(tmp_path):
    df = records(tmp_path / "r.csv", rows(SUBNETS, additive_ms) + rows(SUBNETS, additive_ms, threads=2))
    with pytest.raises(RecordsError, match="threads=2"):
        check_one_target(df, allow_shapes=False)


def test_mixed_shapes_need_across_shapes(tmp_path):
    df = records(tmp_path / "r.csv", rows(SUBNETS, additive_ms) + rows(SUBNETS, additive_ms, batch=4))
    with pytest.raises(RecordsError, match=r"mix input shapes.*\(1, 16\), \(4, 16\)"):
        check_one_target(df, allow_shapes=False)
    check_one_target(df, allow_shapes=True)


@pytest.mark.parametrize(
    "bad,match",
    [
        (float("nan"), r"row 3 \(line 4\): median_ms is ''; expected a value"),  # NaN is written as an empty cell
        (
            0.0,
            r"1 record\(s\) have a NaN, zero or negative latency, e\.g\. key \w+ median_ms=0\.0; first at row 3 \(line 4\)",
        ),
        (-1.5, r"NaN, zero or negative latency, e\.g\. key \w+ median_ms=-1\.5; first at row 3"),
    ],
)
def test_bad_latencies_refused(tmp_path, bad, match):
    r = rows(SUBNETS, additive_ms)
    r[2]["median_ms"] = bad
    append_rows(str(tmp_path / "r.csv"), r)
    with pytest.raises(RecordsError, match=match):
        read_records(tmp_path / "r.csv")
    # A DataFrame built by other means is checked again before fitting.
    df = records(tmp_path / "ok.csv", rows(SUBNETS, additive_ms))
    df.loc[2, "median_ms"] = bad
    with pytest.raises(RecordsError, match="NaN, zero or negative latency"):
        ok_records(df)


def test_failed_rows_are_kept_but_not_used(tmp_path):
    r = rows(SUBNETS, additive_ms)
    r[0].update(status="failed", error="MemoryError: x", median_ms="")
    df = records(tmp_path / "r.csv", r)
    assert (df["status"] == "failed").sum() == 1
    assert len(ok_records(df)) == 5


def test_repeatability_hand_computed(tmp_path):
    a = records(tmp_path / "a.csv", rows(SUBNETS[:4], lambda s, b, t: 10.0))
    b = records(tmp_path / "b.csv", rows(SUBNETS[:4], lambda s, b, t: 10.0))
    b.loc[0, "median_ms"] = 10.5  # 4.9% apart: outside +-3%
    r = repeatability(a, b)
    assert r["configs"] == 4 and r["within"] == 0.75
    assert r["max_rel_diff"] == pytest.approx(0.5 / 10.25)


def test_records_temporaries_are_named_so_the_next_command_can_clean_them(tmp_path, monkeypatch):
    """The runtime's atomic writer names its temporary as dynabert.io does (.NAME.ds<host>-<pid>-*.tmp):
    a measure killed mid-write leaves a file that the next command writing in the folder recognises
    as a dead process's and removes (a random name could never be proven dead)."""
    import os

    from dynabert.io import _TEMP_NAME, remove_stale_temporaries
    from dynasearch_runtime import schema

    names = []
    replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (names.append(os.path.basename(a)), replace(a, b))[1])
    schema.write_text_atomic(str(tmp_path / "records.csv"), "x\n")
    assert len(names) == 1 and _TEMP_NAME.fullmatch(names[0]), names
    dead = names[0].replace(f"-{os.getpid()}-", "-999999999-")  # a process id no process has
    (tmp_path / dead).write_text("half a row")
    remove_stale_temporaries(tmp_path / "other-output.json")
    assert not (tmp_path / dead).exists() and (tmp_path / "records.csv").read_text() == "x\n"
