"""Wire formats of the member's inbox and e-mail choices (``/v1/me/notifications``,
``/v1/me/preferences``)."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from coalition.notifications.models import CHOICES, CONSENT_SOURCES, KINDS
from coalition.schemas import CursorQueryArgsSchema, StrictBoolean, StrictSchema, UTCTimestamp

#: an id of a 64-bit key
_ID = validate.Range(min=1, max=2**63 - 1)


class NotificationSchema(Schema):
    id = fields.Integer()
    kind = fields.String(metadata={"enum": list(KINDS)})
    key = fields.String(metadata={"description": "the event told about, unique per member: "
                                                "`voucher:12`, `expiry:2027-01-31:30`"})
    title = fields.String()
    text = fields.String()
    data = fields.Dict(metadata={"description": "the event's figures (points, dates, names)"})
    created_at = UTCTimestamp()
    read = fields.Boolean()
    read_at = UTCTimestamp(allow_none=True)


class NotificationQueryArgsSchema(CursorQueryArgsSchema):
    unread = fields.Boolean(load_default=False,
                           metadata={"description": "only the notifications not yet read"})


class NotificationPageSchema(Schema):
    items = fields.List(fields.Nested(NotificationSchema))
    unread = fields.Integer(metadata={"description": "notifications not yet read, in all"})
    next_cursor = fields.String(allow_none=True)


class MarkReadSchema(StrictSchema):
    up_to_id = fields.Integer(strict=True, validate=_ID, metadata={
        "description": "mark this notification and every older one read"})
    ids = fields.List(fields.Integer(strict=True, validate=_ID),
                      validate=validate.Length(min=1, max=500),
                      metadata={"description": "mark these notifications read"})

    @validates_schema
    def one_of(self, data: dict[str, Any], **_kwargs: Any) -> None:
        if ("up_to_id" in data) == ("ids" in data):
            raise ValidationError("Give either up_to_id or ids.", "_schema")


class MarkedSchema(Schema):
    marked = fields.Integer(metadata={"description": "notifications marked read now"})
    unread = fields.Integer()


def _choice_fields(required: bool) -> dict[str, fields.Field]:
    return {name: StrictBoolean(required=required, metadata={"description": (
        ("marketing, sent only with your consent" if choice["marketing"] else
         "about your own account, sent unless you turn it off") + ": " + choice["label"])})
        for name, choice in CHOICES.items()}


class PreferencesRequestSchema(StrictSchema.from_dict(_choice_fields(False))):  # type: ignore[misc]
    @validates_schema
    def something(self, data: dict[str, Any], **_kwargs: Any) -> None:
        if not data:
            raise ValidationError("Give at least one choice: " + ", ".join(CHOICES) + ".",
                                  "_schema")


class ChoiceSchema(Schema):
    name = fields.String(metadata={"enum": list(CHOICES)})
    value = fields.Boolean()
    marketing = fields.Boolean(metadata={
        "description": "marketing e-mails are sent only with consent; the others are about "
                       "your own account"})
    default = fields.Boolean()
    label = fields.String()
    changed_at = UTCTimestamp(allow_none=True,
                              metadata={"description": "when you last chose; none: never"})
    source = fields.String(allow_none=True, metadata={"enum": list(CONSENT_SOURCES)})


class PreferencesSchema(Schema.from_dict(_choice_fields(False))):  # type: ignore[misc]
    choices = fields.List(fields.Nested(ChoiceSchema))
