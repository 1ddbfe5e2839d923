"""The plans on sale: part of the versioned program rules (``memberships``), read here."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from coalition.errors import InvalidRequest
from coalition.money import round_money
from coalition.program.service import Rules, current_rules


@dataclass(frozen=True)
class Plan:
    code: str
    name: str
    description: str
    price_points: int | None
    price_amount: Decimal | None
    price_currency: str | None
    period_months: int
    multiplier: Decimal
    auto_renew_default: bool

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "name": self.name, "description": self.description,
                "price_points": self.price_points,
                "price": None if self.price_amount is None or self.price_currency is None
                else {"amount": round_money(self.price_amount, self.price_currency),
                      "currency": self.price_currency},
                "period_months": self.period_months, "multiplier": self.multiplier,
                "auto_renew_default": self.auto_renew_default}


def _plan(values: dict[str, Any]) -> Plan:
    price = values.get("price")
    return Plan(code=values["code"], name=values["name"],
                description=values.get("description", ""),
                price_points=values.get("price_points"),
                price_amount=price["amount"] if price else None,
                price_currency=price["currency"] if price else None,
                period_months=values["period_months"],
                multiplier=values.get("multiplier", Decimal(1)),
                auto_renew_default=values.get("auto_renew_default", False))


def plans(rules: Rules) -> list[Plan]:
    """The plans of these rules, in their published order."""
    return [_plan(values) for values in rules.values.get("memberships", [])]


def plan_of(rules: Rules, code: str, field_name: str = "plan") -> Plan:
    """The plan ``code`` of these rules, or ``invalid_request`` on ``field_name``."""
    for plan in plans(rules):
        if plan.code == code:
            return plan
    message = f"No membership plan {code!r}."
    raise InvalidRequest(message, errors={field_name: [message]})


def plans_on_sale() -> dict[str, Any]:
    """The plans of the rules in force, with their version: ``GET /v1/program/memberships``."""
    rules = current_rules()
    return {"version": rules.version, "plans": [plan.to_dict() for plan in plans(rules)]}
