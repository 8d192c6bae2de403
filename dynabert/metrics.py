"""Task metrics (GLUE conventions), in percent as the GLUE papers report them.

accuracy; F1 of the positive class (label id 1) for MRPC/QQP; Matthews correlation for CoLA;
Pearson and Spearman correlation for STS-B.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

METRICS = ("accuracy", "f1", "mcc", "pearson", "spearman")


def accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    return float((pred == gold).mean())


def f1_binary(pred: np.ndarray, gold: np.ndarray) -> float:
    tp = float(((pred == 1) & (gold == 1)).sum())
    fp = float(((pred == 1) & (gold != 1)).sum())
    fn = float(((pred != 1) & (gold == 1)).sum())
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def matthews(pred: np.ndarray, gold: np.ndarray) -> float:
    """Binary MCC; 0 when a row or column of the confusion matrix is empty (sklearn's convention)."""
    tp = float(((pred == 1) & (gold == 1)).sum())
    tn = float(((pred != 1) & (gold != 1)).sum())
    fp = float(((pred == 1) & (gold != 1)).sum())
    fn = float(((pred != 1) & (gold == 1)).sum())
    den = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return 0.0 if den == 0 else (tp * tn - fp * fn) / den


def pearson(pred: np.ndarray, gold: np.ndarray) -> float:
    p, g = pred - pred.mean(), gold - gold.mean()
    den = np.sqrt((p * p).sum() * (g * g).sum())
    return 0.0 if den == 0 else float((p * g).sum() / den)


def spearman(pred: np.ndarray, gold: np.ndarray) -> float:
    from scipy.stats import rankdata  # average ranks for ties, as scipy.stats.spearmanr

    return pearson(rankdata(pred), rankdata(gold))


def compute_metrics(names: Sequence[str], logits: np.ndarray, gold: Sequence) -> dict[str, float]:
    """logits (N, C) or (N, 1) for regression; gold class ids or floats. Values in percent."""
    logits = np.asarray(logits, dtype=np.float64)
    gold_a = np.asarray(gold)
    regression = logits.ndim == 1 or logits.shape[1] == 1
    pred = logits.reshape(-1) if regression else logits.argmax(axis=1)
    fns = {"accuracy": accuracy, "f1": f1_binary, "mcc": matthews, "pearson": pearson, "spearman": spearman}
    out = {}
    for n in names:
        if n not in fns:
            raise ValueError(f"unknown metric {n!r}; known: {', '.join(METRICS)}")
        out[n] = 100.0 * fns[n](pred, gold_a.astype(np.float64) if regression else gold_a)
    return out


def paired_bootstrap(
    correct_a: Sequence[float], correct_b: Sequence[float], resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """(mean difference a - b, lower, upper) in points (percent) of two per-example scores on the SAME
    examples (1/0 correctness for accuracy): the percentile interval of the difference over
    `resamples` resamplings of the examples, both configs resampled together (paired)."""
    a, b = np.asarray(correct_a, dtype=float), np.asarray(correct_b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"paired scores need two equal non-empty 1-D arrays; got shapes {a.shape} and {b.shape}")
    d = a - b
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(d), size=(resamples, len(d)))
    means = d[idx].mean(axis=1)
    tail = (1 - level) / 2
    lo, hi = np.quantile(means, [tail, 1 - tail])
    return 100 * float(d.mean()), 100 * float(lo), 100 * float(hi)
