"""The billing run on a hand-built utility, checked line by line against hand-computed figures."""

from __future__ import annotations

import datetime as dt
from typing import Iterator

import polars as pl
import psycopg
import pytest

from meterline.ledger import balances
from meterline.config.settings import BillingSettings
from meterline.rating.frames import query_frame
from meterline.rating.run import BillingError, bill_run, local_midnight, meter_reads
from meterline.store.consumption import Kind
from meterline.store.db import Database
from tests.integration.rating.billkit import DEC_START, NOV_START, OCT_START, Utility, november, october, scoped_db, tariffs

TABLES = ("billing_run", "bill", "bill_line", "bill_line_source", "journal_entry", "posting", "receivable_item", "meter_period_read",
          "apportionment", "apportionment_share", "billing_run_skip", "alert", "alert_event")

# per account: (component, tier, kind, quantity, amount, tax), hand-computed from billkit.TARIFF
W, S, F = "water", "sewage", "fixed"
EXPECTED = {
    "A1": [(W, 1, "tier", 12_500, 2500, 75), (S, None, "flat", 12_500, 1250, 0), (F, None, "fixed", 1, 500, 0)],
    "A2": [(W, 1, "tier", 8_000, 1600, 48), (S, None, "flat", 8_000, 800, 0), (F, None, "fixed", 1, 500, 0)],
    "A3": [(W, 1, "tier", 13_000, 2600, 78), (S, None, "flat", 13_000, 1300, 0), (F, None, "fixed", 1, 500, 0)],
    "A4": [(W, 1, "tier", 22_000, 4400, 132), (W, 2, "tier", 3_000, 900, 27), (S, None, "flat", 25_000, 2500, 0),
           (F, None, "fixed", 1, 500, 0)],
    "A5": [(W, 1, "tier", 20_000, 4000, 120), (S, None, "flat", 20_000, 2000, 0),
           (W, None, "apportioned", 2_500, 500, 15), (S, None, "apportioned", 2_500, 250, 0),
           (F, None, "fixed", 1, 500, 0)],
    "A6": [(W, 1, "tier", 10_000, 2000, 60), (S, None, "flat", 10_000, 1000, 0),
           (W, None, "apportioned", 2_500, 500, 15), (S, None, "apportioned", 2_500, 250, 0),
           (F, None, "fixed", 1, 500, 0)],
    "A7": [(W, 1, "tier", 20_000, 4000, 120), (S, None, "flat", 20_000, 2000, 0),
           (W, None, "apportioned", 5_000, 1000, 30), (S, None, "apportioned", 5_000, 500, 0),
           (F, None, "fixed", 1, 500, 0)],
    "A8": [(F, None, "fixed", 1, 5000, 0)],
    "A9": [(W, 1, "tier", 12_000, 2400, 72), (S, None, "flat", 12_000, 1200, 0), (F, None, "fixed", 1, 500, 0)],
    "A11": [(W, 1, "tier", 5_000, 1000, 30), (S, None, "flat", 5_000, 500, 0), (F, None, "fixed", 1, 500, 0)],
}


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


def run(database: Database, u: Utility, period: str = "2026-10", **kw):
    with database.connection(company_id=u.company_id) as c:
        res = bill_run(c, u.company_id, "M", period, tariffs=tariffs(), created_by="tester", day=dt.date(2026, 11, 2),
                       **kw)
        c.commit()
    return res


def snapshot(conn: psycopg.Connection) -> dict[str, object]:
    return {t: conn.execute(f"SELECT count(*), md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) "
                            f"FROM {t} x").fetchone() for t in TABLES}


def lines_of(conn: psycopg.Connection, u: Utility) -> dict[str, list[tuple]]:
    rows = conn.execute(
        """SELECT a.code, l.component, l.tier, l.source->>'kind', l.quantity, l.amount, l.tax
             FROM bill_line_sourced l JOIN bill b ON b.id = l.bill_id JOIN account a ON a.id = b.account_id
            WHERE b.company_id = %s ORDER BY a.code, l.line_no""", [u.company_id]).fetchall()
    out: dict[str, list[tuple]] = {}
    for code, *rest in rows:
        out.setdefault(code.split("-", 1)[1], []).append(tuple(rest))
    return out


def test_october_billed_line_by_line(conn: psycopg.Connection, util: Utility, app_db: Database) -> None:
    res = run(app_db, util)
    assert res.bills == 10 and res.accounts == 11
    assert [(util.accounts["A10"], "no_closing_read")] == [(s.account_id, s.reason) for s in res.skips]
    got = lines_of(conn, util)
    assert {k: sorted(v, key=repr) for k, v in got.items()} == {k: sorted(v, key=repr) for k, v in EXPECTED.items()}
    bills = {code.split("-", 1)[1]: (cons, amount, tax, total, est, due) for code, cons, amount, tax, total, est, due in
             conn.execute("""SELECT a.code, b.consumption, b.amount, b.tax, b.total, b.estimated, b.due_date
                               FROM bill b JOIN account a ON a.id = b.account_id""").fetchall()}
    for code, lines in EXPECTED.items():
        amount, tax = sum(x[4] for x in lines), sum(x[5] for x in lines)
        assert bills[code][1:4] == (amount, tax, amount + tax), code
        assert bills[code][5] == dt.date(2026, 11, 15)
    assert bills["A4"][4] is True and not any(v[4] for k, v in bills.items() if k != "A4")
    assert bills["A5"][0] == 22_500 and bills["A8"][0] == 0
    assert res.total == sum(v[3] for v in bills.values()) and res.estimated == 1
    # the reads behind the bills: rollover, replacement, multiplier, estimate
    reads = {s.split("-", 1)[1]: r for s, *r in conn.execute(
        """SELECT m.serial, p.opening_value, p.closing_value, p.consumption, p.kind, p.closing_estimated, p.opening_basis
             FROM meter_period_read p JOIN meter m ON m.id = p.meter_id""").fetchall()}
    assert reads["M2"][2:4] == [8_000, Kind.ROLLOVER]
    assert reads["M3"][2:4] == [13_000, Kind.REPLACEMENT]
    assert reads["M11"][2] == 5_000
    assert reads["M4"][1:] == [45_000, 25_000, Kind.FORWARD, True, "read"]
    assert reads["MM"][2] == 60_000 and reads["BM"][2] == 35_000    # masters billed to nobody keep their reads
    # every line names its reads (meter, opening ts, closing ts, estimated); apportioned lines their shares
    src = conn.execute(
        """SELECT l.source FROM bill_line_sourced l JOIN bill b ON b.id = l.bill_id
            WHERE b.account_id = %s AND l.source->>'kind' = 'apportioned' AND l.component = 'water'""",
        [util.accounts["A7"]]).fetchone()[0]
    assert src["reads"] == [[util.meters["H3"], "2026-09-30T16:00:00Z", "2026-10-31T14:00:00Z", False]]
    assert src["shares"] == [[util.meters["BM"], util.meters["H3"], 5_000]]
    assert src["version"] == "water-residential@2026-01-01"
    # the same bill's other lines: its reads, no shares (those are the apportioned lines')
    others = [s for s, in conn.execute(
        """SELECT l.source FROM bill_line_sourced l JOIN bill b ON b.id = l.bill_id
            WHERE b.account_id = %s AND l.source->>'kind' <> 'apportioned'""", [util.accounts["A7"]])]
    assert others and all(s["reads"] == src["reads"] and "shares" not in s for s in others)
    # stored where common (0660): a line holds no document of its own; its bill holds the reads and
    # shares once; every line names a rating document of the run
    stored = conn.execute(
        """SELECT count(*), count(*) FILTER (WHERE l.source <> '{}'::jsonb OR l.source_id IS NULL),
                  count(DISTINCT l.source_id), count(DISTINCT b.id) FILTER (WHERE b.reads IS NULL)
             FROM bill_line l JOIN bill b ON b.id = l.bill_id""").fetchone()
    assert stored[0] > 0 and stored[1] == 0 and stored[3] == 0
    assert stored[2] == conn.execute("SELECT count(*) FROM bill_line_source").fetchone()[0]
    bill_shares = conn.execute("SELECT shares FROM bill WHERE account_id = %s", [util.accounts["A7"]]).fetchone()[0]
    assert bill_shares == {"shares": src["shares"]}
    app = {s.split("-", 1)[1]: r for s, *r in conn.execute(
        """SELECT m.serial, a.policy, a.residual, a.inherited, a.distributed, a.status
             FROM apportionment a JOIN meter m ON m.id = a.master_meter_id""").fetchall()}
    assert app == {"MM": ["equal", 5_000, 0, 5_000, "apportioned"],
                   "BM": ["by_consumption", 5_000, 2_500, 7_500, "apportioned"],
                   "NM": ["master_account", -2_000, 0, 0, "negative"]}


def test_negative_residual_alerts_and_bills_subs_on_their_own_reads(conn: psycopg.Connection, util: Utility,
                                                                    app_db: Database) -> None:
    res = run(app_db, util)
    assert res.trees == {"apportioned": 2, "negative": 1} and res.alerts_opened == 1
    alert = conn.execute("SELECT meter_id, rule, status, period, detail->>'residual' FROM alert").fetchall()
    assert alert == [(util.meters["NM"], "subs_exceed_master", "open", "2026-10", "-2000")]
    got = lines_of(conn, util)
    assert not any(k == "apportioned" for _c, _t, k, *_ in got["A9"] + got["A8"])
    assert conn.execute("SELECT count(*) FROM apportionment_share WHERE master_meter_id = %s",
                        [util.meters["NM"]]).fetchone()[0] == 0


def test_rerun_and_dry_run_change_nothing(conn: psycopg.Connection, util: Utility, app_db: Database) -> None:
    empty = snapshot(conn)
    dry = run(app_db, util, dry_run=True)
    assert snapshot(conn) == empty                      # a dry run writes nothing, not even the run
    assert dry.run_id is None and dry.bills == 10 and len([c for c in dry.changes if c.bill_id is None]) == 10
    first = run(app_db, util)
    after = snapshot(conn)
    again = run(app_db, util)
    assert snapshot(conn) == after
    assert again.run_id == first.run_id and again.bills == 0 and again.already_billed == 10
    assert [s.reason for s in again.skips] == ["no_closing_read"]
    dry = run(app_db, util, dry_run=True)
    assert snapshot(conn) == after
    assert dry.changes == [] and dry.unchanged == 10
    # a late read changes what a re-run would bill: the dry run shows it, the real run bills the skipped account
    util.read("M10", dt.datetime(2026, 10, 31, 12, tzinfo=dt.timezone.utc), 9_000)
    dry = run(app_db, util, dry_run=True)
    assert [(c.account_id, c.bill_id, c.consumption_now) for c in dry.changes] == [(util.accounts["A10"], None, 2_000)]
    late = run(app_db, util)
    assert late.bills == 1 and late.skips == []
    assert conn.execute("SELECT count(*) FROM billing_run_skip").fetchone()[0] == 0


def test_opening_read_is_the_previous_closing_read(conn: psycopg.Connection, util: Utility, app_db: Database) -> None:
    run(app_db, util)
    november(util)
    nov = run(app_db, util, "2026-11")
    assert nov.bills == 11 and nov.skips == []
    pairs = conn.execute(
        """SELECT m.serial, o.closing_ts, o.closing_value, n.opening_ts, n.opening_value, n.opening_basis
             FROM meter_period_read n JOIN meter m ON m.id = n.meter_id
             LEFT JOIN meter_period_read o ON o.meter_id = n.meter_id AND o.period = '2026-10'
            WHERE n.period = '2026-11'""").fetchall()
    for serial, c_ts, c_val, o_ts, o_val, basis in pairs:
        if serial.endswith("M10"):   # skipped in October: never billed, opens at its latest read
            assert (c_ts, basis, o_val) == (None, "last_read", 7_500)
        else:
            assert (o_ts, o_val, basis) == (c_ts, c_val, "previous"), serial
    cons = dict(conn.execute("""SELECT a.code, b.consumption FROM bill b JOIN account a ON a.id = b.account_id
                                 WHERE b.period = '2026-11'""").fetchall())
    code = util.code
    assert cons[f"{code}-A1"] == 7_500 and cons[f"{code}-A4"] == 5_000 and cons[f"{code}-A10"] == 1_500
    # ten October reads and bills, eleven November ones; no meter's litres counted twice
    assert conn.execute("SELECT count(*) FROM meter_period_read WHERE period = '2026-10'").fetchone()[0] == 12
    billed = conn.execute("SELECT sum(consumption) FROM meter_period_read p WHERE meter_id = %s",
                          [util.meters["M1"]]).fetchone()[0]
    assert billed == 120_000 - 100_000


def test_ledger_postings_balance_and_equal_the_bills(conn: psycopg.Connection, util: Utility, app_db: Database) -> None:
    res = run(app_db, util)
    assert res.posted == 10
    sums = conn.execute(
        """SELECT sum(amount) FILTER (WHERE account_code LIKE 'AR:%%'), sum(amount) FILTER (WHERE account_code LIKE 'REV:%%'),
                  sum(amount) FILTER (WHERE account_code LIKE 'TAX:%%'), sum(amount) FROM posting WHERE company_id = %s""",
        [util.company_id]).fetchone()
    total, amount, tax = conn.execute("SELECT sum(total), sum(amount), sum(tax) FROM bill").fetchone()
    assert sums == (total, -amount, -tax, 0)
    per_component = dict(conn.execute(
        "SELECT 'REV:' || component, -sum(amount) FROM bill_line GROUP BY 1").fetchall())
    assert dict(conn.execute("""SELECT account_code, sum(amount) FROM posting WHERE account_code LIKE 'REV:%%'
                                GROUP BY 1""").fetchall()) == per_component
    assert conn.execute("SELECT count(*) FROM journal_entry WHERE kind = 'bill'").fetchone()[0] == 10
    assert balances.check(conn, util.company_id).ok


def test_another_companys_accounts_are_never_billed(conn: psycopg.Connection, util: Utility, app_db: Database) -> None:
    other = october(Utility.create(conn))
    res = run(app_db, util)
    assert res.bills == 10
    assert conn.execute("SELECT count(*) FROM bill WHERE company_id = %s", [other.company_id]).fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM meter_period_read WHERE company_id = %s",
                        [other.company_id]).fetchone()[0] == 0
    # a session scoped to one company cannot bill another
    with app_db.connection(company_id=other.company_id) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            bill_run(c, util.company_id, "M", "2026-10", tariffs=tariffs())


def test_books_filter_and_bad_input(conn: psycopg.Connection, util: Utility, app_db: Database) -> None:
    res = run(app_db, util, books=["B2"])
    assert res.bills == 1 and res.accounts == 1
    res = run(app_db, util)
    assert res.bills == 9 and res.already_billed == 1
    with pytest.raises(BillingError, match="unknown meter book"):
        run(app_db, util, books=["NOPE"])
    with pytest.raises(BillingError, match="YYYY-MM"):
        run(app_db, util, "2026-13")


def test_references_are_checked_per_statement(conn: psycopg.Connection, util: Utility, app_db: Database) -> None:
    run(app_db, util)
    other = Utility.create(conn)
    bill_id, run_id, account = conn.execute("SELECT id, run_id, account_id FROM bill LIMIT 1").fetchone()
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="bill line"):
        conn.execute("""INSERT INTO bill_line (bill_id, line_no, company_id, component, amount)
                        VALUES (%s, 99, %s, 'water', 1)""", [bill_id + 10_000, util.company_id])
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="bill line"):
        conn.execute("""INSERT INTO bill_line (bill_id, line_no, company_id, component, amount)
                        VALUES (%s, 99, %s, 'water', 1)""", [bill_id, other.company_id])
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="billing run"):
        conn.execute("""INSERT INTO bill (company_id, run_id, account_id, period, period_start, period_end, consumption,
                                          amount, total, due_date)
                        VALUES (%s, %s, %s, '2026-12', '2026-12-01', '2026-12-31', 0, 0, 0, '2027-01-15')""",
                     [other.company_id, run_id, account])
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="period read"):
        conn.execute("""INSERT INTO meter_period_read (meter_id, period, company_id, run_id, account_id, bill_id,
                            opening_basis, opening_ts, opening_value, opening_estimated, closing_ts, closing_value,
                            closing_estimated, consumption, kind)
                        VALUES (%s, '2026-12', %s, %s, %s, %s, 'read', now(), 0, false, now(), 0, false, 0, 0)""",
                     [util.meters["M1"], util.company_id, run_id, account + 1, bill_id])
    master, period = conn.execute("SELECT master_meter_id, period FROM apportionment LIMIT 1").fetchone()
    share = """INSERT INTO apportionment_share (master_meter_id, period, account_id, company_id, via_meter_id, weight,
                                                share) VALUES (%s, %s, %s, %s, %s, 1, 0)"""
    for args in ([master, "2026-12", account, util.company_id, master],          # no such apportionment
                 [master, period, -1, util.company_id, master],                         # no such account
                 [master, period, account, other.company_id, master],          # another company
                 [master, period, account, util.company_id, -1]):              # no such meter
        with pytest.raises(psycopg.errors.ForeignKeyViolation, match="apportionment share"):
            conn.execute(share, args)


def test_bills_and_what_they_reference_are_never_deleted(conn: psycopg.Connection, util: Utility,
                                                          app_db: Database) -> None:
    """Without per-row foreign keys (0500) the other side of the references is kept by 0610:
    bills, lines and runs refuse DELETE and TRUNCATE for every role, a billed account refuses
    DELETE, and the application role cannot change a bill line."""
    run(app_db, util)
    bill_id, run_id, account = conn.execute("SELECT id, run_id, account_id FROM bill LIMIT 1").fetchone()
    for stmt, args in (("DELETE FROM bill_line WHERE bill_id = %s", [bill_id]),
                       ("DELETE FROM bill WHERE id = %s", [bill_id]),
                       ("DELETE FROM billing_run WHERE id = %s", [run_id]),
                       ("TRUNCATE bill_line", None), ("TRUNCATE bill CASCADE", None),
                       ("TRUNCATE billing_run CASCADE", None)):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="never deleted"):
            conn.execute(stmt, args)
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="has bills"):
        conn.execute("DELETE FROM account WHERE id = %s", [account])
    # a line's source document (0660) is kept as written, and a line names one of its company
    for stmt in ("UPDATE bill_line_source SET doc = '{}'", "DELETE FROM bill_line_source", "TRUNCATE bill_line_source"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            conn.execute(stmt)
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="bill line source"):
        conn.execute("""INSERT INTO bill_line (bill_id, line_no, company_id, component, amount, source_id)
                        VALUES (%s, 99, %s, 'water', 0, -1)""", [bill_id, util.company_id])
    with app_db.connection(company_id=util.company_id) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("UPDATE bill_line SET amount = amount + 1 WHERE bill_id = %s", [bill_id])
    assert conn.execute("SELECT count(*) FROM bill WHERE id = %s", [bill_id]).fetchone()[0] == 1


def test_reads_probed_per_meter_equal_the_range_scan(conn: psycopg.Connection, util: Utility, app_db: Database) -> None:
    """The two ways meter_reads finds reads (per-meter probes for the scattered meters of the
    trees, a scan of the id range for a shard of books) give the same rows, previous reads too."""
    run(app_db, util)
    november(util)
    # reads on either side of the period's end: the one at the boundary is the closing read
    util.read("M1", DEC_START - dt.timedelta(days=1), 119_000)
    util.read("M1", DEC_START + dt.timedelta(days=2), 121_000)
    util.read("H4", DEC_START + dt.timedelta(hours=3), 70_100)
    with app_db.connection(company_id=util.company_id) as c, c.transaction(force_rollback=True):
        meters = query_frame(c, "SELECT id AS meter_id, quantity, register_modulus AS modulus, multiplier FROM meter",
                             None, {"meter_id": pl.Int64, "quantity": pl.Int16, "modulus": pl.Int64,
                                    "multiplier": pl.Int64})
        start_b, end_b = local_midnight(dt.date(2026, 11, 1), "Asia/Shanghai"), local_midnight(dt.date(2026, 12, 1), "Asia/Shanghai")
        got = [meter_reads(c, meters, "2026-11", start_b, end_b, BillingSettings(), probe=p).sort("meter_id")
               for p in (True, False)]
    assert got[0].height == meters.height and got[0]["has_close"].sum() >= 10
    assert got[0]["open_basis"].drop_nulls().to_list().count(0) >= 10   # opened at October's closing reads
    close = dict(got[0].select("meter_id", "close_value").iter_rows())
    assert close[util.meters["M1"]] == 120_000 and close[util.meters["H4"]] == 70_000
    assert got[0].equals(got[1])


def test_fixed_charge_per_meter_of_the_account(conn: psycopg.Connection, app_db: Database) -> None:
    # a shop with two connections, DN15 and DN50: two fixed charges (5.00 + 50.00); the water of
    # both meters is added up and priced in the account's tiers (12,000 + 15,000 L = 27 m³)
    u = Utility.create(conn)
    u.book("S")
    u.account("S1", "S")
    u.meter("P1", "S1", size="DN15")
    u.meter("P2", "S1", size="DN50")
    for serial, opening, closing in (("P1", 1_000, 13_000), ("P2", 5_000, 20_000)):
        u.read(serial, OCT_START, opening)
        u.read(serial, NOV_START, closing)
    res = run(app_db, u)
    assert res.bills == 1 and res.skips == []
    assert lines_of(conn, u)["S1"] == [
        (W, 1, "tier", 22_000, 4400, 132), (W, 2, "tier", 5_000, 1500, 45), (S, None, "flat", 27_000, 2700, 0),
        (F, None, "fixed", 1, 500, 0), (F, None, "fixed", 1, 5000, 0)]


PARALLEL = BillingSettings(workers=2, shard_accounts=5)   # books B1 (10 accounts) and B2 (1): two shards


def test_parallel_shards_bill_the_same_as_one_transaction(conn: psycopg.Connection, util: Utility,
                                                           app_db: Database) -> None:
    res = run(app_db, util, settings=PARALLEL, db=app_db)
    assert res.bills == 10 and res.posted == 10 and res.accounts == 11 and (res.shards, res.workers) == (2, 2)
    assert [(s.account_id, s.reason) for s in res.skips] == [(util.accounts["A10"], "no_closing_read")]
    got = lines_of(conn, util)
    assert {k: sorted(v, key=repr) for k, v in got.items()} == {k: sorted(v, key=repr) for k, v in EXPECTED.items()}
    # each shard posted its own bills: one entry per bill, the books balance, the run is completed
    assert conn.execute("SELECT count(*), count(DISTINCT ref_id) FROM journal_entry WHERE kind = 'bill'").fetchone() == (10, 10)
    assert balances.check(conn, util.company_id).ok
    assert conn.execute("SELECT status, accounts FROM billing_run").fetchone() == ("completed", 10)
    after = snapshot(conn)
    again = run(app_db, util, settings=PARALLEL, db=app_db)
    assert again.bills == 0 and again.already_billed == 10 and snapshot(conn) == after


def test_parallel_run_interrupted_by_a_failing_shard_is_completed_by_running_it_again(
        conn: psycopg.Connection, util: Utility, app_db: Database) -> None:
    # the shard of book B2 fails (a trigger refuses A11's bill); B1's shard commits on its own
    conn.execute(f"""CREATE FUNCTION test_refuse_bill() RETURNS trigger LANGUAGE plpgsql AS $$
                     BEGIN IF NEW.account_id = {util.accounts['A11']} THEN RAISE EXCEPTION 'disk full'; END IF;
                     RETURN NEW; END $$""")
    conn.execute("CREATE TRIGGER test_refuse_bill BEFORE INSERT ON bill FOR EACH ROW EXECUTE FUNCTION test_refuse_bill()")
    with pytest.raises(psycopg.errors.RaiseException, match="disk full"):
        run(app_db, util, settings=PARALLEL, db=app_db)
    billed = {code.split("-", 1)[1] for (code,) in conn.execute(
        "SELECT a.code FROM bill b JOIN account a ON a.id = b.account_id").fetchall()}
    assert billed == set(EXPECTED) - {"A11"}
    assert conn.execute("SELECT status FROM billing_run").fetchone()[0] != "completed"
    assert conn.execute("SELECT count(*) FROM journal_entry WHERE kind = 'bill'").fetchone()[0] == 9
    conn.execute("DROP TRIGGER test_refuse_bill ON bill")
    again = run(app_db, util, settings=PARALLEL, db=app_db)
    assert again.bills == 1 and again.already_billed == 9
    got = lines_of(conn, util)
    assert {k: sorted(v, key=repr) for k, v in got.items()} == {k: sorted(v, key=repr) for k, v in EXPECTED.items()}
    assert conn.execute("SELECT status FROM billing_run").fetchone()[0] == "completed"
    assert balances.check(conn, util.company_id).ok
