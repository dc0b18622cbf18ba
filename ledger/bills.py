"""Bills into the journal: the billing run's contract, and the reversal (红冲) of a bill.

``post_bills(conn, company_id, run_id)`` is what the billing run calls inside its transaction.
In one statement it posts one entry per bill of the run that has none yet:

    Dr AR:<account id>        bill.total
    Cr REV:<component>        the sum of the bill's lines of that component (bill_line.amount)
    Cr TAX:vat                bill.tax

and opens the bill's receivable item (due on ``bill.due_date``). A bill whose total is negative
(a credit) is posted to ``PREPAID:<account>`` instead of AR. Bills whose lines do not add up to
``bill.amount`` are refused, all named, before anything is written. Re-running posts nothing
new (``journal_entry.idempotency_key = 'bill:<bill id>'``). Then the prepaid credit of the
accounts just billed is applied to what they owe.

Only the columns of ``0001_core.sql`` are read from ``bill`` and ``bill_line``.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Sequence

import psycopg

from meterline.ledger import chart
from meterline.ledger.allocation import LOCK_ACCOUNTS_SQL, LOCK_ITEMS_SQL
from meterline.ledger.errors import LedgerError, NothingToDo
from meterline.ledger.journal import CompanyInfo, Posting, company_info, entry_postings, open_day, post_entry
from meterline.ledger.policy import AllocationPolicy
from meterline.ledger.prepaid import apply_prepaid
from meterline.store.db import local_settings

log = logging.getLogger(__name__)

# the SQL twin of chart.component_code
_COMPONENT_SQL = "coalesce(nullif(btrim(regexp_replace(lower({c}), '[^a-z0-9_]+', '_', 'g'), '_'), ''), 'other')"

# The run's bills. When no journal entry refers to a bill of the run yet (the usual case: the run
# inserted them in this transaction), they are all unposted and no per-bill probe is needed; every
# writer of a 'bill:<id>' key books it with ref_type 'bill', ref_id <id> (post_bills, reverse_bill,
# the benchmarks' baselines), and should one not, the journal's unique key still refuses a second
# entry. Otherwise each bill is probed for its key: the key is computed apart (OFFSET 0) so that,
# under row-level security, comparing to it is a leakproof condition the journal's unique index
# can serve ('bill:' || id itself is not leakproof).
_RUN_BILLS = """
    SELECT b.id, b.account_id, b.amount, b.tax, b.total, b.due_date, b.period FROM {source} b
     WHERE b.company_id = %(company)s AND b.run_id = %(run)s AND b.status = 'issued' AND b.id BETWEEN %(lo)s AND %(hi)s
"""
# a shard of the run: only these bills, found by the primary key alone (OFFSET 0 keeps the other
# conditions outside). Given the run and the status in the same scan, the planner, on statistics
# that had not seen the shards' new bills, ANDed the run's index with the partial index of
# standing bills (0650) and tested each of the run's bills against the whole id array: 12 s
# instead of a fraction of a second for a shard of 150,000 bills.
_SHARD = "(SELECT * FROM bill WHERE id = ANY(%(ids)s) AND id BETWEEN %(lo)s AND %(hi)s OFFSET 0)"

_UNPOSTED = """
    SELECT b.id, b.account_id, b.amount, b.tax, b.total, b.due_date, b.period
      FROM (SELECT b.*, 'bill:' || b.id AS key FROM {source} b
             WHERE b.company_id = %(company)s AND b.run_id = %(run)s AND b.status = 'issued'
               AND b.id BETWEEN %(lo)s AND %(hi)s OFFSET 0) b
      LEFT JOIN LATERAL (SELECT 1 AS hit FROM journal_entry e   -- an index probe per bill
                          WHERE e.company_id = %(company)s AND e.idempotency_key = b.key LIMIT 1) posted ON true
     WHERE posted.hit IS NULL
"""

# any entry referring to a bill of the run (journal_entry_ref_idx; leakproof conditions only)
_ANY_POSTED = """
SELECT EXISTS (SELECT 1 FROM journal_entry e
                WHERE e.ref_type = 'bill' AND e.ref_id BETWEEN %(lo)s AND %(hi)s AND e.company_id = %(company)s)
"""


def _mismatched(bills: str) -> str:
    return f"""
SELECT u.id, u.amount, coalesce(sum(l.amount), 0)::bigint
  FROM ({bills}) u LEFT JOIN bill_line l ON l.bill_id = u.id AND l.bill_id BETWEEN %(lo)s AND %(hi)s
 GROUP BY u.id, u.amount
HAVING u.amount <> coalesce(sum(l.amount), 0)
 ORDER BY u.id LIMIT 20
"""


def _post(bills: str) -> str:
    """The posting statement. Revenue codes are computed once per distinct component of the run
    (``components``), not per line. The lines summed per entry and code are numbered as they are
    summed (window over entry, code order): the receivable is line 1, then the revenue codes in
    code order, then the tax, the numbers a sort of each entry's postings gives. The postings are
    written in entry order (an integer sort), so each entry's rows sit together in the table and
    its key index fills left to right.
    """
    return f"""
WITH numbered AS MATERIALIZED (
    SELECT u.*, nextval('journal_entry_id_seq') AS entry_id, CASE WHEN u.total <> 0 THEN 1 ELSE 0 END AS first
      FROM ({bills}) u
),
components AS MATERIALIZED (
    SELECT component, 'REV:' || {_COMPONENT_SQL.format(c="component")} AS code
      FROM (SELECT DISTINCT component FROM bill_line WHERE bill_id BETWEEN %(lo)s AND %(hi)s) d
),
lines AS MATERIALIZED (
    SELECT n.entry_id, max(n.first) + row_number() OVER w AS line_no, c.code, -sum(l.amount)::bigint AS amount,
           max(n.first) + count(*) OVER (PARTITION BY n.entry_id) AS last
      FROM numbered n JOIN bill_line l ON l.bill_id = n.id AND l.bill_id BETWEEN %(lo)s AND %(hi)s
      JOIN components c ON c.component = l.component
     GROUP BY n.entry_id, c.code HAVING sum(l.amount) <> 0
    WINDOW w AS (PARTITION BY n.entry_id ORDER BY c.code ROWS UNBOUNDED PRECEDING)
),
je AS (
    INSERT INTO journal_entry (id, company_id, booked_on, kind, ref_type, ref_id, idempotency_key, created_by, memo)
    SELECT entry_id, %(company)s, %(day)s, 'bill', 'bill', id, 'bill:' || id, %(by)s, 'bill ' || period
      FROM numbered
),
po AS (
    INSERT INTO posting (entry_id, line_no, company_id, account_code, amount)
    SELECT entry_id, 1, %(company)s, CASE WHEN total > 0 THEN 'AR:' ELSE 'PREPAID:' END || account_id, total
      FROM numbered WHERE total <> 0
    UNION ALL
    SELECT entry_id, line_no, %(company)s, code, amount FROM lines
    UNION ALL
    SELECT n.entry_id, coalesce(l.last, n.first) + 1, %(company)s, %(tax)s, -n.tax
      FROM numbered n LEFT JOIN (SELECT DISTINCT entry_id, last FROM lines) l USING (entry_id) WHERE n.tax <> 0
    ORDER BY 1, 2
),
ri AS (
    INSERT INTO receivable_item (company_id, account_id, kind, bill_id, entry_id, amount, due_date)
    SELECT %(company)s, account_id, 'bill', id, entry_id, total, due_date FROM numbered WHERE total > 0
)
SELECT count(*), coalesce(sum(total), 0)::bigint, coalesce(array_agg(DISTINCT account_id), '{{}}') FROM numbered
"""


@dataclass(frozen=True, slots=True)
class BillPostResult:
    bills: int
    amount: int
    prepaid_applied: int


def post_bills(conn: psycopg.Connection, company_id: int, run_id: int, *, day: dt.date | None = None,
               policy: AllocationPolicy | None = None, created_by: str | None = None,
               bill_ids: Sequence[int] | None = None) -> int:
    """Post every bill of billing run ``run_id`` not posted yet (``bill_ids``: only those of
    these bills: a shard of the run); return how many were posted."""
    return post_bills_detail(conn, company_id, run_id, day=day, policy=policy, created_by=created_by,
                             bill_ids=bill_ids).bills


def post_bills_detail(conn: psycopg.Connection, company_id: int, run_id: int, *, day: dt.date | None = None,
                      policy: AllocationPolicy | None = None, created_by: str | None = None,
                      bill_ids: Sequence[int] | None = None) -> BillPostResult:
    company = company_info(conn, company_id)
    params = {"company": company_id, "run": run_id, "by": created_by, "tax": chart.TAX_DEFAULT}
    source = "bill"
    if bill_ids is not None:
        if not len(bill_ids):
            return BillPostResult(0, 0, 0)
        source = _SHARD
        params["ids"] = list(bill_ids)
        lo, hi = min(bill_ids), max(bill_ids)
    else:
        lo, hi = conn.execute("SELECT min(id), max(id) FROM bill WHERE run_id = %(run)s AND company_id = %(company)s",
                              params).fetchone()
    if lo is None:
        return BillPostResult(0, 0, 0)
    # the run's bill ids bound its lines too: a range scan of bill_line's key, whatever the plan
    params |= {"lo": lo, "hi": hi}
    bills = (_UNPOSTED if conn.execute(_ANY_POSTED, params).fetchone()[0] else _RUN_BILLS).format(source=source)
    # one big statement each: JIT compiling it costs more than it saves (0.7 s of 200k bills)
    with local_settings(conn, jit="off", work_mem="256MB"):
        return _post_bills(conn, company, company_id, run_id, bills, params, day, policy, created_by)


def _post_bills(conn: psycopg.Connection, company: CompanyInfo, company_id: int, run_id: int, bills: str, params: dict,
                day: dt.date | None, policy: AllocationPolicy | None, created_by: str | None) -> BillPostResult:
    bad = conn.execute(_mismatched(bills), params).fetchall()
    if bad:
        listed = ", ".join(f"bill {b} amount {a} but lines sum to {s}" for b, a, s in bad)
        raise LedgerError(f"billing run {run_id}: bills whose lines do not add up, nothing posted: {listed}")
    params["day"] = open_day(conn, company_id, day or company.today())
    n, total, accounts = conn.execute(_post(bills), params, prepare=False).fetchone()
    applied = apply_prepaid(conn, company_id, accounts, day=params["day"], policy=policy,
                            created_by=created_by) if n else None
    log.info("billing run %s: %d bill(s) posted, %d minor units", run_id, n, total)
    return BillPostResult(n, total, applied.amount if applied else 0)


@dataclass(frozen=True, slots=True)
class BillReversal:
    entry_id: int
    booked_on: dt.date
    released_to_prepaid: int


def reverse_bill(conn: psycopg.Connection, company_id: int, bill_id: int, *, reason: str, created_by: str | None = None,
                 day: dt.date | None = None, policy: AllocationPolicy | None = None) -> BillReversal:
    """Reverse (红冲) a posted bill with a new entry linked to the original.

    The bill and its late fees leave the receivable; what customers had paid on them becomes
    prepaid credit (and is applied to their other open items); waivers on them are undone.
    A bill with written-off items is refused (recover the debt first). The bill stays, status
    ``reversed``; billing the period again (补开) is the billing run's, asked for explicitly
    (``rating.run.bill_run(..., rebill=True)``, ``meterline bill run --rebill``): the new bill
    names this one in ``bill.replaces``.
    """
    if not reason or not reason.strip():
        raise LedgerError("a reversal needs a reason")
    company = company_info(conn, company_id)
    row = conn.execute("SELECT account_id, status FROM bill WHERE id = %s AND company_id = %s FOR UPDATE",
                       [bill_id, company_id]).fetchone()
    if row is None:
        raise NothingToDo(f"bill {bill_id} does not exist in this company")
    account_id, status = row
    if status == "reversed":
        raise NothingToDo(f"bill {bill_id} is already reversed")
    original = conn.execute("SELECT id FROM journal_entry WHERE company_id = %s AND idempotency_key = %s",
                            [company_id, f"bill:{bill_id}"]).fetchone()
    if original is None:
        raise NothingToDo(f"bill {bill_id} is not posted to the ledger yet")
    params = {"company": company_id, "accounts": [account_id]}
    conn.execute(LOCK_ACCOUNTS_SQL, params)
    conn.execute(LOCK_ITEMS_SQL, params)
    items = conn.execute(
        """SELECT i.id, i.kind, i.amount, i.settled, i.status,
                  coalesce(sum(a.amount) FILTER (WHERE a.source IN ('payment', 'prepaid', 'payment_reversal')), 0)::bigint,
                  coalesce(sum(a.amount) FILTER (WHERE a.source = 'waiver'), 0)::bigint,
                  coalesce(sum(a.amount) FILTER (WHERE a.source IN ('write_off', 'recovery')), 0)::bigint
             FROM receivable_item i LEFT JOIN allocation a ON a.item_id = i.id
            WHERE i.bill_id = %s AND i.company_id = %s
            GROUP BY i.id ORDER BY i.id""", [bill_id, company_id]).fetchall()
    if any(wo != 0 for *_, wo in items):
        raise LedgerError(f"bill {bill_id} has written-off amounts: recover the bad debt before reversing it")
    postings = [Posting(p.account_code, -p.amount) for p in entry_postings(conn, original[0])]
    money = 0
    reverse_allocs: list[tuple[int, int]] = []
    for item_id, kind, amount, settled, _status, paid, waived, _wo in items:
        if kind == "late_fee":
            postings += [Posting(chart.LATE_FEE_INCOME, amount), Posting(chart.ar(account_id), -amount)]
            if waived:
                postings += [Posting(chart.ar(account_id), waived), Posting(chart.LATE_FEE_INCOME, -waived)]
        elif waived:
            postings += [Posting(chart.ar(account_id), waived), Posting(chart.REV_WAIVER, -waived)]
        money += paid
        if amount - settled > 0:
            reverse_allocs.append((item_id, amount - settled))
    if money:
        postings += [Posting(chart.ar(account_id), money), Posting(chart.prepaid(account_id), -money)]
    entry = post_entry(conn, company_id, day=day or company.today(), kind="reversal", postings=postings,
                       ref_type="bill", ref_id=bill_id, reverses_id=original[0], memo=reason[:500],
                       idempotency_key=f"reverse:{original[0]}", created_by=created_by)
    if reverse_allocs:
        conn.execute(
            """INSERT INTO allocation (company_id, entry_id, item_id, source, amount)
               SELECT %s, %s, item, 'reversal', amount FROM unnest(%s::bigint[], %s::bigint[]) AS u(item, amount)""",
            [company_id, entry.id, [i for i, _ in reverse_allocs], [a for _, a in reverse_allocs]])
    conn.execute("UPDATE receivable_item SET settled = amount, status = 'reversed' WHERE bill_id = %s AND company_id = %s",
                 [bill_id, company_id])
    conn.execute("UPDATE bill SET status = 'reversed' WHERE id = %s", [bill_id])
    if money:
        apply_prepaid(conn, company_id, [account_id], day=entry.booked_on, policy=policy, created_by=created_by)
    return BillReversal(entry.id, entry.booked_on, money)
