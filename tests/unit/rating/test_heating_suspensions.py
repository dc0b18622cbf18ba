"""Area-based heating with any number of suspensions in one bill (``heating_stops`` /
``heating_resumes``): worked examples, refused input, the properties of heated days, and
``quote`` pricing them as the billing run does."""

from __future__ import annotations

import datetime as dt
import json
import re

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterline.rating import kernels
from meterline.rating.engine import rate
from meterline.rating.errors import RatingError
from meterline.rating.quote import QuoteRequest, SuspensionError, quote
from meterline.rating.tariff import TariffBook

D = dt.date
SEASON = (D(2026, 11, 15), D(2027, 3, 15))   # 121 days

HEAT = '''
id = "heat"
use_type = "residential"
[[versions]]
effective = "2020-11-15"
[versions.heating]
price = "24.00"
season_start = "11-15"
season_end = "03-15"
'''

SCHEMA = {"row": pl.Int64, "tariff_id": pl.Utf8, "period_start": pl.Date, "period_end": pl.Date, "volume": pl.Int64,
          "area_cm2": pl.Int64, "heating_stop": pl.Date, "heating_resume": pl.Date,
          "heating_stops": pl.List(pl.Date), "heating_resumes": pl.List(pl.Date)}


@pytest.fixture(scope="module")
def book() -> TariffBook:
    return TariffBook.from_texts({"heat.toml": HEAT})


def frame(rows: list[dict]) -> pl.DataFrame:
    base = {"tariff_id": "heat", "volume": 0, "area_cm2": 10_000, "heating_stop": None, "heating_resume": None,
            "heating_stops": None, "heating_resumes": None}
    return pl.DataFrame([{**base, "row": i, **r} for i, r in enumerate(rows)], schema=SCHEMA)


def heating(rated) -> list[tuple[int, int, int]]:
    """(row, heated days, amount) of every heating line."""
    return [(r, json.loads(s)["heated_days"], a) for r, s, a in
            rated.lines.filter(pl.col("component") == "heating").select("row", "source", "amount").iter_rows()]


def test_two_stops_in_one_monthly_bill(book) -> None:
    # December 2026, 100 m² at 24 yuan a season of 121 days: 2400 yuan × heated days / 121
    dec = {"period_start": D(2026, 12, 1), "period_end": D(2026, 12, 31)}
    rated = rate(book, frame([
        dict(dec),                                                                  # 31 days heated
        dict(dec, heating_stops=[D(2026, 12, 3), D(2026, 12, 20)],                  # 3–4 and 20–21 off
             heating_resumes=[D(2026, 12, 5), D(2026, 12, 22)]),
        dict(dec, heating_stops=[D(2026, 11, 20), D(2026, 12, 28)],                 # off to the 9th, from the 28th
             heating_resumes=[D(2026, 12, 10), None]),
        dict(dec, heating_stops=[None, D(2026, 12, 25)],                            # off from the season's start
             heating_resumes=[D(2026, 12, 2), D(2026, 12, 26)]),                    # to the 1st, and the 25th
    ]))
    assert rated.errors.height == 0
    # 240000 × 31 / 121 = 61487.6; × 27 / 121 = 53553.7; × (31 − 9 − 4) / 121 = 35702.5 (half up);
    # × (31 − 1 − 1) / 121 = 57520.7
    assert heating(rated) == [(0, 31, 61488), (1, 27, 53554), (2, 18, 35702), (3, 29, 57521)]


def test_two_stops_in_a_bill_over_the_whole_season(book) -> None:
    # the season billed at once: 121 days less 10 (1–10 December) less 31 (January) = 80 heated days
    rated = rate(book, frame([dict(period_start=SEASON[0], period_end=SEASON[1],
                                   heating_stops=[D(2026, 12, 1), D(2027, 1, 1)],
                                   heating_resumes=[D(2026, 12, 11), D(2027, 2, 1)])]))
    assert heating(rated) == [(0, 80, 158678)]   # 240000 × 80 / 121 = 158677.7


def test_the_single_pair_and_the_lists_add_up(book) -> None:
    dec = {"period_start": D(2026, 12, 1), "period_end": D(2026, 12, 31)}
    rated = rate(book, frame([
        dict(dec, heating_stop=D(2026, 12, 3), heating_resume=D(2026, 12, 5),
             heating_stops=[D(2026, 12, 20)], heating_resumes=[D(2026, 12, 22)]),
        dict(dec, heating_stops=[D(2026, 12, 3), D(2026, 12, 20)], heating_resumes=[D(2026, 12, 5), D(2026, 12, 22)]),
        # the single pair alone, resuming before its stop: no day off, as before the lists
        dict(dec, heating_stop=D(2026, 12, 10), heating_resume=D(2026, 12, 5)),
    ]))
    assert heating(rated) == [(0, 27, 53554), (1, 27, 53554), (2, 31, 61488)]


def test_split_period_counts_each_part_and_the_parts_sum(book) -> None:
    # a price change on 16 December splits the bill; one stop in each part
    two = HEAT + '''
[[versions]]
effective = "2026-12-16"
[versions.heating]
price = "30.00"
season_start = "11-15"
season_end = "03-15"
'''
    b = TariffBook.from_texts({"heat.toml": two})
    rated = rate(b, frame([dict(period_start=D(2026, 12, 1), period_end=D(2026, 12, 31),
                                heating_stops=[D(2026, 12, 3), D(2026, 12, 14)],
                                heating_resumes=[D(2026, 12, 5), D(2026, 12, 20)])]))
    # 1–15: 15 days less 3–4 and 14–15 = 11; 16–31: 16 days less 16–19 = 12
    # 240000 × 11 / 121 = 21818.2; 300000 × 12 / 121 = 29752.1
    assert heating(rated) == [(0, 11, 21818), (0, 12, 29752)]


@pytest.mark.parametrize("stops, resumes, reason", [
    ([D(2026, 12, 3)], [], "differ in length"),
    ([None], [None], "needs a stop or a resume date"),
    ([D(2026, 12, 5)], [D(2026, 12, 5)], "must be after the stop"),
    ([D(2026, 12, 3), D(2026, 12, 8)], [D(2026, 12, 10), D(2026, 12, 12)], "overlap: 2026-12-03..2026-12-09 and"),
    ([D(2026, 12, 3), None], [None, D(2026, 12, 20)], "overlap"),
])
def test_bad_suspensions_are_refused_with_the_reason(book, stops, resumes, reason) -> None:
    rows = frame([dict(period_start=D(2026, 12, 1), period_end=D(2026, 12, 31), heating_stops=stops,
                       heating_resumes=resumes),
                  dict(period_start=D(2026, 12, 1), period_end=D(2026, 12, 31))])
    rated = rate(book, rows, on_error="collect")
    assert rated.errors["row"].to_list() == [0]
    assert reason in rated.errors["reason"][0]
    assert rated.bills["row"].to_list() == [1]
    with pytest.raises(RatingError, match=reason.split(":")[0]):
        rate(book, rows)


# -- quote: the same suspensions, the same figure -------------------------------------------------

def quoted(book, start, end, susp, **kw):
    return quote(book, QuoteRequest(tariff_id="heat", volume=0, period_start=start, period_end=end, area_cm2=10_000,
                                    heating_suspensions=tuple(susp), **kw))


def test_quote_with_two_suspensions_prices_as_the_run(book) -> None:
    # December 2026, 100 m²: off 3–4 December (resumed the 5th) and 20–21 December (resumed the 22nd):
    # 31 − 2 − 2 = 27 heated days; 240000 × 27 / 121 = 53553.7 -> 53554, the billing run's figure for
    # the same two stored stops (tests/integration/rating/test_bill_run_seasons.py, account H4)
    dec = (D(2026, 12, 1), D(2026, 12, 31))
    two = [(D(2026, 12, 20), D(2026, 12, 22)), (D(2026, 12, 3), D(2026, 12, 5))]   # in any order
    q = quoted(book, *dec, two + [(D(2026, 11, 16), D(2026, 11, 20))])             # and one before the period
    (line,) = q.lines
    assert (line["source"]["heated_days"], line["source"]["season_days"], q.amount) == (27, 121, 53554)
    # the rated suspensions, in stop order; November's is not in the period (the run would not read it)
    assert q.heating_suspensions == sorted(two)
    assert q.to_json()["heating_suspensions"] == [{"stop": "2026-12-03", "resume": "2026-12-05"},
                                                  {"stop": "2026-12-20", "resume": "2026-12-22"}]
    assert heated_of(book, *dec, two) == (27, 53554)          # the engine on the run's list columns
    # the single pair still counts, as one more suspension
    q = quoted(book, *dec, [(D(2026, 12, 20), D(2026, 12, 22))], heating_stop=D(2026, 12, 3),
               heating_resume=D(2026, 12, 5))
    assert (q.lines[0]["source"]["heated_days"], q.amount) == (27, 53554)
    # open ends: off to the 1st (from the season's start) and from the 28th (not resumed): 31 − 1 − 4
    q = quoted(book, *dec, [(None, D(2026, 12, 2)), (D(2026, 12, 28), None)])
    assert (q.lines[0]["source"]["heated_days"], q.amount) == (26, 51570)   # 240000 × 26 / 121 = 51570.2


@pytest.mark.parametrize("susp, kw, reason", [
    ([(D(2026, 12, 3), D(2026, 12, 10)), (D(2026, 12, 8), D(2026, 12, 12))], {},
     "heating suspensions overlap: stopped 2026-12-03, resumed 2026-12-10 and stopped 2026-12-08, resumed 2026-12-12"),
    ([(D(2026, 12, 3), None), (D(2026, 12, 20), D(2026, 12, 22))], {}, "overlap: stopped 2026-12-03, not resumed"),
    ([(None, D(2026, 12, 5)), (None, D(2026, 12, 2))], {}, "overlap: stopped from the season's start"),
    ([(D(2026, 12, 20), D(2026, 12, 22))], {"heating_stop": D(2026, 12, 21)}, "overlap"),
    ([(D(2026, 12, 10), D(2026, 12, 5))], {},
     "heating stopped 2026-12-10, resumed 2026-12-05: the resume date must be after the stop date"),
    ([(D(2026, 12, 10), D(2026, 12, 10))], {}, "must be after the stop date"),
    ([], {"heating_stop": D(2026, 12, 10), "heating_resume": D(2026, 12, 5)}, "must be after the stop date"),
    ([(None, None)], {}, "needs a stop or a resume date"),
    # checked even where outside the period
    ([(D(2026, 11, 16), D(2026, 11, 20)), (D(2026, 11, 18), D(2026, 11, 25))], {}, "overlap"),
])
def test_quote_refuses_bad_suspensions_with_the_reason(book, susp, kw, reason) -> None:
    with pytest.raises(SuspensionError, match=re.escape(reason)) as info:
        quoted(book, D(2026, 12, 1), D(2026, 12, 31), susp, **kw)
    assert isinstance(info.value, RatingError) and info.value.suspensions


def test_quote_takes_adjacent_suspensions(book) -> None:
    # 3–9 then 10–14 December (resumed on the day the next stops), as one stop 3–14: 31 − 12 = 19
    q = quoted(book, D(2026, 12, 1), D(2026, 12, 31), [(D(2026, 12, 10), D(2026, 12, 15)),
                                                       (D(2026, 12, 3), D(2026, 12, 10))])
    assert (q.lines[0]["source"]["heated_days"], q.amount) == (19, 37686)   # the run's figure (account H5)


# -- properties ----------------------------------------------------------------------------------

@st.composite
def suspensions(draw, first: dt.date, days: int) -> list[tuple[dt.date | None, dt.date | None]]:
    """Non-overlapping suspensions around [first, first + days): sorted cut points; each
    suspension from one cut to a later one (the first may lack its stop, the last its resume)."""
    cuts = sorted(draw(st.sets(st.integers(-40, days + 40), max_size=8)))
    out = []
    k = 0
    while k + 1 < len(cuts):
        if draw(st.booleans()):
            out.append((first + dt.timedelta(days=cuts[k]), first + dt.timedelta(days=cuts[k + 1])))
            k += 2 if draw(st.booleans()) else 1   # the next one may start where this one resumed
        else:
            k += 1
    if out and draw(st.booleans()):
        out[0] = (None, out[0][1])
    if out and out[-1][0] is not None and draw(st.booleans()):
        out[-1] = (out[-1][0], None)
    return out


@st.composite
def bills(draw):
    start = SEASON[0] + dt.timedelta(days=draw(st.integers(-40, 130)))
    end = start + dt.timedelta(days=draw(st.integers(0, 60)))
    return start, end, draw(suspensions(start, (end - start).days + 1))


def expected_heated(start: dt.date, end: dt.date, susp) -> int:
    n = 0
    day = max(start, SEASON[0])
    while day <= min(end, SEASON[1]):
        off = any((s is None or s <= day) and (r is None or day < r) for s, r in susp)
        n += 0 if off else 1
        day += dt.timedelta(days=1)
    return n


def split(susp, draw) -> list:
    """Each suspension cut at one of its inner days into two adjacent ones (resume = next stop)."""
    out = []
    for s, r in susp:
        if s is not None and r is not None and (r - s).days >= 2:
            cut = s + dt.timedelta(days=draw(st.integers(1, (r - s).days - 1)))
            out += [(s, cut), (cut, r)]
        else:
            out.append((s, r))
    return out


def heated_of(book, start, end, susp) -> tuple[int, int]:
    rated = rate(book, frame([dict(period_start=start, period_end=end, heating_stops=[s for s, _ in susp],
                                   heating_resumes=[r for _, r in susp])]))
    found = heating(rated)
    return (found[0][1], found[0][2]) if found else (0, 0)


@settings(max_examples=150, deadline=None)
@given(case=bills(), data=st.data())
def test_heated_days_within_the_season_and_unchanged_by_splitting_a_suspension(book, case, data) -> None:
    if (case[1] < SEASON[0]) or (case[0] > SEASON[1]):
        return  # outside the season: no heating line at all
    start, end, susp = case
    season_days_in_bill = (min(end, SEASON[1]) - max(start, SEASON[0])).days + 1
    heated, amount = heated_of(book, start, end, susp)
    assert 0 <= heated <= season_days_in_bill
    assert heated == expected_heated(start, end, susp)
    assert amount == (240_000 * heated * 2 + 121) // (2 * 121)   # half up, once
    # splitting suspensions into adjacent ones (and listing them in any order) changes nothing
    parts = split(susp, data.draw)
    parts = data.draw(st.permutations(parts))
    assert heated_of(book, start, end, parts) == (heated, amount)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(-50, 50), st.integers(0, 40)), max_size=6),
       st.integers(-20, 20), st.integers(-5, 40))
def test_kernel_never_negative_nor_above_the_days_even_for_overlapping_ranges(ranges, a, length) -> None:
    # the kernel takes a day off once however the ranges overlap (the engine refuses overlaps)
    by_lo = sorted(ranges)
    hi = np.array([x + w for x, w in by_lo], dtype=np.int64)
    lo = np.array([x for x, _ in by_lo], dtype=np.int64)
    b = a + length
    got = kernels.heated_days(np.zeros(1, dtype=np.int64), np.array([a], dtype=np.int64),
                              np.array([b], dtype=np.int64), np.array([0, len(lo)], dtype=np.int64), lo, hi)[0]
    want = sum(1 for d in range(a, b + 1) if not any(x <= d <= x + w for x, w in ranges))
    assert got == want
    assert 0 <= got <= max(0, b - a + 1)


@settings(max_examples=100, deadline=None)
@given(case=bills(), data=st.data())
def test_quote_prices_any_suspensions_as_the_run_lists(book, case, data) -> None:
    start, end, susp = case
    given_order = data.draw(st.permutations(susp))
    q = quoted(book, start, end, given_order)
    lines = [x for x in q.lines if x["kind"] == "heating"]
    assert (lines[0]["source"]["heated_days"] if lines else 0, q.amount) == heated_of(book, start, end, susp)
