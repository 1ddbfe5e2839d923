"""Password accounts: one rule for every kind of account that signs in with a password
(members, finance users, and any other kind a :class:`PasswordAccounts` describes).

* Passwords are hashed with Argon2id at the cost the settings name
  (:mod:`coalition.passwords`), never stored.
* Every attempt is counted *before* the secret is checked, in one transaction under the
  account's row lock; an account already locked is refused there, and an attempt past
  :data:`MAX_FAILURES` locks the account in that same transaction. So concurrent guesses
  are each counted (no lost update) and cannot slip past the limit, and no transaction is
  held open while the (deliberately slow) hash runs.
* The failure that reaches the limit locks the account for :data:`LOCK_FOR`; a success
  resets the count, under the row lock again, unless the account was locked meanwhile.
* A locked account is refused whatever the password, after the same Argon2 work as a wrong
  password; an unknown name, or an account without a password, costs that work too. So the
  answer's timing tells neither which names exist nor whether a guess was right.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Column, ColumnElement, Row, Table, and_, select, update
from sqlalchemy.sql.base import ReadOnlyColumnCollection

from coalition.db import UnitOfWork, affected_rows, utcnow
from coalition.errors import CoalitionError
from coalition.passwords import passwords

PASSWORD_MAX = 1024
MAX_FAILURES = 5
LOCK_FOR = timedelta(minutes=15)

class SignInFailed(CoalitionError):
    status, code = 401, "invalid_credentials"


class SignInLocked(CoalitionError):
    status, code = 429, "rate_limited"

    def __init__(self, until: datetime) -> None:
        seconds = max(1, int((until - utcnow()).total_seconds()) + 1)
        super().__init__(
            "Too many failed attempts. Try again after "
            f"{until.strftime('%H:%M')} UTC.", headers={"Retry-After": str(seconds)})
        self.until = until


def hash_password(password: str) -> str:
    return passwords().hash(password)


def verify(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches; with no hash a dummy one is checked all the same
    (:mod:`coalition.passwords`), and the answer is no."""
    return passwords().verify(password_hash, password)


def check_password_rules(password: str, refusal: type[CoalitionError],
                         shortest: int) -> None:
    """The password rules of every kind of account, each kind with its own ``shortest``;
    a password that breaks one is refused with ``refusal`` naming the field."""
    message = None
    if len(password) < shortest:
        message = f"Choose a password of at least {shortest} characters."
    elif len(password) > PASSWORD_MAX:
        message = f"A password may have at most {PASSWORD_MAX} characters."
    if message is not None:
        raise refusal(message, errors={"password": [message]})


@dataclass(frozen=True)
class Attempt:
    """One counted attempt: the account's id, the attempt's place in the count of
    failures in a row, and the columns its kind asked for."""

    id: int
    number: int
    row: Row[Any]


@dataclass(frozen=True)
class PasswordAccounts:
    """One kind of account: its table (with ``id``, ``password_hash``,
    ``failed_sign_ins`` and ``locked_until`` columns), the column an account is named by,
    which accounts may sign in, the refusal's wording and the columns a sign-in returns."""

    table: Table
    name: str
    active: Callable[[ReadOnlyColumnCollection[str, Column[Any]]], ColumnElement[bool]]
    refused: str
    columns: tuple[str, ...] = ()

    def begin(self, name: str) -> Attempt | None:
        """Count an attempt on the active account of this name, under its row lock.
        ``None``: no such active account. Raises :class:`SignInLocked` while the account
        is locked, or when this attempt is past the limit (which locks it)."""
        now = utcnow()
        c = self.table.c
        wanted = [c.id, c.failed_sign_ins, c.locked_until, c.password_hash,
                  *(c[column] for column in self.columns)]
        with UnitOfWork() as uow:
            row = uow.session.execute(
                select(*wanted).where(c[self.name] == name, self.active(c)).with_for_update()
            ).first()
            if row is None:
                return None
            if row.locked_until is not None and row.locked_until > now:
                raise SignInLocked(row.locked_until)
            number = row.failed_sign_ins + 1
            if number > MAX_FAILURES:
                # attempts counted side by side past the limit: lock, check no secret
                until = now + LOCK_FOR
                uow.session.execute(update(self.table).where(c.id == row.id)
                                    .values(failed_sign_ins=0, locked_until=until))
                uow.commit()
                raise SignInLocked(until)
            uow.session.execute(update(self.table).where(c.id == row.id)
                                .values(failed_sign_ins=c.failed_sign_ins + 1,
                                        locked_until=None))
            uow.commit()
        return Attempt(row.id, number, row)

    def failed(self, attempt: Attempt) -> None:
        """The attempt's secret was wrong: raises :class:`SignInLocked` if this failure
        reaches the limit (the count restarts when the lock ends)."""
        if attempt.number < MAX_FAILURES:
            return
        until = utcnow() + LOCK_FOR
        c = self.table.c
        with UnitOfWork() as uow:
            uow.session.execute(update(self.table).where(c.id == attempt.id)
                                .values(failed_sign_ins=0, locked_until=until))
            uow.commit()
        raise SignInLocked(until)

    def succeeded(self, attempt: Attempt, **values: Any) -> None:
        """The attempt's secret was right: the count restarts and ``values`` are written,
        unless the account was locked while the secret was checked
        (:class:`SignInLocked`)."""
        c = self.table.c
        with UnitOfWork() as uow:
            locked_until = uow.session.scalar(
                select(c.locked_until).where(c.id == attempt.id).with_for_update())
            if locked_until is not None and locked_until > utcnow():
                raise SignInLocked(locked_until)
            uow.session.execute(update(self.table).where(c.id == attempt.id)
                                .values(failed_sign_ins=0, locked_until=None, **values))
            uow.commit()

    def activate(self, name: str, code_column: str, given: str, password: str,
                 refusal: CoalitionError) -> Attempt:
        """Set the password of the account whose activation code's digest (in
        ``code_column``) is ``given``, and spend the code; a wrong code is a counted
        failure, refused with ``refusal``."""
        attempt = self.begin(name)
        if attempt is None or attempt.row._mapping[code_column] is None or not hmac.compare_digest(
                attempt.row._mapping[code_column], given):
            if attempt is not None:
                self.failed(attempt)
            raise refusal
        password_hash = hash_password(password)
        c = self.table.c
        with UnitOfWork() as uow:
            # the code is spent by the statement that uses it, so two uses cannot both win
            used = affected_rows(uow.session.execute(
                update(self.table)
                .where(and_(c.id == attempt.id, c[code_column] == given, self.active(c)))
                .values(password_hash=password_hash, activated_at=utcnow(),
                        failed_sign_ins=0, locked_until=None, **{code_column: None})))
            if not used:
                raise refusal
            uow.commit()
        return attempt

    def refuse(self, password: str) -> SignInFailed:
        """The refusal of a name that cannot sign in, after a wrong password's work."""
        verify(None, password[:PASSWORD_MAX])
        return SignInFailed(self.refused)

    def authenticate(self, name: str, password: str) -> Attempt:
        """The counted, successful attempt of this account with this password, or
        :class:`SignInFailed` / :class:`SignInLocked`, each after one Argon2 verification."""
        if len(password) > PASSWORD_MAX:
            raise self.refuse(password)
        try:
            attempt = self.begin(name)
        except SignInLocked:
            verify(None, password)
            raise
        if attempt is None or attempt.row.password_hash is None:
            raise self.refuse(password)
        if not verify(attempt.row.password_hash, password):
            self.failed(attempt)
            raise SignInFailed(self.refused)
        values: dict[str, Any] = {}
        if passwords().needs_rehash(attempt.row.password_hash):
            values["password_hash"] = hash_password(password)
        self.succeeded(attempt, **values)
        return attempt
