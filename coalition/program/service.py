"""Reading and publishing the program rules.

Rules are stored as published (the wire form) and loaded through the schema, so a stored
version always reads back exactly as it was accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from coalition.audit.service import Actor, record
from coalition.db import UnitOfWork, read, replica_read, utcnow
from coalition.models import Partner, ProgramRules
from coalition.program.schemas import ProgramRulesSchema

FORFEITURE = (
    "Points have no cash value. Points left on an account when it is closed are forfeited; "
    "points not used before they expire are lost."
)

DEFAULT_RULES: dict[str, Any] = {
    "tiers": [{"code": "member", "name": "Member", "threshold": 0, "multiplier": "1"}],
}


@dataclass(frozen=True)
class Rules:
    """A version of the rules with typed values (``Decimal`` multipliers, ints)."""

    version: int
    published_at: datetime | None
    values: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.values[key]


def load_rules(session: Session) -> Rules:
    row = session.scalar(select(ProgramRules).order_by(ProgramRules.version.desc()).limit(1))
    if row is None:
        return Rules(0, None, ProgramRulesSchema().load(DEFAULT_RULES))
    return Rules(row.version, row.published_at, ProgramRulesSchema().load(row.rules))


def rules_at(session: Session, moment: datetime) -> Rules:
    """The rules in force at ``moment``: the latest version published by then (the first
    version for a moment before any, the defaults when none was ever published)."""
    row = (session.scalar(select(ProgramRules).where(ProgramRules.published_at <= moment)
                          .order_by(ProgramRules.version.desc()).limit(1))
           or session.scalar(select(ProgramRules).order_by(ProgramRules.version).limit(1)))
    if row is None:
        return load_rules(session)
    return Rules(row.version, row.published_at, ProgramRulesSchema().load(row.rules))


def current_rules() -> Rules:
    with read() as session:
        return load_rules(session)


def publish_rules(values: dict[str, Any], published_by: str, *,
                  actor: Actor | None = None) -> Rules:
    """Publish ``values`` (already validated) as the next version. ``actor`` is who the
    audit log names (by default, ``published_by``)."""
    stored = ProgramRulesSchema().dump(values)
    with UnitOfWork() as uow:
        if uow.session.get_bind().dialect.name == "postgresql":
            # Two publishes must not both read version n and insert n + 1. Readers are not
            # blocked; on SQLite the IMMEDIATE write transaction already holds the lock.
            uow.session.execute(text("LOCK TABLE program_rules IN SHARE ROW EXCLUSIVE MODE"))
        latest = uow.session.scalar(select(func.max(ProgramRules.version))) or 0
        row = ProgramRules(version=latest + 1, rules=stored, published_by=published_by)
        uow.session.add(row)
        record(uow.session, actor or Actor(published_by), "program.published",
               f"program:{row.version}", {"version": row.version, "rules": stored})
        uow.commit()
        return Rules(row.version, row.published_at, ProgramRulesSchema().load(stored))


def program_terms() -> dict[str, Any]:
    """The published terms with every active partner's earn rate in force now (from a
    replica, when one is configured)."""
    now = utcnow()
    with replica_read() as session:
        rules = load_rules(session)
        partners = session.scalars(
            select(Partner).where(Partner.status == "active").order_by(Partner.code)
        ).all()
        listed = []
        for partner in partners:
            card = partner.rate_card_at(now)
            listed.append({"code": partner.code, "name": partner.name, "kind": partner.kind,
                           "currency": partner.currency,
                           "earn_rate": card.earn_rate if card else None})
    return {
        **rules.values,
        "version": rules.version,
        "published_at": rules.published_at,
        "points_have_no_cash_value": True,
        "forfeiture": FORFEITURE,
        "partners": listed,
    }


_parsed: dict[int, Rules] = {}
_LATEST_VERSION = (select(ProgramRules.__table__.c.version,
                          ProgramRules.__table__.c.published_at)
                   .order_by(ProgramRules.__table__.c.version.desc()).limit(1))


def rules_in_force(session: Session) -> Rules:
    """The latest rules, read in the caller's transaction; parsing is cached per version
    since a published version never changes."""
    row = session.execute(_LATEST_VERSION).first()
    if row is None:
        return load_rules(session)
    return rules_of_version(session, row.version, row.published_at)


def latest_version_columns() -> list[Any]:
    """The latest version and its publication time, as columns another statement can carry
    (a booking's first read): with :func:`rules_of_version`, the rules in force without a
    round trip of their own."""
    rules = ProgramRules.__table__.c
    latest = select(rules.version).order_by(rules.version.desc()).limit(1).scalar_subquery()
    published = (select(rules.published_at).order_by(rules.version.desc()).limit(1)
                 .scalar_subquery())
    return [latest.label("rules_version"), published.label("rules_published_at")]


def rules_of_version(session: Session, version: int | None,
                     published_at: datetime | None) -> Rules:
    """The rules of ``version`` (the defaults when none was published), parsed once per
    worker: a version is read again only if its publication time differs (a database
    emptied and published anew)."""
    if version is None:
        return load_rules(session)
    cached = _parsed.get(version)
    if cached is None or cached.published_at != published_at:
        rules = session.execute(select(ProgramRules.rules)
                                .where(ProgramRules.version == version)).scalar_one()
        cached = Rules(version, published_at, ProgramRulesSchema().load(rules))
        _parsed[version] = cached
    return cached


def forget_parsed_rules() -> None:
    """Parse every version again when next read: for a database emptied and published
    anew at the very moment of an earlier version (a test's clock held still)."""
    _parsed.clear()
