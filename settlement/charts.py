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


# --------------------------------------------------------------------------- analytics

#: the analytics charts' coordinate system: the y axis's labels on the left, months along
#: the bottom, a legend under the plot
CHART_WIDTH, CHART_HEIGHT = 640, 260
PLOT_X0, PLOT_X1, PLOT_Y0, PLOT_Y1 = 64, 628, 14, 214
#: colour steps of series (CSS classes series-0 … series-7, told apart by more than hue)
SERIES = 8


@dataclass(frozen=True)
class Tick:
    value: int
    y: float


@dataclass(frozen=True)
class Series:
    name: str
    css: str
    points: str  # "x,y x,y …" for a polyline
    dots: list[tuple[float, float, int, str]]  # x, y, value, month


@dataclass(frozen=True)
class Segment:
    month: str
    partner: str
    css: str
    value: int
    x: float
    y: float
    width: float
    height: float


@dataclass
class MonthChart:
    """A chart over months: its series (lines) or segments (stacked bars), axis ticks,
    month labels, and a sentence saying what it shows for screen readers."""

    title: str
    description: str
    months: list[tuple[str, float]]
    ticks: list[Tick]
    legend: list[tuple[str, str]]
    series: list[Series] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    width: int = CHART_WIDTH
    height: int = CHART_HEIGHT
    x0: int = PLOT_X0
    x1: int = PLOT_X1
    y0: int = PLOT_Y0
    y1: int = PLOT_Y1


def _scale_top(most: int) -> int:
    """A round top for the y axis at or above ``most`` (1, 2 or 5 × a power of ten)."""
    if most <= 0:
        return 1
    power = 1
    while power * 10 <= most:
        power *= 10
    for step in (1, 2, 5, 10):
        if step * power >= most:
            return step * power
    return 10 * power


def _frame(months: list[str], most: int, band: bool) -> tuple[list[tuple[str, float]],
                                                              list[Tick], int, float]:
    top = _scale_top(most)
    step = (PLOT_X1 - PLOT_X0) / max(len(months), 1)
    xs = [(m, round(PLOT_X0 + step * (i + 0.5) if band or len(months) == 1 else
                    PLOT_X0 + (PLOT_X1 - PLOT_X0) * i / (len(months) - 1), 2))
          for i, m in enumerate(months)]
    ticks = [Tick(top * k // 4, round(PLOT_Y1 - (PLOT_Y1 - PLOT_Y0) * k / 4, 2))
             for k in range(5)]
    return xs, ticks, top, step


def _y(value: int, top: int) -> float:
    return round(PLOT_Y1 - (PLOT_Y1 - PLOT_Y0) * value / top, 2)


def points_lines(totals: list[dict[str, Any]]) -> MonthChart:
    """Points issued, redeemed and expired each month (the whole coalition), as lines."""
    months = [t["month"] for t in totals]
    names = (("issued", "Issued"), ("redeemed", "Redeemed"), ("expired", "Expired"))
    most = max((max(t[k], 0) for t in totals for k, _ in names), default=0)
    xs, ticks, top, _ = _frame(months, most, band=False)
    series = []
    for n, (key, label) in enumerate(names):
        dots = [(x, _y(max(t[key], 0), top), t[key], m)
                for (m, x), t in zip(xs, totals, strict=True)]
        series.append(Series(label, f"series-{n}", " ".join(f"{x},{y}" for x, y, _, _ in dots),
                             dots))
    said = "; ".join(f"{t['month']}: issued {t['issued']:,}, redeemed {t['redeemed']:,}, "
                     f"expired {t['expired']:,}" for t in totals)
    return MonthChart("Points issued, redeemed and expired each month",
                      f"Points per month across the coalition. {said}.", xs, ticks,
                      [(s.name, s.css) for s in series], series=series)


def issued_bars(rows: list[dict[str, Any]], months: list[str]) -> MonthChart:
    """Points issued each month, one stacked bar per month, a segment per partner."""
    partners = sorted({r["partner"] for r in rows if r["issued"] > 0},
                      key=lambda code: (code == COALITION, code))
    css = {p: f"series-{i % SERIES}" for i, p in enumerate(partners)}
    by_month: dict[str, dict[str, int]] = defaultdict(dict)
    for r in rows:
        if r["issued"] > 0:
            by_month[r["month"]][r["partner"]] = r["issued"]
    most = max((sum(v.values()) for v in by_month.values()), default=0)
    xs, ticks, top, step = _frame(months, most, band=True)
    width = round(min(step * 0.6, 48), 2)
    segments = []
    for month, x in xs:
        base = 0
        for partner in partners:
            value = by_month[month].get(partner, 0)
            if not value:
                continue
            y_top = _y(base + value, top)
            segments.append(Segment(month, partner, css[partner], value,
                                    round(x - width / 2, 2), y_top,
                                    width, round(_y(base, top) - y_top, 2)))
            base += value
    said = "; ".join(
        f"{m}: " + (", ".join(f"{p} {by_month[m][p]:,}" for p in partners
                              if by_month[m].get(p)) or "none")
        for m in months)
    return MonthChart("Points issued each month, by partner",
                      f"Points issued per month, stacked by partner. {said}.", xs, ticks,
                      [(p, css[p]) for p in partners], segments=segments)
