"""The "Missing points" form of the member page, parsed strictly by one schema: a partner,
the day of the purchase, what was spent (in the partner's currency) and the receipt's
reference."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from marshmallow import fields, validate

from coalition.claims.schemas import REFERENCE
from coalition.member.forms import PageForm

_AMOUNT = re.compile(r"[0-9]{1,9}(\.[0-9]{1,2})?")
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class FormAmount(fields.Field):
    """Money as typed: ``42.50``; never ``4e1``, ``-3`` or ``1,5``."""

    default_error_messages = {
        "required": "Enter what you spent.",
        "invalid": "Enter what you spent in digits, with up to two decimals (42.50).",
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Decimal:
        if not isinstance(value, str) or not value.strip():
            raise self.make_error("required")
        if not _AMOUNT.fullmatch(value.strip()) or Decimal(value) <= 0:
            raise self.make_error("invalid")
        return Decimal(value.strip())


class FormDay(fields.Field):
    """A day as a date input posts it (``2026-12-01``): the purchase, at midnight UTC."""

    default_error_messages = {"required": "Enter the day of the purchase.",
                              "invalid": "Enter the day of the purchase as YYYY-MM-DD."}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        if not isinstance(value, str) or not value:
            raise self.make_error("required")
        try:
            if not _DAY.fullmatch(value):
                raise ValueError(value)
            return datetime.fromisoformat(value).replace(tzinfo=UTC)
        except ValueError:
            raise self.make_error("invalid") from None


class ClaimForm(PageForm):
    partner = fields.String(required=True, validate=validate.Length(
        min=1, max=32, error="Choose the partner."),
        error_messages={"required": "Choose the partner."})
    occurred_on = FormDay(required=True)
    amount = FormAmount(required=True)
    receipt = fields.String(required=True, validate=REFERENCE, error_messages={
        "required": "Enter the reference printed on the receipt."})
