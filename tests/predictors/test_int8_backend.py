"""dtype int8: onnxruntime times the fp32 export quantised (dynamic); torch refuses it; the records say int8."""

from __future__ import annotations

import pytest
from latency_helpers import FAST_PROTOCOL, SHAPE

from dynabert.extract import extract_subnet, random_like
from dynabert.space import SearchSpace
from predictors import BackendSettings, MeasurementError, measure, read_records
from predictors.backends import OrtBackend
from predictors.samplers import uniform_configs

FAST = FAST_PROTOCOL


def test_int8_is_an_onnxruntime_dtype():
    st = BackendSettings(backend="onnxruntime", dtype="int8")
    assert st.dtype == "int8" and st.with_shape(2, 16).dtype == "int8"


def test_torch_refuses_int8():
    with pytest.raises(MeasurementError, match="unknown dtype 'int8' for torch; allowed: float32, float16, bfloat16"):
        BackendSettings(backend="torch", dtype="int8")


def test_onnxruntime_lists_its_dtypes():
    with pytest.raises(
        MeasurementError, match="dtype 'float16' is not supported with onnxruntime; allowed: float32, int8"
    ):
        BackendSettings(backend="onnxruntime", dtype="float16")


def test_int8_cache_file_names_the_precision(tmp_path):
    subnet = uniform_configs(SearchSpace.default(SHAPE), 1, seed=1)[0]
    small = extract_subnet(random_like(SHAPE), subnet)
    backend = OrtBackend(BackendSettings(dtype="int8", seq_len=8), cache_dir=tmp_path)
    path = backend.onnx_path(small, subnet.key)
    assert path.name.endswith(f"-{subnet.key}.int8.onnx")
    fp32 = tmp_path / path.name.replace(".int8.onnx", ".onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, fp32.name])  # a given cache keeps both
    assert fp32.stat().st_size > path.stat().st_size
    assert backend.prepare(small, subnet.key)() is not None
    own = OrtBackend(BackendSettings(dtype="int8", seq_len=8))  # its own temporary cache
    try:
        made = own.onnx_path(small, subnet.key)
        assert [p.name for p in made.parent.iterdir()] == [made.name]  # the fp32 made only for it is gone
    finally:
        own.close()


def test_int8_measurement_records_int8(tmp_path):
    subnets = uniform_configs(SearchSpace.default(SHAPE), 2, seed=0)
    path = tmp_path / "records.csv"
    rows = measure(SHAPE, subnets, BackendSettings(dtype="int8", seq_len=8), path, FAST, progress=False)
    assert len(rows) == 2 and (rows["status"] == "ok").all() and (rows["median_ms"] > 0).all()
    assert set(rows["dtype"]) == {"int8"} and set(read_records(path)["dtype"]) == {"int8"}
    # Another precision is another target: float32 of the same configs is measured, not skipped.
    fp32 = measure(SHAPE, subnets, BackendSettings(seq_len=8), path, FAST, progress=False)
    assert len(fp32) == 2 and set(fp32["dtype"]) == {"float32"}
    assert set(fp32["target_id"]).isdisjoint(set(rows["target_id"]))
