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

from dynabert.subnet import BackboneShape, SubnetConfig, count_flops

from .errors import PredictorError
from .gbdt import TreeEnsemble, fit_gbdt
from .records import check_one_target, ok_records, shape_of
from .samplers import is_layer_table_config

FORMAT = "dynasearch-latency-predictor"
VERSION = 1
# Settings a predictor is tied to: asking with other values raises unless forced.
TARGET_FIELDS = ("cpu_model", "cpu_cores", "gpu_name", "backend", "device", "provider", "threads", "spinning", "dtype", "shape_key")


@dataclass
class Data:
    """What a predictor sees of the records: configs, input shapes, measured median ms."""

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
            df["batch"].to_numpy(dtype=float), df["seq_len"].to_numpy(dtype=float), df["median_ms"].to_numpy(dtype=float),
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
            f"{f}: predictor {self.meta_[f]!r}, asked {target[f]!r}"
            for f in TARGET_FIELDS
            if f in target and str(target[f]) != str(self.meta_[f])
        ]
        if diffs:
            msg = "predictor was fitted for another fingerprint or setting (" + "; ".join(diffs) + ")"
            if not force:
                raise PredictorError(msg + "; measure this setting and fit a predictor for it, or pass force")
            warnings.warn(msg + "; predicting anyway (forced)", stacklevel=2)

    def _check_shapes(self, batch: np.ndarray, seq: np.ndarray, force: bool) -> None:
        trained = {(int(b), int(s)) for b, s in self.meta_["shapes"]}
        asked = {(int(b), int(s)) for b, s in zip(batch, seq)}
        if not self.meta_["across_shapes"]:
            other = sorted(asked - trained)
            if other:
                msg = f"predictor was fitted for (batch, seq_len) {sorted(trained)}; asked {other[:5]}"
                if not force:
                    raise PredictorError(msg + "; fit one across shapes (--across-shapes) or pass force")
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


def load_predictor(directory: str | Path) -> LatencyPredictor:
    d = Path(directory)
    meta_path, arr_path = d / "predictor.json", d / "arrays.npz"
    if not meta_path.is_file():
        raise PredictorError(f"'{d}' is not a predictor directory (no predictor.json)")
    try:
        doc = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PredictorError(f"{meta_path} is truncated or not JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise PredictorError(f"{meta_path} is not a dynasearch latency predictor (format {doc.get('format') if isinstance(doc, dict) else None!r})")
    if doc.get("version") != VERSION:
        raise PredictorError(f"{meta_path} has predictor format version {doc.get('version')!r}; this dynasearch reads version {VERSION}")
    kind = doc.get("kind")
    if kind not in PREDICTORS:
        raise PredictorError(f"{meta_path} holds an unknown predictor kind {kind!r}; known: {', '.join(PREDICTORS)}")
    if not arr_path.is_file():
        raise PredictorError(f"predictor '{d}' lacks arrays.npz")
    blob = arr_path.read_bytes()
    if hashlib.sha256(blob).hexdigest() != doc.get("arrays_sha256"):
        raise PredictorError(f"{arr_path} is truncated or does not belong to {meta_path} (checksum differs)")
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        pred = PREDICTORS[kind](**doc["hyper"])
        pred.shape_ = BackboneShape(**doc["shape"])
        pred.meta_ = doc["meta"]
        pred.conformal_scores_ = arrays.pop("conformal_scores")
        pred._set_params(doc["params"], arrays)
    except PredictorError:
        raise
    except Exception as e:
        raise PredictorError(f"predictor '{d}' cannot be read: {type(e).__name__}: {e}") from None
    return pred


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
        n_train=n, n_configs=int(df["key"].nunique()),
        created=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    return meta


# ---------------------------------------------------------------------------------------- features
def hat_basis(values: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """Piecewise-linear interpolation weights of `values` over knots [0, *knots] (the 0 knot has no
    column: a sub-block of width 0 costs nothing). Beyond the last knot: linear extrapolation."""
    values = np.asarray(values, dtype=float)
    grid = np.concatenate([[0.0], knots])
    out = np.zeros((len(values), len(grid)))
    for i, v in enumerate(values):
        j = int(np.clip(np.searchsorted(grid, v, side="right") - 1, 0, len(grid) - 2))
        t = (v - grid[j]) / (grid[j + 1] - grid[j])
        out[i, j] += 1 - t
        out[i, j + 1] += t
    return out[:, 1:]


def _shape_terms(batch: float, seq: float, quadratic: bool, across: bool) -> np.ndarray:
    if not across:
        return np.ones(1)
    tokens = batch * seq
    return np.array([1.0, tokens, tokens * seq]) if quadratic else np.array([1.0, tokens])


def layer_features(subnets: Sequence[SubnetConfig], batch: np.ndarray, seq: np.ndarray,
                   head_knots: np.ndarray, ffn_knots: np.ndarray, across: bool) -> np.ndarray:
    """Per config: [base terms, sum over layers of hat(heads) x attention terms, hat(ffn) x FFN terms]."""
    rows = []
    for s, b, t in zip(subnets, batch, seq):
        attn_terms = _shape_terms(b, t, True, across)
        ffn_terms = _shape_terms(b, t, False, across)
        heads = [h for h in s.heads if h > 0]
        ffns = [f for f in s.ffn if f > 0]
        ha = hat_basis(np.array(heads, float), head_knots).sum(0) if heads else np.zeros(len(head_knots))
        fa = hat_basis(np.array(ffns, float), ffn_knots).sum(0) if ffns else np.zeros(len(ffn_knots))
        rows.append(np.concatenate([_shape_terms(b, t, False, across), np.outer(ha, attn_terms).ravel(), np.outer(fa, ffn_terms).ravel()]))
    return np.array(rows)


def relative_nnls(X: np.ndarray, y: np.ndarray, ridge: float = 1e-8) -> np.ndarray:
    """argmin_{beta >= 0} sum ((X beta - y) / y)^2 (+ a tiny ridge for rank-deficient designs).
    Relative error, because a predictor is judged by MAPE: 1 ms off matters for a 5 ms model, not
    for a 500 ms one. Non-negative, because every layer costs time."""
    from scipy.optimize import nnls

    A = X / y[:, None]
    scale = np.linalg.norm(A, axis=0)
    scale[scale == 0] = 1.0
    A = A / scale
    if ridge > 0:
        A = np.vstack([A, math.sqrt(ridge) * np.eye(A.shape[1])])
        rhs = np.concatenate([np.ones(len(y)), np.zeros(X.shape[1])])
    else:
        rhs = np.ones(len(y))
    beta, _ = nnls(A, rhs, maxiter=50 * A.shape[1])
    return beta / scale


def summary_features(subnets: Sequence[SubnetConfig], batch: np.ndarray, seq: np.ndarray, shape: BackboneShape) -> np.ndarray:
    """Config-level features for trees: depth, attention/FFN blocks, heads and FFN sums, extremes,
    FLOPs, batch, seq, tokens."""
    rows = []
    for s, b, t in zip(subnets, batch, seq):
        heads = [h for h in s.heads if h > 0] or [0]
        ffns = [f for f in s.ffn if f > 0] or [0]
        flops = count_flops(shape, s, int(b), int(t))
        rows.append([
            s.depth, sum(h > 0 for h in s.heads), sum(f > 0 for f in s.ffn), sum(s.heads), sum(s.ffn),
            max(heads), min(heads), max(ffns), min(ffns), math.log(max(flops, 1.0)), b, t, b * t,
        ])
    return np.array(rows, dtype=float)


# ---------------------------------------------------------------------------------------- kinds
class LookupTablePredictor(LatencyPredictor):
    kind = "lut"
    supports_shapes = False

    def __init__(self, calibrate: bool = True, **kw):
        super().__init__(**kw)
        self.calibrate = calibrate

    def hyper(self) -> dict[str, Any]:
        return dict(super().hyper(), calibrate=self.calibrate)

    def min_records(self, data: Data) -> int:
        return 2

    def _fit(self, data: Data) -> None:
        layer = self._always_train(data)
        table: dict[tuple[int, int], list[float]] = {}
        for s, y, is_layer in zip(data.subnets, data.y, layer):
            if is_layer:
                table.setdefault((s.heads[0], s.ffn[0]), []).append(y)
        if (0, 0) not in table:
            raise PredictorError(
                "the lookup table needs the single-layer records of the layer-table sampler (an empty layer "
                "and one block per width): dynasearch measure --sampler layer-table"
            )
        base = float(np.mean(table[(0, 0)]))
        attn = sorted((h, float(np.mean(v)) - base) for (h, f), v in table.items() if h > 0 and f == 0)
        ffn = sorted((f, float(np.mean(v)) - base) for (h, f), v in table.items() if f > 0 and h == 0)
        if not attn or not ffn:
            raise PredictorError("the lookup table needs at least one attention and one FFN single-layer record")
        self.base_ = base
        self.attn_ = np.array(attn, dtype=float)  # (knots, 2): heads, ms
        self.ffn_ = np.array(ffn, dtype=float)
        self.calib_ = np.array([0.0, 1.0])
        whole = ~layer
        if self.calibrate and whole.sum() >= 3:
            raw = self._raw([data.subnets[i] for i in np.flatnonzero(whole)])
            y = data.y[whole]
            A = np.stack([np.ones_like(raw), raw], 1) / y[:, None]
            self.calib_ = np.linalg.lstsq(A, np.ones_like(y), rcond=None)[0]

    @staticmethod
    def _interp(v: float, table: np.ndarray) -> float:
        xs = np.concatenate([[0.0], table[:, 0]])
        ys = np.concatenate([[0.0], table[:, 1]])
        if v <= xs[-1]:
            return float(np.interp(v, xs, ys))
        slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])  # beyond the table: extend its last segment
        return float(ys[-1] + slope * (v - xs[-1]))

    def _raw(self, subnets: Sequence[SubnetConfig]) -> np.ndarray:
        return np.array([
            self.base_ + sum(self._interp(h, self.attn_) for h in s.heads if h) + sum(self._interp(f, self.ffn_) for f in s.ffn if f)
            for s in subnets
        ])

    def _predict(self, subnets, batch, seq) -> np.ndarray:
        return self.calib_[0] + self.calib_[1] * self._raw(subnets)

    def _get_params(self):
        return {"base_ms": self.base_}, {"attn": self.attn_, "ffn": self.ffn_, "calibration": self.calib_}

    def _set_params(self, params, arrays) -> None:
        self.base_ = float(params["base_ms"])
        self.attn_, self.ffn_, self.calib_ = arrays["attn"], arrays["ffn"], arrays["calibration"]


class LayerRegressionPredictor(LatencyPredictor):
    kind = "layer-regression"

    def __init__(self, ridge: float = 1e-8, **kw):
        super().__init__(**kw)
        self.ridge = ridge

    def hyper(self) -> dict[str, Any]:
        return dict(super().hyper(), ridge=self.ridge)

    def _knots(self, data: Data) -> tuple[np.ndarray, np.ndarray]:
        heads = sorted({h for s in data.subnets for h in s.heads if h > 0})
        ffn = sorted({f for s in data.subnets for f in s.ffn if f > 0})
        return np.array(heads, float), np.array(ffn, float)

    def min_records(self, data: Data) -> int:
        h, f = self._knots(data)
        n_terms = 1 + len(h) + len(f) if not self.across_shapes else 2 + 3 * len(h) + 2 * len(f)
        return max(5, n_terms + 1)

    def _fit(self, data: Data) -> None:
        self.head_knots_, self.ffn_knots_ = self._knots(data)
        if not len(self.head_knots_) or not len(self.ffn_knots_):
            raise PredictorError("layer-regression needs records with attention heads and FFN neurons")
        X = layer_features(data.subnets, data.batch, data.seq, self.head_knots_, self.ffn_knots_, self.across_shapes)
        self.coef_ = relative_nnls(X, data.y, self.ridge)

    def _predict(self, subnets, batch, seq) -> np.ndarray:
        return layer_features(subnets, batch, seq, self.head_knots_, self.ffn_knots_, self.across_shapes) @ self.coef_

    def _get_params(self):
        return {}, {"head_knots": self.head_knots_, "ffn_knots": self.ffn_knots_, "coef": self.coef_}

    def _set_params(self, params, arrays) -> None:
        self.head_knots_, self.ffn_knots_, self.coef_ = arrays["head_knots"], arrays["ffn_knots"], arrays["coef"]


class BoostedTreesPredictor(LatencyPredictor):
    kind = "gbdt"

    def __init__(self, n_trees: int = 200, learning_rate: float = 0.08, max_depth: int = 3, min_leaf: int = 3, **kw):
        super().__init__(**kw)
        self.n_trees, self.learning_rate, self.max_depth, self.min_leaf = n_trees, learning_rate, max_depth, min_leaf

    def hyper(self) -> dict[str, Any]:
        return dict(super().hyper(), n_trees=self.n_trees, learning_rate=self.learning_rate, max_depth=self.max_depth, min_leaf=self.min_leaf)

    def min_records(self, data: Data) -> int:
        return max(10, 2 * self.min_leaf)

    def _fit(self, data: Data) -> None:
        X = summary_features(data.subnets, data.batch, data.seq, self.shape_)
        self.trees_ = fit_gbdt(X, np.log(data.y), self.n_trees, self.learning_rate, self.max_depth, self.min_leaf)

    def _predict(self, subnets, batch, seq) -> np.ndarray:
        return np.exp(self.trees_.predict(summary_features(subnets, batch, seq, self.shape_)))

    def _get_params(self):
        return {"init": self.trees_.init, "learning_rate": self.trees_.learning_rate}, self.trees_.arrays()

    def _set_params(self, params, arrays) -> None:
        self.trees_ = TreeEnsemble.from_arrays(params["init"], params["learning_rate"], dict(arrays))


class HybridPredictor(LatencyPredictor):
    """layer-regression x exp(trees): the trees learn what the additive model misses (interactions
    between layers, cache effects), from its out-of-fold errors so they do not learn its fit noise."""

    kind = "hybrid"

    def __init__(self, n_trees: int = 100, learning_rate: float = 0.05, max_depth: int = 2, min_leaf: int = 5, ridge: float = 1e-8, **kw):
        super().__init__(**kw)
        self.n_trees, self.learning_rate, self.max_depth, self.min_leaf, self.ridge = n_trees, learning_rate, max_depth, min_leaf, ridge

    def hyper(self) -> dict[str, Any]:
        return dict(super().hyper(), n_trees=self.n_trees, learning_rate=self.learning_rate, max_depth=self.max_depth, min_leaf=self.min_leaf, ridge=self.ridge)

    def _linear(self) -> LayerRegressionPredictor:
        lin = LayerRegressionPredictor(ridge=self.ridge, across_shapes=self.across_shapes, cv_folds=self.cv_folds, seed=self.seed)
        lin.shape_ = self.shape_
        return lin

    def min_records(self, data: Data) -> int:
        return max(self._linear().min_records(data) + 5, 2 * self.min_leaf, 15)

    def _fit(self, data: Data) -> None:
        self.linear_ = self._linear()
        self.linear_._fit(data)
        # Out-of-fold predictions of the linear part: the trees see its honest errors. The trees learn
        # from whole-model records only; the layer-table probes stay in every fold's linear fit.
        free = np.flatnonzero(~self._always_train(data))
        if len(free) < 2 * self.min_leaf:
            raise PredictorError(f"hybrid needs at least {2 * self.min_leaf} whole-model records; got {len(free)}")
        oof = np.empty(len(free))
        rng = np.random.default_rng(self.seed)
        for part in np.array_split(rng.permutation(len(free)), min(5, len(free))):
            lin = self._linear()
            lin._fit(data.take(np.setdiff1d(np.arange(len(data)), free[part])))
            held = data.take(free[part])
            oof[part] = lin._predict(held.subnets, held.batch, held.seq)
        # A linear part can price a config at ~0 ms (all its cost absorbed by terms the config lacks);
        # the trees work on log ratios, so keep it positive.
        self.floor_ = 0.05 * float(data.y.min())
        oof = np.maximum(oof, self.floor_)
        sub = data.take(free)
        X = np.column_stack([summary_features(sub.subnets, sub.batch, sub.seq, self.shape_), np.log(oof)])
        self.trees_ = fit_gbdt(X, np.log(sub.y / oof), self.n_trees, self.learning_rate, self.max_depth, self.min_leaf)

    def _predict(self, subnets, batch, seq) -> np.ndarray:
        lin = np.maximum(self.linear_._predict(subnets, batch, seq), self.floor_)
        X = np.column_stack([summary_features(subnets, batch, seq, self.shape_), np.log(lin)])
        return lin * np.exp(self.trees_.predict(X))

    def _get_params(self):
        _, lin_arrays = self.linear_._get_params()
        arrays = {f"linear_{k}": v for k, v in lin_arrays.items()}
        arrays.update({f"trees_{k}": v for k, v in self.trees_.arrays().items()})
        return {"init": self.trees_.init, "learning_rate": self.trees_.learning_rate, "floor": self.floor_}, arrays

    def _set_params(self, params, arrays) -> None:
        self.floor_ = float(params.get("floor", 1e-6))
        self.linear_ = self._linear()
        self.linear_._set_params({}, {k[len("linear_"):]: v for k, v in arrays.items() if k.startswith("linear_")})
        trees = {k[len("trees_"):]: v for k, v in arrays.items() if k.startswith("trees_")}
        self.trees_ = TreeEnsemble.from_arrays(params["init"], params["learning_rate"], trees)


PREDICTORS: dict[str, type[LatencyPredictor]] = {
    cls.kind: cls for cls in (LookupTablePredictor, LayerRegressionPredictor, BoostedTreesPredictor, HybridPredictor)
}


def make_predictor(kind: str, **kw) -> LatencyPredictor:
    if kind not in PREDICTORS:
        raise PredictorError(f"unknown predictor kind {kind!r}; allowed: {', '.join(PREDICTORS)}")
    return PREDICTORS[kind](**kw)
