"""Password hashing: Argon2id at the cost the ``PASSWORD_HASHING`` setting names.

``full`` (the default, the only one production accepts) is RFC 9106's second recommended
profile, argon2-cffi's own default: tuned to be slow on purpose. ``minimal`` is the
cheapest Argon2id there is, for the test suite, which signs in hundreds of times. A hash
records its own parameters, so either hasher verifies the other's hashes.
"""

from __future__ import annotations

import secrets

from argon2 import Parameters, PasswordHasher, profiles
from argon2.exceptions import InvalidHashError, VerificationError
from flask import Flask, current_app

#: the cost of each ``PASSWORD_HASHING`` setting
COSTS: dict[str, Parameters] = {
    "full": profiles.RFC_9106_LOW_MEMORY,
    "minimal": profiles.CHEAPEST,
}


class Passwords:
    """One Argon2id hasher and the dummy hash that keeps a sign-in's work the same
    whether or not the account exists."""

    def __init__(self, parameters: Parameters) -> None:
        self.parameters = parameters
        self.hasher = PasswordHasher.from_parameters(parameters)
        self._dummy: str | None = None

    def hash(self, password: str) -> str:
        return self.hasher.hash(password)

    def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether ``password`` matches; with no hash (no such account, or no password
        set) a dummy hash is checked all the same, and the answer is no."""
        try:
            return self.hasher.verify(password_hash or self._dummy_hash(), password) \
                and bool(password_hash)
        except (VerificationError, InvalidHashError):
            return False

    def _dummy_hash(self) -> str:
        # made when first needed, so that a sign-in with a real hash never pays for it
        if self._dummy is None:
            self._dummy = self.hasher.hash(secrets.token_urlsafe(16))
        return self._dummy

    def needs_rehash(self, password_hash: str) -> bool:
        return self.hasher.check_needs_rehash(password_hash)


def init_app(app: Flask) -> None:
    app.extensions["coalition.passwords"] = Passwords(COSTS[app.config["PASSWORD_HASHING"]])


def passwords() -> Passwords:
    """The current app's password hasher."""
    hasher: Passwords = current_app.extensions["coalition.passwords"]
    return hasher
