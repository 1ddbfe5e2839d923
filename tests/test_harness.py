"""The harness's own promises: a snapshot sees a change in any row of any table, and the
emptying after each test leaves every table empty."""

from __future__ import annotations

from sqlalchemy import func, select, update

from coalition.db import Base, db
from coalition.ledger.models import Member
from tests.conftest import empty_all_tables, snapshot


def test_a_snapshot_holds_every_table_and_sees_a_changed_row(app, make_partner, client):
    partner, headers = make_partner("acme")
    enrolled = client.post("/v1/members", json={"partner_member_ref": "m1"}, headers=headers)
    assert enrolled.status_code == 201, enrolled.get_json()
    before = snapshot(app)
    assert set(before) == {table.name for table in Base.metadata.sorted_tables}
    assert len(before["member"]) == 1 and len(before["partner"]) == 1
    assert snapshot(app) == before

    with db.engine.begin() as conn:
        conn.execute(update(Member).values(status="closed"))
    after = snapshot(app)
    assert after != before
    assert [name for name in before if before[name] != after[name]] == ["member"]


def test_emptying_leaves_every_table_empty(app, make_partner, client):
    _, headers = make_partner("acme")
    client.post("/v1/members", json={"partner_member_ref": "m1"}, headers=headers)
    assert any(snapshot(app).values())
    empty_all_tables(app)
    with db.engine.connect() as conn:
        counts = {table.name: conn.execute(select(func.count()).select_from(table)).scalar()
                  for table in Base.metadata.sorted_tables}
    assert set(counts.values()) == {0}, counts
