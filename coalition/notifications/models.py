"""What a member is told and by which road: ``notification`` (their inbox, one row per
member and event), ``notification_email`` (the outbox of e-mails, one per notification at
most, with its attempts) and ``notification_consent`` (every choice a member made about
e-mails, never changed: the latest per choice is in force)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from coalition.db import PK, Base, BigId, Timestamp, utcnow

#: what a member can be told about
KINDS = ("points_expiring", "tier_changed", "redemption", "offer", "membership",
         "claim_answered")

#: the e-mails a member chooses, each with the kinds it covers, its default and whether it
#: is marketing (sent only with the member's consent) or service (about the member's own
#: account, on unless the member turns it off)
CHOICES: dict[str, dict[str, Any]] = {
    "email_offers": {"kinds": ("offer",), "default": False, "marketing": True,
                     "label": "New offers and promotions from our partners"},
    "email_expiry": {"kinds": ("points_expiring",), "default": True, "marketing": False,
                     "label": "Points about to expire (30 and 7 days before)"},
    "email_tier": {"kinds": ("tier_changed",), "default": True, "marketing": False,
                   "label": "Changes of your tier"},
    "email_account": {"kinds": ("redemption", "membership", "claim_answered"),
                      "default": True, "marketing": False,
                      "label": "Your redemptions, memberships and missing-points claims"},
}
#: kind → the choice that covers it
CHOICE_OF = {kind: name for name, choice in CHOICES.items() for kind in choice["kinds"]}

#: how a choice was made
CONSENT_SOURCES = ("api", "page", "unsubscribe_link", "one_click")

EMAIL_STATUSES = ("pending", "sent", "skipped", "failed")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN (" + ", ".join(f"'{v}'" for v in values) + ")"


class Notification(Base):
    __tablename__ = "notification"
    __table_args__ = (
        # one notification per member and event, however often the event is reported
        UniqueConstraint("member_id", "key"),
        Index("ix_notification_member_id_id", "member_id", "id"),
        CheckConstraint(_in("kind", KINDS), name="kind"),
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


class NotificationEmail(Base):
    """The e-mail of one notification, written with it: so at most one per member and
    event. Due at ``next_attempt_at`` while pending (a sender that takes it pushes that past
    its attempt, so one killed mid-attempt is tried again); whether it is sent at all
    (an address, the member's choice, an open account) is decided when it is taken."""

    __tablename__ = "notification_email"
    __table_args__ = (
        CheckConstraint(_in("status", EMAIL_STATUSES), name="status"),
        Index("ix_notification_email_due", "status", "next_attempt_at"),
    )

    id: Mapped[PK]
    notification_id: Mapped[int] = mapped_column(BigId, ForeignKey("notification.id"),
                                                 unique=True)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[Timestamp]
    next_attempt_at: Mapped[Timestamp]
    #: until when it is retried (set from the configured retry time)
    give_up_at: Mapped[Timestamp]
    sent_at: Mapped[Timestamp | None]
    #: why it was not sent (``no_address``, ``not_wanted``, ``member_closed``,
    #: ``member_merged``: the survivor is told of what happens from then on)
    reason: Mapped[str | None] = mapped_column(String(32))


class NotificationEmailAttempt(Base):
    __tablename__ = "notification_email_attempt"

    id: Mapped[PK]
    email_id: Mapped[int] = mapped_column(BigId, ForeignKey("notification_email.id"),
                                          index=True)
    started_at: Mapped[Timestamp]
    duration_ms: Mapped[int] = mapped_column(Integer)
    #: the SMTP server's answer, or why it could not be reached
    error: Mapped[str | None] = mapped_column(String(500))


class NotificationConsent(Base):
    """A member's choice about one kind of e-mail, when and how it was made; never changed
    (a new choice is a new row)."""

    __tablename__ = "notification_consent"
    __table_args__ = (
        CheckConstraint(_in("choice", tuple(CHOICES)), name="choice"),
        CheckConstraint(_in("source", CONSENT_SOURCES), name="source"),
        Index("ix_notification_consent_member_id_choice_id", "member_id", "choice", "id"),
    )

    id: Mapped[PK]
    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("member.id"))
    choice: Mapped[str] = mapped_column(String(32))
    granted: Mapped[bool] = mapped_column(Boolean)
    source: Mapped[str] = mapped_column(String(32))
    at: Mapped[Timestamp]
