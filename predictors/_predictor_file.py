"""What predictor.json holds, checked key by key on load (`load_predictor`): the type of every
key of hyper, meta, shape and params, and the arrays each kind saves. A failed check is one
PredictorError line naming the file and the key. `FittedOn.from_meta` (predictors.base) applies the
meta checks, on load and to a fitted predictor's `meta_`."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import PredictorError
from .records import LATENCY_COLUMN


def _is_int(v: Any, low: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def _is_num(v: Any, positive: bool = False) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and (v > 0 or not positive)


def _is_shapes(v: Any) -> bool:
    return (
        isinstance(v, list)
        and len(v) > 0
        and all(isinstance(x, list) and len(x) == 2 and all(_is_int(y, 1) for y in x) for x in v)
    )


def _is_widths(v: Any) -> bool:
    return isinstance(v, dict) and all(
        isinstance(v.get(k), list) and all(_is_int(x) for x in v[k]) for k in ("heads", "ffn")
    )


def _is_anchors(v: Any) -> bool:
    return isinstance(v, list) and all(
        isinstance(a, dict)
        and _is_int(a.get("batch"), 1)
        and _is_int(a.get("seq_len"), 1)
        and isinstance(a.get("key"), str)
        and _is_num(a.get("ms"), positive=True)
        for a in v
    )


_STR = (lambda v: isinstance(v, str), "a string")
_POS_INT = (lambda v: _is_int(v, 1), "a positive integer")
_INT = (lambda v: _is_int(v), "a non-negative integer")
_BOOL = (lambda v: isinstance(v, bool), "true or false")
META_KEYS: dict[str, tuple[Any, str]] = {
    "cpu_model": _STR,
    "cpu_cores": _POS_INT,
    "gpu_name": _STR,
    "backend": _STR,
    "device": _STR,
    "provider": _STR,
    "threads": _POS_INT,
    "spinning": _BOOL,
    "dtype": _STR,
    "shape_key": _STR,
    "kind": _STR,
    "fingerprint": _STR,
    "target_id": _STR,
    "gpu_driver": _STR,
    "torch_version": _STR,
    "onnxruntime_version": _STR,
    "numpy_version": _STR,
    "dynasearch_version": _STR,
    "shapes": (_is_shapes, "a non-empty list of [batch, seq_len] pairs of positive integers"),
    "across_shapes": _BOOL,
    "n_train": _POS_INT,
    "n_configs": _INT,
    "created": _STR,
}
# Added to version 1 later: a predictor written before lacks them and is read as it is (with a warning).
META_KEYS_LATER: dict[str, tuple[Any, str]] = {
    "latency_column": (lambda v: v in (LATENCY_COLUMN, "median_ms"), f"{LATENCY_COLUMN!r} or 'median_ms'"),
    "widths_seen": (_is_widths, "an object with lists 'heads' and 'ffn' of non-negative integers"),
    "anchor_reference": (_is_anchors, "a list of {batch, seq_len, key, ms} with ms a positive number"),
}
HYPER_KEYS: dict[str, tuple[Any, str]] = {
    "across_shapes": _BOOL,
    "cv_folds": _POS_INT,
    "seed": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "calibrate": _BOOL,
    "ridge": (lambda v: _is_num(v) and v >= 0, "a non-negative number"),
    "n_trees": _POS_INT,
    "learning_rate": (lambda v: _is_num(v, positive=True), "a positive number"),
    "max_depth": _POS_INT,
    "min_leaf": _POS_INT,
}
_NUM = (lambda v: _is_num(v), "a finite number")
PARAM_KEYS: dict[str, dict[str, tuple[Any, str]]] = {
    "lut": {"base_ms": _NUM},
    "layer-regression": {},
    "gbdt": {"init": _NUM, "learning_rate": _NUM},
    "hybrid": {
        "init": _NUM,
        "learning_rate": _NUM,
        "floor": (lambda v: _is_num(v, positive=True), "a positive number"),
    },
}
_TREES = ("roots", "feature", "threshold", "left", "right", "value")
ARRAY_NAMES: dict[str, tuple[str, ...]] = {
    "lut": ("attn", "ffn", "calibration"),
    "layer-regression": ("head_knots", "ffn_knots", "coef"),
    "gbdt": _TREES,
    "hybrid": ("linear_head_knots", "linear_ffn_knots", "linear_coef", *(f"trees_{t}" for t in _TREES)),
}
SHAPE_KEYS: dict[str, tuple[Any, str]] = {
    "num_layers": _POS_INT,
    "num_heads": _POS_INT,
    "head_dim": _POS_INT,
    "hidden_size": _POS_INT,
    "intermediate_size": _POS_INT,
    "vocab_size": _POS_INT,
    "max_positions": _POS_INT,
    "type_vocab_size": _POS_INT,
    "num_labels": _POS_INT,
    "flavor": (lambda v: v in ("bert", "roberta"), "'bert' or 'roberta'"),
}


def check_keys(
    where: str,
    section: str,
    doc: Any,
    spec: Mapping[str, tuple[Any, str]],
    required: Sequence[str] = (),
    unknown_ok: bool = True,
) -> None:
    """Every key of `spec` present in doc holds its type; `required` ones must be there."""
    prefix = f"{section}." if section else ""
    if not isinstance(doc, dict):
        raise PredictorError(f"{where}: key {section} is {type(doc).__name__}; expected an object")
    for k in required:
        if k not in doc:
            raise PredictorError(f"{where}: key {prefix}{k} is missing")
    if not unknown_ok:
        extra = sorted(set(doc) - set(spec))
        if extra:
            raise PredictorError(f"{where}: unknown key {prefix}{extra[0]}; expected only {', '.join(spec)}")
    for k, (ok, what) in spec.items():
        if k in doc and not ok(doc[k]):
            raise PredictorError(f"{where}: key {prefix}{k} is {json.dumps(doc[k])[:60]}; expected {what}")
