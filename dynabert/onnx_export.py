"""ONNX export of an (extracted) model, verified against PyTorch in onnxruntime before it is kept."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import torch

from .errors import ExportError
from .io import atomic_path
from .modeling import DynaBertForSequenceClassification, OnnxWrapper

OPSET = 17


def input_names(model: DynaBertForSequenceClassification) -> list[str]:
    # RoBERTa has a single token type: the input would be constant, so it is left out.
    names = ["input_ids", "attention_mask"]
    if model.config.type_vocab_size > 1:
        names.append("token_type_ids")
    return names


def sample_inputs(
    model: DynaBertForSequenceClassification, batch: int = 2, seq_len: int = 16, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Random token ids with some padding in every row but the first (the mask path is exercised)."""
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    low = min(1000, cfg.vocab_size // 2)
    ids = torch.randint(low, cfg.vocab_size, (batch, seq_len), generator=g)
    mask = torch.ones(batch, seq_len, dtype=torch.long)
    for b in range(1, batch):
        keep = max(2, seq_len - int(torch.randint(0, seq_len // 2 + 1, (1,), generator=g)))
        mask[b, keep:] = 0
        ids[b, keep:] = cfg.pad_token_id
    feeds = {"input_ids": ids, "attention_mask": mask}
    if cfg.type_vocab_size > 1:
        tt = torch.zeros(batch, seq_len, dtype=torch.long)
        tt[:, seq_len // 2 :] = 1
        feeds["token_type_ids"] = tt
    return feeds


def _export_raw(model: DynaBertForSequenceClassification, path: Path, opset: int) -> None:
    names = input_names(model)
    example = sample_inputs(model)
    dynamic = {n: {0: "batch", 1: "sequence"} for n in names}
    dynamic["logits"] = {0: "batch"}
    wrapper = OnnxWrapper(model).eval()
    # The TorchScript-based exporter: fast, no extra dependencies, and it lowers SDPA to plain
    # MatMul/Softmax that every onnxruntime build (and its graph optimiser) handles.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            tuple(example[n] for n in names),
            str(path),
            input_names=names,
            output_names=["logits"],
            dynamic_axes=dynamic,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    _restore_unused_inputs(path, names)


def _restore_unused_inputs(path: Path, names: list[str]) -> None:
    """The exporter drops inputs the graph does not read (a sub-network without any attention never
    reads attention_mask). Deployments feed the same inputs to every sub-network, so declare them."""
    import onnx

    model = onnx.load(str(path))
    present = [i.name for i in model.graph.input]
    if present == names:
        return
    declared = {i.name: i for i in model.graph.input}
    inputs = [
        declared.get(n) or onnx.helper.make_tensor_value_info(n, onnx.TensorProto.INT64, ["batch", "sequence"])
        for n in names
    ]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    onnx.save(model, str(path))


def verify_onnx(model: DynaBertForSequenceClassification, path: str | Path, atol: float = 1e-4) -> float:
    """Max |onnxruntime - PyTorch| on padded random batches of two shapes; ExportError above atol."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    worst = 0.0
    for batch, seq_len, seed in ((2, 16, 1), (3, 37, 2)):
        feeds = sample_inputs(model, batch, seq_len, seed)
        with torch.no_grad():
            ref = model(**feeds).logits.numpy()
        got = sess.run(["logits"], {k: v.numpy() for k, v in feeds.items()})[0]
        worst = max(worst, float(np.abs(ref - got).max()))
    if not worst <= atol:
        raise ExportError(f"ONNX output differs from PyTorch by {worst:.3g} (allowed {atol:g}); export discarded")
    return worst


def export_onnx(
    model: DynaBertForSequenceClassification,
    path: str | Path,
    opset: int = OPSET,
    verify: bool = True,
    atol: float = 1e-4,
) -> float | None:
    """Write `path` (model.onnx) atomically; return the verified max abs difference (None if not verified)."""
    path = Path(path)
    model = model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path) as tmp:
            _export_raw(model, tmp, opset)
            diff = verify_onnx(model, tmp, atol) if verify else None
        return diff
    except ExportError:
        raise
    except Exception as e:
        raise ExportError(f"ONNX export failed: {type(e).__name__}: {e}") from e
