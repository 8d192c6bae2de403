"""Config samplers: grid, uniform per-layer, FLOP-range cover, layer table."""

from __future__ import annotations

import numpy as np
import pytest
from latency_helpers import SHAPE

from dynabert.space import SearchSpace
from dynabert.subnet import count_flops
from predictors import MeasurementError, sample_configs
from predictors.samplers import (
    flop_covering_configs,
    grid_configs,
    is_layer_table_config,
    layer_table_configs,
    uniform_configs,
)

SPACE = SearchSpace.default(SHAPE)


def test_grid_has_12_distinct_points_with_full_model():
    g = grid_configs(SHAPE)
    assert len(g) == 12 and len({s.key for s in g}) == 12


def test_uniform_distinct_valid_and_seeded():
    a = uniform_configs(SPACE, 30, seed=5)
    assert len({s.key for s in a}) == 30 and all(SPACE.contains(s) for s in a)
    assert [s.key for s in a] == [s.key for s in uniform_configs(SPACE, 30, seed=5)]


def test_flop_cover_is_even():
    n = 20
    subs = flop_covering_configs(SPACE, n, seed=0, batch=1, seq_len=16)
    flops = np.array(sorted(count_flops(SHAPE, s, 1, 16) for s in subs))
    assert len({s.key for s in subs}) == n
    span = flops[-1] - flops[0]
    lo = count_flops(SHAPE, min(subs, key=lambda s: count_flops(SHAPE, s, 1, 16)), 1, 16)
    assert lo == flops[0]
    # Evenly spread: no gap much wider than span / (n - 1), unlike uniform sampling which bunches in the middle.
    assert np.diff(flops).max() <= 3 * span / (n - 1)
    assert all(SPACE.contains(s) for s in subs)


def test_layer_table_configs():
    cfgs = layer_table_configs(SPACE)
    assert len(cfgs) == 1 + len(SPACE.head_choices) + len(SPACE.ffn_choices)
    assert all(is_layer_table_config(s) for s in cfgs)


def test_unknown_sampler():
    with pytest.raises(MeasurementError, match="unknown sampler 'random'; allowed: grid, uniform, flops, layer-table"):
        sample_configs("random", SPACE, 5)


def test_too_many_for_the_space():
    tiny = SearchSpace(SHAPE, (4,), (64,), allow_drop=False)
    with pytest.raises(MeasurementError, match="fewer than 5 distinct configs"):
        uniform_configs(tiny, 5)
