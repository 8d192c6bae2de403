"""The serving latency table measured on this machine (dynasearch_runtime/calibrate.py): every
(config, batch, bucket) cell timed with the one protocol, ordered, cached per bundle and machine."""

from __future__ import annotations

import json
import os
import time

import pytest

from dynasearch_runtime.calibrate import cache_path, calibrate, load_table, save_table, table_identity
from dynasearch_runtime.policy import PolicyError


def _spin(ms: float) -> None:
    end = time.perf_counter() + ms / 1000.0
    while time.perf_counter() < end:
        pass


def runner(per_token_us: float):
    """A fake model: its time grows with the texts and their padded length, as a real one's does."""
    return lambda batch, bucket: lambda: _spin(0.05 + per_token_us * batch * bucket / 1000.0)


ACC = {"big": 0.9, "small": 0.8}
RUNNERS = {"big": runner(4.0), "small": runner(1.0)}


def test_calibration_times_every_cell_within_its_budget_and_orders_the_table():
    t0 = time.perf_counter()
    table, info = calibrate(RUNNERS, ACC, batches=(1, 4, 16), buckets=(16, 64), budget_s=3.0)
    assert time.perf_counter() - t0 < 3.0 * 2  # the budget bounds the timing (warm-up and overheads aside)
    assert info["cells"] == 12 and info["runs"] >= 36
    assert table.batches == (1, 4, 16) and table.buckets == (16, 64)
    for key in ACC:
        for L in (16, 64):
            col = [table.ms[(key, b, L)] for b in (1, 4, 16)]
            assert col == sorted(col)  # a bigger batch never costs less
        assert table.ms[(key, 16, 16)] <= table.ms[(key, 16, 64)]
    # 4x the work per token: the big config is clearly slower on the heaviest cell
    assert table.ms[("big", 16, 64)] > 2 * table.ms[("small", 16, 64)]
    assert table.fastest == "small" and table.by_accuracy[0] == "big"


def test_bad_calibration_settings_are_refused():
    with pytest.raises(PolicyError, match=r"a calibration batch must be an integer in 1\.\.4096; got 0"):
        calibrate(RUNNERS, ACC, batches=(0,))
    with pytest.raises(PolicyError, match=r"calibration budget must be a number in \(0, 86400\] s; got 0"):
        calibrate(RUNNERS, ACC, budget_s=0)

    def broken(batch, bucket):
        def run():
            raise RuntimeError("out of memory")

        return run

    with pytest.raises(PolicyError, match=r"config big failed at batch 1, length 16: .*out of memory"):
        calibrate({"big": broken}, {"big": 0.9}, batches=(1,), buckets=(16,), budget_s=0.5)


def test_the_cache_is_this_bundles_on_this_machine_and_never_an_error(tmp_path, monkeypatch):
    table, info = calibrate(RUNNERS, ACC, batches=(1, 2), buckets=(16,), budget_s=0.5)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    ident = table_identity("d" * 64, "fp1", (1, 2), (16,))
    path = cache_path(str(bundle), "d" * 64, "fp1")
    assert path == str(bundle / ".serving" / "latency-fp1.json")
    save_table(path, table, ident, info)
    back = load_table(path, ident)
    assert back is not None and back.ms == table.ms and back.accuracy == table.accuracy
    # another machine, bundle or grid: not used
    assert load_table(path, table_identity("d" * 64, "fp2", (1, 2), (16,))) is None
    assert load_table(path, table_identity("d" * 64, "fp1", (1, 2, 4), (16,))) is None
    # damaged: measured again, not an error
    doc = json.loads(open(path).read())
    for damage in ({"cells": [["big", 1, 16, -1.0]]}, {"cells": [["big", 1.5, 16, 1.0]]}, {"accuracy": []}):
        open(path, "w").write(json.dumps({**doc, **damage}))
        assert load_table(path, ident) is None, damage
    open(path, "w").write("{cut")
    assert load_table(path, ident) is None
    # a read-only bundle: the user's cache folder
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(os, "access", lambda p, mode: False)
    assert cache_path(str(bundle), "d" * 64, "fp1") == str(
        tmp_path / "cache" / "dynasearch" / f"latency-{'d' * 16}-fp1.json"
    )
