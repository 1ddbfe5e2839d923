"""Who pays whom: the run's money model turns the statements into payment instructions.

- ``operator``: the coalition is every partner's counterparty. A partner's statement is
  what it owes the coalition or is owed (issue price of its points issued, redeem rate of
  the points spent there); one instruction per partner and currency settles its net.
- ``clearing``: partners settle with each other. Partner a's statement lines are its
  obligations for its points spent at b (at b's redeem rate), what others owe it for
  theirs spent at a, and the coalition's fee: the difference to the operator figures
  (issue price of the points a issued, less what a pays other partners for them; the
  redemption value of points spent at a that no partner pays for: a's own, the
  coalition's bonuses, points of a partner in another currency). The payments are the
  multilateral netting of those obligations, at most n − 1 per currency.

Under both models a partner's net is the same, and its instructions in and out add up to
it to the cent; the coalition's position (its margin) is reported apart. Money a partner
collected for the coalition (paid memberships it sold) is a line it owes the coalition
under both (``collected``), settled with the coalition like the fee.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from coalition.money import money_str

COALITION = "coalition"
OPERATOR, CLEARING = "operator", "clearing"
MODELS = (OPERATOR, CLEARING)


@dataclass(frozen=True)
class Settlement:
    statements: list[dict[str, Any]]
    #: what is settled: partner ↔ coalition (operator), or between partners and the
    #: coalition's fees (clearing)
    obligations: list[dict[str, Any]]
    #: each partner's position (positive: it is owed): its statement's net
    positions: list[dict[str, Any]]
    payments: list[dict[str, Any]]
    #: the coalition's own position per currency (positive: it is owed)
    coalition: list[dict[str, Any]]


def settle(model: str, statements: list[dict[str, Any]],
           between_partners: list[dict[str, Any]]) -> Settlement:
    """Statements in the run's model, the obligations they settle, and the payments.

    ``statements`` are the operator statements; ``between_partners`` the valued
    cross-partner matrix (a → b: a's points spent at b, at b's redeem rate, in b's
    currency).
    """
    if model == OPERATOR:
        obligations = [_with_coalition(s["partner"], Decimal(s["net"]), s["currency"])
                       for s in statements if Decimal(s["net"])]
        statements = [{**s, "model": model} for s in statements]
        payments = [{k: o[k] for k in ("from", "to", "amount", "currency")}
                    for o in obligations]
    elif model == CLEARING:
        currency = {s["partner"]: s["currency"] for s in statements}
        direct = [_payer_first(o) for o in between_partners
                  if o["from"] != COALITION and currency.get(o["from"]) == o["currency"]]
        statements = [_clearing_statement(s, direct) for s in statements]
        fees = [_with_coalition(s["partner"], _fee(s), s["currency"])
                for s in statements if _fee(s)]
        collected = [_with_coalition(s["partner"], -Decimal(s["collected"]), s["currency"])
                     for s in statements if "collected" in s]
        obligations = direct + fees + collected
        _, payments = settle_positions(obligations)
    else:
        raise ValueError(f"unknown money model {model!r}")
    coalition: dict[str, Decimal] = defaultdict(Decimal)
    for s in statements:
        coalition[s["currency"]] -= Decimal(s["net"])
    return Settlement(
        statements=statements,
        obligations=obligations,
        positions=[{"party": s["partner"], "currency": s["currency"], "amount": s["net"]}
                   for s in sorted(statements, key=lambda s: (s["currency"], s["partner"]))],
        payments=[{**p, "model": model} for p in payments],
        coalition=[{"currency": c, "amount": money_str(a)} for c, a in sorted(coalition.items())],
    )


def _payer_first(o: dict[str, Any]) -> dict[str, Any]:
    """An obligation of a negative amount (a burn given back after the redeem rate rose)
    is one the other way round."""
    if Decimal(o["amount"]) >= 0:
        return o
    return {**o, "from": o["to"], "to": o["from"], "points": -o["points"],
            "amount": money_str(-Decimal(o["amount"]))}


def _with_coalition(partner: str, net: Decimal, currency: str) -> dict[str, Any]:
    """One obligation between a partner and the coalition for ``net`` (positive: the
    coalition pays the partner)."""
    payer, payee = (COALITION, partner) if net > 0 else (partner, COALITION)
    return {"from": payer, "to": payee, "points": None, "amount": money_str(abs(net)),
            "currency": currency}


def _clearing_statement(s: dict[str, Any], direct: list[dict[str, Any]]) -> dict[str, Any]:
    """The statement of a partner that settles its cross-partner obligations itself: one
    line per counterparty and direction, then the coalition's fee; the lines add up to the
    same net as the operator statement."""
    lines = []
    settled = Decimal(0)
    for o in direct:
        if s["partner"] not in (o["from"], o["to"]):
            continue
        owes = o["from"] == s["partner"]
        amount = Decimal(o["amount"])
        settled += -amount if owes else amount
        lines.append({"type": "owes" if owes else "owed",
                      "counterparty": o["to"] if owes else o["from"],
                      "points": o["points"], "rate": None, "rate_valid_from": None,
                      "amount": o["amount"]})
    collected = Decimal(s.get("collected", 0))
    if collected:
        settled -= collected
        lines.append({"type": "collected", "counterparty": COALITION, "points": None,
                      "rate": None, "rate_valid_from": None, "amount": s["collected"]})
    fee = Decimal(s["net"]) - settled
    if fee:
        lines.append({"type": "fee_receivable" if fee > 0 else "fee_payable",
                      "counterparty": COALITION, "points": None, "rate": None,
                      "rate_valid_from": None, "amount": money_str(abs(fee))})
    return {**s, "model": CLEARING, "lines": lines}


def _fee(s: dict[str, Any]) -> Decimal:
    """The coalition's fee line of a clearing statement (positive: the coalition pays)."""
    for line in s["lines"]:
        if line["type"] == "fee_receivable":
            return Decimal(line["amount"])
        if line["type"] == "fee_payable":
            return -Decimal(line["amount"])
    return Decimal(0)


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
    """Every party's net position per currency, and the instructions that settle them."""
    by_currency = net_positions(obligations)
    positions, payments = [], []
    for currency in sorted(by_currency):
        parties = by_currency[currency]
        positions += [{"party": p, "currency": currency, "amount": money_str(a)}
                      for p, a in sorted(parties.items())]
        payments += instructions(parties, currency)
    return positions, payments
