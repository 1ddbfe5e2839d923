"""The floors: what the serving stack costs with next to no work, measured in the same run
as Coalition and pgbench (``--scenario floors``, and at the end of ``goals``).

Served by the same gunicorn command as Coalition (``gunicorn 'harness.floor:create_app()'``):

* ``GET /floor/json``: Flask answering a constant JSON body: the most any Flask view can
  do on this machine under this server;
* ``GET /floor/read``: the same, plus one indexed read of a member's wallet in the
  benchmark database, run the way the hot path runs its statements
  (:class:`coalition.prepared.Prepared`, on a pooled connection in autocommit).

An earn needs a token check, a request body to validate and a write transaction on top
of the second; the two floors bound what the earn can reach against pgbench's tps.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, jsonify
from sqlalchemy import bindparam, select

from coalition.db import build_engine
from coalition.ledger.models import Wallet
from coalition.prepared import Prepared

_w = Wallet.__table__.c
_WALLET = Prepared(select(_w.available, _w.pending, _w.held)
                   .where(_w.member_id == bindparam("member")))


def create_app() -> Flask:
    app = Flask("coalition-floor")
    engine = build_engine(os.environ["COALITION_DATABASE_URL"],
                          pool_size=int(os.environ.get("COALITION_DB_POOL_SIZE", "10")))
    app.extensions["floor_engine"] = engine
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        members = [row[0] for row in connection.exec_driver_sql(
            "SELECT member_id FROM wallet ORDER BY member_id LIMIT 1000")] or [0]

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify(status="ok")

    @app.get("/floor/json")
    def constant() -> Any:
        return jsonify(available=100, pending=0, held=0)

    @app.get("/floor/read/<int:n>")
    def read(n: int) -> Any:
        with autocommit.connect() as connection:
            row = _WALLET.first(connection, {"member": members[n % len(members)]})
        balances = row or (0, 0, 0)  # (no wallet: a benchmark run without members)
        return jsonify(available=balances[0], pending=balances[1], held=balances[2])

    return app
