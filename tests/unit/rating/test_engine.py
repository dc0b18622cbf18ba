"""rate(): the contract's columns, apportioned lines, errors by row, per-bill tax, company overrides."""

from __future__ import annotations

import datetime as dt
import json

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterline.rating.engine import BILL_SCHEMA, LINE_SCHEMA, rate
from meterline.rating.errors import RatingError
from meterline.rating.kernels import div_round as kernel_div_round
from meterline.rating.kernels import floor_div
from meterline.rating.money import div_round, format_m3, format_money, format_price, largest_remainder, \
    m3_to_litres, price_units, tax_ppm, MoneyFormatError
from meterline.rating.tariff import TariffBook

D = dt.date
TARIFF = """
id = "w"
use_type = "residential"
tax_rounding = "{tax_rounding}"
[[versions]]
effective = "2025-01-01"
thresholds = ["10"]
[[versions.components]]
code = "water"
prices = ["2.00", "3.00"]
apportioned_price = "2.50"
tax_rate = "0.09"
[[versions.components]]
code = "sewage"
price = "1.00"
tax_rate = "0.09"
"""


def book(tax_rounding: str = "line") -> TariffBook:
    return TariffBook.from_texts({"w.toml": TARIFF.format(tax_rounding=tax_rounding)})


def frame(**cols) -> pl.DataFrame:
    n = len(cols["volume"])
    base = {"row": list(range(1, n + 1)), "tariff_id": ["w"] * n, "period_start": [D(2026, 10, 1)] * n,
            "period_end": [D(2026, 10, 31)] * n}
    base.update(cols)
    return pl.DataFrame(base)


def test_output_columns_are_the_contracts() -> None:
    rated = rate(book(), frame(volume=[12_000]))
    assert dict(rated.lines.schema) == LINE_SCHEMA
    assert dict(rated.bills.schema) == BILL_SCHEMA
    assert rated.errors.height == 0


def test_apportioned_volume_has_its_own_lines() -> None:
    # 12 m³ own (10 in tier 1, 2 in tier 2) and 3 m³ apportioned at the stated 2.50 (water) and 1.00 (sewage)
    rated = rate(book(), frame(volume=[12_000], apportioned=[3_000]))
    got = [(x["component"], x["tier"], x["quantity"], x["amount"], json.loads(x["source"])["kind"])
           for x in rated.lines.iter_rows(named=True)]
    assert got == [("water", 1, 10_000, 2000, "tier"), ("water", 2, 2_000, 600, "tier"),
                   ("sewage", None, 12_000, 1200, "flat"),
                   ("water", None, 3_000, 750, "apportioned"), ("sewage", None, 3_000, 300, "apportioned")]
    assert rated.bills.row(0, named=True)["consumption"] == 15_000


def test_tax_per_line_and_per_bill() -> None:
    # water 1.111 m³ × 2.00 = 2.222 -> 2.22, sewage 1.111 -> 1.11; VAT 9 %:
    # per line 0.1998 -> 0.20 and 0.0999 -> 0.10 = 0.30; per bill (2.22 + 1.11) × 9 % = 0.2997 -> 0.30,
    # spread by largest remainder: floors 0.19 + 0.09 = 0.28, +1 to each (remainders .98 and .99)
    for mode in ("line", "bill"):
        rated = rate(book(mode), frame(volume=[1_111]))
        assert rated.lines["tax"].to_list() == [20, 10]
        assert rated.bills["tax"].to_list() == [30]
    # thresholds of 10/20/30/40 litres, 50 L at 2.00/m³: five lines of 2 fen, VAT 9 % = 0.18 fen each:
    # per line 0 each; per bill 10 fen × 9 % = 0.9 -> 1 fen, on the earliest line (equal remainders)
    five = TARIFF.format(tax_rounding="bill").replace('thresholds = ["10"]', 'thresholds = ["0.01", "0.02", "0.03", "0.04"]') \
        .replace('prices = ["2.00", "3.00"]', 'prices = ["2.00", "2.00", "2.00", "2.00", "2.00"]').replace(
        '[[versions.components]]\ncode = "sewage"\nprice = "1.00"\ntax_rate = "0.09"\n', "")
    rated = rate(TariffBook.from_texts({"w.toml": five}), frame(volume=[50]).with_columns(
        period_start=pl.lit(D(2026, 10, 1)), period_end=pl.lit(D(2026, 10, 31))))
    assert rated.lines["amount"].to_list() == [2, 2, 2, 2, 2]
    assert rated.bills["tax"].to_list() == [1]
    assert sorted(rated.lines["tax"].to_list()) == [0, 0, 0, 0, 1]
    assert rated.lines["tax"].to_list()[0] == 1
    per_line = rate(TariffBook.from_texts({"w.toml": five.replace('"bill"', '"line"')}), frame(volume=[50]))
    assert per_line.bills["tax"].to_list() == [0]
    # the bills-only pass rounds the same way: 1 fen per bill, 0 per line
    only = rate(TariffBook.from_texts({"w.toml": five}), frame(volume=[50]), lines=False)
    assert (only.lines.height, only.bills["tax"].to_list()) == (0, [1])
    only = rate(TariffBook.from_texts({"w.toml": five.replace('"bill"', '"line"')}), frame(volume=[50]), lines=False)
    assert only.bills["tax"].to_list() == [0]
    for mode in ("line", "bill"):
        assert rate(book(mode), frame(volume=[1_111]), lines=False).bills["tax"].to_list() == [30]


def test_errors_name_the_tariff_and_rows() -> None:
    f = frame(volume=[1, -5, 3, 4]).with_columns(
        tariff_id=pl.Series(["w", "w", "nope", "w"]),
        period_end=pl.Series([D(2026, 10, 31), D(2026, 10, 31), D(2026, 10, 31), D(2026, 9, 1)]))
    rated = rate(book(), f, on_error="collect")
    reasons = dict(zip(rated.errors["row"].to_list(), rated.errors["reason"].to_list()))
    assert set(reasons) == {2, 3, 4}
    assert "unknown tariff 'nope'" in reasons[3]
    assert "before its start" in reasons[4]
    assert "negative" in reasons[2]
    assert rated.bills["row"].to_list() == [1]
    with pytest.raises(RatingError) as info:
        rate(book(), f)
    assert info.value.rows and str(info.value)


def test_no_version_in_force() -> None:
    with pytest.raises(RatingError, match="no version in force on 2024-12-01") as info:
        rate(book(), frame(volume=[1]).with_columns(period_start=pl.lit(D(2024, 12, 1))))
    assert info.value.tariff_id == "w" and info.value.rows == [1]


def test_missing_column() -> None:
    with pytest.raises(RatingError, match="lacks column"):
        rate(book(), pl.DataFrame({"row": [1], "volume": [1]}))


def test_company_override() -> None:
    own = TARIFF.format(tax_rounding="line").replace('use_type = "residential"',
                                                     'use_type = "residential"\ncompany = "sz"').replace(
        '"2.00", "3.00"', '"4.00", "5.00"')
    b = TariffBook.from_texts({"w.toml": TARIFF.format(tax_rounding="line"), "w-sz.toml": own})
    f = frame(volume=[1_000])
    assert rate(b, f).lines["amount"].to_list()[0] == 200
    assert rate(b, f, company="sz").lines["amount"].to_list()[0] == 400


def test_zero_volume_has_no_lines_and_a_zero_bill() -> None:
    rated = rate(book(), frame(volume=[0]))
    assert rated.lines.height == 0
    assert rated.bills.to_dicts() == [{"row": 1, "consumption": 0, "amount": 0, "tax": 0, "total": 0}]


# --- money ------------------------------------------------------------------------------------

@pytest.mark.parametrize("num, den, rule, out", [
    (25, 10, "half_up", 3), (25, 10, "half_even", 2), (35, 10, "half_even", 4), (29, 10, "down", 2),
    (21, 10, "up", 3), (-25, 10, "half_up", -3), (-21, 10, "up", -3), (20, 10, "up", 2), (0, 7, "half_up", 0),
])
def test_rounding_rules(num, den, rule, out) -> None:
    assert div_round(num, den, rule) == out
    codes = {"half_up": 0, "half_even": 1, "down": 2, "up": 3}
    assert kernel_div_round(num, den, codes[rule]) == out


def test_parsing_and_formatting() -> None:
    assert price_units("3.45") == 3_450_000
    assert m3_to_litres("22.5") == 22_500
    assert tax_ppm("0.09") == 90_000
    for bad, fn in (("1.0001", m3_to_litres), ("x", price_units), ("1", tax_ppm), ("-1", price_units)):
        with pytest.raises(MoneyFormatError):
            fn(bad)
    assert format_money(14369) == "143.69" and format_money(-5) == "-0.05"
    assert format_price(3_450_000) == "3.45" and format_price(12_345) == "0.012345"
    assert format_m3(22_500) == "22.5" and format_m3(1) == "0.001" and format_m3(30_000) == "30"
    assert largest_remainder(10, [1, 1, 1]) == [4, 3, 3]
    assert largest_remainder(5, [0, 0]) == [3, 2]


def test_an_empty_frame_rates_to_empty_frames() -> None:
    rated = rate(book(), frame(volume=[]).cast({"volume": pl.Int64, "row": pl.Int64}))
    assert rated.lines.height == rated.bills.height == rated.errors.height == 0
    assert dict(rated.lines.schema) == LINE_SCHEMA


def test_a_row_split_over_two_versions_names_one_reason() -> None:
    text = TARIFF.format(tax_rounding="line") + '[versions.fixed]\nsizes = { DN15 = "1.00" }\n'
    later = text[text.index("[[versions]]"):].replace("2025-01-01", "2026-10-16")
    b = TariffBook.from_texts({"w.toml": text + later})
    rated = rate(b, frame(volume=[1_000, 1_000], meter_size=["DN20", "DN15"]), on_error="collect")
    assert rated.errors.to_dicts() == [
        {"row": 1, "reason": "w@2025-01-01 has no fixed charge for meter size 'DN20'"}]
    fixed = rated.lines.filter(pl.col("component") == "fixed")
    # DN15: 1.00 a month over 15 + 16 days of 31: 0.48 + 0.52 (cumulative rounding), 1.00 in all
    assert fixed["amount"].to_list() == [48, 52] and fixed["quantity"].to_list() == [1, 1]


def test_limits_that_keep_int64_exact() -> None:
    f = frame(volume=[5_000_000_000, 5_000_000_001, 1], household_size=[1, 1, 101])
    rated = rate(book(), f, on_error="collect")
    assert rated.bills["row"].to_list() == [1]
    reasons = dict(zip(rated.errors["row"].to_list(), rated.errors["reason"].to_list()))
    assert reasons[2].startswith("volume above 5,000,000 m³") and reasons[3] == "more than 100 persons"
    # the largest bill allowed prices exactly: 5 million m³ in tier 2 at 3.00 and sewage at 1.00
    assert rated.bills["amount"].to_list() == [10 * 200 + 4_999_990 * 300 + 5_000_000 * 100]


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.integers(0, 2**63 - 1), st.integers(0, 10**12)), st.integers(1, 2**31))
def test_floor_div_by_reciprocal_is_exact(a, d) -> None:
    assert floor_div(a, d, 1.0 / d) == a // d
    assert floor_div(a - a % d, d, 1.0 / d) == a // d  # exact multiples: the estimate may land one above
