"""Helpers shared by the settlement tests (not a test module).

Most settlement tests run on a hand-moved clock (a :class:`tests.factories.clock.HandClock`
held at :data:`T0`, the ``clock`` fixture of tests/settlement/conftest.py) set in the past:
boundaries can be hit to the microsecond, and nothing has to sleep. It is the whole app's
clock: the ledger's ``booked_at`` and hold expiry, member enrolment, tokens, and the
settlement service, which makes a run of a period only once the clock has passed its end.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from flask.testing import FlaskClient

from tests.factories.tokens import operator_headers_now, partner_reader  # noqa: F401

#: the start of the periods the tests settle: a whole second, long ago
T0 = datetime(2001, 3, 1, 9, 0, tzinfo=UTC)
CSV_HEADER = "partner_txn_id,type,member_number,points,occurred_at\n"


def cents(amount: Decimal) -> Decimal:
    """An independent spelling of the one rounding rule: half-even to 0.01 (GBP and EUR)."""
    return amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def create_run(client: FlaskClient, headers: dict[str, str], start: datetime,
               end: datetime) -> Any:
    return client.post("/v1/settlement/runs", headers=headers,
                       json={"period_start": iso(start), "period_end": iso(end)})


def run_ok(client: FlaskClient, headers: dict[str, str], start: datetime,
           end: datetime) -> dict[str, Any]:
    response = create_run(client, headers, start, end)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def upload(client: FlaskClient, headers: dict[str, str], run_id: int, partner: str,
           content: bytes | str, content_type: str = "text/csv") -> Any:
    data = content.encode() if isinstance(content, str) else content
    return client.post(f"/v1/settlement/runs/{run_id}/reconciliations/{partner}",
                       headers={**headers, "Content-Type": content_type}, data=data)


def csv_rows(*rows: tuple[Any, ...]) -> str:
    return CSV_HEADER + "".join(",".join(str(c) for c in row) + "\n" for row in rows)


def resolve(client: FlaskClient, headers: dict[str, str], run_id: int, break_id: int,
            action: str, reason: str = "checked with the partner", **extra: Any) -> Any:
    return client.post(f"/v1/settlement/runs/{run_id}/breaks/{break_id}", headers=headers,
                       json={"action": action, "reason": reason, **extra})


def without_volatile(run: dict[str, Any]) -> dict[str, Any]:
    """The run document less the moment it was computed (a recompute restamps it)."""
    return {k: v for k, v in run.items() if k != "computed_at"}
