"""Idempotency: a partner's ``partner_txn_id`` and a member's ``Idempotency-Key``.

The same id with the same request returns the original result, marked as a replay; the
same id with a different request is refused (``idempotency_conflict``); two concurrent
requests with one id produce one entry: the loser's insert hits the unique index, its
transaction rolls back whole, and it answers with the winner's result. A member's key is
stored as the entry's ``partner_txn_id`` in the form ``"<member number> <key>"`` and
guarded by the sender's wallet lock (see :mod:`coalition.ledger.transfers`); a member's
reward redemption (a burn at the fulfilling partner, :mod:`coalition.catalog.redemptions`)
is keyed the same way, in the same namespace.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from coalition.db import UnitOfWork, Units, read, run_with_retries
from coalition.errors import CoalitionError, IdempotencyConflict
from coalition.ledger.booking import PartnerRef
from coalition.ledger.lookup import (
    MemberRef,
    active_member,
    member_params,
    member_query,
    require_active,
)
from coalition.ledger.models import Entry
from coalition.prepared import Prepared

_E = Entry.__table__.c
_e = Entry.__table__.c


@dataclass(frozen=True)
class Outcome:
    body: dict[str, Any]
    replayed: bool


def request_hash(operation: str, data: dict[str, Any]) -> str:
    """A digest of the parsed request: what "the same request" means for a replay."""
    canonical = json.dumps({"op": operation, **data}, sort_keys=True, default=str,
                           separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


_EXISTING = select(_E.id).where(_E.partner_id == bindparam("partner"),
                                _E.partner_txn_id == bindparam("txn"))


def used_column() -> Any:
    """The entry booked under ``:partner``'s ``:txn`` (a column for a first read)."""
    return _EXISTING.scalar_subquery()


def probe(session: Session, partner_id: int, partner_txn_id: str) -> None:
    """Raise :class:`AlreadyBooked` if the partner's ``partner_txn_id`` was used."""
    entry_id = session.execute(_EXISTING, {"partner": partner_id,
                                           "txn": partner_txn_id}).scalar()
    if entry_id is not None:
        raise AlreadyBooked(entry_id)


class AlreadyBooked(Exception):
    """Raised by a booking's first read (:func:`first_read`) when its ``partner_txn_id``
    was used already; :func:`idempotent` answers with that entry."""

    def __init__(self, entry_id: int) -> None:
        super().__init__(entry_id)
        self.entry_id = entry_id


#: the first-read statements, one per way of naming the member and set of extra columns
_FIRST_READS: dict[tuple[bool, str], Prepared] = {}


def first_read(session: Session, partner: PartnerRef, partner_txn_id: str,
               identity: dict[str, Any], extra: tuple[str, Callable[[], list[Any]]] | None = None,
               params: dict[str, Any] | None = None) -> tuple[MemberRef, Sequence[Any]]:
    """A booking's first statement: whether its ``partner_txn_id`` was used (then
    :class:`AlreadyBooked`), the member the request names (refused unless active, as
    :func:`~coalition.ledger.lookup.active_member`), and the ``extra`` columns a use case
    needs before it writes (``(name, build)``: built once per name), in one round trip.

    Used with ``idempotent(..., probe=False)``, it replaces the probe of its own.
    """
    by_ref = identity.get("member_number") is None
    name, build = extra or ("", list)
    statement = _FIRST_READS.get((by_ref, name))
    if statement is None:
        statement = Prepared(member_query(by_ref).add_columns(_EXISTING.scalar_subquery(),
                                                              *build()))
        _FIRST_READS[(by_ref, name)] = statement
    row = statement.first(session, {
        **(params or {}), **member_params(partner.id, identity),
        "partner": partner.id, "txn": partner_txn_id})
    if row is None:
        entry_id = session.execute(_EXISTING, {"partner": partner.id,
                                               "txn": partner_txn_id}).scalar()
        if entry_id is not None:
            raise AlreadyBooked(entry_id)
        active_member(session, partner.id, identity)  # raises NotFound
        raise AssertionError("unreachable: the member was not found a moment ago")
    member, used, extras = MemberRef(*row[:5]), row[5], row[6:]
    if used is not None:
        raise AlreadyBooked(used)
    require_active(session, member)
    return member, extras


def _existing(session: Session, partner_id: int, partner_txn_id: str) -> Entry | None:
    entry_id = session.execute(_EXISTING, {"partner": partner_id,
                                           "txn": partner_txn_id}).scalar()
    return None if entry_id is None else session.get_one(Entry, entry_id)


def idempotent(
    partner: PartnerRef,
    partner_txn_id: str,
    digest: str,
    work: Callable[[Session], dict[str, Any]],
    render: Callable[[Session, Entry], dict[str, Any]],
    session: Session | None = None,
    units: Units = UnitOfWork,
    probe: bool = True,
) -> Outcome:
    """Run ``work`` (which books one entry and returns the answer) exactly once per id;
    ``render`` rebuilds that answer from the stored entry for a replay.

    With ``session``, the booking joins the caller's unit of work (which commits it, or
    retries it whole); otherwise it is a unit of work of its own, from ``units``. Without
    ``probe``, ``work`` looks for the id itself in its :func:`first_read`.
    """

    def replay(session: Session, entry: Entry) -> Outcome:
        if entry.request_hash != digest:
            raise IdempotencyConflict(
                f"partner_txn_id {partner_txn_id!r} was already used for a different request.",
                errors={"partner_txn_id": ["Already used for a different request."]})
        return Outcome(render(session, entry), replayed=True)

    def attempt() -> Outcome:
        with units() as uow:
            entry = _existing(uow.session, partner.id, partner_txn_id) if probe else None
            if entry is not None:
                return replay(uow.session, entry)
            try:
                body = work(uow.session)
            except AlreadyBooked as found:
                return replay(uow.session, uow.session.get_one(Entry, found.entry_id))
            except CoalitionError:
                # A concurrent duplicate may have committed while this one waited for the
                # member's wallet lock: the refusal (points spent, hold closed, nothing
                # left to reverse) is of the duplicate's own result, so answer with it.
                # (Rolled back first: a refusal can come after this one wrote its entry.)
                uow.session.rollback()
                entry = _existing(uow.session, partner.id, partner_txn_id)
                if entry is not None:
                    return replay(uow.session, entry)
                raise
            uow.commit()
            return Outcome(body, replayed=False)

    if session is not None:
        entry = _existing(session, partner.id, partner_txn_id) if probe else None
        if entry is not None:
            return replay(session, entry)
        try:
            return Outcome(work(session), replayed=False)
        except AlreadyBooked as found:
            return replay(session, session.get_one(Entry, found.entry_id))
    try:
        # a retry after a commit lost in a failover finds the entry and replays it
        return run_with_retries(attempt, replays=True)
    except IntegrityError:
        with read() as session:
            entry = _existing(session, partner.id, partner_txn_id)
            if entry is None:
                raise
            return replay(session, entry)


#: an ``Idempotency-Key`` (the whole value; also the OpenAPI pattern), checked where a
#: request is parsed: it is stored after the member number and a space, within 64 characters
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,50}$")
IDEMPOTENCY_KEY_RULE = "1 to 50 printable ASCII characters, no spaces."


def stored_key(member_number: str, idempotency_key: str | None) -> str | None:
    """The ``partner_txn_id`` a member's ``Idempotency-Key`` is kept as (module doc)."""
    if idempotency_key is None:
        return None
    return f"{member_number} {idempotency_key}"


def keyed_entry(session: Session, member_id: int, key: str | None) -> Entry | None:
    """The member's entry booked under ``key``; read under the member's wallet lock."""
    if key is None:
        return None
    entry_id = session.scalar(select(_e.id).where(
        _e.member_id == member_id, _e.partner_txn_id == key,
        _e.kind.in_(("transfer", "donation", "burn"))))
    return None if entry_id is None else session.get_one(Entry, entry_id)


def replay_keyed(session: Session, entry: Entry, digest: str,
                 render: Callable[[Session, Entry], dict[str, Any]]) -> Outcome:
    if entry.request_hash != digest:
        raise IdempotencyConflict(
            "This Idempotency-Key was already used for a different request.",
            errors={"Idempotency-Key": ["Already used for a different request."]})
    return Outcome(render(session, entry), replayed=True)
