"""A member redeems a reward: one transaction burns the points at the fulfilling partner
and issues a voucher.

Under the member's wallet lock (taken first, as every booking of the member's points does),
the redemption checks the member, the reward on offer and the member's own limit, takes
the points off the wallet (one guarded statement: ``insufficient_points``), then one unit of
the stock (one guarded ``UPDATE reward SET sold = sold + 1 WHERE sold < stock``: the
reward's row lock serialises concurrent redemptions, and a redemption that finds none left
is refused with ``out_of_stock`` and rolls back whole), consumes the member's lots earliest
expiry first, and books a ``burn`` at the fulfilling partner through the journal (settled
as a redemption there, like any burn). The voucher carries a code of 120 random bits and
expires after the program's ``vouchers.valid_days``.

A retried request with the same ``Idempotency-Key`` answers with the original redemption
(the key is kept as the burn's ``partner_txn_id``, as transfers and donations keep theirs,
:mod:`coalition.ledger.transfers`); the same key with another reward is
``idempotency_conflict``.
"""

from __future__ import annotations

import base64
import secrets
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.orm import Session

from coalition import clock, events
from coalition.catalog.models import Reward, Voucher
from coalition.catalog.rewards import on_offer
from coalition.db import UnitOfWork, Units, read, run_with_retries
from coalition.errors import InsufficientPoints, InvalidRequest, MembershipRequired, OutOfStock
from coalition.ledger import journal
from coalition.ledger.idempotency import (
    Outcome,
    keyed_entry,
    replay_keyed,
    request_hash,
    stored_key,
)
from coalition.ledger.lookup import locked_states, member_ids_of, member_state, require_active
from coalition.ledger.models import Entry
from coalition.ledger.rendering import (
    TransactionEventSchema,
    balance_after,
    balance_dict,
    render_transaction,
)
from coalition.membership.queries import active_plan
from coalition.models import Partner
from coalition.notifications.service import notify
from coalition.program.service import rules_in_force

_r = Reward.__table__.c
_v = Voucher.__table__.c
_pt = Partner.__table__.c

#: random bytes of a voucher code (120 bits, 24 base32 characters)
CODE_BYTES = 15

def new_code() -> str:
    """An unguessable voucher code: 120 random bits in base32 (no padding, no 0/1/8/9)."""
    return base64.b32encode(secrets.token_bytes(CODE_BYTES)).decode()


def normalise(code: str) -> str:
    """A code as typed at a till: case, spaces and hyphens do not matter."""
    return code.replace("-", "").replace(" ", "").upper()


def _body(voucher_id: int, reward_id: int, code: str, points: int, expires_at: Any,
          partner_code: str, balance: dict[str, int]) -> dict[str, Any]:
    return {"id": voucher_id, "reward_id": reward_id, "voucher_code": code,
            "points": points, "expires_at": expires_at, "partner": partner_code,
            "balance": balance}


def _render(session: Session, entry: Entry) -> dict[str, Any]:
    row = session.execute(select(Voucher.__table__, _pt.code.label("partner_code"))
                          .join(Partner.__table__, _pt.id == _v.partner_id)
                          .where(_v.entry_id == entry.id)).one()
    return _body(row.id, row.reward_id, row.code, row.points, row.expires_at,
                 row.partner_code, balance_after(entry))


def redeem(member_id: int, reward_id: int, *, request_id: str | None = None,
           units: Units = UnitOfWork) -> Outcome:
    """Redeem reward ``reward_id`` for the member: the points burned at the fulfilling
    partner, a voucher issued (see the module doc)."""
    digest = request_hash("redemption", {"reward_id": reward_id})

    def attempt() -> Outcome:
        with units() as uow:
            session = uow.session
            now = clock.utcnow()
            member = member_state(session, member_id)
            key = stored_key(member.member_number, request_id)
            (member,) = locked_states(session, member.id)
            existing = keyed_entry(session, member.id, key)
            if existing is not None:
                return replay_keyed(session, existing, digest, _render)
            require_active(session, member)
            reward = session.execute(
                select(_r.id, _r.partner_id, _r.name, _r.points, _r.per_member_limit,
                       _r.plan, _r.active, _pt.code.label("partner_code"),
                       and_(*on_offer(now)).label("offered"))
                .join(Partner.__table__, _pt.id == _r.partner_id)
                .where(_r.id == reward_id)).first()
            if reward is None or not reward.active:
                message = "No such reward on offer."
                raise InvalidRequest(f"No reward {reward_id} on offer.",
                                     errors={"reward_id": [message]})
            if not reward.offered:
                raise OutOfStock("This reward is not on offer at the moment.")
            if reward.plan is not None:
                held = active_plan(session, member.id, now)
                if held is None or held.code != reward.plan:
                    raise MembershipRequired(
                        f"This reward is for members holding the {reward.plan} membership.",
                        errors={"reward_id": [f"Needs the {reward.plan} membership."]})
            if reward.per_member_limit is not None:
                mine = session.scalar(select(func.count()).where(
                    _v.reward_id == reward.id,
                    _v.member_id.in_(member_ids_of(member.id, session)))) or 0
                if mine >= reward.per_member_limit:
                    raise OutOfStock(f"At most {reward.per_member_limit} of this reward "
                                     f"per member.")
            points = reward.points
            balance = journal.change_wallet(session, member.id, available=-points,
                                            activity_at=now)
            if balance is None:
                raise InsufficientPoints("You do not have enough points for this reward.",
                                         errors={"reward_id": [f"It costs {points} points."]})
            taken = session.execute(
                update(Reward.__table__)
                .where(_r.id == reward.id, (_r.stock.is_(None)) | (_r.sold < _r.stock))
                .values(sold=_r.sold + 1).returning(_r.sold)).first()
            if taken is None:
                raise OutOfStock("This reward is sold out.")
            takes = journal.take_from_live_lots(session, member.id, points)
            entry_id = journal.book_entry(
                session, kind="burn", booked_at=now, points=points,
                partner_id=reward.partner_id, member_id=member.id, partner_txn_id=key,
                request_hash=digest if key else None, balance=balance, takes=takes,
                note=f"reward {reward.id}",
                postings=[("member:available", member.id, None, -points),
                          ("partner:redeemed", None, reward.partner_id, points)])
            # the fulfilling partner's systems hear of the redemption as of any burn there
            burned = render_transaction(session, session.get_one(Entry, entry_id),
                                        reward.partner_code)
            events.publish(session, reward.partner_id, "transaction.booked",
                           TransactionEventSchema().dump(burned))
            code = new_code()
            expires_at = now + timedelta(days=rules_in_force(session)["vouchers"]["valid_days"])
            voucher_id = session.execute(insert(Voucher.__table__).values(
                code=code, reward_id=reward.id, member_id=member.id,
                partner_id=reward.partner_id, points=points, entry_id=entry_id,
                status="issued", issued_at=now, expires_at=expires_at)
                .returning(_v.id)).scalar_one()
            notify(session, member.id, "redemption", f"redemption:{voucher_id}",
                   {"reward": reward.name, "partner": reward.partner_code,
                    "points": points, "expires_at": expires_at.isoformat()}, now)
            uow.commit()
            return Outcome(_body(voucher_id, reward.id, code, points, expires_at,
                                 reward.partner_code, balance_dict(balance)), replayed=False)

    # with a key, a retry after a commit lost in a failover finds the entry and replays it
    return run_with_retries(attempt, replays=request_id is not None)


def status_now(status: str, expires_at: Any, now: Any) -> str:
    """A voucher's status as shown: an issued voucher past its expiry shows ``expired``
    until the daily job refunds or forfeits it."""
    return "expired" if status == "issued" and expires_at <= now else status


def vouchers_of(member_id: int) -> list[dict[str, Any]]:
    """The member's vouchers (and those of members merged into it), newest first."""
    now = clock.utcnow()
    with read() as session:
        rows = session.execute(
            select(Voucher.__table__, _r.name.label("reward_name"), _r.kind,
                   _r.terms, _pt.code.label("partner_code"), _pt.name.label("partner_name"))
            .join(Reward.__table__, _r.id == _v.reward_id)
            .join(Partner.__table__, _pt.id == _v.partner_id)
            .where(_v.member_id.in_(member_ids_of(member_id, session)))
            .order_by(_v.id.desc())).all()
    return [{"id": row.id, "voucher_code": row.code, "reward_id": row.reward_id,
             "reward": row.reward_name, "kind": row.kind, "terms": row.terms,
             "partner": row.partner_code, "partner_name": row.partner_name,
             "points": row.points, "status": status_now(row.status, row.expires_at, now),
             "issued_at": row.issued_at, "expires_at": row.expires_at,
             "used_at": row.used_at} for row in rows]
