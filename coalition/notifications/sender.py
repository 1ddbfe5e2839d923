"""Sending members' e-mails from the outbox: at least once, never twice per member and
event but for a crash between sending and recording, retried with backoff, every attempt
recorded.

The worker takes due e-mails in a short transaction that pushes their ``next_attempt_at``
past the longest the batch can take (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so several
workers share the outbox). In that transaction the e-mails that must not go are settled
for good: the member has no address (or it was erased when the account closed), the
account is closed or merged, or the member does not want this kind (marketing needs a
yes, service e-mails a no). The others are sent over one SMTP connection, each recorded
as soon as the relay took it. A worker killed between the relay taking an e-mail and the
record leaves it due again once the lease has passed: the member may get it twice, with
the same ``Message-ID`` (derived from the notification, so mail programs recognise it),
and never not at all.
"""

from __future__ import annotations

import smtplib
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from html import escape
from typing import Any
from urllib.parse import unquote, urlsplit

from flask import current_app
from sqlalchemy import insert, select, update

from coalition import clock
from coalition.db import UnitOfWork
from coalition.ledger.models import Member
from coalition.notifications import preferences, unsubscribe
from coalition.notifications.messages import text, title
from coalition.notifications.models import (
    CHOICE_OF,
    Notification,
    NotificationEmail,
    NotificationEmailAttempt,
)
from coalition.outbox import after_attempt

_e = NotificationEmail.__table__.c
_n = Notification.__table__.c
_m = Member.__table__.c
#: what an attempt keeps of the relay's answer
KEEP = 500


@dataclass(frozen=True)
class Due:
    email_id: int
    notification_id: int
    member_id: int
    kind: str
    data: dict[str, Any]
    created_at: datetime
    to: str
    attempts: int
    give_up_at: datetime


@dataclass(frozen=True)
class Result:
    started_at: datetime
    duration_ms: int
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None


def claim(limit: int) -> list[Due]:
    """Take up to ``limit`` due e-mails, oldest first, out of the others' reach for as long
    as sending them may take; settle in the same transaction those that must not go."""
    config = current_app.config
    with UnitOfWork() as uow:
        session = uow.session
        now = clock.utcnow()
        ids = session.scalars(
            select(_e.id).where(_e.status == "pending", _e.next_attempt_at <= now)
            .order_by(_e.next_attempt_at, _e.id).limit(limit)
            .with_for_update(skip_locked=True)).all()
        if not ids:
            return []
        rows = session.execute(
            select(_e.id, _e.notification_id, _n.member_id, _n.kind, _n.data, _n.created_at,
                   _m.email, _m.status, _e.attempts, _e.give_up_at)
            .join(Notification.__table__, _n.id == _e.notification_id)
            .join(Member.__table__, _m.id == _n.member_id)
            .where(_e.id.in_(ids)).order_by(_e.id)).all()
        due: list[Due] = []
        skipped: dict[str, list[int]] = {}
        for row in rows:
            reason = (
                f"member_{row.status}" if row.status != "active" else
                "no_address" if not row.email else
                None if preferences.wants(session, row.member_id, row.kind) else
                "not_wanted")
            if reason:
                skipped.setdefault(reason, []).append(row.id)
            else:
                due.append(Due(row.id, row.notification_id, row.member_id, row.kind,
                               row.data, row.created_at, row.email, row.attempts,
                               row.give_up_at))
        for reason, email_ids in skipped.items():
            session.execute(update(NotificationEmail.__table__)
                            .where(_e.id.in_(email_ids))
                            .values(status="skipped", reason=reason))
        if due:
            lease = now + timedelta(seconds=config["SMTP_TIMEOUT"] * (len(due) + 1) + 30)
            session.execute(update(NotificationEmail.__table__)
                            .where(_e.id.in_([d.email_id for d in due]))
                            .values(next_attempt_at=lease))
        uow.commit()
    return due


def _domain(address: str) -> str:
    return address.rsplit("@", 1)[-1].strip(" >") or "coalition.example"


def message_id(notification_id: int) -> str:
    """The same for every send of one notification's e-mail."""
    return f"<notification-{notification_id}@{_domain(current_app.config['MAIL_FROM'])}>"


def compose(due: Due) -> EmailMessage:
    """The e-mail: plain text and simple HTML, with an unsubscribe link in the body and the
    headers of RFC 2369 and RFC 8058 (one-click)."""
    config = current_app.config
    subject = title(due.kind, due.data)
    body = text(due.kind, due.data)
    choice = CHOICE_OF[due.kind]
    leave = unsubscribe.link(due.member_id, choice)
    inbox = f"{config['PUBLIC_URL']}/member/inbox"
    message = EmailMessage()
    message["From"] = config["MAIL_FROM"]
    message["To"] = due.to
    message["Subject"] = subject
    message["Date"] = format_datetime(due.created_at)
    message["Message-ID"] = message_id(due.notification_id)
    message["List-Unsubscribe"] = f"<{leave}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(
        f"{subject}\n\n{body}\n\nYour inbox: {inbox}\n\n"
        f"You get this e-mail because you chose to be told of this. To stop these e-mails: "
        f"{leave}\n")
    message.add_alternative(
        "<!doctype html><html><body>"
        f"<h1 style=\"font-size:1.25em\">{escape(subject)}</h1>"
        f"<p>{escape(body)}</p>"
        f"<p><a href=\"{escape(inbox)}\">Your inbox</a></p>"
        "<p style=\"font-size:.85em;color:#555\">You get this e-mail because you chose to "
        f"be told of this. <a href=\"{escape(leave)}\">Stop these e-mails</a>.</p>"
        "</body></html>", subtype="html")
    return message


@contextmanager
def connection(url: str, timeout: float) -> Iterator[smtplib.SMTP]:
    """An SMTP connection to the relay of ``SMTP_URL``: ``smtp://`` (plain), ``smtps://``
    (TLS from the start) or ``smtp+starttls://``, with the user and password it names."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    context = ssl.create_default_context()
    smtp: smtplib.SMTP
    if parts.scheme == "smtps":
        smtp = smtplib.SMTP_SSL(host, parts.port or 465, timeout=timeout, context=context)
    else:
        smtp = smtplib.SMTP(host, parts.port or (587 if "starttls" in parts.scheme else 25),
                            timeout=timeout)
    try:
        if parts.scheme == "smtp+starttls":
            smtp.starttls(context=context)
        if parts.username:
            smtp.login(unquote(parts.username), unquote(parts.password or ""))
        yield smtp
    finally:
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()


def _failure(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:KEEP]


def _ms(began: float) -> int:
    return int((time.monotonic() - began) * 1000)


def send_some(limit: int | None = None) -> bool:
    """Take due e-mails and send them, each recorded as soon as the relay answers; whether
    there was anything to do. Nothing is taken while no relay is configured."""
    config = current_app.config
    if not config.get("SMTP_URL"):
        return False
    due = claim(limit or config["MAIL_BATCH"])
    if not due:
        return False
    recorded: set[int] = set()
    started_at, began = clock.utcnow(), time.monotonic()

    def keep(item: Due, error: str | None) -> None:
        record(item, Result(started_at, _ms(began), error))
        recorded.add(item.email_id)

    try:
        with connection(config["SMTP_URL"], config["SMTP_TIMEOUT"]) as smtp:
            for item in due:
                started_at, began = clock.utcnow(), time.monotonic()
                try:
                    smtp.send_message(compose(item))
                except (smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError,
                        smtplib.SMTPSenderRefused) as exc:
                    keep(item, _failure(exc))  # this e-mail refused; the connection lives
                    continue
                keep(item, None)
    except (smtplib.SMTPException, OSError) as exc:
        # no connection, or it broke: what was not recorded waits for a retry
        for item in due:
            if item.email_id not in recorded:
                keep(item, _failure(exc))
    return True


def record(due: Due, result: Result) -> str:
    """Keep the attempt and move the e-mail on: sent, due again later, or failed once its
    retry time is spent. Returns the new status."""
    config = current_app.config
    values = after_attempt(result.ok, due.attempts + 1, due.give_up_at, clock.utcnow(),
                           base=config["MAIL_BACKOFF"], cap=config["MAIL_MAX_BACKOFF"],
                           done="sent", done_at="sent_at")
    with UnitOfWork() as uow:
        uow.session.execute(insert(NotificationEmailAttempt.__table__), {
            "email_id": due.email_id, "started_at": result.started_at,
            "duration_ms": result.duration_ms, "error": result.error})
        uow.session.execute(update(NotificationEmail.__table__)
                            .where(_e.id == due.email_id, _e.status == "pending")
                            .values(**values))
        uow.commit()
    return str(values["status"])
