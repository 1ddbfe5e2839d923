"""Member numbers: 12 digits, the last a Luhn check digit, so a mistyped number is refused
at the till rather than crediting someone else."""

from __future__ import annotations

import secrets

LENGTH = 12


def luhn_digit(payload: str) -> str:
    total = 0
    for index, char in enumerate(reversed(payload)):
        digit = int(char)
        if index % 2 == 0:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return str((10 - total % 10) % 10)


def is_valid(number: str) -> bool:
    return (
        len(number) == LENGTH
        and number.isascii()
        and number.isdigit()
        and luhn_digit(number[:-1]) == number[-1]
    )


def new_number() -> str:
    """A random, valid member number (uniqueness is the database's to enforce)."""
    payload = str(secrets.randbelow(9 * 10 ** (LENGTH - 2)) + 10 ** (LENGTH - 2))
    return payload + luhn_digit(payload)
