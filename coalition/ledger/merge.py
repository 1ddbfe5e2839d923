"""Merging one member into another.

* **merge** of X into S: X's open holds are voided first, then one ``merge`` entry (S's)
  moves member:available(X) −a → member:available(S) +a and the same for pending; X's
  lots and partner links are re-pointed to S (lots are working state: the journal keeps
  X's old entries under X, and :func:`member_ids_of` lets S's history include them);
  so are X's activations of opt-in promotions, but for those S activated itself.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from coalition import clock
from coalition.audit.service import Actor, record
from coalition.db import UnitOfWork, Units, affected_rows, run_with_retries
from coalition.errors import BalanceLimit, InvalidRequest
from coalition.ledger import journal, tiers
from coalition.ledger.journal import LedgerInconsistency
from coalition.ledger.lookup import (
    MemberRef,
    locked_states,
    member_by_number,
    member_state,
    require_active,
)
from coalition.ledger.models import Lot, Member, MemberConsent, MemberLink, Wallet
from coalition.ledger.voiding import void_open_holds
from coalition.membership import lifecycle as membership
from coalition.offers import member_offers as offers
from coalition.program.service import Rules, rules_in_force

_m = Member.__table__.c
_l = Lot.__table__.c
_w = Wallet.__table__.c
_link = MemberLink.__table__.c


def merge(absorbed_number: str, survivor_number: str, operator: str, *,
          actor: Actor | None = None, units: Units = UnitOfWork) -> dict[str, Any]:
    """Merge the member found twice: everything of ``absorbed`` moves to ``survivor``.

    Balances (one ``merge`` entry), lots and partner links move; the survivor keeps the
    higher tier and gains personal data it lacks, erased from the absorbed row, which keeps
    its journal entries, with status ``merged``, a pointer to the survivor and the moment
    of the merge (``merged_at``). Merging again into the same survivor answers with the
    merge as it stands (``already_merged``).
    """
    if absorbed_number == survivor_number:
        message = "A member cannot be merged into itself."
        raise InvalidRequest(message, errors={"survivor": [message]})

    def attempt() -> dict[str, Any]:
        with units() as uow:
            session = uow.session
            now = clock.utcnow()
            absorbed = member_by_number(session, absorbed_number, "absorbed")
            survivor = member_by_number(session, survivor_number, "survivor")
            absorbed, survivor = locked_states(session, absorbed.id, survivor.id)
            if absorbed.status == "merged" and absorbed.merged_into_id == survivor.id:
                return _merge_body(session, absorbed, survivor, None, {}, already=True)
            require_active(session, absorbed, "absorbed")
            require_active(session, survivor, "survivor")
            rules = rules_in_force(session)

            voided, available, pending = void_open_holds(session, absorbed.id, now, "merge")
            entry_id = None
            if available or pending:
                if journal.change_wallet(session, absorbed.id, available=-available,
                                         pending=-pending) is None:
                    raise LedgerInconsistency(f"member {absorbed.id}: wallet changed "
                                              f"under its lock")
                balance = journal.change_wallet(session, survivor.id, available=available,
                                                pending=pending)
                if balance is None:
                    raise BalanceLimit("The survivor's balance would exceed the largest "
                                       "allowed.")
                entry_id = journal.book_entry(
                    session, kind="merge", booked_at=now, points=available + pending,
                    member_id=survivor.id, balance=balance,
                    note=f"merged {absorbed.member_number} into "
                         f"{survivor.member_number} by {operator}",
                    postings=[("member:available", absorbed.id, None, -available),
                              ("member:available", survivor.id, None, available),
                              ("member:pending", absorbed.id, None, -pending),
                              ("member:pending", survivor.id, None, pending)],
                )
            lots = affected_rows(session.execute(
                update(Lot.__table__).where(_l.member_id == absorbed.id)
                .values(member_id=survivor.id)))
            links = affected_rows(session.execute(
                update(MemberLink.__table__).where(_link.member_id == absorbed.id)
                .values(member_id=survivor.id)))
            _move_consents(session, absorbed.id, survivor.id)
            membership.merge(session, absorbed.id, survivor.id, now)
            offers.merge(session, absorbed.id, survivor.id)
            # members merged into the absorbed one point at the survivor now (one hop)
            session.execute(update(Member.__table__)
                            .where(_m.merged_into_id == absorbed.id)
                            .values(merged_into_id=survivor.id))
            _absorb_member_row(session, rules, absorbed.id, survivor.id, now)
            moved = {"available": available, "pending": pending, "lots": lots,
                     "links": links, "holds_voided": voided}
            body = _merge_body(session, member_state(session, absorbed.id),
                               member_state(session, survivor.id), entry_id, moved)
            record(session, actor or Actor(operator), "member.merged",
                   f"member:{absorbed_number}",
                   {"absorbed": absorbed_number, "survivor": survivor_number,
                    "moved": moved, "entry_id": entry_id})
            uow.commit()
            return body

    return run_with_retries(attempt)


def _absorb_member_row(session: Session, rules: Rules, absorbed_id: int,
                       survivor_id: int, now: datetime) -> None:
    x = session.get_one(Member, absorbed_id)
    s = session.get_one(Member, survivor_id)
    if tiers.rank(rules, x.tier, unknown=-1) > tiers.rank(rules, s.tier, unknown=-1):
        s.tier = x.tier
    # the survivor gains the personal data it lacks; the absorbed row keeps none of it
    s.email = s.email or x.email
    s.name = s.name or x.name
    s.birth_date = s.birth_date or x.birth_date
    x.email = x.name = x.birth_date = None
    years = [y for y in (s.birthday_bonus_year, x.birthday_bonus_year) if y is not None]
    s.birthday_bonus_year = max(years) if years else None
    x.status, x.merged_into_id, x.merged_at = "merged", survivor_id, now
    session.flush()
    # the later activity of the two governs expiry by inactivity of the moved lots
    last = session.scalar(select(func.max(_w.last_activity_at))
                          .where(_w.member_id.in_((absorbed_id, survivor_id))))
    if last is not None:
        session.execute(update(Wallet.__table__).where(_w.member_id == survivor_id)
                        .values(last_activity_at=last))


def _move_consents(session: Session, absorbed_id: int, survivor_id: int) -> None:
    """The partners the absorbed member shared its personal data with see the survivor's
    (the data moved to it); a consent the survivor already gave stays as it was."""
    consent = MemberConsent.__table__.c
    given = select(consent.partner_id).where(consent.member_id == survivor_id)
    session.execute(update(MemberConsent.__table__).where(
        consent.member_id == absorbed_id, consent.partner_id.not_in(given))
        .values(member_id=survivor_id))
    session.execute(delete(MemberConsent.__table__)
                    .where(consent.member_id == absorbed_id))


def _merge_body(session: Session, absorbed: MemberRef, survivor: MemberRef,
                entry_id: int | None, moved: dict[str, int],
                already: bool = False) -> dict[str, Any]:
    wallet = session.execute(select(_w.available, _w.pending, _w.held)
                             .where(_w.member_id == survivor.id)).one()
    return {
        "absorbed": {"member_number": absorbed.member_number, "status": absorbed.status,
                     "merged_into": survivor.member_number},
        "survivor": {"member_number": survivor.member_number, "status": survivor.status,
                     "tier": survivor.tier,
                     "balance": {"available": wallet.available, "pending": wallet.pending,
                                 "held": wallet.held}},
        "moved": {"available": 0, "pending": 0, "lots": 0, "links": 0, "holds_voided": 0,
                  **moved},
        "entry_id": entry_id,
        "already_merged": already,
    }
