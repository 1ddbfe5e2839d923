"""A partner's history of bookings, newest first, paged with an opaque cursor.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from sqlalchemy import and_, select

from coalition.db import read
from coalition.errors import (
    InvalidRequest,
    NotFound,
)
from coalition.ledger.booking import partner_ref
from coalition.ledger.models import (
    TRANSACTION_TYPES,
    Entry,
    Member,
)
from coalition.ledger.rendering import render_transaction


def encode_cursor(entry_id: int) -> str:
    return base64.urlsafe_b64encode(f"e{entry_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not text.startswith("e") or not (text[1:].isascii() and text[1:].isdigit()):
            raise ValueError(text)
        entry_id = int(text[1:])
        if entry_id >= 2**63:  # beyond any 64-bit id: the driver would overflow (500)
            raise ValueError(text)
        return entry_id
    except (ValueError, UnicodeDecodeError, binascii.Error) as exc:
        raise InvalidRequest("Not a cursor from this API.",
                             errors={"cursor": ["Not a valid cursor."]}) from exc


def list_transactions(partner_id: int, filters: dict[str, Any]) -> dict[str, Any]:
    """The partner's own transactions, newest first, a page at a time."""
    limit = filters.get("limit", 50)
    with read() as session:
        partner = partner_ref(session, partner_id)
        query = select(Entry).where(Entry.partner_id == partner_id,
                                    Entry.kind.in_(TRANSACTION_TYPES))
        if filters.get("type"):
            query = query.where(Entry.kind == filters["type"])
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
                 Entry.kind.in_(TRANSACTION_TYPES))))
        if entry is None:
            raise NotFound(f"No transaction {transaction_id}.")
        return render_transaction(session, entry, partner_ref(session, partner_id).code)
