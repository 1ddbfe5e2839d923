"""What the finance page draws: the net positions as bars and the cross-partner matrix as
a heat map, computed here as plain numbers so that the templates only place them (inline
SVG and an HTML table; no script, no inline style, which the pages' CSP forbids)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from settlement.compute import COALITION

# the bar chart's coordinate system (the SVG scales to the width it is given): three
# columns, the party's name (right-aligned), the bars either side of zero, the amount
# (right-aligned), so that no label ever collides with a bar
WIDTH = 440
LABEL_RIGHT = 100
PLOT_LEFT, PLOT_RIGHT = 112, 318
AMOUNT_RIGHT = 436
ROW, BAR, TOP = 34, 22, 10
#: colour steps of the heat map (CSS classes heat-0 … heat-8)
HEAT_LEVELS = 8


@dataclass(frozen=True)
class Bar:
    party: str
    amount: str  # as computed, a decimal string
    sign: int
    x: float
    width: float
    y: float
    text_y: float


@dataclass(frozen=True)
class BarChart:
    currency: str
    bars: list[Bar]
    zero_x: float
    height: int
    description: str
    width: int = WIDTH
    label_right: int = LABEL_RIGHT
    amount_right: int = AMOUNT_RIGHT


def _money(amount: Decimal) -> str:
    """``1234.5`` → ``1,234.50``-style, keeping every digit the figures have."""
    sign = "−" if amount < 0 else ""
    whole, _, fraction = f"{abs(amount):f}".partition(".")
    return f"{sign}{int(whole):,}" + (f".{fraction}" if fraction else "")


def position_charts(positions: list[dict[str, Any]]) -> list[BarChart]:
    """One diverging bar chart per currency: positive (to the right) a party is owed,
    negative (to the left) it pays."""
    by_currency: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in positions:
        by_currency[p["currency"]].append(p)
    charts = []
    for currency in sorted(by_currency):
        rows = by_currency[currency]
        amounts = [Decimal(p["amount"]) for p in rows]
        most = max(max(amounts, default=Decimal(0)), Decimal(0))
        least = min(min(amounts, default=Decimal(0)), Decimal(0))
        span = (most - least) or Decimal(1)
        plot = PLOT_RIGHT - PLOT_LEFT
        zero = PLOT_LEFT + float(-least / span) * plot
        bars = []
        for i, (p, amount) in enumerate(zip(rows, amounts, strict=True)):
            length = max(float(abs(amount) / span) * plot, 1.0 if amount else 0.0)
            y = TOP + i * ROW
            x = zero if amount >= 0 else zero - length
            bars.append(Bar(p["party"], p["amount"], (amount > 0) - (amount < 0), round(x, 2),
                            round(length, 2), y, y + BAR / 2 + 6))
        said = "; ".join(
            f"{p['party']} {'is owed' if a > 0 else 'pays' if a < 0 else 'is square at'} "
            f"{_money(abs(a))} {currency}" for p, a in zip(rows, amounts, strict=True))
        charts.append(BarChart(currency, bars, round(zero, 2), TOP * 2 + len(rows) * ROW,
                               f"Net position of each partner in {currency} (its statement's net): "
                               f"{said}."))
    return charts


@dataclass
class HeatMap:
    origins: list[str]
    redeemers: list[str]
    #: (origin, redeemer) → (points, level)
    cells: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    row_totals: dict[str, int] = field(default_factory=dict)
    column_totals: dict[str, int] = field(default_factory=dict)
    total: int = 0
    most: int = 0


def heat_map(cells: list[dict[str, Any]], partners: list[str]) -> HeatMap:
    """Rows: where the points were earned (and ``coalition`` for coalition-funded ones);
    columns: where they were redeemed. The level (0 … HEAT_LEVELS) grows with the points."""
    origins = sorted({c["origin"] for c in cells} | set(partners),
                     key=lambda code: (code == COALITION, code))
    redeemers = sorted({c["redeemed_at"] for c in cells} | set(partners))
    most = max((abs(c["points"]) for c in cells), default=0)
    result = HeatMap(origins, redeemers, most=most)
    for c in cells:
        points = int(c["points"])
        level = 0 if not points or not most else max(1, -(-abs(points) * HEAT_LEVELS // most))
        result.cells[(c["origin"], c["redeemed_at"])] = (points, level)
        result.row_totals[c["origin"]] = result.row_totals.get(c["origin"], 0) + points
        result.column_totals[c["redeemed_at"]] = (
            result.column_totals.get(c["redeemed_at"], 0) + points)
        result.total += points
    return result


def money(value: Any) -> str:
    """A decimal string for reading: thousands separated, a true minus sign."""
    return _money(Decimal(str(value)))
