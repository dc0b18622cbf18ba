"""A hypothesis state machine over the ledger against a plain in-memory model.

Random sequences of bills, payments (two channels, sometimes to no known account), replays,
payment and bill reversals, waivers (with the four-eyes rule), refunds and their payout, late-fee
runs and daily closes, on a real database (each run in a company of its own). After every step:

* every entry balances;
* the balance of every account code — summed from the postings, and as maintained — equals the
  model's, and every open item's amount equals the model's;
* nothing was posted into a closed day;
* ``ledger.balances.check`` finds nothing;

and replaying any payment changes nothing at all.
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test

from meterline.ledger import balances, close
from meterline.ledger.bills import post_bills, reverse_bill
from meterline.ledger.corrections import approve, pay_refund, request_adjustment, reverse_payment
from meterline.ledger.errors import ApprovalError
from meterline.ledger.late_fees import run_late_fees
from meterline.ledger.payments import PaymentIn, record_payment
from meterline.ledger.policy import AllocationPolicy, LateFeePolicy, LedgerPolicy
from tests.integration.ledger.ledgerkit import add_bill, make_accounts, make_run, new_company

TZ = ZoneInfo("Asia/Shanghai")
LATE = LateFeePolicy(daily_rate="0.01", grace_days=2, cap="0.2")
MONEY = ("payment", "prepaid", "payment_reversal")


@dataclass
class MItem:
    seq: int
    account: int
    kind: str  # bill, late_fee, charge
    bill: int | None
    due: dt.date
    amount: int
    settled: int = 0
    status: str = "open"
    through: dt.date | None = None
    accrual: int = 0
    by_source: dict[str, int] = field(default_factory=dict)

    @property
    def open(self) -> int:
        return self.amount - self.settled


@dataclass
class MBill:
    id: int
    account: int
    water: int
    sewage: int
    tax: int
    reversed: bool = False


@dataclass
class MPayment:
    id: int
    channel: str
    ext: str
    account: int | None
    amount: int
    at: dt.datetime
    cash: str
    cashier: str | None
    rest: int = 0
    allocs: dict[int, int] = field(default_factory=dict)  # item seq -> net amount
    reversed: bool = False


class LedgerMachine(RuleBasedStateMachine):
    conn: psycopg.Connection  # set by the test

    def __init__(self) -> None:
        super().__init__()
        self.c = new_company(self.conn)
        self.accounts = make_accounts(self.conn, self.c, 3)
        self.today = dt.date(2026, 3, 1)
        self.bal: dict[str, int] = {}
        self.items: list[MItem] = []
        self.bills: dict[int, MBill] = {}
        self.payments: list[MPayment] = []
        self.late_runs: set[dt.date] = set()
        self.closed: list[tuple[int, int]] = []  # (close id, entries in its scope when closed)
        self.seq = itertools.count()
        self.ext = itertools.count(1)
        self.refunds: list[tuple[int, int]] = []
        self.policy = LedgerPolicy(AllocationPolicy(), LATE)

    @initialize(lf_first=st.booleans())
    def choose_policy(self, lf_first: bool) -> None:
        self.policy = LedgerPolicy(AllocationPolicy("before_principal" if lf_first else "after_principal"), LATE)

    # -- the model -------------------------------------------------------------------------
    def post(self, code: str, amount: int) -> None:
        self.bal[code] = self.bal.get(code, 0) + amount
        if self.bal[code] == 0:
            del self.bal[code]

    def key(self, it: MItem) -> tuple:
        late = it.kind == "late_fee"
        rank = (0 if late else 1) if self.policy.allocation.late_fee_first else (1 if late else 0)
        return (it.due, it.bill is None, it.bill or 0, rank, it.seq)

    def open_items(self, account: int) -> list[MItem]:
        return sorted((i for i in self.items if i.account == account and i.status == "open" and i.open > 0), key=self.key)

    def settle(self, account: int, amount: int, source: str) -> dict[int, int]:
        out: dict[int, int] = {}
        for it in self.open_items(account):
            if amount <= 0:
                break
            take = min(amount, it.open)
            it.settled += take
            it.by_source[source] = it.by_source.get(source, 0) + take
            out[it.seq] = take
            amount -= take
        return out

    def credit(self, account: int) -> int:
        return -self.bal.get(f"PREPAID:{account}", 0)

    def apply_prepaid(self, account: int) -> None:
        credit = self.credit(account)
        if credit > 0:
            used = sum(self.settle(account, credit, "prepaid").values())
            self.post(f"PREPAID:{account}", used)
            self.post(f"AR:{account}", -used)

    def noon(self) -> dt.datetime:
        return dt.datetime.combine(self.today, dt.time(12), tzinfo=TZ)

    # -- rules -----------------------------------------------------------------------------
    @rule(who=st.integers(0, 2), water=st.integers(0, 5000), sewage=st.integers(0, 2000), tax=st.integers(0, 300),
          due=st.integers(-40, 20))
    def bill(self, who: int, water: int, sewage: int, tax: int, due: int) -> None:
        acct = self.accounts[who]
        if water + sewage + tax == 0:
            water = 1
        with self.conn.transaction():
            run = make_run(self.conn, self.c)
            lines = [("water", water, tax)] + ([("sewage", sewage, 0)] if sewage else [])
            bill_id = add_bill(self.conn, self.c, run, acct, lines, self.today + dt.timedelta(days=due))
            assert post_bills(self.conn, self.c, run, day=self.today, policy=self.policy.allocation) == 1
        total = water + sewage + tax
        self.bills[bill_id] = MBill(bill_id, acct, water, sewage, tax)
        self.post(f"AR:{acct}", total)
        self.post("REV:water", -water)
        self.post("REV:sewage", -sewage)
        self.post("TAX:vat", -tax)
        self.items.append(MItem(next(self.seq), acct, "bill", bill_id, self.today + dt.timedelta(days=due), total))
        self.apply_prepaid(acct)

    @rule(who=st.integers(-1, 2), amount=st.integers(1, 8000), counter=st.booleans())
    def pay(self, who: int, amount: int, counter: bool) -> None:
        acct = self.accounts[who] if who >= 0 else None
        channel, cashier = ("counter", "c1") if counter else ("bank", None)
        p = MPayment(0, channel, f"E{next(self.ext)}", acct, amount, self.noon(),
                     "CASH:counter:c1" if counter else "CASH:bank", cashier)
        with self.conn.transaction():
            rec = record_payment(self.conn, self.c, channel, PaymentIn(p.ext, acct, amount, p.at, cashier=cashier,
                                                                        tender="cash"), policy=self.policy.allocation)
        p.id = rec.id
        self.post(p.cash, amount)
        if acct is None:
            self.post(f"SUSPENSE:{channel}", -amount)
        else:
            p.allocs = self.settle(acct, amount, "payment")
            allocated = sum(p.allocs.values())
            p.rest = amount - allocated
            self.post(f"AR:{acct}", -allocated)
            self.post(f"PREPAID:{acct}", -p.rest)
        assert rec.allocated == amount - p.rest if acct else rec.allocated == 0
        self.payments.append(p)

    @precondition(lambda self: self.payments)
    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        p = data.draw(st.sampled_from(self.payments))
        before = self.snapshot()
        with self.conn.transaction():
            rec = record_payment(self.conn, self.c, p.channel, PaymentIn(p.ext, p.account, p.amount, p.at,
                                                                          cashier=p.cashier, tender="cash"))
        assert rec.replay and rec.id == p.id
        assert self.snapshot() == before

    @precondition(lambda self: any(not p.reversed for p in self.payments))
    @rule(data=st.data())
    def reverse_a_payment(self, data: st.DataObject) -> None:
        p = data.draw(st.sampled_from([p for p in self.payments if not p.reversed]))
        with self.conn.transaction():
            r = reverse_payment(self.conn, self.c, p.id, reason="test", created_by="x", day=self.today)
        p.reversed = True
        self.post(p.cash, -p.amount)
        if p.account is None:
            self.post(f"SUSPENSE:{p.channel}", p.amount)
            return
        by_seq = {i.seq: i for i in self.items}
        reopened = 0
        for seq, net in sorted(p.allocs.items()):
            it = by_seq[seq]
            amt = min(net, it.settled)
            if it.status == "open" and amt > 0:
                it.settled -= amt
                it.by_source["payment_reversal"] = it.by_source.get("payment_reversal", 0) - amt
                p.allocs[seq] -= amt
                reopened += amt
        rest = p.amount - reopened
        from_prepaid = min(rest, self.credit(p.account))
        owed = rest - from_prepaid
        self.post(f"AR:{p.account}", reopened + owed)
        self.post(f"PREPAID:{p.account}", from_prepaid)
        if owed:
            self.items.append(MItem(next(self.seq), p.account, "charge", None, r.booked_on, owed))
        assert (r.reopened, r.from_prepaid, r.owed_again) == (reopened, from_prepaid, owed)

    @precondition(lambda self: any(not b.reversed for b in self.bills.values()))
    @rule(data=st.data())
    def reverse_a_bill(self, data: st.DataObject) -> None:
        b = data.draw(st.sampled_from([b for b in self.bills.values() if not b.reversed]))
        with self.conn.transaction():
            r = reverse_bill(self.conn, self.c, b.id, reason="test", created_by="x", day=self.today,
                             policy=self.policy.allocation)
        b.reversed = True
        a = b.account
        self.post(f"AR:{a}", -(b.water + b.sewage + b.tax))
        self.post("REV:water", b.water)
        self.post("REV:sewage", b.sewage)
        self.post("TAX:vat", b.tax)
        money = 0
        for it in self.items:
            if it.bill != b.id:
                continue
            waived = it.by_source.get("waiver", 0)
            if it.kind == "late_fee":
                self.post("INC:late_fee", it.amount - waived)
                self.post(f"AR:{a}", -it.amount + waived)
            elif waived:
                self.post(f"AR:{a}", waived)
                self.post("REV:waiver", -waived)
            money += sum(it.by_source.get(s, 0) for s in MONEY)
            it.settled = it.amount
            it.status = "reversed"
        self.post(f"AR:{a}", money)
        self.post(f"PREPAID:{a}", -money)
        assert r.released_to_prepaid == money
        if money:
            self.apply_prepaid(a)

    @precondition(lambda self: any(i.status == "open" and i.open > 0 for i in self.items))
    @rule(data=st.data(), share=st.integers(1, 100), self_approve=st.booleans())
    def waive(self, data: st.DataObject, share: int, self_approve: bool) -> None:
        it = data.draw(st.sampled_from([i for i in self.items if i.status == "open" and i.open > 0]))
        amount = max(1, it.open * share // 100)
        db_item = self.item_id(it)
        with self.conn.transaction():
            adj = request_adjustment(self.conn, self.c, kind="waiver", account_id=it.account, item_id=db_item,
                                     amount=amount, reason="困难减免", entered_by="clerk")
        if self_approve:
            with pytest.raises(ApprovalError):
                approve(self.conn, self.c, adj, decided_by="clerk", day=self.today)
        with self.conn.transaction():
            approve(self.conn, self.c, adj, decided_by="boss", day=self.today, policy=self.policy.allocation)
        it.settled += amount
        it.by_source["waiver"] = it.by_source.get("waiver", 0) + amount
        self.post("INC:late_fee" if it.kind == "late_fee" else "REV:waiver", amount)
        self.post(f"AR:{it.account}", -amount)

    @precondition(lambda self: any(-self.bal.get(f"PREPAID:{a}", 0) > 0 for a in self.accounts))
    @rule(data=st.data(), share=st.integers(1, 100), pay_out=st.booleans())
    def refund(self, data: st.DataObject, share: int, pay_out: bool) -> None:
        a = data.draw(st.sampled_from([a for a in self.accounts if self.credit(a) > 0]))
        amount = max(1, self.credit(a) * share // 100)
        with self.conn.transaction():
            adj = request_adjustment(self.conn, self.c, kind="refund", account_id=a, amount=amount, reason="退款",
                                     entered_by="clerk")
            approve(self.conn, self.c, adj, decided_by="boss", day=self.today)
            if pay_out:
                pay_refund(self.conn, self.c, adj, channel="counter", cashier="c1", paid_by="c1", day=self.today)
        self.post(f"PREPAID:{a}", amount)
        if pay_out:
            self.post("CASH:counter:c1", -amount)
        else:
            self.post("REFUND:payable", -amount)

    @rule(days=st.integers(1, 12))
    def next_days(self, days: int) -> None:
        self.today += dt.timedelta(days=days)

    @rule()
    def late_fees(self) -> None:
        with self.conn.transaction():
            r = run_late_fees(self.conn, self.c, self.today, policy=self.policy)
        if self.today in self.late_runs:
            assert not r.created
            return
        self.late_runs.add(self.today)
        charged_accounts = set()
        total = 0
        for it in [i for i in self.items if i.kind == "bill" and i.status == "open" and i.open > 0]:
            start = it.due + dt.timedelta(days=LATE.grace_days)
            if not start < self.today:
                continue
            fees = [f for f in self.items if f.kind == "late_fee" and f.bill == it.bill]
            through = max((f.through for f in fees), default=start)
            if through >= self.today:
                continue
            accrual = LATE.accrual(it.open, (self.today - through).days)
            owed = LATE.owed(sum(f.accrual for f in fees) + accrual)
            fee = min(owed, LATE.cap_amount(it.amount)) - sum(f.amount for f in fees)
            if fee >= LATE.min_charge:
                self.items.append(MItem(next(self.seq), it.account, "late_fee", it.bill, it.due, fee,
                                        through=self.today, accrual=accrual))
                self.post(f"AR:{it.account}", fee)
                self.post("INC:late_fee", -fee)
                charged_accounts.add(it.account)
                total += fee
        assert (r.amount, r.created) == (total, True)
        for a in sorted(charged_accounts):
            self.apply_prepaid(a)

    @rule(whole=st.booleans())
    def close_today(self, whole: bool) -> None:
        channel, cashier = ("*", "*") if whole else ("counter", "c1")
        with self.conn.transaction():
            result = close.close_day(self.conn, self.c, self.today, channel=channel, cashier=cashier)
        self.closed.append((result.id, self.entries_in_scope(result.id)))

    # -- invariants ------------------------------------------------------------------------
    def item_id(self, it: MItem) -> int:
        if it.kind == "bill":
            sql, args = "SELECT id FROM receivable_item WHERE bill_id = %s AND kind = 'bill'", [it.bill]
        elif it.kind == "late_fee":
            sql, args = "SELECT id FROM receivable_item WHERE bill_id = %s AND kind = 'late_fee' AND accrued_through = %s", [it.bill, it.through]
        else:
            charges = [i for i in self.items if i.kind == "charge" and i.account == it.account]
            rows = self.conn.execute("SELECT id FROM receivable_item WHERE account_id = %s AND kind = 'charge' ORDER BY id",
                                     [it.account]).fetchall()
            return rows[charges.index(it)][0]
        return self.conn.execute(sql, args).fetchone()[0]

    def entries_in_scope(self, close_id: int) -> int:
        return self.conn.execute(
            """SELECT count(*) FROM journal_entry e JOIN ledger_close c ON c.id = %s
                WHERE e.company_id = c.company_id AND e.booked_on BETWEEN c.first_day AND c.last_day
                  AND (c.channel = '*' OR (c.channel = e.channel AND (c.cashier = '*' OR c.cashier = coalesce(e.cashier, ''))))""",
            [close_id]).fetchone()[0]

    def snapshot(self) -> tuple:
        return (self.conn.execute("SELECT count(*), coalesce(sum(abs(amount)), 0) FROM posting WHERE company_id = %s",
                                  [self.c]).fetchone(),
                self.conn.execute("SELECT count(*) FROM payment WHERE company_id = %s", [self.c]).fetchone(),
                tuple(self.conn.execute("SELECT id, settled FROM receivable_item WHERE company_id = %s ORDER BY id",
                                        [self.c]).fetchall()))

    @invariant()
    def every_entry_balances(self) -> None:
        assert self.conn.execute(
            "SELECT count(*) FROM (SELECT entry_id FROM posting WHERE company_id = %s GROUP BY 1 HAVING sum(amount) <> 0) x",
            [self.c]).fetchone()[0] == 0

    @invariant()
    def balances_equal_the_model(self) -> None:
        posted = {c: int(b) for c, b in self.conn.execute(
            "SELECT account_code, sum(amount) FROM posting WHERE company_id = %s GROUP BY 1 HAVING sum(amount) <> 0",
            [self.c]).fetchall()}
        assert posted == self.bal
        kept = {c: int(b) for c, b in self.conn.execute(
            "SELECT account_code, balance FROM ledger_account_balance WHERE company_id = %s AND balance <> 0",
            [self.c]).fetchall()}
        assert kept == self.bal

    @invariant()
    def open_items_equal_the_model(self) -> None:
        got = sorted(r[0] for r in self.conn.execute(
            "SELECT amount - settled FROM receivable_item WHERE company_id = %s AND amount > settled", [self.c]).fetchall())
        assert got == sorted(i.open for i in self.items if i.open > 0)

    @invariant()
    def nothing_posted_into_a_closed_day(self) -> None:
        for close_id, count in self.closed:
            assert self.entries_in_scope(close_id) == count

    @invariant()
    def the_check_finds_nothing(self) -> None:
        report = balances.check(self.conn, self.c)
        assert report.ok, report.problems


def test_ledger_state_machine(conn: psycopg.Connection) -> None:
    LedgerMachine.conn = conn
    run_state_machine_as_test(
        LedgerMachine,
        settings=settings(max_examples=60, stateful_step_count=40, deadline=None, derandomize=False,
                          suppress_health_check=list(HealthCheck)))
