"""A hand-built small utility for billing-run tests: books, accounts, meters, trees, reads.

Everything is written directly on the owner's connection (``conn`` fixture); the run itself
goes through a company-scoped connection of the application role (:func:`scoped_db`).
Times are company-local (Asia/Shanghai); values are litres.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import psycopg

from meterline.store.db import Database

TZ = ZoneInfo("Asia/Shanghai")


def local(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> dt.datetime:
    return dt.datetime(y, mo, d, h, mi, tzinfo=TZ)


def scoped_db(dsn: str) -> Database:
    """A pooled database of the application role (row-level security applies)."""
    return Database(dsn, min_size=1, max_size=2, role="meterline_app").open()


@dataclass
class Utility:
    conn: psycopg.Connection
    company_id: int
    code: str
    books: dict[str, int] = field(default_factory=dict)
    accounts: dict[str, int] = field(default_factory=dict)
    meters: dict[str, int] = field(default_factory=dict)

    @classmethod
    def create(cls, conn: psycopg.Connection, code: str | None = None) -> "Utility":
        code = code or f"u{uuid.uuid4().hex[:8]}"
        cid = conn.execute("INSERT INTO company (code, name, timezone) VALUES (%s, %s, 'Asia/Shanghai') RETURNING id",
                           [code, f"水司{code}"]).fetchone()[0]
        conn.execute("INSERT INTO use_type (company_id, code, name) VALUES (%s, 'residential', '居民')", [cid])
        return cls(conn, cid, code)

    def book(self, code: str, cycle: str = "M") -> int:
        bid = self.conn.execute(
            "INSERT INTO meter_book (company_id, code, name, cycle, supervisor) VALUES (%s, %s, %s, %s, 'sup') RETURNING id",
            [self.company_id, code, code, cycle]).fetchone()[0]
        self.books[code] = bid
        return bid

    def account(self, code: str, book: str, *, tariff: str = "water-residential", household: int = 3,
                area_m2: str | None = None, status: str = "active") -> int:
        c = self.conn.execute("INSERT INTO customer (company_id, code, name) VALUES (%s, %s, %s) RETURNING id",
                              [self.company_id, f"{self.code}-C{code}", f"客户{code}"]).fetchone()[0]
        aid = self.conn.execute(
            """INSERT INTO account (company_id, code, customer_id, address, use_type, tariff_id, household_size,
                                    floor_area_m2, book_id, status, opened_on)
               VALUES (%s, %s, %s, %s, 'residential', %s, %s, %s, %s, %s, '2020-01-01') RETURNING id""",
            [self.company_id, f"{self.code}-{code}", c, f"人民路{code}号", tariff, household, area_m2,
             self.books[book], status]).fetchone()[0]
        self.accounts[code] = aid
        return aid

    def meter(self, serial: str, account: str | None = None, *, parent: str | None = None, policy: str | None = None,
              digits: int = 5, multiplier: int = 1, size: str = "DN15", initial: int = 0,
              installed: dt.datetime | None = None) -> int:
        mid = self.conn.execute(
            """INSERT INTO meter (company_id, serial, account_id, register_digits, multiplier, size, parent_meter_id,
                                  apportion_policy) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id""",
            [self.company_id, f"{self.code}-{serial}", self.accounts.get(account) if account else None, digits,
             multiplier, size, self.meters[parent] if parent else None, policy]).fetchone()[0]
        self.meters[serial] = mid
        self.conn.execute(
            """INSERT INTO meter_installation (company_id, meter_id, device_serial, installed_at, initial_register)
               VALUES (%s, %s, %s, %s, %s)""",
            [self.company_id, mid, f"{serial}-d1", installed or local(2020, 1, 1), initial])
        return mid

    def replace(self, serial: str, at: dt.datetime, final: int, initial: int) -> None:
        mid = self.meters[serial]
        self.conn.execute("""UPDATE meter_installation SET removed_at = %s, final_register = %s
                             WHERE meter_id = %s AND removed_at IS NULL""", [at, final, mid])
        self.conn.execute(
            """INSERT INTO meter_installation (company_id, meter_id, device_serial, installed_at, initial_register, reason)
               VALUES (%s, %s, %s, %s, %s, 'replaced')""", [self.company_id, mid, f"{serial}-d2", at, initial])

    def read(self, serial: str, ts: dt.datetime, value: int, source: int = 7) -> None:
        self.conn.execute(
            """INSERT INTO reading (meter_id, ts, value, received_at, company_id, quantity, source)
               VALUES (%s, %s, %s, %s, %s, 1, %s)""", [self.meters[serial], ts, value, ts, self.company_id, source])

    def estimate(self, serial: str, ts: dt.datetime, value: int, period: str) -> None:
        self.conn.execute(
            """INSERT INTO reading_estimate (meter_id, ts, quantity, company_id, period, value, method, window_before,
                                             window_after) VALUES (%s, %s, 1, %s, %s, %s, 'interpolation', '3 days', '1 day')""",
            [self.meters[serial], ts, self.company_id, period, value])


OCT_START = local(2026, 10, 1)
NOV_START = local(2026, 11, 1)
DEC_START = local(2026, 12, 1)


def october(u: Utility) -> Utility:
    """The hand-computed scenario (litres in October 2026):

    A1  M1   100,000 → 112,500                                   12,500
    A2  M2   rollover 99,995,000 → 3,000 (5-digit m³ register)     8,000
    A3  M3   50,000 → device replaced 15 Oct (final 58,000, new initial 1,000) → 6,000   8,000 + 5,000 = 13,000
    A4  M4   20,000 → estimate at the boundary 45,000             25,000 (estimated)
    A11 M11  multiplier 10: 1,000 → 1,500                           5,000
    tree MM (no account, equal) → BM (no account, by_consumption) → H2 (A6), H3 (A7); MM → H1 (A5)
        MM 60,000; BM 35,000; H1 20,000; H2 10,000; H3 20,000
        MM residual 5,000 → BM 2,500, H1 2,500 (equal); BM residual 5,000 + 2,500 inherited
        = 7,500 → H2 2,500, H3 5,000 (by consumption 10,000 : 20,000)
    tree NM (account A8, master_account) → H4 (A9): NM 10,000, H4 12,000: residual −2,000, not billed
    A10 M10  no read at the end of October: skipped (no_closing_read)
    """
    u.book("B1")
    u.book("B2")
    for code in ("A1", "A2", "A3", "A4", "A5", "A6", "A7", "A8", "A9", "A10"):
        u.account(code, "B1")
    u.account("A11", "B2")
    u.meter("M1", "A1")
    u.meter("M2", "A2")
    u.meter("M3", "A3")
    u.meter("M4", "A4")
    u.meter("M10", "A10")
    u.meter("M11", "A11", multiplier=10)
    u.meter("MM", None, policy="equal", digits=6, size="DN100")
    u.meter("BM", None, parent="MM", policy="by_consumption", digits=6, size="DN50")
    u.meter("H1", "A5", parent="MM")
    u.meter("H2", "A6", parent="BM")
    u.meter("H3", "A7", parent="BM")
    u.meter("NM", "A8", policy="master_account", digits=6, size="DN50")
    u.meter("H4", "A9", parent="NM")
    u.replace("M3", local(2026, 10, 15, 10), final=58_000, initial=1_000)
    opening = {"M1": 100_000, "M2": 99_995_000, "M3": 50_000, "M4": 20_000, "M10": 7_000, "M11": 1_000,
               "MM": 1_000_000, "BM": 500_000, "H1": 10_000, "H2": 20_000, "H3": 30_000, "NM": 40_000, "H4": 50_000}
    closing = {"M1": 112_500, "M2": 3_000, "M3": 6_000, "M11": 1_500,
               "MM": 1_060_000, "BM": 535_000, "H1": 30_000, "H2": 30_000, "H3": 50_000, "NM": 50_000, "H4": 62_000}
    for s, v in opening.items():
        u.read(s, OCT_START, v)
    for s, v in closing.items():
        u.read(s, NOV_START - dt.timedelta(hours=2), v)   # read two hours before the boundary
    u.estimate("M4", NOV_START, 45_000, "2026-10")
    u.read("M10", local(2026, 10, 10), 7_500)             # a read, but nowhere near the end of October
    return u


def november(u: Utility) -> None:
    """November closing reads (M1 7,500 L; M4 from the October estimate 45,000 → 50,000)."""
    for s, v in {"M1": 120_000, "M2": 10_000, "M3": 7_000, "M4": 50_000, "M10": 9_000, "M11": 1_600,
                 "MM": 1_100_000, "BM": 560_000, "H1": 40_000, "H2": 40_000, "H3": 60_000,
                 "NM": 60_000, "H4": 70_000}.items():
        u.read(s, DEC_START, v)


#: the tariff of these tests (numbers easy to compute by hand): blocks 0–22 / 22–30 / >30 m³ per
#: month at 2 / 3 / 4 yuan, VAT 3 % on the water fee (per line), sewage 1 yuan/m³ without VAT,
#: a monthly fixed charge of 5 yuan (DN15) or 50 yuan (DN50)
TARIFF = '''
id = "water-residential"
name = "test residential water"
use_type = "residential"
rounding = "half_up"
tax_rounding = "line"

[[versions]]
effective = "2026-01-01"
basis = "period"
thresholds = ["22", "30"]

[[versions.components]]
code = "water"
prices = ["2.00", "3.00", "4.00"]
tax_rate = "0.03"

[[versions.components]]
code = "sewage"
price = "1.00"

[versions.fixed]
sizes = { DN15 = "5.00", DN50 = "50.00", DN100 = "100.00" }
'''


def tariffs():
    from meterline.rating.tariff import TariffBook

    return TariffBook.from_texts({"water-residential.toml": TARIFF})
