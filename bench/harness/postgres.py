"""The benchmark's PostgreSQL databases on a loopback server: (re)creating them, their
cumulative statistics counters, the server's facts, and the environment of its tools."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from .processes import BenchError, clean_env

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
DB_COUNTERS = ("xact_commit", "xact_rollback", "tup_returned", "tup_fetched", "tup_inserted",
               "tup_updated", "tup_deleted", "blks_read", "blks_hit")
TABLE_COUNTERS = ("seq_scan", "seq_tup_read", "idx_scan", "idx_tup_fetch")


def parse_server(url: str) -> dict[str, Any]:
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise BenchError(f"--server must be a postgresql+psycopg:// URL, not {url!r}")
    host = parsed.host or ""
    if host not in LOCAL_HOSTS:
        raise BenchError(f"the benchmark only talks to 127.0.0.1; --server names {host!r}")
    return {"url": parsed, "host": "127.0.0.1" if host == "localhost" else host,
            "port": parsed.port or 5432, "user": parsed.username or "postgres",
            "password": parsed.password}


def database_url(server: dict[str, Any], name: str) -> str:
    return server["url"].set(drivername="postgresql+psycopg", host=server["host"],
                             port=server["port"], username=server["user"],
                             database=name).render_as_string(hide_password=False)


def connect(server: dict[str, Any], database: str = "postgres") -> psycopg.Connection[Any]:
    """An autocommit connection to one database (the maintenance database by default)."""
    return psycopg.connect(host=server["host"], port=server["port"], user=server["user"],
                           password=server["password"], dbname=database, autocommit=True,
                           connect_timeout=10, application_name="coalition-bench")


def drop_database(server: dict[str, Any], name: str, *, create: bool = False) -> None:
    """Drop ``name`` (its connections too); with ``create``, create it afresh."""
    with connect(server) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                     .format(sql.Identifier(name)))
        if create:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def recreate_database(server: dict[str, Any], name: str) -> None:
    drop_database(server, name, create=True)


def analyze_database(server: dict[str, Any], name: str) -> None:
    with connect(server, name) as conn:
        conn.execute("ANALYZE")


def db_counters(server: dict[str, Any], database: str) -> dict[str, Any]:
    """PostgreSQL's cumulative statistics of one database (flushed by backends about once a
    second, so deltas over a scenario are approximate)."""
    with connect(server, database) as conn:
        row = conn.execute(f"SELECT {', '.join(DB_COUNTERS)} FROM pg_stat_database "
                           "WHERE datname = current_database()").fetchone()
        tables = {name: dict(zip(TABLE_COUNTERS, values, strict=True)) for name, *values in
                  conn.execute(f"SELECT relname, {', '.join(TABLE_COUNTERS)} "
                               "FROM pg_stat_user_tables").fetchall()}
    return {"database": dict(zip(DB_COUNTERS, row, strict=True)), "tables": tables}


def db_work_per_request(before: dict[str, Any], after: dict[str, Any],
                        requests: int) -> dict[str, Any]:
    """Counter deltas divided by the requests sent (warm-up included)."""
    n = max(requests, 1)
    database = {k: (after["database"][k] - before["database"][k]) / n for k in DB_COUNTERS}
    tables = {}
    for name, counters in after["tables"].items():
        old = before["tables"].get(name, {})
        delta = {k: ((counters[k] or 0) - (old.get(k) or 0)) / n for k in TABLE_COUNTERS}
        if any(delta.values()):
            tables[name] = delta
    return {"requests": requests, "database": database, "tables": tables}


def server_facts(server: dict[str, Any]) -> dict[str, str]:
    with connect(server) as conn:
        facts = {"version": conn.execute("SHOW server_version").fetchone()[0]}
        for setting in ("max_connections", "shared_buffers", "synchronous_commit", "fsync",
                        "wal_sync_method"):
            facts[setting] = conn.execute(f"SHOW {setting}").fetchone()[0]
    return facts


def pg_env(server: dict[str, Any], database: str) -> dict[str, str]:
    env = clean_env(PGHOST=server["host"], PGPORT=str(server["port"]), PGUSER=server["user"],
                    PGDATABASE=database, PGAPPNAME="coalition-bench")
    if server["password"]:
        env["PGPASSWORD"] = str(server["password"])
    return env
