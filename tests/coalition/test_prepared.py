"""The hot path's statements on the driver's cursor (:mod:`coalition.prepared`): the same
answers, types and errors as ``Session.execute``, in the session's transaction, on both
backends."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import bindparam, insert, select
from sqlalchemy.exc import IntegrityError

from coalition.db import UnitOfWork, db, read, read_once
from coalition.models import Partner, RateCard
from coalition.prepared import Prepared, prepared
from tests.factories.statements import statements_run

_p, _r = Partner.__table__.c, RateCard.__table__.c
VALID_FROM = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)

#: a partner's rate cards in force at a moment, with a fixed IN list and a literal
_CARDS = Prepared(
    select(_p.code, _r.valid_from, _r.earn_rate, _r.redeem_rate)
    .join(RateCard.__table__, _r.partner_id == _p.id)
    .where(_p.code == bindparam("code"), _r.valid_from <= bindparam("now"),
           _p.kind.in_(("merchant", "charity")), _p.status == "active")
    .order_by(_r.valid_from.desc()))
_NEW_PARTNER = Prepared(
    insert(Partner.__table__)
    .values({name: bindparam(name) for name in ("code", "name", "kind", "currency",
                                                  "status", "created_at")})
    .returning(_p.id))
_NEW_CARD = Prepared(
    insert(RateCard.__table__)
    .values({name: bindparam(name) for name in ("partner_id", "valid_from", "earn_rate",
                                                  "issue_price", "redeem_rate",
                                                  "created_at")}))


def _partner(code: str, uow: UnitOfWork) -> int:
    return int(_NEW_PARTNER.scalar(uow.session, {
        "code": code, "name": code.title(), "kind": "merchant", "currency": "GBP",
        "status": "active", "created_at": VALID_FROM}))


def test_rows_come_back_typed_as_session_execute_gives_them(app):
    with UnitOfWork() as uow:
        partner = _partner("acme", uow)
        assert _NEW_CARD.rows(uow.session, {
            "partner_id": partner, "valid_from": VALID_FROM, "earn_rate": Decimal("1.25"),
            "issue_price": Decimal("0.01"), "redeem_rate": Decimal("0.008"),
            "created_at": VALID_FROM}) == []
        uow.commit()
    with read() as session:
        row = _CARDS.first(session, {"code": "acme", "now": VALID_FROM})
        expected = session.execute(_CARDS.statement,
                                   {"code": "acme", "now": VALID_FROM}).one()
    assert tuple(row) == tuple(expected)
    assert row.code == "acme" and row.valid_from == VALID_FROM  # aware, to the microsecond
    assert row.earn_rate == Decimal("1.25") and isinstance(row.earn_rate, Decimal)
    assert row.redeem_rate == Decimal("0.008")
    with read() as session:
        assert _CARDS.rows(session, {"code": "acme", "now": datetime(2025, 1, 1, tzinfo=UTC)}) \
            == []
        assert _CARDS.first(session, {"code": "nobody", "now": VALID_FROM}) is None
        assert _CARDS.scalar(session, {"code": "acme", "now": VALID_FROM}) == "acme"


def test_it_runs_in_the_sessions_transaction(app):
    with UnitOfWork() as uow:
        _partner("gone", uow)  # never committed
    with UnitOfWork() as uow:
        kept = _partner("kept", uow)
        uow.commit()
    with read() as session:
        codes = session.scalars(select(_p.code)).all()
    assert codes == ["kept"] and kept > 0


def test_a_unique_index_is_sqlalchemys_integrity_error_and_the_session_rolls_back(app):
    with UnitOfWork() as uow:
        _partner("acme", uow)
        uow.commit()
    with UnitOfWork() as uow, pytest.raises(IntegrityError):
        _partner("acme", uow)
    with UnitOfWork() as uow:  # the pooled connection is usable again
        _partner("bolt", uow)
        uow.commit()
    with read() as session:
        assert sorted(session.scalars(select(_p.code))) == ["acme", "bolt"]


def test_the_engines_listeners_see_each_statement(app):
    with statements_run(db.engine) as seen, read_once() as connection:
        assert _CARDS.rows(connection, {"code": "acme", "now": VALID_FROM}) == []
    assert len(seen) == 1 and seen[0].startswith("SELECT partner.code")


def test_statements_whose_text_a_call_would_change_are_refused(app):
    listed = Prepared(select(_p.id).where(_p.code.in_(bindparam("codes", expanding=True))))
    # a column default computed in Python (the partner's created_at) must be named
    defaulted = Prepared(insert(Partner.__table__).values(
        code=bindparam("code"), name=bindparam("name"), kind=bindparam("kind"),
        currency=bindparam("currency")))
    with read() as session, pytest.raises(ValueError, match="changes the SQL text"):
        listed.rows(session, {"codes": ["acme"]})
    with UnitOfWork() as uow, pytest.raises(ValueError, match="default computed in Python"):
        defaulted.rows(uow.session, {"code": "acme", "name": "Acme", "kind": "merchant",
                                     "currency": "GBP"})


def test_a_statement_kept_elsewhere_is_compiled_once():
    statement = select(_p.id).where(_p.code == bindparam("code"))
    assert prepared(statement) is prepared(statement)
    assert prepared(statement).statement is statement
