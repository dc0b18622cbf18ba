"""Each sample tariff in config/tariffs quoted with a worked example computed by hand here.

Prices in yuan/m³; amounts are rounded half-up to the fen once per line."""

from __future__ import annotations

import datetime as dt

import pytest

from meterline.rating.quote import QuoteRequest, month_of, quote
from meterline.rating.tariff import TariffBook

D = dt.date


@pytest.fixture(scope="module")
def book() -> TariffBook:
    return TariffBook.load()


def q(book, tariff, m3, *, month=D(2026, 10, 5), start=None, end=None, **kw):
    s, e = (start, end) if start else month_of(month)
    litres = round(m3 * 1000)
    return quote(book, QuoteRequest(tariff_id=tariff, volume=litres, period_start=s, period_end=e, **kw))


def lines(result) -> list[tuple]:
    return [(x["component"], x["tier"], x["quantity"], x["amount"]) for x in result.lines]


def test_every_sample_file_loads(book) -> None:
    assert set(book.ids()) == {"water-residential", "water-residential-annual", "water-nonresidential",
                               "water-special", "example-price-change", "heat-residential"}


def test_residential_monthly_tiers(book) -> None:
    # 35 m³, household of 4 (the base): 22 m³ × 1.75 + 8 × 3.13 + 5 × 4.13 water, 35 × 0.40 resource fee,
    # 35 × 1.30 sewage = 38.50 + 25.04 + 20.65 + 14.00 + 45.50 = 143.69
    # (the same as 22 × 3.45 + 8 × 4.83 + 5 × 5.83 = 75.90 + 38.64 + 29.15)
    r = q(book, "water-residential", 35, household_size=4)
    assert lines(r) == [("water", 1, 22000, 3850), ("water", 2, 8000, 2504), ("water", 3, 5000, 2065),
                        ("resource_fee", None, 35000, 1400), ("sewage", None, 35000, 4550)]
    assert (r.amount, r.tax, r.total) == (14369, 0, 14369)
    assert {x["tariff_version"] for x in r.lines} == {"water-residential@2025-07-01"}


def test_residential_household_size_raises_every_threshold(book) -> None:
    # 6 persons: 2 above the base of 4, +5 m³ each on every threshold: 32 / 40 m³.
    # 35 m³: 32 × 1.75 + 3 × 3.13 = 56.00 + 9.39; + 14.00 + 45.50 = 124.89
    r = q(book, "water-residential", 35, household_size=6)
    assert lines(r)[:2] == [("water", 1, 32000, 5600), ("water", 2, 3000, 939)]
    assert r.total == 12489


def test_residential_shared_meter_multiplies_thresholds(book) -> None:
    # one meter for 2 dwellings: thresholds 44 / 60 m³; 35 m³ all in tier 1: 61.25 + 14.00 + 45.50
    r = q(book, "water-residential", 35, dwellings=2)
    assert lines(r)[0] == ("water", 1, 35000, 6125)
    assert r.total == 12075


def test_residential_bimonthly_bill_doubles_the_tiers(book) -> None:
    # 2026-09-01..2026-10-31 (61 days, 2 months): thresholds 44 / 60 m³; 70 m³:
    # 44 × 1.75 + 16 × 3.13 + 10 × 4.13 + 70 × 0.40 + 70 × 1.30 = 77.00 + 50.08 + 41.30 + 28.00 + 91.00 = 287.38
    r = q(book, "water-residential", 70, start=D(2026, 9, 1), end=D(2026, 10, 31))
    assert [x[:3] for x in lines(r)[:3]] == [("water", 1, 44000), ("water", 2, 16000), ("water", 3, 10000)]
    assert r.total == 28738


def test_residential_older_version_applies_before_its_successor(book) -> None:
    # June 2025, the 2021 prices: 22 × 1.55 + 8 × 2.93 + 30 × 0.40 + 30 × 1.20 = 34.10 + 23.44 + 12.00 + 36.00
    r = q(book, "water-residential", 30, month=D(2025, 6, 10))
    assert r.total == 10554
    assert {x["tariff_version"] for x in r.lines} == {"water-residential@2021-01-01"}


def test_annual_tiers_price_from_the_year_to_date(book) -> None:
    # 150 m³ already this year, 50 m³ now: 30 m³ in tier 1 (to 180), 20 m³ in tier 2:
    # 30 × 2.07 + 20 × 4.07 + 50 × 1.57 + 50 × 1.36 = 62.10 + 81.40 + 78.50 + 68.00 = 290.00 (= 30 × 5 + 20 × 7)
    r = q(book, "water-residential-annual", 50, ytd=150_000, household_size=3)
    assert lines(r) == [("water", 1, 30000, 6210), ("water", 2, 20000, 8140),
                        ("resource_fee", None, 50000, 7850), ("sewage", None, 50000, 6800)]
    assert r.total == 29000
    # 250 m³ so far, 20 m³ now: 10 m³ in tier 2 (to 260), 10 m³ in tier 3: 10 × 7 + 10 × 9 = 160.00
    assert q(book, "water-residential-annual", 20, ytd=250_000).total == 16000


def test_annual_tiers_fixed_raise_for_large_households_on_tier_one_only(book) -> None:
    # 5 persons: the first threshold is 210 m³, the second stays 260: 150 + 50 m³ all in tier 1 = 50 × 5.00
    r = q(book, "water-residential-annual", 50, ytd=150_000, household_size=5)
    assert lines(r)[0] == ("water", 1, 50000, 10350)
    assert r.total == 25000
    # 5 persons, 200 m³ so far, 70 now: 10 in tier 1 (to 210), 50 in tier 2 (to 260), 10 in tier 3
    r = q(book, "water-residential-annual", 70, ytd=200_000, household_size=5)
    assert [x[:3] for x in lines(r)[:3]] == [("water", 1, 10000), ("water", 2, 50000), ("water", 3, 10000)]
    assert r.total == 10 * 500 + 50 * 700 + 10 * 900


def test_annual_tiers_restart_inside_a_bill_that_crosses_the_year_start(book) -> None:
    # a bi-monthly bill 2026-12-01..2027-01-31 (62 days), 62 m³, 250 m³ already in 2026: split at
    # 01-01 by days (31 m³ each); December continues 2026 (10 m³ to 260 in tier 2, 21 m³ in
    # tier 3: 10 × 7 + 21 × 9 = 259.00); January starts 2027 from zero (31 m³ in tier 1: 31 × 5 =
    # 155.00). Not restarting would price 10 m³ in tier 2 and 52 in tier 3: 538.00.
    r = q(book, "water-residential-annual", 62, ytd=250_000, start=D(2026, 12, 1), end=D(2027, 1, 31))
    assert lines(r) == [("water", 2, 10000, 4070), ("water", 3, 21000, 12747), ("resource_fee", None, 31000, 4867),
                        ("sewage", None, 31000, 4216),
                        ("water", 1, 31000, 6417), ("resource_fee", None, 31000, 4867), ("sewage", None, 31000, 4216)]
    assert r.total == 41400
    years = [x["source"]["tier_year_from"] for x in r.lines]
    assert years == ["2026-01-01"] * 4 + ["2027-01-01"] * 3


def test_annual_year_start(book) -> None:
    assert book.year_start("water-residential-annual", D(2026, 10, 5)) == D(2026, 1, 1)
    assert book.year_start("water-residential-annual", D(2026, 1, 1)) == D(2026, 1, 1)


def test_nonresidential_fixed_charge_and_tax_per_bill(book) -> None:
    # DN20, 100 m³: water 410.00 (VAT 3 %), resource fee 50.00, sewage 160.00, fixed 8.00 (VAT 3 %);
    # VAT on the bill: (410.00 + 8.00) × 3 % = 12.54 -> water 12.30, fixed 0.24
    r = q(book, "water-nonresidential", 100, meter_size="DN20")
    assert [(x["component"], x["amount"], x["tax"]) for x in r.lines] == [
        ("water", 41000, 1230), ("resource_fee", 5000, 0), ("sewage", 16000, 0), ("fixed", 800, 24)]
    assert (r.amount, r.tax, r.total) == (62800, 1254, 64054)


def test_nonresidential_minimum_charge(book) -> None:
    # DN20, 1.5 m³: water 6.15 + resource 0.75 + sewage 2.40 = 9.30 < the 10.00 minimum: +0.70;
    # fixed 8.00 comes on top. VAT: (6.15 + 8.00) × 3 % = 0.4245 -> 0.42 (water 0.18, fixed 0.24)
    r = q(book, "water-nonresidential", 1.5, meter_size="DN20")
    assert [(x["component"], x["amount"], x["tax"]) for x in r.lines] == [
        ("water", 615, 18), ("resource_fee", 75, 0), ("sewage", 240, 0), ("fixed", 800, 24), ("minimum", 70, 0)]
    assert (r.amount, r.tax) == (1800, 42)


def test_special_industry_tax_per_line(book) -> None:
    # DN40, 0.333 m³: water 0.333 × 15.80 = 5.2614 -> 5.26, VAT 0.1578 -> 0.16; resource 0.666 -> 0.67;
    # sewage 0.7326 -> 0.73; fixed 30.00, VAT 0.90
    r = q(book, "water-special", 0.333, meter_size="DN40")
    assert [(x["component"], x["amount"], x["tax"]) for x in r.lines] == [
        ("water", 526, 16), ("resource_fee", 67, 0), ("sewage", 73, 0), ("fixed", 3000, 90)]
    assert r.total == 526 + 67 + 73 + 3000 + 16 + 90


def test_mid_period_price_change_is_split_by_days(book) -> None:
    # October 2026, 40 m³; new prices from 10-16: 15 days old, 16 days new (of 31).
    # volume: 40000 × 15 / 31 = 19354 L, then 20646 L; thresholds 22 / 30 m³: 10645 / 14516 L, then 11355 / 15484 L
    # old: 10645 × 1.75 = 18.63, 3871 × 3.13 = 12.12, 4838 × 4.13 = 19.98, sewage 25.16, garbage 4.84
    # new: 11355 × 2.05 = 23.28, 4129 × 3.43 = 14.16, 5162 × 4.43 = 22.87, sewage 29.94, garbage 5.16
    r = q(book, "example-price-change", 40)
    assert lines(r) == [
        ("water", 1, 10645, 1863), ("water", 2, 3871, 1212), ("water", 3, 4838, 1998),
        ("sewage", None, 19354, 2516), ("garbage", None, 19354, 484),
        ("water", 1, 11355, 2328), ("water", 2, 4129, 1416), ("water", 3, 5162, 2287),
        ("sewage", None, 20646, 2994), ("garbage", None, 20646, 516)]
    assert r.total == 17614
    first, last = r.lines[0]["source"], r.lines[-1]["source"]
    assert (first["from"], first["to"], first["days"]) == ("2026-10-01", "2026-10-15", 15)
    assert (last["from"], last["to"], last["days"]) == ("2026-10-16", "2026-10-31", 16)
    assert r.lines[0]["tariff_version"] == "example-price-change@2025-07-01"
    assert r.lines[-1]["tariff_version"] == "example-price-change@2026-10-16"


@pytest.mark.parametrize("kw, heated, amount", [
    ({}, 121, 214800),                                          # the whole season: 89.50 × 24.00
    ({"heating_stop": D(2027, 1, 10)}, 56, 99412),              # 2148 × 56 / 121 = 994.1157
    ({"heating_resume": D(2026, 12, 1)}, 105, 186397),          # stopped to 11-30: 2148 × 105 / 121
    ({"heating_stop": D(2026, 12, 1), "heating_resume": D(2027, 1, 1)}, 90, 159769),  # December off
])
def test_area_heating_prorated_by_heated_days(book, kw, heated, amount) -> None:
    r = q(book, "heat-residential", 0, start=D(2026, 11, 15), end=D(2027, 3, 15), area_cm2=8950, **kw)
    assert len(r.lines) == 1
    line = r.lines[0]
    assert (line["component"], line["quantity"], line["unit_price"]) == ("heating", 8950, 24_000_000)
    assert line["source"]["heated_days"] == heated and line["source"]["season_days"] == 121
    assert r.total == amount


def test_area_heating_monthly_bill(book) -> None:
    # December 2026 alone: 31 of 121 days: 2148 × 31 / 121 = 550.314 -> 550.31
    assert q(book, "heat-residential", 0, month=D(2026, 12, 1), area_cm2=8950).total == 55031
