"""The study (search/study.py, search/storage.py): the accuracy cache, duplicates by decoded
config, the latency constraint on every trial, resume after SIGKILL, mismatched studies refused."""

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # searchkit

from searchkit import REPO, cli, complete_trials, copy_results, search_args, subprocess_env  # noqa: E402

from dynabert.subnet import SubnetConfig
from search.errors import SearchError
from search.space import SpaceOptions, encode
from search.storage import AccuracyCache, default_storage_url
from search.study import Search, SearchConfig, run_search

pytest_plugins = [
    "searchkit"
]  # its session fixtures, shared by every module (importing them would copy them per module)

CONSTRAINT = "constraints:latency"  # where Optuna 5's trial.set_constraint("latency", v) stores v (system_attrs)


def load_study(results: Path, name: str = "dynasearch"):
    return optuna.load_study(study_name=name, storage=default_storage_url(results))


def meta(results: Path) -> dict:
    return json.loads((results / "search.json").read_text())


def test_constraint_is_set_on_every_trial(sk_results):
    study = load_study(sk_results)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 30
    for t in trials:
        assert t.state == optuna.trial.TrialState.COMPLETE
        assert CONSTRAINT in t.system_attrs, f"trial {t.number} has no latency constraint"
        assert t.system_attrs[CONSTRAINT] == pytest.approx(t.user_attrs["predicted_ms"] - 4.0)
        assert (t.system_attrs[CONSTRAINT] <= 0) == t.user_attrs["feasible"]
    assert sum("grid" in t.user_attrs for t in trials) == 12  # enqueued trials carry it too


def test_cache_prevents_re_evaluation(sk_results, sk_run, sk_predictor, fast_tmp):
    res = copy_results(sk_results, fast_tmp / "r")
    first = meta(res)["summary"]
    assert first["evaluations_logged"] == first["distinct_evaluated"] == first["distinct_configs"]
    assert first["repeat_evaluations"] == 0
    # The same search again: every trial is done, nothing is evaluated (the front re-score hits the cache).
    assert cli(*search_args(sk_run, sk_predictor, res, "--trials", 30, "--no-verify", "--target-latency", "4ms")) == 0
    again = meta(res)
    assert again["timing"]["evaluations_this_run"] == 0
    assert again["summary"]["evaluations_logged"] == first["evaluations_logged"]
    # Another study in the same storage shares the cache: its 12 grid points cost nothing.
    assert (
        cli(
            *search_args(
                sk_run,
                sk_predictor,
                res,
                "--trials",
                14,
                "--no-verify",
                "--study",
                "second",
                "--sampler",
                "random",
                "--seed",
                "3",
            )
        )
        == 0
    )
    second = meta(res)
    assert second["timing"]["cache_hits_this_run"] >= 12
    assert second["timing"]["evaluations_this_run"] <= 2
    assert second["summary"]["evaluations_logged"] == second["summary"]["distinct_evaluated"]
    cache = AccuracyCache(default_storage_url(res))
    try:
        n, distinct = cache.evaluation_counts(second["study"]["checkpoint"], second["study"]["dev"])
    finally:
        cache.close()
    assert n == distinct == first["evaluations_logged"] + second["timing"]["evaluations_this_run"]


def test_equal_decoded_configs_are_evaluated_once(sk_run, sk_predictor, fast_tmp):
    cfg = SearchConfig(
        run=sk_run,
        predictor=sk_predictor,
        out=fast_tmp / "r",
        trials=14,
        sampler="random",
        verify=False,
        target_ms=4.0,
        progress=False,
        heartbeat_interval=1,
    )
    s = Search(cfg)
    try:
        s.prepare()
        s.load()
        study = s.open_study()
        sub = SubnetConfig((0, 2), (2, 3), (32, 48))  # not a grid point
        p1 = encode(sub, s.space)
        p2 = dict(p1, l1_heads=1, l1_ffn=16, l3_heads=2, l3_ffn=32)  # only the dropped layers' widths differ
        assert p1 != p2
        study.enqueue_trial(p1)
        study.enqueue_trial(p2)
        s.optimize()
        out = s.finish()
        evals, distinct = s.cache.evaluation_counts(s.digest, s.evaluator.cache_selection(False))
    finally:
        s.close()
    t = out.trials.set_index("trial")
    assert t.loc[12, "key"] == t.loc[13, "key"] == sub.key
    assert not t.loc[12, "cache_hit"] and t.loc[13, "cache_hit"]
    assert int(t.loc[13, "duplicate_of"]) == 12
    assert evals == distinct == 13
    assert out.meta["summary"]["distinct_configs"] == 13
    # The cache hit still carries the constraint.
    hit = load_study(fast_tmp / "r").trials[13]
    assert hit.system_attrs[CONSTRAINT] == pytest.approx(hit.user_attrs["predicted_ms"] - 4.0)


def test_resume_after_sigkill_loses_and_repeats_nothing(sk_run, sk_predictor, fast_tmp):
    out = fast_tmp / "r"
    args = [
        str(a)
        for a in search_args(
            sk_run, sk_predictor, out, "--trials", 60, "--no-verify", "--sampler", "random", "--target-latency", "4ms"
        )
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "dynasearch", *args],
        cwd=REPO,
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    db = out / "study.db"
    deadline = time.monotonic() + 180
    try:
        while complete_trials(db) < 16:
            assert proc.poll() is None, (
                f"the search ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
            )
            assert time.monotonic() < deadline, "the search did not start within 180 s"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    with sqlite3.connect(db) as c:
        done_before = dict(
            c.execute(
                "SELECT t.number, a.value_json FROM trials t JOIN trial_user_attributes a "
                "ON a.trial_id = t.trial_id WHERE t.state = 'COMPLETE' AND a.key = 'key'"
            ).fetchall()
        )
    assert 16 <= len(done_before) < 60
    assert cli(*args) == 0  # the same command again
    study = load_study(out)
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 60
    after = {
        t.number: json.dumps(t.user_attrs["key"]) for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE
    }
    assert {n: after.get(n) for n in done_before} == done_before  # nothing finished was lost
    s = meta(out)["summary"]
    assert s["trials"] == 60
    assert s["evaluations_logged"] == s["distinct_evaluated"] == s["distinct_configs"]  # nothing evaluated twice
    trials = pd.read_csv(out / "trials.csv")
    assert trials["trial"].is_unique and len(trials) == 60


@pytest.mark.parametrize(
    "change, field",
    [  # the differing field by its path, the study's value -> the asked one, each whole (issue 23)
        (dict(sampler="random"), r"sampler: \w+ -> random"),
        (dict(space=SpaceOptions(head_choices=(2, 4))), r"space\.head_choices: \[[\d, ]+\] -> \[2, 4\]"),
        (dict(target_ms=5.0), r"target_ms: 4\.0 -> 5\.0"),
        (dict(predictor="LOCAL"), r"predictor: [0-9a-f]+ -> [0-9a-f]+"),
    ],
)
def test_a_study_with_other_settings_is_refused(
    change, field, sk_results, sk_run, sk_predictor, sk_local_predictor, fast_tmp
):
    res = copy_results(sk_results, fast_tmp / "r")
    if change.get("predictor") == "LOCAL":
        change = dict(change, predictor=sk_local_predictor)
    base = dict(run=sk_run, predictor=sk_predictor, out=res, trials=31, verify=False, target_ms=4.0, progress=False)
    before = (res / "trials.csv").read_bytes()
    with pytest.raises(
        SearchError,
        match=rf"study 'dynasearch' in sqlite:///.*study\.db was created with other settings than asked "
        rf"\((.*; )?{field}(; .*)?\); use another --study name",
    ):
        run_search(SearchConfig(**{**base, **change}))
    assert (res / "trials.csv").read_bytes() == before
    assert len(load_study(res).trials) == 30


def test_cache_keys_every_score_input(sk_run, sk_predictor, fast_tmp):
    """Two searches in ONE storage at two --max-seq-length values (and a bf16 one) are not served each
    other's accuracies: each evaluates its own grid and the cache holds one row per (selection, key)."""
    import sqlite3

    res = fast_tmp / "r"
    runs = {}
    for study, extra in (
        ("len16", ["--max-seq-length", 16]),
        ("len32", ["--max-seq-length", 32]),
        ("len32-bf16", ["--max-seq-length", 32, "--bf16"]),
    ):
        assert (
            cli(*search_args(sk_run, sk_predictor, res, "--trials", 12, "--no-verify", "--study", study, *extra)) == 0
        )
        runs[study] = meta(res)
    for study, m in runs.items():  # each scored its own 12 grid points: nothing borrowed from the other settings
        assert m["timing"]["evaluations_this_run"] >= 12, (study, m["timing"])
    selections = {m["study"]["dev"] for m in runs.values()}
    assert len(selections) == 3, selections
    with sqlite3.connect(res / "study.db") as c:
        rows = dict(c.execute("SELECT selection, COUNT(*) FROM dynasearch_accuracy GROUP BY selection").fetchall())
    assert set(rows) == selections and all(n >= 12 for n in rows.values()), rows
    # The same search again is answered from the cache: the key is stable across runs.
    assert (
        cli(
            *search_args(
                sk_run, sk_predictor, res, "--trials", 12, "--no-verify", "--study", "len16", "--max-seq-length", 16
            )
        )
        == 0
    )
    assert meta(res)["timing"]["evaluations_this_run"] == 0


def test_evaluate_and_search_take_the_runs_data_directory(sk_run, sk_predictor, fast_tmp):
    """run.json records the data directory the run was trained on: `evaluate RUN` and `search RUN`
    use it (sst2 has no default data directory, so without it both would refuse)."""
    rec = json.loads((sk_run / "run.json").read_text())
    assert rec["task"]["name"] == "sst2" and rec["data"]["data_dir"]
    assert cli("evaluate", sk_run, "--width", 1, "--depth", 1, "--out", fast_tmp / "eval") == 0
    table = pd.read_csv(next((fast_tmp / "eval").glob("sst2-*.csv")))
    assert len(table) == 1 and table["examples"].iloc[0] == 48  # the run's own dev split (sk_data: 48 dev examples)
    assert cli(*search_args(sk_run, sk_predictor, fast_tmp / "r", "--trials", 12, "--no-verify")) == 0
