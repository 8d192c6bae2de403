"""What predictor.json holds, checked key by key on load (`load_predictor`): the type of every
key of hyper, meta, shape and params, every number within its kind's range in the bounds table
(`SECTION_BOUNDS`: each section's field -> kind map), and the arrays each kind saves. A failed check
is one PredictorError line naming the file and the key. `FittedOn.from_meta` (predictors.base)
applies the meta checks, on load and to a fitted predictor's `meta_`."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from dynasearch_runtime.clocks import CLOCKS
from dynasearch_runtime.field_bounds import SHAPE_BOUNDS, Field, first_violation

from .errors import PredictorError
from .records import LATENCY_COLUMN

# Every number of predictor.json by its kind in the bounds table, per section (`field_bounds.Field`:
# path within the section, kind, null allowed); the specs below check the types and the structure.
META_BOUNDS: tuple[Field, ...] = (
    ("cpu_cores", "cpu_cores", False),
    ("threads", "threads", False),
    ("n_train", "count", False),
    ("n_configs", "count0", False),
    ("shapes.*.0", "batch", False),
    ("shapes.*.1", "seq_len", False),
    ("widths_seen.heads.*", "heads", False),
    ("widths_seen.ffn.*", "ffn", False),
    ("anchor_reference.*.batch", "batch", False),
    ("anchor_reference.*.seq_len", "seq_len", False),
    ("anchor_reference.*.ms", "latency_ms", False),
)
HYPER_BOUNDS: tuple[Field, ...] = (
    ("cv_folds", "count", False),
    ("seed", "seed", False),
    ("ridge", "weight", False),
    ("n_trees", "count", False),
    ("learning_rate", "learning_rate", False),
    ("max_depth", "count", False),
    ("min_leaf", "count", False),
)
# The fitted parameters that mean a quantity; base_ms and init are a fit's intercepts (finite, any sign).
PARAM_BOUNDS: tuple[Field, ...] = (("learning_rate", "learning_rate", False), ("floor", "latency_ms", False))
SECTION_BOUNDS: dict[str, tuple[Field, ...]] = {
    "meta": META_BOUNDS,
    "hyper": HYPER_BOUNDS,
    "shape": SHAPE_BOUNDS,
    "params": PARAM_BOUNDS,
}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_shapes(v: Any) -> bool:
    return (
        isinstance(v, list)
        and len(v) > 0
        and all(isinstance(x, list) and len(x) == 2 and all(_is_int(y) for y in x) for x in v)
    )


def _is_widths(v: Any) -> bool:
    return isinstance(v, dict) and all(
        isinstance(v.get(k), list) and all(_is_int(x) for x in v[k]) for k in ("heads", "ffn")
    )


def _is_anchors(v: Any) -> bool:
    return isinstance(v, list) and all(
        isinstance(a, dict)
        and _is_int(a.get("batch"))
        and _is_int(a.get("seq_len"))
        and isinstance(a.get("key"), str)
        and _is_num(a.get("ms"))
        for a in v
    )


_STR = (lambda v: isinstance(v, str), "a string")
_INT = (_is_int, "an integer")  # its range: SECTION_BOUNDS
_BOOL = (lambda v: isinstance(v, bool), "true or false")
META_KEYS: dict[str, tuple[Any, str]] = {
    "cpu_model": _STR,
    "cpu_cores": _INT,
    "gpu_name": _STR,
    "backend": _STR,
    "device": _STR,
    "provider": _STR,
    "threads": _INT,
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
    "shapes": (_is_shapes, "a non-empty list of [batch, seq_len] pairs of integers"),
    "across_shapes": _BOOL,
    "n_train": _INT,
    "n_configs": _INT,
    "created": _STR,
}
# Added to version 1 later: a predictor written before lacks them and is read as it is (with a warning).
META_KEYS_LATER: dict[str, tuple[Any, str]] = {
    "latency_column": (lambda v: v in (LATENCY_COLUMN, "median_ms"), f"{LATENCY_COLUMN!r} or 'median_ms'"),
    "widths_seen": (_is_widths, "an object with lists 'heads' and 'ffn' of integers"),
    "anchor_reference": (_is_anchors, "a list of {batch, seq_len, key, ms} with ms a finite number"),
}
# Added later still, read without a warning when absent: every predictor written before it was fitted on
# wall-clock records (fit-predictor took no mix of clocks and the CPU clock was new), so absent = "wall".
META_KEYS_OPTIONAL: dict[str, tuple[Any, str]] = {
    "clock": (lambda v: v in CLOCKS, f"{' or '.join(map(repr, CLOCKS))} (the clock of the fitting records)"),
}
HYPER_KEYS: dict[str, tuple[Any, str]] = {
    "across_shapes": _BOOL,
    "cv_folds": _INT,
    "seed": _INT,
    "calibrate": _BOOL,
    "ridge": (_is_num, "a finite number"),
    "n_trees": _INT,
    "learning_rate": (_is_num, "a finite number"),
    "max_depth": _INT,
    "min_leaf": _INT,
}
_NUM = (_is_num, "a finite number")
PARAM_KEYS: dict[str, dict[str, tuple[Any, str]]] = {
    "lut": {"base_ms": _NUM},
    "layer-regression": {},
    "gbdt": {"init": _NUM, "learning_rate": _NUM},
    "hybrid": {
        "init": _NUM,
        "learning_rate": _NUM,
        "floor": _NUM,
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
    "num_layers": _INT,
    "num_heads": _INT,
    "head_dim": _INT,
    "hidden_size": _INT,
    "intermediate_size": _INT,
    "vocab_size": _INT,
    "max_positions": _INT,
    "type_vocab_size": _INT,
    "num_labels": _INT,
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
    """Every key of `spec` present in doc holds its type, every number of the section its kind's range
    (SECTION_BOUNDS); `required` ones must be there."""
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
    # The numbers first: their rule names the range too ('an integer in 1..1024', not 'an integer').
    bad = first_violation(doc, SECTION_BOUNDS.get(section, ()))
    if bad:
        raise PredictorError(f"{where}: key {prefix}{bad[0]} is {json.dumps(bad[1])[:60]}; expected {bad[2]}")
    for k, (ok, what) in spec.items():
        if k in doc and not ok(doc[k]):
            raise PredictorError(f"{where}: key {prefix}{k} is {json.dumps(doc[k])[:60]}; expected {what}")
