"""Database: declarative base, exact column types, engine setup and the unit of work.

The unit of work is the only place that commits. Services open one per use case::

    with UnitOfWork() as uow:
        ...
        uow.commit()

and anything that leaves the block without ``commit()`` is rolled back.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, TypeVar, cast

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
)
from sqlalchemy.engine import CursorResult, Dialect, Result, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Session, mapped_column, sessionmaker
from sqlalchemy.types import TypeDecorator

from coalition.clock import utcnow  # noqa: F401 - the clock, for this module's callers
from coalition.money import canonical

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
    """Engine and session factory per application, bound with :meth:`init_app`."""

    def init_app(self, app: Flask) -> None:
        engine = build_engine(
            app.config["DATABASE_URL"],
            pool_size=app.config["DB_POOL_SIZE"],
            max_overflow=app.config["DB_MAX_OVERFLOW"],
            busy_timeout_ms=app.config["DB_BUSY_TIMEOUT_MS"],
            echo=app.config["SQL_ECHO"],
            pre_ping=app.config["DB_PRE_PING"],
        )
        app.extensions["coalition.db"] = _State(engine)

    @property
    def _state(self) -> _State:
        return current_app.extensions["coalition.db"]

    @property
    def engine(self) -> Engine:
        return self._state.engine

    def session(self, readonly: bool = False) -> Session:
        state = self._state
        return (state.reader if readonly else state.writer)()


class _State:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.writer = sessionmaker(engine, expire_on_commit=False)
        readonly = engine.execution_options(coalition_readonly=True)
        self.reader = sessionmaker(readonly, expire_on_commit=False)
        # PostgreSQL runs a lone read without BEGIN and ROLLBACK; SQLite's driver is set up
        # for explicit transactions (see _configure_sqlite), where a read costs nothing more
        self.single = (engine.execution_options(isolation_level="AUTOCOMMIT")
                       if engine.dialect.name == "postgresql" else readonly)


def build_engine(
    url: str,
    *,
    pool_size: int = 10,
    max_overflow: int = 10,
    busy_timeout_ms: int = 10000,
    echo: bool = False,
    pre_ping: bool = False,
) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, echo=echo, connect_args={"timeout": busy_timeout_ms / 1000})
        _configure_sqlite(engine, busy_timeout_ms)
        return engine
    return create_engine(
        url,
        echo=echo,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=pre_ping,
        pool_recycle=1800,
        connect_args={"application_name": "coalition"},
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
    """One database transaction for one use case; rolls back unless committed."""

    def __init__(self, readonly: bool = False) -> None:
        self.readonly = readonly
        self.session: Session

    def __enter__(self) -> UnitOfWork:
        self.session = db.session(readonly=self.readonly)
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
        self.session.commit()


#: what a use case opens its unit of work with: a job or a test can hand in its own
Units = Callable[[], UnitOfWork]


T = TypeVar("T")

# PostgreSQL: serialization_failure, deadlock_detected.
_RETRYABLE_SQLSTATES = {"40001", "40P01"}


class Retry(Exception):
    """A unit of work that met a transient obstacle before writing anything for good (it
    is rolled back) and succeeds when run again from the start."""


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


def run_with_retries(work: Callable[[], T], attempts: int | None = None) -> T:
    """Run ``work`` (one whole unit of work), retrying it on a transient conflict (or a
    :class:`Retry` it raises).

    The work must be safe to run again from the start: it opens its own unit of work, so
    a failed attempt has been rolled back in full before the next one begins.
    """
    attempts = attempts or current_app.config["TX_RETRIES"]
    for attempt in range(1, attempts + 1):
        try:
            return work()
        except (DBAPIError, Retry) as exc:
            if attempt == attempts or not (isinstance(exc, Retry) or is_retryable(exc)):
                raise
            # jittered exponential backoff, capped so a long retry budget stays bounded
            time.sleep(random.uniform(0, min(0.1, 0.002 * 2**attempt)))
    raise AssertionError("unreachable")


@contextmanager
def read_once() -> Iterator[Connection]:
    """A connection for one read statement that needs no transaction of its own.

    On PostgreSQL it runs in autocommit: one round trip, no ``BEGIN`` and no ``ROLLBACK``;
    and since psycopg answers every ``ROLLBACK`` with ``DEALLOCATE ALL``, the connection
    keeps its prepared statements for the requests that follow.
    """
    with db._state.single.connect() as connection:
        yield connection


@contextmanager
def read() -> Iterator[Session]:
    """A read-only session for queries that change nothing."""
    with UnitOfWork(readonly=True) as uow:
        yield uow.session
