"""How a bill came about, in words a customer-service agent can read out (``meterline bill explain``).

:func:`explain_bill` gathers a bill's reads (``meter_period_read``: opening and closing read
of every meter, where the opening came from, whether a read was estimated, the consumption and
how it was derived), its apportionment (``apportionment`` / ``apportionment_share``: the master
meter, the residual, the policy, the weight and the share) and its lines (component, tier,
quantity, unit price, amount, tax, tariff version, the part of a split period).
A bill with area-based heating also gets the heated days of each heating line (from the line's
source: ``heated_days`` of ``season_days``) and every heating suspension of the account that
overlaps the bill's period (stop day, resume day or not resumed, the days it took off). The
suspensions are not stored with the bill: explain shows them **as stored now** in
``heating_suspension`` and says so; where a suspension was corrected after the bill was issued
(:func:`meterline.rating.heating.set_dates`), the heated days they give now differ from the
bill's and the explanation notes it (the bill keeps what it charged until reversed and billed
again). :func:`render` turns it into lines of text. A bill that bills a reversed bill's period
again (``bill.replaces``, 0650) says which bill it replaces; a reversed bill billed again says by
which. Reads only; the session's scope decides which bills it can see.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg.rows import dict_row

from meterline.errors import NotFound
from meterline.rating import heating
from meterline.store.consumption import Kind


@dataclass
class BillExplanation:
    bill: dict[str, Any]
    reads: list[dict[str, Any]] = field(default_factory=list)
    shares: list[dict[str, Any]] = field(default_factory=list)
    lines: list[dict[str, Any]] = field(default_factory=list)
    # heating suspensions of the account overlapping the bill's period, as stored now (bills with heating only)
    suspensions: list[heating.Suspension] = field(default_factory=list)


def explain_bill(conn: psycopg.Connection, bill_id: int) -> BillExplanation:
    with conn.cursor(row_factory=dict_row) as cur:
        bill = cur.execute(
            """SELECT b.*, a.code AS account, a.address, a.tariff_id, a.household_size, c.timezone,
                      r.cycle, mb.code AS book,
                      (SELECT n.id FROM bill n WHERE n.replaces = b.id) AS replaced_by
                 FROM bill b JOIN account a ON a.id = b.account_id JOIN company c ON c.id = b.company_id
                 JOIN billing_run r ON r.id = b.run_id LEFT JOIN meter_book mb ON mb.id = a.book_id
                WHERE b.id = %s""", [bill_id]).fetchone()
        if bill is None:
            raise NotFound(f"bill {bill_id} does not exist in this company")
        reads = cur.execute(
            """SELECT p.*, m.serial, m.multiplier, m.register_modulus,
                      EXISTS (SELECT 1 FROM meter s WHERE s.parent_meter_id = m.id AND s.status = 'active') AS is_master
                 FROM meter_period_read p JOIN meter m ON m.id = p.meter_id
                WHERE p.bill_id = %s ORDER BY m.serial""", [bill_id]).fetchall()
        shares = cur.execute(
            """SELECT s.*, ap.policy, ap.master_consumption, ap.subs_consumption, ap.residual, ap.inherited,
                      ap.distributed, mm.serial AS master_serial, vm.serial AS via_serial
                 FROM apportionment_share s
                 JOIN apportionment ap ON ap.master_meter_id = s.master_meter_id AND ap.period = s.period
                 JOIN meter mm ON mm.id = s.master_meter_id JOIN meter vm ON vm.id = s.via_meter_id
                WHERE s.account_id = %s AND s.period = %s ORDER BY mm.serial""",
            [bill["account_id"], bill["period"]]).fetchall()
        lines = cur.execute("SELECT * FROM bill_line_sourced WHERE bill_id = %s ORDER BY line_no", [bill_id]).fetchall()
    suspensions = []
    if any((ln["source"] or {}).get("kind") == "heating" for ln in lines):
        suspensions = heating.overlapping(conn, bill["account_id"], bill["period_start"], bill["period_end"])
    return BillExplanation(bill, reads, shares, lines, suspensions)


def _money(minor: int) -> str:
    sign = "-" if minor < 0 else ""
    return f"{sign}{abs(minor) // 100:,}.{abs(minor) % 100:02d}"


def _m3(litres: int) -> str:
    sign = "-" if litres < 0 else ""
    return f"{sign}{abs(litres) // 1000:,}.{abs(litres) % 1000:03d} m³"


def _price(unit_price: int, scale: int) -> str:
    """``unit_price / 10^scale`` minor units per display unit, as yuan."""
    text = f"{unit_price / 10 ** scale / 100:.6f}"
    while text.endswith("0") and len(text.split(".")[1]) > 2:
        text = text[:-1]
    return text


def _when(ts: dt.datetime, tz: str) -> str:
    return ts.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M")


_BASIS = {"previous": "the previous bill's closing read", "read": "the read at the start of the period",
          "installation": "the new meter's initial register", "last_read": "the latest read before the period",
          "first_read": "the first read in the period"}


def _season_days_of(src: dict[str, Any]) -> list[dt.date]:
    """The days of a heating line's part of the period that are in its heating season."""
    if not src.get("season_from") or not src.get("from"):
        return []
    first = max(dt.date.fromisoformat(src["from"]), dt.date.fromisoformat(src["season_from"]))
    last = min(dt.date.fromisoformat(src["to"]), dt.date.fromisoformat(src["season_to"]))
    return [first + dt.timedelta(days=k) for k in range((last - first).days + 1)]


def _suspended(day: dt.date, s: heating.Suspension) -> bool:
    return s.stop_on <= day and (s.resume_on is None or day < s.resume_on)


def _heating(e: BillExplanation) -> list[str]:
    """Heated days per heating line and the suspensions (as stored now) that took days off."""
    heat = [ln for ln in e.lines if (ln["source"] or {}).get("kind") == "heating"]
    if not heat:
        return []
    out = ["Heating (by floor area: area × price × heated days / season days):"]
    in_season: list[dt.date] = []
    differs = []
    for ln in heat:
        src = ln["source"]
        days = _season_days_of(src)
        in_season += days
        season = (f"the season {src['season_from']} to {src['season_to']} has {src.get('season_days')} days"
                  if src.get("season_from") else "no heating season")
        out.append(f"  line {ln['line_no']}, {src.get('from')} to {src.get('to')}: {src.get('heated_days')} of its "
                   f"{len(days)} day(s) in the season heated; {season}: × {src.get('heated_days')} / "
                   f"{src.get('season_days')}")
        now = sum(1 for d in days if not any(_suspended(d, s) for s in e.suspensions))
        if src.get("heated_days") is not None and now != src["heated_days"]:
            differs.append((ln["line_no"], now))
    if not e.suspensions:
        out.append("  no heating suspension overlaps the period (as stored now)")
    else:
        out.append(f"  heating suspensions overlapping the period (as stored now): {len(e.suspensions)}")
    for s in e.suspensions:
        resumed = f"resumed {s.resume_on}" if s.resume_on else "not resumed"
        off = sum(1 for d in in_season if _suspended(d, s))
        out.append(f"    stopped {s.stop_on}, {resumed} ({s.reason}) [#{s.id}]: "
                   f"{off} day(s) off in this bill")
    for line_no, now in differs:
        out.append(f"  note: the suspensions as stored now give line {line_no} {now} heated day(s): they were "
                   "changed after this bill was rated, which keeps what it charged until reversed and billed again")
    return out


def render(e: BillExplanation) -> list[str]:
    """The derivation as lines of text."""
    b = e.bill
    tz = b["timezone"]
    out = [f"Bill {b['id']} — account {b['account']} ({b['address']}), period {b['period']} "
           f"({b['period_start']} to {b['period_end']}), cycle {b['cycle']}, book {b['book'] or '-'}",
           f"  tariff {b['tariff_id']}, household of {b['household_size']}; due {b['due_date']}; status {b['status']}"]
    if b.get("replaces"):
        out.append(f"  bills the period again: replaces bill {b['replaces']}, which was reversed (红冲)")
    if b.get("replaced_by"):
        out.append(f"  reversed (红冲) and billed again as bill {b['replaced_by']}")
    out.append("Reads:")
    if not e.reads:
        out.append("  (no meter reads recorded for this bill)")
    for r in e.reads:
        kind = Kind(r["kind"]).name.lower()
        est_o = " (estimated)" if r["opening_estimated"] else ""
        est_c = " (estimated)" if r["closing_estimated"] else ""
        out.append(f"  meter {r['serial']}: opening {_m3(r['opening_value'])} on {_when(r['opening_ts'], tz)}{est_o}"
                   f" — {_BASIS.get(r['opening_basis'], r['opening_basis'])}")
        out.append(f"    closing {_m3(r['closing_value'])} on {_when(r['closing_ts'], tz)}{est_c}")
        how = {"forward": "closing − opening", "rollover": "the register passed its maximum and started again",
               "replacement": "the meter was replaced: old meter up to its final register, plus the new one "
                              "from its initial register", "reverse": "reverse flow",
               "reset": "register reset"}[kind]
        mult = f" × multiplier {r['multiplier']}" if r["multiplier"] != 1 else ""
        master = " (master meter: its own consumption is shared out, not billed as volume)" if r["is_master"] else ""
        out.append(f"    consumption {_m3(r['consumption'])} ({how}{mult}){master}")
    if e.shares:
        out.append("Apportionment (shared use of a master meter):")
        for s in e.shares:
            policy = {"master_account": "billed to the master meter's account", "by_consumption": "by consumption",
                      "equal": "equally", "by_area": "by floor area"}[s["policy"]]
            inherited = f" plus {_m3(s['inherited'])} passed down from the meter above" if s["inherited"] else ""
            out.append(f"  master {s['master_serial']}: {_m3(s['master_consumption'])} − its sub-meters "
                       f"{_m3(s['subs_consumption'])} = {_m3(s['residual'])}{inherited}; "
                       f"{_m3(s['distributed'])} shared {policy}")
            out.append(f"    this account's share through meter {s['via_serial']} (weight {s['weight']:,}): "
                       f"{_m3(s['share'])}")
    out.append("Lines:")
    for ln in e.lines:
        src = ln["source"] or {}
        what = ln["component"] + (f" tier {ln['tier']}" if ln["tier"] is not None else "")
        kind = src.get("kind", "")
        if kind == "apportioned":
            what += " (apportioned)"
        if kind in ("fixed", "minimum"):
            qty = f"{ln['quantity']} month(s)"
        elif kind == "heating":
            qty = f"{ln['quantity'] // 100:,}.{ln['quantity'] % 100:02d} m²"
        else:
            qty = _m3(ln["quantity"])
        split = f", {src['from']} to {src['to']}" if src.get("days") != src.get("period_days") and "from" in src else ""
        tax = f" + tax {_money(ln['tax'])}" if ln["tax"] else ""
        out.append(f"  {ln['line_no']:>2}. {what}: {qty} × {_price(ln['unit_price'], ln['price_scale'])} = "
                   f"{_money(ln['amount'])}{tax}  [{ln['tariff_version']}{split}]")
    out += _heating(e)
    est = " (closing read estimated)" if b["estimated"] else ""
    out.append(f"Total: consumption {_m3(b['consumption'])}{est}; amount {_money(b['amount'])} + tax "
               f"{_money(b['tax'])} = {_money(b['total'])}")
    return out
