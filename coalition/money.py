"""Money: ISO 4217 currencies, exact decimals, and the one rounding rule.

Amounts are ``Decimal`` from the wire to the database and back; they are rounded once, to
the currency's minor unit, half to even (:func:`round_money`).
"""

from __future__ import annotations

from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal

#: ISO 4217 active codes with their minor units (digits after the decimal point)
MINOR_UNITS: dict[str, int] = {
    **dict.fromkeys(
        "AED AUD BGN BRL CAD CHF CNY COP CZK DKK EGP EUR GBP GEL HKD HRK ILS INR KES MAD "
        "MXN MYR NGN NOK NZD PEN PHP PKR PLN QAR RON RSD RUB SAR SEK SGD THB TRY TWD UAH "
        "USD ZAR".split(), 2),
    **dict.fromkeys("CLP ISK JPY KRW PYG UGX VND XAF XOF".split(), 0),
    **dict.fromkeys("BHD IQD JOD KWD LYD OMR TND".split(), 3),
}

#: money amounts and rates accept at most this many decimal places on input
MAX_PLACES = 8


def is_currency(code: str) -> bool:
    return code in MINOR_UNITS


def minor_unit(currency: str) -> Decimal:
    return Decimal(1).scaleb(-MINOR_UNITS[currency])


def round_money(amount: Decimal, currency: str) -> Decimal:
    """The coalition's one rounding rule: half-even to the currency's minor unit."""
    return amount.quantize(minor_unit(currency), rounding=ROUND_HALF_EVEN)


def floor_points(value: Decimal) -> int:
    """Points from an exact product (spend × rate × multiplier) are rounded down."""
    return int(value.to_integral_value(rounding=ROUND_FLOOR))


def canonical(value: Decimal) -> Decimal:
    """The same number without trailing zeros ("0.0100" is 0.01, "1.00000000" is 1), so a
    rate reads the same whatever spelling or database it came from."""
    if not value:
        return Decimal(0)  # not "-0" or "0E-8"
    number = value.normalize()
    # normalize() writes 100 as 1E+2: bring whole numbers back to exponent 0
    exponent = number.as_tuple().exponent
    if isinstance(exponent, str):  # "n", "N" or "F": not a number a rate can be
        raise ValueError(f"not a finite number: {value}")
    return number if exponent <= 0 else number.quantize(Decimal(1))


def shown(amount: Decimal | str, currency: str) -> str:
    """An amount as people read it: at least the currency's minor unit ("49" GBP is
    "49.00 GBP"), never fewer places than it has (nothing is rounded away), with thousands
    separated."""
    value = Decimal(amount)
    if is_currency(currency):
        places = MINOR_UNITS[currency]
        exponent = value.as_tuple().exponent
        if isinstance(exponent, int) and -exponent < places:
            value = value.quantize(minor_unit(currency))
    return f"{value:,f} {currency}"


def money_str(amount: Decimal) -> str:
    """Decimal as a plain string, never in exponent notation."""
    return format(amount, "f")
