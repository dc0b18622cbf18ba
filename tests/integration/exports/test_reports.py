"""Report figures against the hand-computed utility of exportkit."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import psycopg

from meterline.exporters import report_all
from meterline.exporters import reports as R
from meterline.store.db import Database
from tests.integration.exports import exportkit

NOV24 = dt.date(2026, 11, 24)  # after the November payments, before the late-fee run


def _rows(report: R.Report) -> dict[tuple, tuple]:
    return {r[:2]: r[2:] for r in report.rows}


def test_collection_rate_by_district_and_month(owner: psycopg.Connection, app_db: Database,
                                               scoped: psycopg.Connection, utility: exportkit.Utility) -> None:
    exportkit.later(owner, app_db, utility)
    scoped.commit()
    (rep,) = R.collection(scoped, utility.company_id, "2026-10", months=2, as_of=NOV24)
    rows = _rows(rep)
    # bills, billed, collected, adjusted, open, rate
    assert rows[("D1", "2026-09")] == (1, 4000, 4000, 0, 0, 1.0)
    assert rows[("D2", "2026-09")] == (1, 3000, 0, 0, 3000, 0.0)
    assert rows[("D1", "2026-10")] == (2, 8540, 2000 + 3416, 0, 3124, 5416 / 8540)
    assert rows[("D2", "2026-10")] == (2, 6832, 0, 0, 6832, 0.0)
    assert rows[("(all)", "2026-10")] == (4, 15372, 5416, 0, 9956, 5416 / 15372)
    # as of an earlier day the later payments are not there yet; the bills of October not even posted
    (early,) = R.collection(scoped, utility.company_id, "2026-10", months=2, as_of=dt.date(2026, 11, 1))
    assert ("D1", "2026-10") not in _rows(early) and _rows(early)[("D1", "2026-09")][2] == 4000


def test_arrears_aging_buckets(owner: psycopg.Connection, app_db: Database, scoped: psycopg.Connection,
                               utility: exportkit.Utility) -> None:
    exportkit.later(owner, app_db, utility)
    scoped.commit()
    (rep,) = R.aging(scoped, utility.company_id, as_of=NOV24)
    got = {r[0]: r[1:] for r in rep.rows}
    # accounts, not_due, 0-30, 31-60, 61-90, >90, total
    assert got["D1"] == (1, 0, 3124, 0, 0, 0, 3124)          # A1's October bill less the 20.00 paid
    assert got["D2"] == (2, 0, 4270 + 2562, 3000, 0, 0, 9832)  # A3's September bill is 35 days past due
    assert got["(all)"] == (3, 0, 9956, 3000, 0, 0, 12956)
    (before,) = R.aging(scoped, utility.company_id, as_of=dt.date(2026, 11, 1))
    assert {r[0]: r[1:] for r in before.rows}["(all)"] == (1, 0, 3000, 0, 0, 0, 3000)
    assert [R.bucket(d) for d in (-1, 0, 30, 31, 60, 61, 90, 91)] == [
        "not_due", "d0_30", "d0_30", "d31_60", "d31_60", "d61_90", "d61_90", "d90_plus"]


def test_reading_rate_and_estimated_share(scoped: psycopg.Connection, utility: exportkit.Utility) -> None:
    books, readers = R.reading(scoped, utility.company_id, "2026-10")
    assert [r[:7] for r in books.rows] == [("B1", "张三", 2, 2, 1.0, 0, 0.0), ("B2", "李四", 2, 1, 0.5, 1, 0.5)]
    assert [r[:7] for r in readers.rows] == [("张三", 1, 2, 2, 1.0, 0, 0.0), ("李四", 1, 2, 1, 0.5, 1, 0.5)]


def test_non_revenue_water_per_master(owner: psycopg.Connection, scoped: psycopg.Connection,
                                      utility: exportkit.Utility) -> None:
    (rep,) = R.nrw(scoped, utility.company_id, "2026-10")
    assert rep.rows == [("MM", "MM", 0, 2, 20000, 16000, 4000, 0.2, "")]
    # a sub-meter without a closing read: the tree is shown, not judged
    owner.execute("DELETE FROM reading_estimate WHERE meter_id = %s", [utility.meters["M4"]])
    (rep,) = R.nrw(scoped, utility.company_id, "2026-10")
    assert rep.rows[0][5:8] == (None, None, None) and "incomplete" in rep.rows[0][8]


def test_billing_run_summary(scoped: psycopg.Connection, utility: exportkit.Utility) -> None:
    runs, comps = R.run(scoped, utility.company_id, "2026-10")
    (row,) = runs.rows
    assert row[1:] == ("M", "completed", 10.0, 4, 0.4, 4, 15372, 972, 0.25, 0, 1)
    assert comps.rows == [("M", "sewage", 4, 36000, 3600, 0), ("M", "water", 4, 36000, 10800, 972)]


def test_report_all_writes_csv_and_charts(scoped: psycopg.Connection, utility: exportkit.Utility,
                                          tmp_path: Path) -> None:
    paths = report_all(scoped, utility.company_id, "2026-10", tmp_path, as_of=NOV24)
    names = [p.name for p in paths]
    assert names == ["acme_2026-10_collection.csv", "acme_2026-10_collection.png", "acme_2026-10_reading_books.csv",
                     "acme_2026-10_reading_readers.csv", "acme_2026-10_aging.csv", "acme_2026-10_nrw.csv",
                     "acme_2026-10_nrw.png", "acme_2026-10_run.csv", "acme_2026-10_run_components.csv"]
    for p in paths:
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
    nrw = (tmp_path / "reports" / "acme_2026-10_nrw.csv").read_text(encoding="utf-8").splitlines()
    assert nrw == ["tree,master,level,subs,master_use,subs_use,nrw,nrw_share,note", "MM,MM,0,2,20000,16000,4000,0.2000,"]
    again = tmp_path / "again"
    report_all(scoped, utility.company_id, "2026-10", again, as_of=NOV24)
    for p in paths:
        assert (again / "reports" / p.name).read_bytes() == p.read_bytes(), p.name


def test_a_reversed_bill_leaves_billed_and_the_notices(app_db: Database, scoped: psycopg.Connection,
                                                      utility: exportkit.Utility, tmp_path: Path) -> None:
    from meterline.exporters.notice import export_notices
    from meterline.ledger.bills import reverse_bill

    first = export_notices(scoped, utility.company_id, "2026-10", tmp_path)
    assert (first.directory / "A4.html").exists()
    with app_db.connection(company_id=utility.company_id) as conn:
        reverse_bill(conn, utility.company_id, utility.bills[("A4", "2026-10")], reason="读数有误",
                     day=dt.date(2026, 11, 3))
        conn.commit()
    scoped.commit()
    (rep,) = R.collection(scoped, utility.company_id, "2026-10", months=1, as_of=NOV24)
    assert _rows(rep)[("D2", "2026-10")][:2] == (2, 4270)   # billed = issued less the reversal
    (before,) = R.collection(scoped, utility.company_id, "2026-10", months=1, as_of=dt.date(2026, 11, 2))
    assert _rows(before)[("D2", "2026-10")][:2] == (2, 6832)  # as it stood before the reversal
    again = export_notices(scoped, utility.company_id, "2026-10", tmp_path)
    assert [f.name for f in again.files] == ["A1.html", "A2.html", "A3.html"]
    assert not (again.directory / "A4.html").exists()


def test_receivables_as_of_any_day_equal_the_ledger(owner: psycopg.Connection, app_db: Database,
                                                    scoped: psycopg.Connection, utility: exportkit.Utility) -> None:
    """Aging's total on every day equals the AR postings booked by then; collection rows add up."""
    exportkit.later(owner, app_db, utility)
    scoped.commit()
    day = dt.date(2026, 9, 30)
    while day <= dt.date(2026, 12, 5):
        (rep,) = R.aging(scoped, utility.company_id, as_of=day)
        ar = owner.execute(
            """SELECT coalesce(sum(p.amount), 0) FROM posting p JOIN journal_entry e ON e.id = p.entry_id
                WHERE e.company_id = %s AND p.account_code LIKE 'AR:%%' AND e.booked_on <= %s""",
            [utility.company_id, day]).fetchone()[0]
        assert rep.rows[-1][-1] == ar, day
        (col,) = R.collection(scoped, utility.company_id, "2026-11", months=3, as_of=day)
        for district, month, bills, billed, collected, adjusted, open_, rate in col.rows:
            assert billed - collected - adjusted == open_ and open_ >= 0
        day += dt.timedelta(days=1)
