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
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dynasearch_runtime import bounds

from .errors import SearchError

CONNECT_TIMEOUT_S = 8  # a storage that cannot be reached fails within 10 s
PROBE_DEADLINE_S = 9.5  # hard deadline of the first connection, whatever the driver does (DNS included)
RETRY_S = 30.0  # a lost connection is retried with back-off for this long, then a clear error
DRIVERS = {"sqlite": ("pysqlite",), "postgresql": ("psycopg",)}


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        from sqlalchemy.engine import make_url  # sqlalchemy: not on the --help path

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1] if "@" in url else url


def _reason(e: BaseException, url: str) -> str:
    """The first line of an error, with the URL's password (if any) blanked out."""
    text = str(getattr(e, "orig", None) or e).strip()
    reason = text.splitlines()[0] if text else type(e).__name__
    try:
        from sqlalchemy.engine import make_url  # sqlalchemy: not on the --help path

        pw = make_url(url).password
        if pw:
            reason = reason.replace(str(pw), "***")
    except Exception:
        pass
    return reason[:300]


def default_storage_url(results_dir: str | Path) -> str:
    return f"sqlite:///{Path(results_dir).resolve() / 'study.db'}"


_PRAGMAS_SET = False


def _sqlite_pragmas() -> None:
    """Every SQLite connection in this process: write-ahead log (readers never block the writer,
    which matters with several workers on one file) and fsync at checkpoints only (an Optuna trial
    is dozens of small commits: with an fsync each, a 200-trial search spends minutes in fsync).
    A crash can lose the last commits, never corrupt the file; a lost trial is re-run."""
    global _PRAGMAS_SET
    if _PRAGMAS_SET:
        return
    from sqlalchemy import event  # sqlalchemy: not on the --help path
    from sqlalchemy.engine import Engine  # sqlalchemy: not on the --help path

    @event.listens_for(Engine, "connect")
    def _on_connect(dbapi_conn, record) -> None:  # noqa: ANN001
        if type(dbapi_conn).__module__.startswith("sqlite3"):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

    _PRAGMAS_SET = True


def engine_kwargs(url: str) -> dict[str, Any]:
    """Checked URL -> SQLAlchemy engine arguments (timeouts so nothing hangs; pre-ping so a pooled
    connection that the server dropped is replaced instead of failing the next statement)."""
    from sqlalchemy.engine import make_url  # sqlalchemy: not on the --help path
    from sqlalchemy.exc import ArgumentError  # sqlalchemy: not on the --help path

    try:
        u = make_url(url)
    except ArgumentError:
        raise SearchError(
            f"storage URL {redact(url)!r} cannot be parsed; expected e.g. sqlite:///results/study.db or "
            "postgresql+psycopg://user@host:5432/db"
        ) from None
    backend = u.get_backend_name()
    if backend == "postgres":
        raise SearchError(f"storage URL {redact(url)}: write postgresql+psycopg://, not postgres://")
    if backend not in DRIVERS:
        raise SearchError(
            f"storage URL {redact(url)}: database {backend!r} is not supported; use sqlite:///PATH or "
            "postgresql+psycopg://user@host:5432/db"
        )
    driver = u.get_driver_name()
    if driver not in DRIVERS[backend]:
        raise SearchError(
            f"storage URL {redact(url)}: driver {driver!r} is not supported for {backend}; use "
            f"{backend}+{DRIVERS[backend][0]}://"
            + (" (pip install 'dynasearch[postgres]')" if backend == "postgresql" else "")
        )
    if backend == "sqlite":
        db = u.database or ""
        if db and db != ":memory:" and not Path(db).parent.is_dir():
            raise SearchError(f"storage URL {redact(url)}: folder {Path(db).parent} does not exist")
        _sqlite_pragmas()
        return {"connect_args": {"timeout": 60}}
    try:
        port = u.port  # sqlalchemy reads the port with int(): a word or 99999 passes it
    except ValueError:
        port = str(url)
    if port is not None and bounds.violation("port", port) is not None:
        raise SearchError(f"storage URL {redact(url)}: port {port} must be {bounds.describe('port')}")
    try:
        import psycopg  # noqa: F401 - optional driver, probed for a postgresql URL only
    except ImportError:
        raise SearchError(
            f"storage URL {redact(url)} needs the psycopg driver: pip install 'dynasearch[postgres]'"
        ) from None
    return {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}, "pool_pre_ping": True}


def probe(url: str, deadline_s: float = PROBE_DEADLINE_S) -> None:
    """Connect once and run SELECT 1 within `deadline_s` (a thread, so a driver or a name lookup
    that hangs cannot hold the worker); SearchError naming the redacted URL otherwise."""
    import sqlalchemy as sa  # sqlalchemy: not on the --help path

    kwargs = engine_kwargs(url)
    box: dict[str, BaseException | bool] = {}

    def connect() -> None:
        try:
            engine = sa.create_engine(
                url, **{k: v for k, v in kwargs.items() if k != "pool_pre_ping"}, poolclass=sa.pool.NullPool
            )
            try:
                with engine.connect() as c:
                    c.execute(sa.text("SELECT 1"))
            finally:
                engine.dispose()
            box["ok"] = True
        except BaseException as e:  # noqa: BLE001 - reported to the caller
            box["error"] = e

    t = threading.Thread(target=connect, name="dynasearch-storage-probe", daemon=True)
    t.start()
    t.join(deadline_s)
    if t.is_alive():
        raise SearchError(
            f"storage {redact(url)} did not answer within {deadline_s:g} s (is the server running and reachable?)"
        )
    if "error" in box:
        raise SearchError(f"storage {redact(url)} cannot be reached: {_reason(box['error'], url)}")


def is_transient(e: BaseException) -> bool:
    """A lost or refused connection (worth retrying), not a bad statement or a constraint."""
    from sqlalchemy import exc  # sqlalchemy: not on the --help path

    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, exc.IntegrityError):
            return False
        if isinstance(e, (exc.OperationalError, exc.InterfaceError, exc.DisconnectionError)):
            return True
        if isinstance(e, exc.DBAPIError) and e.connection_invalidated:
            return True
        e = e.__cause__ or e.__context__
    return False


def with_retry(fn, what: str, url: str, retry_s: float = RETRY_S):
    """fn() retried with back-off (0.25 s doubling to 4 s) while it fails on a lost connection, for
    up to `retry_s` seconds; then one SearchError naming what failed and the redacted URL."""
    t0 = time.monotonic()
    wait = 0.25
    while True:
        try:
            return fn()
        except Exception as e:
            if not is_transient(e):
                raise
            if time.monotonic() - t0 + wait > retry_s:
                raise SearchError(
                    f"{what}: storage {redact(url)} unreachable for {time.monotonic() - t0:.0f} s ({_reason(e, url)})"
                ) from None
            time.sleep(wait)
            wait = min(4.0, wait * 2)


# Optuna storage calls a worker makes during a trial: each is retried on a lost connection.
_RETRIED = (
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "set_study_user_attr",
    "get_trial_user_attrs",
    "get_trial_system_attrs",
    "create_new_trial",
    "set_trial_param",
    "get_trial_param",
    "set_trial_state_values",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "get_trial",
    "get_trial_id_from_study_id_trial_number",
    "get_all_trials",
    "get_best_trial",
    "record_heartbeat",
    "_get_stale_trial_ids",
    "get_all_studies",
)


def _retrying_storage_class():
    import optuna  # optuna: not on the --help path

    class RetryingRDBStorage(optuna.storages.RDBStorage):
        """RDBStorage whose calls survive a database that goes away for a few seconds (a restart,
        a fail-over, a network blip): each is retried with back-off for `retry_s`, then fails
        with one clear error. Writes are retried too; a write whose commit reached the server
        but whose answer was lost may then fail with Optuna's own error (e.g. the trial is
        already finished) rather than be applied twice."""

        retry_s: float = RETRY_S

    def wrap(name):
        base = getattr(optuna.storages.RDBStorage, name)

        def method(self, *args, **kwargs):
            return with_retry(lambda: base(self, *args, **kwargs), f"storage call {name}", self.url, self.retry_s)

        method.__name__ = name
        method.__doc__ = base.__doc__
        return method

    for name in _RETRIED:
        setattr(RetryingRDBStorage, name, wrap(name))
    return RetryingRDBStorage


def serialize_sqlite(engine) -> None:
    """Every transaction on this SQLite engine starts with BEGIN IMMEDIATE (the write lock), so
    Optuna's read-then-update steps are atomic across processes. Without it two workers can both
    pop the same queued (WAITING) trial, since SQLite ignores SELECT ... FOR UPDATE and pysqlite
    begins a transaction only at the first write: both run it and the second to finish crashes
    with "Trial#N has already finished". Transactions queue on the lock (60 s busy timeout):
    fine for the few workers one machine runs; use PostgreSQL beyond that."""
    import sqlalchemy as sa  # sqlalchemy: not on the --help path

    @sa.event.listens_for(engine, "connect")
    def _no_pysqlite_begin(dbapi_connection, record):
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves

    @sa.event.listens_for(engine, "begin")
    def _begin_immediate(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # pooled connections were opened without the hooks


def open_storage(
    url: str, heartbeat_interval: int | None = 30, grace_period: int | None = None, retry_s: float = RETRY_S
):
    """An Optuna RDBStorage with heartbeats (a killed worker's RUNNING trial is failed after the
    grace period and retried by a live worker) whose calls are retried on a lost connection; a
    clear one-line error within 10 s when the database cannot be reached."""
    import optuna  # optuna: not on the --help path
    from sqlalchemy.exc import IntegrityError, SQLAlchemyError  # sqlalchemy: not on the --help path

    kwargs = engine_kwargs(url)
    if not url.startswith("sqlite"):
        probe(url)
    callback = None
    if heartbeat_interval:
        grace_period = grace_period or 3 * heartbeat_interval
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            callback = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3)
    cls = _retrying_storage_class()
    for attempt in range(5):
        try:
            with warnings.catch_warnings():  # heartbeats and the retry callback are "experimental" in Optuna 5
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = cls(
                    url,
                    engine_kwargs=kwargs,
                    heartbeat_interval=heartbeat_interval or None,
                    grace_period=grace_period if heartbeat_interval else None,
                    heartbeat_stale_trial_callback=callback,
                )
            storage.retry_s = retry_s
            if storage.engine.dialect.name == "sqlite":
                serialize_sqlite(storage.engine)
            return storage
        except (SQLAlchemyError, ImportError, ModuleNotFoundError) as e:
            # Workers starting together on a fresh database race to create Optuna's tables: the
            # loser sees "already exists" or a unique violation; the tables are there on a retry.
            if (
                attempt < 4
                and isinstance(e, SQLAlchemyError)
                and ("already exists" in str(e) or is_transient(e) or isinstance(e, IntegrityError))
            ):
                time.sleep(0.2 * (attempt + 1))
                continue
            raise SearchError(f"storage {redact(url)} cannot be opened: {_reason(e, url)}") from None
    raise AssertionError("unreachable")


def claim_study(storage, name: str) -> None:
    """Write, BEFORE the Optuna study exists, that dynasearch is creating study `name` (table
    `dynasearch_studies` in the storage's database). Optuna cannot create a study and its
    attributes in one transaction; this row lets a re-run tell our own study killed before its
    identity was written (adopt it) from another tool's study (refuse it). No-op without a database."""
    import sqlalchemy as sa  # sqlalchemy: not on the --help path

    engine = getattr(storage, "engine", None)
    if engine is None:
        return
    table = _claims_table(sa)
    url = str(engine.url)

    def write():
        table.metadata.create_all(engine, checkfirst=True)
        try:
            with engine.begin() as c:
                c.execute(sa.insert(table).values(name=name, creator=f"{socket.gethostname()}:{os.getpid()}"))
        except sa.exc.IntegrityError:
            pass  # claimed before: a re-run, or a worker starting at the same moment

    for attempt in range(5):
        try:
            return with_retry(write, "study claim", url)
        except (sa.exc.ProgrammingError, sa.exc.OperationalError, sa.exc.IntegrityError) as e:
            if attempt < 4 and "already exists" in str(e):
                continue  # two workers created the table at once
            raise SearchError(f"storage {redact(url)}: study claim cannot be written: {_reason(e, url)}") from None


def is_claimed(storage, name: str) -> bool:
    """Whether dynasearch once started creating study `name` in this storage (see claim_study)."""
    import sqlalchemy as sa  # sqlalchemy: not on the --help path

    engine = getattr(storage, "engine", None)
    if engine is None or not sa.inspect(engine).has_table("dynasearch_studies"):
        return False
    table = _claims_table(sa)

    def read():
        with engine.connect() as c:
            return c.execute(sa.select(table.c.name).where(table.c.name == name)).first()

    return with_retry(read, "study claim lookup", str(engine.url)) is not None


def _claims_table(sa):
    return sa.Table(
        "dynasearch_studies",
        sa.MetaData(),
        sa.Column("name", sa.String(512), primary_key=True),
        sa.Column("creator", sa.String(160), nullable=False),
    )


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, float]
    seconds: float


class AccuracyCache:
    """Task metrics per (digest, selection, key), shared through the storage's database. Every
    call is retried with back-off while the connection is lost (`retry_s`), then fails clearly."""

    def __init__(self, url: str, retry_s: float = RETRY_S):
        import sqlalchemy as sa  # sqlalchemy: not on the --help path

        self._sa = sa
        self.url, self.retry_s = url, retry_s
        self.engine = sa.create_engine(url, **engine_kwargs(url))
        meta = sa.MetaData()
        self.acc = sa.Table(
            "dynasearch_accuracy",
            meta,
            sa.Column("digest", sa.String(64), primary_key=True),
            sa.Column("selection", sa.String(64), primary_key=True),
            sa.Column("key", sa.String(32), primary_key=True),
            sa.Column("metrics", sa.Text, nullable=False),
            sa.Column("seconds", sa.Float, nullable=False),
        )
        self.log = sa.Table(
            "dynasearch_evaluations",
            meta,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("digest", sa.String(64), nullable=False),
            sa.Column("selection", sa.String(64), nullable=False),
            sa.Column("key", sa.String(32), nullable=False),
            sa.Column("seconds", sa.Float, nullable=False),
            sa.Column("worker", sa.String(128), nullable=False),
            sa.Column("created", sa.String(32), nullable=False),
        )
        for attempt in range(5):
            try:
                self._retry(lambda: meta.create_all(self.engine, checkfirst=True), "accuracy cache tables")
                break
            except (sa.exc.IntegrityError, sa.exc.ProgrammingError, sa.exc.OperationalError) as e:
                # Another worker created the tables at the same moment (SQLite: "already exists";
                # PostgreSQL: a duplicate table or a unique violation on its catalogue).
                if attempt < 4 and ("already exists" in str(e) or isinstance(e, sa.exc.IntegrityError)):
                    continue
                raise SearchError(f"accuracy cache in {redact(url)} cannot be created: {_reason(e, url)}") from None

    def _retry(self, fn, what: str):
        return with_retry(fn, what, self.url, self.retry_s)

    def get(self, digest: str, selection: str, key: str) -> Evaluation | None:
        sa = self._sa
        q = sa.select(self.acc.c.metrics, self.acc.c.seconds).where(
            self.acc.c.digest == digest, self.acc.c.selection == selection, self.acc.c.key == key
        )

        def read():
            with self.engine.connect() as c:
                return c.execute(q).first()

        row = self._retry(read, "accuracy cache lookup")
        return None if row is None else Evaluation(json.loads(row[0]), float(row[1]))

    def put(self, digest: str, selection: str, key: str, metrics: dict[str, float], seconds: float) -> None:
        sa = self._sa
        worker = f"{socket.gethostname()}:{os.getpid()}"
        now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")

        def log():
            with self.engine.begin() as c:
                c.execute(
                    sa.insert(self.log).values(
                        digest=digest, selection=selection, key=key, seconds=seconds, worker=worker, created=now
                    )
                )

        def store():
            try:
                with self.engine.begin() as c:
                    c.execute(
                        sa.insert(self.acc).values(
                            digest=digest,
                            selection=selection,
                            key=key,
                            metrics=json.dumps(metrics, sort_keys=True),
                            seconds=seconds,
                        )
                    )
            except sa.exc.IntegrityError:
                pass  # another worker stored the same config first (a counted race, see evaluation_counts)

        self._retry(log, "evaluation log write")
        self._retry(store, "accuracy cache write")

    def evaluation_counts(self, digest: str, selection: str) -> tuple[int, int]:
        """(evaluations run, distinct configs evaluated) for one checkpoint and dev selection."""
        sa = self._sa
        q = sa.select(sa.func.count(), sa.func.count(sa.distinct(self.log.c.key))).where(
            self.log.c.digest == digest, self.log.c.selection == selection
        )

        def read():
            with self.engine.connect() as c:
                return c.execute(q).first()

        n, distinct = self._retry(read, "evaluation log read")
        return int(n), int(distinct)

    def close(self) -> None:
        self.engine.dispose()
