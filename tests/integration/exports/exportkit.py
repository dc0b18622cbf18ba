"""A small utility with every figure known by hand, for the export and report tests.

Company ``acme`` (Asia/Shanghai). Districts D1, D2; books B1 (reader 张三: A1, A2) and B2
(reader 李四: A3, A4). Customer of A2 is an organisation with an invoice title and tax id; A1's
and A3's customers are persons with phones (encrypted) and A3's with a tax id (an ID number).
Meter MM (no account) is the master of M3 and M4.

Readings (litres), local midnights::

              2026-10-01   2026-11-01                 use
    M1        100000       112000                     12 m³
    M2         50000        58000                      8 m³
    M3         10000        20000                     10 m³
    M4          5000        11000 (an estimate)        6 m³
    MM        200000       220000                     20 m³ → non-revenue water 4 m³ = 20 %

Bills (fen): water 3.00 yuan/m³ + 9 % tax, sewage 1.00 yuan/m³ untaxed.

    2026-09 (run R9, posted 2026-10-02, due 2026-10-20): A1 4000, A3 3000
    2026-10 (run R10, posted 2026-11-02, due 2026-11-20): A1 5124, A2 3416, A3 4270, A4 2562 (estimated)

Payments: A1 counter 4000 on 2026-10-10 (settles its September bill). ``later(...)`` adds
what arrives afterwards: A2 wechat 3416 on 2026-11-05, A1 bank 2000 on 2026-11-06, November
readings, a November run posted 2026-12-02 and a late-fee run on 2026-11-25.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import psycopg

from meterline.ledger.bills import post_bills
from meterline.ledger.late_fees import run_late_fees
from meterline.ledger.payments import PaymentIn, record_payment
from meterline.store.db import Database
from meterline.store.personal import KeyRing, generate_key

TZ = ZoneInfo("Asia/Shanghai")
KEYRING = KeyRing.from_text({"k1": generate_key()}, "k1")
PHONES = {"CU1": "13800000001", "CU3": "13900000003"}
PERSON_TAX_ID = "110101199001011234"
ORG_TAX_ID = "91310000MA1K000001"


def local(y: int, m: int, d: int, h: int = 0) -> dt.datetime:
    return dt.datetime(y, m, d, h, tzinfo=TZ)


@dataclass
class Utility:
    company_id: int
    accounts: dict[str, int] = field(default_factory=dict)
    meters: dict[str, int] = field(default_factory=dict)
    runs: dict[str, int] = field(default_factory=dict)
    bills: dict[tuple[str, str], int] = field(default_factory=dict)


def _bill(conn: psycopg.Connection, u: Utility, run: str, account: str, period: str, litres: int,
          due: dt.date, estimated: bool = False, flat: int | None = None) -> int:
    """A bill of ``litres``: water 3.00/m³ + 9 % tax, sewage 1.00/m³; or one flat water line."""
    c = u.company_id
    if flat is not None:
        lines = [("water", 1, litres, 3_000_000, flat, 0)]
    else:
        water = litres * 300 // 1000
        sewage = litres * 100 // 1000
        lines = [("water", 1, litres, 3_000_000, water, water * 9 // 100), ("sewage", None, litres, 1_000_000, sewage, 0)]
    amount = sum(x[4] for x in lines)
    tax = sum(x[5] for x in lines)
    y, m = int(period[:4]), int(period[5:])
    start = dt.date(y, m, 1)
    end = dt.date(y + (m == 12), m % 12 + 1, 1) - dt.timedelta(days=1)
    bill_id = conn.execute(
        """INSERT INTO bill (company_id, run_id, account_id, period, period_start, period_end, consumption, amount,
                             tax, total, due_date, estimated)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id""",
        [c, u.runs[run], u.accounts[account], period, start, end, litres, amount, tax, amount + tax, due,
         estimated]).fetchone()[0]
    for no, (comp, tier, qty, price, amt, tx) in enumerate(lines, 1):
        conn.execute(
            """INSERT INTO bill_line (bill_id, line_no, company_id, component, tier, quantity, unit_price, price_scale,
                                      amount, tax, tariff_version)
               VALUES (%s, %s, %s, %s, %s, %s, %s, 4, %s, %s, 'T1@2026-01-01')""",
            [bill_id, no, c, comp, tier, qty, price, amt, tx])
    u.bills[(account, period)] = bill_id
    return bill_id


def _run(conn: psycopg.Connection, u: Utility, name: str, period: str, started: dt.datetime, seconds: int,
         accounts: int) -> None:
    u.runs[name] = conn.execute(
        """INSERT INTO billing_run (company_id, cycle, period, status, started_at, finished_at, accounts, stats)
           VALUES (%s, 'M', %s, 'completed', %s, %s, %s, '{"skipped": {"no_read": 1}}') RETURNING id""",
        [u.company_id, period, started, started + dt.timedelta(seconds=seconds), accounts]).fetchone()[0]


def _reads(conn: psycopg.Connection, u: Utility, ts: dt.datetime, values: dict[str, int]) -> None:
    for meter, value in values.items():
        conn.execute(
            """INSERT INTO reading (meter_id, ts, value, received_at, company_id, quantity, source)
               VALUES (%s, %s, %s, %s, %s, 1, 1)""", [u.meters[meter], ts, value, ts, u.company_id])


def build(owner: psycopg.Connection, app_db: Database) -> Utility:
    """Registry, readings and billing rows by the login role; ledger work in the company's scope."""
    c = owner.execute("INSERT INTO company (code, name, timezone) VALUES ('acme', '测试水务公司', 'Asia/Shanghai') "
                      "RETURNING id").fetchone()[0]
    u = Utility(c)
    owner.execute("INSERT INTO use_type (company_id, code, name) VALUES (%s, 'RES', '居民')", [c])
    d1, d2 = (owner.execute("INSERT INTO district (company_id, code, name) VALUES (%s, %s, %s) RETURNING id",
                            [c, code, name]).fetchone()[0] for code, name in (("D1", "城东"), ("D2", "城西")))
    b1, b2 = (owner.execute("""INSERT INTO meter_book (company_id, code, name, district_id, reader, cycle)
                               VALUES (%s, %s, %s, %s, %s, 'M') RETURNING id""",
                            [c, code, code, d, reader]).fetchone()[0]
              for code, d, reader in (("B1", d1, "张三"), ("B2", d2, "李四")))
    customers = {
        "CU1": ("张伟", "person", None, None, PHONES["CU1"]),
        "CU2": ("某某科技", "organisation", "某某科技有限公司", ORG_TAX_ID, None),
        "CU3": ("王芳", "person", None, PERSON_TAX_ID, PHONES["CU3"]),
        "CU4": ("李娜", "person", None, None, None),
    }
    for i, (code, (name, kind, title, tax_id, phone)) in enumerate(customers.items(), 1):
        cust = owner.execute(
            """INSERT INTO customer (company_id, code, name, kind, invoice_title, tax_id, phone)
               VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id""",
            [c, code, name, kind, title, tax_id, KEYRING.protect(phone, company_id=c, field="phone")]).fetchone()[0]
        district, book = (d1, b1) if i <= 2 else (d2, b2)
        acc = f"A{i}"
        u.accounts[acc] = owner.execute(
            """INSERT INTO account (company_id, code, customer_id, address, district_id, use_type, tariff_id, book_id,
                                    route_order) VALUES (%s, %s, %s, %s, %s, 'RES', 'T1', %s, %s) RETURNING id""",
            [c, acc, cust, f"人民路{i}号", district, book, i]).fetchone()[0]
    u.meters["MM"] = owner.execute("INSERT INTO meter (company_id, serial, apportion_policy) VALUES (%s, 'MM', "
                                   "'by_consumption') RETURNING id", [c]).fetchone()[0]
    for i in range(1, 5):
        u.meters[f"M{i}"] = owner.execute(
            "INSERT INTO meter (company_id, serial, account_id, parent_meter_id) VALUES (%s, %s, %s, %s) RETURNING id",
            [c, f"M{i}", u.accounts[f"A{i}"], u.meters["MM"] if i >= 3 else None]).fetchone()[0]
    _reads(owner, u, local(2026, 10, 1), {"M1": 100000, "M2": 50000, "M3": 10000, "M4": 5000, "MM": 200000})
    _reads(owner, u, local(2026, 11, 1), {"M1": 112000, "M2": 58000, "M3": 20000, "MM": 220000})
    owner.execute(
        """INSERT INTO reading_estimate (meter_id, ts, quantity, company_id, period, value, method, window_before,
                                         window_after) VALUES (%s, %s, 1, %s, '2026-10', 11000, 'interpolation',
                                         '3 days', '3 days')""", [u.meters["M4"], local(2026, 11, 1), c])
    _run(owner, u, "R9", "2026-09", local(2026, 10, 1, 9), 5, 2)
    _bill(owner, u, "R9", "A1", "2026-09", 10000, dt.date(2026, 10, 20), flat=4000)
    _bill(owner, u, "R9", "A3", "2026-09", 8000, dt.date(2026, 10, 20), flat=3000)
    _run(owner, u, "R10", "2026-10", local(2026, 11, 1, 9), 10, 4)
    for acc, litres in (("A1", 12000), ("A2", 8000), ("A3", 10000)):
        _bill(owner, u, "R10", acc, "2026-10", litres, dt.date(2026, 11, 20))
    _bill(owner, u, "R10", "A4", "2026-10", 6000, dt.date(2026, 11, 20), estimated=True)
    with app_db.connection(company_id=c) as conn:
        post_bills(conn, c, u.runs["R9"], day=dt.date(2026, 10, 2))
        record_payment(conn, c, "counter", PaymentIn("C-1", u.accounts["A1"], 4000, local(2026, 10, 10, 10),
                                                     cashier="c1", tender="cash"))
        post_bills(conn, c, u.runs["R10"], day=dt.date(2026, 11, 2))
        conn.commit()
    return u


def later(owner: psycopg.Connection, app_db: Database, u: Utility) -> None:
    """What arrives after October was exported: November payments, readings, bills and late fees."""
    c = u.company_id
    _reads(owner, u, local(2026, 11, 15), {"M1": 118000, "M2": 60000, "M3": 25000, "M4": 14000, "MM": 232000})
    _run(owner, u, "R11", "2026-11", local(2026, 12, 1, 9), 8, 1)
    _bill(owner, u, "R11", "A1", "2026-11", 7000, dt.date(2026, 12, 20))
    with app_db.connection(company_id=c) as conn:
        record_payment(conn, c, "wechat", PaymentIn("W-1", u.accounts["A2"], 3416, local(2026, 11, 5, 12)))
        record_payment(conn, c, "bank", PaymentIn("B-1", u.accounts["A1"], 2000, local(2026, 11, 6, 12)))
        run_late_fees(conn, c, dt.date(2026, 11, 25))
        post_bills(conn, c, u.runs["R11"], day=dt.date(2026, 12, 2))
        conn.commit()
