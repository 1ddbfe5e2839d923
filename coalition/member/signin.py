"""Member credentials: the one-time activation code handed out at enrolment, the password
the member then chooses, and sign-in with throttling.

* Activation codes are short enough to type (10 characters of an alphabet without look-alike
  characters, about 49 bits) and stored as SHA-256 digests; a code works once.
* Passwords, the counting of attempts (activation or sign-in) and the lockout follow the
  rule of every password account, :mod:`coalition.oauth.passwords`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import select

from coalition.db import read
from coalition.errors import CoalitionError
from coalition.ledger.models import Member
from coalition.oauth import passwords
from coalition.oauth.models import digest
from coalition.oauth.passwords import (
    LOCK_FOR,
    MAX_FAILURES,
    PASSWORD_MAX,
    PasswordAccounts,
    SignInFailed,
    SignInLocked,
    hash_password,
)

__all__ = ["LOCK_FOR", "MAX_FAILURES", "PASSWORD_MAX", "SignInFailed", "SignInLocked",
           "hash_password"]

#: no 0/O, 1/I/L: a code read aloud or copied from paper survives
ACTIVATION_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
ACTIVATION_LENGTH = 10
PASSWORD_MIN = 10


class ActivationFailed(CoalitionError):
    status, code = 422, "activation_failed"


@dataclass(frozen=True)
class SignedInMember:
    """The resource owner Authlib's grant is given (it needs ``id``)."""

    id: int
    member_number: str


# --------------------------------------------------------------------------- activation codes


def new_activation_code() -> str:
    return "".join(secrets.choice(ACTIVATION_ALPHABET) for _ in range(ACTIVATION_LENGTH))


def normalise_code(code: str) -> str:
    """What the member typed, as issued: upper case, without spaces or dashes."""
    return "".join(ch for ch in code.upper() if ch not in " -\t")


def display_code(code: str) -> str:
    """``ABCDE-FGHJK``: easier to read out and copy."""
    return f"{code[:5]}-{code[5:]}"


def activation_digest(code: str) -> str:
    return digest(normalise_code(code))


def check_password_rules(password: str) -> None:
    """The members' password rules; a password that breaks one is refused naming the
    field."""
    passwords.check_password_rules(password, ActivationFailed, PASSWORD_MIN)


#: members, named by their member number
MEMBERS = PasswordAccounts(Member.__table__, "member_number",
                           lambda c: c.status == "active",
                           "The member number or password is wrong.",
                           ("activation_code_hash",))


# --------------------------------------------------------------------------- use cases


def activate(member_number: str, code: str, password: str) -> SignedInMember:
    """Check the activation code, set the member's password and spend the code."""
    check_password_rules(password)
    refused = "The member number or activation code is wrong, or the code was already used."
    attempt = MEMBERS.activate(member_number, "activation_code_hash", activation_digest(code),
                               password, ActivationFailed(refused))
    return SignedInMember(attempt.id, member_number)


def authenticate(member_number: str, password: str) -> SignedInMember:
    """The member with this number and password, or :class:`SignInFailed` /
    :class:`SignInLocked`."""
    attempt = MEMBERS.authenticate(member_number, password)
    return SignedInMember(attempt.id, member_number)


def active_member(member_id: int) -> SignedInMember | None:
    """The member, if still active (a closed or merged member's grants stop working)."""
    with read() as session:
        row = session.execute(select(Member.id, Member.member_number).where(
            Member.id == member_id, Member.status == "active")).first()
    return SignedInMember(row.id, row.member_number) if row else None
