"""Per-round speed correction on a fake clock: the machine slows down by known factors in known
rounds; corrected medians recover the true latencies, the anchor's speed index recovers the
injected factor; raw timings round-trip; records of the older schema load as uncorrected."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from latency_helpers import additive_ms, rows

from dynasearch_runtime.driver import Item, measure_items
from dynasearch_runtime.schema import (
    OLD_SCHEMAS,
    RECORD_COLUMNS,
    SPEED_COLUMNS,
    append_rows,
    read_raw_timings,
    write_raw_timings,
)
from dynasearch_runtime.speed import round_factors, two_way_fit
from predictors import Protocol, read_records

TRUE_MS = {f"c{i}": 1.0 + i for i in range(9)}  # what each config costs on an undisturbed machine
ANCHOR_MS = 12.0


class FakeClock:
    """_time_ms replacement: a run of config k in round r takes TRUE[k] * factor(r) ms."""

    def __init__(self, factor):
        self.factor, self.round, self.current = factor, -1, None

    def set_round(self, r: int) -> None:
        self.round = r

    def time_ms(self, run) -> float:
        run()
        true = ANCHOR_MS if self.current == "anchor" else TRUE_MS[self.current]
        return true * (self.factor(self.round) if self.round >= 0 else 1.0)


# Every config gets exactly 4 visits (the CI cannot converge: rel_ci is tiny) of 2 timed runs.
PROTOCOL = Protocol(
    min_runs=8,
    max_runs=8,
    min_visits=4,
    rel_ci=1e-9,
    runs_per_visit=2,
    rewarm_runs=0,
    max_seconds=86_400,  # never reached (a day: the bounds table's longest cap)
    warmup_min=1,
    warmup_max=1,
    warmup_window=1,
    chunk_size=3,
    discard_disturbed=False,
)


def run_fake(monkeypatch, factor, reference=None):
    core = importlib.import_module("dynasearch_runtime.protocol")
    clock = FakeClock(factor)
    monkeypatch.setattr(core, "_time_ms", clock.time_ms)
    monkeypatch.setattr(core, "_preemptions", lambda: 0)

    def item(key):
        def run():
            clock.current = key

        return Item(key, {"key": key, "run_id": "r", "settings_id": "s"}, lambda: run)

    raw: list = []
    out = measure_items(
        [item(k) for k in TRUE_MS],
        PROTOCOL,
        lambda r: None,
        anchor=item("anchor"),
        reference_ms=reference,
        on_raw=lambda t: raw.__setitem__(slice(None), t),
        on_round=clock.set_round,
    )
    return {r["key"]: r for r in out}, raw


def test_slow_chunk_corrected_through_the_anchor(monkeypatch):
    # 3 chunks of 3 configs, 4 rounds each: rounds 0-7 at normal speed, the third chunk's rounds 8-11
    # 30% slower (the host got busy), plus one stray slow round (2) in the first chunk.
    factor = lambda r: 1.3 if r >= 8 else 1.5 if r == 2 else 1.0  # noqa: E731
    by, raw = run_fake(monkeypatch, factor)
    assert len(by) == 9 and all(r["status"] == "ok" for r in by.values())
    raw_err = [abs(r["median_ms"] / TRUE_MS[k] - 1) for k, r in by.items()]
    corr_err = [abs(r["corrected_median_ms"] / TRUE_MS[k] - 1) for k, r in by.items()]
    assert max(corr_err) < 0.01  # corrected medians recover the true latencies
    assert max(raw_err) > 0.25  # the raw medians of the slow chunk do not
    first = next(iter(by.values()))
    assert first["speed_index"] == pytest.approx(1.0) and first["anchor_key"] == "anchor"  # first run: the reference
    assert first["anchor_ms"] == pytest.approx(ANCHOR_MS)
    assert first["speed_spread"] == pytest.approx(1.3, rel=0.01)
    assert {k for k, *_ in raw} == set(TRUE_MS) | {"anchor"}
    assert sum(1 for k, *_ in raw if k == "anchor") == 12 * 2  # the anchor: 2 timed runs in every one of the 12 rounds


def test_speed_index_equals_the_injected_factor(monkeypatch):
    # A later run on a machine 20% slower throughout, with two rounds slower still: the speed index
    # against the first run's anchor is 1.2 and the corrected medians are on the first run's scale.
    factor = lambda r: 1.2 * (1.25 if r in (1, 6) else 1.0)  # noqa: E731
    by, _ = run_fake(monkeypatch, factor, reference=ANCHOR_MS)
    for k, r in by.items():
        assert r["speed_index"] == pytest.approx(1.2, rel=0.01)
        assert r["corrected_median_ms"] == pytest.approx(TRUE_MS[k], rel=0.01)
        assert r["median_ms"] / TRUE_MS[k] > 1.19  # raw: the slow machine's numbers


def test_no_anchor_corrects_within_each_chunk(monkeypatch):
    core = importlib.import_module("dynasearch_runtime.protocol")
    clock = FakeClock(lambda r: 1.4 if r % 4 == 1 else 1.0)
    monkeypatch.setattr(core, "_time_ms", clock.time_ms)
    monkeypatch.setattr(core, "_preemptions", lambda: 0)

    def item(key):
        def run():
            clock.current = key

        return Item(key, {"key": key}, lambda: run)

    out = measure_items([item(k) for k in TRUE_MS], PROTOCOL, lambda r: None, on_round=clock.set_round)
    for r in out:
        assert r["corrected_median_ms"] == pytest.approx(TRUE_MS[r["key"]], rel=0.01)
        assert np.isnan(r["speed_index"]) and r["anchor_key"] == ""


def test_two_way_fit_recovers_two_way_effects():
    config = {"a": 0.0, "b": 1.0, "c": 2.0}
    rnd = {0: 0.0, 1: 0.3, 2: -0.1, 3: 0.0}
    cells = {(k, r): float(np.exp(config[k] + rnd[r])) for k in config for r in rnd if (k, r) != ("c", 2)}
    rows_, rounds = two_way_fit(cells)
    assert rounds[1] - rounds[0] == pytest.approx(0.3, abs=1e-9) and rounds[2] - rounds[0] == pytest.approx(
        -0.1, abs=1e-9
    )
    assert rows_["b"] - rows_["a"] == pytest.approx(1.0, abs=1e-9)
    cells[("a", 3)] *= 3.0  # one wild cell (x3) moves the effects by a few percent at most
    rows_, rounds = two_way_fit(cells)
    assert rows_["b"] - rows_["a"] == pytest.approx(1.0, abs=0.02)
    f = round_factors({"a": [(0, 1.0), (1, 2.0)], "b": [(0, 3.0), (1, 6.0)]})
    assert f[1] / f[0] == pytest.approx(2.0)


def test_raw_timings_round_trip(tmp_path):
    t = [("abc", 0, 0, 1.2345678901234, False), ("abc", 0, 1, 1.0 / 3.0, True), ("def", 3, 0, 10.0, False)]
    path = tmp_path / "r.raw" / "run-set.csv"
    write_raw_timings(str(path), t)
    assert read_raw_timings(str(path)) == t


def test_old_schema_records_load_as_uncorrected(tmp_path):
    from latency_helpers import SHAPE

    from dynabert.space import SearchSpace
    from predictors.samplers import uniform_configs

    r = rows(uniform_configs(SearchSpace.default(SHAPE), 3, seed=0), additive_ms)
    old_cols = [c for c in RECORD_COLUMNS if c not in SPEED_COLUMNS]
    lines = [",".join(old_cols)]
    for x in r:
        x = dict(x, schema=OLD_SCHEMAS[0])
        lines.append(",".join(f'"{x[c]}"' if "," in str(x[c]) or '"' in str(x[c]) else str(x[c]) for c in old_cols))
    path = tmp_path / "old.csv"
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(old_cols)
    for x in r:
        w.writerow([OLD_SCHEMAS[0] if c == "schema" else x[c] for c in old_cols])
    path.write_text(buf.getvalue())
    with pytest.warns(
        UserWarning, match=r"holds 3 row\(s\) of the older format dynasearch-latency-records/1 .*read as measured"
    ):
        df = read_records(path)
    assert list(df.columns) == list(RECORD_COLUMNS)
    assert df["corrected_median_ms"].tolist() == pytest.approx(df["median_ms"].tolist())
    assert df["speed_index"].isna().all() and (df["anchor_key"] == "").all()
    # Appending new rows keeps the old ones (marked with their schema) and writes the new header.
    append_rows(str(path), rows(uniform_configs(SearchSpace.default(SHAPE), 2, seed=5), additive_ms))
    with pytest.warns(UserWarning, match="older format"):
        df = read_records(path)
    assert len(df) == 5 and (df["schema"] == OLD_SCHEMAS[0]).sum() == 3
