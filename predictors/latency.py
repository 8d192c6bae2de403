"""Latency predictors: fit on records, predict milliseconds, save and load as JSON + arrays.

Four kinds share one interface (scikit-learn's contract: `__init__` stores hyper-parameters only,
`fit` returns self, learned attributes end in `_`):
- `lut`: additive per-layer lookup table built from single-layer measurements (the
  `layer-table` sampler): base + sum over kept layers of attention(heads) + ffn(neurons), with an
  optional two-number calibration (a + b * table sum) fitted on whole-model records;
- `layer-regression`: the same additive structure, but every per-layer cost is learned from
  whole-model records by non-negative least squares on relative error, over piecewise-linear
  ("hat") bases at the measured head and FFN widths; across input shapes each basis is scaled by
  1, batch*seq and (attention) batch*seq^2, the way the matmuls scale (FLOPs are spanned by those);
- `gbdt`: gradient-boosted trees on summary features (depth, heads, FFN, FLOPs, batch, seq) of log ms;
- `hybrid`: layer-regression times a boosted-tree correction fitted on its out-of-fold log error.
Every predictor keeps cross-validated relative residuals for split-conformal prediction intervals.
A predictor is tied to one fingerprint and setting (backend, provider, threads, spinning, dtype,
backbone; one batch and sequence length unless fitted across shapes): asking it about another
raises unless forced, in which case it warns.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import math
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import pandas as pd

from dynabert.subnet import BackboneShape, SubnetConfig

from .errors import PredictorError
from .records import LATENCY_COLUMN, check_one_target, ok_records, shape_of
from .samplers import is_layer_table_config

FORMAT = "dynasearch-latency-predictor"
VERSION = 1
# Settings a predictor is tied to: asking with other values raises unless forced.
TARGET_FIELDS = ("cpu_model", "cpu_cores", "gpu_name", "backend", "device", "provider", "threads", "spinning", "dtype", "shape_key")


@dataclass
class Data:
    """What a predictor sees of the records: configs, input shapes, speed-corrected median ms."""

    subnets: list[SubnetConfig]
    batch: np.ndarray
    seq: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def take(self, idx: np.ndarray) -> "Data":
        return Data([self.subnets[i] for i in idx], self.batch[idx], self.seq[idx], self.y[idx])

    @classmethod
    def from_records(cls, df: pd.DataFrame) -> "Data":
        return cls(
            [SubnetConfig.from_json(s) for s in df["subnet"]],
            df["batch"].to_numpy(dtype=float), df["seq_len"].to_numpy(dtype=float), df[LATENCY_COLUMN].to_numpy(dtype=float),
        )


# ---------------------------------------------------------------------------------------- base
class LatencyPredictor(ABC):
    kind: ClassVar[str] = ""
    supports_shapes: ClassVar[bool] = True

    def __init__(self, across_shapes: bool = False, cv_folds: int = 5, seed: int = 0):
        self.across_shapes = across_shapes
        self.cv_folds = cv_folds
        self.seed = seed
        if across_shapes and not self.supports_shapes:
            raise PredictorError(f"predictor {self.kind!r} serves one batch and sequence length; it cannot be fitted across shapes")

    # ---- what subclasses provide
    def hyper(self) -> dict[str, Any]:
        return {"across_shapes": self.across_shapes, "cv_folds": self.cv_folds, "seed": self.seed}

    @abstractmethod
    def min_records(self, data: Data) -> int: ...

    @abstractmethod
    def _fit(self, data: Data) -> None: ...

    @abstractmethod
    def _predict(self, subnets: Sequence[SubnetConfig], batch: np.ndarray, seq: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def _get_params(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]: ...

    @abstractmethod
    def _set_params(self, params: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None: ...

    def _always_train(self, data: Data) -> np.ndarray:
        """Rows every cross-validation fold trains on and none is scored on: the single-layer
        lookup-table probes. They are not configs anyone deploys, and a fold without the empty one
        can price it at 0 ms (an infinite relative error that says nothing about real configs)."""
        return np.array([is_layer_table_config(s) for s in data.subnets], dtype=bool)

    # ---- fitting
    def fit(self, records: pd.DataFrame, conformal: bool = True) -> "LatencyPredictor":
        """Fit on records of one target (status ok rows). conformal=False skips the cross-validation
        that the prediction intervals need (learning curves use that)."""
        df = ok_records(records)
        if df.empty:
            raise PredictorError("no usable records (status ok) to fit a predictor on")
        check_one_target(df, allow_shapes=self.across_shapes)
        self.shape_ = shape_of(df)
        data = Data.from_records(df)
        need = self.min_records(data)
        if len(data) < need:
            raise PredictorError(f"too few records to fit predictor {self.kind!r}: {len(data)} given, at least {need} needed")
        self._fit(data)
        self.meta_ = _metadata(df, self.kind, len(data), self.across_shapes)
        self.conformal_scores_ = self._cv_scores(data) if conformal else np.zeros(0)
        return self

    def _cv_scores(self, data: Data) -> np.ndarray:
        """Relative out-of-fold residuals |y / y_hat - 1| (for conformal intervals)."""
        fixed = self._always_train(data)
        free = np.flatnonzero(~fixed)
        k = min(self.cv_folds, len(free))
        if k < 2:
            return np.zeros(0)
        rng = np.random.default_rng(self.seed)
        folds = np.array_split(rng.permutation(free), k)
        scores = []
        for fold in folds:
            train_idx = np.setdiff1d(np.arange(len(data)), fold)
            sub = type(self)(**self.hyper())
            sub.shape_ = self.shape_
            part = data.take(train_idx)
            try:
                sub._fit(part)
            except PredictorError:
                continue  # a fold too small for this kind: skip it
            held = data.take(fold)
            pred = sub._predict(held.subnets, held.batch, held.seq)
            scores.append(np.abs(held.y / pred - 1.0))
        return np.sort(np.concatenate(scores)) if scores else np.zeros(0)

    # ---- prediction
    def _check_fitted(self) -> None:
        if not hasattr(self, "meta_"):
            raise PredictorError(f"predictor {self.kind!r} is not fitted; call fit(records) or load(dir) first")

    def check_target(self, target: Mapping[str, Any], force: bool = False) -> None:
        """Refuse (or with force, warn) when `target` (a records row or settings dict) names another
        fingerprint or setting than the one this predictor was fitted for."""
        self._check_fitted()
        diffs = [
            f"{f}: predictor {_plain(self.meta_[f])!r}, asked {_plain(target[f])!r}"
            for f in TARGET_FIELDS
            if f in target and not _same(target[f], self.meta_[f])
        ]
        if diffs:
            msg = "predictor was fitted for another fingerprint or setting (" + "; ".join(diffs) + ")"
            if not force:
                raise PredictorError(msg + "; measure this setting and fit a predictor for it (in Python, force=True predicts anyway)")
            warnings.warn(msg + "; predicting anyway (forced)", stacklevel=2)

    def _check_shapes(self, batch: np.ndarray, seq: np.ndarray, force: bool) -> None:
        trained = {(int(b), int(s)) for b, s in self.meta_["shapes"]}
        asked = {(int(b), int(s)) for b, s in zip(batch, seq)}
        if not self.meta_["across_shapes"]:
            other = sorted(asked - trained)
            if other:
                msg = f"predictor was fitted for (batch, seq_len) {sorted(trained)}; asked {other[:5]}"
                if not force:
                    raise PredictorError(msg + "; fit one across shapes (fit-predictor --across-shapes) or measure and fit "
                                         "this shape (in Python, force=True predicts anyway)")
                warnings.warn(msg + " (forced)", stacklevel=3)
            return
        bs = [b for b, _ in self.meta_["shapes"]]
        ss = [s for _, s in self.meta_["shapes"]]
        outside = [(b, s) for b, s in asked if not (min(bs) <= b <= max(bs) and min(ss) <= s <= max(ss))]
        if outside:
            warnings.warn(
                f"(batch, seq_len) {outside[:5]} outside the fitted ranges batch {min(bs)}-{max(bs)}, "
                f"seq_len {min(ss)}-{max(ss)}: extrapolating", stacklevel=3,
            )

    def predict(self, subnets: Sequence[SubnetConfig], batch: int | Sequence[int] | None = None,
                seq_len: int | Sequence[int] | None = None, force: bool = False) -> np.ndarray:
        """Predicted latency in milliseconds, one per sub-network. batch / seq_len default to the
        fitted ones (a predictor fitted on one input shape)."""
        self._check_fitted()
        subnets = list(subnets)
        for s in subnets:
            s.validate(self.shape_)
        b0, s0 = self.meta_["shapes"][0]
        batch_arr = np.broadcast_to(np.asarray(b0 if batch is None else batch, dtype=float), (len(subnets),)).copy()
        seq_arr = np.broadcast_to(np.asarray(s0 if seq_len is None else seq_len, dtype=float), (len(subnets),)).copy()
        self._check_shapes(batch_arr, seq_arr, force)
        return self._predict(subnets, batch_arr, seq_arr)

    def predict_records(self, records: pd.DataFrame, force: bool = False) -> np.ndarray:
        """Predictions for the configs and input shapes of records rows (their settings checked)."""
        self._check_fitted()
        for _, row in records.drop_duplicates("target_id").iterrows():
            self.check_target(row, force)
        return self.predict(
            [SubnetConfig.from_json(s) for s in records["subnet"]], records["batch"].to_numpy(), records["seq_len"].to_numpy(), force=force
        )

    def conformal_quantile(self, coverage: float) -> float:
        """Relative half-width q of the split-conformal interval y_hat * [1 - q, 1 + q]."""
        self._check_fitted()
        if not 0 < coverage < 1:
            raise PredictorError(f"coverage must be in (0, 1); got {coverage}")
        scores = self.conformal_scores_
        n = len(scores)
        if n == 0:
            raise PredictorError(f"predictor {self.kind!r} has no cross-validation residuals (too few whole-model records) for intervals")
        rank = math.ceil((n + 1) * coverage)
        return math.inf if rank > n else float(scores[rank - 1])

    def predict_interval(self, subnets: Sequence[SubnetConfig], coverage: float = 0.9, batch=None, seq_len=None, force: bool = False):
        """(prediction, low, high) in ms; the interval covers `coverage` of new measurements if the
        errors are exchangeable with the cross-validation ones (their measured coverage is reported
        by `dynasearch fit-predictor`)."""
        pred = self.predict(subnets, batch, seq_len, force)
        q = self.conformal_quantile(coverage)
        return pred, pred * max(0.0, 1 - q), pred * (1 + q)

    # ---- persistence
    def save(self, directory: str | Path, overwrite: bool = False) -> Path:
        """directory/predictor.json (metadata, hyper-parameters, small parameters) + arrays.npz."""
        from dynabert.io import atomic_dir, write_json

        self._check_fitted()
        params, arrays = self._get_params()
        arrays = dict(arrays, conformal_scores=np.asarray(self.conformal_scores_, dtype=float))
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        blob = buf.getvalue()
        doc = {
            "format": FORMAT, "version": VERSION, "kind": self.kind, "hyper": self.hyper(), "meta": self.meta_,
            "shape": self.shape_.to_dict(), "params": params,
            "arrays": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in arrays.items()},
            "arrays_sha256": hashlib.sha256(blob).hexdigest(),
        }
        with atomic_dir(directory, overwrite) as tmp:
            (tmp / "arrays.npz").write_bytes(blob)
            write_json(tmp / "predictor.json", doc)
        return Path(directory)

    @staticmethod
    def load(directory: str | Path) -> "LatencyPredictor":
        return load_predictor(directory)


def _plain(value: Any) -> Any:
    """numpy scalars as Python ones, so messages read 2, not np.int64(2)."""
    return value.item() if isinstance(value, np.generic) else value


def _same(a: Any, b: Any) -> bool:
    """Settings equal as values: 2 == 2.0 == np.int64(2) (a records column read as float), True == 'True'."""
    a, b = _plain(a), _plain(b)
    if isinstance(a, bool) or isinstance(b, bool):
        return str(a).lower() == str(b).lower()
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return str(a) == str(b)


# ------------------------------------------------------------------------- the predictor reader
# What predictor.json holds, checked key by key on load (one PredictorError line naming the key).
def _is_int(v: Any, low: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def _is_num(v: Any, positive: bool = False) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and (v > 0 or not positive)


def _is_shapes(v: Any) -> bool:
    return isinstance(v, list) and len(v) > 0 and all(isinstance(x, list) and len(x) == 2 and all(_is_int(y, 1) for y in x) for x in v)


def _is_widths(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(v.get(k), list) and all(_is_int(x) for x in v[k]) for k in ("heads", "ffn"))


def _is_anchors(v: Any) -> bool:
    return isinstance(v, list) and all(
        isinstance(a, dict) and _is_int(a.get("batch"), 1) and _is_int(a.get("seq_len"), 1) and isinstance(a.get("key"), str)
        and _is_num(a.get("ms"), positive=True) for a in v)


_STR = (lambda v: isinstance(v, str), "a string")
_POS_INT = (lambda v: _is_int(v, 1), "a positive integer")
_INT = (lambda v: _is_int(v), "a non-negative integer")
_BOOL = (lambda v: isinstance(v, bool), "true or false")
META_KEYS: dict[str, tuple[Any, str]] = {
    "cpu_model": _STR, "cpu_cores": _POS_INT, "gpu_name": _STR, "backend": _STR, "device": _STR, "provider": _STR,
    "threads": _POS_INT, "spinning": _BOOL, "dtype": _STR, "shape_key": _STR, "kind": _STR, "fingerprint": _STR,
    "target_id": _STR, "gpu_driver": _STR, "torch_version": _STR, "onnxruntime_version": _STR, "numpy_version": _STR,
    "dynasearch_version": _STR, "shapes": (_is_shapes, "a non-empty list of [batch, seq_len] pairs of positive integers"),
    "across_shapes": _BOOL, "n_train": _POS_INT, "n_configs": _INT, "created": _STR,
}
# Added to version 1 later: a predictor written before lacks them and is read as it is (with a warning).
META_KEYS_LATER: dict[str, tuple[Any, str]] = {
    "latency_column": (lambda v: v in (LATENCY_COLUMN, "median_ms"), f"{LATENCY_COLUMN!r} or 'median_ms'"),
    "widths_seen": (_is_widths, "an object with lists 'heads' and 'ffn' of non-negative integers"),
    "anchor_reference": (_is_anchors, "a list of {batch, seq_len, key, ms} with ms a positive number"),
}
_HYPER: dict[str, tuple[Any, str]] = {
    "across_shapes": _BOOL, "cv_folds": _POS_INT, "seed": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"), "calibrate": _BOOL,
    "ridge": (lambda v: _is_num(v) and v >= 0, "a non-negative number"), "n_trees": _POS_INT,
    "learning_rate": (lambda v: _is_num(v, positive=True), "a positive number"), "max_depth": _POS_INT, "min_leaf": _POS_INT,
}
_NUM = (lambda v: _is_num(v), "a finite number")
_PARAMS: dict[str, dict[str, tuple[Any, str]]] = {
    "lut": {"base_ms": _NUM}, "layer-regression": {}, "gbdt": {"init": _NUM, "learning_rate": _NUM},
    "hybrid": {"init": _NUM, "learning_rate": _NUM, "floor": (lambda v: _is_num(v, positive=True), "a positive number")},
}
_TREES = ("roots", "feature", "threshold", "left", "right", "value")
_ARRAYS: dict[str, tuple[str, ...]] = {
    "lut": ("attn", "ffn", "calibration"), "layer-regression": ("head_knots", "ffn_knots", "coef"), "gbdt": _TREES,
    "hybrid": ("linear_head_knots", "linear_ffn_knots", "linear_coef", *(f"trees_{t}" for t in _TREES)),
}
_SHAPE_KEYS: dict[str, tuple[Any, str]] = {
    "num_layers": _POS_INT, "num_heads": _POS_INT, "head_dim": _POS_INT, "hidden_size": _POS_INT, "intermediate_size": _POS_INT,
    "vocab_size": _POS_INT, "max_positions": _POS_INT, "type_vocab_size": _POS_INT, "num_labels": _POS_INT,
    "flavor": (lambda v: v in ("bert", "roberta"), "'bert' or 'roberta'"),
}


def _check_keys(where: str, section: str, doc: Any, spec: Mapping[str, tuple[Any, str]], required: Sequence[str] = (),
                unknown_ok: bool = True) -> None:
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


def load_predictor(directory: str | Path) -> LatencyPredictor:
    """THE reader of a predictor directory (predictor.json + arrays.npz), or of a fit-predictor output
    (its metrics.json names the best kind, loaded from predictors/<kind>/: see `find_predictor`).

    Every key of predictor.json is checked (format and version, kind, hyper-parameters, metadata,
    backbone shape, parameters, the arrays' names, shapes, dtypes and checksum, numbers finite),
    then the predictor must price the full model at a finite, positive latency. Any damage:
    PredictorError, one line naming the file and the key. A version-1 file written before some
    metadata keys existed is read with a warning saying so; another version is refused."""
    d = Path(directory)
    if not (d / "predictor.json").exists() and (d / "metrics.json").exists():
        return find_predictor(d)[0]
    meta_path, arr_path = d / "predictor.json", d / "arrays.npz"
    if not d.exists():
        raise PredictorError(f"predictor directory '{d}' does not exist")
    if not meta_path.is_file():
        raise PredictorError(f"'{d}' is not a predictor directory (no predictor.json)")
    try:
        doc = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PredictorError(f"{meta_path} is truncated or not JSON ({e})") from None
    except OSError as e:
        raise PredictorError(f"cannot read {meta_path}: {e.strerror or e}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise PredictorError(f"{meta_path} is not a dynasearch latency predictor (format {doc.get('format') if isinstance(doc, dict) else None!r})")
    if doc.get("version") != VERSION:
        raise PredictorError(f"{meta_path} has predictor format version {doc.get('version')!r}; this dynasearch reads version {VERSION}")
    where = f"predictor file {meta_path}"
    kind = doc.get("kind")
    if kind not in PREDICTORS:
        raise PredictorError(f"{meta_path} holds an unknown predictor kind {kind!r}; known: {', '.join(PREDICTORS)}")
    for k in ("hyper", "meta", "shape", "params", "arrays"):
        if not isinstance(doc.get(k), dict):
            raise PredictorError(f"{where}: key {k} is {'missing' if k not in doc else json.dumps(doc[k])[:40]}; expected an object")
    hyper_keys = set(PREDICTORS[kind](**{}).hyper())
    _check_keys(where, "hyper", doc["hyper"], {k: v for k, v in _HYPER.items() if k in hyper_keys}, unknown_ok=False)
    meta = doc["meta"]
    _check_keys(where, "meta", meta, {**META_KEYS, **META_KEYS_LATER}, required=list(META_KEYS))
    if meta["kind"] != kind:
        raise PredictorError(f"{where}: key meta.kind is {meta['kind']!r}; expected {kind!r} (the file's kind)")
    if meta["across_shapes"] != doc["hyper"].get("across_shapes", False):
        raise PredictorError(f"{where}: key meta.across_shapes is {json.dumps(meta['across_shapes'])}; expected "
                             f"{json.dumps(doc['hyper'].get('across_shapes', False))} (as hyper.across_shapes)")
    _check_keys(where, "shape", doc["shape"], _SHAPE_KEYS, required=list(_SHAPE_KEYS)[:5], unknown_ok=False)
    _check_keys(where, "params", doc["params"], _PARAMS[kind], required=[k for k in _PARAMS[kind] if k != "floor"])
    declared = doc["arrays"]
    needed = (*_ARRAYS[kind], "conformal_scores")
    missing = [a for a in needed if a not in declared]
    if missing:
        raise PredictorError(f"{where}: key arrays.{missing[0]} is missing (a {kind} predictor has arrays {', '.join(needed)})")
    if not isinstance(doc.get("arrays_sha256"), str):
        raise PredictorError(f"{where}: key arrays_sha256 is missing or not a string")
    if not arr_path.is_file():
        raise PredictorError(f"predictor '{d}' lacks arrays.npz")
    blob = arr_path.read_bytes()
    if hashlib.sha256(blob).hexdigest() != doc["arrays_sha256"]:
        raise PredictorError(f"{arr_path} is truncated or does not belong to {meta_path} (checksum differs)")
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:
        raise PredictorError(f"{arr_path} cannot be read: {type(e).__name__}: {e}") from None
    for name in sorted(set(declared) | set(arrays)):
        a, dec = arrays.get(name), declared.get(name)
        if a is None or not isinstance(dec, dict) or dec.get("shape") != list(a.shape) or dec.get("dtype") != str(a.dtype):
            got = "absent" if a is None else f"shape {list(a.shape)} dtype {a.dtype}"
            raise PredictorError(f"{where}: key arrays.{name} is {json.dumps(dec)[:60]}; expected what {arr_path.name} holds ({got})")
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise PredictorError(f"{arr_path}: array {name} holds a NaN or an infinite value")
    later = [k for k in META_KEYS_LATER if k not in meta]
    if later:
        warnings.warn(f"predictor {d} was written by an older dynasearch (its metadata lacks {', '.join(later)}): "
                      "read as it is; fit it again for what those give (the speed reference, the widths it saw)", stacklevel=2)
    try:
        pred = PREDICTORS[kind](**doc["hyper"])
        pred.shape_ = BackboneShape(**doc["shape"])
        pred.meta_ = meta
        pred.conformal_scores_ = arrays.pop("conformal_scores")
        pred._set_params(doc["params"], arrays)
        b0, s0 = meta["shapes"][0]
        full = pred._predict([SubnetConfig.full(pred.shape_)], np.array([float(b0)]), np.array([float(s0)]))
    except PredictorError:
        raise
    except Exception as e:
        raise PredictorError(f"predictor '{d}' cannot be read: its arrays do not fit together ({type(e).__name__}: {e})") from None
    if not (np.ndim(full) == 1 and len(full) == 1 and np.isfinite(full[0]) and full[0] > 0):
        raise PredictorError(f"predictor '{d}' is damaged: it prices the full model at {float(np.ravel(full)[0])} ms; "
                             "expected a finite, positive latency")
    return pred


FIT_FORMAT = "dynasearch-predictor-fit"
FIT_VERSION = 1


def find_predictor(path: str | Path) -> tuple[LatencyPredictor, Path]:
    """(predictor, its directory) from a predictor directory or a fit-predictor output, whose
    metrics.json (format dynasearch-predictor-fit) names the best kind in predictors/<kind>/.
    PredictorError, one line naming the file and the key, for a damaged or incomplete output; an
    output written before metrics.json carried its format is read with a warning."""
    from dynabert.io import read_json

    p = Path(path)
    if not p.exists():
        raise PredictorError(f"predictor directory {p} does not exist")
    if (p / "predictor.json").exists():
        return load_predictor(p), p
    metrics = p / "metrics.json"
    if not metrics.exists():
        raise PredictorError(f"{p} is not a dynasearch latency predictor (no predictor.json; a fit-predictor output needs "
                             "metrics.json naming the best kind and predictors/<kind>/)")
    doc = read_json(metrics, "predictor metrics file", error=PredictorError)
    if not isinstance(doc, dict):
        raise PredictorError(f"predictor metrics file {metrics} holds {type(doc).__name__}; expected a JSON object")
    if "format" not in doc:
        warnings.warn(f"{metrics} was written by an older dynasearch (no format key): read as fit-predictor output "
                      f"version {FIT_VERSION}", stacklevel=2)
    elif doc["format"] != FIT_FORMAT:
        raise PredictorError(f"{metrics}: key format is {json.dumps(doc['format'])[:40]}; expected {FIT_FORMAT!r}")
    elif doc.get("version") != FIT_VERSION:
        raise PredictorError(f"{metrics} has fit-predictor output version {doc.get('version')!r}; this dynasearch reads version {FIT_VERSION}")
    best = doc.get("best")
    kinds_dir = p / "predictors"
    there = sorted(k.name for k in kinds_dir.iterdir() if (k / "predictor.json").is_file()) if kinds_dir.is_dir() else []
    if not isinstance(best, str) or best not in PREDICTORS:
        raise PredictorError(f"{metrics}: key best is {json.dumps(best)[:40]}; expected a predictor kind "
                             f"({', '.join(PREDICTORS)})")
    if not (kinds_dir / best / "predictor.json").is_file():
        raise PredictorError(f"{metrics} names the best predictor {best!r}, but {kinds_dir / best / 'predictor.json'} is missing "
                             f"(the output is incomplete); run fit-predictor again, or give one that is there: "
                             f"{', '.join(str(kinds_dir / k) for k in there) or 'none is'}")
    pred = load_predictor(kinds_dir / best)
    if pred.kind != best:
        raise PredictorError(f"{kinds_dir / best / 'predictor.json'} holds a {pred.kind!r} predictor; {metrics} names {best!r}")
    return pred, kinds_dir / best


def _metadata(df: pd.DataFrame, kind: str, n: int, across_shapes: bool) -> dict[str, Any]:
    import importlib.metadata

    first = df.iloc[0]
    meta = {f: (bool(first[f]) if f == "spinning" else int(first[f]) if f in ("threads", "cpu_cores") else str(first[f])) for f in TARGET_FIELDS}
    shapes = sorted({(int(b), int(s)) for b, s in zip(df["batch"], df["seq_len"])})
    try:
        version = importlib.metadata.version("dynasearch")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    meta.update(
        kind=kind, fingerprint=str(first["fingerprint"]), target_id=str(first["target_id"]),
        gpu_driver=str(first["gpu_driver"]), torch_version=str(first["torch_version"]),
        onnxruntime_version=str(first["onnxruntime_version"]), numpy_version=np.__version__,
        dynasearch_version=version, shapes=[list(s) for s in shapes], across_shapes=across_shapes,
        n_train=n, n_configs=int(df["key"].nunique()), latency_column=LATENCY_COLUMN, widths_seen=widths_seen(df),
        anchor_reference=anchor_references(df), created=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    return meta


def anchor_references(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Per input shape, the anchor config and its reference median (ms) that the fitting records'
    corrected medians are on the scale of: anchor_ms / speed_index of every anchored run; for
    records without an anchor (older ones), the full model's own corrected median when it was
    measured among them (it is the default anchor). A later measurement against the same
    reference (a search's verification) is on the predictor's scale."""
    out: dict[tuple[int, int, str], float] = {}
    if "anchor_ms" in df and "speed_index" in df:
        a = pd.to_numeric(df["anchor_ms"], errors="coerce")
        si = pd.to_numeric(df["speed_index"], errors="coerce")
        d = df.assign(_ref=a / si)[(a > 0) & (si > 0)]
        for (b, s, k), g in d.groupby(["batch", "seq_len", "anchor_key"]):
            out[(int(b), int(s), str(k))] = float(g["_ref"].median())
    shape = shape_of(df)
    full = SubnetConfig.full(shape).key
    col = LATENCY_COLUMN if LATENCY_COLUMN in df else "median_ms"
    for (b, s), g in df[df["key"] == full].groupby(["batch", "seq_len"]):
        out.setdefault((int(b), int(s), full), float(pd.to_numeric(g[col], errors="coerce").median()))
    return [{"batch": b, "seq_len": s, "key": k, "ms": v} for (b, s, k), v in sorted(out.items())]


def widths_seen(df: pd.DataFrame) -> dict[str, list[int]]:
    """Sorted distinct per-layer head counts and FFN sizes over the records' configs (whole-model and
    single-layer alike): the widths a predictor was fitted on; others are interpolated."""
    subs = [SubnetConfig.from_json(s) for s in df["subnet"]]
    return {"heads": sorted({int(h) for s in subs for h in s.heads}), "ffn": sorted({int(f) for s in subs for f in s.ffn})}


# The kinds live in `_kinds.py` (they subclass LatencyPredictor above); re-exported here.
from ._kinds import (  # noqa: E402
    PREDICTORS, BoostedTreesPredictor, HybridPredictor, LayerRegressionPredictor, LookupTablePredictor, hat_basis,
    layer_features, make_predictor, relative_nnls, summary_features,
)
