"""The one reader per file kind of the latency side (issue 15): `read_records` (records CSV) and
`load_predictor` / `find_predictor` (a predictor directory, a fit-predictor output). Every damage is
ONE RecordsError / PredictorError line naming the file, the row (1-based) or key, and what was
expected; older formats load with a warning that says so; unknown versions are refused."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import warnings

import numpy as np
import pytest
from latency_helpers import SHAPE, additive_ms, records, rows

from dynabert.space import SearchSpace
from dynabert.subnet import BackboneShape, SubnetConfig
from dynasearch_runtime.schema import append_rows, check_records_path, read_rows
from predictors import (
    MeasurementError,
    PredictorError,
    RecordsError,
    find_predictor,
    load_predictor,
    make_predictor,
    read_records,
)
from predictors.measure import check_onnx_cache
from predictors.samplers import layer_table_configs, uniform_configs

SPACE = SearchSpace.default(SHAPE)
TRAIN = uniform_configs(SPACE, 30, seed=1)
LAYER = layer_table_configs(SPACE)


# ------------------------------------------------------------------------------------------ records
@pytest.fixture
def good(tmp_path):
    path = tmp_path / "r.csv"
    append_rows(str(path), rows(TRAIN[:6], additive_ms))
    return path


def edit(path, fn):
    table = list(csv.reader(io.StringIO(path.read_text())))
    fn(table)
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(table)
    path.write_text(buf.getvalue())
    return path


def cell(col, value, row=3):
    return lambda t: t[row].__setitem__(t[0].index(col), value)


def drop(col):
    return lambda t: [r.__delitem__(t[0].index(col)) for r in t[::-1]]


RECORD_DAMAGE = [
    (
        "corrected-word",
        cell("corrected_median_ms", "abc"),
        r"r\.csv' row 3 \(line 4\): corrected_median_ms is 'abc'; expected a number",
    ),
    ("speed-index-word", cell("speed_index", "abc"), r"row 3 \(line 4\): speed_index is 'abc'; expected a number"),
    (
        "median-inf",
        cell("median_ms", "inf"),
        r"1 record\(s\) have a NaN, zero or negative latency, e\.g\. key \w+ median_ms=inf; first at row 3",
    ),
    ("p90-nan", cell("p90_ms", "nan"), r"negative latency, e\.g\. key \w+ p90_ms=nan; first at row 3"),
    ("p90-negative", cell("p90_ms", "-2"), r"negative latency, e\.g\. key \w+ p90_ms=-2\.0; first at row 3"),
    (
        "ci-nan",
        cell("ci_low_ms", "nan"),
        r"row 3 \(line 4\): ci_low_ms is 'nan'; expected a number in \(0, 3\.6e\+06\] ms",
    ),
    ("quiet-over-runs", cell("quiet_runs", "999"), r"quiet_runs is '999'; expected at most n_runs \(\d+\)"),
    ("busy-share-7", cell("busy_share", "7"), r"row 3 \(line 4\): busy_share is '7'; expected a number in \[0, 1\]"),
    (
        "quiet-wall-negative",
        cell("quiet_wall_median_ms", "-3.5"),
        r"negative latency, e\.g\. key \w+ quiet_wall_median_ms=-3\.5",
    ),
    ("wall-zero", cell("wall_median_ms", "0"), r"negative latency, e\.g\. key \w+ wall_median_ms=0\.0"),
    (
        "clock-sundial",
        cell("protocol", '{"clock":"sundial"}'),
        r"protocol is .*expected a protocol whose clock is wall or cpu",
    ),
    (
        "heads-99",
        cell("subnet", '{"layers":[0],"heads":[99],"ffn":[0]}'),
        r"row 3 \(line 4\): subnet is .*at most 4 heads per layer .*heads holds 99",
    ),
    ("ffn-over", cell("subnet", '{"layers":[0],"heads":[1],"ffn":[65]}'), r"at most 64 FFN neurons per layer"),
    (
        "layers-unsorted",
        cell("subnet", '{"layers":[1,0],"heads":[1,1],"ffn":[8,8]}'),
        r"layers in ascending order without repeats",
    ),
    (
        "subnet-lengths",
        cell("subnet", '{"layers":[0,1],"heads":[1],"ffn":[8,8]}'),
        r"lists of non-negative integers of one length",
    ),
    (
        "subnet-cut",
        cell("subnet", '{"layers":[0'),
        r"subnet is '\{\"layers\":\[0'; expected JSON \(the cell is cut or not JSON\)",
    ),
    ("shape-word", cell("shape", "tiny"), r"shape is 'tiny'; expected JSON"),
    ("protocol-list", cell("protocol", "[1]"), r"protocol is '\[1\]'; expected a JSON object"),
    ("threads-word", cell("threads", "one"), r"threads is 'one'; expected an integer"),
    ("threads-zero", cell("threads", "0"), r"threads is '0'; expected an integer in 1\.\.1024"),
    ("n-runs-negative", cell("n_runs", "-1"), r"n_runs is '-1'; expected an integer in 0\.\.1000000"),
    ("spinning-word", cell("spinning", "maybe"), r"spinning is 'maybe'; expected True or False"),
    ("status-word", cell("status", "done"), r"status is 'done'; expected ok or failed"),
    ("target-empty", cell("target_id", ""), r"target_id is ''; expected a value \(the cell is empty\)"),
    ("heads-sum", cell("heads_sum", "99"), r"heads_sum is '99'; expected \d+ to agree with the subnet cell"),
    ("key-other", cell("key", "0123456789ab"), r"row 3 \(key 0123456789ab\): key is not the key of its subnet cell"),
    (
        "schema-9",
        cell("schema", "dynasearch-latency-records/9"),
        r"row 3 \(line 4\) holds schema 'dynasearch-latency-records/9'",
    ),
    (
        "no-corrected-column",
        drop("corrected_median_ms"),
        r"another schema .*missing columns \['corrected_median_ms'\], unknown columns \[\]",
    ),
    ("no-key-column", drop("key"), r"missing columns \['key'\]"),
    ("extra-cell", lambda t: t[2].append("x"), r"row 2 \(line 3\): expected 60 cells; the row has 61"),
    (
        "short-row",
        lambda t: t[2].__delitem__(slice(10, None)),
        r"row 2 \(line 3\): expected 60 cells; the row has 10 \(it is cut: from column 'flops' on\)",
    ),
]


@pytest.mark.parametrize("name,damage,match", RECORD_DAMAGE, ids=[d[0] for d in RECORD_DAMAGE])
def test_damaged_records_are_one_line_naming_file_row_and_expectation(good, name, damage, match):
    read_records(good)  # the undamaged file reads
    edit(good, damage)
    with pytest.raises(RecordsError, match=match) as e:
        read_records(good)
    assert "\n" not in str(e.value) and str(good) in str(e.value)


@pytest.mark.parametrize("cut", [300, 1, 2])
def test_cut_last_row_is_refused(good, cut):
    data = good.read_bytes()
    good.write_bytes(data[:-cut])
    match = {
        300: r"expected 60 cells; the row has \d+ \(it is cut",
        1: r"the last one, is cut: the file does not end with a line end",
        2: r"protocol is '\{'; expected JSON",
    }[cut]
    with pytest.raises(RecordsError, match=match):
        read_records(good)
    with pytest.raises(MeasurementError, match=match):  # the kit's runner reads through the same check
        read_rows(str(good))


def test_nul_byte_and_not_a_regular_file(good):
    good.write_bytes(good.read_bytes().replace(b"Test CPU", b"Test\0CPU", 1))
    with pytest.raises(RecordsError, match=r"line 2 holds a NUL byte"):
        read_records(good)
    with pytest.raises(RecordsError, match=r"'/dev/null' is not a regular file"):
        read_records("/dev/null")


def test_what_is_valid_still_reads(tmp_path):
    """Failed rows (empty latencies), empty optional cells, ints written as 5.0 by a table tool,
    columns in another order: all valid."""
    r = rows(TRAIN[:4], additive_ms)
    r[0].update(status="failed", error="MemoryError: x", median_ms="", mean_ms="", n_runs="")
    r[1].update(flops="", disturbed_runs="")
    path = tmp_path / "r.csv"
    append_rows(str(path), r)
    edit(path, cell("threads", "1.0", row=3))
    edit(path, lambda t: [row.insert(0, row.pop()) for row in t])  # last column first
    df = read_records(path)
    assert len(df) == 4 and (df["status"] == "failed").sum() == 1
    assert df["threads"].tolist() == [1, 1, 1, 1] and df["flops"].notna().all()


def test_byte_order_mark_and_crlf_line_ends_are_no_damage(good):
    """A table tool's re-save (UTF-8 with BOM, CRLF line ends) still reads; appending rewrites it plainly."""
    good.write_bytes(b"\xef\xbb\xbf" + good.read_bytes().replace(b"\n", b"\r\n"))
    assert len(read_records(good)) == 6
    append_rows(str(good), rows(TRAIN[6:7], additive_ms))
    assert len(read_records(good)) == 7 and not good.read_bytes().startswith(b"\xef")


def test_shape_argument_refuses_rows_of_another_backbone(good):
    assert len(read_records(good, shape=SHAPE)) == 6
    other = BackboneShape(
        num_layers=2, num_heads=4, head_dim=8, hidden_size=32, intermediate_size=64, vocab_size=100, max_positions=64
    )
    with pytest.raises(
        RecordsError,
        match=r"row 1 \(key \w+\): measured on another backbone than expected \(num_layers: 4 -> 2\)$",
    ):
        read_records(good, shape=other)


def test_measure_refuses_damaged_records_before_writing_anything(good):
    from predictors import BackendSettings, measure

    edit(good, cell("corrected_median_ms", "abc"))
    before = good.read_bytes()
    with pytest.raises(RecordsError, match=r"row 3 \(line 4\): corrected_median_ms is 'abc'"):
        measure(SHAPE, TRAIN[:1], BackendSettings(backend="torch", seq_len=8), good, progress=False)
    assert good.read_bytes() == before
    assert sorted(p.name for p in good.parent.iterdir()) == ["r.csv"]  # no r.raw/, no temporary


def test_records_and_cache_paths_that_cannot_be_written(tmp_path):
    with pytest.raises(MeasurementError, match=r"cannot write records file '/dev/full': it is a character device"):
        check_records_path("/dev/full")
    with pytest.raises(MeasurementError, match="records file path is empty"):
        check_records_path("")
    (tmp_path / "f").write_text("x")
    with pytest.raises(
        MeasurementError, match=r"cannot write records file '.*f/r\.csv': '.*f' is a file, not a directory"
    ):
        check_records_path(str(tmp_path / "f" / "r.csv"))
    with pytest.raises(MeasurementError, match=r"ONNX cache '.*f' exists and is not a directory"):
        check_onnx_cache(tmp_path / "f")
    with pytest.raises(MeasurementError, match=r"ONNX cache '.*f/c' cannot be created: '.*f' is a file"):
        check_onnx_cache(tmp_path / "f" / "c")
    check_onnx_cache(tmp_path / "new" / "cache")
    assert not (tmp_path / "new").exists()  # checking creates nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


# --------------------------------------------------------------------------------------- predictors
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    base = tmp_path_factory.mktemp("pred")
    df = records(base / "r.csv", rows(LAYER, additive_ms, sampler="layer-table") + rows(TRAIN, additive_ms))
    out = {}
    for kind in ("layer-regression", "lut", "gbdt"):
        out[kind] = make_predictor(kind).fit(df).save(base / kind)
    return out


def damaged(saved, tmp_path, fn, kind="layer-regression"):
    d = shutil.copytree(saved[kind], tmp_path / "p")
    doc = json.loads((d / "predictor.json").read_text())
    fn(doc)
    (d / "predictor.json").write_text(json.dumps(doc))
    return d


def set_key(section, key, value):
    def fn(doc):
        (doc[section] if section else doc)[key] = value

    return fn


def del_key(section, key):
    return lambda doc: (doc[section] if section else doc).pop(key)


PREDICTOR_DAMAGE = [
    (
        "threads-word",
        set_key("meta", "threads", "one"),
        r"predictor\.json: key meta\.threads is \"one\"; expected an integer in 1\.\.1024",
    ),
    (
        "cpu-cores-float",
        set_key("meta", "cpu_cores", 2.5),
        r"key meta\.cpu_cores is 2\.5; expected an integer in 1\.\.4096",
    ),
    ("spinning-word", set_key("meta", "spinning", "no"), r"key meta\.spinning is \"no\"; expected true or false"),
    ("backend-number", set_key("meta", "backend", 3), r"key meta\.backend is 3; expected a string"),
    ("shapes-empty", set_key("meta", "shapes", []), r"key meta\.shapes is \[\]; expected a non-empty list"),
    (
        "widths-damaged",
        set_key("meta", "widths_seen", {"heads": ["x"]}),
        r"key meta\.widths_seen\.heads\[0\] is \"x\"; expected an integer in 0\.\.1024",
    ),
    ("latency-column", set_key("meta", "latency_column", "p90_ms"), r"key meta\.latency_column is \"p90_ms\""),
    (
        "anchor-nan",
        set_key("meta", "anchor_reference", [{"batch": 1, "seq_len": 16, "key": "k", "ms": float("nan")}]),
        r"key meta\.anchor_reference\[0\]\.ms is NaN; expected a number in \(0, ",
    ),
    ("meta-missing-threads", del_key("meta", "threads"), r"key meta\.threads is missing"),
    ("meta-not-object", set_key("", "meta", [1]), r"key meta is \[1\]; expected an object"),
    ("kind-disagrees", set_key("meta", "kind", "gbdt"), r"key meta\.kind is 'gbdt'; expected 'layer-regression'"),
    ("across-disagrees", set_key("meta", "across_shapes", True), r"key meta\.across_shapes is true; expected false"),
    ("hyper-unknown", set_key("hyper", "depth", 3), r"unknown key hyper\.depth"),
    ("hyper-type", set_key("hyper", "cv_folds", "5"), r"key hyper\.cv_folds is \"5\"; expected an integer in 1\.\."),
    ("shape-missing", del_key("shape", "num_layers"), r"key shape\.num_layers is missing"),
    (
        "shape-flavor",
        set_key("shape", "flavor", "gpt2"),
        r"key shape\.flavor is \"gpt2\"; expected 'bert' or 'roberta'",
    ),
    ("shape-unknown", set_key("shape", "layers", 4), r"unknown key shape\.layers"),
    ("array-missing", lambda d: d["arrays"].pop("coef"), r"key arrays\.coef is missing"),
    (
        "array-declared",
        lambda d: d["arrays"]["coef"].update(dtype="int8"),
        r"key arrays\.coef is .*expected what arrays\.npz holds",
    ),
    ("sha-missing", del_key("", "arrays_sha256"), r"key arrays_sha256 is missing"),
    ("sha-other", set_key("", "arrays_sha256", "0" * 64), r"checksum differs"),
    ("format-other", set_key("", "format", "x"), r"is not a dynasearch latency predictor \(format 'x'\)"),
    ("version-9", set_key("", "version", 9), r"has predictor format version 9; this dynasearch reads version 1"),
]


@pytest.mark.parametrize("name,damage,match", PREDICTOR_DAMAGE, ids=[d[0] for d in PREDICTOR_DAMAGE])
def test_damaged_predictor_is_one_line_naming_file_and_key(saved, tmp_path, name, damage, match):
    load_predictor(saved["layer-regression"])
    d = damaged(saved, tmp_path, damage)
    with pytest.raises(PredictorError, match=match) as e:
        load_predictor(d)
    assert "\n" not in str(e.value)


def test_damaged_params_of_other_kinds(saved, tmp_path):
    with pytest.raises(PredictorError, match=r"key params\.base_ms is \"x\"; expected a finite number"):
        load_predictor(damaged(saved, tmp_path / "a", set_key("params", "base_ms", "x"), kind="lut"))
    with pytest.raises(PredictorError, match=r"key params\.init is missing"):
        load_predictor(damaged(saved, tmp_path / "b", del_key("params", "init"), kind="gbdt"))


def rewrite_arrays(d, fn):
    """Change arrays.npz and re-seal it (checksum, declared shapes), as a consistent but wrong file."""
    with np.load(d / "arrays.npz") as z:
        arrays = {k: z[k] for k in z.files}
    fn(arrays)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    (d / "arrays.npz").write_bytes(buf.getvalue())
    doc = json.loads((d / "predictor.json").read_text())
    doc["arrays"] = {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in arrays.items()}
    doc["arrays_sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()
    (d / "predictor.json").write_text(json.dumps(doc))


def test_consistent_but_wrong_arrays(saved, tmp_path):
    d = shutil.copytree(saved["layer-regression"], tmp_path / "nan")
    rewrite_arrays(d, lambda a: a["coef"].__setitem__(0, np.nan))
    with pytest.raises(PredictorError, match=r"arrays\.npz: array coef holds a NaN or an infinite value"):
        load_predictor(d)
    d = shutil.copytree(saved["layer-regression"], tmp_path / "short")
    rewrite_arrays(d, lambda a: a.update(coef=a["coef"][:2]))
    with pytest.raises(PredictorError, match=r"cannot be read: its arrays do not fit together"):
        load_predictor(d)
    d = shutil.copytree(saved["layer-regression"], tmp_path / "neg")
    rewrite_arrays(d, lambda a: a.update(coef=-a["coef"]))
    with pytest.raises(
        PredictorError, match=r"prices the full model at -[\d.]+ ms; expected a finite, positive latency"
    ):
        load_predictor(d)


def fit_output(tmp_path, saved, doc, kinds=("layer-regression",)):
    out = tmp_path / "fit"
    out.mkdir(parents=True)
    for k in kinds:
        shutil.copytree(saved[k], out / "predictors" / k)
    (out / "metrics.json").write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return out


def test_fit_output_names_its_best_predictor(saved, tmp_path):
    out = fit_output(
        tmp_path / "a", saved, {"format": "dynasearch-predictor-fit", "version": 1, "best": "layer-regression"}
    )
    pred, where = find_predictor(out)
    assert pred.kind == "layer-regression" and where == out / "predictors" / "layer-regression"
    assert load_predictor(out).kind == "layer-regression"  # the one reader takes either
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        find_predictor(out)  # the current version: no warning


@pytest.mark.parametrize(
    "doc,match",
    [
        (
            {"format": "dynasearch-predictor-fit", "version": 1, "best": "gbdt"},
            r"metrics\.json names the best predictor 'gbdt', but .*predictors/gbdt/predictor\.json is missing .*give one that is there: "
            r".*predictors/layer-regression",
        ),
        (
            {"format": "dynasearch-predictor-fit", "version": 1, "best": "mlp"},
            r"metrics\.json: key best is \"mlp\"; expected a predictor kind",
        ),
        ({"format": "dynasearch-predictor-fit", "version": 1}, r"metrics\.json: key best is null"),
        (
            {"format": "dynasearch-predictor-fit", "version": 2, "best": "layer-regression"},
            r"has fit-predictor output version 2; this dynasearch reads version 1",
        ),
        (
            {"format": "other", "best": "layer-regression"},
            r"metrics\.json: key format is \"other\"; expected 'dynasearch-predictor-fit'",
        ),
        ('{"best": "layer', r"predictor metrics file .*metrics\.json is not valid JSON \(truncated"),
        ("[1]", r"must hold a JSON object"),
    ],
)
def test_damaged_fit_output(saved, tmp_path, doc, match):
    with pytest.raises(PredictorError, match=match):
        find_predictor(fit_output(tmp_path, saved, doc))


def test_fit_output_kind_disagrees_and_older_output(saved, tmp_path):
    out = fit_output(
        tmp_path / "a", saved, {"format": "dynasearch-predictor-fit", "version": 1, "best": "gbdt"}, kinds=()
    )
    shutil.copytree(saved["lut"], out / "predictors" / "gbdt")
    with pytest.raises(
        PredictorError, match=r"predictors/gbdt/predictor\.json holds a 'lut' predictor; .*metrics\.json names 'gbdt'"
    ):
        find_predictor(out)
    old = fit_output(tmp_path / "b", saved, {"best": "layer-regression"})
    with pytest.warns(UserWarning, match=r"metrics\.json was written by an older dynasearch \(no format key\)"):
        assert find_predictor(old)[0].kind == "layer-regression"
    with pytest.raises(PredictorError, match=r"predictor directory .*none does not exist"):
        find_predictor(tmp_path / "none")


def test_fit_and_evaluate_writes_a_versioned_metrics_file(tmp_path):
    from predictors import fit_and_evaluate

    df = records(tmp_path / "r.csv", rows(LAYER, additive_ms, sampler="layer-table") + rows(TRAIN, additive_ms))
    fit_and_evaluate(df, ["layer-regression"], tmp_path / "out", plots=False, curve_sizes=[20])
    doc = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert (doc["format"], doc["version"], doc["best"]) == ("dynasearch-predictor-fit", 1, "layer-regression")
    assert find_predictor(tmp_path / "out")[0].kind == "layer-regression"


def test_settings_compare_as_values_and_the_message_names_no_cli_option(saved):
    """A records column read as float (2.0) is the setting 2; a real difference names no `force` option the CLI lacks."""
    p = load_predictor(saved["layer-regression"])
    same = dict(
        p.meta_, cpu_cores=float(p.meta_["cpu_cores"]), threads=np.float64(p.meta_["threads"]), spinning=np.bool_(False)
    )
    p.check_target(same)
    with pytest.raises(
        PredictorError,
        match=r"\(threads: predictor 1, asked 2\.0\); measure this setting and fit a predictor for it "
        r"\(in Python, force=True predicts anyway\)$",
    ):
        p.check_target(dict(same, threads=2.0))
    with pytest.warns(UserWarning, match="predicting anyway"):
        p.check_target(dict(same, threads=2), force=True)
    assert SubnetConfig.full(SHAPE).validate(p.shape_)
