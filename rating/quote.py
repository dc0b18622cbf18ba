"""Price one case without the database (``meterline quote``): customer service and tests.

``quote(book, QuoteRequest(...))`` rates a one-row frame with :func:`meterline.rating.engine.rate`
— the same code path as the billing run — and returns its lines and total. ``Quote.to_json()``
is the JSON the CLI prints: amounts in minor units (fen), unit prices at ``price_scale``,
quantities in litres (volume lines), 0.01 m² (heating) or months (fixed and minimum charges).
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from meterline.rating.engine import rate
from meterline.rating.errors import RatingError
from meterline.rating.tariff import Tariff, TariffBook

QUANTITY_UNITS = {"fixed": "month", "minimum": "month", "heating": "0.01 m2"}


@dataclass(frozen=True, slots=True)
class QuoteRequest:
    tariff_id: str
    volume: int                      # litres
    period_start: dt.date
    period_end: dt.date
    household_size: int = 0          # 0: the tariff's base size
    dwellings: int = 1
    ytd: int = 0                     # litres already billed this tariff year (annual tiers)
    apportioned: int = 0             # litres
    meter_size: str | None = None
    area_cm2: int | None = None      # 0.01 m²
    heating_stop: dt.date | None = None
    heating_resume: dt.date | None = None


@dataclass(frozen=True)
class Quote:
    request: QuoteRequest
    tariff: Tariff
    lines: list[dict[str, Any]] = field(default_factory=list)
    amount: int = 0
    tax: int = 0

    @property
    def total(self) -> int:
        return self.amount + self.tax

    def to_json(self) -> dict[str, Any]:
        r = self.request
        return {
            "tariff": self.tariff.id,
            "tariff_name": self.tariff.name,
            "period_start": r.period_start.isoformat(),
            "period_end": r.period_end.isoformat(),
            "volume": r.volume,
            "volume_unit": "litre",
            "household_size": r.household_size or None,
            "dwellings": r.dwellings,
            "year_to_date": r.ytd,
            "minor_units": self.tariff.minor_units,
            "lines": self.lines,
            "amount": self.amount,
            "tax": self.tax,
            "total": self.total,
        }


def month_of(day: dt.date) -> tuple[dt.date, dt.date]:
    """The calendar month containing ``day``: (first day, last day)."""
    last = calendar.monthrange(day.year, day.month)[1]
    return day.replace(day=1), day.replace(day=last)


def quote(book: TariffBook, req: QuoteRequest, *, company: str | None = None) -> Quote:
    """Rate one case; raises RatingError (unknown tariff, no version in force, ...)."""
    tariff = book.get(req.tariff_id, company)
    frame = pl.DataFrame({
        "row": [0], "tariff_id": [req.tariff_id], "period_start": [req.period_start], "period_end": [req.period_end],
        "volume": [req.volume], "apportioned": [req.apportioned], "ytd": [req.ytd],
        "household_size": [req.household_size], "dwellings": [req.dwellings], "meter_size": [req.meter_size],
        "area_cm2": [req.area_cm2], "heating_stop": [req.heating_stop], "heating_resume": [req.heating_resume],
    }, schema={"row": pl.Int64, "tariff_id": pl.Utf8, "period_start": pl.Date, "period_end": pl.Date,
               "volume": pl.Int64, "apportioned": pl.Int64, "ytd": pl.Int64, "household_size": pl.Int16,
               "dwellings": pl.Int16, "meter_size": pl.Utf8, "area_cm2": pl.Int64, "heating_stop": pl.Date,
               "heating_resume": pl.Date})
    try:
        rated = rate(book, frame, company=company)
    except RatingError as exc:  # one case: no row keys to name
        raise RatingError(exc.reason, exc.tariff_id) from None
    lines = []
    for line in rated.lines.sort("line_no").iter_rows(named=True):
        source = json.loads(line["source"])
        lines.append({
            "line_no": line["line_no"],
            "component": line["component"],
            "kind": source["kind"],
            "tier": line["tier"],
            "quantity": line["quantity"],
            "quantity_unit": QUANTITY_UNITS.get(source["kind"], "litre"),
            "unit_price": line["unit_price"],
            "price_scale": line["price_scale"],
            "amount": line["amount"],
            "tax": line["tax"],
            "tariff_version": line["tariff_version"],
            "source": source,
        })
    bill = rated.bills.row(0, named=True)
    return Quote(request=req, tariff=tariff, lines=lines, amount=bill["amount"], tax=bill["tax"])
