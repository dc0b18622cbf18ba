"""How a payment batch is audited (0630) and how its items are settled (0631).

* one audit row per INSERT statement on payment, naming every payment it wrote, and
  ``payment_audit`` giving who / when / from where for every payment (both audit forms);
* settling receivable items is a heap-only update: it writes no index entry.
"""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meterline.ledger.payments import PaymentIn, record_payment, record_payments
from meterline.ledger.policy import AllocationPolicy
from meterline.store.audit import set_actor
from tests.integration.ledger.ledgerkit import add_bill, make_accounts, make_run, new_company

UTC = dt.timezone.utc
AT = dt.datetime(2026, 1, 10, 2, 0, tzinfo=UTC)
DUE = dt.date(2026, 2, 1)


def _payment_audit(conn: psycopg.Connection, c: int) -> list[tuple]:
    return conn.execute(
        """SELECT action, entity_id, account_id, after FROM audit_log
            WHERE company_id = %s AND entity_type = 'payment' ORDER BY id""", [c]).fetchall()


def test_a_batch_is_one_audit_row_naming_every_payment(conn: psycopg.Connection) -> None:
    c = new_company(conn)
    accounts = make_accounts(conn, c, 5)
    set_actor(conn, "bank-file:icbc", "cli:host1")
    pays = [PaymentIn(f"b-{a}", a, 100 + k, AT, cashier="icbc") for k, a in enumerate(accounts)]
    bulk = [PaymentIn(f"x-{k}", accounts[k % 5], 10, AT, cashier="icbc") for k in range(300)]  # the staged path
    with conn.transaction():
        assert record_payments(conn, c, "bank", pays).recorded == 5
    with conn.transaction():
        assert record_payments(conn, c, "bank", bulk, bulk_from=200).recorded == 300
    rows = _payment_audit(conn, c)
    assert len(rows) == 2
    ids = [r[0] for r in conn.execute("SELECT id FROM payment WHERE company_id = %s ORDER BY id", [c]).fetchall()]
    (a1, e1, acc1, after1), (a2, e2, acc2, after2) = rows
    assert (a1, e1, acc1) == ("insert", None, None) and (a2, e2, acc2) == ("insert", None, None)
    assert after1["rows"] == 5 and after1["amount"] == sum(p.amount for p in pays)
    assert after2["rows"] == 300 and after2["amount"] == 3000
    assert after1["ids"] + after2["ids"] == ids
    # every payment: who, from where, when, and the statement's transaction
    seen = conn.execute(
        """SELECT p.id, a.actor, a.origin, a.per_statement FROM payment p
             LEFT JOIN payment_audit a ON a.payment_id = p.id WHERE p.company_id = %s ORDER BY p.id""", [c]).fetchall()
    assert [s[0] for s in seen] == ids
    assert all(s[1:] == ("bank-file:icbc", "cli:host1", True) for s in seen)


def test_one_payment_names_its_id_and_account(conn: psycopg.Connection) -> None:
    c = new_company(conn)
    (a,) = make_accounts(conn, c, 1)
    set_actor(conn, "api:bank", "api:127.0.0.1")
    with conn.transaction():
        stored = record_payment(conn, c, "bank", PaymentIn("one", a, 250, AT))
    with conn.transaction():  # a replay writes nothing, so audits nothing
        assert record_payment(conn, c, "bank", PaymentIn("one", a, 250, AT)).replay
    ((action, entity_id, account_id, after),) = _payment_audit(conn, c)
    assert (action, entity_id, account_id) == ("insert", str(stored.id), a)
    assert after == {"rows": 1, "amount": 250, "ids": [stored.id]}
    # the account's history shows the payment and its audit row, as before 0630
    got = conn.execute("SELECT actor FROM payment_audit WHERE payment_id = %s", [stored.id]).fetchall()
    assert got == [("api:bank",)]


def test_payment_audit_reads_the_per_row_form_too(conn: psycopg.Connection) -> None:
    # rows 0101 wrote before 0630: one per payment, the row image in `after`
    c = new_company(conn)
    (a,) = make_accounts(conn, c, 1)
    with conn.transaction():
        stored = record_payment(conn, c, "bank", PaymentIn("old", a, 99, AT))
    conn.execute(
        """INSERT INTO audit_log (company_id, actor, origin, action, entity_type, entity_id, account_id, after)
           SELECT company_id, 'cashier7', 'cli:old', 'insert', 'payment', id::text, account_id, to_jsonb(p)
             FROM payment p WHERE id = %s""", [stored.id])
    got = conn.execute("SELECT actor, per_statement FROM payment_audit WHERE payment_id = %s ORDER BY audit_id",
                       [stored.id]).fetchall()
    assert got[-1] == ("cashier7", False) and len(got) == 2


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(1, 5000)), min_size=1, max_size=40))
def test_every_payment_has_exactly_one_audit_row(conn: psycopg.Connection, spec: list[tuple[int, int]]) -> None:
    c = new_company(conn)
    accounts = make_accounts(conn, c, 4)
    pays = [PaymentIn(f"h-{k}", accounts[i], amt, AT) for k, (i, amt) in enumerate(spec)]
    half = len(pays) // 2
    with conn.transaction():
        record_payments(conn, c, "bank", pays[:half])
        record_payments(conn, c, "bank", pays)  # the first half again: replays
    counts = conn.execute(
        """SELECT p.id, count(a.audit_id) FROM payment p LEFT JOIN payment_audit a ON a.payment_id = p.id
            WHERE p.company_id = %s GROUP BY p.id""", [c]).fetchall()
    assert len(counts) == len(pays) and all(n == 1 for _, n in counts)


def test_settling_items_is_a_heap_only_update(conn: psycopg.Connection) -> None:
    c = new_company(conn)
    accounts = make_accounts(conn, c, 20)
    run = make_run(conn, c)
    for a in accounts:
        add_bill(conn, c, run, a, [("water", 1000, 0)], DUE)
    from meterline.ledger.bills import post_bills

    with conn.transaction():
        post_bills(conn, c, run, day=dt.date(2026, 1, 5))
    hot = "SELECT pg_stat_get_xact_tuples_updated(%(t)s::regclass), pg_stat_get_xact_tuples_hot_updated(%(t)s::regclass)"
    with conn.transaction():
        before = conn.execute(hot, {"t": "receivable_item"}).fetchone()
        pays = [PaymentIn(f"s-{a}", a, 400 if k % 2 else 1000, AT) for k, a in enumerate(accounts)]
        res = record_payments(conn, c, "bank", pays, policy=AllocationPolicy(), bulk_from=5)
        updated, hot_updated = (x - y for x, y in zip(conn.execute(hot, {"t": "receivable_item"}).fetchone(), before))
    assert res.recorded == 20 and updated == 20
    assert hot_updated == updated
    # and the open items are still found by their account: the half-paid ones
    open_ = conn.execute("SELECT count(*) FROM receivable_item WHERE company_id = %s AND status = 'open'"
                         " AND settled < amount", [c]).fetchone()[0]
    assert open_ == 10


# -- several connections at once --------------------------------------------------------------

def _book(conn: psycopg.Connection, c: int, accounts: list[int]) -> dict:
    """What a company's payments did: per payment its allocations, and every balance."""
    alloc = conn.execute(
        """SELECT p.external_id, p.account_id, p.amount, coalesce(array_agg(i.due_date || ':' || a.amount
                     ORDER BY i.due_date, a.item_id) FILTER (WHERE a.id IS NOT NULL), '{}')
             FROM payment p LEFT JOIN allocation a ON a.payment_id = p.id
             LEFT JOIN receivable_item i ON i.id = a.item_id
            WHERE p.company_id = %s GROUP BY p.id ORDER BY p.external_id""", [c]).fetchall()
    index = {a: k for k, a in enumerate(accounts)}
    renamed = [(ext, index.get(acct), amount, allocs) for ext, acct, amount, allocs in alloc]
    bal = {code.split(":")[0] + ":" + (str(index[int(code.split(":")[1])]) if code.split(":")[0] in ("AR", "PREPAID")
                                       else code.split(":", 1)[1]): b
           for code, b in conn.execute("SELECT account_code, sum(amount) FROM posting WHERE company_id = %s"
                                       " GROUP BY 1 HAVING sum(amount) <> 0", [c]).fetchall()}
    return {"payments": renamed, "balances": bal}


def _company_with_bills(conn: psycopg.Connection, n: int) -> tuple[int, list[int]]:
    from meterline.ledger.bills import post_bills

    c = new_company(conn)
    accounts = make_accounts(conn, c, n)
    for month, due in ((1, dt.date(2026, 2, 1)), (2, dt.date(2026, 3, 1))):
        run = make_run(conn, c)
        for k, a in enumerate(accounts):
            add_bill(conn, c, run, a, [("water", 300 + 100 * ((k + month) % 4), 0)], due)
        with conn.transaction():
            post_bills(conn, c, run, day=dt.date(2026, 1, 5))
    return c, accounts


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(1, 1500), st.integers(0, 30)), min_size=1, max_size=60),
       st.integers(1, 3))
def test_parallel_parts_record_what_one_call_records(conn: psycopg.Connection, db_dsn: str,
                                                     spec: list[tuple[int, int, int]], workers: int) -> None:
    from meterline.ledger.payments import record_payments_parallel

    one, one_accounts = _company_with_bills(conn, 6)
    par, par_accounts = _company_with_bills(conn, 6)
    # ext ids drawn from a small range: some repeat inside the batch (a few with another amount)
    batch = [(f"e{ext}", i, amt) for i, amt, ext in spec]
    with conn.transaction():
        expected = record_payments(conn, one, "bank", [PaymentIn(e, one_accounts[i], amt, AT) for e, i, amt in batch],
                                   chunk=7, bulk_from=3)
    got = record_payments_parallel(lambda: psycopg.connect(db_dsn), par, "bank",
                                   [PaymentIn(e, par_accounts[i], amt, AT) for e, i, amt in batch],
                                   workers=workers, chunk=7)
    for field_ in ("recorded", "replayed", "amount", "allocated", "to_prepaid", "to_suspense"):
        assert getattr(got, field_) == getattr(expected, field_), field_
    assert sorted((c.external_id, c.field) for c in got.conflicts) == \
        sorted((c.external_id, c.field) for c in expected.conflicts)
    assert _book(conn, par, par_accounts) == _book(conn, one, one_accounts)


def test_parallel_refuses_an_account_of_another_company_before_writing(conn: psycopg.Connection, db_dsn: str) -> None:
    from meterline.ledger.errors import InvalidPayment
    from meterline.ledger.payments import record_payments_parallel

    c, accounts = _company_with_bills(conn, 2)
    other = new_company(conn)
    (stranger,) = make_accounts(conn, other, 1)
    pays = [PaymentIn("ok", accounts[0], 100, AT), PaymentIn("bad", stranger, 100, AT)]
    with pytest.raises(InvalidPayment, match="not accounts of company"):
        record_payments_parallel(lambda: psycopg.connect(db_dsn), c, "bank", pays)
    assert conn.execute("SELECT count(*) FROM payment WHERE company_id = %s", [c]).fetchone()[0] == 0
