"""Closing a member's account: open holds voided, points forfeited, personal data erased.

* **forfeiture** at closure: open holds are voided first, then member:available −a and
  member:pending −p against coalition:forfeited; every lot's remaining is taken (lot
  movements) and the lots are ``forfeited``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select, update

from coalition import clock
from coalition.db import UnitOfWork, Units, affected_rows, run_with_retries
from coalition.ledger import journal
from coalition.ledger.journal import LedgerInconsistency, Take
from coalition.ledger.lookup import locked_states, require_active
from coalition.ledger.models import Lot, Member, MemberConsent, MemberLink
from coalition.ledger.voiding import void_open_holds
from coalition.membership import lifecycle as membership
from coalition.oauth.models import OAuthAuthorizationCode, OAuthToken

_m = Member.__table__.c
_l = Lot.__table__.c
_link = MemberLink.__table__.c


#: what a closure erases from every row of the member (the journal keeps its numbers)
_ERASED: dict[str, Any] = {"name": None, "email": None, "birth_date": None,
                           "password_hash": None, "activation_code_hash": None,
                           "locked_until": None}


def close(member_id: int, *, units: Units = UnitOfWork) -> dict[str, Any]:
    """Close the member's account: open holds are voided, the remaining points forfeited
    (one ``forfeiture`` entry), personal data erased and partner links removed, sign-in
    ended. The row and its number stay, so the number is never given out again and the
    journal keeps its numbers."""
    def attempt() -> dict[str, Any]:
        with units() as uow:
            session = uow.session
            now = clock.utcnow()
            (member,) = locked_states(session, member_id)
            require_active(session, member)
            voided, available, pending = void_open_holds(session, member_id, now, "closure")
            entry_id = None
            if available or pending:
                balance = journal.change_wallet(session, member_id, available=-available,
                                                pending=-pending)
                if balance is None:
                    raise LedgerInconsistency(f"member {member_id}: wallet changed under "
                                              f"its lock")
                lots = session.execute(
                    select(_l.id, _l.origin_partner_id, _l.remaining)
                    .where(_l.member_id == member_id, _l.state.in_(("live", "pending")),
                           _l.remaining > 0)
                    .order_by(_l.id)).all()
                takes = [Take(lot_id, origin, -remaining) for lot_id, origin, remaining in lots]
                if -sum(t.points for t in takes) != available + pending:
                    raise LedgerInconsistency(
                        f"member {member_id}: lots hold {-sum(t.points for t in takes)} "
                        f"points, the wallet {available + pending}")
                journal.apply_takes(session, takes)
                entry_id = journal.book_entry(
                    session, kind="forfeiture", booked_at=now, points=available + pending,
                    member_id=member_id, balance=balance, takes=takes, note="closure",
                    postings=[("member:available", member_id, None, -available),
                              ("coalition:forfeited", None, None, available),
                              ("member:pending", member_id, None, -pending),
                              ("coalition:forfeited", None, None, pending)],
                )
            session.execute(update(Lot.__table__).where(
                _l.member_id == member_id, _l.state.in_(("live", "pending")))
                .values(state="forfeited"))
            membership.end_at_closure(session, member_id, now)
            # the links go with what each partner supplied on them, and every consent
            links = affected_rows(session.execute(delete(MemberLink.__table__)
                                                  .where(_link.member_id == member_id)))
            session.execute(delete(MemberConsent.__table__)
                            .where(MemberConsent.member_id == member_id))
            session.execute(update(Member.__table__).where(_m.id == member_id).values(
                status="closed", closed_at=now, **_ERASED))
            # and on the rows of members merged into this one
            session.execute(update(Member.__table__)
                            .where(_m.merged_into_id == member_id).values(**_ERASED))
            session.execute(update(OAuthToken.__table__).where(
                OAuthToken.member_id == member_id, OAuthToken.revoked_at.is_(None))
                .values(revoked_at=now))
            session.execute(delete(OAuthAuthorizationCode.__table__).where(
                OAuthAuthorizationCode.member_id == member_id))
            uow.commit()
            return {"member_number": member.member_number, "status": "closed",
                    "closed_at": now,
                    "forfeited": {"available": available, "pending": pending},
                    "holds_voided": voided, "links_removed": links,
                    "entry_id": entry_id}

    return run_with_retries(attempt)
