"""Fixtures for the scale-out tests: a throwaway PostgreSQL server, and a tiny trained run with a
synthetic latency predictor that `dynasearch search` workers can share.

The PostgreSQL server (Debian's PostgreSQL 15, /usr/lib/postgresql/15/bin) runs as the `postgres`
user when the tests run as root (the server refuses root), on a temporary data directory, trust
authentication, listening on 127.0.0.1 only on a free port; it is stopped at the end of the
session, failed tests included. Under CI=true a missing or broken server FAILS the tests (they must
never be skipped there); elsewhere they are skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
from fakes import fake_rows, synthetic_latency_ms

PG_BIN = Path(os.environ.get("DYNASEARCH_PG_BIN", "/usr/lib/postgresql/15/bin"))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _unavailable(reason: str):
    if IN_CI:
        pytest.fail(f"PostgreSQL tests must run under CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


class PostgresServer:
    """initdb + pg_ctl start on a temp directory; `stop()` is idempotent."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="dynasearch-pg-"))  # /tmp: traversable by the postgres user
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.started = False
        self._as = []
        if os.geteuid() == 0:  # the server refuses to run as root: run it as `postgres`
            import pwd

            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        os.chmod(self.dir, 0o700)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=timeout)

    def start(self) -> None:
        r = self._run(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"
        )
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed: {r.stderr.strip()[-800:]}")
        self.launch()

    def launch(self) -> None:
        """pg_ctl start on the data directory made by start() (again after stop(): same port)."""
        # -k: the Unix socket in our own directory (not /var/run/postgresql); fsync off: a throwaway server.
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off -c max_connections=200"
        r = self._run(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.log), "-w", "-t", "60", "start"
        )
        if r.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {r.stdout.strip()[-400:]} {r.stderr.strip()[-400:]} {log[-800:]}")
        self.started = True

    def stop(self) -> None:
        if self.started:
            self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
            self.started = False

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def pg_available() -> str | None:
    """None when a server can be started here, else why not."""
    for tool in ("initdb", "pg_ctl", "postgres"):
        if not (PG_BIN / tool).is_file():
            return f"PostgreSQL binaries not found in {PG_BIN} (install postgresql-15 or set DYNASEARCH_PG_BIN)"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and no `postgres` system user to run the server as"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "the psycopg driver is not installed (pip install -e '.[postgres]')"
    return None


@pytest.fixture(scope="session")
def postgres_url():
    """postgresql+psycopg://postgres@127.0.0.1:PORT/postgres of a server that lives for the session."""
    reason = pg_available()
    if reason:
        _unavailable(reason)
    server = PostgresServer()
    try:
        server.start()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        server.cleanup()
        if IN_CI:
            pytest.fail(f"PostgreSQL server could not start under CI=true: {e}", pytrace=False)
        pytest.fail(f"PostgreSQL binaries are present but the server could not start: {e}", pytrace=False)
    try:
        yield server.url
    finally:
        server.cleanup()


@pytest.fixture()
def own_postgres():
    """A started server of its own for one test (which may stop and relaunch it)."""
    reason = pg_available()
    if reason:
        _unavailable(reason)
    server = PostgresServer()
    try:
        server.start()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        server.cleanup()
        pytest.fail(f"PostgreSQL server could not start: {e}", pytrace=False)
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture()
def closed_port() -> int:
    """A local port nothing listens on (free a moment ago)."""
    return free_port()


@pytest.fixture()
def pg_database(postgres_url):
    """A fresh database on the session's server for one test (its URL)."""
    import sqlalchemy as sa

    name = f"t_{os.getpid()}_{next(_counter)}"
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = postgres_url.rsplit("/", 1)[0] + "/" + name
    try:
        yield url
    finally:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _count():
    i = 0
    while True:
        i += 1
        yield i


_counter = _count()


# ------------------------------------------------------------------ a tiny searchable run
def fit_synthetic_predictor(model_dir: Path, out: Path, kind: str = "lut") -> Path:
    """A predictor fitted on synthetic records of the model's own backbone shape (fake machine)."""
    from dynabert.space import SearchSpace
    from dynasearch_runtime.schema import append_rows
    from predictors import make_predictor
    from predictors.measure import load_shape
    from predictors.records import read_records
    from predictors.samplers import layer_table_configs, uniform_configs

    shape = load_shape(model_dir)
    space = SearchSpace.default(shape)
    rows = []
    for sampler, subnets in (
        ("layer-table", layer_table_configs(space)),
        ("uniform", uniform_configs(space, 40, seed=1)),
    ):
        rows += fake_rows(shape, subnets, synthetic_latency_ms, sampler=sampler)
    out.mkdir(parents=True, exist_ok=True)
    append_rows(str(out / "records.csv"), rows)
    pred = make_predictor(kind).fit(read_records(out / "records.csv"))
    pred.save(out / kind)
    return out / kind


@pytest.fixture(scope="session")
def searchable(tmp_path_factory):
    """A tiny 3-layer model trained for 3 steps: .run, .data, .predictor (synthetic, fake machine:
    search with --no-verify)."""
    from types import SimpleNamespace

    from tinymodels import save_hf_model, tiny_bert_config, write_sst2_like

    from dynasearch.cli import main

    root = tmp_path_factory.mktemp("searchable")
    base = save_hf_model(root / "base", tiny_bert_config())
    data = write_sst2_like(root / "data", n_train=64, n_dev=24)
    run = root / "run"
    rc = main(
        [
            "train",
            "--model",
            str(base),
            "--task",
            "sst2",
            "--data-dir",
            str(data),
            "--out",
            str(run),
            "--max-steps",
            "3",
            "--max-seq-length",
            "32",
            "--batch-size",
            "16",
        ]
    )
    assert rc == 0, "training the tiny run failed"
    pred = fit_synthetic_predictor(base, root / "predictor")
    return SimpleNamespace(run=run, data=data, predictor=pred)


__all__ = ["PostgresServer", "fit_synthetic_predictor", "free_port", "IN_CI"]
