"""Exact money arithmetic for rating: decimal strings to scaled integers, named rounding rules,
and the largest-remainder split.

Units (see the rating contract):

* money is integer **fen** (minor units);
* a unit price is an integer at :data:`PRICE_SCALE` = 4: ``unit_price / 10**4`` fen per display
  unit (m³ for volume, m² for area, one month for fixed charges), so "3.45" yuan/m³ is
  ``3_450_000``;
* a volume is integer **litres**; tariff files write m³ as decimal strings;
* a tax rate is an integer in parts per million (``"0.09"`` -> ``90_000``).

Rounding rules (:data:`RULES`) are named and applied once per step; their integer codes
(:data:`RULE_CODES`) are what the numba kernels take. :func:`div_round` is the plain-Python
twin of ``kernels.div_round`` and the reference the kernel tests compare against.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Sequence

PRICE_SCALE = 4
#: litres per m³
LITRES_PER_M3 = 1000
#: tax rates are integers in parts per million
TAX_SCALE = 1_000_000

RULES = ("half_up", "half_even", "down", "up")
RULE_CODES = {name: i for i, name in enumerate(RULES)}


class MoneyFormatError(ValueError):
    """A decimal string is not a number, or does not fit the scale exactly."""


def parse_scaled(text: str, factor: int, *, what: str = "value", allow_negative: bool = False) -> int:
    """``text`` (a decimal string) × ``factor`` as an exact integer; anything finer is an error."""
    if not isinstance(text, str):
        raise MoneyFormatError(f"{what} must be a decimal string in quotes (e.g. \"3.45\"), got {text!r}")
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise MoneyFormatError(f"{what} {text!r} is not a decimal number") from None
    if not value.is_finite():
        raise MoneyFormatError(f"{what} {text!r} is not a finite number")
    scaled = value * factor
    if scaled != scaled.to_integral_value():
        raise MoneyFormatError(f"{what} {text!r} has more decimals than can be represented exactly")
    if scaled < 0 and not allow_negative:
        raise MoneyFormatError(f"{what} {text!r} must not be negative")
    return int(scaled)


#: limits that keep every product of the kernels inside int64: a unit price (per m³ or m²) of at
#: most 1,000 major units, a monthly charge of at most 1,000,000, a bill of at most 5 million m³,
#: thresholds (and their raises) of at most 10 million m³, a heated area of at most 200,000 m²,
#: households of at most 100 persons and shared meters of at most 1,000 dwellings
MAX_PRICE_MAJOR = 1_000
MAX_CHARGE_MAJOR = 1_000_000
MAX_VOLUME_LITRES = 5_000_000_000
MAX_THRESHOLD_LITRES = 10_000_000_000
MAX_AREA_CM2 = 20_000_000
MAX_HOUSEHOLD = 100
MAX_DWELLINGS = 1_000


def price_units(text: str, minor_units: int = 100, max_major: int = MAX_PRICE_MAJOR) -> int:
    """A price in major units per display unit ("3.45" yuan/m³) as the integer unit price."""
    value = parse_scaled(text, minor_units * 10**PRICE_SCALE, what="price")
    if value > max_major * minor_units * 10**PRICE_SCALE:
        raise MoneyFormatError(f"price {text!r} is above the limit of {max_major:,}")
    return value


def charge_units(text: str, minor_units: int = 100) -> int:
    """A monthly charge in major units ("5.00" yuan a month) as an integer unit price."""
    return price_units(text, minor_units, MAX_CHARGE_MAJOR)


def money_units(text: str, minor_units: int = 100) -> int:
    """An amount in major units ("12.50" yuan) as integer minor units (fen)."""
    return parse_scaled(text, minor_units, what="amount")


def m3_to_litres(text: str) -> int:
    """A volume in m³ given as a decimal string ("22", "0.5") as integer litres."""
    return parse_scaled(text, LITRES_PER_M3, what="volume")


def threshold_litres(text: str) -> int:
    """A tier threshold (or a raise of one) in m³ as litres, at most :data:`MAX_THRESHOLD_LITRES`."""
    value = m3_to_litres(text)
    if value > MAX_THRESHOLD_LITRES:
        raise MoneyFormatError(f"volume {text!r} is above the limit of {MAX_THRESHOLD_LITRES // 1000:,} m³")
    return value


def tax_ppm(text: str) -> int:
    """A tax rate as a decimal fraction ("0.09") in parts per million; 0 <= rate < 1."""
    ppm = parse_scaled(text, TAX_SCALE, what="tax rate")
    if ppm >= TAX_SCALE:
        raise MoneyFormatError(f"tax rate {text!r} must be below 1 (a fraction: 9% is \"0.09\")")
    return ppm


def div_round(num: int, den: int, rule: str | int = "half_up") -> int:
    """``num / den`` rounded to an integer by a named rule (symmetric for negative values)."""
    code = RULE_CODES[rule] if isinstance(rule, str) else int(rule)
    if den <= 0:
        raise ValueError("denominator must be positive")
    if num < 0:
        return -div_round(-num, den, code)
    q, r = divmod(num, den)
    if code == 0:  # half_up
        return q + (1 if 2 * r >= den else 0)
    if code == 1:  # half_even
        return q + (1 if 2 * r > den or (2 * r == den and q % 2 == 1) else 0)
    if code == 2:  # down
        return q
    if code == 3:  # up
        return q + (1 if r else 0)
    raise ValueError(f"unknown rounding rule {rule!r}")


def line_amount(quantity: int, unit_price: int, per: int = LITRES_PER_M3, rule: str | int = "half_up") -> int:
    """Amount of one line in fen: quantity (litres, or ``per`` base units per display unit) × unit price."""
    return div_round(quantity * unit_price, per * 10**PRICE_SCALE, rule)


def largest_remainder(total: int, weights: Sequence[int]) -> list[int]:
    """Split ``total`` (>= 0) into integer parts proportional to ``weights`` (>= 0), summing exactly.

    Each part gets the floor of its exact share; the units left over go one each to the parts with
    the largest remainders, ties to the earlier part. All-zero weights split equally.
    """
    if total < 0:
        raise ValueError("total must not be negative")
    if any(w < 0 for w in weights):
        raise ValueError("weights must not be negative")
    n = len(weights)
    if n == 0:
        if total:
            raise ValueError("cannot split a non-zero total into no parts")
        return []
    w = list(weights) if sum(weights) > 0 else [1] * n
    total_w = sum(w)
    parts = [total * x // total_w for x in w]
    rema = [total * x % total_w for x in w]
    left = total - sum(parts)
    for i in sorted(range(n), key=lambda i: (-rema[i], i))[:left]:
        parts[i] += 1
    return parts


def format_money(fen: int, minor_units: int = 100) -> str:
    """Integer minor units as a decimal string in major units (12345 -> "123.45")."""
    digits = len(str(minor_units)) - 1
    sign = "-" if fen < 0 else ""
    q, r = divmod(abs(fen), minor_units)
    return f"{sign}{q}.{r:0{digits}d}" if digits else f"{sign}{q}"


def format_price(unit_price: int, minor_units: int = 100) -> str:
    """An integer unit price as major units per display unit, trailing zeros trimmed to 2 places."""
    value = Decimal(unit_price) / (minor_units * 10**PRICE_SCALE)
    text = f"{value:.6f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(2, '0')}"


def format_m3(litres: int) -> str:
    """Litres as m³ with up to three decimals ("22", "22.5", "0.001")."""
    sign = "-" if litres < 0 else ""
    q, r = divmod(abs(litres), LITRES_PER_M3)
    return f"{sign}{q}" + (f".{r:03d}".rstrip("0") if r else "")
