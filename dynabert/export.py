"""Deployment export of one sub-network: ONNX, Hugging Face format, subnet.json and manifest.json.

Layout of the output directory (all formats side by side, so one directory is one deployable unit):
    model.onnx                      (format onnx) int64 input_ids, attention_mask[, token_type_ids] -> logits
    config.json, model.safetensors  (format hf)   load with AutoModelForSequenceClassification
    modeling_dynabert.py            (format hf)   .from_pretrained(DIR, trust_remote_code=True)
    tokenizer files                 (always, when the source directory has them)
    subnet.json, manifest.json      (always)
The directory is built under a temporary name and only appears once every check has passed.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.metadata
import platform
import shutil
import warnings
from collections.abc import Iterable
from pathlib import Path

import torch

from dynabert import backbone
from dynabert.backbone import load_model, resolve_model_dir, tokenizer_files
from dynabert.checks import one_of
from dynabert.errors import ExportError, ModelLoadError
from dynabert.extract import check_fits, check_uniform, extract_subnet, model_shape
from dynabert.io import atomic_dir, check_output_dir, file_sha256, write_json, write_text
from dynabert.modeling import DynaBertForSequenceClassification
from dynabert.onnx_export import export_onnx, sample_inputs
from dynabert.subnet import SubnetConfig, count_flops, count_params

FORMATS = ("onnx", "hf")
MODELING_FILE = Path(__file__).resolve().parent.parent / "dynabert" / "modeling.py"


def parse_formats(formats: str | Iterable[str]) -> tuple[str, ...]:
    items = [f.strip() for f in (formats.split(",") if isinstance(formats, str) else formats) if f.strip()]
    bad = [f for f in items if f not in FORMATS]
    if bad or not items:
        raise ExportError(f"unknown export format(s) {bad or items!r}; allowed: {', '.join(FORMATS)} (comma-separated)")
    return tuple(dict.fromkeys(items))


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("dynasearch", "torch", "transformers", "onnx", "onnxruntime", "optuna", "safetensors"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


@contextlib.contextmanager
def _quiet_transformers():
    """No 'Writing model shards' / 'Loading weights' bars on the terminal while exporting (stderr
    is for warnings and errors)."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def save_hf(model: DynaBertForSequenceClassification, out: Path) -> None:
    """config.json (with auto_map) + model.safetensors + the modeling file, for trust_remote_code loading."""
    model.config.architectures = ["DynaBertForSequenceClassification"]
    model.config.auto_map = {
        "AutoConfig": "modeling_dynabert.DynaBertConfig",
        "AutoModelForSequenceClassification": "modeling_dynabert.DynaBertForSequenceClassification",
    }
    with _quiet_transformers():
        model.save_pretrained(str(out), safe_serialization=True)
    shutil.copyfile(MODELING_FILE, out / "modeling_dynabert.py")


def verify_hf(model: DynaBertForSequenceClassification, out: Path, atol: float = 1e-5) -> float:
    """Reload with plain transformers (remote code) and compare logits."""
    from transformers import AutoModelForSequenceClassification

    try:
        with _quiet_transformers():
            again = AutoModelForSequenceClassification.from_pretrained(str(out), trust_remote_code=True).eval()
    except Exception as e:
        raise ExportError(
            f"the Hugging Face export does not load back with transformers: {type(e).__name__}: {e}"
        ) from e
    feeds = sample_inputs(model, 2, 16, seed=3)
    with torch.no_grad():
        diff = float((again(**feeds).logits - model(**feeds).logits).abs().max())
    if not diff <= atol:
        raise ExportError(
            f"the reloaded Hugging Face export differs by {diff:.3g} (allowed {atol:g}); export discarded"
        )
    return diff


def random_head_warning(src: str | Path, num_labels: int) -> str:
    """One line: the model has no trained classifier head, so the export's predictions are random."""
    try:
        default = Path(src).resolve() == backbone.default_backbone_dir().resolve()
    except ModelLoadError:
        default = False
    what = (
        "the packaged MiniLM-L6 backbone (no MODEL_DIR given) has no trained classifier head"
        if default
        else f"model directory '{src}' has no trained classifier head for {num_labels} labels"
    )
    return (
        f"{what}, so the classifier head is randomly initialised and the export's predictions mean nothing; "
        "pass a trained MODEL_DIR (a stage directory of a `dynasearch train` run, e.g. RUN/width_depth)"
    )


def export_subnet(
    model_dir: str | Path | None,
    subnet: SubnetConfig,
    out: str | Path,
    formats: str | Iterable[str] = FORMATS,
    overwrite: bool = False,
    num_labels: int | None = None,
    grid_point: tuple[float, float] | None = None,
    model: DynaBertForSequenceClassification | None = None,
    *,
    source_dir: str | Path | None = None,
    extra: dict | None = None,
    precision: str = "fp32",
) -> dict:
    """Export `subnet` of the model in `model_dir` (or the given super-network) to `out`; return the manifest.

    source_dir: where the tokenizer files of a given `model` live (default: `model_dir`, else the
    directory the model was loaded from); extra: fields added to the manifest (e.g. the search's
    metric, predicted and measured latency, target and machine fingerprint)."""
    fmts = parse_formats(formats)
    one_of("precision", precision, ("fp32", "int8"), ExportError)
    if precision == "int8" and "onnx" not in fmts:
        raise ExportError("precision int8 is an onnxruntime model: include the onnx format")
    out = check_output_dir(out, overwrite)  # fail before any slow work
    if source_dir is not None:
        src = Path(source_dir)
    elif model is None or model_dir is not None:
        src = resolve_model_dir(model_dir)
    else:
        src = Path(getattr(model, "source_dir", None) or resolve_model_dir(None))
    if model is None:
        model = load_model(src, num_labels=num_labels)
    # The model's shape is its own (an exported sub-network is a backbone of its own): a grid point
    # is relative to it and needs one width for all its layers; any subnet must fit each layer.
    if grid_point is not None:
        check_uniform(model, "width/depth multipliers")
    check_fits(model, subnet)  # the backbone's ranges, then each layer's physical width
    if getattr(model, "head_initialized", False):
        warnings.warn(random_head_warning(src, model.config.num_labels), stacklevel=2)
    small = extract_subnet(model, subnet).eval()
    shape = model_shape(model)
    checks: dict[str, float] = {}
    with atomic_dir(out, overwrite) as tmp:
        if "onnx" in fmts:
            checks["onnx_max_abs_diff"] = export_onnx(small, tmp / "model.onnx")
            if precision == "int8":  # the model the int8 search scored and timed: onnxruntime dynamic QInt8
                from dynabert.quantize import quantize_onnx  # onnxruntime.quantization: only for int8 exports

                quantize_onnx(tmp / "model.onnx", tmp / "model.int8.onnx")
        if "hf" in fmts:
            save_hf(small, tmp)
            checks["hf_reload_max_abs_diff"] = verify_hf(small, tmp)
        for f in tokenizer_files(src) if src.is_dir() else []:
            shutil.copyfile(f, tmp / f.name)
        write_text(tmp / "subnet.json", subnet.to_json() + "\n")
        manifest = {
            "dynasearch_manifest": 1,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "subnet": subnet.to_dict(),
            "subnet_key": subnet.key,
            "grid_point": None if grid_point is None else {"width": grid_point[0], "depth": grid_point[1]},
            "source_model": str(Path(src).resolve()),
            "backbone": shape.to_dict(),
            "head_initialized": bool(getattr(model, "head_initialized", False)),
            "parameters": count_params(shape, subnet),
            "flops": {"encoder_flops_batch1_seq128": count_flops(shape, subnet, 1, 128)},
            "formats": list(fmts),
            "precision": precision,
            "onnx_file": "model.int8.onnx" if precision == "int8" else ("model.onnx" if "onnx" in fmts else None),
            "checks": checks,
            "versions": library_versions(),
            "files": {p.name: file_sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()},
            **(extra or {}),
        }
        write_json(tmp / "manifest.json", manifest)
    return manifest
