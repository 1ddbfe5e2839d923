"""The hot path's one way to the database: a statement built with SQLAlchemy Core, compiled
once per database and run on the driver's own cursor.

A partner's booking and balance read are a handful of statements each, and SQLAlchemy's
execution of an already-built statement (cache key, compiled-cache lookup, parameter and
result processing, the result object) costs about three times what psycopg itself spends
on the round trip: about 160 µs of client CPU against 55 µs per statement, measured
in-process. :class:`Prepared` keeps what SQLAlchemy is good at (the statement is written
once, in Core, with the models' tables and types; the session's transaction, ``BEGIN
IMMEDIATE`` on SQLite, the pool) and does the per-call work itself:

- the SQL text is compiled once per dialect, with its fixed parameters (literals and
  ``IN`` lists written in the statement) processed once;
- each call binds the caller's parameters through the column types' own bind
  processors (SQLite's dates, the exact money types) and runs the text on the
  connection of the session's transaction: psycopg prepares it server-side after its
  fifth use on a connection, so the hot path runs prepared;
- rows come back as named tuples, through the types' result processors;
- a driver error goes through SQLAlchemy's own handling, as if the statement had been
  run by ``Session.execute``: raised as SQLAlchemy's (``IntegrityError`` for a unique
  index; a lost server seen by :func:`coalition.db.is_unreachable`), the engine's
  ``handle_error`` listeners told, a lost connection invalidated; and the engine's
  ``before_cursor_execute`` listeners see each statement.

Only statements whose text does not depend on a call's parameters qualify (no ``IN`` over
a list the caller passes): everything else goes through ``Session.execute``.
"""

from __future__ import annotations

import threading
from collections import namedtuple
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import UpdateBase

Processor = Callable[[Any], Any] | None


class _Form:
    """A statement compiled for one dialect."""

    def __init__(self, statement: Any, dialect: Dialect) -> None:
        # an INSERT that returns nothing returns nothing (compiled as one of many, else
        # PostgreSQL's would return the new primary key for Session.execute to keep)
        silent = isinstance(statement, UpdateBase) and not list(statement.exported_columns)
        compiled = statement.compile(dialect=dialect, for_executemany=silent)
        if compiled.insert_prefetch or compiled.update_prefetch:
            raise ValueError("a column default computed in Python: name every column's "
                             "value in the statement")
        binds = compiled.binds
        required = {name for name, bind in binds.items() if bind.required}
        for name in required:
            if binds[name].expanding:
                raise ValueError(f"{name}: a list the caller passes changes the SQL text; "
                                 "run this statement with Session.execute")
        # the text with every fixed IN list written out, and the fixed values (processed)
        expanded = compiled.construct_expanded_state(dict.fromkeys(required))
        self.sql: str = expanded.statement
        self.positional: tuple[str, ...] | None = (
            tuple(expanded.positiontup) if compiled.positional and expanded.positiontup
            else None)
        self.fixed = {name: value for name, value in expanded.parameters.items()
                      if name not in required}
        processors = {name: bind.type._cached_bind_processor(dialect)
                      for name, bind in binds.items()}
        for name, value in self.fixed.items():
            processor = processors.get(name) or processors.get(_expanded_from(name, binds))
            if processor is not None and value is not None:
                self.fixed[name] = processor(value)
        self.processors = {name: processors[name] for name in required
                           if processors[name] is not None}
        self.dialect = dialect
        columns = getattr(compiled, "_result_columns", None) or []
        self.types = [column[3] for column in columns]
        self.row: Any = namedtuple("Row", [column[0] for column in columns],
                                   rename=True) if columns else None
        self.results: list[Processor] | None = None
        self.processing = False
        self._lock = threading.Lock()

    def arguments(self, params: Mapping[str, Any]) -> Any:
        values = dict(self.fixed)
        processors = self.processors
        for name, value in params.items():
            processor = processors.get(name)
            values[name] = value if processor is None or value is None else processor(value)
        if self.positional is None:
            return values
        return tuple(values[name] for name in self.positional)

    def result_processors(self, description: Any) -> list[Processor]:
        """The columns' result processors, by the types the driver says the columns have
        (the same for every call of one text: worked out on the first)."""
        if self.results is None:
            with self._lock:
                results = [type_._cached_result_processor(self.dialect, column[1])
                           for type_, column in zip(self.types, description, strict=True)]
                self.processing = any(results)
                self.results = results
        return self.results


def _expanded_from(name: str, binds: Mapping[str, Any]) -> str | None:
    """``status_1_2`` (the second value of an expanded ``IN``) comes from ``status_1``."""
    base = name.rpartition("_")[0]
    return base if base in binds else None


class Prepared:
    """A Core statement run on the driver's cursor (module doc). Build one at import time,
    next to the statement, and call it with the session (or connection) and parameters."""

    def __init__(self, statement: Any) -> None:
        self.statement = statement
        self._forms: dict[str, _Form] = {}

    def _form(self, dialect: Dialect) -> _Form:
        form = self._forms.get(dialect.name)
        if form is None:
            form = self._forms[dialect.name] = _Form(self.statement, dialect)
        return form

    def rows(self, on: Session | Connection, params: Mapping[str, Any]) -> list[Any]:
        """Run the statement in ``on``'s transaction (a session's begins one, as
        ``Session.execute`` would) and return every row it answers."""
        connection = on.connection() if isinstance(on, Session) else on
        dialect = connection.dialect
        form = self._form(dialect)
        arguments = form.arguments(params)
        driver = connection.connection.driver_connection
        dispatch = connection.dispatch
        cursor = driver.cursor()  # type: ignore[union-attr]
        try:
            if dispatch.before_cursor_execute:
                dispatch.before_cursor_execute(connection, cursor, form.sql, arguments,
                                               None, False)
            cursor.execute(form.sql, arguments)
            if form.row is None:
                return []
            fetched = cursor.fetchall()
            processors = form.results or form.result_processors(cursor.description)
        except dialect.loaded_dbapi.Error as error:
            # what Connection.execute does with a driver error: raised as SQLAlchemy's,
            # the engine's handle_error listeners told (a replica's, which stops reading
            # a lost replica), and a lost connection invalidated
            connection._handle_dbapi_exception(error, form.sql, arguments, cursor, None)
        finally:
            cursor.close()
        make = form.row._make
        if form.processing:
            return [make([value if p is None else p(value)
                          for p, value in zip(processors, row, strict=True)])
                    for row in fetched]
        return [make(row) for row in fetched]

    def first(self, on: Session | Connection, params: Mapping[str, Any]) -> Any:
        rows = self.rows(on, params)
        return rows[0] if rows else None

    def scalar(self, on: Session | Connection, params: Mapping[str, Any]) -> Any:
        rows = self.rows(on, params)
        return rows[0][0] if rows else None


_KEPT: dict[int, Prepared] = {}


def prepared(statement: Any) -> Prepared:
    """The :class:`Prepared` of a statement that is built once and kept (a module constant,
    or one of a cache of statements built by shape): for a statement that some callers
    also use as a part of others (a CTE), so that it stays a Core statement."""
    found = _KEPT.get(id(statement))
    if found is None or found.statement is not statement:
        found = _KEPT[id(statement)] = Prepared(statement)
    return found
