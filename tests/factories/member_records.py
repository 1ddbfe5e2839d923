"""Helpers for the member operation tests (not a test module)."""

from __future__ import annotations

import json
import secrets
from typing import Any

from sqlalchemy import select

from coalition.db import UnitOfWork
from coalition.ledger.check import check_ledger
from coalition.ledger.models import Entry, Lot, Member, MemberLink, Posting
from coalition.oauth.models import OAuthClient, OAuthToken, digest
from tests.factories.tokens import bearer

MEMBER_APP = "member-app-test"


def member_id(number: str) -> int:
    with UnitOfWork(readonly=True) as uow:
        return uow.session.scalars(select(Member.id).where(Member.member_number == number)).one()


def member_row(number: str) -> Member:
    with UnitOfWork(readonly=True) as uow:
        return uow.session.scalars(select(Member).where(Member.member_number == number)).one()


def member_token(number: str) -> dict[str, str]:
    """Headers with a fresh member token (kind public, scope member) for the member, as
    the sign-in flow would issue it."""
    token = secrets.token_urlsafe(32)
    with UnitOfWork() as uow:
        s = uow.session
        client = s.scalar(select(OAuthClient).where(OAuthClient.client_id == MEMBER_APP))
        if client is None:
            client = OAuthClient(client_id=MEMBER_APP, secret_hash=None, kind="public",
                                 redirect_uris="https://app.example/callback",
                                 name="member app", scope="member")
            s.add(client)
            s.flush()
        s.add(OAuthToken(client_pk=client.id, client_id=MEMBER_APP, kind="public",
                         partner_id=None, member_id=member_id(number),
                         access_token_hash=digest(token), scope="member", expires_in=3600))
        uow.commit()
    return bearer(token)


def assert_clean() -> None:
    report = check_ledger()
    assert report.ok, json.dumps(report.to_dict(), default=str, indent=1)


def entries_of(member: int, kind: str) -> list[Entry]:
    with UnitOfWork(readonly=True) as uow:
        return list(uow.session.scalars(select(Entry).where(
            Entry.member_id == member, Entry.kind == kind).order_by(Entry.id)))


def postings_of(entry_id: int) -> list[tuple[str, int | None, int | None, int]]:
    with UnitOfWork(readonly=True) as uow:
        return sorted(tuple(r) for r in uow.session.execute(
            select(Posting.account, Posting.member_id, Posting.partner_id, Posting.points)
            .where(Posting.entry_id == entry_id)))


def lots_of(member: int) -> list[dict[str, Any]]:
    with UnitOfWork(readonly=True) as uow:
        return [dict(r._mapping) for r in uow.session.execute(
            select(Lot.id, Lot.origin_partner_id, Lot.source, Lot.points, Lot.remaining,
                   Lot.state, Lot.earned_at, Lot.expires_at, Lot.entry_id)
            .where(Lot.member_id == member).order_by(Lot.id))]


def links_of(member: int) -> list[tuple[int, str]]:
    with UnitOfWork(readonly=True) as uow:
        return sorted(tuple(r) for r in uow.session.execute(
            select(MemberLink.partner_id, MemberLink.partner_member_ref)
            .where(MemberLink.member_id == member)))


#: the personal columns of a member row
PERSONAL = ("name", "email", "birth_date")


def link_data() -> dict[str, tuple[Any, ...]]:
    """What each partner supplied on each of its links, by reference, with the member."""
    with UnitOfWork(readonly=True) as uow:
        return {r.partner_member_ref: (r.member_number, r.name, r.email,
                                       r.birth_date and str(r.birth_date))
                for r in uow.session.execute(
                    select(MemberLink.partner_member_ref, Member.member_number,
                           MemberLink.name, MemberLink.email, MemberLink.birth_date)
                    .join(Member, Member.id == MemberLink.member_id))}


def personal_data() -> dict[str, tuple[Any, ...]]:
    """Every member row's personal data and sign-in secrets, by member number."""
    with UnitOfWork(readonly=True) as uow:
        return {r.member_number: (r.name, r.email, r.birth_date and str(r.birth_date),
                                  r.password_hash is not None,
                                  r.activation_code_hash is not None)
                for r in uow.session.scalars(select(Member))}
