"""Deterministic kill drills of `dynasearch search`: a child search SIGKILLs itself at a named point
(dynabert.killpoints, test-only), the same command is run again, and the study must end with
exactly the requested trials, the 12 grid points queued once, and no evaluation repeated.

The study-creation window comes first: killed after the Optuna study row exists but before
dynasearch's identity is written (`study-created`), the re-run used to refuse the study for ever.
The seeded randomised drill of the search (a kill at a random moment) is in test_study.py.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # searchkit

from searchkit import REPO, cli, search_args  # noqa: E402

from dynabert.killpoints import ENV  # noqa: E402

pytest_plugins = ["searchkit"]  # its session fixtures (sk_run, sk_predictor)
TRIALS = 16


def child(args: list, kill_at: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore", **{ENV: kill_at})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return subprocess.run(
        [sys.executable, "-m", "dynasearch", *[str(a) for a in args]],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def study_state(db: Path, study: str = "dynasearch") -> dict[str, int]:
    with sqlite3.connect(db) as c:
        rows = c.execute(
            "SELECT t.state, COUNT(*) FROM trials t JOIN studies s ON t.study_id = s.study_id "
            "WHERE s.study_name = ? GROUP BY t.state",
            (study,),
        ).fetchall()
    return {str(state): int(n) for state, n in rows}


def grid_trials(db: Path, study: str = "dynasearch") -> list[str]:
    """The grid label of every trial that carries one, less the FAILed tries of a killed run (each is
    retried as a copy that keeps its label)."""
    with sqlite3.connect(db) as c:
        return [
            g
            for (g,) in c.execute(
                "SELECT a.value_json FROM trial_user_attributes a JOIN trials t ON a.trial_id = t.trial_id JOIN studies s "
                "ON t.study_id = s.study_id WHERE a.key = 'grid' AND s.study_name = ? AND t.state != 'FAIL'",
                (study,),
            )
        ]


def evaluations(db: Path) -> list[str]:
    with sqlite3.connect(db) as c:
        return [k for (k,) in c.execute("SELECT key FROM dynasearch_evaluations")]


@pytest.mark.parametrize(
    "point",
    ["study-created", "study-identity", "grid-enqueued@5", "trial-evaluating@3", "cache-put@2", "results-written"],
)
def test_search_killed_at_a_named_point_is_resumed_by_the_same_command(point, sk_run, sk_predictor, sk_fast, tmp_path):
    out = tmp_path / "r"
    args = search_args(
        sk_run, sk_predictor, out, "--trials", TRIALS, "--no-verify", "--target-latency", "4ms", "--sampler", "random"
    )
    killed = child(args, point)
    assert killed.returncode == -signal.SIGKILL, (
        f"not killed at {point}: exit {killed.returncode}\n{killed.stderr[-2000:]}"
    )
    assert (out / "study.db").is_file()
    assert cli(*args) == 0  # the same command again
    assert study_state(out / "study.db").get("COMPLETE") == TRIALS, study_state(out / "study.db")
    grid = grid_trials(out / "study.db")
    assert len(grid) == 12 and len(set(grid)) == 12, (
        f"{point}: grid trials (a killed one's failed try aside): {sorted(grid)}"
    )
    keys = evaluations(out / "study.db")
    assert len(keys) == len(set(keys)), f"{point}: a sub-network was evaluated twice: {sorted(keys)}"
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == TRIALS and trials["key"].notna().all()


def test_study_of_another_tool_is_refused_even_when_empty(sk_run, sk_predictor, tmp_path, monkeypatch):
    """Adopting a study without metadata is only for dynasearch's own (claimed before creation)."""
    import optuna

    from search.errors import SearchError
    from search.study import Search, SearchConfig, run_search

    wait = Search._wait_for_identity
    monkeypatch.setattr(Search, "_wait_for_identity", lambda self, ident, timeout_s=0.3: wait(self, ident, timeout_s))
    out = tmp_path / "r"
    out.mkdir()
    optuna.create_study(
        study_name="dynasearch", storage=f"sqlite:///{out / 'study.db'}", directions=["maximize", "minimize"]
    )
    with pytest.raises(SearchError, match="was not created by dynasearch search"):
        run_search(SearchConfig(run=sk_run, predictor=sk_predictor, out=out, trials=13, verify=False, progress=False))


def test_killed_trial_is_retried_at_once_not_after_the_grace_period(sk_run, sk_predictor, tmp_path):
    """A search killed mid-trial (heartbeat 60 s: Optuna would wait 180 s for it to go stale): the
    re-run sees that the trial's worker process is gone, fails it and retries it at once."""
    out = tmp_path / "r"
    args = search_args(
        sk_run, sk_predictor, out, "--trials", TRIALS, "--no-verify", "--sampler", "random", "--heartbeat", 60
    )
    assert child(args, "trial-evaluating@2").returncode == -signal.SIGKILL
    again = child(args, "")  # the same command, nothing killed (a guard timeout of 300 s, far below 3 x 60 s per trial)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "its worker" in again.stderr and "is gone (killed); failed and queued for a retry" in again.stderr, (
        again.stderr[-2000:]
    )
    state = study_state(out / "study.db")
    assert state.get("COMPLETE") == TRIALS and state.get("FAIL") == 1 and "RUNNING" not in state, state
