"""The membership page's forms, each parsed strictly by one schema (as the member page's,
:mod:`coalition.member.forms`)."""

from __future__ import annotations

from marshmallow import fields, validate

from coalition.ledger.idempotency import IDEMPOTENCY_KEY
from coalition.member.forms import FormCheckbox, PageForm
from coalition.schemas import WholeMatch

_CONFIRM_CANCEL = "Tick the box to confirm the cancellation."


class BuyForm(PageForm):
    plan = fields.String(required=True, validate=validate.Length(
        min=1, max=32, error="Choose a plan."), error_messages={"required": "Choose a plan."})
    auto_renew = FormCheckbox(load_default=False)
    #: the form's one-time key: the same form sent twice buys once
    idempotency_key = fields.String(load_default=None, validate=WholeMatch(
        IDEMPOTENCY_KEY, error="This form is damaged; reload the page."))


class AutoRenewForm(PageForm):
    auto_renew = FormCheckbox(load_default=False)


class CancelForm(PageForm):
    confirm = FormCheckbox(required=True,
                           validate=validate.Equal(True, error=_CONFIRM_CANCEL),
                           error_messages={"required": _CONFIRM_CANCEL,
                                           "invalid": _CONFIRM_CANCEL})
