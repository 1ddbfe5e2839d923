"""Batch files."""

from __future__ import annotations


def book_some() -> bool:
    """Book the next rows of the oldest batch waiting; whether there were any."""
    return False
