"""The numba path (rate()) agrees line by line with a plain-Python reference on random tariffs and bills."""

from __future__ import annotations

import json

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meterline.rating.engine import rate
from meterline.rating.errors import RatingError
from meterline.rating.tariff import TariffBook

from tests.unit.rating.reference import rate_one
from tests.unit.rating.strategies import bill_row, tariff_toml

SCHEMA = {"row": pl.Int64, "tariff_id": pl.Utf8, "period_start": pl.Date, "period_end": pl.Date,
          "volume": pl.Int64, "apportioned": pl.Int64, "ytd": pl.Int64, "household_size": pl.Int16,
          "dwellings": pl.Int16, "meter_size": pl.Utf8, "area_cm2": pl.Int64, "heating_stop": pl.Date,
          "heating_resume": pl.Date, "meter_sizes": pl.List(pl.Utf8), "heating_stops": pl.List(pl.Date),
          "heating_resumes": pl.List(pl.Date)}


def frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=SCHEMA)


@st.composite
def case(draw):
    texts = {"a.toml": draw(tariff_toml("a")), "b.toml": draw(tariff_toml("b"))}
    n = draw(st.integers(1, 12))
    rows = [draw(bill_row(draw(st.sampled_from(["a", "b"])), i)) for i in range(n)]
    return texts, rows


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case())
def test_rate_matches_reference(c) -> None:
    texts, rows = c
    book = TariffBook.from_texts(texts)
    rated = rate(book, frame(rows), on_error="collect")
    # the bills-only pass (one kernel pass, no line table) gives the same bills and errors
    totals = rate(book, frame(rows), on_error="collect", lines=False)
    assert totals.bills.sort("row").to_dicts() == rated.bills.sort("row").to_dicts()
    assert totals.errors.sort("row").to_dicts() == rated.errors.sort("row").to_dicts()
    assert totals.lines.height == 0
    errors = dict(zip(rated.errors["row"].to_list(), rated.errors["reason"].to_list()))
    bills = {b["row"]: b for b in rated.bills.iter_rows(named=True)}
    lines = rated.lines.sort("row", "line_no")
    for row in rows:
        try:
            ref = rate_one(book, row)
        except RatingError:
            assert row["row"] in errors
            assert row["row"] not in bills
            continue
        assert row["row"] not in errors, errors.get(row["row"])
        got = lines.filter(pl.col("row") == row["row"]).to_dicts()
        assert len(got) == len(ref.lines), (got, ref.lines)
        for g, r in zip(got, ref.lines):
            src = json.loads(g["source"])
            assert (g["line_no"], g["component"], g["tier"], g["quantity"], g["unit_price"], g["amount"], g["tax"]) \
                == (r["line_no"], r["component"], r["tier"], r["quantity"], r["unit_price"], r["amount"], r["tax"])
            assert (src["kind"], src["from"], src["to"], src["days"]) == \
                (r["kind"], r["from"].isoformat(), r["to"].isoformat(), r["days"])
            assert g["tariff_version"] == r["version"]
            if r["kind"] == "heating":
                assert src["heated_days"] == r["heated_days"]
        assert bills[row["row"]]["amount"] == ref.amount
        assert bills[row["row"]]["tax"] == ref.tax
        assert bills[row["row"]]["total"] == ref.amount + ref.tax
        assert bills[row["row"]]["consumption"] == row["volume"] + row["apportioned"]
