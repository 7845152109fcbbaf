"""Currency exponents (ISO 4217) and the formatting of money for humans.

This is the one place money becomes text. Amounts are integer minor units (cents)
with the currency's ISO 4217 exponent, or exact ``Decimal`` major units for unit
prices; no float is ever involved.

    >>> format_minor_units(123456, "EUR")
    '€1,234.56'
    >>> format_minor_units(1500, "JPY")
    '¥1,500'
    >>> format_minor_units(1234, "KWD")
    '1.234 KWD'
"""

from __future__ import annotations

from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal, localcontext

from invoicing.errors import UnknownCurrencyError

__all__ = [
    "currency_exponent",
    "currency_symbol",
    "floor_to_int",
    "format_amount",
    "format_minor_units",
    "round_half_up",
]

_EXPONENT_0 = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
_EXPONENT_3 = "BHD IQD JOD KWD LYD OMR TND"
_EXPONENT_4 = "CLF UYW"
_EXPONENT_2 = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN "
    "BWP BYN BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB "
    "EUR FJD FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS "
    "KHR KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN "
    "MXV MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD "
    "SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS "
    "UAH USD USN UZS VED VES WST XCD XCG YER ZAR ZMW ZWG"
)

# ISO 4217 minor-unit exponents of the active currency codes.
ISO_4217_EXPONENTS: dict[str, int] = {
    code: exponent
    for codes, exponent in ((_EXPONENT_0, 0), (_EXPONENT_2, 2), (_EXPONENT_3, 3), (_EXPONENT_4, 4))
    for code in codes.split()
}

# Symbols written before the amount; other currencies get their code after it.
_SYMBOLS: dict[str, str] = {"EUR": "€", "USD": "$", "GBP": "£", "JPY": "¥"}


def currency_exponent(currency: str) -> int:
    """Number of minor-unit digits of ``currency`` (EUR 2, JPY 0, KWD 3)."""
    try:
        return ISO_4217_EXPONENTS[currency]
    except KeyError:
        raise UnknownCurrencyError(f"unknown ISO 4217 currency code {currency!r}") from None


def round_half_up(amount: Decimal) -> int:
    """The one rounding rule (semantics.md): half away from zero, to an integer.

    ``amount`` is already in minor units (cents): ``round_half_up(Decimal("283.87")) == 284``.
    """
    if not isinstance(amount, Decimal):
        raise TypeError(f"round_half_up() takes a Decimal, not {type(amount).__name__}")
    with localcontext() as ctx:
        ctx.prec = 60
        return int(amount.to_integral_value(rounding=ROUND_HALF_UP))


def floor_to_int(amount: Decimal) -> int:
    """Round toward minus infinity (money a wallet may give: never more than it holds)."""
    if not isinstance(amount, Decimal):
        raise TypeError(f"floor_to_int() takes a Decimal, not {type(amount).__name__}")
    with localcontext() as ctx:
        ctx.prec = 60
        return int(amount.to_integral_value(rounding=ROUND_FLOOR))


def currency_symbol(currency: str) -> str | None:
    """The symbol printed before amounts, or None when the code is printed after."""
    currency_exponent(currency)
    return _SYMBOLS.get(currency)


def format_minor_units(cents: int, currency: str) -> str:
    """Format integer minor units: ``-€1,234.56``, ``¥1,500``, ``1.234 KWD``."""
    if isinstance(cents, bool) or not isinstance(cents, int):
        raise TypeError(f"minor units must be an int, not {type(cents).__name__}")
    exponent = currency_exponent(currency)
    major, minor = divmod(abs(cents), 10**exponent)
    number = f"{major:,}" + (f".{minor:0{exponent}d}" if exponent else "")
    return _with_currency(number, cents < 0, currency)


def format_amount(amount: Decimal | int, currency: str) -> str:
    """Format exact major units (unit prices): at least the currency's decimals, more
    when the amount has them, never rounded: ``€0.0025``, ``€12.50``."""
    if isinstance(amount, bool) or not isinstance(amount, (Decimal, int)):
        raise TypeError(f"amounts must be Decimal or int, not {type(amount).__name__}")
    amount = Decimal(amount)
    if not amount.is_finite():
        raise ValueError(f"amount {amount} is not finite")
    exponent = currency_exponent(currency)
    digits = -amount.normalize().as_tuple().exponent
    places = max(exponent, digits if isinstance(digits, int) else 0)
    return _with_currency(f"{abs(amount):,.{places}f}", amount < 0, currency)


def _with_currency(number: str, negative: bool, currency: str) -> str:
    sign = "-" if negative else ""
    symbol = _SYMBOLS.get(currency)
    return f"{sign}{symbol}{number}" if symbol else f"{sign}{number} {currency}"
