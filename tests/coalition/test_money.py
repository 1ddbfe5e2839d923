"""How amounts are shown on the pages: to the currency's minor unit at least, never
rounded."""

from __future__ import annotations

from decimal import Decimal

import pytest

from coalition.money import shown


@pytest.mark.parametrize(("amount", "currency", "expected"), [
    (Decimal("49"), "GBP", "49.00 GBP"),
    ("49.5", "EUR", "49.50 EUR"),
    (Decimal("1234567.5"), "GBP", "1,234,567.50 GBP"),
    (Decimal("0.125"), "GBP", "0.125 GBP"),  # more places than the minor unit: kept
    (Decimal("500"), "JPY", "500 JPY"),
    (Decimal("1E+2"), "GBP", "100.00 GBP"),
])
def test_an_amount_is_shown_to_its_minor_unit_and_never_rounded(amount, currency, expected):
    assert shown(amount, currency) == expected
