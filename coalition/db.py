"""Database: declarative base, exact column types, engine setup and the unit of work.

The unit of work is the only place that commits. Services open one per use case::

    with UnitOfWork() as uow:
        ...
        uow.commit()

and anything that leaves the block without ``commit()`` is rolled back.
"""

from __future__ import annotations

import logging
import math
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, TypeVar, cast

import psycopg
from flask import Flask, current_app
from sqlalchemy import (
    BigInteger,
    Connection,
    DateTime,
    Engine,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    create_engine,
    event,
    text,
)
from sqlalchemy.engine import CursorResult, Dialect, Result, Row, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Session, mapped_column, sessionmaker
from sqlalchemy.sql import Executable
from sqlalchemy.types import TypeDecorator

from coalition.clock import utcnow  # noqa: F401 - the clock, for this module's callers
from coalition.money import canonical

log = logging.getLogger("coalition.db")

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python.

    PostgreSQL stores ``timestamptz``; SQLite stores naive UTC text.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where a UTC timestamp is required")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class ExactDecimal(TypeDecorator[Decimal]):
    """A ``Decimal`` that never passes through a float.

    PostgreSQL stores ``numeric(precision, scale)``; SQLite, which has no exact decimal
    type, stores the canonical text.
    """

    impl = Numeric
    cache_ok = True

    def __init__(self, precision: int = 24, scale: int = 8) -> None:
        super().__init__()
        self.precision = precision
        self.scale = scale

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(self.precision + 2))
        return dialect.type_descriptor(Numeric(self.precision, self.scale, asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError(f"exact decimal column given {type(value).__name__}")
        if not value.is_finite():
            raise ValueError("decimal value must be finite")
        return str(value) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        number = value if isinstance(value, Decimal) else Decimal(str(value))
        # PostgreSQL pads to the column's scale ("1.00000000"): read the same value back,
        # written the same way, on both backends
        return canonical(number)


# BIGINT in PostgreSQL; INTEGER on SQLite, where only INTEGER PRIMARY KEY autoincrements.
BigId = BigInteger().with_variant(Integer(), "sqlite")

PK = Annotated[int, mapped_column(BigId, primary_key=True)]
Points = Annotated[int, mapped_column(BigInteger)]
Timestamp = Annotated[datetime, mapped_column(UTCDateTime())]
Rate = Annotated[Decimal, mapped_column(ExactDecimal(24, 8))]


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)

    if TYPE_CHECKING:
        # every model here is mapped to a Table (never a subquery), so Core statements
        # such as update(Model.__table__) take it as it is
        __table__: ClassVar[Table]


def affected_rows(result: Result[Any]) -> int:
    """How many rows an UPDATE or DELETE matched. ``Session.execute`` is typed to return
    the general :class:`Result`; for those statements it is a :class:`CursorResult`."""
    return cast("CursorResult[Any]", result).rowcount


# --------------------------------------------------------------------------- engine


class Database:
    """Engine and session factory per application, bound with :meth:`init_app`.

    ``DATABASE_URL`` is the primary (for a Patroni cluster, a libpq multi-host URL with
    ``target_session_attrs=read-write``, so a new connection finds whichever node is the
    primary now); ``DATABASE_REPLICA_URL``, if set, a hot standby for the reads that may
    be a little behind (:func:`replica_read`).
    """

    def init_app(self, app: Flask) -> None:
        options = dict(
            pool_size=app.config["DB_POOL_SIZE"],
            max_overflow=app.config["DB_MAX_OVERFLOW"],
            busy_timeout_ms=app.config["DB_BUSY_TIMEOUT_MS"],
            connect_timeout=app.config["DB_CONNECT_TIMEOUT"],
            echo=app.config["SQL_ECHO"],
            pre_ping=app.config["DB_PRE_PING"],
        )
        engine = build_engine(app.config["DATABASE_URL"], **options)
        replica = None
        if app.config["DATABASE_REPLICA_URL"]:
            replica = Replica(build_engine(app.config["DATABASE_REPLICA_URL"], **options),
                              engine, max_lag=app.config["DB_REPLICA_MAX_LAG"])
        app.extensions["coalition.db"] = _State(engine, replica)

    @property
    def _state(self) -> _State:
        return current_app.extensions["coalition.db"]

    @property
    def engine(self) -> Engine:
        return self._state.engine

    def session(self, readonly: bool = False, replica: bool = False) -> Session:
        state = self._state
        if replica and state.replica_usable():
            return state.replica_reader()
        return (state.reader if readonly else state.writer)()

    def dispose(self) -> None:
        """Close every pooled connection (the primary's and the replica's)."""
        state = self._state
        state.engine.dispose()
        if state.replica is not None:
            state.replica.engine.dispose()


class _State:
    def __init__(self, engine: Engine, replica: Replica | None = None) -> None:
        self.engine = engine
        self.writer = sessionmaker(engine, expire_on_commit=False)
        readonly = engine.execution_options(coalition_readonly=True)
        self.reader = sessionmaker(readonly, expire_on_commit=False)
        # PostgreSQL runs a lone read without BEGIN and ROLLBACK; SQLite's driver is set up
        # for explicit transactions (see _configure_sqlite), where a read costs nothing more
        self.single = (engine.execution_options(isolation_level="AUTOCOMMIT")
                       if engine.dialect.name == "postgresql" else readonly)
        self.replica = replica
        self.replica_single = (replica.engine.execution_options(isolation_level="AUTOCOMMIT")
                               if replica is not None else self.single)
        self.replica_reader = sessionmaker(
            replica.engine.execution_options(coalition_readonly=True),
            expire_on_commit=False) if replica is not None else self.reader

    def replica_usable(self) -> bool:
        """Whether reads that may go to the replica go there now."""
        return self.replica is not None and self.replica.usable()


#: how behind a standby is: nothing when it has replayed what the primary had written a
#: moment before; else the time since it last replayed a commit (an upper bound: the
#: primary's newer commits are at most that old); no answer when it never replayed one
_REPLICA_LAG = text(
    "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn() >= CAST(:lsn AS pg_lsn), "
    "EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp())")


class Replica:
    """A hot standby and whether it is close enough behind the primary to be read.

    The lag is measured at most once per ``interval`` seconds per process (two short
    queries: the primary's WAL position, then the standby's replay of it), so a
    replica read costs nothing extra. A standby that is too far behind, not a standby
    (promoted, or a wrong URL) or unreachable is not read until a later check finds it
    usable again (one that could not be measured is tried again after
    :attr:`UNREACHABLE_BACKOFF` seconds, so requests do not keep waiting on a dead host);
    every change is logged.
    """

    def __init__(self, engine: Engine, primary: Engine, *, max_lag: float,
                 interval: float | None = None) -> None:
        self.engine = engine
        self.primary = primary
        self.max_lag = max_lag
        self.interval = min(1.0, max_lag / 2) if interval is None else interval
        self._lock = threading.Lock()
        self._next_check = -math.inf
        self._usable = False
        self.lag: float | None = None
        event.listen(engine, "handle_error", self._on_error)

    def _on_error(self, context: Any) -> None:
        """A read on the replica lost its connection: that request answers 503 (its client
        retries), and the reads after it go to the primary until the replica is measured
        again after the back-off."""
        if context.is_disconnect or _server_lost(context.original_exception):
            self._usable, self.lag = False, None
            self._next_check = time.monotonic() + self.UNREACHABLE_BACKOFF
            log.warning("replica reads sent to the primary: the replica's connection was lost")

    #: seconds before a replica that could not be measured is tried again (each try may
    #: wait up to the connect timeout)
    UNREACHABLE_BACKOFF = 10.0

    def usable(self) -> bool:
        now = time.monotonic()
        if now < self._next_check or not self._lock.acquire(blocking=False):
            return self._usable  # fresh enough, or another thread is measuring it now
        try:
            usable, why = self._measure()
            self._next_check = time.monotonic() + (
                self.interval if self.lag is not None else self.UNREACHABLE_BACKOFF)
            if usable != self._usable:
                (log.info if usable else log.warning)(
                    "replica reads %s: %s", "resumed" if usable else "sent to the primary",
                    why)
            self._usable = usable
            return usable
        finally:
            self._lock.release()

    def _measure(self) -> tuple[bool, str]:
        try:
            with self.primary.connect() as conn:
                lsn = conn.execute(text("SELECT pg_current_wal_lsn()")).scalar()
            with self.engine.connect() as conn:
                standby, caught_up, since = conn.execute(_REPLICA_LAG, {"lsn": lsn}).one()
        except DBAPIError as exc:
            self.lag = None
            return False, f"lag not measured ({type(exc.orig).__name__})"
        if not standby:
            self.lag = None
            return False, "the replica is not a standby"
        self.lag = 0.0 if caught_up else (math.inf if since is None else float(since))
        return self.lag <= self.max_lag, f"{self.lag:.1f} s behind (bound {self.max_lag} s)"


def build_engine(
    url: str,
    *,
    pool_size: int = 10,
    max_overflow: int = 10,
    busy_timeout_ms: int = 10000,
    connect_timeout: int = 5,
    echo: bool = False,
    pre_ping: bool = False,
) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, echo=echo, connect_args={"timeout": busy_timeout_ms / 1000})
        _configure_sqlite(engine, busy_timeout_ms)
        return engine
    connect_args: dict[str, Any] = {"application_name": "coalition"}
    if "connect_timeout" not in parsed.query:  # one given in the URL itself wins
        connect_args["connect_timeout"] = connect_timeout
    return create_engine(
        url,
        echo=echo,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=pre_ping,
        pool_recycle=1800,
        connect_args=connect_args,
    )


def _configure_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    """WAL, foreign keys, and write transactions that take the lock when they begin.

    pysqlite's own transaction handling is switched off so that SQLAlchemy's ``begin``
    event decides: ``BEGIN IMMEDIATE`` for a unit of work that may write (so two writers
    never both read and then fail to upgrade their lock), plain ``BEGIN`` for readers.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        readonly = conn.get_execution_options().get("coalition_readonly", False)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


db = Database()


# --------------------------------------------------------------------------- unit of work


class UnitOfWork:
    """One database transaction for one use case; rolls back unless committed.

    ``replica``: a read-only unit of work that may run on the replica (when one is
    configured and close enough behind); only for reads that need not see a write the
    caller has just made.
    """

    def __init__(self, readonly: bool = False, replica: bool = False,
                 snapshot: bool = False) -> None:
        if replica and not readonly:
            raise ValueError("only a read-only unit of work may run on a replica")
        self.readonly = readonly
        self.replica = replica
        self.snapshot = snapshot
        self.session: Session

    def __enter__(self) -> UnitOfWork:
        self.session = db.session(readonly=self.readonly, replica=self.replica)
        if self.snapshot and self.session.get_bind().dialect.name == "postgresql":
            # every statement of the transaction sees the database as of its first one
            # (SQLite's transaction is one snapshot already)
            self.session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        # A read ends with COMMIT rather than ROLLBACK: the same to the database, but psycopg
        # answers every ROLLBACK with DEALLOCATE ALL, which would throw away the prepared
        # statements of the pooled connection for every request that uses it next.
        if self.readonly and exc_type is None and self.session.in_transaction():
            self.session.commit()
        # close() rolls back whatever was not committed and detaches the objects without
        # expiring them, so plain results loaded here stay readable after the block.
        self.session.close()

    def commit(self) -> None:
        if self.readonly:
            raise RuntimeError("a read-only unit of work cannot commit")
        # everything before COMMIT itself: a connection lost here has committed nothing
        self.session.flush()
        try:
            self.session.commit()
        except DBAPIError as exc:
            if is_unreachable(exc):
                raise CommitOutcomeUnknown(
                    "the connection was lost while committing") from exc
            raise


#: what a use case opens its unit of work with: a job or a test can hand in its own
Units = Callable[[], UnitOfWork]


T = TypeVar("T")

# PostgreSQL: serialization_failure, deadlock_detected.
_RETRYABLE_SQLSTATES = {"40001", "40P01"}
# PostgreSQL: admin_shutdown, crash_shutdown, cannot_connect_now (the server going down or
# still starting), read_only_sql_transaction (a demoted primary); class 08: connection
# exceptions
_UNREACHABLE_SQLSTATES = {"57P01", "57P02", "57P03", "25006"}


class Retry(Exception):
    """A unit of work that met a transient obstacle before writing anything for good (it
    is rolled back) and succeeds when run again from the start."""


class CommitOutcomeUnknown(Exception):
    """The connection to the primary was lost while it committed: the transaction may
    have committed (and, with a synchronous standby, survive a failover) or not. Only
    work that finds its own earlier commit and answers with it may be run again."""


def is_retryable(exc: BaseException) -> bool:
    """A deadlock, a serialization failure, or SQLite's busy/locked database."""
    if not isinstance(exc, DBAPIError):
        return False
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate in _RETRYABLE_SQLSTATES:
        return True
    if isinstance(exc, OperationalError) and "database is locked" in str(orig):
        return True
    return False


def is_unreachable(exc: BaseException) -> bool:
    """No primary answered: a connection refused, lost or cut by a server shutting down,
    or a server that is now a standby (a failover, or a server down)."""
    return isinstance(exc, DBAPIError) and _server_lost(exc.orig)


def _server_lost(error: BaseException | None) -> bool:
    """psycopg's error for a server that could not be reached or is gone."""
    if not isinstance(error, psycopg.Error):
        return False
    sqlstate = error.sqlstate
    if sqlstate is None:
        # raised by libpq itself: the server could not be reached or the connection died
        return isinstance(error, psycopg.OperationalError)
    return sqlstate.startswith("08") or sqlstate in _UNREACHABLE_SQLSTATES


def run_with_retries(work: Callable[[], T], attempts: int | None = None, *,
                     replays: bool = False) -> T:
    """Run ``work`` (one whole unit of work), retrying it on a transient conflict (or a
    :class:`Retry` it raises), and while no primary is reachable, for up to
    ``DB_FAILOVER_WAIT`` seconds.

    The work must be safe to run again from the start: it opens its own unit of work, so
    a failed attempt has been rolled back in full before the next one begins. A commit
    whose outcome is unknown (:class:`CommitOutcomeUnknown`) is run again only when
    ``replays``: the work looks up what it books by its idempotency key first, so a commit
    that did happen is answered as a replay rather than booked twice.
    """
    attempts = attempts or current_app.config["TX_RETRIES"]
    failover_until = time.monotonic() + current_app.config["DB_FAILOVER_WAIT"]
    attempt = 0
    while True:
        attempt += 1
        try:
            return work()
        except (DBAPIError, Retry, CommitOutcomeUnknown) as exc:
            if isinstance(exc, CommitOutcomeUnknown) and not replays:
                raise
            if isinstance(exc, CommitOutcomeUnknown) or is_unreachable(exc):
                if time.monotonic() >= failover_until:
                    raise
                log.warning("database unreachable, trying again: %s", exc)
                time.sleep(min(0.5, 0.05 * 2**min(attempt, 4)))
                continue
            if attempt >= attempts or not (isinstance(exc, Retry) or is_retryable(exc)):
                raise
            # jittered exponential backoff, capped so a long retry budget stays bounded
            time.sleep(random.uniform(0, min(0.1, 0.002 * 2**attempt)))


@contextmanager
def read_once(replica: bool = False) -> Iterator[Connection]:
    """A connection for one read statement that needs no transaction of its own (one
    statement sees one moment); with ``replica``, on the replica when one is configured and
    close enough behind (as :func:`replica_read`).

    On PostgreSQL it runs in autocommit: one round trip, no ``BEGIN`` and no ``ROLLBACK``;
    and since psycopg answers every ``ROLLBACK`` with ``DEALLOCATE ALL``, the connection
    keeps its prepared statements for the requests that follow.
    """
    state = db._state
    engine = state.replica_single if replica and state.replica_usable() else state.single
    with engine.connect() as connection:
        yield connection


@contextmanager
def read(snapshot: bool = False) -> Iterator[Session]:
    """A read-only session for queries that change nothing; with ``snapshot``, one whose
    statements all see the same moment (for a report whose figures must agree, and for
    :func:`alongside`)."""
    with UnitOfWork(readonly=True, snapshot=snapshot) as uow:
        yield uow.session


_SNAPSHOT_ID = re.compile(r"[0-9A-F]+-[0-9A-F]+(-[0-9]+)?")


@contextmanager
def alongside(session: Session, statement: Executable,
              settings: Mapping[str, str] | None = None) -> Iterator[Callable[[], list[Row]]]:
    """``statement``'s rows, read on a connection of its own while the caller goes on
    with ``session``, in the session's snapshot; the block gets a function that waits for
    them.

    On PostgreSQL the session (a :func:`read` with ``snapshot``) exports its snapshot and a
    second connection imports it, the way ``pg_dump --jobs`` reads one database from
    several connections: a report's long statements run side by side on the server and
    still see exactly what the session sees. ``settings`` hold for that statement alone
    (``SET LOCAL``). A block left by an exception cancels the statement. Elsewhere the
    statement runs in the session when its rows are asked for.
    """
    if session.get_bind().dialect.name != "postgresql":
        yield lambda: list(session.execute(statement))
        return
    exported = session.execute(text("SELECT pg_export_snapshot()")).scalar_one()
    if not _SNAPSHOT_ID.fullmatch(exported):
        raise RuntimeError(f"unexpected snapshot id {exported!r}")
    engine = session.get_bind()
    if not isinstance(engine, Engine):
        raise TypeError("alongside needs a session bound to an engine")
    guard = threading.Lock()
    state: dict[str, Any] = {"cancelled": False, "dbapi": None}

    def run() -> list[Row]:
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                # the first statement of the transaction: it reads from the session's moment
                conn.exec_driver_sql(f"SET TRANSACTION SNAPSHOT '{exported}'")
                for name, value in (settings or {}).items():
                    conn.execute(text("SELECT set_config(:name, :value, true)"),
                                 {"name": name, "value": value})
                with guard:
                    if state["cancelled"]:
                        return []
                    state["dbapi"] = conn.connection.dbapi_connection
                return list(conn.execute(statement))

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="coalition-alongside") as pool:
        future = pool.submit(run)
        try:
            yield future.result
        except BaseException:
            with guard:
                state["cancelled"] = True
                if state["dbapi"] is not None and not future.done():
                    state["dbapi"].cancel()
            raise


@contextmanager
def replica_read() -> Iterator[Session]:
    """A read-only session on the replica when one is configured and close enough behind
    the primary (``DB_REPLICA_MAX_LAG``), else on the primary: for balance, history,
    statement and program reads that need not see a write the caller has just made."""
    with UnitOfWork(readonly=True, replica=True) as uow:
        yield uow.session
