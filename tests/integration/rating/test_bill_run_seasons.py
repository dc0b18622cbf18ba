"""The billing run across a tariff year start (annual tiers restart inside a bill) and with
heating stopped and resumed (area-based heating charged for the heated days only, and
``bill explain`` listing the suspensions)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Iterator

import psycopg
import pytest

from meterline.config.settings import BillingSettings
from meterline.ledger.bills import reverse_bill
from meterline.rating import heating
from meterline.rating.explain import explain_bill, render
from meterline.rating.run import bill_run
from meterline.rating.tariff import TariffBook
from meterline.store import migrate, partitions
from meterline.store.db import Database
from tests.integration.rating.billkit import Utility, local, scoped_db

D = dt.date

# annual blocks 0–10 / 10–20 / >20 m³ per calendar year at 1 / 2 / 3 yuan; heating 24 yuan per m²
# per season (15 November – 15 March: 121 days in 2026/27)
TARIFFS = {
    "water-annual.toml": '''
id = "water-annual"
use_type = "residential"
year_start = "01-01"

[[versions]]
effective = "2020-01-01"
basis = "annual"
thresholds = ["10", "20"]

[[versions.components]]
code = "water"
prices = ["1.00", "2.00", "3.00"]
''',
    "heat.toml": '''
id = "heat"
use_type = "residential"

[[versions]]
effective = "2020-11-15"

[versions.heating]
price = "24.00"
season_start = "11-15"
season_end = "03-15"
''',
}


@pytest.fixture
def app_db(db_dsn: str) -> Iterator[Database]:
    with psycopg.connect(db_dsn, autocommit=True) as c:  # readings up to April 2027
        partitions.ensure_months(c, [(2026, 11), (2026, 12), (2027, 1), (2027, 2), (2027, 3), (2027, 4)])
    db = scoped_db(db_dsn)
    try:
        yield db
    finally:
        db.close()


def bill(db: Database, u: Utility, cycle: str, period: str):
    with db.connection(company_id=u.company_id) as c:
        res = bill_run(c, u.company_id, cycle, period, tariffs=TariffBook.from_texts(TARIFFS),
                       settings=BillingSettings(cycle_months={"M": 1, "B": 2}), day=D(2027, 4, 2))
        c.commit()
    return res


def lines(conn: psycopg.Connection, account_id: int, period: str) -> list[tuple]:
    return conn.execute(
        """SELECT l.component, l.tier, l.quantity, l.amount, l.source->>'tier_year_from', l.source->>'heated_days'
             FROM bill_line_sourced l JOIN bill b ON b.id = l.bill_id
            WHERE b.account_id = %s AND b.period = %s ORDER BY l.line_no""", [account_id, period]).fetchall()


def test_annual_tiers_restart_inside_a_bill_and_count_its_new_year_part_later(conn: psycopg.Connection,
                                                                               app_db: Database) -> None:
    u = Utility.create(conn)
    u.book("B1", cycle="B")
    a = u.account("W1", "B1", tariff="water-annual")
    u.meter("M1", "W1")
    u.read("M1", local(2026, 12, 1), 0)
    u.read("M1", local(2027, 2, 1), 62_000)     # 62 m³ over December and January (62 days)
    u.read("M1", local(2027, 4, 1), 92_000)     # 30 m³ over February and March
    res = bill(app_db, u, "B", "2027-01")
    assert res.bills == 1 and res.skips == []
    # split at 01-01 by days: 31 m³ in December (2026 from its year to date: none billed) and 31 m³
    # in January, counted from zero again: 10 / 10 / 11 m³ in each year
    assert lines(conn, a, "2027-01") == [
        ("water", 1, 10_000, 1000, "2026-01-01", None), ("water", 2, 10_000, 2000, "2026-01-01", None),
        ("water", 3, 11_000, 3300, "2026-01-01", None),
        ("water", 1, 10_000, 1000, "2027-01-01", None), ("water", 2, 10_000, 2000, "2027-01-01", None),
        ("water", 3, 11_000, 3300, "2027-01-01", None)]
    # February–March: 2027 already holds January's 31 m³ (not the whole bill, not nothing): all in tier 3
    bill(app_db, u, "B", "2027-03")
    assert lines(conn, a, "2027-03") == [("water", 3, 30_000, 9000, "2027-01-01", None)]


def kinds(conn: psycopg.Connection, account_id: int, period: str) -> list[tuple]:
    return conn.execute(
        """SELECT l.source->>'kind', l.tier, l.quantity, l.amount
             FROM bill_line_sourced l JOIN bill b ON b.id = l.bill_id
            WHERE b.account_id = %s AND b.period = %s AND b.status = 'issued' ORDER BY l.line_no""",
        [account_id, period]).fetchall()


def test_year_to_date_counts_the_volume_rated_on_standing_bills(conn: psycopg.Connection,
                                                                app_db: Database) -> None:
    """The year to date of annual tiers is the volume the earlier bills of the tariff year priced
    in tiers: not a master meter the account holds (never part of its volume), not the
    apportioned residual (priced on its own lines), not a reversed bill."""
    u = Utility.create(conn)
    u.book("W", cycle="M")
    a = u.account("A", "W", tariff="water-annual")       # holds the master meter and one sub
    b = u.account("B", "W", tariff="water-annual")       # the other sub
    c = u.account("C", "W", tariff="water-annual")       # no tree: its January bill is reversed
    u.meter("MM", "A", policy="by_consumption", digits=6)
    u.meter("S1", "A", parent="MM")
    u.meter("S2", "B", parent="MM")
    u.meter("MC", "C")
    for serial, values in {"MM": (0, 30_000, 60_000), "S1": (0, 8_000, 16_000), "S2": (0, 12_000, 24_000),
                           "MC": (0, 15_000, 20_000)}.items():
        for month, value in zip((1, 2, 3), values):
            u.read(serial, local(2027, month, 1), value)
    res = bill(app_db, u, "M", "2027-01")
    assert res.bills == 3 and res.skips == []
    # January: A's volume is its sub S1 (8 m³), not the master; the residual 30 − 8 − 12 = 10 m³
    # goes 4 : 6 to A and B by consumption, on apportioned lines at the first-tier price
    assert kinds(conn, a, "2027-01") == [("tier", 1, 8_000, 800), ("apportioned", None, 4_000, 400)]
    assert kinds(conn, b, "2027-01") == [("tier", 1, 10_000, 1000), ("tier", 2, 2_000, 400),
                                         ("apportioned", None, 6_000, 600)]
    assert kinds(conn, c, "2027-01") == [("tier", 1, 10_000, 1000), ("tier", 2, 5_000, 1000)]
    bill_c = conn.execute("SELECT id FROM bill WHERE account_id = %s AND period = '2027-01'", [c]).fetchone()[0]
    with app_db.connection(company_id=u.company_id) as w:
        reverse_bill(w, u.company_id, bill_c, reason="读数有误", day=D(2027, 4, 2))
        w.commit()
    bill(app_db, u, "M", "2027-02")
    # February: A's year stands at 8 m³ (not 8 + 30 of the master, not 8 + 4 apportioned)
    assert kinds(conn, a, "2027-02") == [("tier", 1, 2_000, 200), ("tier", 2, 6_000, 1200),
                                         ("apportioned", None, 4_000, 400)]
    # B's at 12 m³ (not 12 + 6 apportioned)
    assert kinds(conn, b, "2027-02") == [("tier", 2, 8_000, 1600), ("tier", 3, 4_000, 1200),
                                         ("apportioned", None, 6_000, 600)]
    # C's January bill was reversed: nothing of the year is billed and standing, February starts at zero
    assert kinds(conn, c, "2027-02") == [("tier", 1, 5_000, 500)]


def test_apportioned_litres_recorded_on_the_bill_and_filled_in_for_older_bills(conn: psycopg.Connection,
                                                                              app_db: Database) -> None:
    """bill.apportioned (0640): written by the run; for bills written before 0640 the migration
    fills it in from the apportioned lines, one per component and part of a split bill."""
    u = Utility.create(conn)
    u.book("W", cycle="B")
    a = u.account("A", "W", tariff="water-annual")
    b = u.account("B", "W", tariff="water-annual")
    u.meter("MM", None, policy="equal", digits=6)
    u.meter("S1", "A", parent="MM")
    u.meter("S2", "B", parent="MM")
    for serial, values in {"MM": (0, 50_001), "S1": (0, 20_000), "S2": (0, 10_000)}.items():
        u.read(serial, local(2026, 12, 1), values[0])
        u.read(serial, local(2027, 2, 1), values[1])
    res = bill(app_db, u, "B", "2027-01")     # December–January: two parts, split at the year start
    assert res.bills == 2
    # residual 20,001 L shared equally: 10,001 to the earlier sub, 10,000 to the other
    stored = dict(conn.execute("SELECT account_id, apportioned FROM bill WHERE account_id = ANY(%s)",
                               [[a, b]]).fetchall())
    assert stored == {a: 10_001, b: 10_000}
    parts = conn.execute("""SELECT count(*) FROM bill_line_sourced l JOIN bill b ON b.id = l.bill_id
                             WHERE b.account_id = %s AND l.source->>'kind' = 'apportioned'""", [a]).fetchone()[0]
    assert parts == 2
    # as if written before 0640: the migration's fill-in finds the same litres again
    conn.execute("UPDATE bill SET apportioned = 0 WHERE account_id = ANY(%s)", [[a, b]])
    sql = (Path(migrate.MIGRATIONS_DIR) / "0640_bill_apportioned.sql").read_text()
    fill = next(s for s in sql.split(";") if s.strip().startswith("UPDATE bill"))
    # (lines billed since 0660 keep their source document once per run and bill: read it as it was)
    conn.execute(fill.replace("FROM bill_line l", "FROM bill_line_sourced l"))
    again = dict(conn.execute("SELECT account_id, apportioned FROM bill WHERE account_id = ANY(%s)",
                              [[a, b]]).fetchall())
    assert again == stored
    # the database refuses more apportioned litres than the bill's consumption
    with pytest.raises(psycopg.errors.CheckViolation):
        with conn.transaction():
            conn.execute("UPDATE bill SET apportioned = consumption + 1 WHERE account_id = %s", [a])


def test_heating_charged_for_the_heated_days_only(conn: psycopg.Connection, app_db: Database) -> None:
    u = Utility.create(conn)
    u.book("H", cycle="M")
    full = u.account("H1", "H", tariff="heat", area_m2="100.00")
    stopped = u.account("H2", "H", tariff="heat", area_m2="100.00")
    resumed = u.account("H3", "H", tariff="heat", area_m2="100.00")
    twice = u.account("H4", "H", tariff="heat", area_m2="100.00")
    adjacent = u.account("H5", "H", tariff="heat", area_m2="100.00")
    open_end = u.account("H6", "H", tariff="heat", area_m2="100.00")
    u.meter("HM1", "H1")  # a heat meter on one account: area-based accounts are billed with or without one
    u.read("HM1", local(2026, 12, 1), 0)
    u.read("HM1", local(2027, 1, 1), 0)
    code = u.code
    with app_db.connection(company_id=u.company_id) as c:
        heating.stop_heating(c, u.company_id, f"{code}-H2", D(2026, 12, 11), "away for the winter")
        heating.stop_heating(c, u.company_id, f"{code}-H3", D(2026, 11, 15), "new flat, not moved in")
        heating.resume_heating(c, u.company_id, f"{code}-H3", D(2026, 12, 21))
        heating.stop_heating(c, u.company_id, f"{code}-H4", D(2026, 12, 3), "repairs", resume_on=D(2026, 12, 5))
        heating.stop_heating(c, u.company_id, f"{code}-H4", D(2026, 12, 20), "repairs", resume_on=D(2026, 12, 22))
        heating.stop_heating(c, u.company_id, f"{code}-H5", D(2026, 12, 3), "repairs", resume_on=D(2026, 12, 10))
        heating.stop_heating(c, u.company_id, f"{code}-H5", D(2026, 12, 10), "away", resume_on=D(2026, 12, 15))
        heating.stop_heating(c, u.company_id, f"{code}-H6", D(2026, 12, 3), "repairs", resume_on=D(2026, 12, 5))
        heating.stop_heating(c, u.company_id, f"{code}-H6", D(2026, 12, 28), "moved out")
        with pytest.raises(heating.HeatingError, match="overlaps"):
            heating.stop_heating(c, u.company_id, f"{code}-H2", D(2027, 1, 5), "again")
        with pytest.raises(heating.HeatingError, match="not stopped"):
            heating.resume_heating(c, u.company_id, f"{code}-H1", D(2027, 1, 5))
        c.commit()
    res = bill(app_db, u, "M", "2026-12")
    # December: 31 heated days of 121 at 100 m² × 24 yuan = 2400 yuan a season
    assert lines(conn, full, "2026-12") == [("heating", None, 10_000, 61488, None, "31")]   # 240000 × 31 / 121
    assert lines(conn, stopped, "2026-12") == [("heating", None, 10_000, 19835, None, "10")]  # 1–10 December
    assert lines(conn, resumed, "2026-12") == [("heating", None, 10_000, 21818, None, "11")]  # 21–31 December
    # several stops in one period: every one is taken off, and the account is billed
    assert res.skips == [] and res.bills == 6
    # 3–4 and 20–21 December off: 27 heated days
    assert lines(conn, twice, "2026-12") == [("heating", None, 10_000, 53554, None, "27")]   # 240000 × 27 / 121
    # 3–9 then 10–14 December (adjacent stops), as one stop 3–14: 19 heated days
    assert lines(conn, adjacent, "2026-12") == [("heating", None, 10_000, 37686, None, "19")]
    # 3–4 December, then from the 28th on (not resumed): 25 heated days
    assert lines(conn, open_end, "2026-12") == [("heating", None, 10_000, 49587, None, "25")]
    # the database refuses deleting a suspension
    with pytest.raises(psycopg.Error):
        with conn.transaction():
            conn.execute("DELETE FROM heating_suspension WHERE account_id = %s", [stopped])


def test_heating_stop_refuses_bad_input_with_the_reason(conn: psycopg.Connection, app_db: Database) -> None:
    u = Utility.create(conn)
    u.book("H", cycle="M")
    u.account("H1", "H", tariff="heat", area_m2="80.00")
    acct = f"{u.code}-H1"
    with app_db.connection(company_id=u.company_id) as c:
        with pytest.raises(heating.HeatingError, match="no account 'nobody'"):
            heating.stop_heating(c, u.company_id, "nobody", D(2026, 12, 1), "away")
        with pytest.raises(heating.HeatingError, match="needs a reason"):
            heating.stop_heating(c, u.company_id, acct, D(2026, 12, 1), "  ")
        with pytest.raises(heating.HeatingError, match="is not after the stop date"):
            heating.stop_heating(c, u.company_id, acct, D(2026, 12, 1), "away", resume_on=D(2026, 12, 1))
        with pytest.raises(heating.HeatingError, match="no such heating suspension"):
            heating.set_dates(c, u.company_id, 987654321, D(2026, 12, 1), None)
        c.commit()
    # nothing half-written: the account has no suspension
    assert conn.execute("SELECT count(*) FROM heating_suspension").fetchone()[0] == 0
    # the database refuses dates in the wrong order even past the module (its own check)
    with pytest.raises(psycopg.errors.CheckViolation):
        with conn.transaction():
            conn.execute("""INSERT INTO heating_suspension (company_id, account_id, stop_on, resume_on, reason)
                            SELECT company_id, id, '2026-12-05', '2026-12-01', 'x' FROM account WHERE code = %s""",
                         [acct])


def test_explain_lists_the_heating_suspensions_of_the_period(conn: psycopg.Connection, app_db: Database) -> None:
    u = Utility.create(conn)
    u.book("H", cycle="M")
    u.account("H1", "H", tariff="heat", area_m2="100.00")
    u.account("H2", "H", tariff="heat", area_m2="100.00")
    acct = f"{u.code}-H1"
    with app_db.connection(company_id=u.company_id) as c:
        heating.stop_heating(c, u.company_id, acct, D(2026, 11, 16), "trial", resume_on=D(2026, 11, 20))  # before
        repairs = heating.stop_heating(c, u.company_id, acct, D(2026, 12, 3), "repairs", resume_on=D(2026, 12, 5))
        late = heating.stop_heating(c, u.company_id, acct, D(2026, 12, 28), "moved out")
        c.commit()
    bill(app_db, u, "M", "2026-12")
    ids = dict(conn.execute("SELECT a.code, b.id FROM bill b JOIN account a ON a.id = b.account_id").fetchall())

    def explained(code: str) -> str:
        with app_db.connection(company_id=u.company_id) as c:
            return "\n".join(render(explain_bill(c, ids[f"{u.code}-{code}"])))

    # December: 31 days less 3–4 and 28–31: 25 heated days of the season's 121 (240000 × 25 / 121 = 49586.8)
    text = explained("H1")
    assert "heating: 100.00 m² × 24.00 = 495.87" in text
    assert "line 1, 2026-12-01 to 2026-12-31: 25 of its 31 day(s) in the season heated; the season 2026-11-15 " \
           "to 2027-03-15 has 121 days: × 25 / 121" in text
    assert "heating suspensions overlapping the period (as stored now): 2" in text
    assert f"stopped 2026-12-03, resumed 2026-12-05 (repairs) [#{repairs.id}]: 2 day(s) off in this bill" in text
    assert f"stopped 2026-12-28, not resumed (moved out) [#{late.id}]: 4 day(s) off in this bill" in text
    assert "2026-11-16" not in text and "note:" not in text
    text = explained("H2")
    assert "31 of its 31 day(s) in the season heated" in text
    assert "no heating suspension overlaps the period (as stored now)" in text
    # a date corrected after the bill: the bill keeps its 25 days, the explanation says the suspensions differ now
    with app_db.connection(company_id=u.company_id) as c:
        heating.set_dates(c, u.company_id, late.id, D(2026, 12, 30), None)
        c.commit()
    text = explained("H1")
    assert "25 of its 31 day(s)" in text and "stopped 2026-12-30, not resumed (moved out)" in text
    assert "note: the suspensions as stored now give line 1 27 heated day(s)" in text
