import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr

from dynabert.metrics import compute_metrics, f1_binary, matthews


def test_accuracy_and_f1_known_values():
    gold = np.array([1, 1, 1, 0, 0, 0, 1, 0])
    pred = np.array([1, 1, 0, 0, 1, 0, 1, 0])
    logits = np.eye(2)[pred]  # one-hot "logits" whose argmax is pred
    m = compute_metrics(["accuracy", "f1"], logits, gold)
    # tp=3 fp=1 fn=1 -> F1 = 6/8
    assert m["accuracy"] == pytest.approx(75.0)
    assert m["f1"] == pytest.approx(75.0)
    assert f1_binary(np.zeros(4, int), np.zeros(4, int)) == 0.0


def test_matthews_known_values():
    gold = np.array([1, 1, 1, 0, 0, 0])
    pred = np.array([1, 1, 0, 0, 0, 1])
    # tp=2 tn=2 fp=1 fn=1 -> (4-1)/sqrt(3*3*3*3) = 1/3
    assert matthews(pred, gold) == pytest.approx(1 / 3)
    assert matthews(gold, gold) == pytest.approx(1.0)
    assert matthews(1 - gold, gold) == pytest.approx(-1.0)
    assert matthews(np.ones(6, int), gold) == 0.0  # a constant prediction: defined as 0


def test_correlations_match_scipy():
    rng = np.random.default_rng(0)
    gold = rng.uniform(0, 5, 200).round(1)  # ties, as STS-B scores have
    pred = gold + rng.normal(0, 1, 200)
    m = compute_metrics(["pearson", "spearman"], pred[:, None], gold)
    assert m["pearson"] == pytest.approx(100 * pearsonr(pred, gold)[0], abs=1e-9)
    assert m["spearman"] == pytest.approx(100 * spearmanr(pred, gold)[0], abs=1e-9)
    assert compute_metrics(["pearson"], np.array([[1.0], [2.0], [3.0]]), [3.0, 2.0, 1.0])["pearson"] == pytest.approx(
        -100
    )


def test_unknown_metric_raises():
    with pytest.raises(ValueError, match="unknown metric 'bleu'"):
        compute_metrics(["bleu"], np.zeros((2, 2)), [0, 1])


def test_paired_bootstrap_interval():
    from dynabert.metrics import paired_bootstrap

    rng = np.random.default_rng(0)
    a = (rng.random(2000) < 0.8).astype(int)
    same, lo, hi = paired_bootstrap(a, a)
    assert same == lo == hi == 0.0  # identical predictions: no spread at all
    b = a.copy()
    flip = rng.choice(2000, 60, replace=False)
    b[flip] = 1 - b[flip]
    d, lo, hi = paired_bootstrap(a, b)
    assert d == pytest.approx(100 * (a.mean() - b.mean())) and lo < d < hi
    assert hi - lo < 2.5  # paired: 60 disagreements of 2000 give an interval of about +-1.1 points
    with pytest.raises(
        ValueError, match=r"paired scores need two equal non-empty 1-D arrays; got shapes \(3,\) and \(2,\)"
    ):
        paired_bootstrap([1, 0, 1], [1, 0])
