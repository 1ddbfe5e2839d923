"""The one member lookup of the member use cases: a member's state by id or number, the
checks that it is active, the wallet locks (lowest id first), and whose entries make up a
member's history (the member and everyone merged into it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.exc import NoResultFound
from sqlalchemy.orm import Session

from coalition.db import read
from coalition.errors import MemberClosed, MemberMerged, NotFound
from coalition.ledger import journal
from coalition.ledger.models import Entry, Member, Posting

_m = Member.__table__.c
_p = Posting.__table__.c


@dataclass(frozen=True)
class MemberState:
    id: int
    member_number: str
    status: str
    tier: str
    merged_into_id: int | None


def member_state(session: Session, member_id: int) -> MemberState:
    row = session.execute(
        select(_m.id, _m.member_number, _m.status, _m.tier, _m.merged_into_id)
        .where(_m.id == member_id)).first()
    if row is None:
        raise NotFound(f"No member {member_id}.")
    return MemberState(*row)


def member_by_number(session: Session, number: str, field_name: str) -> MemberState:
    row = session.execute(
        select(_m.id, _m.member_number, _m.status, _m.tier, _m.merged_into_id)
        .where(_m.member_number == number)).first()
    if row is None:
        raise NotFound(f"No member {number}.", errors={field_name: ["No such member."]})
    return MemberState(*row)


def survivor_number(session: Session, state: MemberState) -> str | None:
    if state.merged_into_id is None:
        return None
    return session.scalar(select(_m.member_number).where(_m.id == state.merged_into_id))


def require_active(session: Session, state: MemberState, field_name: str | None = None) -> None:
    """Refuse a closed or merged member (a merged one with a pointer to the survivor)."""
    if state.status == "closed":
        raise MemberClosed(f"Member {state.member_number} is closed.",
                           errors={field_name: ["The member is closed."]} if field_name
                           else None)
    if state.status == "merged":
        survivor = survivor_number(session, state)
        raise MemberMerged(f"Member {state.member_number} was merged into {survivor}.",
                           errors={field_name or "member_number": [f"Use {survivor}."]})


def lock_members(session: Session, *member_ids: int) -> None:
    """Lock the members' wallet rows, lowest member id first."""
    for member_id in sorted(set(member_ids)):
        try:
            journal.lock_wallet(session, member_id)
        except NoResultFound as exc:
            raise NotFound(f"Member {member_id} has no wallet.") from exc


def member_ids_of(member_id: int, session: Session | None = None) -> list[int]:
    """The member and everyone merged into it, lowest id first: whose entries make up the
    member's history (a merge leaves the absorbed member's entries under its own id)."""
    query = (select(_m.id).where(or_(_m.id == member_id, _m.merged_into_id == member_id))
             .order_by(_m.id))
    if session is not None:
        return list(session.scalars(query))
    with read() as s:
        return list(s.scalars(query))


def member_entries(member_ids: list[int]) -> Any:
    """A condition on :class:`Entry` for the entries in the history of ``member_ids``:
    those booked for them, and those that credited them without being theirs (transfers
    received, merges that brought points in)."""
    credited = select(_p.entry_id).where(_p.member_id.in_(member_ids))
    return or_(Entry.member_id.in_(member_ids), Entry.id.in_(credited))
