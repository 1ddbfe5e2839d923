"""What a notification says, in words: one title and one sentence per kind, read by the
inbox (API and member page) and the e-mail alike. A use case may give its own ``title``
and ``text`` in the notification's data; otherwise they are made from the kind's fields."""

from __future__ import annotations

from datetime import date
from typing import Any


def _points(value: Any) -> str:
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return str(value)


def _day(value: Any) -> str:
    try:
        return date.fromisoformat(str(value)[:10]).strftime("%-d %B %Y")
    except ValueError:
        return str(value)


def _tier(value: Any) -> str:
    return str(value or "").replace("_", " ").title()


def title(kind: str, data: dict[str, Any]) -> str:
    if data.get("title"):
        return str(data["title"])
    if kind == "points_expiring":
        return f"{_points(data.get('points'))} points expire on {_day(data.get('date'))}"
    if kind == "tier_changed":
        return f"You are now {data.get('to_name') or _tier(data.get('to'))}"
    return {
        "redemption": "Your reward is ready",
        "offer": "A new offer for you",
        "membership": "Your membership",
        "claim_answered": "Your missing-points claim was answered",
    }.get(kind, "News about your points")


def text(kind: str, data: dict[str, Any]) -> str:
    if data.get("text"):
        return str(data["text"])
    if kind == "points_expiring":
        return (f"{_points(data.get('points'))} of your points expire on "
                f"{_day(data.get('date'))}, in {data.get('days')} days. Spend them at any "
                f"partner before then to keep their value.")
    if kind == "tier_changed":
        moved = "up" if data.get("direction") == "up" else "down"
        old = data.get("from_name") or _tier(data.get("from"))
        new = data.get("to_name") or _tier(data.get("to"))
        return (f"Your tier moved {moved} from {old} to {new}, from the points you earned "
                f"over the last 12 months.")
    if kind == "redemption":
        reward = data.get("reward") or data.get("reward_name") or "your reward"
        points = f" for {_points(data['points'])} points" if data.get("points") else ""
        return f"You redeemed {reward}{points}. Your voucher is on your account page."
    if kind == "offer":
        name = data.get("name") or data.get("offer") or "A partner"
        return f"{name}: see your offers on your account page."
    if kind == "membership":
        plan = data.get("plan") or "your membership"
        return f"There is news about {plan}: see your account page."
    if kind == "claim_answered":
        partner = data.get("partner_name") or data.get("partner") or "the partner"
        status = data.get("status") or "answered"
        said = f"Your missing-points claim at {partner} was {status}"
        if status == "confirmed" and data.get("points"):
            return f"{said}: {_points(data['points'])} points are booked."
        if data.get("reason"):
            return f"{said}: {data['reason']}"
        return f"{said}."
    return "See your account page."
