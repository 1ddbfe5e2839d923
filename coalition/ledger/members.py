"""Members as partners see them: enrol or link, look up, balance; and what of a member's
personal data each partner sees.

Personal data is the member's. The member's own profile (name, e-mail, birth date on the
member row) is what the member sees; a partner sees what it supplied itself (kept on its
links, :class:`~coalition.ledger.models.MemberLink`) or, if the member agreed to share it
with that partner (:class:`~coalition.ledger.models.MemberConsent`), the member's profile.
Linking an existing member number therefore reveals nothing of the member to the partner.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import delete, insert, literal_column, select, true
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from coalition import clock
from coalition.db import UnitOfWork, read, read_once, run_with_retries
from coalition.errors import AlreadyExists, MemberClosed, NotFound
from coalition.ledger import numbers
from coalition.ledger.bonuses import book_welcome_bonus
from coalition.ledger.expiring import by_date, dates_of
from coalition.ledger.lookup import active_member, find_member, member_params, member_query
from coalition.ledger.models import Member, MemberConsent, MemberLink, Wallet
from coalition.member.signin import activation_digest, display_code, new_activation_code
from coalition.models import Partner
from coalition.prepared import Prepared
from coalition.program.service import load_rules

PERSONAL_FIELDS = ("name", "email", "birth_date")


def seen_by(session: Session, member: Member, partner_id: int) -> dict[str, Any]:
    """The member's personal data as ``partner_id`` may see it (module doc): the member's
    profile if the member shares it with the partner, otherwise what the partner supplied
    on its own links to the member (the latest value of each), otherwise nothing."""
    shared = session.get(MemberConsent, (member.id, partner_id)) is not None
    if shared:
        return {f: getattr(member, f) for f in PERSONAL_FIELDS}
    links = session.scalars(select(MemberLink).where(
        MemberLink.member_id == member.id, MemberLink.partner_id == partner_id)
        .order_by(MemberLink.id.desc())).all()
    return {f: next((getattr(link, f) for link in links if getattr(link, f) is not None),
                    None) for f in PERSONAL_FIELDS}


def _describe(session: Session, member_id: int, partner_id: int) -> dict[str, Any]:
    member = session.get(Member, member_id)
    assert member is not None
    wallet = session.get(Wallet, member_id)
    ref = session.scalar(select(MemberLink.partner_member_ref).where(
        MemberLink.member_id == member_id, MemberLink.partner_id == partner_id)
        .order_by(MemberLink.id))
    return {
        "member_number": member.member_number,
        "status": member.status,
        "tier": member.tier,
        "partner_member_ref": ref,
        **seen_by(session, member, partner_id),
        "created_at": member.created_at,
        # a merged member answers with the member it was merged into
        "merged_into": session.scalar(select(Member.member_number).where(
            Member.id == member.merged_into_id)) if member.merged_into_id else None,
        "balance": {"available": wallet.available if wallet else 0,
                    "pending": wallet.pending if wallet else 0,
                    "held": wallet.held if wallet else 0},
    }


def enrol(
    partner_id: int, partner_member_ref: str, email: str | None = None,
    name: str | None = None, birth_date: date | None = None,
    member_number: str | None = None,
) -> tuple[dict[str, Any], bool]:
    """Enrol a new member, or link/find an existing one. Returns (member, created)."""

    def attempt() -> tuple[dict[str, Any], bool]:
        with UnitOfWork() as uow:
            session = uow.session
            link = MemberLink.__table__.c
            linked_id = session.scalar(select(link.member_id).where(
                link.partner_id == partner_id, link.partner_member_ref == partner_member_ref))
            if member_number is not None:
                member = active_member(session, partner_id, {"member_number": member_number})
                if linked_id is not None and linked_id != member.id:
                    raise AlreadyExists(
                        "Your reference is already linked to another member.",
                        errors={"partner_member_ref": ["Linked to another member."]})
                if linked_id is None:
                    # what this partner supplies is kept for it; the member's own profile
                    # is not shown to it, nor changed by it
                    _link(session, partner_id, partner_member_ref, member.id,
                          email=email, name=name, birth_date=birth_date)
                    uow.commit()
                return _describe(session, member.id, partner_id), False
            if linked_id is not None:
                return _describe(session, linked_id, partner_id), False
            code = new_activation_code()
            member_id = _create(session, partner_id, email, name, birth_date,
                                activation_code_hash=activation_digest(code))
            _link(session, partner_id, partner_member_ref, member_id,
                  email=email, name=name, birth_date=birth_date)
            uow.commit()
            # the one-time activation code is shown in this answer only; the member signs
            # in with it once to choose a password (coalition.member.signin)
            return {**_describe(session, member_id, partner_id),
                    "activation_code": display_code(code)}, True

    for _ in range(5):
        try:
            return run_with_retries(attempt)
        except IntegrityError:
            # A concurrent enrolment of the same reference (or, very rarely, a member
            # number drawn twice) won the race; the next attempt finds or redraws.
            continue
    raise AlreadyExists("The enrolment conflicted repeatedly; retry it.")


def _create(session: Session, partner_id: int, email: str | None, name: str | None,
            birth_date: date | None, activation_code_hash: str | None = None) -> int:
    rules = load_rules(session)
    member_id: int = session.execute(
        insert(Member.__table__).values(
            member_number=numbers.new_number(), status="active",
            tier=rules["tiers"][0]["code"], email=email, name=name, birth_date=birth_date,
            enrolled_by=partner_id, created_at=clock.utcnow(),
            activation_code_hash=activation_code_hash,
        ).returning(literal_column("id"))
    ).scalar_one()
    session.execute(insert(Wallet.__table__).values(
        member_id=member_id, available=0, pending=0, held=0, version=0))
    book_welcome_bonus(session, member_id, rules)  # in the enrolment's unit of work
    return member_id


def _link(session: Session, partner_id: int, ref: str, member_id: int, *,
          email: str | None = None, name: str | None = None,
          birth_date: date | None = None) -> None:
    session.execute(insert(MemberLink.__table__).values(
        partner_id=partner_id, partner_member_ref=ref, member_id=member_id,
        created_at=clock.utcnow(), email=email, name=name, birth_date=birth_date))


# --------------------------------------------------------------------------- consents


def consents(member_id: int) -> list[dict[str, Any]]:
    """Every partner, and whether the member shares their personal data with it."""
    with read() as session:
        shared = dict(session.execute(
            select(MemberConsent.partner_id, MemberConsent.granted_at)
            .where(MemberConsent.member_id == member_id)).all())
        partners = session.execute(select(Partner.id, Partner.code, Partner.name)
                                   .order_by(Partner.code)).all()
        return [{"partner": code, "partner_name": name, "share": pid in shared,
                 "granted_at": shared.get(pid)} for pid, code, name in partners]


def set_consent(member_id: int, partner_code: str, share: bool) -> dict[str, Any]:
    """Share the member's name, e-mail and birth date with a partner, or stop sharing
    them (idempotent either way). Returns the consent as it stands."""

    def attempt() -> dict[str, Any]:
        with UnitOfWork() as uow:
            session = uow.session
            partner = session.execute(select(Partner.id, Partner.code, Partner.name)
                                      .where(Partner.code == partner_code)).first()
            if partner is None:
                raise NotFound(f"No partner {partner_code!r}.",
                               errors={"partner": ["No such partner."]})
            member = session.get(Member, member_id)
            if member is None:
                raise NotFound("No such member.")
            if member.status != "active":
                raise MemberClosed(f"Member {member.member_number} is {member.status}.")
            current = session.get(MemberConsent, (member_id, partner.id))
            if share and current is None:
                current = MemberConsent(member_id=member_id, partner_id=partner.id,
                                        granted_at=clock.utcnow())
                session.add(current)
            elif not share and current is not None:
                session.execute(delete(MemberConsent.__table__).where(
                    MemberConsent.member_id == member_id,
                    MemberConsent.partner_id == partner.id))
                current = None
            body = {"partner": partner.code, "partner_name": partner.name,
                    "share": current is not None,
                    "granted_at": current.granted_at if current else None}
            uow.commit()
            return body

    try:
        return run_with_retries(attempt)
    except IntegrityError:
        # the same consent given twice at once: the other one is in; answer with it
        return run_with_retries(attempt)


def get_member(partner_id: int, identity: dict[str, Any]) -> dict[str, Any]:
    with read() as session:
        member = find_member(session, partner_id, identity.get("member_number"),
                             identity.get("partner_member_ref"))
        return _describe(session, member.id, partner_id)


_w = Wallet.__table__.c
_m = Member.__table__.c


def _balance_read(by_ref: bool) -> Prepared:
    """The member named by number or by the partner's reference, with its wallet and its
    first ``:dates`` expiry dates (a row a date; one row with no date when nothing
    expires): one statement, so one moment, without a transaction of its own."""
    member = member_query(by_ref)
    dates = dates_of(member.with_only_columns(_m.id).scalar_subquery()).subquery("dates")
    return Prepared(member.outerjoin(Wallet.__table__, _w.member_id == _m.id)
                    .outerjoin(dates, true())
                    .add_columns(_w.available, _w.pending, _w.held, dates.c.moment,
                                 dates.c.points))


_BALANCE_READ = {by_ref: _balance_read(by_ref) for by_ref in (False, True)}


def balance(partner_id: int, identity: dict[str, Any], limit: int = 12) -> dict[str, Any]:
    """Balances, the tier, and live points grouped by the date they expire (from a
    replica, when one is configured: the answer to a booking carries its own balance).
    One statement (:func:`_balance_read`); a member the replica does not know yet (enrolled
    a moment ago) is read from the primary."""
    statement = _BALANCE_READ[identity.get("member_number") is None]
    params = {**member_params(partner_id, identity), "dates": limit}
    for replica in (True, False):
        with read_once(replica=replica) as connection:
            rows = statement.rows(connection, params)
        if rows:
            break
    else:
        with read() as session:
            find_member(session, partner_id, identity.get("member_number"),
                        identity.get("partner_member_ref"))  # raises NotFound
        raise AssertionError("unreachable: the member was not found a moment ago")
    row = rows[0]
    # a date a row, put in order here: no sort in the plan
    dates = sorted((r.moment, r.points) for r in rows if r.moment is not None)
    return {
        "member_number": row.member_number,
        "available": row.available or 0,
        "pending": row.pending or 0,
        "held": row.held or 0,
        "expiring": by_date(dates, limit),
        "tier": row.tier,
    }
