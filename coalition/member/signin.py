"""Member credentials: the one-time activation code handed out at enrolment, the password
the member then chooses, and sign-in with throttling.

* Activation codes are short enough to type (10 characters of an alphabet without look-alike
  characters, about 49 bits) and stored as SHA-256 digests; a code works once.
* Passwords are hashed with Argon2id (:mod:`coalition.passwords`), never stored.
* Every attempt (activation or sign-in) is counted *before* the secret is checked, with one
  guarded ``UPDATE``; after :data:`MAX_FAILURES` failures in a row the member is locked for
  :data:`LOCK_FOR`. So concurrent guesses cannot slip past the limit, and no transaction is
  held open while the (deliberately slow) password hash runs.
* An unknown member number, or a member without a password, costs the same Argon2 work as a
  real one, so the answer's timing does not tell which member numbers exist.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, update

from coalition.db import UnitOfWork, affected_rows, read, utcnow
from coalition.errors import CoalitionError
from coalition.ledger.models import Member
from coalition.oauth.models import digest
from coalition.passwords import passwords

#: no 0/O, 1/I/L: a code read aloud or copied from paper survives
ACTIVATION_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
ACTIVATION_LENGTH = 10
PASSWORD_MIN = 10
PASSWORD_MAX = 1024
MAX_FAILURES = 5
LOCK_FOR = timedelta(minutes=15)

class SignInFailed(CoalitionError):
    status, code = 401, "invalid_credentials"


class ActivationFailed(CoalitionError):
    status, code = 422, "activation_failed"


class SignInLocked(CoalitionError):
    status, code = 429, "rate_limited"

    def __init__(self, until: datetime) -> None:
        seconds = max(1, int((until - utcnow()).total_seconds()) + 1)
        super().__init__(
            "Too many failed attempts. Try again after "
            f"{until.strftime('%H:%M')} UTC.", headers={"Retry-After": str(seconds)})
        self.until = until


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


def hash_password(password: str) -> str:
    return passwords().hash(password)


def check_password_rules(password: str, refusal: type[CoalitionError] = ActivationFailed,
                         shortest: int = PASSWORD_MIN) -> None:
    """The password rules of members (and, with their own ``shortest``, finance users); a
    password that breaks one is refused with ``refusal`` naming the field."""
    message = None
    if len(password) < shortest:
        message = f"Choose a password of at least {shortest} characters."
    elif len(password) > PASSWORD_MAX:
        message = f"A password may have at most {PASSWORD_MAX} characters."
    if message is not None:
        raise refusal(message, errors={"password": [message]})


# --------------------------------------------------------------------------- throttling


@dataclass(frozen=True)
class _Attempt:
    member_id: int
    member_number: str
    attempt: int
    password_hash: str | None
    activation_code_hash: str | None


def _begin_attempt(member_number: str) -> _Attempt | None:
    """Count an attempt for an active member, unless locked. ``None``: no such active
    member. Raises :class:`SignInLocked` while locked (or past the limit already)."""
    now = utcnow()
    m = Member.__table__.c
    with UnitOfWork() as uow:
        row = uow.session.execute(
            update(Member.__table__)
            .where(m.member_number == member_number, m.status == "active",
                   or_(m.locked_until.is_(None), m.locked_until <= now))
            .values(failed_sign_ins=m.failed_sign_ins + 1, locked_until=None)
            .returning(m.id, m.failed_sign_ins, m.password_hash, m.activation_code_hash)
        ).first()
        if row is not None and row.failed_sign_ins > MAX_FAILURES:
            # concurrent attempts past the limit: lock without checking the secret
            until = now + LOCK_FOR
            uow.session.execute(update(Member.__table__).where(m.id == row.id)
                                .values(locked_until=until, failed_sign_ins=0))
            uow.commit()
            raise SignInLocked(until)
        uow.commit()
    if row is None:
        with read() as session:
            locked_until = session.scalar(select(m.locked_until).where(
                m.member_number == member_number, m.status == "active"))
        if locked_until is not None:
            raise SignInLocked(locked_until)
        return None
    return _Attempt(row.id, member_number, row.failed_sign_ins, row.password_hash,
                    row.activation_code_hash)


def _failed(attempt: _Attempt) -> datetime | None:
    """Record the outcome of a failed attempt; the lock's end if this one locks."""
    if attempt.attempt < MAX_FAILURES:
        return None
    until = utcnow() + LOCK_FOR
    m = Member.__table__.c
    with UnitOfWork() as uow:
        uow.session.execute(update(Member.__table__).where(m.id == attempt.member_id)
                            .values(locked_until=until, failed_sign_ins=0))
        uow.commit()
    return until


def _succeeded(member_id: int, **values: object) -> None:
    m = Member.__table__.c
    with UnitOfWork() as uow:
        uow.session.execute(update(Member.__table__).where(m.id == member_id)
                            .values(failed_sign_ins=0, locked_until=None, **values))
        uow.commit()


def _verify(password_hash: str | None, password: str) -> bool:
    return passwords().verify(password_hash, password)


# --------------------------------------------------------------------------- use cases


def activate(member_number: str, code: str, password: str) -> SignedInMember:
    """Check the activation code, set the member's password and spend the code."""
    check_password_rules(password)
    refused = "The member number or activation code is wrong, or the code was already used."
    attempt = _begin_attempt(member_number)
    given = activation_digest(code)
    if attempt is None or attempt.activation_code_hash is None or not hmac.compare_digest(
            attempt.activation_code_hash, given):
        until = _failed(attempt) if attempt is not None else None
        if until is not None:
            raise SignInLocked(until)
        raise ActivationFailed(refused)
    password_hash = hash_password(password)
    m = Member.__table__.c
    with UnitOfWork() as uow:
        # the code is spent by the statement that uses it, so two uses cannot both win
        used = affected_rows(uow.session.execute(
            update(Member.__table__)
            .where(and_(m.id == attempt.member_id, m.activation_code_hash == given,
                        m.status == "active"))
            .values(password_hash=password_hash, activation_code_hash=None,
                    activated_at=utcnow(), failed_sign_ins=0, locked_until=None)
        ))
        if not used:
            raise ActivationFailed(refused)
        uow.commit()
    return SignedInMember(attempt.member_id, member_number)


def authenticate(member_number: str, password: str) -> SignedInMember:
    """The member with this number and password, or :class:`SignInFailed` /
    :class:`SignInLocked`."""
    refused = "The member number or password is wrong."
    if len(password) > PASSWORD_MAX:
        raise SignInFailed(refused)
    attempt = _begin_attempt(member_number)
    if attempt is None or attempt.password_hash is None:
        _verify(None, password)
        raise SignInFailed(refused)
    if not _verify(attempt.password_hash, password):
        until = _failed(attempt)
        if until is not None:
            raise SignInLocked(until)
        raise SignInFailed(refused)
    values: dict[str, object] = {}
    if passwords().needs_rehash(attempt.password_hash):
        values["password_hash"] = hash_password(password)
    _succeeded(attempt.member_id, **values)
    return SignedInMember(attempt.member_id, member_number)


def active_member(member_id: int) -> SignedInMember | None:
    """The member, if still active (a closed or merged member's grants stop working)."""
    with read() as session:
        row = session.execute(select(Member.id, Member.member_number).where(
            Member.id == member_id, Member.status == "active")).first()
    return SignedInMember(row.id, row.member_number) if row else None
