"""Funding: what a partner's issued points are paid with."""

from __future__ import annotations

from sqlalchemy.orm import Session


def change(session: Session, partner_id: int, points: int, model: str) -> None:
    """Use (negative) or give back (positive) funding for points the partner issues."""
