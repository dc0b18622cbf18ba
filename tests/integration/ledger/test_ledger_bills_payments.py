"""Bills posted by the billing run's contract; payments allocated oldest first, idempotently."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meterline.ledger import balances
from meterline.ledger.allocation import OpenItem, allocate
from meterline.ledger.bills import post_bills, post_bills_detail
from meterline.ledger.corrections import match_suspense, open_items
from meterline.ledger.errors import InvalidPayment, LedgerError, PaymentConflict
from meterline.ledger.payments import PaymentIn, record_payment, record_payments
from meterline.ledger.policy import AllocationPolicy
from tests.integration.ledger.ledgerkit import add_bill, balance, make_accounts, make_run, new_company

UTC = dt.timezone.utc
JAN = dt.date(2026, 1, 5)
AT = dt.datetime(2026, 1, 10, 2, 0, tzinfo=UTC)


def _bills(conn: psycopg.Connection, c: int, accounts: list[int], amounts: list[int], due: dt.date) -> tuple[int, list[int]]:
    run = make_run(conn, c)
    ids = [add_bill(conn, c, run, a, [("water", amt, 0)], due) for a, amt in zip(accounts, amounts)]
    return run, ids


def test_post_bills_contract(conn: psycopg.Connection) -> None:
    c = new_company(conn)
    a1, a2, a3 = make_accounts(conn, c, 3)
    run = make_run(conn, c)
    add_bill(conn, c, run, a1, [("water", 2000, 180), ("sewage", 950, 0), ("Resource Fee", 100, 9)], dt.date(2026, 2, 1))
    add_bill(conn, c, run, a2, [("water", 1000, 90), ("water", 500, 45)], dt.date(2026, 2, 1))
    add_bill(conn, c, run, a3, [("water", 0, 0)], dt.date(2026, 2, 1))  # a zero bill posts an empty entry
    with conn.transaction():
        n = post_bills(conn, c, run, day=JAN)
    assert n == 3
    assert balance(conn, c, f"AR:{a1}") == 3239 and balance(conn, c, f"AR:{a2}") == 1635
    assert balance(conn, c, "REV:water") == -3500
    assert balance(conn, c, "REV:sewage") == -950
    assert balance(conn, c, "REV:resource_fee") == -100
    assert balance(conn, c, "TAX:vat") == -324
    entries = conn.execute("SELECT kind, ref_type, booked_on FROM journal_entry WHERE company_id = %s", [c]).fetchall()
    assert len(entries) == 3 and all(e == ("bill", "bill", JAN) for e in entries)
    with conn.transaction():  # idempotent
        assert post_bills(conn, c, run, day=JAN) == 0
    assert balances.check(conn, c).ok


def test_a_run_posted_in_part_posts_only_its_new_bills(conn: psycopg.Connection) -> None:
    # the first posting takes the path for a run none of whose bills is posted; the second must
    # find the posted ones bill by bill (a posted bill of another run lies inside its id range)
    c = new_company(conn)
    a1, a2, a3 = make_accounts(conn, c, 3)
    run = make_run(conn, c)
    add_bill(conn, c, run, a1, [("water", 1000, 0)], dt.date(2026, 2, 1))
    other = make_run(conn, c)
    add_bill(conn, c, other, a3, [("water", 700, 0)], dt.date(2026, 2, 1))
    with conn.transaction():
        assert post_bills(conn, c, run, day=JAN) == 1
        assert post_bills(conn, c, run, day=JAN) == 0  # again in the same transaction
    add_bill(conn, c, run, a2, [("water", 300, 0), ("sewage", 200, 0)], dt.date(2026, 2, 1))
    with conn.transaction():
        assert post_bills(conn, c, other, day=JAN) == 1
        assert post_bills(conn, c, run, day=JAN) == 1
    assert balance(conn, c, f"AR:{a1}") == 1000 and balance(conn, c, f"AR:{a2}") == 500
    assert balance(conn, c, f"AR:{a3}") == 700 and balance(conn, c, "REV:water") == -2000
    assert conn.execute("SELECT count(*) FROM receivable_item WHERE company_id = %s", [c]).fetchone()[0] == 3
    assert balances.check(conn, c).ok


def test_bills_whose_lines_do_not_add_up_are_refused_all_named(conn: psycopg.Connection) -> None:
    c = new_company(conn)
    a1, a2 = make_accounts(conn, c, 2)
    run = make_run(conn, c)
    b1 = add_bill(conn, c, run, a1, [("water", 100, 0)], JAN)
    b2 = add_bill(conn, c, run, a2, [("water", 100, 0)], JAN)
    conn.execute("UPDATE bill SET amount = amount + 1, total = total + 1 WHERE id IN (%s, %s)", [b1, b2])
    with pytest.raises(LedgerError, match=rf"bill {b1} .* bill {b2}"):
        post_bills(conn, c, run, day=JAN)
    assert conn.execute("SELECT count(*) FROM journal_entry WHERE company_id = %s", [c]).fetchone()[0] == 0


def test_a_credit_bill_goes_to_prepaid(conn: psycopg.Connection) -> None:
    c = new_company(conn)
    (a,) = make_accounts(conn, c, 1)
    run = make_run(conn, c)
    add_bill(conn, c, run, a, [("water", -300, 0)], JAN)
    with conn.transaction():
        post_bills(conn, c, run, day=JAN)
    assert balance(conn, c, f"PREPAID:{a}") == -300 and balance(conn, c, "REV:water") == 300
    assert open_items(conn, c, a) == []


def test_prepaid_credit_is_used_when_a_bill_is_posted(conn: psycopg.Connection) -> None:
    c = new_company(conn)
    a, b = make_accounts(conn, c, 2)
    with conn.transaction():
        record_payment(conn, c, "bank", PaymentIn("P1", a, 1000, AT))  # nothing open: all credit
    assert balance(conn, c, f"PREPAID:{a}") == -1000
    run, _ = _bills(conn, c, [a, b], [700, 400], dt.date(2026, 2, 1))
    with conn.transaction():
        result = post_bills_detail(conn, c, run, day=JAN)
    assert result.prepaid_applied == 700
    assert balance(conn, c, f"PREPAID:{a}") == -300 and balance(conn, c, f"AR:{a}") == 0
    assert balance(conn, c, f"AR:{b}") == 400
    run2, _ = _bills(conn, c, [a], [500], dt.date(2026, 3, 1))
    with conn.transaction():
        post_bills(conn, c, run2, day=JAN)
    assert balance(conn, c, f"PREPAID:{a}") == 0 and balance(conn, c, f"AR:{a}") == 200
    assert balances.check(conn, c).ok


def test_payment_settles_oldest_first_partially_and_keeps_the_rest_as_credit(conn: psycopg.Connection) -> None:
    c = new_company(conn)
    (a,) = make_accounts(conn, c, 1)
    for due, amt in ((dt.date(2026, 3, 1), 300), (dt.date(2026, 1, 1), 100), (dt.date(2026, 2, 1), 200)):
        run, _ = _bills(conn, c, [a], [amt], due)
        with conn.transaction():
            post_bills(conn, c, run, day=JAN)
    with conn.transaction():
        p = record_payment(conn, c, "bank", PaymentIn("P1", a, 250, AT))
    assert p.allocated == 250
    items = {i.due_date.month: i.open for i in open_items(conn, c, a)}
    assert items == {2: 50, 3: 300}  # January paid, February half
    with conn.transaction():
        p2 = record_payment(conn, c, "bank", PaymentIn("P2", a, 400, AT))
    assert p2.allocated == 350
    assert balance(conn, c, f"PREPAID:{a}") == -50 and balance(conn, c, f"AR:{a}") == 0
    assert balances.check(conn, c).ok


def test_replay_changes_nothing_and_a_different_replay_conflicts(conn: psycopg.Connection) -> None:
    c = new_company(conn)
    a, b = make_accounts(conn, c, 2)
    with conn.transaction():
        first = record_payment(conn, c, "wechat", PaymentIn("W1", a, 500, AT))
    snapshot = conn.execute("SELECT count(*), sum(amount) FROM posting WHERE company_id = %s", [c]).fetchone()
    with conn.transaction():
        again = record_payment(conn, c, "wechat", PaymentIn("W1", a, 500, AT))
    assert again.replay and again.id == first.id
    with pytest.raises(PaymentConflict, match="amount"):
        record_payment(conn, c, "wechat", PaymentIn("W1", a, 501, AT))
    with pytest.raises(PaymentConflict, match="account_id"):
        record_payment(conn, c, "wechat", PaymentIn("W1", b, 500, AT))
    # the same id on another channel is another payment
    with conn.transaction():
        other = record_payment(conn, c, "alipay", PaymentIn("W1", a, 500, AT))
    assert other.id != first.id and not other.replay
    assert conn.execute("SELECT count(*) FROM payment WHERE company_id = %s", [c]).fetchone()[0] == 2
    assert snapshot[0] + 2 == conn.execute("SELECT count(*) FROM posting WHERE company_id = %s", [c]).fetchone()[0]


@pytest.mark.parametrize("staged", [False, True])
def test_batch_with_repeats_replays_and_conflicts(conn: psycopg.Connection, staged: bool) -> None:
    c = new_company(conn)
    a, b = make_accounts(conn, c, 2)
    with conn.transaction():
        record_payments(conn, c, "bank", [PaymentIn("X1", a, 100, AT)])
    batch = [PaymentIn("X1", a, 100, AT), PaymentIn("X2", b, 200, AT), PaymentIn("X2", b, 200, AT),
             PaymentIn("X3", None, 300, AT), PaymentIn("X1", a, 999, AT)]
    with conn.transaction():
        result = record_payments(conn, c, "bank", batch, bulk_from=0 if staged else 200)
    assert result.recorded == 2 and result.replayed == 3
    assert [(x.external_id, x.field) for x in result.conflicts] == [("X1", "amount")]
    assert result.to_suspense == 300 and balance(conn, c, "SUSPENSE:bank") == -300
    with pytest.raises(InvalidPayment, match="positive"):
        record_payments(conn, c, "bank", [PaymentIn("X9", a, 0, AT)])
    other = new_company(conn)
    (foreign,) = make_accounts(conn, other, 1)
    with pytest.raises(InvalidPayment, match="not accounts of company"):
        record_payments(conn, c, "bank", [PaymentIn("X9", foreign, 5, AT)])
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="another company"):  # the database says so too
        with conn.transaction():
            record_payments(conn, c, "bank", [PaymentIn("X9", foreign, 5, AT)], accounts_checked=True)


def test_suspense_money_is_matched_later(conn: psycopg.Connection) -> None:
    c = new_company(conn)
    (a,) = make_accounts(conn, c, 1)
    run, _ = _bills(conn, c, [a], [400], dt.date(2026, 2, 1))
    with conn.transaction():
        post_bills(conn, c, run, day=JAN)
        p = record_payment(conn, c, "bank", PaymentIn("U1", None, 1000, AT))
    assert balance(conn, c, "SUSPENSE:bank") == -1000
    with conn.transaction():
        match_suspense(conn, c, p.id, a, matched_by="张会计")
    assert balance(conn, c, "SUSPENSE:bank") == 0
    assert balance(conn, c, f"AR:{a}") == 0 and balance(conn, c, f"PREPAID:{a}") == -600
    assert balances.check(conn, c).ok


@pytest.mark.parametrize("late_fee", ["before_principal", "after_principal"])
def test_late_fee_order_within_a_bill_follows_policy(conn: psycopg.Connection, late_fee: str) -> None:
    from meterline.ledger.late_fees import run_late_fees
    from meterline.ledger.policy import LateFeePolicy, LedgerPolicy

    c = new_company(conn)
    (a,) = make_accounts(conn, c, 1)
    run, (bill,) = _bills(conn, c, [a], [1000], dt.date(2026, 1, 10))
    policy = LedgerPolicy(AllocationPolicy(late_fee), LateFeePolicy(daily_rate="0.01"))
    with conn.transaction():
        post_bills(conn, c, run, day=JAN)
        run_late_fees(conn, c, dt.date(2026, 1, 15), policy=policy)  # 5 days x 1% x 1000 = 50
    with conn.transaction():
        record_payment(conn, c, "bank", PaymentIn("L1", a, 30, AT), policy=policy.allocation)
    left = {i.kind: i.open for i in open_items(conn, c, a)}
    assert left == ({"late_fee": 20, "bill": 1000} if late_fee == "before_principal" else {"late_fee": 50, "bill": 970})


ITEMS = st.lists(st.tuples(st.integers(0, 3), st.integers(1, 5000), st.booleans()), min_size=1, max_size=6)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=ITEMS, pays=st.lists(st.integers(1, 8000), min_size=1, max_size=4), lf_first=st.booleans(),
       staged=st.booleans())
def test_set_based_allocation_equals_the_plain_one(conn: psycopg.Connection, items, pays, lf_first, staged) -> None:
    """The SQL interval allocation of a batch (one statement, or staged through temporary tables as
    big batches are) equals paying one by one with allocation.allocate()."""
    from meterline.ledger.late_fees import run_late_fees
    from meterline.ledger.policy import LateFeePolicy, LedgerPolicy

    policy = AllocationPolicy("before_principal" if lf_first else "after_principal")
    c = new_company(conn)
    (a,) = make_accounts(conn, c, 1)
    with conn.transaction():
        for month, amount, late in items:
            run, _ = _bills(conn, c, [a], [amount], dt.date(2026, 1 + month, 1))
            post_bills(conn, c, run, day=JAN)
        if any(late for *_, late in items):
            run_late_fees(conn, c, dt.date(2026, 6, 1), policy=LedgerPolicy(policy, LateFeePolicy(daily_rate="0.001")))
    expected: dict[int, int] = {i.id: i.open for i in open_items(conn, c, a)}
    plain = [OpenItem(i.id, i.kind, i.bill_id, i.due_date, i.open) for i in open_items(conn, c, a)]
    for amount in pays:
        allocs, _ = allocate(amount, [OpenItem(i.id, i.kind, i.bill_id, i.due_date, expected[i.id]) for i in plain
                                      if expected[i.id] > 0], policy)
        for item_id, x in allocs:
            expected[item_id] -= x
    with conn.transaction():
        record_payments(conn, c, "bank", [PaymentIn(f"H{n}", a, amt, AT) for n, amt in enumerate(pays)], policy=policy,
                        bulk_from=0 if staged else 200)
    got = {r[0]: r[1] for r in conn.execute("SELECT id, amount - settled FROM receivable_item WHERE account_id = %s", [a])}
    assert got == expected
    assert balances.check(conn, c).ok
