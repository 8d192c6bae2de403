"""ONNX export equals PyTorch for random sub-networks (BERT and RoBERTa)."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from tinymodels import subnets, tiny_random_model

from dynabert.errors import ExportError
from dynabert.extract import extract_subnet, model_shape
from dynabert.onnx_export import export_onnx, sample_inputs
from dynabert.subnet import SubnetConfig

MODELS = {f: tiny_random_model(f) for f in ("bert", "roberta")}


@pytest.mark.parametrize("flavor", ["bert", "roberta"])
def test_onnx_equals_pytorch_property(flavor, tmp_path_factory):
    model = MODELS[flavor]

    @settings(
        max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
    )
    @given(subnets(model_shape(model)))
    @example(SubnetConfig((0,), (0,), (0,)))  # no attention anywhere: attention_mask unread
    def check(subnet):
        small = extract_subnet(model, subnet)
        path = tmp_path_factory.mktemp("onnx") / "model.onnx"
        diff = export_onnx(small, path)  # verifies internally, raises above 1e-4
        assert diff <= 1e-4
        # Independently of the built-in check: another shape, run here.
        feeds = sample_inputs(small, batch=4, seq_len=23, seed=9)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = sess.run(["logits"], {k: v.numpy() for k, v in feeds.items()})[0]
        with torch.no_grad():
            ref = small(**feeds).logits.numpy()
        assert np.abs(got - ref).max() <= 1e-4

    check()


@pytest.mark.parametrize(
    "flavor, names",
    [("bert", ["input_ids", "attention_mask", "token_type_ids"]), ("roberta", ["input_ids", "attention_mask"])],
)
def test_onnx_interface(flavor, names, tmp_path):
    path = tmp_path / "model.onnx"
    export_onnx(MODELS[flavor], path)
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == names
    assert [o.name for o in graph.output] == ["logits"]
    for i in graph.input:
        assert i.type.tensor_type.elem_type == onnx.TensorProto.INT64
        dims = [d.dim_param for d in i.type.tensor_type.shape.dim]
        assert dims == ["batch", "sequence"]


def test_failed_verification_leaves_nothing(tmp_path, monkeypatch):
    import dynabert.onnx_export as ox

    def broken(model, path, atol=1e-4):
        raise ExportError("ONNX output differs from PyTorch by 1 (allowed 0.0001); export discarded")

    monkeypatch.setattr(ox, "verify_onnx", broken)
    with pytest.raises(ExportError, match="differs"):
        ox.export_onnx(MODELS["bert"], tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []
