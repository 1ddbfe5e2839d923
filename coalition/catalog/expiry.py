"""Vouchers left unused past their expiry, closed by the daily job by the program's rule
``vouchers.unused``:

* ``refund``: the burn that paid for the voucher is reversed (a ``burn_reversal`` at the
  fulfilling partner, referencing it): the points go back to the member's available points
  and to the lots they were taken from, latest expiry first, as a partner's burn reversal
  returns them (a lot that expired meanwhile comes back live with its own expiry, so the
  next expiry run takes those points as breakage). Settlement nets it off the partner's
  redemptions. A member closed since is not refunded: the voucher is forfeited.
* ``forfeit``: the redemption stands; the voucher is closed as forfeited.

Each voucher is closed in a transaction of its own under its member's wallet lock, by a
guarded ``UPDATE … WHERE status = 'issued'``: a till that used it just before wins, a second
run (or two at once) closes it once. Points a partner already reversed on the burn
itself are not refunded twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import partial

from sqlalchemy import func, select, update

from coalition import clock
from coalition.catalog.models import Voucher
from coalition.db import UnitOfWork, Units, read, run_with_retries
from coalition.ledger import journal
from coalition.ledger.lookup import member_state as state_of
from coalition.ledger.lookup import require_active
from coalition.ledger.models import Entry, Member
from coalition.ledger.reversals import consumed_by
from coalition.ledger.voiding import returning
from coalition.notifications.service import notify
from coalition.program.service import rules_in_force

_v = Voucher.__table__.c
_m = Member.__table__.c

#: vouchers read per page of the job
PAGE = 500


@dataclass
class VoucherSummary:
    refunded: int = 0
    refunded_points: int = 0
    forfeited: int = 0


def close_expired(cutoff: datetime, *, units: Units = UnitOfWork) -> VoucherSummary:
    """Refund or forfeit every voucher still issued whose expiry is at or before
    ``cutoff`` (never later than now)."""
    summary = VoucherSummary()
    after = 0
    while True:
        with read() as session:
            page = list(session.scalars(
                select(_v.id).where(_v.status == "issued", _v.expires_at <= cutoff,
                                    _v.id > after).order_by(_v.id).limit(PAGE)))
        if not page:
            return summary
        for voucher_id in page:
            outcome, points = run_with_retries(partial(_close, voucher_id, cutoff, units))
            if outcome == "refunded":
                summary.refunded += 1
                summary.refunded_points += points
            elif outcome == "forfeited":
                summary.forfeited += 1
        after = page[-1]


def _close(voucher_id: int, cutoff: datetime, units: Units) -> tuple[str | None, int]:
    with units() as uow:
        session = uow.session
        now = clock.utcnow()
        voucher = session.get_one(Voucher, voucher_id)
        # a merged member's points and lots moved to the survivor: so does the refund
        member_id: int = session.execute(
            select(func.coalesce(_m.merged_into_id, _m.id))
            .where(_m.id == voucher.member_id)).scalar_one()
        journal.lock_wallet(session, member_id)
        member = state_of(session, member_id)
        rule = rules_in_force(session)["vouchers"]["unused"]
        refund = rule == "refund" and member.status == "active"
        closed = session.execute(
            update(Voucher.__table__)
            .where(_v.id == voucher_id, _v.status == "issued", _v.expires_at <= cutoff)
            .values(status="refunded" if refund else "forfeited", closed_at=now)
            .returning(_v.id)).first()
        if closed is None:
            return None, 0
        points = 0
        if refund:
            require_active(session, member)
            original = session.get_one(Entry, voucher.entry_id)
            consumed = consumed_by(session, original.id)
            points = min(voucher.points, sum(t.points for t in consumed))
            if points:
                takes = returning(consumed, points)
                journal.apply_takes(session, takes)
                balance = journal.change_wallet(session, member_id, available=points)
                if balance is None:
                    raise journal.LedgerInconsistency(
                        f"member {member_id}: no room to refund voucher {voucher_id}")
                refund_id = journal.book_entry(
                    session, kind="burn_reversal", booked_at=now, points=points,
                    partner_id=voucher.partner_id, member_id=member_id,
                    reference_id=original.id, balance=balance, takes=takes,
                    note=f"voucher {voucher_id} unused",
                    postings=[("partner:redeemed", None, voucher.partner_id, -points),
                              ("member:available", member_id, None, points)])
                session.execute(update(Voucher.__table__).where(_v.id == voucher_id)
                                .values(refund_entry_id=refund_id))
            notify(session, member_id, "redemption", f"voucher:{voucher_id}:refunded",
                   {"voucher_id": voucher_id, "points": points, "refunded": True}, now)
        uow.commit()
        return ("refunded" if refund else "forfeited"), points
