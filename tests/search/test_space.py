"""The search space encoded for Optuna (search/space.py): round trip, repair, zero-width layers,
and the 12 grid points enqueued exactly once (also when the same search is run again)."""

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # searchkit (tests/ is on the path, tests/search is not)

from searchkit import cli, count_grid_trials, search_args  # noqa: E402

from dynabert.subnet import BackboneShape, SubnetConfig
from search.errors import SearchError
from search.space import SpaceOptions, decode, encode, grid_points, param_names

pytest_plugins = [
    "searchkit"
]  # its session fixtures, shared by every module (importing them would copy them per module)

SHAPE = BackboneShape(
    num_layers=4, num_heads=4, head_dim=8, hidden_size=32, intermediate_size=64, vocab_size=20, max_positions=64
)


def params(keep, heads, ffn):
    p = {}
    for i, (k, h, f) in enumerate(zip(keep, heads, ffn)):
        p.update({f"l{i}_keep": k, f"l{i}_heads": h, f"l{i}_ffn": f})
    return p


def test_encode_decode_round_trip():
    space = SpaceOptions().build(SHAPE)
    rng = random.Random(0)
    for _ in range(200):
        s = space.sample(rng)
        p = encode(s, space)
        assert sorted(p) == sorted(param_names(space))
        assert decode(p, space) == s
    for _, _, s in grid_points(space):
        assert decode(encode(s, space), space) == s


def test_encode_refuses_a_config_outside_the_space():
    space = SpaceOptions(head_choices=(2, 4)).build(SHAPE)
    with pytest.raises(SearchError, match="outside the search space"):
        encode(SubnetConfig((0,), (3,), (64,)), space)


def test_decode_names_a_missing_parameter():
    space = SpaceOptions().build(SHAPE)
    p = params([True] * 4, [4] * 4, [64] * 4)
    del p["l2_ffn"]
    with pytest.raises(SearchError, match="parameter set lacks 'l2_ffn'"):
        decode(p, space)


def test_min_layers_repair_is_deterministic_and_keeps_lowest_index_layers():
    space = SpaceOptions(min_layers=3).build(SHAPE)
    # Only layer 3 kept: layers 0 and 1 (the lowest dropped indices) are added with their own widths.
    p = params([False, False, False, True], [1, 2, 3, 4], [16, 32, 48, 64])
    first = decode(p, space)
    assert first == SubnetConfig((0, 1, 3), (1, 2, 4), (16, 32, 64))
    assert all(decode(dict(p), space) == first for _ in range(5))
    # Nothing kept at all: layers 0..2.
    none_kept = decode(params([False] * 4, [1, 2, 3, 4], [16, 32, 48, 64]), space)
    assert none_kept.layers == (0, 1, 2)
    # Enough kept: no repair.
    assert decode(params([True, False, True, True], [1, 2, 3, 4], [16, 32, 48, 64]), space).layers == (0, 2, 3)


def test_kept_layer_with_no_heads_and_no_ffn_decodes_as_dropped():
    space = SpaceOptions(head_choices=(0, 2, 4), ffn_choices=(0, 32, 64)).build(SHAPE)
    kept_empty = decode(params([True, True, True, False], [2, 0, 4, 4], [32, 0, 64, 64]), space)
    dropped = decode(params([True, False, True, False], [2, 4, 4, 4], [32, 64, 64, 64]), space)
    assert kept_empty == dropped == SubnetConfig((0, 2), (2, 4), (32, 64))
    assert kept_empty.key == dropped.key
    # A layer with heads but no FFN (or the reverse) still computes: it stays.
    assert decode(params([True, True, False, False], [2, 2, 4, 4], [32, 0, 64, 64]), space).layers == (0, 1)


def test_repair_skips_empty_layers():
    space = SpaceOptions(head_choices=(0, 2), ffn_choices=(0, 32), min_layers=2).build(SHAPE)
    got = decode(params([False, False, False, True], [0, 2, 2, 2], [0, 32, 0, 32]), space)
    assert got.layers == (1, 3)  # layer 0 computes nothing, so layer 1 is the lowest repairable one


@pytest.mark.parametrize(
    "opts, message",
    [
        (SpaceOptions(ffn_choices=(32,), ffn_step=16), "either FFN choices or an FFN step"),
        (SpaceOptions(ffn_step=65), "FFN step must be an integer in 1..64"),
        (SpaceOptions(min_layers=5), "min layers must be in 1..4"),
        (SpaceOptions(head_choices=(0,), ffn_choices=(0,)), "all 0"),
        (SpaceOptions(head_choices=(5,)), r"a head choice must be an integer in 0\.\.4; got 5"),
    ],
)
def test_bad_space_options(opts, message):
    with pytest.raises(SearchError, match=message):
        opts.build(SHAPE)


def test_ffn_step():
    assert SpaceOptions(ffn_step=16).build(SHAPE).ffn_choices == (16, 32, 48, 64)


def test_grid_points_are_the_paper_twelve():
    space = SpaceOptions().build(SHAPE)
    pts = grid_points(space)
    assert len(pts) == 12 and len({s.key for _, _, s in pts}) == 12
    assert {(w, d) for w, d, _ in pts} == {(w, d) for w in (1.0, 0.75, 0.5, 0.25) for d in (1.0, 0.75, 0.5)}


def test_grid_enqueued_exactly_once_even_after_a_rerun(fast_tmp, sk_run, sk_predictor):
    out = fast_tmp / "results"
    args = search_args(sk_run, sk_predictor, out, "--no-verify", "--sampler", "random")
    assert cli(*args, "--trials", 12) == 0
    assert count_grid_trials(out) == 12
    assert cli(*args, "--trials", 14) == 0  # the same search, resumed to more trials
    assert count_grid_trials(out) == 12
    import pandas as pd

    trials = pd.read_csv(out / "trials.csv", dtype={"grid": str, "key": str})
    assert len(trials) == 14
    grid = trials[trials["grid"].fillna("") != ""]
    assert sorted(grid["trial"])[:12] == list(range(12))  # the grid came first
    assert grid["key"].nunique() == 12
