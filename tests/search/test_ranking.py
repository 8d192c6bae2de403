"""The accuracy signal that ranks (issue 17): racing on chunks of the ranking examples, the front
reported on examples the ranking never saw, the --evaluations budget, the reported front."""

import json
import random
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # searchkit
from searchkit import cli, search_args  # noqa: E402

from search.errors import SearchError  # noqa: E402
from search.pareto import pareto_mask  # noqa: E402
from search.racing import Z, best_at_latency, race, upper_bound  # noqa: E402
from search.study import SearchConfig  # noqa: E402

pytest_plugins = ["searchkit"]  # its session fixtures (importing them would copy them per module)


def test_upper_bound_is_the_normal_interval():
    assert upper_bound(80.0, 400) == pytest.approx(100 * (0.8 + Z * (0.8 * 0.2 / 400) ** 0.5))
    assert upper_bound(100.0, 10) == 100.0 and upper_bound(0.0, 10) == 0.0


def test_race_scores_every_chunk_when_there_is_nothing_to_beat():
    seen = []
    r = race(lambda i: (seen.append(i), 50.0)[1:] + (False,), [25, 25, 50], None)
    assert seen == [0, 1, 2] and not r.stopped and r.examples == 100 and r.metric == 50.0


def test_race_weights_chunks_by_their_examples_and_stops_a_clearly_worse_config():
    scores = {0: 40.0, 1: 60.0, 2: 90.0}
    r = race(lambda i: (scores[i], False), [100, 100, 200], None)
    assert r.metric == pytest.approx((40 * 100 + 60 * 100 + 90 * 200) / 400)
    stopped = race(lambda i: (scores[i], True), [100, 100, 200], 80.0)
    assert stopped.stopped and stopped.chunks == 1 and stopped.examples == 100 and stopped.cached
    assert best_at_latency([(70.0, 5.0), (75.0, 9.0)], 8.0) == 70.0 and best_at_latency([(70.0, 5.0)], 4.0) is None


def test_racing_on_a_synthetic_search_stops_worse_configs_early_and_never_drops_the_true_front():
    """Known answers: 60 configs with a true accuracy and a latency; each config's examples are
    Bernoulli draws of its true accuracy (1,000 ranking examples, chunks 250/250/500), proposed in a
    random order. Racing must stop every config far below the true front at its latency after a
    chunk or two, and never stop one of the true front."""
    rng = np.random.default_rng(0)
    n, sizes = 1000, [250, 250, 500]
    lat = rng.uniform(2, 30, 60)
    true = 60 + 25 * (1 - np.exp(-lat / 10)) - rng.choice([0, 0, 0, 3, 8, 15, 25], 60)  # a front plus worse ones
    examples = {i: rng.random(n) < true[i] / 100 for i in range(60)}
    front = set(np.flatnonzero(pareto_mask(true, lat)))
    order = list(range(60))
    random.Random(1).shuffle(order)
    done: list[tuple[float, float]] = []
    stopped, scored = set(), 0
    bounds = np.cumsum([0, *sizes])
    for i in order:

        def chunk(c, i=i):
            return 100 * examples[i][bounds[c] : bounds[c + 1]].mean(), False

        r = race(chunk, sizes, best_at_latency(done, lat[i]))
        scored += r.examples
        if r.stopped:
            stopped.add(i)
        else:
            done.append((r.metric, lat[i]))

    # a front config may lose to a faster one within the noise (a near tie: nothing lost); one that beats
    # every faster config by 2 points or more, and the best config of all, are never stopped
    def gain(i):
        return true[i] - max([true[j] for j in range(60) if lat[j] < lat[i]], default=0)

    assert int(np.argmax(true)) not in stopped
    lost = [(int(i), round(float(gain(i)), 2)) for i in stopped & front if gain(i) >= 2.0]
    assert not lost, f"clearly better front configs stopped: {lost}"
    assert len(front) >= 8 and len(stopped & front) <= 2
    true_front_at = [max([true[j] for j in front if lat[j] <= lat[i]], default=0) for i in range(60)]
    clearly_worse = {i for i in range(60) if true[i] < true_front_at[i] - 15}
    # those proposed once the search had scored a third of the configs are stopped early
    late = [i for i in clearly_worse if order.index(i) > 20]
    assert late and len(set(late) & stopped) >= 0.8 * len(late), (sorted(late), sorted(stopped))
    assert scored < 0.8 * 60 * n  # racing spent well under the full ranking slice per config


def test_search_ranks_on_a_slice_and_reports_the_front_on_the_rest(sk_run, sk_predictor, fast_tmp):
    out = fast_tmp / "r"
    args = ["--trials", 24, "--no-verify", "--search-dev", 20, "--racing", "--target-latency", "4ms"]
    assert cli(*search_args(sk_run, sk_predictor, out, *args)) == 0
    meta = json.loads((out / "search.json").read_text())
    s = meta["summary"]
    assert s["racing"] and s["report_held_out"] and s["rank_examples"] == 20 and s["report_examples"] == 28
    assert s["configs_proposed"] == 24 and 12 <= s["configs_evaluated"] <= 24
    assert s["configs_evaluated"] * 5 <= s["examples_scored_ranking"] <= s["configs_evaluated"] * 20
    assert meta["study"]["racing"] is True and meta["rescore_dev"] == "rest-28"
    # the reported front is the front of the reported metric: nothing on it is dominated there
    trials = pd.read_csv(out / "trials.csv")
    scored = trials.dropna(subset=["metric_full"]).drop_duplicates("key")
    mask = pareto_mask(scored["metric_full"].to_numpy(), scored["predicted_ms"].to_numpy())
    assert set(scored.loc[mask, "key"]) == set(pd.read_csv(out / "front.csv")["key"])


def test_the_evaluation_budget_counts_distinct_configs(sk_run, sk_predictor, fast_tmp):
    out = fast_tmp / "r"
    assert cli(*search_args(sk_run, sk_predictor, out, "--trials", 80, "--evaluations", 15, "--no-verify")) == 0
    trials = pd.read_csv(out / "trials.csv")
    assert trials["key"].nunique() == 15
    s = json.loads((out / "search.json").read_text())["summary"]
    assert s["budget_stopped"] and s["configs_evaluated"] == 15 and s["configs_proposed"] == len(trials)
    # a re-run with a larger budget goes on from there
    assert cli(*search_args(sk_run, sk_predictor, out, "--trials", 80, "--evaluations", 18, "--no-verify")) == 0
    assert pd.read_csv(out / "trials.csv")["key"].nunique() == 18


def test_bad_budget_and_rule_are_refused(sk_run, sk_predictor, fast_tmp, capsys):
    with pytest.raises(SearchError, match=r"evaluations must be a positive integer; got 0"):
        SearchConfig(run=sk_run, predictor=sk_predictor, out=fast_tmp / "x", evaluations=0).check()
    with pytest.raises(SystemExit) as exc:
        cli(*search_args(sk_run, sk_predictor, fast_tmp / "x", "--evaluations", "0"))
    assert exc.value.code == 2 and "--evaluations" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli(*search_args(sk_run, sk_predictor, fast_tmp / "x", "--drop-rule", "never-last"))
    assert exc.value.code == 2 and "invalid choice: 'never-last'" in capsys.readouterr().err
    assert cli(*search_args(sk_run, sk_predictor, fast_tmp / "x", "--drop-rule", "grid", "--no-drop")) == 2
    assert "--no-drop and --drop-rule grid contradict each other" in capsys.readouterr().err
    assert not (fast_tmp / "x").exists()


def test_a_ranking_slice_as_large_as_dev_holds_nothing_out_and_says_so(sk_run, sk_predictor, fast_tmp, capsys):
    out = fast_tmp / "r"
    assert cli(*search_args(sk_run, sk_predictor, out, "--trials", 12, "--no-verify", "--search-dev", 48)) == 0
    err = capsys.readouterr().err
    assert "--search-dev 48 is not below the dev split's 48 examples" in err
    s = json.loads((out / "search.json").read_text())["summary"]
    assert not s["report_held_out"] and s["rank_examples"] == s["report_examples"] == 48


def test_a_report_subset_as_large_as_the_held_out_part_says_so(sk_run, sk_predictor, fast_tmp, capsys):
    """--rescore-dev N with N at least the examples --search-dev holds out reports on all of them: said, as
    --search-dev's twin (issue 23 attack: it was taken in silence)."""
    out = fast_tmp / "rr"
    args = ("--trials", 12, "--no-verify", "--search-dev", 40, "--rescore-dev", 9)
    assert cli(*search_args(sk_run, sk_predictor, out, *args)) == 0
    err = capsys.readouterr().err
    assert "--rescore-dev 9 is more than the 8 dev examples --search-dev 40 holds out" in err
    s = json.loads((out / "search.json").read_text())["summary"]
    assert s["report_held_out"] and s["report_examples"] == 8
    # exactly as many as are held out, or fewer: what was asked, no word (the demo reports on all it holds out)
    for n in (8, 4):
        args = ("--trials", 12, "--no-verify", "--search-dev", 40, "--rescore-dev", n)
        assert cli(*search_args(sk_run, sk_predictor, fast_tmp / f"rr{n}", *args)) == 0
        assert "--rescore-dev" not in capsys.readouterr().err


def test_searching_a_space_the_model_was_not_trained_for_warns(sk_base, sk_data, sk_predictor, fast_tmp, capsys):
    run = fast_tmp / "run"
    assert cli("train", "--model", sk_base, "--task", "sst2", "--data-dir", sk_data, "--out", run, "--max-steps", 2,
               "--max-seq-length", 32, "--batch-size", 16, "--no-progress", "--space-samples", 2,
               "--head-choices", "2,4", "--drop-rule", "not-first") == 0  # fmt: skip
    capsys.readouterr()
    out = fast_tmp / "r"
    assert cli(*search_args(run, sk_predictor, out, "--trials", 12, "--no-verify")) == 0
    err = capsys.readouterr().err
    assert "searching a space the model was not trained for: searched heads [1, 2, 3, 4]" in err, err
    assert "trained for heads [2, 4] x FFN" in err and "drop rule not-first" in err
    warned = json.loads((out / "search.json").read_text())["warnings"]
    assert any("not trained for" in w for w in warned)
    inside = fast_tmp / "r2"  # the space it was trained for: no warning
    args = ["--trials", 12, "--no-verify", "--head-choices", "2,4", "--drop-rule", "not-first"]
    assert cli(*search_args(run, sk_predictor, inside, *args)) == 0
    assert "not trained for" not in capsys.readouterr().err
