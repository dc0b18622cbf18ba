"""``meterline quote --tariff ID --volume M3 [...]``: price one case without the database.

The tariffs come from ``rating.tariff_dir`` (default: config/tariffs shipped with meterline);
the company's own tariff file wins over the shared one (``--company`` / ``utility.company``).
Volumes are m³ as decimal strings (``--volume 22.5``); the period is the calendar month of
``--date`` (default today) unless ``--period-start`` and ``--period-end`` are given. ``--json``
prints lines (component, tier, quantity, unit price, amount and tax in minor units) and the total.

Area-based heating: ``--heating-suspension STOP[:RESUME]``, as often as the case needs (STOP the
first unheated day, empty for the season's start; RESUME the first heated day again, left out
while not resumed), e.g. ``--heating-suspension 2026-12-03:2026-12-05 --heating-suspension
2026-12-28``. ``--heating-stop D`` / ``--heating-resume D`` (once each) give one suspension as
before. Suspensions that overlap or resume on or before their stop are refused (exit 2); those
overlapping the period are rated as the billing run rates an account's stored ones and are listed
(``--json``: ``heating_suspensions``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json

from rich.table import Table

from meterline.cli._base import Command, Context
from meterline.rating import money
from meterline.rating.quote import Quote, QuoteRequest, SuspensionError, describe, month_of, quote
from meterline.rating.tariff import load_book


def _m3(text: str) -> int:
    try:
        return money.m3_to_litres(text)
    except money.MoneyFormatError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (m³, e.g. 22 or 22.5; at most 3 decimals)") from None


def _m2(text: str) -> int:
    try:
        return money.parse_scaled(text, 100, what="area")
    except money.MoneyFormatError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (m², at most 2 decimals)") from None


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _suspension(text: str) -> tuple[dt.date | None, dt.date | None]:
    stop, _, resume = text.partition(":")
    try:
        pair = (dt.date.fromisoformat(stop) if stop else None, dt.date.fromisoformat(resume) if resume else None)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not STOP[:RESUME] (YYYY-MM-DD, e.g. "
                                         "2026-12-03:2026-12-05, 2026-12-28 or :2026-12-01)") from None
    if pair == (None, None):
        raise argparse.ArgumentTypeError(f"{text!r}: give a stop date, a resume date or both")
    return pair


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"{value} must be between 1 and 1000")
    return value


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tariff", required=True, metavar="ID", help="tariff id (a file in rating.tariff_dir)")
    p.add_argument("--volume", required=True, type=_m3, metavar="M3", help="volume of the period in m³")
    p.add_argument("--household-size", type=_count, default=0, metavar="N", help="persons in the household")
    p.add_argument("--dwellings", type=_count, default=1, metavar="N", help="dwellings on a shared meter")
    p.add_argument("--year-to-date", type=_m3, default=0, metavar="M3",
                   help="m³ already billed this tariff year (annual tiers)")
    p.add_argument("--apportioned", type=_m3, default=0, metavar="M3", help="apportioned master-meter volume")
    p.add_argument("--date", type=_date, metavar="D", help="a day of the month to price (default today)")
    p.add_argument("--period-start", type=_date, metavar="D", help="first day of the period (with --period-end)")
    p.add_argument("--period-end", type=_date, metavar="D", help="last day of the period (inclusive)")
    p.add_argument("--meter-size", metavar="DN15", help="meter size (fixed charge by size)")
    p.add_argument("--area", type=_m2, metavar="M2", help="heated floor area in m² (area-based heating)")
    p.add_argument("--heating-suspension", type=_suspension, action="append", default=[], metavar="STOP[:RESUME]",
                   help="heating stopped from STOP (empty: the season's start) to the day before RESUME (left out: "
                        "not resumed); repeat for every suspension")
    p.add_argument("--heating-stop", type=_date, action="append", default=[], metavar="D",
                   help="heating stopped from this day (one suspension; several: --heating-suspension)")
    p.add_argument("--heating-resume", type=_date, action="append", default=[], metavar="D",
                   help="heating resumed from this day (with --heating-stop, or stopped from the season's start)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(ctx: Context, args: argparse.Namespace) -> int:
    if (args.period_start is None) != (args.period_end is None):
        ctx.console.print("error: give both --period-start and --period-end, or neither")
        return 2
    if args.period_start is not None:
        if args.date is not None:
            ctx.console.print("error: --date and --period-start/--period-end exclude each other")
            return 2
        start, end = args.period_start, args.period_end
    else:
        start, end = month_of(args.date or dt.date.today())
    for flag, given in (("--heating-stop", args.heating_stop), ("--heating-resume", args.heating_resume)):
        if len(given) > 1:
            ctx.console.print(f"error: {flag} is one suspension and given {len(given)} times; for several, "
                              "give --heating-suspension STOP[:RESUME] for each")
            return 2
    req = QuoteRequest(tariff_id=args.tariff, volume=args.volume, period_start=start, period_end=end,
                       household_size=args.household_size, dwellings=args.dwellings, ytd=args.year_to_date,
                       apportioned=args.apportioned, meter_size=args.meter_size, area_cm2=args.area,
                       heating_stop=next(iter(args.heating_stop), None),
                       heating_resume=next(iter(args.heating_resume), None),
                       heating_suspensions=tuple(args.heating_suspension))
    book = load_book(ctx.settings)
    try:
        result = quote(book, req, company=ctx.company_code or ctx.settings.utility.company)
    except SuspensionError as exc:
        ctx.console.print(f"error: {exc}")
        return 2
    if args.json:
        print(json.dumps(result.to_json(), ensure_ascii=False, indent=1))
    else:
        ctx.console.print(_table(result))
    return 0


def _quantity(line: dict) -> str:
    unit = line["quantity_unit"]
    if unit == "litre":
        return f"{money.format_m3(line['quantity'])} m³"
    if unit == "0.01 m2":
        return f"{money.format_money(line['quantity'])} m²"
    return f"{line['quantity']} month{'s' if line['quantity'] != 1 else ''}"


def _table(q: Quote) -> Table:
    minor = q.tariff.minor_units
    r = q.request
    versions = list(dict.fromkeys(line["tariff_version"] for line in q.lines))
    title = f"{q.tariff.id} {r.period_start}..{r.period_end}: {money.format_m3(r.volume)} m³"
    caption = (f"{q.tariff.name}; version {', '.join(versions) or '-'}\n"
               f"amount {money.format_money(q.amount, minor)}  tax {money.format_money(q.tax, minor)}  "
               f"total {money.format_money(q.total, minor)}")
    if q.heating_suspensions:
        caption += "".join(f"\nheating {describe(a, b)}" for a, b in q.heating_suspensions)
    table = Table(title=title, caption=caption)
    for col in ("#", "component", "tier", "quantity", "unit price", "amount", "tax", "part"):
        table.add_column(col, justify="right" if col in ("#", "tier", "quantity", "unit price", "amount", "tax")
                         else "left")
    for line in q.lines:
        src = line["source"]
        part = []
        if src["days"] != src["period_days"]:
            part.append(f"{src['from'][5:]} +{src['days']}d")
        if line["kind"] in ("apportioned", "minimum"):
            part.append(line["kind"])
        if line["kind"] == "heating":
            part.append(f"{src['heated_days']}/{src['season_days']}d heated")
        table.add_row(str(line["line_no"]), line["component"], "" if line["tier"] is None else str(line["tier"]),
                      _quantity(line), money.format_price(line["unit_price"], minor),
                      money.format_money(line["amount"], minor), money.format_money(line["tax"], minor),
                      " ".join(part))
    table.add_row("", "total", "", "", "", money.format_money(q.amount, minor), money.format_money(q.tax, minor), "")
    return table


COMMANDS = [Command("quote", "price one case of a tariff without the database", run, configure,
                    description="Price one case of a tariff without the database: volumes in m³, amounts "
                                "in yuan (--json: minor units).")]
