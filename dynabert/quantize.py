"""int8 ONNX models: onnxruntime quantisation of an exported (fp32) sub-network, and its metric
measured with the quantised model itself (int8 accuracy drops vary by model: never assume them).

quantize_onnx: onnxruntime's pre-processing (`quant_pre_process`: shape inference, graph
optimisation), then `quantize_dynamic` (int8 weights, activations quantised at run time: U8S8
MatMulInteger) or, mode="static", `quantize_static` in QDQ format with int8 weights and activations
(S8S8, onnxruntime's recommended default on x86) calibrated (MinMax) on a few batches.
onnx_logits / score_onnx: an ONNX model (fp32 or int8) on a DevSet, as `dynabert.evaluate.predict`
and `score_subnet` do with the PyTorch model.
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from .checks import one_of, positive_int
from .errors import ExportError
from .evaluate import DevSet
from .extract import extract_subnet, model_shape
from .io import atomic_path
from .metrics import compute_metrics
from .onnx_export import export_onnx
from .subnet import SubnetConfig

MODES = ("dynamic", "static")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def vnni_cpu() -> bool:
    """Whether this CPU has int8 dot-product instructions (AVX512-VNNI, AVX-VNNI or AMX-INT8); on
    non-x86 machines True (the U8S8 saturation concern is x86-only)."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return True
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})
    except OSError:
        pass
    return False  # unknown: assume the older kind (reduce_range is then the safe choice)


def _feeds_of(batch: Any, names: Sequence[str]) -> dict[str, np.ndarray]:
    feeds = {}
    for n in names:
        t = getattr(batch, n, None)
        if t is None:
            raise ExportError(
                f"the ONNX model takes input {n!r}; a dev set batch has input_ids, attention_mask, token_type_ids"
            )
        feeds[n] = t.detach().cpu().numpy().astype(np.int64, copy=False)
    return feeds


def _calibration_feeds(calibration: DevSet | Iterable[Mapping[str, Any]], names: Sequence[str]) -> list[dict]:
    if isinstance(calibration, DevSet):
        return [_feeds_of(b, names) for b in calibration.batches]
    out = []
    for feeds in calibration:
        missing = [n for n in names if n not in feeds]
        if missing:
            raise ExportError(f"a calibration example lacks input(s) {', '.join(missing)} of the ONNX model")
        out.append({n: np.asarray(feeds[n], dtype=np.int64) for n in names})
    return out


def quantize_onnx(
    src: str | Path,
    dst: str | Path,
    mode: str = "dynamic",
    *,
    per_channel: bool = False,
    reduce_range: bool | None = None,
    calibration: DevSet | Iterable[Mapping[str, Any]] | None = None,
) -> Path:
    """Write an int8 copy of the ONNX model `src` to `dst` atomically (nothing is left behind on
    error; onnxruntime's errors become one-line ExportErrors). Returns `dst`.

    mode "dynamic": int8 weights (QInt8), activations quantised at run time. reduce_range: 7-bit
    weights, which U8S8 needs on x86 CPUs without VNNI (their int8 products can saturate); None:
    True exactly on such CPUs (`vnni_cpu()`). per_channel: one scale per weight column. Measured:
    it lowered the largest logit error against fp32 (tiny random models by 15-30%; the packaged
    MiniLM-L6 with a random head from 0.010 to 0.004) at about the same latency (within the noise
    of one 30-run check); off by default (onnxruntime's default, and what its speed-up figures were
    measured with) until a trained model's metric says it matters.
    mode "static": QDQ, int8 weights and activations (S8S8), calibrated (MinMax) on `calibration`:
    a DevSet (its batches) or feed dicts (input name -> int64 array (batch, seq)); reduce_range unused."""
    one_of("quantisation mode", mode, MODES, ExportError)
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise ExportError(f"ONNX model '{src}' does not exist or is not a file")
    if mode == "static" and calibration is None:
        raise ExportError("static int8 quantisation needs calibration examples (a DevSet or a list of feed dicts)")
    if src.resolve() == dst.resolve():
        raise ExportError(f"int8 output '{dst}' is the fp32 source itself; give another path")
    from onnxruntime.quantization import (  # its import costs ~1 s: only when quantising
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_dynamic,
        quantize_static,
    )

    try:
        with atomic_path(dst) as tmp:
            # The pre-processed model goes to the temporary itself, which the int8 model then replaces:
            # one temporary, removed on error by atomic_path (onnxruntime's own temp dirs clean up).
            quant_pre_process(str(src), str(tmp))
            model = onnx.load(str(tmp))
            if mode == "dynamic":
                quantize_dynamic(
                    model,
                    str(tmp),
                    weight_type=QuantType.QInt8,
                    per_channel=per_channel,
                    reduce_range=(not vnni_cpu()) if reduce_range is None else reduce_range,
                )
            else:
                from onnxruntime.quantization import CalibrationDataReader  # as above: only for static int8

                names = [i.name for i in model.graph.input]
                feeds = _calibration_feeds(calibration, names)
                if not feeds:
                    raise ExportError("static int8 quantisation needs at least one calibration batch; got none")

                class _Reader(CalibrationDataReader):
                    def __init__(self) -> None:
                        self._it = iter(feeds)

                    def get_next(self) -> dict | None:
                        return next(self._it, None)

                quantize_static(
                    model,
                    str(tmp),
                    _Reader(),
                    quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8,
                    per_channel=per_channel,
                )
    except ExportError:
        raise
    except Exception as e:
        raise ExportError(f"int8 quantisation of '{src}' failed: {_first_line(e)}") from e
    return dst


def ort_session(path: str | Path, threads: int = 1):
    """A CPU InferenceSession of `path` with `threads` intra-op threads; ExportError when it cannot load."""
    import onnxruntime as ort  # imported when a model runs, as the runtime does

    positive_int("threads", threads, ExportError)
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"ONNX model '{path}' does not exist or is not a file")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ExportError(f"onnxruntime cannot load '{path}': {_first_line(e)}") from e


def onnx_logits(path: str | Path, dev: DevSet, threads: int = 1) -> np.ndarray:
    """Logits of the ONNX model `path` (fp32 or int8) on `dev`, in the original example order (as
    `dynabert.evaluate.predict`); the feeds are the graph's inputs, taken from each batch."""
    sess = ort_session(path, threads)
    names = [i.name for i in sess.get_inputs()]
    out_name = sess.get_outputs()[0].name
    try:
        parts = [sess.run([out_name], _feeds_of(b, names))[0] for b in dev.batches]
    except ExportError:
        raise
    except Exception as e:
        raise ExportError(f"onnxruntime failed running '{path}' on the dev set: {_first_line(e)}") from e
    sorted_logits = np.concatenate(parts).astype(np.float32, copy=False)
    logits = np.empty_like(sorted_logits)
    logits[np.asarray(dev.order)] = sorted_logits
    return logits


def score_onnx(path: str | Path, dev: DevSet, metrics: Sequence[str], threads: int = 1) -> dict[str, float]:
    """Metric name -> percent of the ONNX model `path` on `dev` (as `score_subnet`): the int8
    metric measured with the quantised model itself."""

    logits = onnx_logits(path, dev, threads)
    return {k: float(v) for k, v in compute_metrics(metrics, logits, dev.labels).items()}


def weights_digest(model: Any) -> str:
    """16 hex digits of a model's shape and every weight: what an exported file depends on."""

    h = hashlib.blake2b(json.dumps(model_shape(model).to_dict(), sort_keys=True).encode(), digest_size=8)
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _int8_tag(mode: str, per_channel: bool = False, reduce_range: bool | None = None, calibration: Any = None) -> str:
    """What an int8 file depends on besides the fp32 model, as a file-name part: int8-dynamic[-pc][-rr],
    int8-static[-pc]-<calibration digest>."""
    tag = f"int8-{mode}" + ("-pc" if per_channel else "")
    if mode == "dynamic":
        return tag + ("-rr" if ((not vnni_cpu()) if reduce_range is None else reduce_range) else "")
    if isinstance(calibration, DevSet):
        return f"{tag}-{calibration.digest}"

    h = hashlib.blake2b(digest_size=8)
    for feeds in calibration or ():
        for k in sorted(feeds):
            h.update(k.encode() + np.ascontiguousarray(np.asarray(feeds[k], dtype=np.int64)).tobytes())
    return f"{tag}-{h.hexdigest()}"


def quantized_subnet(model: Any, subnet: Any, dir: str | Path, mode: str = "dynamic", **kwargs: Any) -> Path:
    """The int8 ONNX file of `subnet` (a SubnetConfig; None: the model as built) of `model`: extracted
    (dynabert.extract), exported to fp32 ONNX (verified against PyTorch) and quantised
    (`quantize_onnx(..., mode, **kwargs)`). Cached in `dir` as `<subnet key>-<weights digest>.fp32.onnx`
    and `.int8-<mode>.onnx` (the digest: another model's sub-network of the same key is another file);
    an existing file is reused."""

    one_of("quantisation mode", mode, MODES, ExportError)
    if kwargs.get("calibration") is not None and not isinstance(kwargs["calibration"], DevSet):
        kwargs["calibration"] = list(kwargs["calibration"])  # read twice: for the file name and to calibrate
    cfg = model.config
    if subnet is None:
        subnet = SubnetConfig(tuple(range(cfg.num_hidden_layers)), tuple(cfg.layer_heads), tuple(cfg.layer_ffn))
    small = extract_subnet(model, subnet).eval()
    stem = f"{subnet.key}-{weights_digest(small)}"
    d = Path(dir)
    int8 = d / f"{stem}.{_int8_tag(mode, **kwargs)}.onnx"
    if int8.is_file():
        return int8
    fp32 = d / f"{stem}.fp32.onnx"
    if not fp32.is_file():
        export_onnx(small, fp32)
    return quantize_onnx(fp32, int8, mode, **kwargs)
