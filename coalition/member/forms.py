"""The member page's forms, each parsed by one schema: every field is checked here, strictly
(ASCII digits for points, a Luhn-checked member number, a yes/no box), so that no form can
reach a service with a value it did not mean, and a refusal names the field.

A form posts strings; these fields turn them into what the services take, and refuse
anything else with a message meant for the member (the page answers 422 with it).
"""

from __future__ import annotations

import re
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from coalition.ledger import numbers
from coalition.ledger.idempotency import IDEMPOTENCY_KEY
from coalition.member.signin import PASSWORD_MAX, PASSWORD_MIN
from coalition.schemas import MAX_POINTS, WholeMatch

_DIGITS = re.compile(r"[0-9]{1,16}")


class FormPoints(fields.Field):
    """A whole number of points typed in digits: ``"250"``; never ``"²"``, ``"١"``,
    ``" 5"``, ``"5.0"`` or ``"1e3"``."""

    default_error_messages = {
        "required": "Enter a number of points.",
        "invalid": "Enter a whole number of points in digits (0-9), nothing else.",
        "range": f"Enter between 1 and {MAX_POINTS:,} points.",
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if not isinstance(value, str) or not value:
            raise self.make_error("required" if value == "" else "invalid")
        if not _DIGITS.fullmatch(value):
            raise self.make_error("range" if value.isascii() and value.isdigit()
                                  else "invalid")
        points = int(value)
        if not 1 <= points <= MAX_POINTS:
            raise self.make_error("range")
        return points


class FormMemberNumber(fields.Field):
    """A member number as people type it: spaces between the digit groups are ignored."""

    default_error_messages = {
        "required": "Enter the member number.",
        "invalid": "{input} is not a valid member number (check the digits).",
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        number = "".join(value.split()) if isinstance(value, str) else ""
        if not number:
            raise self.make_error("required")
        if not numbers.is_valid(number):
            raise self.make_error("invalid", input=number[:24])
        return number


class FormCheckbox(fields.Field):
    """A ticked box posts ``yes``; an unticked one posts nothing."""

    default_error_messages = {"invalid": "Not a valid choice."}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if value == "yes":
            return True
        if value in ("", "no"):
            return False
        raise self.make_error("invalid")


def _key() -> fields.String:
    # the form's one-time key: the same form sent twice books once (the page writes it)
    return fields.String(load_default=None, validate=WholeMatch(
        IDEMPOTENCY_KEY, error="This form is damaged; reload the page."))


def _text(message: str, length: int = 32) -> fields.String:
    return fields.String(required=True, validate=validate.Length(min=1, max=length,
                                                                 error=message),
                         error_messages={"required": message})


class PageForm(Schema):
    """Form fields not named here (the CSRF token, the button) are left to the page."""

    class Meta:
        unknown = EXCLUDE


class TransferForm(PageForm):
    to_member_number = FormMemberNumber(required=True)
    points = FormPoints(required=True)
    idempotency_key = _key()
    share_name = FormCheckbox(load_default=False)
    #: the member saw whom the points reach and agreed (the page asks first)
    confirmed = FormCheckbox(load_default=False)


class DonationForm(PageForm):
    partner = _text("Choose a charity.")
    points = FormPoints(required=True)
    idempotency_key = _key()


_CONFIRM_CLOSE = "Tick the box to confirm that your points will be forfeited."


class CloseForm(PageForm):
    confirm = FormCheckbox(required=True, validate=validate.Equal(True, error=_CONFIRM_CLOSE),
                           error_messages={"required": _CONFIRM_CLOSE,
                                           "invalid": _CONFIRM_CLOSE})


class ConsentForm(PageForm):
    partner = _text("Choose a partner.")
    share = FormCheckbox(load_default=False)


class ActivationForm(PageForm):
    member_number = FormMemberNumber(required=True)
    activation_code = _text("Enter the activation code you were given.", 64)
    password = fields.String(required=True, validate=validate.Length(
        min=PASSWORD_MIN, max=PASSWORD_MAX,
        error=f"Choose a password of {PASSWORD_MIN} to {PASSWORD_MAX} characters."),
        error_messages={"required": f"Choose a password of at least {PASSWORD_MIN} "
                                    f"characters."})
    password_again = fields.String(load_default="")

    @validates_schema
    def _same_password(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "password" in data and data["password"] != data.get("password_again"):
            raise ValidationError("The two passwords differ.", "password_again")


def field_errors(error: ValidationError) -> dict[str, str]:
    """One message per refused field."""
    messages = error.messages if isinstance(error.messages, dict) else {"_": error.messages}
    return {name: " ".join(str(m) for m in (texts if isinstance(texts, list) else [texts]))
            for name, texts in messages.items()}


__all__ = ["ActivationForm", "CloseForm", "ConsentForm", "DonationForm", "TransferForm",
           "field_errors"]
