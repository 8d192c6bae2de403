"""Scale-out: several `dynasearch search` worker processes on one study (SQLite and a real
PostgreSQL server), a SIGKILLed worker's trial retried, other metadata refused, connection
failures that fail fast and clearly, a lost connection survived, the dashboard serving a study."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from search.errors import SearchError
from search.storage import AccuracyCache, open_storage

REPO = Path(__file__).resolve().parents[2]


def worker_cmd(sx, out: Path, url: str, study: str, trials: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "dynasearch",
        "search",
        str(sx.run),
        "--predictor",
        str(sx.predictor),
        "--out",
        str(out),
        "--storage",
        url,
        "--study",
        study,
        "--trials",
        str(trials),
        "--no-verify",
        "--quiet",
        *extra,
    ]


def start(cmd: list[str]) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(p: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        pytest.fail(f"worker still running after {timeout} s; stderr: {err[-2000:]}")
    return p.returncode, out, err


def load(url: str, study: str):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=study, storage=url)


def evaluations(url: str) -> list[tuple[str, str]]:
    """(key, worker) of every real evaluation logged in the storage's database."""
    import sqlalchemy as sa

    e = sa.create_engine(url)
    try:
        with e.connect() as c:
            return [tuple(r) for r in c.execute(sa.text("SELECT key, worker FROM dynasearch_evaluations ORDER BY id"))]
    finally:
        e.dispose()


def check_study_ends_exactly(url: str, study_name: str, trials: int) -> dict:
    """The study holds exactly `trials` COMPLETE trials, nothing RUNNING or FAILED without a
    completed retry, and every repeated evaluation is a race between two workers."""
    from optuna.trial import TrialState

    study = load(url, study_name)
    by_state: dict[str, int] = {}
    for t in study.trials:
        by_state[t.state.name] = by_state.get(t.state.name, 0) + 1
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == trials, by_state
    assert by_state.get("RUNNING", 0) == 0, by_state
    for t in study.trials:
        if t.state == TrialState.FAIL:  # a dead worker's trial: retried and completed
            assert any(r.system_attrs.get("failed_trial") == t.number for r in complete), t.number
        if t.state == TrialState.PRUNED:  # only the budget skips a trial, and it evaluated nothing
            assert "skipped" in t.user_attrs and "key" not in t.user_attrs
    for t in complete:  # what optuna-dashboard shows (it ignores Optuna 5 constraints)
        assert {"key", "subnet", "feasible", "predicted_ms", "cache_hit"} <= set(t.user_attrs)
    evals = evaluations(url)
    keys = [k for k, _ in evals]
    repeated = {k for k in keys if keys.count(k) > 1}
    for k in repeated:  # a repeat is two workers racing on one config, never one worker twice
        workers = [w for kk, w in evals if kk == k]
        assert len(workers) == len(set(workers)), (k, workers)
    # every completed config was evaluated (or answered from the cache) once
    assert {t.user_attrs["key"] for t in complete} <= set(keys) | set()
    return {
        "states": by_state,
        "evaluations": len(keys),
        "distinct": len(set(keys)),
        "races": len(keys) - len(set(keys)),
    }


def run_two_workers(sx, tmp_path: Path, url: str, trials: int = 30) -> dict:
    procs = [start(worker_cmd(sx, tmp_path / f"w{i}", url, "shared", trials)) for i in range(2)]
    results = [finish(p) for p in procs]
    for rc, _out, err in results:
        assert rc == 0, err[-2000:]
    return check_study_ends_exactly(url, "shared", trials)


# ---------------------------------------------------------------------------------- workers
def test_two_workers_one_sqlite_study(searchable, tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    got = run_two_workers(searchable, tmp_path, url)
    print("sqlite:", got)


def test_two_workers_one_postgres_study(searchable, tmp_path, pg_database):
    got = run_two_workers(searchable, tmp_path, pg_database)
    print("postgresql:", got)


def test_killed_worker_trial_is_retried(searchable, tmp_path, pg_database):
    """A worker SIGKILLs itself in the middle of its 3rd evaluation (the test-only kill point
    `trial-evaluating@3`: no polling, no race with the trial's end): its RUNNING trial goes stale
    (heartbeat 1 s, grace 3 s), a live worker fails it, retries the same config, and the study ends exactly."""
    from optuna.trial import TrialState

    from dynabert.killpoints import ENV

    url, trials = pg_database, 6
    slow = ("--heartbeat", "1", "--max-seq-length", "32")
    a = subprocess.Popen(
        worker_cmd(searchable, tmp_path / "a", url, "kill", trials, *slow),
        cwd=REPO,
        env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", **{ENV: "trial-evaluating@3"}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    rc, _, err = finish(a)
    assert rc == -signal.SIGKILL, f"the worker was not killed at its 3rd evaluation (exit {rc}): {err[-2000:]}"
    left = load(url, "kill").get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    assert len(left) == 1 and len(left[0].params) == 9, [t.params for t in left]
    victim = left[0]  # killed mid-trial: left RUNNING

    b = start(worker_cmd(searchable, tmp_path / "b", url, "kill", trials, *slow))
    rc, out, err = finish(b)
    assert rc == 0, err[-2000:]
    study = load(url, "kill")
    assert study.trials[victim.number].state == TrialState.FAIL
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == victim.number]
    assert retries and retries[-1].state == TrialState.COMPLETE
    assert retries[-1].params == victim.params  # the same configuration, retried
    check_study_ends_exactly(url, "kill", trials)


# ----------------------------------------------------------------------- refused workers
def _search(sx, tmp_path, url, study, **kw):
    from search.study import Search, SearchConfig

    cfg = SearchConfig(
        run=sx.run,
        predictor=sx.predictor,
        out=tmp_path / "r",
        storage=url,
        study=study,
        trials=3,
        verify=False,
        progress=False,
        **kw,
    )
    s = Search(cfg)
    try:
        s.prepare()
        s.load()
        s.open_study()
        s.optimize()
    finally:
        s.close()


def test_worker_with_other_sampler_refused(searchable, tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    _search(searchable, tmp_path, url, "s", sampler="nsga2")
    with pytest.raises(SearchError, match=r"created with other settings than asked \(sampler: nsga2 -> tpe\)"):
        _search(searchable, tmp_path, url, "s", sampler="tpe")


def test_worker_with_other_space_refused_cli(searchable, tmp_path, capsys):
    """Through the CLI's main, in this process (two processes are the point of the tests above, not here)."""
    from dynasearch.cli import main

    url = f"sqlite:///{tmp_path / 'study.db'}"
    assert main(worker_cmd(searchable, tmp_path / "a", url, "s", 3)[3:]) == 0
    capsys.readouterr()
    rc = main(worker_cmd(searchable, tmp_path / "b", url, "s", 3, "--no-drop")[3:])
    err = capsys.readouterr().err
    assert rc == 2
    assert "error: study 's'" in err
    assert "created with other settings than asked (space.allow_drop: true -> false" in err, err
    assert len(err.strip().splitlines()) == 1, err


def test_study_of_another_tool_refused(searchable, tmp_path, monkeypatch):
    import optuna

    from search.study import Search

    # The search waits up to 10 s for a racing dynasearch worker to stamp the study; 0.5 s here.
    wait = Search._wait_for_identity
    monkeypatch.setattr(Search, "_wait_for_identity", lambda self, ident, timeout_s=0.5: wait(self, ident, timeout_s))
    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(study_name="foreign", storage=url, directions=["maximize", "minimize"])
    with pytest.raises(SearchError, match="was not created by dynasearch search"):
        _search(searchable, tmp_path, url, "foreign")


# --------------------------------------------------------------------- connection failures
def test_closed_port_fails_fast_without_password(closed_port):
    url = f"postgresql+psycopg://postgres:s3cret@127.0.0.1:{closed_port}/postgres"
    t0 = time.monotonic()
    with pytest.raises(SearchError, match=r"127\.0\.0\.1:\d+/postgres cannot be reached") as e:
        open_storage(url)
    assert time.monotonic() - t0 < 10
    assert "s3cret" not in str(e.value) and "***" in str(e.value)


def test_silent_server_fails_within_10s():
    """A port that accepts TCP connections but never answers (a hung server, a firewall)."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        url = f"postgresql+psycopg://postgres:s3cret@127.0.0.1:{srv.getsockname()[1]}/postgres"
        t0 = time.monotonic()
        with pytest.raises(SearchError, match="127.0.0.1") as e:
            open_storage(url)
        assert time.monotonic() - t0 < 10
        assert "s3cret" not in str(e.value)


@pytest.mark.parametrize(
    "url, message",
    [
        ("mysql://root:pw@localhost/db", "database 'mysql' is not supported"),
        ("postgres://u@localhost/db", "write postgresql\\+psycopg://"),
        ("postgresql+psycopg2://u:pw@localhost/db", "driver 'psycopg2' is not supported"),
        ("not a url", "cannot be parsed"),
        ("postgresql+psycopg://u:pw@localhost:99999/db", r"port 99999 must be an integer in 1\.\.65535"),
        ("postgresql+psycopg://u:pw@localhost:0/db", r"port 0 must be an integer in 1\.\.65535"),
    ],
)
def test_unsupported_urls(url, message):
    with pytest.raises(SearchError, match=message) as e:
        open_storage(url)
    assert "pw@" not in str(e.value)


def test_misspelled_database_named(postgres_url):
    url = postgres_url.rsplit("/", 1)[0] + "/no_such_db"
    with pytest.raises(SearchError, match='no_such_db cannot be reached: .*database "no_such_db" does not exist'):
        open_storage(url)


def test_lost_connection_survived_then_clear_error(own_postgres):
    """The server goes away for ~2 s: cache and Optuna calls retry and succeed; gone for good:
    one clear error after the retry window."""
    server = own_postgres
    cache = AccuracyCache(server.url, retry_s=30)
    storage = open_storage(server.url, heartbeat_interval=None, retry_s=30)
    cache.put("d", "s", "k1", {"accuracy": 50.0}, 0.1)
    assert cache.get("d", "s", "k1").metrics == {"accuracy": 50.0}
    server.stop()
    threading.Timer(2.0, server.launch).start()
    t0 = time.monotonic()
    assert cache.get("d", "s", "k1").metrics == {"accuracy": 50.0}  # retried through the restart
    assert time.monotonic() - t0 >= 1.0
    assert storage.get_all_studies() == []
    cache.put("d", "s", "k2", {"accuracy": 60.0}, 0.1)
    assert cache.evaluation_counts("d", "s") == (2, 2)
    server.stop()
    cache.retry_s = 1.5
    with pytest.raises(SearchError, match=r"accuracy cache lookup: storage .* unreachable for \d+ s"):
        cache.get("d", "s", "k1")
    cache.close()
    storage.engine.dispose()  # its pooled connections would otherwise be collected in a later test


# ------------------------------------------------------------------------------ dashboard
def test_dashboard_serves_our_study(searchable, tmp_path):
    optuna_dashboard = pytest.importorskip("optuna_dashboard")
    url = f"sqlite:///{tmp_path / 'study.db'}"
    _search(searchable, tmp_path, url, "dash")
    app = optuna_dashboard.wsgi(url)

    def get(path: str) -> tuple[str, bytes]:
        status = {}
        env = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": path,
            "QUERY_STRING": "",
            "SERVER_NAME": "localhost",
            "SERVER_PORT": "80",
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(b""),
            "wsgi.errors": sys.stderr,
            "SCRIPT_NAME": "",
        }
        body = b"".join(app(env, lambda s, h, exc_info=None: status.setdefault("s", s)))
        return status["s"], body

    status, body = get("/api/studies")
    assert status.startswith("200")
    studies = json.loads(body)["study_summaries"]
    ours = [s for s in studies if s["study_name"] == "dash"]
    assert ours, studies
    sid = ours[0]["study_id"]
    status, body = get(f"/api/studies/{sid}")
    assert status.startswith("200")
    detail = json.loads(body)
    assert len(detail["trials"]) >= 3
    attrs = {a["key"] for a in detail["trials"][0]["user_attrs"]}
    assert {"key", "subnet", "feasible", "predicted_ms"} <= attrs
    status, body = get(f"/dashboard/studies/{sid}")
    assert status.startswith("200") and b"<html" in body.lower()
