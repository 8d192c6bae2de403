import json
import math

import pytest

from dynabert.errors import InvalidSubnetError
from dynabert.subnet import (
    BackboneShape,
    SubnetConfig,
    count_flops,
    count_params,
    grid_table,
    paper_grid,
)

BERT_BASE = BackboneShape(num_layers=12, num_heads=12, head_dim=64, hidden_size=768, intermediate_size=3072)
MINILM = BackboneShape(num_layers=6, num_heads=12, head_dim=32, hidden_size=384, intermediate_size=1536)


# ------------------------------------------------------------------ grid rules (algorithm notes)
@pytest.mark.parametrize(
    "depth, layers",
    [
        (1.0, tuple(range(12))),
        (0.75, (0, 1, 2, 4, 5, 6, 8, 9, 10)),
        (0.5, (0, 2, 4, 6, 8, 10)),
    ],
)
def test_depth_rule_12_layers(depth, layers):
    assert SubnetConfig.from_grid(BERT_BASE, 1.0, depth).layers == layers


def test_depth_rule_matches_paper_drop_formula_12_layers():
    # Paper: drop layer d if (d+1) mod (1/(1-m_d)) == 0.
    for m_d in (0.75, 0.5):
        period = round(1 / (1 - m_d))
        expected = tuple(d for d in range(12) if (d + 1) % period != 0)
        assert SubnetConfig.from_grid(BERT_BASE, 1.0, m_d).layers == expected


@pytest.mark.parametrize("depth, layers", [(1.0, (0, 1, 2, 3, 4, 5)), (0.75, (0, 1, 2, 4)), (0.5, (0, 2, 4))])
def test_depth_rule_6_layers(depth, layers):
    # round(6 * 0.75) = round(4.5) = 4 with Python's half-to-even rounding, as in the reference.
    assert SubnetConfig.from_grid(MINILM, 1.0, depth).layers == layers


@pytest.mark.parametrize("width, heads, ffn", [(1.0, 12, 3072), (0.75, 9, 2304), (0.5, 6, 1536), (0.25, 3, 768)])
def test_width_rule_bert_base(width, heads, ffn):
    s = SubnetConfig.from_grid(BERT_BASE, width, 1.0)
    assert set(s.heads) == {heads} and set(s.ffn) == {ffn}


def test_width_rounding_is_half_to_even():
    # 12 * 0.625 = 7.5 -> 8 (even), 12 * 0.375 = 4.5 -> 4 (even); FFN follows the head rounding.
    assert SubnetConfig.from_grid(BERT_BASE, 0.625, 1).heads[0] == 8
    s = SubnetConfig.from_grid(BERT_BASE, 0.375, 1)
    assert s.heads[0] == 4 and s.ffn[0] == 4 * 256


def test_paper_grid_order_and_size():
    grid = paper_grid(MINILM)
    assert len(grid) == 12
    assert [(w, d) for w, d, _ in grid[:5]] == [(1.0, 1.0), (0.75, 1.0), (0.5, 1.0), (0.25, 1.0), (1.0, 0.75)]
    assert len({s.key for _, _, s in grid}) == 12


# ------------------------------------------------------------------ sizes (algorithm notes table)
@pytest.mark.parametrize(
    "w, d, total_m, encoder_m, gflops",
    [
        (1, 1, 109.5, 85.1, 22.35),
        (0.5, 1, 67.0, 42.5, 11.17),
        (1, 0.5, 67.0, 42.5, 11.17),
        (0.25, 0.5, 35.1, 10.7, 2.79),
    ],
)
def test_sizes_match_paper_table(w, d, total_m, encoder_m, gflops):
    s = SubnetConfig.from_grid(BERT_BASE, w, d)
    p = count_params(BERT_BASE, s)
    assert round(p["total"] / 1e6, 1) == total_m
    # The notes quote 42.5M for both (0.5, 1) = 42.55M and (1, 0.5) = 42.53M: compare to 0.1M.
    assert abs(p["encoder"] / 1e6 - encoder_m) <= 0.06
    assert round(count_flops(BERT_BASE, s, 1, 128) / 1e9, 2) == gflops


def test_flops_scale_with_batch():
    s = SubnetConfig.from_grid(MINILM, 0.5, 0.5)
    assert count_flops(MINILM, s, 8, 128) == 8 * count_flops(MINILM, s, 1, 128)


def test_grid_table_columns():
    t = grid_table(MINILM)
    assert len(t) == 12 and {"width", "depth", "key", "params_M", "GFLOPs"} <= set(t.columns)
    assert t.GFLOPs.iloc[0] == max(t.GFLOPs)


# ------------------------------------------------------------------ identity and JSON
def test_json_round_trip_and_canonical_form():
    s = SubnetConfig([0, 2, 5], [4, 12, 0], [100, 0, 1536])
    assert s.to_json() == '{"layers":[0,2,5],"heads":[4,12,0],"ffn":[100,0,1536]}'
    assert SubnetConfig.from_json(s.to_json()) == s
    assert SubnetConfig.from_dict(json.loads(json.dumps({**s.to_dict(), "key": s.key}))) == s


def test_key_is_stable_and_distinguishes():
    a = SubnetConfig((0, 1), (2, 2), (8, 8))
    assert a.key == SubnetConfig([0, 1], [2, 2], [8, 8]).key
    assert len(a.key) == 12 and all(c in "0123456789abcdef" for c in a.key)
    # The key is a pure function of the canonical JSON: pinned so tables from other runs still join.
    assert a.key == "861c2adc6209"
    assert a.key != SubnetConfig((0, 1), (2, 2), (8, 7)).key
    assert hash(a) == hash(SubnetConfig((0, 1), (2, 2), (8, 8)))


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(layers=(1, 0), heads=(1, 1), ffn=(1, 1)), "ascending"),
        (dict(layers=(0, 0), heads=(1, 1), ffn=(1, 1)), "duplicated"),
        (dict(layers=(), heads=(), ffn=()), "empty"),
        (dict(layers=(0, 1), heads=(1,), ffn=(1, 1)), "one entry per kept layer"),
        (dict(layers=(0,), heads=(-1,), ffn=(1,)), "'heads' must be >= 0"),
        (dict(layers=(0,), heads=(1.5,), ffn=(1,)), "must hold integers"),
        (dict(layers="01", heads=(1,), ffn=(1,)), "list of integers"),
    ],
)
def test_malformed_subnet_rejected(kwargs, message):
    with pytest.raises(InvalidSubnetError, match=message):
        SubnetConfig(**kwargs)


@pytest.mark.parametrize(
    "subnet, message",
    [
        (SubnetConfig((0, 6), (1, 1), (1, 1)), r"'layers' holds 6 .*allowed 0\.\.5"),
        (SubnetConfig((0,), (13,), (1,)), r"'heads' asks 13 for layer 0; allowed 0\.\.12"),
        (SubnetConfig((0,), (1,), (1537,)), r"'ffn' asks 1537 for layer 0; allowed 0\.\.1536"),
    ],
)
def test_validation_against_backbone(subnet, message):
    with pytest.raises(InvalidSubnetError, match=message):
        subnet.validate(MINILM)


@pytest.mark.parametrize("width, depth", [(0, 1), (1.01, 1), (-0.5, 1), (1, 0), (1, 1.5), (math.nan, 1), (1, math.inf)])
def test_grid_multipliers_outside_unit_interval(width, depth):
    with pytest.raises(InvalidSubnetError, match=r"must be in \(0, 1\]"):
        SubnetConfig.from_grid(MINILM, width, depth)


def test_grid_width_that_keeps_no_head():
    with pytest.raises(InvalidSubnetError, match="0 heads"):
        SubnetConfig.from_grid(MINILM, 0.04, 1)


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"layers": [0, 1], "heads": [1, 1], "ffn": [1', "malformed or truncated"),
        ("[1, 2]", "JSON object"),
        ('{"layers": [0], "heads": [1]}', r"lacks field\(s\) \['ffn'\]"),
        ('{"layers": [0], "heads": [1], "ffn": [1], "width": 1}', "unknown field"),
        ('{"layers": [0], "heads": [1], "ffn": [1], "key": "000000000000"}', "does not match"),
    ],
)
def test_bad_subnet_json(text, message):
    with pytest.raises(InvalidSubnetError, match=message):
        SubnetConfig.from_json(text)


def test_load_missing_file(tmp_path):
    with pytest.raises(InvalidSubnetError, match="cannot read subnet file"):
        SubnetConfig.load(tmp_path / "nope.json")
