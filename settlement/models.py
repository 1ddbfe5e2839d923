"""Settlement tables: runs, partner reconciliations and their breaks.

A run's figures are computed from the journal alone and kept as one JSON document with
its digest: a draft can be recomputed and must give the same document; a closed run is
frozen (the database refuses to change it) and is what exports and partners read.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from coalition.db import PK, Base, BigId, Timestamp, utcnow

RUN_STATUSES = ("draft", "closed")
#: who pays whom: ``operator`` (every partner settles with the coalition) or ``clearing``
#: (partners settle their cross-partner obligations with each other)
MONEY_MODELS = ("operator", "clearing")
BREAK_CLASSES = ("points_mismatch", "missing_in_ledger", "missing_in_file",
                 "duplicated_in_file", "malformed")
BREAK_STATUSES = ("open", "accepted", "adjusted")


class SettlementRun(Base):
    __tablename__ = "settlement_run"
    __table_args__ = (
        CheckConstraint("status IN ('draft', 'closed')", name="status"),
        CheckConstraint("period_start < period_end", name="period"),
        CheckConstraint("model IN ('operator', 'clearing')", name="model"),
    )

    id: Mapped[PK]
    period_start: Mapped[Timestamp]
    period_end: Mapped[Timestamp]
    status: Mapped[str] = mapped_column(String(16), default="draft")
    #: the money model of the program rules when the run was created; part of ``result``
    model: Mapped[str] = mapped_column(String(16), default="operator",
                                       server_default="operator")
    created_at: Mapped[Timestamp] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(64))
    computed_at: Mapped[Timestamp]
    result: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: SHA-256 of the canonical JSON of ``result``: equal digests, equal figures
    result_digest: Mapped[str] = mapped_column(String(64))
    closed_at: Mapped[Timestamp | None]
    closed_by: Mapped[str | None] = mapped_column(String(64))
    #: the points liability at the period end, measured when the run was closed (a draft's
    #: is measured whenever it is asked for): a closed period's figures never change, even
    #: when the breakage prior is configured differently later
    liability: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Reconciliation(Base):
    """One upload of a partner's own record of the run's period."""

    __tablename__ = "settlement_reconciliation"
    __table_args__ = (Index("ix_settlement_reconciliation_run_partner", "run_id", "partner_id"),)

    id: Mapped[PK]
    run_id: Mapped[int] = mapped_column(BigId, ForeignKey("settlement_run.id"))
    partner_id: Mapped[int] = mapped_column(BigId, ForeignKey("partner.id"))
    uploaded_at: Mapped[Timestamp] = mapped_column(default=utcnow)
    uploaded_by: Mapped[str] = mapped_column(String(64))
    file_sha256: Mapped[str] = mapped_column(String(64))
    rows: Mapped[int] = mapped_column(Integer)
    #: a later upload for the same run and partner supersedes this one
    superseded: Mapped[bool] = mapped_column(default=False)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON)


class Break(Base):
    """A record on which the partner's file and the journal disagree."""

    __tablename__ = "settlement_break"
    __table_args__ = (
        CheckConstraint("kind IN ('points_mismatch', 'missing_in_ledger', 'missing_in_file', "
                        "'duplicated_in_file', 'malformed')", name="kind"),
        CheckConstraint("status IN ('open', 'accepted', 'adjusted')", name="status"),
        Index("ix_settlement_break_run_id_status", "run_id", "status"),
    )

    id: Mapped[PK]
    run_id: Mapped[int] = mapped_column(BigId, ForeignKey("settlement_run.id"))
    reconciliation_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("settlement_reconciliation.id"), index=True)
    partner_id: Mapped[int] = mapped_column(BigId, ForeignKey("partner.id"))
    kind: Mapped[str] = mapped_column(String(24))
    partner_txn_id: Mapped[str | None] = mapped_column(String(64))
    line: Mapped[int | None] = mapped_column(Integer, doc="line in the partner's file")
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="open")
    resolved_at: Mapped[Timestamp | None]
    resolved_by: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    adjustment_entry_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("entry.id"))


class Adjustment(Base):
    """The link from a correcting entry to the partner's transaction it corrects: a later
    upload of the partner's file shows that transaction as adjusted, and the next period
    matches the correcting entry instead of finding it missing in the file. One per
    partner transaction, so a difference is never corrected twice."""

    __tablename__ = "settlement_adjustment"
    __table_args__ = (
        UniqueConstraint("partner_id", "partner_txn_id"),
    )

    entry_id: Mapped[int] = mapped_column(BigId, ForeignKey("entry.id"), primary_key=True)
    partner_id: Mapped[int] = mapped_column(BigId, ForeignKey("partner.id"))
    #: the partner's transaction corrected (the partner_txn_id of the break)
    partner_txn_id: Mapped[str] = mapped_column(String(64))
    #: the break it resolved; the link outlives it when its draft run is deleted (the
    #: correcting entry stays in the journal, so the transaction stays corrected)
    break_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("settlement_break.id", ondelete="SET NULL"), unique=True)
    #: the signed change in the transaction's points (+50: the ledger now has 50 more)
    points: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[Timestamp] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(64))
