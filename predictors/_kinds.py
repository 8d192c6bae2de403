"""The predictor kinds and their features (see `base.py` for the shared interface):
lookup table, layer regression (relative NNLS over hat bases), boosted trees, hybrid."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from dynabert.subnet import BackboneShape, SubnetConfig, count_flops

from .base import Data, LatencyPredictor
from .errors import PredictorError
from .gbdt import TreeEnsemble, fit_gbdt


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


def layer_features(
    subnets: Sequence[SubnetConfig],
    batch: np.ndarray,
    seq: np.ndarray,
    head_knots: np.ndarray,
    ffn_knots: np.ndarray,
    across: bool,
) -> np.ndarray:
    """Per config: [base terms, sum over layers of hat(heads) x attention terms, hat(ffn) x FFN terms]."""
    rows = []
    for s, b, t in zip(subnets, batch, seq):
        attn_terms = _shape_terms(b, t, True, across)
        ffn_terms = _shape_terms(b, t, False, across)
        heads = [h for h in s.heads if h > 0]
        ffns = [f for f in s.ffn if f > 0]
        ha = hat_basis(np.array(heads, float), head_knots).sum(0) if heads else np.zeros(len(head_knots))
        fa = hat_basis(np.array(ffns, float), ffn_knots).sum(0) if ffns else np.zeros(len(ffn_knots))
        rows.append(
            np.concatenate(
                [_shape_terms(b, t, False, across), np.outer(ha, attn_terms).ravel(), np.outer(fa, ffn_terms).ravel()]
            )
        )
    return np.array(rows)


def relative_nnls(X: np.ndarray, y: np.ndarray, ridge: float = 1e-8) -> np.ndarray:
    """argmin_{beta >= 0} sum ((X beta - y) / y)^2 (+ a tiny ridge for rank-deficient designs).
    Relative error, because a predictor is judged by MAPE: 1 ms off matters for a 5 ms model, not
    for a 500 ms one. Non-negative, because every layer costs time."""
    from scipy.optimize import nnls  # scipy.optimize costs ~0.2 s to import; only fitting needs it

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


def summary_features(
    subnets: Sequence[SubnetConfig], batch: np.ndarray, seq: np.ndarray, shape: BackboneShape
) -> np.ndarray:
    """Config-level features for trees: depth, attention/FFN blocks, heads and FFN sums, extremes,
    FLOPs, batch, seq, tokens."""
    rows = []
    for s, b, t in zip(subnets, batch, seq):
        heads = [h for h in s.heads if h > 0] or [0]
        ffns = [f for f in s.ffn if f > 0] or [0]
        flops = count_flops(shape, s, int(b), int(t))
        rows.append(
            [
                s.depth,
                sum(h > 0 for h in s.heads),
                sum(f > 0 for f in s.ffn),
                sum(s.heads),
                sum(s.ffn),
                max(heads),
                min(heads),
                max(ffns),
                min(ffns),
                math.log(max(flops, 1.0)),
                b,
                t,
                b * t,
            ]
        )
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
        return np.array(
            [
                self.base_
                + sum(self._interp(h, self.attn_) for h in s.heads if h)
                + sum(self._interp(f, self.ffn_) for f in s.ffn if f)
                for s in subnets
            ]
        )

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
        return dict(
            super().hyper(),
            n_trees=self.n_trees,
            learning_rate=self.learning_rate,
            max_depth=self.max_depth,
            min_leaf=self.min_leaf,
        )

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

    def __init__(
        self,
        n_trees: int = 100,
        learning_rate: float = 0.05,
        max_depth: int = 2,
        min_leaf: int = 5,
        ridge: float = 1e-8,
        **kw,
    ):
        super().__init__(**kw)
        self.n_trees, self.learning_rate, self.max_depth, self.min_leaf, self.ridge = (
            n_trees,
            learning_rate,
            max_depth,
            min_leaf,
            ridge,
        )

    def hyper(self) -> dict[str, Any]:
        return dict(
            super().hyper(),
            n_trees=self.n_trees,
            learning_rate=self.learning_rate,
            max_depth=self.max_depth,
            min_leaf=self.min_leaf,
            ridge=self.ridge,
        )

    def _linear(self) -> LayerRegressionPredictor:
        lin = LayerRegressionPredictor(
            ridge=self.ridge, across_shapes=self.across_shapes, cv_folds=self.cv_folds, seed=self.seed
        )
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
        self.linear_._set_params({}, {k[len("linear_") :]: v for k, v in arrays.items() if k.startswith("linear_")})
        trees = {k[len("trees_") :]: v for k, v in arrays.items() if k.startswith("trees_")}
        self.trees_ = TreeEnsemble.from_arrays(params["init"], params["learning_rate"], trees)
