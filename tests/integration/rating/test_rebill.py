"""Correct and bill again (补开) after a reversal (红冲): bill October, reverse a bill, correct its
closing read, re-bill the account in the same run (``rebill=True``), then bill November from the
re-bill's closing read. Both ways of running a run: one transaction and parallel shards."""

from __future__ import annotations

import datetime as dt
from typing import Iterator

import psycopg
import pytest

from meterline.config.settings import BillingSettings
from meterline.ingest.vee import review
from meterline.ledger import balances
from meterline.ledger.bills import reverse_bill
from meterline.rating.explain import explain_bill, render
from meterline.rating.run import bill_run
from meterline.store.db import Database
from tests.integration.rating.billkit import NOV_START, Utility, november, october, scoped_db, tariffs
from tests.integration.rating.test_bill_run import EXPECTED, lines_of, snapshot

ONE = BillingSettings(workers=1)
PARALLEL = BillingSettings(workers=2, shard_accounts=5)   # books B1 (10 accounts) and B2 (1): two shards
CLOSE = NOV_START - dt.timedelta(hours=2)                   # October's closing reads (billkit)
W, S, F = "water", "sewage", "fixed"
# A1 on its corrected closing read, 115,000 L instead of 112,500: 15,000 L
A1_CORRECTED = [(W, 1, "tier", 15_000, 3000, 90), (S, None, "flat", 15_000, 1500, 0), (F, None, "fixed", 1, 500, 0)]


@pytest.fixture
def util(conn: psycopg.Connection) -> Utility:
    return october(Utility.create(conn))


@pytest.fixture
def app_db(db_dsn: str) -> Iterator[Database]:
    db = scoped_db(db_dsn)
    try:
        yield db
    finally:
        db.close()


@pytest.fixture(params=["one_transaction", "parallel"])
def settings(request: pytest.FixtureRequest) -> BillingSettings:
    return ONE if request.param == "one_transaction" else PARALLEL


def run(database: Database, u: Utility, period: str = "2026-10", cycle: str = "M",
        settings: BillingSettings = ONE, **kw):
    with database.connection(company_id=u.company_id) as c:
        res = bill_run(c, u.company_id, cycle, period, tariffs=tariffs(), created_by="tester",
                       day=dt.date(2026, 11, 2), settings=settings, db=database, **kw)
        c.commit()
    return res


def bill_of(conn: psycopg.Connection, u: Utility, account: str, period: str = "2026-10",
            status: str = "issued") -> tuple[int, int, int, int | None, int]:
    """(id, consumption, total, replaces, run id) of an account's bill of a period in a status."""
    rows = conn.execute("""SELECT id, consumption, total, replaces, run_id FROM bill
                            WHERE account_id = %s AND period = %s AND status = %s ORDER BY id""",
                        [u.accounts[account], period, status]).fetchall()
    assert len(rows) == 1, rows
    return rows[0]


def reverse(database: Database, u: Utility, bill_id: int, reason: str = "closing read mistyped") -> int:
    with database.connection(company_id=u.company_id) as c:
        r = reverse_bill(c, u.company_id, bill_id, reason=reason, created_by="finance", day=dt.date(2026, 11, 5))
        c.commit()
    return r.entry_id


def correct_m1(conn: psycopg.Connection, u: Utility, value: str = "115") -> None:
    """The supervisor's correction of M1's October closing read (m³, the meter's display unit)."""
    review.override(conn, u.company_id, f"{u.code}-M1", CLOSE, value, actor="supervisor", note="reader mistyped")


def test_reversed_bill_is_billed_again_on_the_corrected_read(conn: psycopg.Connection, util: Utility,
                                                             app_db: Database, settings: BillingSettings) -> None:
    first = run(app_db, util, settings=settings)
    assert first.bills == 10
    old_id, old_cons, old_total, _, run_id = bill_of(conn, util, "A1")
    assert old_cons == 12_500
    reversal_entry = reverse(app_db, util, old_id)
    correct_m1(conn, util)
    # A11 (book B2) is reversed too, for a reason other than its reads: two books, two shards
    a11_id, _, a11_total, _, _ = bill_of(conn, util, "A11")
    reverse(app_db, util, a11_id, reason="household size was wrong")

    # a plain re-run does not bill a reversed account again: it says why
    plain = run(app_db, util, settings=settings)
    assert plain.bills == 0 and plain.already_billed == 8
    assert sorted((s.account_id, s.reason) for s in plain.skips) == sorted(
        [(util.accounts["A1"], "reversed"), (util.accounts["A11"], "reversed"),
         (util.accounts["A10"], "no_closing_read")])
    assert conn.execute("SELECT reason FROM billing_run_skip WHERE account_id = %s",
                        [util.accounts["A1"]]).fetchone() == ("reversed",)

    # the dry run shows the re-bill as a change against the reversed bill
    before = snapshot(conn)
    dry = run(app_db, util, dry_run=True, rebill=True)
    assert snapshot(conn) == before
    assert [(c.account_id, c.bill_id, c.replaces, c.consumption_billed, c.consumption_now, c.total_billed)
            for c in dry.changes] == [(util.accounts["A1"], None, old_id, 12_500, 15_000, old_total),
                                      (util.accounts["A11"], None, a11_id, 5_000, 5_000, a11_total)]
    assert dry.unchanged == 8 and dry.rebilled == 2

    res = run(app_db, util, settings=settings, rebill=True)
    assert res.bills == 2 and res.rebilled == 2 and res.posted == 2 and res.run_id == run_id
    assert res.already_billed == 8
    assert (res.shards, res.workers) == ((2, 2) if settings is PARALLEL else (1, 1))   # the re-bills in shards
    assert bill_of(conn, util, "A11")[1:4] == (5_000, a11_total, a11_id)
    assert [s.reason for s in res.skips] == ["no_closing_read"]
    new_id, new_cons, new_total, replaces, new_run = bill_of(conn, util, "A1")
    assert (new_cons, replaces, new_run) == (15_000, old_id, run_id) and new_id != old_id
    assert new_total == sum(x[4] + x[5] for x in A1_CORRECTED)
    # the reversed bill stays, with its lines; the new bill has the corrected ones
    assert bill_of(conn, util, "A1", status="reversed")[:3] == (old_id, old_cons, old_total)
    got = lines_of(conn, util)
    assert sorted(got["A1"], key=repr) == sorted(EXPECTED["A1"] + A1_CORRECTED, key=repr)
    assert sorted(got["A11"], key=repr) == sorted(EXPECTED["A11"] * 2, key=repr)
    assert {k: sorted(v, key=repr) for k, v in got.items() if k not in ("A1", "A11")} == {
        k: sorted(v, key=repr) for k, v in EXPECTED.items() if k not in ("A1", "A11")}
    # the ledger shows the bill, its reversal and the new bill; the account owes the new bill only
    entries = conn.execute(
        """SELECT kind, ref_id, idempotency_key, reverses_id FROM journal_entry
            WHERE ref_type = 'bill' AND ref_id IN (%s, %s) ORDER BY id""", [old_id, new_id]).fetchall()
    original = entries[0]
    assert [(k, r) for k, r, _, _ in entries] == [("bill", old_id), ("reversal", old_id), ("bill", new_id)]
    assert entries[1][3] is not None and entries[1][2] == f"reverse:{entries[1][3]}"
    assert original[2] == f"bill:{old_id}"
    assert conn.execute("SELECT id FROM journal_entry WHERE idempotency_key = %s",
                        [f"reverse:{entries[1][3]}"]).fetchone()[0] == reversal_entry
    ar = conn.execute("SELECT sum(amount) FROM posting WHERE account_code = %s",
                      [f"AR:{util.accounts['A1']}"]).fetchone()[0]
    assert ar == new_total
    assert balances.check(conn, util.company_id).ok
    # the period reads: the reversed bill's stay, the re-bill's are the next revision
    reads = conn.execute("""SELECT revision, bill_id, opening_value, closing_value, consumption FROM meter_period_read
                             WHERE meter_id = %s AND period = '2026-10' ORDER BY revision""",
                         [util.meters["M1"]]).fetchall()
    assert reads == [(0, old_id, 100_000, 112_500, 12_500), (1, new_id, 100_000, 115_000, 15_000)]

    # idempotent: again (with or without rebill) changes nothing; the dry run sees nothing to do
    after = snapshot(conn)
    for kw in ({"rebill": True}, {}):
        again = run(app_db, util, settings=settings, **kw)
        assert again.bills == 0 and again.already_billed == 10 and snapshot(conn) == after
    dry = run(app_db, util, dry_run=True, rebill=True)
    assert dry.changes == [] and dry.unchanged == 10

    # bill explain: the new bill names the bill it replaces, the reversed one the bill that replaced it
    new_text = "\n".join(render(explain_bill(conn, new_id)))
    assert f"replaces bill {old_id}" in new_text and "115.000 m³" in new_text and "15.000 m³" in new_text
    old_text = "\n".join(render(explain_bill(conn, old_id)))
    assert "status reversed" in old_text and f"billed again as bill {new_id}" in old_text

    # November opens from the re-bill's closing read, not the reversed bill's
    november(util)
    nov = run(app_db, util, "2026-11", settings=settings)
    assert nov.bills == 11 and nov.skips == []
    assert conn.execute("""SELECT opening_value, opening_basis, consumption FROM meter_period_read
                            WHERE meter_id = %s AND period = '2026-11'""",
                        [util.meters["M1"]]).fetchone() == (115_000, "previous", 5_000)
    assert bill_of(conn, util, "A1", "2026-11")[1] == 5_000
    # over the two periods M1's litres are billed once, by the bills that stand
    billed = conn.execute("""SELECT sum(b.consumption) FROM bill b WHERE b.account_id = %s AND b.status = 'issued'""",
                          [util.accounts["A1"]]).fetchone()[0]
    assert billed == 120_000 - 100_000


def test_an_account_whose_bill_stands_is_never_billed_twice(conn: psycopg.Connection, util: Utility,
                                                            app_db: Database) -> None:
    run(app_db, util)
    after = snapshot(conn)
    assert run(app_db, util, rebill=True).bills == 0 and snapshot(conn) == after
    # A2 moves to a book of another cycle: that cycle's run of October does not bill it again
    util.book("X1", cycle="X")
    conn.execute("UPDATE account SET book_id = %s WHERE id = %s", [util.books["X1"], util.accounts["A2"]])
    other = run(app_db, util, cycle="X", rebill=True)
    assert other.bills == 0 and [(s.account_id, s.reason) for s in other.skips] == [
        (util.accounts["A2"], "billed_in_other_run")]
    # and the database refuses a second standing bill of an account and period, whatever the run
    bill_id, run_id = conn.execute("SELECT id, run_id FROM bill WHERE account_id = %s",
                                   [util.accounts["A2"]]).fetchone()
    x_run = conn.execute("SELECT id FROM billing_run WHERE cycle = 'X'").fetchone()[0]
    for rid in (run_id, x_run):
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("""INSERT INTO bill (company_id, run_id, account_id, period, period_start, period_end,
                                              consumption, amount, total, due_date)
                            VALUES (%s, %s, %s, '2026-10', '2026-10-01', '2026-10-31', 0, 0, 0, '2026-11-15')""",
                         [util.company_id, rid, util.accounts["A2"]])
    # a new bill may only replace a reversed bill of the same account and period
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="replaces"):
        conn.execute("""INSERT INTO bill (company_id, run_id, account_id, period, period_start, period_end,
                                          consumption, amount, total, due_date, replaces)
                        VALUES (%s, %s, %s, '2026-11', '2026-11-01', '2026-11-30', 0, 0, 0, '2026-12-15', %s)""",
                     [util.company_id, run_id, util.accounts["A2"], bill_id])

    # reversed, A2 is billed again by the run of its new cycle, on the next revision of its reads
    reverse(app_db, util, bill_id, reason="wrong tariff")
    res = run(app_db, util, cycle="X", rebill=True)
    assert res.bills == 1
    new_id, cons, _total, replaces, new_run = bill_of(conn, util, "A2")
    assert (cons, replaces, new_run) == (8_000, bill_id, x_run)
    assert conn.execute("SELECT revision, bill_id FROM meter_period_read WHERE meter_id = %s ORDER BY revision",
                        [util.meters["M2"]]).fetchall() == [(0, bill_id), (1, new_id)]
    assert balances.check(conn, util.company_id).ok


def test_rebill_waits_for_a_later_bill_that_opened_from_the_old_read(conn: psycopg.Connection, util: Utility,
                                                                     app_db: Database, settings: BillingSettings) -> None:
    run(app_db, util, settings=settings)
    november(util)
    run(app_db, util, "2026-11", settings=settings)
    oct_id = bill_of(conn, util, "A1")[0]
    nov_id = bill_of(conn, util, "A1", "2026-11")[0]
    reverse(app_db, util, oct_id)
    correct_m1(conn, util)
    # November's bill opened from 112,500: re-billing October on 115,000 would bill 2,500 L twice
    res = run(app_db, util, settings=settings, rebill=True)
    assert res.bills == 0
    assert [(s.account_id, s.reason) for s in res.skips if s.reason != "no_closing_read"] == [
        (util.accounts["A1"], "billed_later")]
    # reverse November too, then bill again in period order
    reverse(app_db, util, nov_id)
    assert run(app_db, util, settings=settings, rebill=True).bills == 1
    assert run(app_db, util, "2026-11", settings=settings, rebill=True).bills == 1
    oct_again, nov_again = bill_of(conn, util, "A1"), bill_of(conn, util, "A1", "2026-11")
    assert (oct_again[1], oct_again[3]) == (15_000, oct_id)
    assert (nov_again[1], nov_again[3]) == (5_000, nov_id)
    assert balances.check(conn, util.company_id).ok


def test_rebill_on_the_same_read_leaves_the_later_bill_standing(conn: psycopg.Connection, util: Utility,
                                                                app_db: Database) -> None:
    """A bill reversed for another reason than its reads (a wrong tariff, household size) is billed
    again while the next period's bill stands: it opened from the same closing read."""
    run(app_db, util)
    oct_id = bill_of(conn, util, "A1")[0]
    reverse(app_db, util, oct_id, reason="household size was wrong")
    # November is billed while October stands reversed: it opens from October's closing read
    november(util)
    nov = run(app_db, util, "2026-11")
    assert nov.bills == 11
    assert conn.execute("""SELECT opening_value FROM meter_period_read WHERE meter_id = %s AND period = '2026-11'""",
                        [util.meters["M1"]]).fetchone() == (112_500,)
    conn.execute("UPDATE account SET household_size = 5 WHERE id = %s", [util.accounts["A1"]])
    res = run(app_db, util, rebill=True)
    assert res.bills == 1
    assert bill_of(conn, util, "A1")[1] == 12_500 and bill_of(conn, util, "A1", "2026-11")[1] == 7_500
    billed = conn.execute("SELECT sum(consumption) FROM bill WHERE account_id = %s AND status = 'issued'",
                          [util.accounts["A1"]]).fetchone()[0]
    assert billed == 120_000 - 100_000
