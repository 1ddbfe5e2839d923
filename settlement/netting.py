"""Multilateral netting: bilateral obligations → one position per party per currency →
at most n − 1 payment instructions per currency that settle every position exactly."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

from coalition.money import money_str


def net_positions(obligations: list[dict[str, Any]]) -> dict[str, dict[str, Decimal]]:
    """currency → party → amount (positive: the party is owed)."""
    positions: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for o in obligations:
        amount = Decimal(o["amount"])
        positions[o["currency"]][o["to"]] += amount
        positions[o["currency"]][o["from"]] -= amount
    return positions


def instructions(positions: dict[str, Decimal], currency: str) -> list[dict[str, Any]]:
    """Pay the largest debt into the largest claim until nothing is left.

    Each instruction clears at least one party, so n parties need at most n − 1. Ties are
    broken by party name, so the same positions always give the same instructions.
    """
    debtors = sorted(((-a, p) for p, a in positions.items() if a < 0), key=lambda x: (-x[0], x[1]))
    creditors = sorted(((a, p) for p, a in positions.items() if a > 0), key=lambda x: (-x[0], x[1]))
    result = []
    i = j = 0
    owed = [d for d, _ in debtors]
    due = [c for c, _ in creditors]
    while i < len(debtors) and j < len(creditors):
        amount = min(owed[i], due[j])
        result.append({"from": debtors[i][1], "to": creditors[j][1],
                       "amount": money_str(amount), "currency": currency})
        owed[i] -= amount
        due[j] -= amount
        if owed[i] == 0:
            i += 1
        if due[j] == 0:
            j += 1
    return result


def settle_positions(obligations: list[dict[str, Any]]
                     ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    by_currency = net_positions(obligations)
    positions, payments = [], []
    for currency in sorted(by_currency):
        parties = by_currency[currency]
        positions += [{"party": p, "currency": currency, "amount": money_str(a)}
                      for p, a in sorted(parties.items())]
        payments += instructions(parties, currency)
    return positions, payments
