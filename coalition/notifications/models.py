"""``notification``: what a member is told (their inbox), one row per member and event."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from coalition.db import PK, Base, BigId, Timestamp, utcnow

#: what a member can be told about
KINDS = ("points_expiring", "tier_changed", "redemption", "offer", "membership",
         "claim_answered")


class Notification(Base):
    __tablename__ = "notification"
    __table_args__ = (
        # one notification per member and event, however often the event is reported
        UniqueConstraint("member_id", "key"),
        Index("ix_notification_member_id_id", "member_id", "id"),
        CheckConstraint("kind IN (" + ", ".join(f"'{k}'" for k in KINDS) + ")", name="kind"),
    )

    id: Mapped[PK]
    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("member.id"))
    kind: Mapped[str] = mapped_column(String(32))
    #: the event told about, unique per member: ``voucher:12``, ``expiry:2027-01-31:30``
    key: Mapped[str] = mapped_column(String(200))
    #: what the inbox and the e-mail show (points, dates, names); never a secret
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[Timestamp] = mapped_column(default=utcnow)
    read_at: Mapped[Timestamp | None]
