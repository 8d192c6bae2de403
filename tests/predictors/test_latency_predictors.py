"""Each predictor kind fits a synthetic latency function with a known answer; persistence as JSON +
arrays; refusals (unfitted, too few records, another setting, truncated or unknown-version files)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from latency_helpers import SHAPE, additive_ms, records, rows

from dynabert.errors import OutputExistsError
from dynabert.space import SearchSpace
from dynabert.subnet import SubnetConfig
from predictors import PREDICTORS, PredictorError, load_predictor, make_predictor
from predictors._kinds import hat_basis
from predictors.samplers import layer_table_configs, uniform_configs

SPACE = SearchSpace.default(SHAPE)
TRAIN = uniform_configs(SPACE, 60, seed=1)
TEST = [s for s in uniform_configs(SPACE, 90, seed=2) if s.key not in {t.key for t in TRAIN}][:20]
LAYER = layer_table_configs(SPACE)


@pytest.fixture
def additive(tmp_path):
    return records(tmp_path / "r.csv", rows(LAYER, additive_ms, sampler="layer-table") + rows(TRAIN, additive_ms))


def mape(pred, subs, batch=1, seq=16):
    y = np.array([additive_ms(s, batch, seq) for s in subs])
    return float(np.mean(np.abs(pred - y) / y))


@pytest.mark.parametrize("kind", ["lut", "layer-regression", "hybrid"])
def test_additive_function_recovered_exactly(additive, kind):
    p = make_predictor(kind).fit(additive)
    assert mape(p.predict(TEST), TEST) < 1e-6


def test_lut_table_values(additive):
    p = make_predictor("lut", calibrate=False).fit(additive)
    assert p.base_ == pytest.approx(additive_ms(SubnetConfig((0,), (0,), (0,))))
    # One attention block with h heads costs 0.3 + 0.05 h + 0.001 h * 16 at batch 1, seq 16.
    assert dict(map(tuple, p.attn_)) == pytest.approx({h: 0.3 + 0.066 * h for h in SPACE.head_choices})


def test_gbdt_recovers_a_step_function(tmp_path):
    fn = lambda s, b, t: 2.0 if s.depth <= 2 else 5.0  # noqa: E731 - trees represent steps exactly
    df = records(tmp_path / "r.csv", rows(TRAIN, fn))
    p = make_predictor("gbdt").fit(df)
    pred = p.predict(TEST)
    want = np.array([fn(s, 1, 16) for s in TEST])
    assert np.max(np.abs(pred / want - 1)) < 1e-3


def test_layer_regression_across_shapes(tmp_path):
    shapes = [(1, 8), (2, 8), (1, 16), (4, 16), (2, 32), (1, 32)]
    r = []
    for b, t in shapes:
        r += rows(TRAIN[:30], additive_ms, batch=b, seq=t)
    df = records(tmp_path / "r.csv", r)
    p = make_predictor("layer-regression", across_shapes=True).fit(df)
    pred = p.predict(TEST, batch=[3] * len(TEST), seq_len=[24] * len(TEST))
    assert mape(pred, TEST, 3, 24) < 1e-6


def test_hat_basis_interpolates_and_extrapolates():
    knots = np.array([2.0, 4.0])
    np.testing.assert_allclose(
        hat_basis(np.array([1.0, 2.0, 3.0, 6.0]), knots), [[0.5, 0], [1, 0], [0.5, 0.5], [-1, 2]]
    )


def test_save_load_round_trip(additive, tmp_path):
    for kind in PREDICTORS:
        p = make_predictor(kind).fit(additive)
        p.save(tmp_path / kind)
        q = load_predictor(tmp_path / kind)
        np.testing.assert_allclose(q.predict(TEST), p.predict(TEST), rtol=1e-12)
        assert q.meta_["n_train"] == len(additive) and q.meta_["backend"] == "onnxruntime"
        assert q.conformal_quantile(0.9) == p.conformal_quantile(0.9)
    doc = json.loads((tmp_path / "hybrid" / "predictor.json").read_text())
    assert doc["version"] == 1 and doc["meta"]["threads"] == 1 and doc["meta"]["shapes"] == [[1, 16]]
    assert not list(tmp_path.glob("*/*.pkl"))


def test_save_refuses_existing_without_overwrite(additive, tmp_path):
    p = make_predictor("layer-regression").fit(additive)
    p.save(tmp_path / "p")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        p.save(tmp_path / "p")
    p.save(tmp_path / "p", overwrite=True)


def test_truncated_and_foreign_files(additive, tmp_path):
    make_predictor("layer-regression").fit(additive).save(tmp_path / "p")
    meta = tmp_path / "p" / "predictor.json"
    arrays = tmp_path / "p" / "arrays.npz"
    text = meta.read_text()
    meta.write_text(text[: len(text) // 2])
    with pytest.raises(PredictorError, match="truncated or not JSON"):
        load_predictor(tmp_path / "p")
    doc = json.loads(text)
    meta.write_text(json.dumps(dict(doc, version=7)))
    with pytest.raises(PredictorError, match="format version 7; this dynasearch reads version 1"):
        load_predictor(tmp_path / "p")
    meta.write_text(json.dumps(dict(doc, kind="transformer")))
    with pytest.raises(PredictorError, match="unknown predictor kind 'transformer'"):
        load_predictor(tmp_path / "p")
    meta.write_text(text)
    blob = arrays.read_bytes()
    arrays.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(PredictorError, match="truncated"):
        load_predictor(tmp_path / "p")
    with pytest.raises(PredictorError, match="not a predictor directory"):
        load_predictor(tmp_path)


def test_unfitted_predict_raises():
    with pytest.raises(PredictorError, match="not fitted"):
        make_predictor("gbdt").predict(TEST)


def test_unknown_kind():
    with pytest.raises(PredictorError, match="unknown predictor kind 'mlp'"):
        make_predictor("mlp")


@pytest.mark.parametrize("kind,n", [("layer-regression", 3), ("gbdt", 5), ("hybrid", 8)])
def test_too_few_records(tmp_path, kind, n):
    df = records(tmp_path / "r.csv", rows(TRAIN[:n], additive_ms))
    with pytest.raises(PredictorError, match=f"too few records to fit predictor '{kind}': {n} given"):
        make_predictor(kind).fit(df)


def test_lut_needs_layer_records(tmp_path):
    df = records(tmp_path / "r.csv", rows(TRAIN, additive_ms))
    with pytest.raises(PredictorError, match="--sampler layer-table"):
        make_predictor("lut").fit(df)


def test_lut_cannot_span_shapes():
    with pytest.raises(PredictorError, match="cannot be fitted across shapes"):
        make_predictor("lut", across_shapes=True)


def test_other_setting_refused_unless_forced(additive):
    p = make_predictor("layer-regression").fit(additive)
    row = additive.iloc[0].to_dict()
    p.check_target(row)
    with pytest.raises(PredictorError, match="threads: predictor 1, asked 2"):
        p.check_target(dict(row, threads=2))
    with pytest.warns(UserWarning, match="forced"):
        p.check_target(dict(row, cpu_model="Other"), force=True)
    with pytest.raises(PredictorError, match=r"fitted for \(batch, seq_len\) \[\(1, 16\)\]; asked \[\(8, 16\)\]"):
        p.predict(TEST, batch=8)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        p.predict(TEST, batch=8, force=True)
    assert any("forced" in str(x.message) for x in w)


def test_records_of_another_target_refused(additive, tmp_path):
    p = make_predictor("layer-regression").fit(additive)
    other = records(tmp_path / "o.csv", rows(TEST, additive_ms, threads=2))
    with pytest.raises(PredictorError, match=r"another fingerprint or setting \(threads: predictor 1, asked 2\)"):
        p.predict_records(other)


def test_conformal_quantile_and_coverage(additive):
    p = make_predictor("gbdt").fit(additive)
    p.conformal_scores_ = np.arange(1, 20) / 100  # 19 scores: 90% -> rank ceil(20 * 0.9) = 18
    assert p.conformal_quantile(0.9) == pytest.approx(0.18)
    assert p.conformal_quantile(0.99) == float("inf")
    pred, lo, hi = p.predict_interval(TEST[:3], 0.9)
    np.testing.assert_allclose(lo, pred * 0.82)
    np.testing.assert_allclose(hi, pred * 1.18)


def test_cross_validated_scores_exist(additive):
    for kind in PREDICTORS:  # every whole-model record held out once; the layer-table probes always trained on
        assert len(make_predictor(kind).fit(additive).conformal_scores_) == len(TRAIN), kind


def test_hybrid_stays_finite_when_its_linear_part_prices_a_config_at_zero(additive, tmp_path):
    # The empty layer-table config costs only the base; a linear part whose base coefficient is 0 (a
    # fold without that record) once turned the tree features into log(0) and every prediction into NaN.
    p = make_predictor("hybrid").fit(additive)
    p.linear_.coef_ = p.linear_.coef_.copy()
    p.linear_.coef_[0] = 0.0
    pred = p.predict(LAYER[:1] + TEST[:3])
    assert np.isfinite(pred).all() and (pred > 0).all()
    p.save(tmp_path / "h")
    np.testing.assert_allclose(load_predictor(tmp_path / "h").predict(LAYER[:1] + TEST[:3]), pred)


def test_metadata_names_widths_settings_and_machine(additive, tmp_path):
    from predictors import BackendSettings, check_this_machine, machine_matches, predictor_settings

    p = make_predictor("layer-regression").fit(additive)
    assert p.meta_["widths_seen"] == {
        "heads": sorted({h for s in LAYER + TRAIN for h in s.heads}),
        "ffn": sorted({f for s in LAYER + TRAIN for f in s.ffn}),
    }
    assert p.meta_["latency_column"] == "corrected_median_ms"
    p.save(tmp_path / "p")
    loaded = load_predictor(tmp_path / "p")
    assert loaded.meta_["widths_seen"] == p.meta_["widths_seen"]
    assert predictor_settings(loaded) == BackendSettings(backend="onnxruntime", threads=1, batch=1, seq_len=16)
    # The records were made on "Test CPU": this machine is another one, and the message names both.
    assert not machine_matches(loaded)
    with pytest.raises(
        PredictorError, match=r"cpu_model: predictor 'Test CPU'.*Predictor fingerprint \w+ .*this machine \w+ "
    ):
        check_this_machine(loaded)
    # An older predictor file without widths_seen still loads (the key is simply absent), and says so.
    doc = json.loads((tmp_path / "p" / "predictor.json").read_text())
    del doc["meta"]["widths_seen"]
    (tmp_path / "p" / "predictor.json").write_text(json.dumps(doc))
    with pytest.warns(UserWarning, match=r"written by an older dynasearch \(its metadata lacks widths_seen\)"):
        assert "widths_seen" not in load_predictor(tmp_path / "p").meta_


def test_anchor_reference_from_the_full_model_row_of_unanchored_records(tmp_path):
    """Older records carry no anchor: the full model's own (corrected) median becomes the reference
    a search's verification measures against; without the full model there is none."""
    full = SubnetConfig.full(SHAPE)
    df = records(
        tmp_path / "r.csv", rows(LAYER, additive_ms, sampler="layer-table") + rows(TRAIN + [full], additive_ms)
    )
    p = make_predictor("layer-regression").fit(df)
    assert p.meta_["anchor_reference"] == [
        {"batch": 1, "seq_len": 16, "key": full.key, "ms": pytest.approx(additive_ms(full))}
    ]
    df2 = records(tmp_path / "r2.csv", rows(LAYER, additive_ms, sampler="layer-table") + rows(TRAIN, additive_ms))
    assert make_predictor("layer-regression").fit(df2).meta_["anchor_reference"] == []


def test_fitted_on_is_the_metadata_typed(tmp_path):
    """predictor.fitted_on reads meta_ (the saved JSON) as a FittedOn: the same after a save and load;
    anchor_ms finds the reference of one (batch, seq_len, key) and None elsewhere."""
    from predictors import AnchorReference, FittedOn, WidthsSeen

    full = SubnetConfig.full(SHAPE)
    df = records(
        tmp_path / "r.csv", rows(LAYER, additive_ms, sampler="layer-table") + rows(TRAIN + [full], additive_ms)
    )
    p = make_predictor("layer-regression").fit(df)
    fo = p.fitted_on
    assert isinstance(fo, FittedOn)
    assert (fo.kind, fo.backend, fo.threads, fo.spinning) == ("layer-regression", "onnxruntime", 1, False)
    assert (fo.fingerprint, fo.target_id) == (p.meta_["fingerprint"], p.meta_["target_id"])
    assert (fo.shapes, fo.batches, fo.seq_lens, fo.across_shapes) == (((1, 16),), (1,), (16,), False)
    assert fo.widths_seen == WidthsSeen(
        tuple(sorted({h for s in LAYER + TRAIN for h in s.heads})),
        tuple(sorted({f for s in LAYER + TRAIN for f in s.ffn})),
    )
    assert fo.anchor_references == (AnchorReference(1, 16, full.key, pytest.approx(additive_ms(full))),)
    assert fo.anchor_ms(1, 16, full.key) == pytest.approx(additive_ms(full))
    assert fo.anchor_ms(2, 16, full.key) is None and fo.anchor_ms(1, 16, "other") is None
    assert fo.target == {f: p.meta_[f] for f in fo.target}
    with pytest.raises(AttributeError):
        fo.threads = 2  # frozen
    p.save(tmp_path / "p")
    assert load_predictor(tmp_path / "p").fitted_on == fo
    # An older file without widths_seen and anchor_reference: None and no reference.
    doc = json.loads((tmp_path / "p" / "predictor.json").read_text())
    del doc["meta"]["widths_seen"], doc["meta"]["anchor_reference"]
    (tmp_path / "p" / "predictor.json").write_text(json.dumps(doc))
    with pytest.warns(UserWarning, match="written by an older dynasearch"):
        old = load_predictor(tmp_path / "p").fitted_on
    assert old.widths_seen is None and old.anchor_references == () and old.anchor_ms(1, 16, full.key) is None
    with pytest.raises(PredictorError, match=r"predictor 'layer-regression' is not fitted"):
        _ = make_predictor("layer-regression").fitted_on


@pytest.mark.parametrize(
    "change, match",
    [
        (
            lambda m: dict(m, threads="one"),
            r'^predictor metadata: key meta\.threads is "one"; expected an integer in 1\.\.1024$',
        ),
        (
            lambda m: dict(m, spinning="off"),
            r'^predictor metadata: key meta\.spinning is "off"; expected true or false$',
        ),
        (
            lambda m: {k: v for k, v in m.items() if k != "fingerprint"},
            r"^predictor metadata: key meta\.fingerprint is missing$",
        ),
        (
            lambda m: dict(m, shapes=[[1]]),
            r"^predictor metadata: key meta\.shapes is \[\[1\]\]; expected a non-empty list",
        ),
        (
            lambda m: dict(m, widths_seen={"heads": [1]}),
            r"^predictor metadata: key meta\.widths_seen is .*'heads' and 'ffn'",
        ),
        (
            lambda m: dict(m, anchor_reference=[{"batch": 1, "seq_len": 16, "key": "k", "ms": -1}]),
            r"^predictor metadata: key meta\.anchor_reference\[0\]\.ms is -1; expected a number in \(0, .*\] ms$",
        ),
        (lambda m: [m], r"^predictor metadata: key meta is list; expected an object$"),
    ],
)
def test_fitted_on_from_meta_refuses_malformed_metadata(additive, change, match):
    from predictors import FittedOn

    meta = make_predictor("layer-regression").fit(additive, conformal=False).meta_
    assert FittedOn.from_meta(meta).fingerprint == meta["fingerprint"]
    with pytest.raises(PredictorError, match=match):
        FittedOn.from_meta(change(meta))
    with pytest.raises(PredictorError, match=r"^predictor file x\.json: key meta\.threads is 0;"):
        FittedOn.from_meta(dict(meta, threads=0), where="predictor file x.json")
