"""Corrections, never deletions: reversals, suspense matching, waivers, charges, write-offs,
recoveries and refunds.

* :func:`reverse_payment` (红冲 of a payment): a new entry linked to the payment's entry. The
  cash leaves again; the items the payment settled are reopened; whatever the payment had put on
  prepaid credit is taken back from the credit still there, and what is no longer there (already
  used on later bills) is owed again as a new item.
* :func:`match_suspense`: money that arrived without a known account is moved from
  ``SUSPENSE:<channel>`` to the account once identified, allocated like a payment.
* Adjustments need two people: :func:`request_adjustment` records who asks and why,
  :func:`approve` (by someone else — the database refuses an enterer approving their own) posts
  it, :func:`reject` closes it. Kinds:

  ====================  ==========================================================================
  ``waiver``            减免: an open item is forgiven in part or whole: Dr ``REV:waiver``
                        (``INC:late_fee`` for a late fee), Cr AR
  ``charge``            调增: a manual charge becomes a new open item: Dr AR, Cr ``REV:adjustment``
  ``write_off``         坏账核销: open items oldest first up to the amount: Dr ``EXP:bad_debt``, Cr AR
  ``recovery``          坏账收回: written-off amounts are owed again: Dr AR, Cr ``INC:bad_debt_recovery``
  ``refund``            退款: prepaid credit is to be paid back: Dr PREPAID, Cr ``REFUND:payable``;
                        :func:`pay_refund` then pays it out: Dr ``REFUND:payable``, Cr ``CASH:…``
  ====================  ==========================================================================
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import psycopg

from meterline.ledger import chart
from meterline.ledger.allocation import LOCK_ACCOUNTS_SQL, LOCK_ITEMS_SQL, OpenItem, allocate
from meterline.ledger.errors import ApprovalError, LedgerError, NothingToDo
from meterline.ledger.journal import Posting, company_info, post_entry
from meterline.ledger.policy import AllocationPolicy
from meterline.ledger.prepaid import apply_prepaid, prepaid_credit

ADJUSTMENT_KINDS = ("waiver", "charge", "write_off", "recovery", "refund")


def _lock(conn: psycopg.Connection, company_id: int, account_id: int) -> None:
    params = {"company": company_id, "accounts": [account_id]}
    conn.execute(LOCK_ACCOUNTS_SQL, params)
    conn.execute(LOCK_ITEMS_SQL, params)


def open_items(conn: psycopg.Connection, company_id: int, account_id: int) -> list[OpenItem]:
    rows = conn.execute(
        """SELECT id, kind, bill_id, due_date, amount - settled FROM receivable_item
            WHERE company_id = %s AND account_id = %s AND status = 'open' AND settled < amount ORDER BY id""",
        [company_id, account_id]).fetchall()
    return [OpenItem(*r) for r in rows]


def _insert_allocations(conn: psycopg.Connection, company_id: int, entry_id: int, source: str,
                        allocs: list[tuple[int, int]], payment_id: int | None = None) -> None:
    if not allocs:
        return
    conn.execute(
        """WITH a AS (SELECT * FROM unnest(%(items)s::bigint[], %(amounts)s::bigint[]) AS u(item_id, amount)),
                ins AS (INSERT INTO allocation (company_id, entry_id, item_id, payment_id, source, amount)
                        SELECT %(company)s, %(entry)s, item_id, %(payment)s, %(source)s, amount FROM a)
           UPDATE receivable_item i SET settled = i.settled + s.amount
             FROM (SELECT item_id, sum(amount) AS amount FROM a GROUP BY item_id) s WHERE i.id = s.item_id""",
        {"items": [i for i, _ in allocs], "amounts": [a for _, a in allocs], "company": company_id,
         "entry": entry_id, "payment": payment_id, "source": source})


def _new_item(conn: psycopg.Connection, company_id: int, account_id: int, entry_id: int, amount: int,
              due: dt.date, kind: str = "charge") -> int:
    return conn.execute(
        """INSERT INTO receivable_item (company_id, account_id, kind, entry_id, amount, due_date)
           VALUES (%s, %s, %s, %s, %s, %s) RETURNING id""", [company_id, account_id, kind, entry_id, amount, due]).fetchone()[0]


# ---------------------------------------------------------------------------------------------
# payments

@dataclass(frozen=True, slots=True)
class PaymentReversal:
    entry_id: int
    booked_on: dt.date
    reopened: int  # settled items reopened
    from_prepaid: int  # taken back from prepaid credit
    owed_again: int  # no longer in the credit: a new open item
    from_suspense: int


def reverse_payment(conn: psycopg.Connection, company_id: int, payment_id: int, *, reason: str,
                    created_by: str | None = None, day: dt.date | None = None) -> PaymentReversal:
    """Reverse a payment (a bounced transfer, a counter mistake, a receipt voided)."""
    if not reason or not reason.strip():
        raise LedgerError("a reversal needs a reason")
    company = company_info(conn, company_id)
    row = conn.execute(
        """SELECT p.id, p.channel, p.external_id, coalesce(p.account_id, m.account_id), p.amount, p.entry_id,
                  p.cash_account, e.cashier, p.account_id IS NULL AND m.account_id IS NULL
             FROM payment p JOIN journal_entry e ON e.id = p.entry_id
             LEFT JOIN suspense_match m ON m.payment_id = p.id
            WHERE p.id = %s AND p.company_id = %s""", [payment_id, company_id]).fetchone()
    if row is None:
        raise NothingToDo(f"payment {payment_id} does not exist in this company")
    pid, channel, external_id, account_id, amount, entry_id, cash_account, cashier, in_suspense = row
    if conn.execute("SELECT 1 FROM payment_reversal WHERE payment_id = %s", [pid]).fetchone():
        raise NothingToDo(f"payment {channel}:{external_id} is already reversed")
    cash_account = cash_account or chart.cash(channel)
    postings = [Posting(cash_account, -amount)]
    reopened = from_prepaid = owed = from_suspense = 0
    reopen: list[tuple[int, int]] = []
    if in_suspense:
        from_suspense = amount
        postings.append(Posting(chart.suspense(channel), amount))
    else:
        _lock(conn, company_id, account_id)
        live = conn.execute(
            """SELECT a.item_id, least(sum(a.amount), min(i.settled))::bigint
                 FROM allocation a JOIN receivable_item i ON i.id = a.item_id
                WHERE a.payment_id = %s AND a.source IN ('payment', 'payment_reversal') AND i.status = 'open'
                GROUP BY a.item_id HAVING sum(a.amount) > 0 ORDER BY a.item_id""", [pid]).fetchall()
        for item_id, amt in live:
            if amt > 0:
                reopen.append((item_id, -amt))
                reopened += amt
        rest = amount - reopened
        credit = prepaid_credit(conn, company_id, [account_id]).get(account_id, 0)
        from_prepaid = min(rest, credit)
        owed = rest - from_prepaid
        postings += [Posting(chart.ar(account_id), reopened + owed), Posting(chart.prepaid(account_id), from_prepaid)]
    entry = post_entry(conn, company_id, day=day or company.today(), kind="payment_reversal", postings=postings,
                       ref_type="payment", ref_id=pid, reverses_id=entry_id, memo=reason[:500],
                       idempotency_key=f"reverse:{entry_id}", created_by=created_by, channel=channel, cashier=cashier)
    _insert_allocations(conn, company_id, entry.id, "payment_reversal", reopen, payment_id=pid)
    if owed:
        _new_item(conn, company_id, account_id, entry.id, owed, entry.booked_on)
    conn.execute("INSERT INTO payment_reversal (payment_id, company_id, entry_id, reason, created_by) VALUES (%s, %s, %s, %s, %s)",
                 [pid, company_id, entry.id, reason, created_by])
    return PaymentReversal(entry.id, entry.booked_on, reopened, from_prepaid, owed, from_suspense)


def match_suspense(conn: psycopg.Connection, company_id: int, payment_id: int, account_id: int, *,
                   matched_by: str | None = None, day: dt.date | None = None,
                   policy: AllocationPolicy | None = None) -> int:
    """Move an unmatched payment from suspense to ``account_id``; returns the entry id."""
    policy = policy or AllocationPolicy()
    company = company_info(conn, company_id)
    row = conn.execute("SELECT channel, amount, account_id FROM payment WHERE id = %s AND company_id = %s",
                       [payment_id, company_id]).fetchone()
    if row is None:
        raise NothingToDo(f"payment {payment_id} does not exist in this company")
    channel, amount, paid_account = row
    if paid_account is not None:
        raise NothingToDo(f"payment {payment_id} already belongs to account {paid_account}")
    if conn.execute("SELECT 1 FROM suspense_match WHERE payment_id = %s", [payment_id]).fetchone():
        raise NothingToDo(f"payment {payment_id} was matched before")
    if conn.execute("SELECT 1 FROM payment_reversal WHERE payment_id = %s", [payment_id]).fetchone():
        raise NothingToDo(f"payment {payment_id} was reversed")
    if not conn.execute("SELECT 1 FROM account WHERE id = %s AND company_id = %s", [account_id, company_id]).fetchone():
        raise NothingToDo(f"account {account_id} does not exist in this company")
    _lock(conn, company_id, account_id)
    allocs, rest = allocate(amount, open_items(conn, company_id, account_id), policy)
    allocated = amount - rest
    entry = post_entry(conn, company_id, day=day or company.today(), kind="suspense_match",
                       postings=[Posting(chart.suspense(channel), amount), Posting(chart.ar(account_id), -allocated),
                                 Posting(chart.prepaid(account_id), -rest)],
                       ref_type="payment", ref_id=payment_id, idempotency_key=f"match:{payment_id}",
                       created_by=matched_by)
    _insert_allocations(conn, company_id, entry.id, "payment", allocs, payment_id=payment_id)
    conn.execute("INSERT INTO suspense_match (payment_id, company_id, account_id, entry_id, matched_by) VALUES (%s, %s, %s, %s, %s)",
                 [payment_id, company_id, account_id, entry.id, matched_by])
    return entry.id


# ---------------------------------------------------------------------------------------------
# adjustments with approval

@dataclass(frozen=True, slots=True)
class Adjustment:
    id: int
    kind: str
    account_id: int
    item_id: int | None
    amount: int
    reason: str
    entered_by: str
    status: str
    decided_by: str | None
    entry_id: int | None


def get_adjustment(conn: psycopg.Connection, company_id: int, adjustment_id: int) -> Adjustment:
    row = conn.execute(
        """SELECT id, kind, account_id, item_id, amount, reason, entered_by, status, decided_by, entry_id
             FROM adjustment WHERE id = %s AND company_id = %s""", [adjustment_id, company_id]).fetchone()
    if row is None:
        raise NothingToDo(f"adjustment {adjustment_id} does not exist in this company")
    return Adjustment(*row)


def request_adjustment(conn: psycopg.Connection, company_id: int, *, kind: str, account_id: int, amount: int,
                       reason: str, entered_by: str, item_id: int | None = None) -> int:
    """Record a correction request; nothing is posted until someone else approves it."""
    problems = []
    if kind not in ADJUSTMENT_KINDS:
        problems.append(f"kind must be one of {', '.join(ADJUSTMENT_KINDS)}")
    if not isinstance(amount, int) or amount <= 0:
        problems.append("amount must be a positive integer of minor units")
    if not reason or not reason.strip():
        problems.append("a reason is required")
    if not entered_by:
        problems.append("the person entering it is required")
    if kind == "waiver" and item_id is None:
        problems.append("a waiver names the open item it forgives")
    if problems:
        raise LedgerError("adjustment refused: " + "; ".join(problems))
    if not conn.execute("SELECT 1 FROM account WHERE id = %s AND company_id = %s", [account_id, company_id]).fetchone():
        raise NothingToDo(f"account {account_id} does not exist in this company")
    if item_id is not None:
        item = conn.execute("SELECT account_id FROM receivable_item WHERE id = %s AND company_id = %s",
                            [item_id, company_id]).fetchone()
        if item is None or item[0] != account_id:
            raise NothingToDo(f"item {item_id} is not an item of account {account_id}")
    return conn.execute(
        """INSERT INTO adjustment (company_id, kind, account_id, item_id, amount, reason, entered_by)
           VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id""",
        [company_id, kind, account_id, item_id, amount, reason, entered_by]).fetchone()[0]


def reject(conn: psycopg.Connection, company_id: int, adjustment_id: int, *, decided_by: str, note: str | None = None) -> None:
    adj = get_adjustment(conn, company_id, adjustment_id)
    _check_decider(adj, decided_by)
    conn.execute(
        """UPDATE adjustment SET status = 'rejected', decided_by = %s, decided_at = now(), decision_note = %s
            WHERE id = %s""", [decided_by, note, adjustment_id])


def _check_decider(adj: Adjustment, decided_by: str) -> None:
    if adj.status != "pending":
        raise ApprovalError(f"adjustment {adj.id} was already {adj.status} by {adj.decided_by}")
    if not decided_by:
        raise ApprovalError("the approver is required")
    if decided_by == adj.entered_by:
        raise ApprovalError(f"adjustment {adj.id} was entered by {adj.entered_by}, who cannot also approve it")


def approve(conn: psycopg.Connection, company_id: int, adjustment_id: int, *, decided_by: str,
            note: str | None = None, day: dt.date | None = None, policy: AllocationPolicy | None = None) -> int:
    """Approve and post an adjustment; returns the entry id."""
    policy = policy or AllocationPolicy()
    company = company_info(conn, company_id)
    conn.execute("SELECT 1 FROM adjustment WHERE id = %s FOR UPDATE", [adjustment_id])
    adj = get_adjustment(conn, company_id, adjustment_id)
    _check_decider(adj, decided_by)
    day = day or company.today()
    acct = adj.account_id
    _lock(conn, company_id, acct)
    common = {"ref_type": "adjustment", "ref_id": adj.id, "memo": adj.reason[:500],
              "idempotency_key": f"adjustment:{adj.id}", "created_by": decided_by}
    if adj.kind == "waiver":
        item = conn.execute("SELECT kind, amount - settled, status FROM receivable_item WHERE id = %s",
                            [adj.item_id]).fetchone()
        if item[2] != "open" or item[1] < adj.amount:
            raise NothingToDo(f"item {adj.item_id} has {item[1]} open ({item[2]}): cannot waive {adj.amount}")
        contra = chart.LATE_FEE_INCOME if item[0] == "late_fee" else chart.REV_WAIVER
        entry = post_entry(conn, company_id, day=day, kind="waiver",
                           postings=[Posting(contra, adj.amount), Posting(chart.ar(acct), -adj.amount)], **common)
        _insert_allocations(conn, company_id, entry.id, "waiver", [(adj.item_id, adj.amount)])
    elif adj.kind == "charge":
        entry = post_entry(conn, company_id, day=day, kind="charge",
                           postings=[Posting(chart.ar(acct), adj.amount), Posting(chart.REV_ADJUSTMENT, -adj.amount)],
                           **common)
        _new_item(conn, company_id, acct, entry.id, adj.amount, entry.booked_on)
        apply_prepaid(conn, company_id, [acct], day=entry.booked_on, policy=policy, created_by=decided_by)
    elif adj.kind == "write_off":
        allocs, rest = allocate(adj.amount, open_items(conn, company_id, acct), policy)
        if rest:
            raise NothingToDo(f"account {acct} has only {adj.amount - rest} open: cannot write off {adj.amount}")
        entry = post_entry(conn, company_id, day=day, kind="write_off",
                           postings=[Posting(chart.BAD_DEBT_EXPENSE, adj.amount), Posting(chart.ar(acct), -adj.amount)],
                           **common)
        _insert_allocations(conn, company_id, entry.id, "write_off", allocs)
        conn.execute("UPDATE receivable_item SET status = 'written_off' WHERE id = ANY(%s) AND settled = amount",
                     [[i for i, _ in allocs]])
    elif adj.kind == "recovery":
        rows = conn.execute(
            """SELECT a.item_id, sum(a.amount)::bigint FROM allocation a JOIN receivable_item i ON i.id = a.item_id
                WHERE i.account_id = %s AND a.source IN ('write_off', 'recovery')
                GROUP BY a.item_id HAVING sum(a.amount) > 0 ORDER BY a.item_id""", [acct]).fetchall()
        left = adj.amount
        reopen = []
        for item_id, written in rows:
            take = min(left, written)
            if take > 0:
                reopen.append((item_id, -take))
                left -= take
        if left:
            raise NothingToDo(f"account {acct} has only {adj.amount - left} written off: cannot recover {adj.amount}")
        entry = post_entry(conn, company_id, day=day, kind="recovery",
                           postings=[Posting(chart.ar(acct), adj.amount), Posting(chart.RECOVERY_INCOME, -adj.amount)],
                           **common)
        conn.execute("UPDATE receivable_item SET status = 'open' WHERE id = ANY(%s)", [[i for i, _ in reopen]])
        _insert_allocations(conn, company_id, entry.id, "recovery", reopen)
        apply_prepaid(conn, company_id, [acct], day=entry.booked_on, policy=policy, created_by=decided_by)
    elif adj.kind == "refund":
        credit = prepaid_credit(conn, company_id, [acct]).get(acct, 0)
        if credit < adj.amount:
            raise NothingToDo(f"account {acct} has {credit} prepaid credit: cannot refund {adj.amount}")
        entry = post_entry(conn, company_id, day=day, kind="refund",
                           postings=[Posting(chart.prepaid(acct), adj.amount), Posting(chart.REFUND_PAYABLE, -adj.amount)],
                           **common)
    else:  # pragma: no cover - the table's CHECK keeps kinds known
        raise LedgerError(f"unknown adjustment kind {adj.kind}")
    conn.execute(
        """UPDATE adjustment SET status = 'approved', decided_by = %s, decided_at = now(), decision_note = %s, entry_id = %s
            WHERE id = %s""", [decided_by, note, entry.id, adj.id])
    return entry.id


def pay_refund(conn: psycopg.Connection, company_id: int, adjustment_id: int, *, channel: str,
               cashier: str | None = None, paid_by: str | None = None, day: dt.date | None = None) -> int:
    """Pay out an approved refund through a channel (cash at the counter, a bank transfer)."""
    company = company_info(conn, company_id)
    adj = get_adjustment(conn, company_id, adjustment_id)
    if adj.kind != "refund" or adj.status != "approved":
        raise NothingToDo(f"adjustment {adjustment_id} is not an approved refund")
    if conn.execute("SELECT 1 FROM refund_payout WHERE adjustment_id = %s", [adjustment_id]).fetchone():
        raise NothingToDo(f"refund {adjustment_id} was paid out already")
    entry = post_entry(conn, company_id, day=day or company.today(), kind="refund_payout",
                       postings=[Posting(chart.REFUND_PAYABLE, adj.amount), Posting(chart.cash(channel, cashier), -adj.amount)],
                       ref_type="adjustment", ref_id=adj.id, idempotency_key=f"refund_payout:{adj.id}",
                       created_by=paid_by, channel=channel, cashier=cashier, memo=adj.reason[:500])
    conn.execute("INSERT INTO refund_payout (adjustment_id, company_id, channel, entry_id, paid_by) VALUES (%s, %s, %s, %s, %s)",
                 [adj.id, company_id, channel, entry.id, paid_by])
    return entry.id
