"""The journal's guarantees, enforced by the database: balance, append-only, chart, app role."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest

from meterline.ledger import balances
from meterline.ledger.errors import UnbalancedEntry, UnknownAccountCode
from meterline.ledger.journal import Posting, post_entry
from tests.integration.ledger.ledgerkit import balances as posted_balances
from tests.integration.ledger.ledgerkit import add_bill, make_accounts, make_run, new_company

DAY = dt.date(2026, 3, 2)


def _entry(conn: psycopg.Connection, company: int) -> int:
    return conn.execute("INSERT INTO journal_entry (company_id, booked_on, kind) VALUES (%s, %s, 'test') RETURNING id",
                        [company, DAY]).fetchone()[0]


def _post(conn: psycopg.Connection, entry: int, company: int, lines: list[tuple[int, str, int]]) -> None:
    """One INSERT statement with these postings."""
    conn.execute("""INSERT INTO posting (entry_id, line_no, company_id, account_code, amount)
                    SELECT %s, n, %s, code, amount FROM unnest(%s::smallint[], %s::text[], %s::bigint[]) AS u(n, code, amount)""",
                 [entry, company, [n for n, _, _ in lines], [c for _, c, _ in lines], [a for _, _, a in lines]])


def test_balanced_entry_in_one_statement_commits(conn: psycopg.Connection) -> None:
    c = new_company(conn)
    with conn.transaction():
        e = post_entry(conn, c, day=DAY, kind="test",
                       postings=[Posting("CASH:counter:c1", 500), Posting("REV:water", -300), Posting("TAX:vat", -200)])
    assert e.created and e.booked_on == DAY
    assert posted_balances(conn, c) == {"CASH:counter:c1": 500, "REV:water": -300, "TAX:vat": -200}


def test_unbalanced_entry_is_refused_at_commit(conn: psycopg.Connection) -> None:
    c = new_company(conn)
    with pytest.raises(psycopg.errors.CheckViolation, match="does not balance"):
        with conn.transaction():
            e = _entry(conn, c)
            _post(conn, e, c, [(1, "CASH:bank", 100), (2, "REV:water", -99)])
    assert conn.execute("SELECT count(*) FROM posting WHERE company_id = %s", [c]).fetchone()[0] == 0


def test_entry_written_in_parts_is_checked_as_a_whole(conn: psycopg.Connection) -> None:
    c = new_company(conn)
    with conn.transaction():  # two statements, balanced together
        e = _entry(conn, c)
        _post(conn, e, c, [(1, "CASH:bank", 100)])
        _post(conn, e, c, [(2, "REV:water", -100)])
    with pytest.raises(psycopg.errors.CheckViolation, match="does not balance"):
        with conn.transaction():
            e = _entry(conn, c)
            _post(conn, e, c, [(1, "CASH:bank", 100)])
            _post(conn, e, c, [(2, "REV:water", -60)])
    # the same failure is raised immediately when asked
    with pytest.raises(psycopg.errors.CheckViolation):
        with conn.transaction():
            e = _entry(conn, c)
            _post(conn, e, c, [(1, "CASH:bank", 7)])
            conn.execute("SET CONSTRAINTS ALL IMMEDIATE")


def test_postings_cannot_be_added_to_a_committed_entry(conn: psycopg.Connection) -> None:
    c = new_company(conn)
    with conn.transaction():
        e = post_entry(conn, c, day=DAY, kind="test", postings=[Posting("CASH:bank", 10), Posting("REV:water", -10)])
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="committed earlier"):
        with conn.transaction():  # even a balanced pair: history does not change
            _post(conn, e.id, c, [(3, "CASH:bank", 5), (4, "REV:water", -5)])


def test_sub_ledger_rows_must_reference_what_exists(conn: psycopg.Connection) -> None:
    c1, c2 = new_company(conn), new_company(conn)
    (a,) = make_accounts(conn, c1, 1)
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="entry"):
        with conn.transaction():
            conn.execute("INSERT INTO receivable_item (company_id, account_id, kind, entry_id, amount, due_date) "
                         "VALUES (%s, %s, 'charge', 987654, 5, %s)", [c1, a, DAY])
    with conn.transaction():
        e = post_entry(conn, c1, day=DAY, kind="test", postings=[Posting(f"AR:{a}", 5), Posting("REV:water", -5)])
        item = conn.execute("INSERT INTO receivable_item (company_id, account_id, kind, entry_id, amount, due_date) "
                            "VALUES (%s, %s, 'charge', %s, 5, %s) RETURNING id", [c1, a, e.id, DAY]).fetchone()[0]
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="account"):
        with conn.transaction():
            e2 = post_entry(conn, c2, day=DAY, kind="test", postings=[Posting("AR:1", 5), Posting("REV:water", -5)])
            conn.execute("INSERT INTO receivable_item (company_id, account_id, kind, entry_id, amount, due_date) "
                         "VALUES (%s, %s, 'charge', %s, 5, %s)", [c2, a, e2.id, DAY])
    for values, why in (((c1, e.id, 424242), "item"), ((c2, e.id, item), "entry")):
        with pytest.raises(psycopg.errors.ForeignKeyViolation, match=why):
            with conn.transaction():
                conn.execute("INSERT INTO allocation (company_id, entry_id, item_id, source, amount) "
                             "VALUES (%s, %s, %s, 'waiver', 1)", list(values))
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="payment"):
        with conn.transaction():
            conn.execute("INSERT INTO payment (company_id, channel, external_id, amount, received_at, booked_on, entry_id) "
                         "VALUES (%s, 'bank', 'Z', 5, now(), %s, 555555)", [c1, DAY])


def test_items_and_payments_need_an_existing_account_of_their_company(conn: psycopg.Connection) -> None:
    """0602: the account of an item or a payment is checked once per statement (no per-row
    foreign key), and an account with items or payments is never deleted."""
    c1, c2 = new_company(conn), new_company(conn)
    (a,) = make_accounts(conn, c1, 1)
    (b,) = make_accounts(conn, c2, 1)
    with conn.transaction():
        e = post_entry(conn, c1, day=DAY, kind="test", postings=[Posting(f"AR:{a}", 5), Posting("REV:water", -5)])
    item = "INSERT INTO receivable_item (company_id, account_id, kind, entry_id, amount, due_date) VALUES (%s, %s, 'charge', %s, 5, %s)"
    for account, why in ((987654321, "account 987654321 is missing"), (b, f"account {b} is missing or of another company")):
        with pytest.raises(psycopg.errors.ForeignKeyViolation, match=why):
            with conn.transaction():  # the bad row among good ones in one statement
                conn.execute(item.replace("VALUES (%s, %s, 'charge', %s, 5, %s)",
                                          "SELECT %s, x, 'charge', %s, 5, %s FROM unnest(%s::bigint[]) x"),
                             [c1, e.id, DAY, [a, account, a]])
    payment = ("INSERT INTO payment (company_id, channel, external_id, account_id, amount, received_at, booked_on, entry_id) "
               "VALUES (%s, 'bank', %s, %s, 5, now(), %s, %s)")
    for account in (987654321, b):
        with pytest.raises(psycopg.errors.ForeignKeyViolation, match=f"payment P{account}: account {account} is missing"):
            with conn.transaction():
                conn.execute(payment, [c1, f"P{account}", account, DAY, e.id])
    with conn.transaction():
        conn.execute(item, [c1, a, e.id, DAY])
        e2 = post_entry(conn, c2, day=DAY, kind="test", postings=[Posting("CASH:bank", 5), Posting(f"PREPAID:{b}", -5)])
        conn.execute(payment, [c2, "P1", b, DAY, e2.id])
    for account in (a, b):
        with pytest.raises(psycopg.errors.ForeignKeyViolation, match="never deleted"):
            with conn.transaction():
                conn.execute("DELETE FROM account WHERE id = %s", [account])
    (unused,) = make_accounts(conn, new_company(conn), 1)
    conn.execute("DELETE FROM account WHERE id = %s", [unused])  # nothing refers to it


def test_an_entry_committed_empty_may_be_filled_once_unless_its_day_closed(conn: psycopg.Connection) -> None:
    from meterline.ledger import close

    c = new_company(conn)
    e = _entry(conn, c)  # committed, no postings yet (the 0001 way of writing an entry)
    with conn.transaction():
        _post(conn, e, c, [(1, "CASH:bank", 5), (2, "REV:water", -5)])
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        with conn.transaction():
            _post(conn, e, c, [(3, "CASH:bank", 1), (4, "REV:water", -1)])
    late = _entry(conn, c)
    with conn.transaction():
        close.close_day(conn, c, DAY)
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="closed"):
        with conn.transaction():
            _post(conn, late, c, [(1, "CASH:bank", 5), (2, "REV:water", -5)])


def test_posting_needs_an_existing_entry_of_its_company(conn: psycopg.Connection) -> None:
    c1, c2 = new_company(conn), new_company(conn)
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        with conn.transaction():
            _post(conn, 987654321, c1, [(1, "CASH:bank", 5), (2, "REV:water", -5)])
    with pytest.raises(psycopg.errors.CheckViolation, match="company"):
        with conn.transaction():
            e = _entry(conn, c1)
            _post(conn, e, c2, [(1, "CASH:bank", 5), (2, "REV:water", -5)])


def test_account_codes_must_be_in_the_chart(conn: psycopg.Connection) -> None:
    c = new_company(conn)
    for code in ("CASHX:bank", "AR:abc", "REV:Water", "INC:tips", "CASH:bank:two words"):
        with pytest.raises(psycopg.errors.CheckViolation, match="chart of accounts"):
            with conn.transaction():
                e = _entry(conn, c)
                _post(conn, e, c, [(1, code, 5), (2, "REV:water", -5)])
    with pytest.raises(UnknownAccountCode):
        post_entry(conn, c, day=DAY, kind="test", postings=[Posting("AR:x", 1), Posting("REV:water", -1)])
    with pytest.raises(UnbalancedEntry):
        post_entry(conn, c, day=DAY, kind="test", postings=[Posting("AR:1", 2), Posting("REV:water", -1)])


@pytest.mark.parametrize("statement", [
    "UPDATE posting SET amount = amount + 1",
    "DELETE FROM posting",
    "TRUNCATE posting",
    "UPDATE journal_entry SET memo = 'changed'",
    "DELETE FROM journal_entry",
    "TRUNCATE journal_entry CASCADE",
    "UPDATE payment SET amount = 1",
    "DELETE FROM payment",
    "UPDATE allocation SET amount = 1",
    "DELETE FROM allocation",
    "DELETE FROM receivable_item",
    "TRUNCATE receivable_item CASCADE",
])
@pytest.mark.parametrize("role", ["owner", "meterline_app"])
def test_tampering_with_the_journal_fails(conn: psycopg.Connection, statement: str, role: str) -> None:
    from meterline.ledger.bills import post_bills
    from meterline.ledger.payments import PaymentIn, record_payment

    c = new_company(conn)
    (a,) = make_accounts(conn, c, 1)
    run = make_run(conn, c)
    add_bill(conn, c, run, a, [("water", 60, 0)], DAY)
    with conn.transaction():
        post_bills(conn, c, run, day=DAY)
        record_payment(conn, c, "bank", PaymentIn("T1", a, 100, dt.datetime(2026, 3, 2, 2, tzinfo=dt.timezone.utc)))
    before = posted_balances(conn, c)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        with conn.transaction():
            if role != "owner":
                conn.execute(f"SET LOCAL ROLE {role}")
                # in the company's scope: row-level security must not be what stops it
                conn.execute("SELECT set_config('meterline.company_id', %s, true)", [str(c)])
            conn.execute(statement)
    assert posted_balances(conn, c) == before


def test_app_role_may_append_but_not_change(conn: psycopg.Connection) -> None:
    for table in ("journal_entry", "posting", "payment", "allocation"):
        privs = conn.execute(
            """SELECT has_table_privilege('meterline_app', %(t)s, 'SELECT'), has_table_privilege('meterline_app', %(t)s, 'INSERT'),
                      has_table_privilege('meterline_app', %(t)s, 'UPDATE'), has_table_privilege('meterline_app', %(t)s, 'DELETE'),
                      has_table_privilege('meterline_app', %(t)s, 'TRUNCATE')""", {"t": table}).fetchone()
        assert privs == (True, True, False, False, False), table
    c = new_company(conn)
    with conn.transaction():  # and posting as the app role works, triggers included
        conn.execute("SET LOCAL ROLE meterline_app")
        conn.execute("SELECT set_config('meterline.company_id', %s, true)", [str(c)])
        post_entry(conn, c, day=DAY, kind="test", postings=[Posting("CASH:bank", 10), Posting("REV:water", -10)])
        conn.execute("SELECT ledger_fold_balances()")
    assert posted_balances(conn, c) == {"CASH:bank": 10, "REV:water": -10}
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        with conn.transaction():
            conn.execute("SET LOCAL ROLE meterline_app")
            conn.execute("SELECT ledger_rebuild_balances()")


def test_maintained_balances_follow_postings_and_fold(conn: psycopg.Connection) -> None:
    c = new_company(conn)
    for i in range(3):
        with conn.transaction():
            post_entry(conn, c, day=DAY, kind="test", postings=[Posting("CASH:wechat", 100 + i), Posting("REV:water", -100 - i)])
    assert balances.account_balance(conn, c, "CASH:wechat") == 303
    deltas = conn.execute("SELECT count(*) FROM ledger_balance_delta WHERE company_id = %s", [c]).fetchone()[0]
    assert deltas == 6  # insert-only: one row per account and statement
    with conn.transaction():
        balances.fold(conn)
    assert conn.execute("SELECT count(*) FROM ledger_balance_delta WHERE company_id = %s", [c]).fetchone()[0] == 0
    assert balances.account_balance(conn, c, "CASH:wechat") == 303
    assert balances.check(conn, c).ok


def test_check_finds_a_drifted_balance_and_repairs_it(conn: psycopg.Connection) -> None:
    c = new_company(conn)
    with conn.transaction():
        post_entry(conn, c, day=DAY, kind="test", postings=[Posting("CASH:bank", 50), Posting("REV:water", -50)])
    conn.execute("INSERT INTO ledger_balance_delta (company_id, account_code, amount) VALUES (%s, 'CASH:bank', 1)", [c])
    report = balances.check(conn, c)
    assert not report.ok
    assert any("CASH:bank" in p and "maintained balance 51" in p for p in report.problems)
    with conn.transaction():
        repaired = balances.check(conn, c, repair=True)
    assert repaired.repaired
    assert balances.check(conn, c).ok
