"""The one member lookup: a member by id, by number or by a partner's own reference, the
check that it is active (a merged one is refused with its survivor's number), the wallet
locks (lowest id first), and whose entries make up a member's history (the member and
everyone merged into it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, or_, select
from sqlalchemy.exc import NoResultFound
from sqlalchemy.orm import Session

from coalition.db import read
from coalition.errors import MemberClosed, MemberMerged, NotFound
from coalition.ledger import journal
from coalition.ledger.models import Entry, Member, MemberLink, Posting

_m = Member.__table__.c
_p = Posting.__table__.c
_link = MemberLink.__table__.c


@dataclass(frozen=True)
class MemberRef:
    """A member as the use cases decide on it: who, in what status and tier."""

    id: int
    member_number: str
    status: str
    tier: str
    merged_into_id: int | None = None


_MEMBER = select(_m.id, _m.member_number, _m.status, _m.tier, _m.merged_into_id)
_BY_NUMBER = _MEMBER.where(_m.member_number == bindparam("number"))
_BY_REF = _MEMBER.join(MemberLink.__table__, _link.member_id == _m.id).where(
    _link.partner_id == bindparam("partner"), _link.partner_member_ref == bindparam("ref"))


def member_query(by_ref: bool) -> Any:
    """The member's columns (those of :class:`MemberRef`, in order) named by number or, with
    ``by_ref``, by the partner's own reference (:func:`member_params`)."""
    return _BY_REF if by_ref else _BY_NUMBER


def member_params(partner_id: int, identity: dict[str, Any]) -> dict[str, Any]:
    if identity.get("member_number") is not None:
        return {"number": identity["member_number"]}
    return {"partner": partner_id, "ref": identity.get("partner_member_ref")}


def find_member(
    session: Session, partner_id: int, member_number: str | None = None,
    partner_member_ref: str | None = None,
) -> MemberRef:
    """The member named by number or by this partner's own reference, or ``NotFound``."""
    if member_number is not None:
        row = session.execute(_BY_NUMBER, {"number": member_number}).first()
        missing = f"No member {member_number}."
    else:
        row = session.execute(_BY_REF, {"partner": partner_id,
                                        "ref": partner_member_ref}).first()
        missing = f"No member linked to your reference {partner_member_ref!r}."
    if row is None:
        raise NotFound(missing)
    return MemberRef(*row)


def active_member(session: Session, partner_id: int, identity: dict[str, Any]) -> MemberRef:
    """Like :func:`find_member`, refusing closed and merged members."""
    member = find_member(session, partner_id, identity.get("member_number"),
                         identity.get("partner_member_ref"))
    require_active(session, member)
    return member


def member_state(session: Session, member_id: int) -> MemberRef:
    row = session.execute(
        select(_m.id, _m.member_number, _m.status, _m.tier, _m.merged_into_id)
        .where(_m.id == member_id)).first()
    if row is None:
        raise NotFound(f"No member {member_id}.")
    return MemberRef(*row)


def member_by_number(session: Session, number: str, field_name: str) -> MemberRef:
    row = session.execute(
        select(_m.id, _m.member_number, _m.status, _m.tier, _m.merged_into_id)
        .where(_m.member_number == number)).first()
    if row is None:
        raise NotFound(f"No member {number}.", errors={field_name: ["No such member."]})
    return MemberRef(*row)


def survivor_number(session: Session, state: MemberRef) -> str | None:
    if state.merged_into_id is None:
        return None
    return session.scalar(select(_m.member_number).where(_m.id == state.merged_into_id))


def require_active(session: Session, state: MemberRef, field_name: str | None = None) -> None:
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


def locked_states(session: Session, *member_ids: int) -> list[MemberRef]:
    """Lock the members' wallet rows (:func:`lock_members`) and read their states again
    under the locks, in the order given: a closure or a merge takes the locks too."""
    lock_members(session, *member_ids)
    return [member_state(session, member_id) for member_id in member_ids]


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
