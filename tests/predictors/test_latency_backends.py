"""Backend settings and availability checks: unknown names and CUDA without a GPU fail clearly."""

from __future__ import annotations

import pytest

from dynasearch_runtime.fingerprint import has_gpu
from predictors import BackendSettings, MeasurementError, make_backend

no_gpu = pytest.mark.skipif(has_gpu(), reason="this machine has a GPU")


def test_unknown_backend():
    with pytest.raises(MeasurementError, match="unknown backend 'tensorflow'; allowed: torch, onnxruntime"):
        BackendSettings(backend="tensorflow")


def test_unknown_device():
    with pytest.raises(MeasurementError, match="unknown device 'tpu'"):
        BackendSettings(device="tpu")


def test_unknown_execution_provider():
    with pytest.raises(MeasurementError, match="unknown onnxruntime execution provider 'FooExecutionProvider'"):
        make_backend(BackendSettings(provider="FooExecutionProvider"))


def test_provider_missing_from_build():
    with pytest.raises(MeasurementError, match="has no OpenVINOExecutionProvider in this build"):
        make_backend(BackendSettings(provider="OpenVINOExecutionProvider"))


@no_gpu
@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_cuda_without_gpu(backend):
    with pytest.raises(MeasurementError, match="CUDA asked for on a machine without a GPU"):
        make_backend(BackendSettings(backend=backend, device="cuda"))


@no_gpu
def test_cuda_provider_without_gpu():
    with pytest.raises(MeasurementError, match="CUDA asked for on a machine without a GPU"):
        make_backend(BackendSettings(provider="CUDAExecutionProvider"))


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"threads": 0}, "threads must be a positive integer"),
        ({"batch": -1}, "batch must be a positive integer"),
        ({"backend": "onnxruntime", "dtype": "float16"}, "not supported with onnxruntime"),
        ({"backend": "torch", "dtype": "int3"}, "unknown dtype 'int3'"),
        ({"backend": "torch", "spinning": True}, "spinning is an onnxruntime option"),
        ({"backend": "torch", "provider": "CPUExecutionProvider"}, "is an onnxruntime option"),
    ],
)
def test_bad_settings(kw, match):
    with pytest.raises(MeasurementError, match=match):
        BackendSettings(**kw)


def test_provider_defaults_from_device():
    assert BackendSettings().provider == "CPUExecutionProvider"
    assert BackendSettings(provider="CUDAExecutionProvider").device == "cuda"
