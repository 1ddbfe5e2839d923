"""The unsubscribe link of an e-mail: a signed token naming the member and the choice
the e-mail was sent under, which withdraws that choice without signing in (the link on
the page, and the one-click POST of RFC 8058 that mail programs send).

The token is signed with the app's secret (itsdangerous) and does not expire: an old
e-mail's link must still work. It can only ever turn an e-mail off."""

from __future__ import annotations

from typing import Any

from flask import current_app
from itsdangerous import BadSignature, URLSafeSerializer

from coalition import clock
from coalition.db import UnitOfWork, Units
from coalition.errors import InvalidRequest
from coalition.ledger.models import Member
from coalition.notifications import preferences
from coalition.notifications.models import CHOICES

_SALT = "coalition.notifications.unsubscribe"


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt=_SALT)


def token(member_id: int, choice: str) -> str:
    return str(_serializer().dumps([member_id, choice]))


def link(member_id: int, choice: str) -> str:
    """The unsubscribe page's address, from ``PUBLIC_URL`` (an e-mail has no request)."""
    return f"{current_app.config['PUBLIC_URL']}/member/unsubscribe/{token(member_id, choice)}"


def read(text: str) -> tuple[int, str]:
    """The member and choice a token names; anything else is refused."""
    try:
        member_id, choice = _serializer().loads(text)
    except (BadSignature, TypeError, ValueError) as exc:
        raise InvalidRequest("This unsubscribe link is not valid.") from exc
    if not isinstance(member_id, int) or choice not in CHOICES:
        raise InvalidRequest("This unsubscribe link is not valid.")
    return member_id, choice


def withdraw(text: str, source: str, *, units: Units = UnitOfWork) -> dict[str, Any]:
    """Turn off the e-mails the token names (nothing changes when they are off already,
    or the account is gone: it gets no e-mails anyway)."""
    member_id, choice = read(text)
    with units() as uow:
        session = uow.session
        if session.get(Member, member_id) is not None:
            preferences.record(session, member_id, {choice: False}, source, clock.utcnow())
        uow.commit()
    return {"choice": choice, "label": CHOICES[choice]["label"]}
