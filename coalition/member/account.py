"""What a member sees of their own account: one balance across every partner, the points
about to expire, where the points came from, the tier and the way to the next, and every
entry of the member's history.

These read the journal and the working state (wallet, lots, holds) in one read-only
transaction each, so that the figures on one answer agree with each other.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from coalition.clock import add_months
from coalition.db import read, replica_read, utcnow
from coalition.errors import NotFound
from coalition.ledger.expiring import by_date
from coalition.ledger.history import decode_cursor, encode_cursor
from coalition.ledger.lookup import member_entries, member_ids_of
from coalition.ledger.models import IS_LIVE_LOT, Entry, Hold, Lot, Member, Posting, Wallet
from coalition.ledger.tiers import qualifying_points
from coalition.ledger.transfers import sender_label
from coalition.models import Partner
from coalition.program.service import load_rules

#: the windows of "points expiring in the next N days"
EXPIRY_WINDOWS = (30, 60, 90)
#: points from no partner (bonuses, adjustments) are shown as the coalition's
COALITION = {"code": "coalition", "name": "Coalition"}

_ACCOUNT_FIELDS = {"member:available": "available", "member:pending": "pending",
                   "member:held": "held"}


def _member(session: Session, member_id: int) -> Member:
    member = session.get(Member, member_id)
    if member is None:
        raise NotFound("No such member.")
    return member


def _partners(session: Session, ids: set[int]) -> dict[int, tuple[str, str]]:
    if not ids:
        return {}
    rows = session.execute(select(Partner.id, Partner.code, Partner.name)
                           .where(Partner.id.in_(ids))).all()
    return {pid: (code, name) for pid, code, name in rows}


def _tier(session: Session, member: Member, rules: Any, now: datetime) -> dict[str, Any]:
    tiers = rules["tiers"]
    codes = [t["code"] for t in tiers]
    index = codes.index(member.tier) if member.tier in codes else 0
    current = tiers[index]
    qualifying, since = qualifying_points(session, member.id, now)
    following = tiers[index + 1] if index + 1 < len(tiers) else None
    return {
        "code": member.tier,
        "name": current["name"] if member.tier in codes else member.tier,
        "multiplier": current["multiplier"],
        "qualifying_points": qualifying,
        "window_start": since,
        "next_tier": None if following is None else {
            "code": following["code"], "name": following["name"],
            "threshold": following["threshold"], "multiplier": following["multiplier"]},
        "points_to_next_tier": None if following is None
        else max(0, following["threshold"] - qualifying),
    }


def _expiring(session: Session, member_id: int, wallet: Wallet | None, rules: Any,
              now: datetime) -> dict[str, Any]:
    """Live points by the date they expire, and within the next 30, 60 and 90 days."""
    expiry = rules["expiry"]
    lot = Lot.__table__.c
    dates: list[tuple[datetime, int]] = []
    if expiry["policy"] == "inactivity" and expiry.get("months"):
        # every live point goes at once, ``months`` after the member's last earn or burn
        last = wallet.last_activity_at if wallet else None
        live = session.scalar(select(func.coalesce(func.sum(lot.remaining), 0)).where(
            lot.member_id == member_id, IS_LIVE_LOT)) or 0
        if last is not None and live:
            dates.append((add_months(last, expiry["months"]), int(live)))
    else:
        # under ``fixed`` each lot has its date; after a switch to ``none`` the job expires
        # nothing, so nothing is shown as expiring
        if expiry["policy"] == "fixed":
            rows = session.execute(
                select(lot.expires_at, func.sum(lot.remaining))
                .where(lot.member_id == member_id, IS_LIVE_LOT,
                       lot.expires_at.is_not(None))
                .group_by(lot.expires_at).order_by(lot.expires_at)).all()
            dates = [(at, int(points)) for at, points in rows]
    windows = []
    for days in EXPIRY_WINDOWS:
        until = now + timedelta(days=days)
        windows.append({"days": days, "until": until,
                        "points": sum(p for at, p in dates if at <= until)})
    return {"policy": expiry["policy"], "windows": windows, "dates": by_date(dates)}


def summary(member_id: int) -> dict[str, Any]:
    """``GET /v1/me``: the unified balance (from a replica, when one is configured)."""
    now = utcnow()
    with replica_read() as session:
        member = _member(session, member_id)
        wallet = session.get(Wallet, member_id)
        rules = load_rules(session)
        lot, hold = Lot.__table__.c, Hold.__table__.c
        pending = session.execute(
            select(lot.pending_until, func.sum(lot.remaining))
            .where(lot.member_id == member_id, lot.state == "pending", lot.remaining > 0)
            .group_by(lot.pending_until).order_by(lot.pending_until)).all()
        holds = session.execute(
            select(hold.partner_id, hold.points, hold.expires_at)
            .where(hold.member_id == member_id, hold.status == "open")
            .order_by(hold.expires_at)).all()
        by_origin = session.execute(
            select(lot.origin_partner_id, func.sum(lot.remaining))
            .where(lot.member_id == member_id, IS_LIVE_LOT)
            .group_by(lot.origin_partner_id)).all()
        names = _partners(session, {p for p, _ in by_origin if p is not None}
                          | {h.partner_id for h in holds})
        breakdown: list[dict[str, Any]] = []
        for partner_id, points in by_origin:
            code, name = names[partner_id] if partner_id is not None else (
                COALITION["code"], COALITION["name"])
            breakdown.append({"partner": code, "name": name, "points": int(points)})
        breakdown.sort(key=lambda row: (-row["points"], row["partner"]))
        return {
            "member_number": member.member_number,
            "status": member.status,
            "name": member.name,
            "email": member.email,
            "member_since": member.created_at,
            "available": wallet.available if wallet else 0,
            "pending": wallet.pending if wallet else 0,
            "held": wallet.held if wallet else 0,
            "pending_releases": [{"points": int(points), "releases_at": at}
                                 for at, points in pending if at is not None],
            # the welcome bonus waits for the first earn from a spend, not for a date
            "awaiting_first_spend": sum(int(points) for at, points in pending if at is None),
            "holds": [{"partner": names[h.partner_id][0], "partner_name": names[h.partner_id][1],
                       "points": h.points, "expires_at": h.expires_at} for h in holds],
            "expiring": _expiring(session, member_id, wallet, rules, now),
            "by_partner": breakdown,
            "tier": _tier(session, member, rules, now),
            "as_of": now,
        }


def mask_name(name: str | None) -> str | None:
    """``Ada Lovelace`` → ``A** L*******``: enough for a sender to recognise a friend,
    not enough to learn a stranger's name."""
    if not name:
        return None
    return " ".join(word[0] + "*" * (len(word) - 1) for word in name.split())


def recipient(member_number: str) -> dict[str, Any]:
    """Who a transfer to ``member_number`` would reach, as the sender may see them."""
    with read() as session:
        member = session.scalar(select(Member).where(Member.member_number == member_number))
        if member is None or member.status != "active":
            raise NotFound(f"No active member has the number {member_number}.")
        return {"member_number": member.member_number, "masked_name": mask_name(member.name)}


def transactions(member_id: int, args: dict[str, Any]) -> dict[str, Any]:
    """``GET /v1/me/transactions``: every entry that touched the member's points, newest
    first, a page at a time (from a replica, when one is configured)."""
    limit = args.get("limit", 50)
    with replica_read() as session:
        _member(session, member_id)
        p = Posting.__table__.c
        # a merged member's history is the survivor's too
        ids = member_ids_of(member_id, session)
        query = select(Entry).where(member_entries(ids))
        if args.get("type"):
            query = query.where(Entry.kind == args["type"])
        if args.get("cursor"):
            query = query.where(Entry.id < decode_cursor(args["cursor"]))
        rows = session.scalars(query.order_by(Entry.id.desc()).limit(limit + 1)).all()
        page = rows[:limit]
        changes: dict[int, dict[str, int]] = defaultdict(
            lambda: {"available": 0, "pending": 0, "held": 0})
        if page:
            for entry_id, account, points in session.execute(
                    select(p.entry_id, p.account, func.sum(p.points))
                    .where(p.member_id.in_(ids), p.entry_id.in_([e.id for e in page]),
                           p.account.in_(tuple(_ACCOUNT_FIELDS)))
                    .group_by(p.entry_id, p.account)):
                changes[entry_id][_ACCOUNT_FIELDS[account]] += int(points)
        names = _partners(session, {e.partner_id for e in page if e.partner_id is not None})
        items = []
        for entry in page:
            change = changes[entry.id]
            own = entry.member_id == member_id and entry.available_after is not None
            code, name = names.get(entry.partner_id, (None, None)) \
                if entry.partner_id is not None else (None, None)
            # a transfer received: the sender's number and Idempotency-Key are its own
            received = entry.kind == "transfer" and entry.member_id not in ids
            items.append({
                "id": entry.id,
                "type": entry.kind,
                "partner": code,
                "partner_name": name,
                "points": entry.points,
                "change": change,
                "booked_at": entry.booked_at,
                "occurred_at": entry.occurred_at,
                "reference": entry.reference_id,
                "partner_txn_id": None if received else entry.partner_txn_id,
                "note": f"from {sender_label(session, entry)}" if received else entry.note,
                "balance": {"available": entry.available_after,
                            "pending": entry.pending_after,
                            "held": entry.held_after} if own else None,
            })
        more = len(rows) > limit
        return {"items": items,
                "next_cursor": encode_cursor(page[-1].id) if more else None}
