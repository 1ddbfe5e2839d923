"""What a member's closure or merge does to their paid membership, in the transaction of
the closure or merge (under the wallet locks it holds).

* **Closure** ends the current membership at once (``ended``): the account and its
  benefits are gone; nothing is refunded (points have no cash value).
* **Merge** keeps one membership for the survivor: the one running longer (the survivor's
  on a tie). The other ends; the absorbed member's periods move to the survivor, so its
  history shows every period paid for under either number.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from coalition.membership.models import CURRENT, Membership
from coalition.membership.queries import current_row

_t = Membership.__table__.c


def end_at_closure(session: Session, member_id: int, now: datetime) -> None:
    session.execute(update(Membership.__table__)
                    .where(_t.member_id == member_id, _t.status.in_(CURRENT))
                    .values(status="ended", ended_at=now))


def merge(session: Session, absorbed_id: int, survivor_id: int, now: datetime) -> None:
    kept, other = current_row(session, survivor_id), current_row(session, absorbed_id)
    if kept is not None and other is not None:
        loser = other if kept.ends_at >= other.ends_at else kept
        loser.status, loser.ended_at = "ended", now
        session.flush()
    session.execute(update(Membership.__table__).where(_t.member_id == absorbed_id)
                    .values(member_id=survivor_id))
