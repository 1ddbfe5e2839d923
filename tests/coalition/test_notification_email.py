"""Members' e-mails through a real SMTP server (aiosmtpd, started here): written with the
notification, sent by the worker's sender with the member's consent, once per member and
event, retried with backoff and every attempt recorded, with an unsubscribe link that
works without signing in."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import select

from coalition.db import UnitOfWork, db, read
from coalition.ledger import closure
from coalition.notifications import preferences, sender
from coalition.notifications.models import NotificationEmail, NotificationEmailAttempt
from coalition.notifications.service import notify
from tests.coalition.test_serving import BIN, clean_env, started
from tests.conftest import TEST_SECRET, snapshot
from tests.factories.mail import SmtpServer, html_text, plain_text
from tests.factories.member_records import member_id, member_token
from tests.factories.partner_api import enrol, publish


@pytest.fixture
def smtp(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        monkeypatch.setitem(app.config, "SMTP_URL", server.url)
        monkeypatch.setitem(app.config, "PUBLIC_URL", "https://points.example.com")
        monkeypatch.setitem(app.config, "MAIL_FROM", "Coalition <hello@points.example.com>")
        yield server


@pytest.fixture
def member(app: Flask, client, make_partner, operator_headers) -> str:
    publish(client, operator_headers)
    _, headers = make_partner("acme")
    return enrol(client, headers, "c1", email="ann@example.com", name="Ann")


def tell(member: int, key: str, kind: str = "points_expiring", **data) -> bool:
    with UnitOfWork() as uow:
        written = notify(uow.session, member, kind, key,
                         data or {"points": 250, "date": "2027-01-31", "days": 30})
        uow.commit()
    return written


def emails() -> list[tuple[str, int, str | None]]:
    with read() as session:
        return [tuple(row) for row in session.execute(
            select(NotificationEmail.status, NotificationEmail.attempts,
                   NotificationEmail.reason).order_by(NotificationEmail.id))]


def attempts() -> list[str | None]:
    with read() as session:
        return list(session.scalars(select(NotificationEmailAttempt.error)
                                    .order_by(NotificationEmailAttempt.id)))


def drain() -> None:
    while sender.send_some():
        pass


def test_without_a_relay_only_the_inbox(app, member) -> None:
    assert tell(member_id(member), "expiry:2027-01-31:30")
    assert emails() == []


def test_sent_once_with_message_id_unsubscribe_and_both_parts(app, smtp, member) -> None:
    me = member_id(member)
    assert tell(me, "expiry:2027-01-31:30")
    assert not tell(me, "expiry:2027-01-31:30")  # reported again: nothing more
    assert emails() == [("pending", 0, None)]
    drain()
    assert emails() == [("sent", 1, None)]
    assert attempts() == [None]
    (message,) = smtp.messages
    assert message["To"] == "ann@example.com"
    assert message["From"] == "Coalition <hello@points.example.com>"
    assert message["Subject"] == "250 points expire on 31 January 2027"
    assert message["Message-ID"].startswith("<notification-")
    assert message["Message-ID"].endswith("@points.example.com>")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = message["List-Unsubscribe"].strip("<>")
    assert link.startswith("https://points.example.com/member/unsubscribe/")
    assert link in plain_text(message) and link in html_text(message)
    assert "in 30 days" in plain_text(message)
    assert not sender.send_some()  # nothing left
    assert len(smtp.messages) == 1


def test_marketing_only_with_consent_service_unless_refused(app, smtp, client,
                                                            member) -> None:
    me = member_id(member)
    tell(me, "offer:1", "offer", name="Double points at Acme")
    tell(me, "tier:2026-12-05:blue>silver", "tier_changed", **{"from": "blue", "to": "silver",
                                                               "direction": "up"})
    drain()
    assert [m["Subject"] for m in smtp.messages] == ["You are now Silver"]
    assert [e[0] for e in emails()] == ["skipped", "sent"]
    assert emails()[0][2] == "not_wanted"
    headers = member_token(member)
    client.put("/v1/me/preferences", json={"email_offers": True, "email_tier": False},
               headers=headers)
    tell(me, "offer:2", "offer", name="Triple points at Acme")
    tell(me, "tier:2026-12-06:silver>blue", "tier_changed", **{"from": "silver",
                                                               "to": "blue"})
    drain()
    assert [m["Subject"] for m in smtp.messages] == ["You are now Silver",
                                                     "A new offer for you"]
    assert [e[0] for e in emails()] == ["skipped", "sent", "sent", "skipped"]


def test_no_address_and_closed_accounts_get_nothing(app, smtp, client, make_partner,
                                                   member) -> None:
    nobody = enrol(client, make_partner("beta")[1], "c9")
    tell(member_id(nobody), "expiry:2027-01-31:30")
    tell(member_id(member), "expiry:2027-01-31:30")
    closure.close(member_id(member))  # the e-mail is pending: it must not go
    drain()
    assert smtp.messages == []
    assert sorted(e[2] or "" for e in emails()) == ["member_closed", "no_address"]


def test_relay_down_retried_with_backoff_then_sent(app, smtp, member, clock,
                                                  monkeypatch) -> None:
    monkeypatch.setitem(app.config, "MAIL_BACKOFF", 60)
    tell(member_id(member), "expiry:2027-01-31:30")
    smtp.inbox.refuse = "451 4.3.0 try again later"
    assert sender.send_some()
    assert emails() == [("pending", 1, None)]
    assert "451" in (attempts()[0] or "")
    assert not sender.send_some()  # not due yet
    clock.advance(seconds=61)
    smtp.inbox.refuse = None
    drain()
    assert emails() == [("sent", 2, None)]
    assert len(smtp.messages) == 1


def test_given_up_after_the_retry_time(app, smtp, member, clock, monkeypatch) -> None:
    monkeypatch.setitem(app.config, "MAIL_RETRY_FOR", 100)
    monkeypatch.setitem(app.config, "MAIL_BACKOFF", 60)
    tell(member_id(member), "expiry:2027-01-31:30")
    monkeypatch.setitem(app.config, "SMTP_URL", "smtp://127.0.0.1:1")  # nobody there
    for _ in range(5):
        sender.send_some()
        clock.advance(seconds=61)
    status, tries, _ = emails()[0]
    assert status == "failed" and 1 <= tries <= 3
    assert all(error and "Connection" in error for error in attempts())


def test_unsubscribe_link_and_one_click(app, smtp, client, member) -> None:
    me = member_id(member)
    tell(me, "expiry:2027-01-31:30")
    drain()
    link = smtp.messages[0]["List-Unsubscribe"].strip("<>")
    path = link.removeprefix("https://points.example.com")
    before = snapshot(app)
    page = client.get(path)  # looking changes nothing (mail scanners follow links)
    assert page.status_code == 200
    assert "Points about to expire" in page.get_data(as_text=True)
    assert snapshot(app) == before
    one_click = client.post(path, data={"List-Unsubscribe": "One-Click"})
    assert one_click.status_code == 200
    assert preferences.history(me)[-1]["source"] == "one_click"
    assert client.get("/v1/me/preferences",
                      headers=member_token(member)).get_json()["email_expiry"] is False
    again = client.post(path)  # the page's button: already off, nothing recorded
    assert again.status_code == 200 and "no more e-mails" in again.get_data(as_text=True)
    assert len(preferences.history(me)) == 1
    tell(me, "expiry:2027-01-31:7", points=250, date="2027-01-31", days=7)
    drain()
    assert len(smtp.messages) == 1


@pytest.mark.parametrize("token", ["nope", "WzEsImVtYWlsX2V4cGlyeSJd.bad-signature"])
def test_a_bad_unsubscribe_link_changes_nothing(app, client, member, token) -> None:
    before = snapshot(app)
    assert client.get(f"/member/unsubscribe/{token}").status_code == 404
    assert client.post(f"/member/unsubscribe/{token}",
                       data={"List-Unsubscribe": "One-Click"}).status_code == 404
    assert snapshot(app) == before


def test_a_worker_killed_mid_send_loses_no_email(app, member, database_url, tmp_path) -> None:
    """40 e-mails to a relay that takes 50 ms each; the worker is killed with SIGKILL once
    some have arrived, then started again: every e-mail arrives, and at most the one the
    relay had taken when the kill came (sent, not yet recorded) arrives twice, with the
    same Message-ID."""
    me = member_id(member)
    with SmtpServer(delay=0.05) as smtp:
        # written while a relay is configured (as the app would, with the worker's setting)
        app.config["SMTP_URL"] = smtp.url
        try:
            for n in range(40):
                tell(me, f"voucher:{n}", "redemption", reward=f"Reward {n}", points=10)
        finally:
            app.config["SMTP_URL"] = None
        env = clean_env(tmp_path, COALITION_ENV="testing",
                        COALITION_DATABASE_URL=database_url,
                        COALITION_SECRET_KEY=TEST_SECRET, COALITION_LOG_LEVEL="warning",
                        COALITION_WORKER_POLL="0.05", COALITION_SMTP_URL=smtp.url,
                        COALITION_MAIL_BATCH="5", COALITION_SMTP_TIMEOUT="5",
                        COALITION_MAIL_BACKOFF="0.1")
        with started([str(BIN / "coalition"), "worker"], env, tmp_path / "worker1.log",
                     tmp_path) as first:
            deadline = time.monotonic() + 30
            while len(smtp.messages) < 8 and time.monotonic() < deadline:
                time.sleep(0.01)
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(timeout=10)
        before_restart = len(smtp.messages)
        assert 8 <= before_restart < 40, (tmp_path / "worker1.log").read_text()
        # what was taken is leased for its send time; let the lease lapse
        with db.engine.begin() as conn:
            table = NotificationEmail.__table__
            conn.execute(table.update().where(table.c.status == "pending")
                         .values(next_attempt_at=table.c.created_at))
        second = subprocess.run([str(BIN / "coalition"), "worker", "--until-idle"],
                                env=env, cwd=tmp_path, capture_output=True, timeout=120)
        assert second.returncode == 0, second.stderr.decode()
        received = Counter(m["Message-ID"] for m in smtp.messages)
    assert len(received) == 40
    twice = [mid for mid, n in received.items() if n > 1]
    assert len(twice) <= 1 and all(received[mid] == 2 for mid in twice), received
    assert {status for status, _, _ in emails()} == {"sent"}


def test_the_ledger_check_accounts_for_every_attempt(app, smtp, member) -> None:
    from coalition.ledger.check import check_ledger

    tell(member_id(member), "expiry:2027-01-31:30")
    smtp.inbox.refuse = "451 try later"
    sender.send_some()
    smtp.inbox.refuse = None
    report = check_ledger()
    assert report.check("emails_accounted").ok
    assert report.check("emails_accounted").covered == {"emails": 1}
    with db.engine.begin() as conn:  # an attempt lost, and "sent" without one taken
        conn.execute(NotificationEmail.__table__.update().values(status="sent"))
    [violation] = check_ledger().check("emails_accounted").violations
    assert (violation["status"], violation["attempts"], violation["taken"]) == ("sent", 1, 0)
    with db.engine.begin() as conn:
        conn.execute(NotificationEmail.__table__.update().values(status="pending",
                                                                 attempts=3))
    [violation] = check_ledger().check("emails_accounted").violations
    assert (violation["attempts"], violation["recorded"]) == (3, 1)


def test_two_senders_share_the_outbox_and_send_each_email_once(app, smtp, member) -> None:
    import threading

    me = member_id(member)
    for n in range(30):
        tell(me, f"voucher:{n}", "redemption", reward=f"Reward {n}", points=10)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with app.app_context():
                while sender.send_some(limit=3):
                    pass
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    received = Counter(m["Message-ID"] for m in smtp.messages)
    assert len(received) == 30 and set(received.values()) == {1}
    assert {status for status, _, _ in emails()} == {"sent"}


def test_a_merged_members_pending_emails_are_not_sent(app, smtp, client, make_partner,
                                                      member) -> None:
    from coalition.ledger import merge

    survivor = enrol(client, make_partner("beta")[1], "s1", email="ann.b@example.com")
    tell(member_id(member), "expiry:2027-01-31:30")
    merge.merge(member, survivor, operator="test")
    drain()
    assert smtp.messages == []
    assert emails() == [("skipped", 0, "member_merged")]
    # the survivor is told from then on, at its own address
    tell(member_id(survivor), "expiry:2027-01-31:30")
    drain()
    assert [m["To"] for m in smtp.messages] == ["ann.b@example.com"]
