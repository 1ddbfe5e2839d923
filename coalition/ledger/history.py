"""A partner's history of bookings (and of the paid memberships it sold for money, which
move no points), newest first, paged with an opaque cursor."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, select

from coalition import cursor as paging
from coalition.db import read, replica_read
from coalition.errors import NotFound
from coalition.ledger.booking import partner_ref
from coalition.ledger.models import HISTORY_KINDS, Entry, Member
from coalition.ledger.rendering import render_transaction


def encode_cursor(entry_id: int) -> str:
    return paging.encode("e", entry_id)


def decode_cursor(text: str) -> int:
    return paging.decode("e", text)


def list_transactions(partner_id: int, filters: dict[str, Any]) -> dict[str, Any]:
    """The partner's own transactions, newest first, a page at a time (from a replica,
    when one is configured; one transaction asked for by its id is read from the primary,
    since its id came from the booking's answer)."""
    limit = filters.get("limit", 50)
    with replica_read() as session:
        partner = partner_ref(session, partner_id)
        query = select(Entry).where(Entry.partner_id == partner_id,
                                    Entry.kind.in_(HISTORY_KINDS.values()))
        if filters.get("type"):
            query = query.where(Entry.kind == HISTORY_KINDS[filters["type"]])
        if filters.get("member_number"):
            query = query.where(Entry.member_id == select(Member.id).where(
                Member.member_number == filters["member_number"]).scalar_subquery())
        if filters.get("booked_from"):
            query = query.where(Entry.booked_at >= filters["booked_from"])
        if filters.get("booked_to"):
            query = query.where(Entry.booked_at < filters["booked_to"])
        if filters.get("cursor"):
            query = query.where(Entry.id < decode_cursor(filters["cursor"]))
        rows = session.scalars(query.order_by(Entry.id.desc()).limit(limit + 1)).all()
        items = [render_transaction(session, e, partner.code) for e in rows[:limit]]
        more = len(rows) > limit
        return {"items": items,
                "next_cursor": encode_cursor(rows[limit - 1].id) if more else None}


def get_transaction(partner_id: int, transaction_id: int) -> dict[str, Any]:
    with read() as session:
        entry = session.scalar(select(Entry).where(
            and_(Entry.id == transaction_id, Entry.partner_id == partner_id,
                 Entry.kind.in_(HISTORY_KINDS.values()))))
        if entry is None:
            raise NotFound(f"No transaction {transaction_id}.")
        return render_transaction(session, entry, partner_ref(session, partner_id).code)
