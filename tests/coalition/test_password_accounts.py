"""The one rule of password accounts (:mod:`coalition.oauth.passwords`), shown for each kind
of account that signs in with a password: members, finance users and partner staff."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select, update

from coalition.db import UnitOfWork, read, utcnow
from coalition.member import signin
from coalition.oauth import finance_users, partner_users, passwords
from coalition.oauth.passwords import MAX_FAILURES, PasswordAccounts, SignInFailed, SignInLocked
from tests.factories.members import active_member

WRONG = "not the password at all"


@dataclass
class Account:
    """One account of one kind: how it signs in, and its row."""

    accounts: PasswordAccounts
    name: str
    password: str
    sign_in: Callable[[str, str], Any]

    def row(self) -> Any:
        c = self.accounts.table.c
        with read() as session:
            return session.execute(select(c.failed_sign_ins, c.locked_until)
                                   .where(c[self.accounts.name] == self.name)).one()

    def set(self, **values: Any) -> None:
        c = self.accounts.table.c
        with UnitOfWork() as uow:
            uow.session.execute(update(self.accounts.table)
                                .where(c[self.accounts.name] == self.name).values(**values))
            uow.commit()


@pytest.fixture(params=["member", "finance user", "partner staff"])
def account(request: pytest.FixtureRequest, client: Any, make_partner: Any) -> Account:
    if request.param == "member":
        member = active_member(client, make_partner("acme")[1])
        return Account(signin.MEMBERS, member.member_number, member.password,
                       signin.authenticate)
    if request.param == "partner staff":
        make_partner("acme")
        code = partner_users.create_user("acme", "nora@acme.example", "Nora")["activation_code"]
        password = "staff password 12"
        partner_users.activate("nora@acme.example", code, password)
        return Account(partner_users.STAFF, "nora@acme.example", password,
                       partner_users.authenticate)
    password = "finance password 1"
    finance_users.create_user("fiona", "Fiona Ledger", password)
    return Account(finance_users.FINANCE_USERS, "fiona", password, finance_users.authenticate)


class CountingHasher(PasswordHasher):
    """Argon2id at its lowest cost that counts its verifications: the work a sign-in does,
    whatever the answer."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=1024, parallelism=1)
        self.hashes: list[str | bytes] = []
        self._count = threading.Lock()

    @property
    def verified(self) -> int:
        return len(self.hashes)

    def against(self, password_hash: str) -> int:
        """How many verifications were against this hash."""
        return self.hashes.count(password_hash)

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        with self._count:
            self.hashes.append(hash)
        return super().verify(hash, password)


@pytest.fixture
def hasher(app, monkeypatch: pytest.MonkeyPatch) -> Iterator[CountingHasher]:
    counting = CountingHasher()
    hashing = app.extensions["coalition.passwords"]
    monkeypatch.setattr(hashing, "hasher", counting)
    monkeypatch.setattr(hashing, "_dummy", None)
    yield counting


def test_failures_in_a_row_lock_the_account(account):
    for attempt in range(MAX_FAILURES - 1):
        with pytest.raises(SignInFailed):
            account.sign_in(account.name, WRONG)
        assert account.row().failed_sign_ins == attempt + 1
    with pytest.raises(SignInLocked) as locked:
        account.sign_in(account.name, WRONG)
    failed_sign_ins, locked_until = account.row()
    assert failed_sign_ins == 0 and locked_until == locked.value.until
    assert timedelta(minutes=14) < locked_until - utcnow() <= passwords.LOCK_FOR


def test_a_locked_account_is_refused_even_with_the_right_password(account, hasher):
    until = utcnow() + timedelta(minutes=3)
    account.set(locked_until=until, failed_sign_ins=0)
    for password in (account.password, WRONG):
        before = hasher.verified
        with pytest.raises(SignInLocked) as locked:
            account.sign_in(account.name, password)
        assert locked.value.until == until
        # the same work as a wrong password's, and the guess is not counted
        assert hasher.verified - before == 1
    assert tuple(account.row()) == (0, until)


def test_a_lock_taken_while_the_password_is_checked_refuses_the_right_one(account):
    attempt = account.accounts.begin(account.name)
    assert attempt is not None
    until = utcnow() + timedelta(minutes=5)
    account.set(locked_until=until, failed_sign_ins=0)  # a concurrent guess past the limit
    with pytest.raises(SignInLocked):
        account.accounts.succeeded(attempt)
    assert tuple(account.row()) == (0, until)


def test_every_refusal_costs_one_hash(account, hasher):
    def work(name: str, password: str, refusal: type[Exception]) -> int:
        before = hasher.verified
        with pytest.raises(refusal):
            account.sign_in(name, password)
        return hasher.verified - before

    assert work(account.name, WRONG, SignInFailed) == 1
    assert work("400000000006" if account.accounts is signin.MEMBERS else "nobody",
                WRONG, SignInFailed) == 1
    assert work(account.name, "x" * (passwords.PASSWORD_MAX + 1), SignInFailed) == 1
    account.set(locked_until=utcnow() + timedelta(minutes=1))
    assert work(account.name, account.password, SignInLocked) == 1


@pytest.mark.postgres
def test_concurrent_failures_are_each_counted(app, account, hasher):
    """Guesses side by side are each counted under the row lock (no lost update), and
    no more of them reach the password than the limit allows."""

    def guess(start: threading.Barrier, outcomes: list[str]) -> None:
        with app.app_context():
            start.wait()
            try:
                account.sign_in(account.name, WRONG)
            except SignInFailed:
                outcomes.append("failed")
            except SignInLocked:
                outcomes.append("locked")

    def together(n: int) -> list[str]:
        start, outcomes = threading.Barrier(n), []
        threads = [threading.Thread(target=guess, args=(start, outcomes)) for _ in range(n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert len(outcomes) == n
        return outcomes

    assert together(MAX_FAILURES - 1) == ["failed"] * (MAX_FAILURES - 1)
    assert account.row().failed_sign_ins == MAX_FAILURES - 1
    # past the limit at once: only one more reaches the password, and it locks
    c = account.accounts.table.c
    with read() as session:
        real = session.scalar(select(c.password_hash).where(
            c[account.accounts.name] == account.name))
    before = hasher.against(real)
    assert together(2 * MAX_FAILURES) == ["locked"] * (2 * MAX_FAILURES)
    assert hasher.against(real) - before == 1
    failed_sign_ins, locked_until = account.row()
    assert failed_sign_ins == 0 and locked_until > utcnow()
    with pytest.raises(SignInLocked):
        account.sign_in(account.name, account.password)
