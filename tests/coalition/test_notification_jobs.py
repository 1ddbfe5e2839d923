"""What the jobs and the bookings tell members: points about to expire (30 and 7 days
before each date, with how many), and tier changes (up at the earn, down in the daily job),
each once however often the job runs."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import select

from coalition.db import read
from coalition.ledger.daily import daily
from coalition.notifications.models import Notification
from coalition.program.schemas import ProgramRulesSchema
from coalition.program.service import publish_rules
from tests.conftest import snapshot
from tests.factories.ledger import book_burn, book_earn, execute, make_member, make_partner

TIERS = [{"code": "blue", "name": "Blue", "threshold": 0, "multiplier": "1"},
         {"code": "silver", "name": "Silver", "threshold": 100, "multiplier": "1"},
         {"code": "gold", "name": "Gold", "threshold": 500, "multiplier": "2"}]


def rules(**changes: Any) -> None:
    values = {"tiers": TIERS, "expiry": {"policy": "fixed", "months": 12},
              "bonuses": {"welcome": 0, "birthday": 0}, **changes}
    publish_rules(ProgramRulesSchema().load(values), "tests")


def member(tier: str = "blue", status: str = "active") -> int:
    member_id = make_member(created_at=datetime(2020, 1, 1, tzinfo=UTC))
    execute("UPDATE member SET tier = :t, status = :s WHERE id = :m", t=tier, s=status,
            m=member_id)
    return member_id


def told(member_id: int | None = None) -> list[tuple[int, str, str, dict[str, Any]]]:
    with read() as session:
        query = select(Notification.member_id, Notification.kind, Notification.key,
                       Notification.data).order_by(Notification.id)
        if member_id is not None:
            query = query.where(Notification.member_id == member_id)
        return [tuple(row) for row in session.execute(query)]  # type: ignore[misc]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_expiring_points_are_told_30_and_7_days_before_once(app) -> None:
    rules()
    acme = make_partner("acme")
    ann, closed = member(), member(status="closed")
    book_earn(ann, acme, 100, at("2024-02-10 09:00"))  # both expire on 10 February 2025
    book_earn(ann, acme, 50, at("2024-02-10 15:00"))
    book_earn(ann, acme, 70, at("2024-02-25 09:00"))  # and these on the 25th
    book_earn(closed, acme, 10, at("2024-02-10 09:00"))

    summary = daily(date(2025, 1, 11))  # 30 days before the 10th; the 25th is 45 away
    assert summary.expiry_notices == 1
    ((who, kind, key, data),) = told()
    assert (who, kind, key) == (ann, "points_expiring", "expiry:2025-02-10:30")
    assert (data["points"], data["date"], data["days"]) == (150, "2025-02-10", 30)

    before = snapshot(app)
    assert daily(date(2025, 1, 11)).expiry_notices == 0  # a rerun writes nothing
    assert daily(date(2025, 1, 20)).expiry_notices == 0  # the 10th was told; 25th 36 away
    assert snapshot(app) == before

    book_burn(ann, acme, 120, at("2025-01-25 10:00"))  # spends 120 of the 10th's 150
    assert daily(date(2025, 2, 3)).expiry_notices == 2
    assert [(key, data["points"], data["days"]) for _, _, key, data in told(ann)] == [
        ("expiry:2025-02-10:30", 150, 30),
        ("expiry:2025-02-10:7", 30, 7),
        ("expiry:2025-02-25:30", 70, 22)]
    assert told(closed) == []


def test_a_missed_day_is_caught_up_as_the_nearer_notice(app) -> None:
    rules()
    acme = make_partner("acme")
    ann = member()
    book_earn(ann, acme, 40, at("2024-02-10 09:00"))
    # the job did not run while the date was 30 to 8 days away
    assert daily(date(2025, 2, 5)).expiry_notices == 1
    assert [key for _, _, key, _ in told(ann)] == ["expiry:2025-02-10:7"]


def test_overlapping_runs_write_each_notice_once(app) -> None:
    rules()
    acme = make_partner("acme")
    members = [member() for _ in range(12)]
    for m in members:
        book_earn(m, acme, 10, at("2024-02-10 09:00"))
    counts: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with app.app_context():
                counts.append(daily(date(2025, 1, 11), batch=5).expiry_notices)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sum(counts) == 12
    assert sorted(who for who, *_ in told()) == sorted(members)


def test_tier_changes_are_told_up_at_the_earn_and_down_in_the_daily_job(
        app, client, make_partner, operator_headers) -> None:
    from tests.factories.partner_api import earn, enrol, publish

    publish(client, operator_headers, tiers=TIERS)
    _, headers = make_partner("northwind")
    number = enrol(client, headers, "c1")
    with read() as session:
        from coalition.ledger.models import Member
        ann = session.scalar(select(Member.id).where(Member.member_number == number))
    earn(client, headers, number, "t1", points=60)
    assert told(ann) == []
    earn(client, headers, number, "t2", points=60)  # 120: silver
    ((_, kind, key, data),) = told(ann)
    assert kind == "tier_changed" and key.endswith(":blue>silver")
    assert (data["from_name"], data["to_name"], data["direction"]) == ("Blue", "Silver", "up")

    execute("UPDATE member SET tier = 'gold' WHERE id = :m", m=ann)
    summary = daily(datetime.now(UTC).date())
    assert summary.downgrades == {"gold>silver": 1}
    (*_, (_, kind, key, data)) = told(ann)
    assert kind == "tier_changed" and key.endswith(":gold>silver")
    assert data["direction"] == "down"
    assert daily(datetime.now(UTC).date()).tier_downgrades == 0
    assert len(told(ann)) == 2
