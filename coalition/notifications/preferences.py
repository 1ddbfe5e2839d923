"""Which e-mails a member wants, and the record of every choice.

Each choice (:data:`~coalition.notifications.models.CHOICES`) is either *marketing*
(``email_offers``: sent only after the member said yes) or *service* (points expiring,
tier changes, redemptions, memberships, claims answered: about the member's own account,
sent unless the member said no). A choice is a new row of ``notification_consent`` with
when and how it was made (the API, the member page, an e-mail's unsubscribe link or its
one-click unsubscribe); the latest row per choice is in force, and the history stays.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from coalition import clock
from coalition.db import UnitOfWork, Units, read
from coalition.errors import MemberClosed, NotFound
from coalition.ledger.models import Member
from coalition.notifications.models import CHOICE_OF, CHOICES, NotificationConsent

_c = NotificationConsent.__table__.c


def current(session: Session, member_id: int) -> dict[str, dict[str, Any]]:
    """Every choice as it stands: ``{name: {value, changed_at, source}}`` (``changed_at``
    and ``source`` are None for a default the member never changed)."""
    latest = (select(func.max(_c.id)).where(_c.member_id == member_id)
              .group_by(_c.choice).scalar_subquery())
    made = {row.choice: row for row in session.execute(
        select(_c.choice, _c.granted, _c.at, _c.source).where(_c.id.in_(latest)))}
    return {
        name: ({"value": made[name].granted, "changed_at": made[name].at,
                "source": made[name].source} if name in made else
               {"value": choice["default"], "changed_at": None, "source": None})
        for name, choice in CHOICES.items()
    }


def wants(session: Session, member_id: int, kind: str) -> bool:
    """Whether the member wants an e-mail of ``kind`` now: their latest choice, or the
    default (marketing: no; service: yes)."""
    choice = CHOICE_OF.get(kind)
    if choice is None:
        return False
    granted = session.scalar(select(_c.granted)
                             .where(_c.member_id == member_id, _c.choice == choice)
                             .order_by(_c.id.desc()).limit(1))
    return bool(CHOICES[choice]["default"] if granted is None else granted)


def _view(member_id: int, choices: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        **{name: choice["value"] for name, choice in choices.items()},
        "choices": [{"name": name, "value": choice["value"],
                     "marketing": CHOICES[name]["marketing"],
                     "default": CHOICES[name]["default"], "label": CHOICES[name]["label"],
                     "changed_at": choice["changed_at"], "source": choice["source"]}
                    for name, choice in choices.items()],
    }


def preferences(member_id: int) -> dict[str, Any]:
    """``GET /v1/me/preferences``: each choice with its value and when it was made."""
    with read() as session:
        if session.get(Member, member_id) is None:
            raise NotFound("No such member.")
        return _view(member_id, current(session, member_id))


def record(session: Session, member_id: int, changes: dict[str, bool], source: str,
           now: datetime) -> dict[str, dict[str, Any]]:
    """Record the choices that change (a choice repeated as it stands writes nothing), in
    the caller's transaction; the choices as they then stand."""
    before = current(session, member_id)
    rows = [{"member_id": member_id, "choice": name, "granted": value, "source": source,
             "at": now}
            for name, value in changes.items() if before[name]["value"] != value]
    if rows:
        session.execute(insert(NotificationConsent.__table__), rows)
        for name in (str(row["choice"]) for row in rows):
            before[name] = {"value": changes[name], "changed_at": now, "source": source}
    return before


def set_preferences(member_id: int, changes: dict[str, bool], source: str = "api", *,
                    units: Units = UnitOfWork) -> dict[str, Any]:
    """``PUT /v1/me/preferences``: the choices given change, the others stay."""
    with units() as uow:
        session = uow.session
        member = session.execute(select(Member.status, Member.member_number)
                                 .where(Member.id == member_id).with_for_update()).first()
        if member is None:
            raise NotFound("No such member.")
        if member.status != "active":
            raise MemberClosed(f"Member {member.member_number} is {member.status}.")
        choices = record(session, member_id, changes, source, clock.utcnow())
        uow.commit()
    return _view(member_id, choices)


def history(member_id: int) -> list[dict[str, Any]]:
    """Every choice the member made, oldest first."""
    with read() as session:
        return [dict(row._mapping) for row in session.execute(
            select(_c.choice, _c.granted, _c.source, _c.at)
            .where(_c.member_id == member_id).order_by(_c.id))]
