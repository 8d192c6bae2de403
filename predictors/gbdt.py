"""A small gradient-boosted regression-tree ensemble (squared loss), in numpy.

Written here rather than taken from scikit-learn because predictors are saved as JSON + arrays (no
pickle): the whole ensemble is five flat arrays (feature, threshold, left, right, value) plus the
roots, which round-trip through `np.savez` exactly. Fitting is exact greedy splitting; with the few
hundred records a latency predictor sees it takes well under a second.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class TreeEnsemble:
    """Flat arrays of all trees; `left == -1` marks a leaf. Prediction = init + lr * sum of leaves."""

    init: float
    learning_rate: float
    roots: np.ndarray  # (n_trees,) int32
    feature: np.ndarray  # (n_nodes,) int32
    threshold: np.ndarray  # (n_nodes,) float64; go left when x[feature] <= threshold
    left: np.ndarray  # (n_nodes,) int32
    right: np.ndarray  # (n_nodes,) int32
    value: np.ndarray  # (n_nodes,) float64

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=float)
        out = np.full(len(X), self.init, dtype=float)
        rows = np.arange(len(X))
        for root in self.roots:
            node = np.full(len(X), root, dtype=np.int64)
            while True:
                inner = self.left[node] >= 0
                if not inner.any():
                    break
                go_left = X[rows, np.maximum(self.feature[node], 0)] <= self.threshold[node]
                nxt = np.where(go_left, self.left[node], self.right[node])
                node = np.where(inner, nxt, node)
            out += self.learning_rate * self.value[node]
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "roots": self.roots,
            "feature": self.feature,
            "threshold": self.threshold,
            "left": self.left,
            "right": self.right,
            "value": self.value,
        }

    @classmethod
    def from_arrays(cls, init: float, learning_rate: float, arrays: dict[str, np.ndarray]) -> TreeEnsemble:
        return cls(
            float(init),
            float(learning_rate),
            arrays["roots"].astype(np.int32),
            arrays["feature"].astype(np.int32),
            arrays["threshold"].astype(float),
            arrays["left"].astype(np.int32),
            arrays["right"].astype(np.int32),
            arrays["value"].astype(float),
        )


def _best_split(
    X: np.ndarray, r: np.ndarray, rows: np.ndarray, in_node: np.ndarray, presorted: np.ndarray, min_leaf: int
) -> tuple[int, float, float]:
    """(feature, threshold, gain) of the split of `rows` that most reduces the squared error;
    feature -1 if none. presorted[:, j]: all rows sorted by feature j (sorted once per ensemble)."""
    n = len(rows)
    total = r[rows].sum()
    base = total * total / n
    best = (-1, 0.0, 0.0)
    for j in range(X.shape[1]):
        order = presorted[:, j][in_node[presorted[:, j]]]
        xs, rs = X[order, j], r[order]
        csum = np.cumsum(rs)[:-1]  # sum of the left part for a cut after position i
        n_left = np.arange(1, n)
        valid = (n_left >= min_leaf) & (n - n_left >= min_leaf) & (xs[1:] > xs[:-1])
        if not valid.any():
            continue
        score = csum**2 / n_left + (total - csum) ** 2 / (n - n_left)
        score[~valid] = -np.inf
        i = int(np.argmax(score))
        gain = float(score[i] - base)
        if gain > best[2] + 1e-15:
            best = (j, float((xs[i] + xs[i + 1]) / 2), gain)
    return best


def _grow(X, r, rows, max_depth, min_leaf, nodes, step, presorted) -> int:
    """Append one tree's nodes (recursive); write each training row's leaf value into `step`;
    return the index of the tree's root."""
    idx = len(nodes)
    value = float(r[rows].mean())
    nodes.append([-1, 0.0, -1, -1, value])
    if max_depth > 0 and len(rows) >= 2 * min_leaf:
        in_node = np.zeros(len(r), dtype=bool)
        in_node[rows] = True
        j, thr, gain = _best_split(X, r, rows, in_node, presorted, min_leaf)
        if j >= 0 and gain > 0:
            mask = X[rows, j] <= thr
            left = _grow(X, r, rows[mask], max_depth - 1, min_leaf, nodes, step, presorted)
            right = _grow(X, r, rows[~mask], max_depth - 1, min_leaf, nodes, step, presorted)
            nodes[idx][:4] = [j, thr, left, right]
            return idx
    step[rows] = value
    return idx


def fit_gbdt(
    X: np.ndarray, y: np.ndarray, n_trees: int = 300, learning_rate: float = 0.05, max_depth: int = 3, min_leaf: int = 3
) -> TreeEnsemble:
    """Least-squares boosting: each tree fits the residual of the ensemble so far."""
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    init = float(y.mean())
    pred = np.full(len(y), init)
    nodes: list[list] = []
    roots = []
    all_rows = np.arange(len(y))
    presorted = np.argsort(X, axis=0, kind="stable")
    for _ in range(n_trees):
        step = np.zeros(len(y))
        roots.append(_grow(X, y - pred, all_rows, max_depth, min_leaf, nodes, step, presorted))
        pred = pred + learning_rate * step
        if np.abs(step).max() < 1e-15:
            break  # nothing left to fit
    return TreeEnsemble(init, learning_rate, np.array(roots, np.int32), *_flat(nodes))


def _flat(nodes: list[list]) -> tuple[np.ndarray, ...]:
    a = np.array(nodes, dtype=float).reshape(-1, 5)
    return a[:, 0].astype(np.int32), a[:, 1], a[:, 2].astype(np.int32), a[:, 3].astype(np.int32), a[:, 4]
