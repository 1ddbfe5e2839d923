"""Shared marshmallow fields and schemas: the wire formats of API.md.

Points are JSON integers (never booleans, floats or strings); money and rates are decimal
strings (never JSON numbers, which would pass through a float); timestamps are RFC 3339 in
UTC, where a bare date means midnight UTC.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from coalition.ledger import numbers
from coalition.money import MAX_PLACES, MINOR_UNITS, canonical, money_str

#: the largest integer a JSON number carries exactly in every client
MAX_POINTS = 2**53 - 1

_DECIMAL_RE = re.compile(r"^[+-]?(\d+)(\.(\d+))?$")


class WholeMatch(validate.Regexp):
    """A pattern that must match the whole value. :class:`validate.Regexp` uses
    ``re.match``, where ``$`` also matches before a trailing newline, so ``"abc\\n"`` would
    pass ``^[a-z]+$``; the pattern (and so the OpenAPI ``pattern``) stays as written."""

    def __call__(self, value: Any) -> Any:
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


class StrictInteger(fields.Integer):
    """A JSON integer; booleans, floats and numeric strings are refused."""

    def _validated(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.make_error("invalid")
        return value


class StrictBoolean(fields.Boolean):
    """A JSON ``true`` or ``false``; ``1``, ``"yes"`` and ``"true"`` are refused."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class PointsField(StrictInteger):
    """A positive number of points, at most 2^53 − 1."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("validate", validate.Range(min=1, max=MAX_POINTS))
        super().__init__(**kwargs)


class MemberNumber(fields.String):
    """A 12-digit member number whose last digit is its Luhn check digit."""

    default_error_messages = {"luhn": "Not a valid member number (check the digits)."}

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("metadata", {}).setdefault("example", "400000000006")
        super().__init__(**kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if not numbers.is_valid(text):
            raise self.make_error("luhn")
        return text


class DecimalString(fields.Field):
    """An exact decimal carried as a JSON string, e.g. ``"0.0075"``."""

    default_error_messages = {
        "invalid": "Not a decimal string (digits with an optional '.'; no exponent).",
        "places": f"At most {MAX_PLACES} decimal places.",
        "negative": "Must not be negative.",
        "positive": "Must be greater than zero.",
        "too_large": "Too large.",
    }

    def __init__(self, *, positive: bool = False, places: int = MAX_PLACES,
                 max_digits: int = 16, **kwargs: Any) -> None:
        kwargs["metadata"] = {"type": "string", "pattern": r"^\d+(\.\d+)?$", "example": "1.25",
                              **kwargs.get("metadata", {})}
        super().__init__(**kwargs)
        self.positive = positive
        self.places = places
        self.max_digits = max_digits

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        return None if value is None else money_str(value)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Decimal:
        if not isinstance(value, str):
            raise self.make_error("invalid")
        match = _DECIMAL_RE.match(value.strip())
        if not match:
            raise self.make_error("invalid")
        if match.group(3) and len(match.group(3)) > self.places:
            raise self.make_error("places")
        if len(match.group(1).lstrip("0")) > self.max_digits:
            raise self.make_error("too_large")
        try:
            number = Decimal(value.strip())
        except InvalidOperation as exc:  # pragma: no cover - the pattern already matched
            raise self.make_error("invalid") from exc
        if number < 0:
            raise self.make_error("negative")
        if self.positive and number == 0:
            raise self.make_error("positive")
        return canonical(number)


_RFC3339 = r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})?"


def rfc3339(value: datetime) -> str:
    """The one way Coalition writes a moment: RFC 3339 in UTC, to the second
    (``2026-01-31T12:00:00Z``), in the API, the exports and the command line alike."""
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class UTCTimestamp(fields.Field):
    """RFC 3339 with an offset (converted to UTC), or a bare date meaning midnight UTC."""

    default_error_messages = {
        "invalid": "Not an RFC 3339 timestamp or a date (YYYY-MM-DD).",
        "naive": "A timestamp needs a UTC offset, e.g. 2026-01-31T12:00:00Z.",
    }

    def __init__(self, **kwargs: Any) -> None:
        kwargs["metadata"] = {"type": "string", "format": "date-time", **kwargs.get("metadata", {})}
        super().__init__(**kwargs)

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        if value is None:
            return None
        return rfc3339(value)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        if not isinstance(value, str):
            raise self.make_error("invalid")
        text = value.strip()
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            try:
                return datetime.combine(date.fromisoformat(text), time(), UTC)
            except ValueError as exc:
                raise self.make_error("invalid") from exc
        if not re.fullmatch(_RFC3339, text):
            raise self.make_error("invalid")
        try:
            parsed = datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
        except ValueError as exc:
            raise self.make_error("invalid") from exc
        if parsed.tzinfo is None:
            raise self.make_error("naive")
        try:
            return parsed.astimezone(UTC).replace(microsecond=0)
        except OverflowError as exc:  # e.g. 0001-01-01T00:00:00+01:00 is before year 1 in UTC
            raise self.make_error("invalid") from exc


class Currency(fields.String):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("validate", validate.OneOf(
            sorted(MINOR_UNITS), error="Not a supported ISO 4217 currency code."))
        super().__init__(**kwargs)


class StrictSchema(Schema):
    """Unknown fields are refused, so a typo never passes silently."""

    class Meta:
        unknown = RAISE


class CursorQueryArgsSchema(Schema):
    cursor = fields.String(metadata={"description": "`next_cursor` of the previous page"})
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))


def refuse(field: str, message: str) -> ValidationError:
    return ValidationError({field: [message]})
