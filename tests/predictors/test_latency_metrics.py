"""Evaluation metrics against hand-computed values; held-out splits."""

from __future__ import annotations

import math

import numpy as np
import pytest
from latency_helpers import SHAPE, additive_ms, records, rows

from dynabert.space import SearchSpace
from predictors import RecordsError, metrics, split_holdout
from predictors.samplers import layer_table_configs, uniform_configs


def test_metrics_hand_computed():
    y = [10.0, 20.0, 40.0, 80.0]
    p = [11.0, 19.0, 40.0, 100.0]  # relative errors 10%, 5%, 0%, 25%
    m = metrics(y, p)
    assert m["n"] == 4
    assert m["mape"] == pytest.approx(10.0)
    assert m["rmse_ms"] == pytest.approx(math.sqrt((1 + 1 + 0 + 400) / 4))
    assert m["within_5"] == 0.5 and m["within_10"] == 0.75
    assert m["max_ape"] == pytest.approx(25.0)
    assert m["kendall_tau"] == pytest.approx(1.0) and m["spearman"] == pytest.approx(1.0)


def test_rank_metrics_hand_computed():
    # One swapped pair out of 6: tau = (5 - 1) / 6; rank differences (1, 1, 0, 0): rho = 1 - 6 * 2 / (4 * 15).
    m = metrics([1.0, 2.0, 3.0, 4.0], [2.0, 1.0, 3.0, 4.0])
    assert m["kendall_tau"] == pytest.approx(4 / 6)
    assert m["spearman"] == pytest.approx(0.8)


def test_metrics_reject_bad_measurements():
    with pytest.raises(RecordsError, match="finite and > 0"):
        metrics([1.0, 0.0], [1.0, 1.0])


def test_split_keeps_configs_and_shapes_apart(tmp_path):
    space = SearchSpace.default(SHAPE)
    subs = uniform_configs(space, 20, seed=1)
    layer = layer_table_configs(space)
    r = rows(layer, additive_ms, sampler="layer-table")
    for b, t in [(1, 8), (2, 8), (1, 16), (4, 16), (2, 32)]:
        r += rows(subs, additive_ms, batch=b, seq=t)
    df = records(tmp_path / "r.csv", r)
    train, test = split_holdout(df, 0.3, seed=0)
    assert not set(train["key"]) & set(test["key"])
    assert set(k.key for k in layer) <= set(train["key"])
    train, test = split_holdout(df, 0.4, seed=0, holdout_shapes=True, max_train=30)
    assert len(train) == 30
    tr = set(zip(train["batch"], train["seq_len"]))
    te = set(zip(test["batch"], test["seq_len"]))
    assert not (tr & te) and not set(train["key"]) & set(test["key"]) - {k.key for k in layer}
    assert np.isfinite(test["median_ms"]).all()


def test_pick_best_uses_cross_validated_error_not_held_out():
    import pandas as pd

    from predictors.evaluate import pick_best

    table = pd.DataFrame(
        [
            {"kind": "lut", "error": "", "cv_mape": 3.0, "mape": 0.5},  # best held out, worse in CV: not picked
            {"kind": "layer-regression", "error": "", "cv_mape": 1.0, "mape": 2.0},
            {"kind": "gbdt", "error": "too few records", "cv_mape": float("nan"), "mape": float("nan")},
            {"kind": "hybrid", "error": "", "cv_mape": float("nan"), "mape": 0.1},
        ]
    )
    assert pick_best(table) == "layer-regression"
    # No kind has CV scores: the held-out MAPE decides.
    assert pick_best(table.assign(cv_mape=float("nan"))) == "hybrid"
