"""Corrections never delete: reversals, waivers and adjustments with a second approver,
write-off and recovery, refunds; late fees; closes."""

from __future__ import annotations

import datetime as dt
import threading

import psycopg
import pytest

from meterline.ledger import balances, close
from meterline.ledger.bills import post_bills, reverse_bill
from meterline.ledger.corrections import approve, open_items, pay_refund, reject, request_adjustment, reverse_payment
from meterline.ledger.errors import ApprovalError, NothingToDo
from meterline.ledger.journal import Posting, post_entry
from meterline.ledger.late_fees import run_late_fees
from meterline.ledger.payments import PaymentIn, record_payment
from meterline.ledger.policy import LateFeePolicy, LedgerPolicy
from tests.integration.ledger.ledgerkit import add_bill, balance, make_accounts, make_run, new_company

UTC = dt.timezone.utc
D1 = dt.date(2026, 4, 1)
AT = dt.datetime(2026, 4, 3, 2, tzinfo=UTC)


def _billed(conn: psycopg.Connection, c: int, a: int, amount: int, due: dt.date = dt.date(2026, 4, 20)) -> int:
    run = make_run(conn, c)
    bill = add_bill(conn, c, run, a, [("water", amount, 0)], due)
    with conn.transaction():
        post_bills(conn, c, run, day=D1)
    return bill


@pytest.fixture
def acct(conn: psycopg.Connection) -> tuple[int, int]:
    c = new_company(conn)
    (a,) = make_accounts(conn, c, 1)
    return c, a


def test_reversing_a_paid_bill_moves_the_money_to_credit(conn: psycopg.Connection, acct) -> None:
    c, a = acct
    b1 = _billed(conn, c, a, 1000)
    _billed(conn, c, a, 500, dt.date(2026, 5, 20))
    with conn.transaction():
        record_payment(conn, c, "bank", PaymentIn("P1", a, 600, AT))
    with conn.transaction():
        r = reverse_bill(conn, c, b1, reason="读数错误", created_by="王主管", day=D1)
    assert r.released_to_prepaid == 600
    original = conn.execute("SELECT id FROM journal_entry WHERE idempotency_key = %s AND company_id = %s",
                            [f"bill:{b1}", c]).fetchone()[0]
    assert conn.execute("SELECT reverses_id FROM journal_entry WHERE id = %s", [r.entry_id]).fetchone()[0] == original
    # the 600 paid on the wrong bill settles the other one, 100 credit is left
    assert balance(conn, c, f"AR:{a}") == 0 and balance(conn, c, f"PREPAID:{a}") == -100
    assert balance(conn, c, "REV:water") == -500
    assert conn.execute("SELECT status FROM bill WHERE id = %s", [b1]).fetchone()[0] == "reversed"
    with pytest.raises(NothingToDo, match="already reversed"):
        reverse_bill(conn, c, b1, reason="again")
    assert balances.check(conn, c).ok


def test_reversing_a_payment_reopens_what_it_settled(conn: psycopg.Connection, acct) -> None:
    c, a = acct
    _billed(conn, c, a, 300)
    with conn.transaction():
        p = record_payment(conn, c, "bank", PaymentIn("P1", a, 500, AT, cashier="icbc"))
    assert balance(conn, c, f"PREPAID:{a}") == -200
    _billed(conn, c, a, 150, dt.date(2026, 5, 20))  # uses 150 of the credit
    with conn.transaction():
        r = reverse_payment(conn, c, p.id, reason="退票 bounced", created_by="李会计", day=D1)
    assert (r.reopened, r.from_prepaid, r.owed_again) == (300, 50, 150)
    assert balance(conn, c, f"AR:{a}") == 450 and balance(conn, c, f"PREPAID:{a}") == 0
    assert balance(conn, c, "CASH:bank:icbc") == 0
    with pytest.raises(NothingToDo, match="already reversed"):
        reverse_payment(conn, c, p.id, reason="twice")
    assert balances.check(conn, c).ok


def test_the_enterer_cannot_approve_their_own_adjustment(conn: psycopg.Connection, acct) -> None:
    c, a = acct
    _billed(conn, c, a, 800)
    (item,) = open_items(conn, c, a)
    adj = request_adjustment(conn, c, kind="waiver", account_id=a, item_id=item.id, amount=300,
                             reason="困难户减免", entered_by="clerk1")
    with pytest.raises(ApprovalError, match="cannot also approve"):
        approve(conn, c, adj, decided_by="clerk1")
    # the database refuses it too, whatever the code does
    with pytest.raises(psycopg.errors.CheckViolation):
        with conn.transaction():
            conn.execute("UPDATE adjustment SET status = 'rejected', decided_by = entered_by WHERE id = %s", [adj])
    with conn.transaction():
        approve(conn, c, adj, decided_by="manager", day=D1)
    assert balance(conn, c, f"AR:{a}") == 500 and balance(conn, c, "REV:waiver") == 300
    with pytest.raises(ApprovalError, match="already approved"):
        approve(conn, c, adj, decided_by="manager2")
    adj2 = request_adjustment(conn, c, kind="charge", account_id=a, amount=100, reason="补收", entered_by="clerk1")
    with conn.transaction():
        reject(conn, c, adj2, decided_by="manager", note="no evidence")
    assert balance(conn, c, f"AR:{a}") == 500
    assert balances.check(conn, c).ok


def test_write_off_and_recovery(conn: psycopg.Connection, acct) -> None:
    c, a = acct
    _billed(conn, c, a, 700)
    wo = request_adjustment(conn, c, kind="write_off", account_id=a, amount=700, reason="用户失联三年", entered_by="clerk")
    with conn.transaction():
        approve(conn, c, wo, decided_by="finance", day=D1)
    assert balance(conn, c, f"AR:{a}") == 0 and balance(conn, c, "EXP:bad_debt") == 700
    assert open_items(conn, c, a) == []
    rec = request_adjustment(conn, c, kind="recovery", account_id=a, amount=400, reason="用户回来缴费", entered_by="clerk")
    with conn.transaction():
        approve(conn, c, rec, decided_by="finance", day=D1)
        record_payment(conn, c, "counter", PaymentIn("C1", a, 400, AT, cashier="c1", tender="cash"))
    assert balance(conn, c, f"AR:{a}") == 0 and balance(conn, c, "INC:bad_debt_recovery") == -400
    assert balances.check(conn, c).ok


def test_refund_of_credit_is_approved_then_paid_out(conn: psycopg.Connection, acct) -> None:
    c, a = acct
    with conn.transaction():
        record_payment(conn, c, "bank", PaymentIn("P1", a, 900, AT))
    too_much = request_adjustment(conn, c, kind="refund", account_id=a, amount=901, reason="销户退款", entered_by="clerk")
    with pytest.raises(NothingToDo, match="prepaid credit"):
        approve(conn, c, too_much, decided_by="finance")
    adj = request_adjustment(conn, c, kind="refund", account_id=a, amount=900, reason="销户退款", entered_by="clerk")
    with conn.transaction():
        approve(conn, c, adj, decided_by="finance", day=D1)
    assert balance(conn, c, "REFUND:payable") == -900 and balance(conn, c, f"PREPAID:{a}") == 0
    with conn.transaction():
        pay_refund(conn, c, adj, channel="counter", cashier="c1", paid_by="c1", day=D1)
    assert balance(conn, c, "REFUND:payable") == 0 and balance(conn, c, "CASH:counter:c1") == -900
    with pytest.raises(NothingToDo, match="paid out already"):
        pay_refund(conn, c, adj, channel="counter", cashier="c1")


def test_late_fees_accrue_daily_with_grace_and_cap(conn: psycopg.Connection, acct) -> None:
    c, a = acct
    policy = LedgerPolicy(late_fee=LateFeePolicy(daily_rate="0.003", grace_days=5, cap="0.05"))
    _billed(conn, c, a, 10_000, due=dt.date(2026, 4, 10))
    with conn.transaction():
        assert run_late_fees(conn, c, dt.date(2026, 4, 15), policy=policy).amount == 0  # still in grace
        r = run_late_fees(conn, c, dt.date(2026, 4, 17), policy=policy)  # days 16, 17: 2 x 30
    assert (r.bills, r.amount) == (1, 60)
    with conn.transaction():
        again = run_late_fees(conn, c, dt.date(2026, 4, 17), policy=policy)
        earlier = run_late_fees(conn, c, dt.date(2026, 4, 16), policy=policy)
    assert not again.created and earlier.amount == 0
    with conn.transaction():
        assert run_late_fees(conn, c, dt.date(2026, 4, 18), policy=policy).amount == 30
        assert run_late_fees(conn, c, dt.date(2026, 5, 30), policy=policy).amount == 410  # capped: 5% of 10000 = 500
        assert run_late_fees(conn, c, dt.date(2026, 5, 31), policy=policy).amount == 0
    assert balance(conn, c, "INC:late_fee") == -500 and balance(conn, c, f"AR:{a}") == 10_500
    assert balances.check(conn, c).ok


def test_small_accruals_wait_instead_of_rounding_to_zero(conn: psycopg.Connection, acct) -> None:
    c, a = acct
    policy = LedgerPolicy(late_fee=LateFeePolicy(daily_rate="0.003", cap=""))
    _billed(conn, c, a, 100, due=dt.date(2026, 4, 10))  # 0.3 fen a day
    fees = []
    with conn.transaction():
        for d in range(11, 21):
            fees.append(run_late_fees(conn, c, dt.date(2026, 4, d), policy=policy).amount)
    # the running total 0.3, 0.6, ..., 3.0 fen is rounded, not each day: 3 fen over 10 days
    assert fees == [0, 1, 0, 0, 1, 0, 0, 0, 1, 0]
    assert balance(conn, c, "INC:late_fee") == -3


def test_a_closed_day_takes_no_entry_and_corrections_go_to_the_next_day(conn: psycopg.Connection, acct) -> None:
    c, a = acct
    day = dt.date(2026, 4, 3)
    with conn.transaction():
        record_payment(conn, c, "counter", PaymentIn("C1", a, 100, AT, cashier="c1", tender="cash"))
        record_payment(conn, c, "counter", PaymentIn("C2", a, 50, AT, cashier="c2", tender="card"))
        result = close.close_day(conn, c, day, channel="counter", cashier="c1", closed_by="c1")
    assert result.summary["payments_total"] == 100 and result.summary["net_cash"] == 100
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="closed"):
        with conn.transaction():  # the database refuses a direct insert into the closed day
            conn.execute("""INSERT INTO journal_entry (company_id, booked_on, kind, channel, cashier)
                            VALUES (%s, %s, 'payment', 'counter', 'c1')""", [c, day])
    with conn.transaction():  # the posting functions book into the next open day
        p = record_payment(conn, c, "counter", PaymentIn("C3", a, 70, AT, cashier="c1", tender="cash"))
        other = record_payment(conn, c, "counter", PaymentIn("C4", a, 70, AT, cashier="c2", tender="cash"))
    assert p.booked_on == day + dt.timedelta(days=1)
    assert other.booked_on == day  # another cashier's day is still open
    with conn.transaction():
        close.close_day(conn, c, day, closed_by="finance")  # the whole company
    with conn.transaction():
        e = post_entry(conn, c, day=day, kind="test", postings=[Posting("CASH:bank", 1), Posting("REV:water", -1)])
    assert e.booked_on == day + dt.timedelta(days=1)
    with conn.transaction():
        again = close.close_day(conn, c, day, channel="counter", cashier="c1")
    assert not again.created
    assert balances.check(conn, c).ok


def test_month_close_keeps_a_balanced_trial_balance(conn: psycopg.Connection, acct) -> None:
    c, a = acct
    _billed(conn, c, a, 1234)
    with conn.transaction():
        record_payment(conn, c, "bank", PaymentIn("P1", a, 1000, AT))
        m = close.close_month(conn, c, "2026-04", closed_by="finance")
    assert m.summary["debit"] == m.summary["credit"] == 2234
    rows = conn.execute("SELECT account_code, balance FROM trial_balance WHERE close_id = %s ORDER BY 1", [m.id]).fetchall()
    assert dict(rows) == {"AR:*": 234, "CASH:bank": 1000, "REV:water": -1234}
    with conn.transaction():
        late = record_payment(conn, c, "bank", PaymentIn("P2", a, 5, AT))
    assert late.booked_on == dt.date(2026, 5, 1)


def test_close_waits_for_an_entry_in_flight(db_dsn: str, conn: psycopg.Connection, acct) -> None:
    """An entry being written when the day is closed either lands before the close or is refused."""
    c, a = acct
    day = dt.date(2026, 4, 3)
    writer = psycopg.connect(db_dsn)
    writer.execute("SELECT 1")
    post_entry(writer, c, day=day, kind="test", postings=[Posting("CASH:bank", 9), Posting("REV:water", -9)])
    done = threading.Event()
    closed: list[close.CloseResult] = []

    def closer() -> None:
        with psycopg.connect(db_dsn) as cc:
            closed.append(close.close_day(cc, c, day))
            cc.commit()
        done.set()

    t = threading.Thread(target=closer)
    t.start()
    assert not done.wait(0.5)  # the close waits for the writer's transaction
    writer.commit()
    t.join(10)
    writer.close()
    assert closed and closed[0].summary["entries"]["test"]["entries"] == 1
    assert balances.check(conn, c).ok


def test_prepaid_meter_top_up_and_consumption(conn: psycopg.Connection, acct) -> None:
    from meterline.ledger.prepaid import consume, top_up

    c, a = acct
    with conn.transaction():
        p = top_up(conn, c, channel="token", external_id="V-1", account_id=a, amount=5000, received_at=AT,
                   token="1234 5678 9012 3456 7890", meter_serial="G1", vendor="vend01")
    assert p.allocated == 0 and balance(conn, c, f"PREPAID:{a}") == -5000
    assert balance(conn, c, "CASH:token:vend01") == 5000
    with conn.transaction():
        used = consume(conn, c, account_id=a, key="G1:2026-04", amount=3200, day=D1)
        again = consume(conn, c, account_id=a, key="G1:2026-04", amount=3200, day=D1)
    assert (used.drawn, used.receivable, again.created) == (3200, 0, False)
    with conn.transaction():
        over = consume(conn, c, account_id=a, key="G1:2026-05", amount=2500, day=D1)
    assert (over.drawn, over.receivable) == (1800, 700)  # the credit ran out: the rest is owed
    assert balance(conn, c, f"PREPAID:{a}") == 0 and balance(conn, c, f"AR:{a}") == 700
    assert balance(conn, c, "REV:water") == -5700
    with conn.transaction():  # the next top-up settles the arrears first
        top_up(conn, c, channel="ic_card", external_id="V-2", account_id=a, amount=1000, received_at=AT, card_no="IC9")
    assert balance(conn, c, f"AR:{a}") == 0 and balance(conn, c, f"PREPAID:{a}") == -300
    assert balances.check(conn, c).ok
