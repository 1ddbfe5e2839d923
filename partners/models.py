"""Partner operations tables: webhook endpoints and their outbox, batch files, funding.

The outbox (``webhook_event`` and one ``webhook_delivery`` per subscribed endpoint) is
written in the transaction of the booking it reports; the delivery worker only ever reads
it and records attempts. A batch keeps every row of its file, and each row's outcome is
written in the transaction that books it, so a booking killed half-way resumes at the
first row without one. A prepaid partner's remaining points are spread over a few
``funding_slot`` rows, so that its earns do not queue on one counter.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from coalition.db import PK, Base, BigId, ExactDecimal, Points, Timestamp, utcnow

#: what a partner can subscribe to (API.md "Partner operations")
EVENT_TYPES = ("transaction.booked", "transaction.reversed", "member.tier_changed",
               "funding.low", "statement.ready", "voucher.redeemed", "claim.opened")
DELIVERY_STATUSES = ("pending", "delivered", "failed")
BATCH_STATUSES = ("queued", "booking", "done")
ROW_OUTCOMES = ("booked", "replayed", "refused")
FUNDING_MODELS = ("prepaid", "postpaid")
BLOCK_KINDS = ("block", "reserve", "topup")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


# --------------------------------------------------------------------------- webhooks


class WebhookEndpoint(Base):
    __tablename__ = "webhook_endpoint"

    id: Mapped[PK]
    partner_id: Mapped[int] = mapped_column(BigId, ForeignKey("partner.id"), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    events: Mapped[list[str]] = mapped_column(JSON)
    #: the HMAC key: kept as given, since every delivery is signed with it
    secret: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[Timestamp] = mapped_column(default=utcnow)
    deleted_at: Mapped[Timestamp | None]


class WebhookEvent(Base):
    """One event, with the exact body every delivery of it sends."""

    __tablename__ = "webhook_event"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    partner_id: Mapped[int] = mapped_column(BigId, ForeignKey("partner.id"), index=True)
    type: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[Timestamp]
    body: Mapped[str] = mapped_column(Text)


class WebhookDelivery(Base):
    """An event to one endpoint: due at ``next_attempt_at`` while pending (a worker that
    takes it pushes that past its attempt, so one killed mid-attempt is retried)."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        CheckConstraint(_in("status", DELIVERY_STATUSES), name="status"),
        Index("ix_webhook_delivery_due", "status", "next_attempt_at"),
    )

    id: Mapped[PK]
    event_id: Mapped[str] = mapped_column(String(36), ForeignKey("webhook_event.id"),
                                          index=True)
    endpoint_id: Mapped[int] = mapped_column(BigId, ForeignKey("webhook_endpoint.id"),
                                             index=True)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[Timestamp]
    next_attempt_at: Mapped[Timestamp]
    #: until when this delivery is retried (set from the configured retry time)
    give_up_at: Mapped[Timestamp]
    delivered_at: Mapped[Timestamp | None]
    replay_of: Mapped[int | None] = mapped_column(BigId, ForeignKey("webhook_delivery.id"))


class WebhookAttempt(Base):
    __tablename__ = "webhook_attempt"

    id: Mapped[PK]
    delivery_id: Mapped[int] = mapped_column(BigId, ForeignKey("webhook_delivery.id"),
                                             index=True)
    started_at: Mapped[Timestamp]
    duration_ms: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(500))
    response: Mapped[str | None] = mapped_column(String(500))


# --------------------------------------------------------------------------- batch files


class Batch(Base):
    __tablename__ = "batch"
    __table_args__ = (CheckConstraint(_in("status", BATCH_STATUSES), name="status"),)

    id: Mapped[PK]
    partner_id: Mapped[int] = mapped_column(BigId, ForeignKey("partner.id"), index=True)
    status: Mapped[str] = mapped_column(String(16))
    rows: Mapped[int] = mapped_column(Integer)
    #: the scopes of the token that sent the file: a row needs what its API call would
    scopes: Mapped[str] = mapped_column(String(500))
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[Timestamp]
    finished_at: Mapped[Timestamp | None]


class BatchRow(Base):
    __tablename__ = "batch_row"
    __table_args__ = (CheckConstraint(_in("outcome", ROW_OUTCOMES), name="outcome"),)

    batch_id: Mapped[int] = mapped_column(BigId, ForeignKey("batch.id"), primary_key=True)
    line: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    partner_txn_id: Mapped[str] = mapped_column(String(200))
    fields: Mapped[dict[str, Any]] = mapped_column(JSON)
    outcome: Mapped[str | None] = mapped_column(String(16))
    transaction_id: Mapped[int | None] = mapped_column(BigInteger)
    error: Mapped[str | None] = mapped_column(String(64))
    message: Mapped[str | None] = mapped_column(String(500))


# --------------------------------------------------------------------------- funding


class PartnerFunding(Base):
    """How a partner pays for the points it issues. No row: post-paid without a limit."""

    __tablename__ = "partner_funding"
    __table_args__ = (
        CheckConstraint(_in("model", FUNDING_MODELS), name="model"),
        CheckConstraint("credit_limit_points IS NULL OR credit_limit_points >= 0",
                        name="credit_limit"),
    )

    partner_id: Mapped[int] = mapped_column(BigId, ForeignKey("partner.id"), primary_key=True,
                                            autoincrement=False)
    model: Mapped[str] = mapped_column(String(16))
    #: when the model took effect: the points a prepaid partner issued since then are what
    #: its blocks must cover
    since: Mapped[Timestamp]
    credit_limit_points: Mapped[int | None] = mapped_column(BigInteger)
    low_threshold_points: Mapped[int | None] = mapped_column(BigInteger)
    #: ``funding.low`` was raised and the balance has not gone back above the threshold
    low_raised: Mapped[bool] = mapped_column(Boolean, default=False)
    topup_points: Mapped[int | None] = mapped_column(BigInteger)
    topup_price: Mapped[Decimal | None] = mapped_column(ExactDecimal(24, 8))
    topup_currency: Mapped[str | None] = mapped_column(String(3))
    updated_at: Mapped[Timestamp]


class FundingBlock(Base):
    """Points a prepaid partner bought; a reserve block waits until the others run out."""

    __tablename__ = "funding_block"
    __table_args__ = (
        CheckConstraint(_in("kind", BLOCK_KINDS), name="kind"),
        CheckConstraint("points > 0", name="points"),
        CheckConstraint("price >= 0", name="price"),
    )

    id: Mapped[PK]
    partner_id: Mapped[int] = mapped_column(BigId, ForeignKey("partner.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    points: Mapped[Points]
    price: Mapped[Decimal] = mapped_column(ExactDecimal(24, 8))
    currency: Mapped[str] = mapped_column(String(3))
    bought_at: Mapped[Timestamp]
    #: when its points joined the partner's remaining balance (a reserve: when used)
    activated_at: Mapped[Timestamp | None]


class FundingSlot(Base):
    """One share of a prepaid partner's remaining points."""

    __tablename__ = "funding_slot"
    __table_args__ = (CheckConstraint("remaining >= 0", name="remaining"),)

    partner_id: Mapped[int] = mapped_column(BigId, ForeignKey("partner.id"), primary_key=True,
                                            autoincrement=False)
    slot: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    remaining: Mapped[Points]
