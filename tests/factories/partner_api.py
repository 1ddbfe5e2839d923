"""Helpers shared by the partner API tests (not a test module)."""

from __future__ import annotations

import copy
from http import HTTPStatus
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from werkzeug.test import TestResponse

from coalition.db import db

#: program rules most tests publish: no pending days, points expire 12 months after earn
RULES: dict[str, Any] = {
    "pending_days": 0,
    "expiry": {"policy": "fixed", "months": 12},
    "tiers": [
        {"code": "blue", "name": "Blue", "threshold": 0, "multiplier": "1"},
        {"code": "silver", "name": "Silver", "threshold": 100, "multiplier": "2"},
    ],
    "holds": {"default_seconds": 900, "max_seconds": 3600},
}

TRANSACTION_KEYS = {"id", "type", "partner", "member_number", "partner_txn_id", "points",
                    "status", "booked_at", "occurred_at", "balance"}


def publish(client: FlaskClient, operator_headers: dict[str, str], **changes: Any) -> None:
    rules = copy.deepcopy(RULES)
    rules.update(changes)
    response = client.put("/v1/admin/program", json=rules, headers=operator_headers)
    assert response.status_code == 200, response.get_json()


def luhn_ok(number: str) -> bool:
    """An independent Luhn check (the whole number, check digit included)."""
    if not (number.isascii() and number.isdigit()):
        return False
    total = 0
    for index, char in enumerate(reversed(number)):
        digit = int(char)
        if index % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def bad_check_digit(number: str) -> str:
    return number[:-1] + str((int(number[-1]) + 1) % 10)


def enrol(client: FlaskClient, headers: dict[str, str], ref: str, **fields: Any) -> str:
    response = client.post("/v1/members", json={"partner_member_ref": ref, **fields},
                           headers=headers)
    assert response.status_code in (200, 201), response.get_json()
    return response.get_json()["member_number"]


def post_ok(client: FlaskClient, path: str, headers: dict[str, str], body: dict[str, Any],
            status: int = 201) -> dict[str, Any]:
    response = client.post(path, json=body, headers=headers)
    assert response.status_code == status, response.get_json()
    return response.get_json()


def earn(client: FlaskClient, headers: dict[str, str], member: str, txn: str,
         points: int | None = None, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"member_number": member, "partner_txn_id": txn, **fields}
    if points is not None:
        body["points"] = points
    return post_ok(client, "/v1/earn", headers, body)


def burn(client: FlaskClient, headers: dict[str, str], member: str, txn: str,
         points: int, **fields: Any) -> dict[str, Any]:
    return post_ok(client, "/v1/burn", headers,
                   {"member_number": member, "partner_txn_id": txn, "points": points, **fields})


def hold(client: FlaskClient, headers: dict[str, str], member: str, txn: str,
         points: int, **fields: Any) -> dict[str, Any]:
    return post_ok(client, "/v1/holds", headers,
                   {"member_number": member, "partner_txn_id": txn, "points": points, **fields})


def balance(client: FlaskClient, headers: dict[str, str], member: str) -> dict[str, Any]:
    response = client.get(f"/v1/members/{member}/balance", headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def assert_error(response: TestResponse, status: int, error: str,
                 fields: set[str] | None = None) -> dict[str, Any]:
    """The one error shape, with this status and machine code (and these field errors)."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) <= {"code", "status", "message", "error", "errors"}, body
    assert body["code"] == status
    assert body["status"] == HTTPStatus(status).phrase
    assert isinstance(body["message"], str) and body["message"]
    assert body["error"] == error, body
    if fields is not None:
        assert set(body.get("errors") or {}) == fields, body
    return body


def set_member_status(app: Flask, number: str, status: str) -> None:
    with db.engine.begin() as conn:
        changed = conn.execute(text("UPDATE member SET status = :s WHERE member_number = :n"),
                               {"s": status, "n": number}).rowcount
    assert changed == 1
