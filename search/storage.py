"""Where a study lives: the Optuna storage (an SQLAlchemy URL: SQLite by default, PostgreSQL to
scale out) and, in the SAME database, the accuracy cache and the evaluation log.

The cache is a table of its own, `dynasearch_accuracy`, keyed by (checkpoint digest, dev
selection, sub-network key): every worker and every study in the storage sees it, so a config
is evaluated once whoever asks (a resumed run, a second worker, another study on the same
checkpoint and dev selection, the sampler proposing the same architecture again). Every real
evaluation also appends a row to `dynasearch_evaluations`, so repeats (two workers racing on one
config) are counted, not hidden.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import SearchError

CONNECT_TIMEOUT_S = 8  # a storage that cannot be reached fails within 10 s


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1] if "@" in url else url


def default_storage_url(results_dir: str | Path) -> str:
    return f"sqlite:///{Path(results_dir).resolve() / 'study.db'}"


def engine_kwargs(url: str) -> dict[str, Any]:
    """Checked URL -> SQLAlchemy engine arguments (timeouts so nothing hangs)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        u = make_url(url)
    except ArgumentError:
        raise SearchError(f"storage URL {url!r} cannot be parsed; expected e.g. sqlite:///results/study.db or "
                          "postgresql+psycopg://user@host:5432/db") from None
    backend = u.get_backend_name()
    if backend == "sqlite":
        db = u.database or ""
        if db and db != ":memory:" and not Path(db).parent.is_dir():
            raise SearchError(f"storage URL {redact(url)}: folder {Path(db).parent} does not exist")
        return {"connect_args": {"timeout": 60}}
    if backend == "postgresql":
        return {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}, "pool_pre_ping": True}
    raise SearchError(f"storage URL {redact(url)}: database {backend!r} is not supported; use sqlite:/// or postgresql+psycopg://")


def open_storage(url: str, heartbeat_interval: int | None = 30, grace_period: int | None = None):
    """An Optuna RDBStorage with heartbeats (a killed worker's RUNNING trial is failed after the
    grace period and retried by a live worker); a clear one-line error when it cannot be reached."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    kwargs = engine_kwargs(url)
    callback = None
    if heartbeat_interval:
        grace_period = grace_period or 3 * heartbeat_interval
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            callback = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3)
    try:
        with warnings.catch_warnings():  # heartbeats and the retry callback are "experimental" in Optuna 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url, engine_kwargs=kwargs, heartbeat_interval=heartbeat_interval or None,
                grace_period=grace_period if heartbeat_interval else None, heartbeat_stale_trial_callback=callback,
            )
    except (SQLAlchemyError, ImportError, ModuleNotFoundError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SearchError(f"storage {redact(url)} cannot be opened: {reason[:300]}") from None


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, float]
    seconds: float


class AccuracyCache:
    """Task metrics per (digest, selection, key), shared through the storage's database."""

    def __init__(self, url: str):
        import sqlalchemy as sa

        self._sa = sa
        self.engine = sa.create_engine(url, **engine_kwargs(url))
        meta = sa.MetaData()
        self.acc = sa.Table(
            "dynasearch_accuracy", meta,
            sa.Column("digest", sa.String(64), primary_key=True),
            sa.Column("selection", sa.String(64), primary_key=True),
            sa.Column("key", sa.String(32), primary_key=True),
            sa.Column("metrics", sa.Text, nullable=False),
            sa.Column("seconds", sa.Float, nullable=False),
        )
        self.log = sa.Table(
            "dynasearch_evaluations", meta,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("digest", sa.String(64), nullable=False),
            sa.Column("selection", sa.String(64), nullable=False),
            sa.Column("key", sa.String(32), nullable=False),
            sa.Column("seconds", sa.Float, nullable=False),
            sa.Column("worker", sa.String(128), nullable=False),
            sa.Column("created", sa.String(32), nullable=False),
        )
        try:
            meta.create_all(self.engine, checkfirst=True)
        except sa.exc.IntegrityError:  # another worker created the tables at the same moment
            pass
        except sa.exc.OperationalError as e:
            if "already exists" not in str(e):
                raise SearchError(f"accuracy cache in {redact(url)} cannot be created: {str(e).splitlines()[0]}") from None

    def get(self, digest: str, selection: str, key: str) -> Evaluation | None:
        sa = self._sa
        q = sa.select(self.acc.c.metrics, self.acc.c.seconds).where(
            self.acc.c.digest == digest, self.acc.c.selection == selection, self.acc.c.key == key)
        with self.engine.connect() as c:
            row = c.execute(q).first()
        return None if row is None else Evaluation(json.loads(row[0]), float(row[1]))

    def put(self, digest: str, selection: str, key: str, metrics: dict[str, float], seconds: float) -> None:
        sa = self._sa
        worker = f"{socket.gethostname()}:{os.getpid()}"
        now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        with self.engine.begin() as c:
            c.execute(sa.insert(self.log).values(digest=digest, selection=selection, key=key, seconds=seconds, worker=worker, created=now))
        try:
            with self.engine.begin() as c:
                c.execute(sa.insert(self.acc).values(digest=digest, selection=selection, key=key,
                                                     metrics=json.dumps(metrics, sort_keys=True), seconds=seconds))
        except sa.exc.IntegrityError:
            pass  # another worker stored the same config first (a counted race, see evaluation_counts)

    def evaluation_counts(self, digest: str, selection: str) -> tuple[int, int]:
        """(evaluations run, distinct configs evaluated) for one checkpoint and dev selection."""
        sa = self._sa
        q = sa.select(sa.func.count(), sa.func.count(sa.distinct(self.log.c.key))).where(
            self.log.c.digest == digest, self.log.c.selection == selection)
        with self.engine.connect() as c:
            n, distinct = c.execute(q).first()
        return int(n), int(distinct)

    def close(self) -> None:
        self.engine.dispose()
