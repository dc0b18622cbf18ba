"""The deterministic writers every export uses: money as text, periods, CSV, JSON, Parquet."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterline.exporters._files import (ExportError, Period, csv_bytes, json_line, money, parquet_bytes, scaled,
                                        unit_price_text, utc_iso)
from meterline.exporters.reports import Report, bucket, report_csv


@given(st.integers(min_value=-10**15, max_value=10**15))
def test_money_is_exact(minor: int) -> None:
    text = money(minor)
    assert Decimal(text) * 100 == minor and len(text.split(".")[1]) == 2


def test_money_and_prices() -> None:
    assert money(12345) == "123.45" and money(-5) == "-0.05" and money(0) == "0.00" and money(None) == ""
    assert money(12345, 1000) == "12.345"
    assert scaled(112000, 3) == "112.000" and scaled(5, 3) == "0.005"
    # unit_price is minor units at price_scale: 3,000,000 at scale 4 = 300 fen = 3.00 yuan
    assert unit_price_text(3_000_000, 4) == "3.00"
    assert unit_price_text(3_456_700, 4) == "3.4567"
    assert unit_price_text(305, 2) == "0.0305"


def test_period() -> None:
    p = Period.parse("2026-12", "Asia/Shanghai")
    assert (p.first_day, p.last_day) == (dt.date(2026, 12, 1), dt.date(2026, 12, 31))
    assert p.start.utcoffset() == dt.timedelta(hours=8) and p.end.date() == dt.date(2027, 1, 1)
    assert p.shifted(-12, "Asia/Shanghai").code == "2025-12" and p.shifted(1, "UTC").code == "2027-01"
    for bad in ("2026-13", "2026-1", "202610", "October", ""):
        with pytest.raises(ExportError, match="not YYYY-MM"):
            Period.parse(bad, "UTC")


def test_text_writers() -> None:
    assert csv_bytes(("a", "b"), [(1, None), ("x,y", True), (dt.date(2026, 1, 2), "中")]) == \
        'a,b\n1,\n"x,y",true\n2026-01-02,中\n'.encode()
    assert json_line({"b": 1, "a": "水", "d": dt.date(2026, 1, 2)}) == '{"a":"水","b":1,"d":"2026-01-02"}'
    assert utc_iso(dt.datetime(2026, 1, 1, 8, tzinfo=dt.timezone(dt.timedelta(hours=8)))) == "2026-01-01T00:00:00Z"


@given(st.lists(st.tuples(st.integers(-2**62, 2**62), st.text(max_size=8)), max_size=50))
def test_parquet_bytes_are_the_same_every_time(rows: list[tuple[int, str]]) -> None:
    frame = pl.DataFrame(rows, schema={"n": pl.Int64, "s": pl.String}, orient="row")
    data = parquet_bytes(frame)
    assert parquet_bytes(frame.clone()) == data
    import io

    assert pl.read_parquet(io.BytesIO(data)).equals(frame)


def test_aging_buckets_and_report_csv() -> None:
    assert [bucket(d) for d in (-30, -1, 0, 30, 31, 60, 61, 90, 91, 1000)] == [
        "not_due", "not_due", "d0_30", "d0_30", "d31_60", "d31_60", "d61_90", "d61_90", "d90_plus", "d90_plus"]
    rep = Report("x", "t", ("d", "rate", "sec"), [("D1", 2 / 3, 1.5), ("D2", None, None)], ("text", "rate", "float"))
    assert report_csv(rep) == b"d,rate,sec\nD1,0.6667,1.500\nD2,,\n"
