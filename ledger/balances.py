"""Balances, statements and the ledger check.

Balances are queries: the sum of an account code's postings. For speed the database keeps
``ledger_balance`` plus insert-only ``ledger_balance_delta`` rows (one per account and posting
statement, so concurrent payments never wait on a hot row such as ``CASH:wechat``);
``ledger_account_balance`` (a view) adds them up, and :func:`fold` (run by every company-wide
close) moves the deltas into ``ledger_balance``.

:func:`check` rebuilds everything from the postings and compares: every entry balances, the
maintained balances equal the postings, every item's settled amount equals its allocations,
each customer's receivable equals their open items, and no entry sits in a closed period that
was booked after the close. ``repair=True`` rebuilds the maintained balances.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import psycopg

from meterline.errors import NotFound
from meterline.ledger import chart


def account_balance(conn: psycopg.Connection, company_id: int, code: str) -> int:
    """The maintained balance of ``code`` (signed: debit > 0)."""
    row = conn.execute(
        """SELECT coalesce(sum(b), 0)::bigint FROM (
               SELECT balance AS b FROM ledger_balance WHERE company_id = %(c)s AND account_code = %(code)s
               UNION ALL
               SELECT amount FROM ledger_balance_delta WHERE company_id = %(c)s AND account_code = %(code)s) x""",
        {"c": company_id, "code": code}).fetchone()
    return int(row[0])


def fold(conn: psycopg.Connection) -> int:
    return int(conn.execute("SELECT ledger_fold_balances()").fetchone()[0] or 0)


@dataclass(frozen=True, slots=True)
class OpenItemView:
    id: int
    kind: str
    bill_id: int | None
    period: str | None
    due_date: dt.date
    amount: int
    settled: int

    @property
    def open(self) -> int:
        return self.amount - self.settled


@dataclass(frozen=True, slots=True)
class CustomerPosition:
    account_id: int
    account_code: str
    customer_name: str
    due: int  # receivable (AR balance)
    prepaid_credit: int  # credit held (>= 0)
    overdue: int  # open amount past its due date
    open_items: list[OpenItemView]

    @property
    def net_due(self) -> int:
        return self.due - self.prepaid_credit


def resolve_account(conn: psycopg.Connection, company_id: int, account_code: str) -> tuple[int, str]:
    """(account id, customer name) of a customer account code of this company."""
    row = conn.execute(
        """SELECT a.id, c.name FROM account a JOIN customer c ON c.id = a.customer_id
            WHERE a.company_id = %s AND a.code = %s""", [company_id, account_code]).fetchone()
    if row is None:
        raise NotFound(f"account {account_code} does not exist")
    return row[0], row[1]


def customer_position(conn: psycopg.Connection, company_id: int, account_id: int, today: dt.date | None = None) -> CustomerPosition:
    row = conn.execute(
        """SELECT a.code, c.name FROM account a JOIN customer c ON c.id = a.customer_id
            WHERE a.id = %s AND a.company_id = %s""", [account_id, company_id]).fetchone()
    if row is None:
        raise NotFound(f"account {account_id} does not exist")
    items = [OpenItemView(*r) for r in conn.execute(
        """SELECT i.id, i.kind, i.bill_id, b.period, i.due_date, i.amount, i.settled
             FROM receivable_item i LEFT JOIN bill b ON b.id = i.bill_id
            WHERE i.company_id = %s AND i.account_id = %s AND i.status = 'open' AND i.settled < i.amount
            ORDER BY i.due_date, i.id""", [company_id, account_id]).fetchall()]
    today = today or dt.date.today()
    return CustomerPosition(
        account_id, row[0], row[1],
        due=account_balance(conn, company_id, chart.ar(account_id)),
        prepaid_credit=-account_balance(conn, company_id, chart.prepaid(account_id)),
        overdue=sum(i.open for i in items if i.due_date < today),
        open_items=items)


@dataclass(frozen=True, slots=True)
class StatementLine:
    entry_id: int
    booked_on: dt.date
    kind: str
    memo: str | None
    account: str
    amount: int
    balance: int  # running balance of the statement's accounts together


@dataclass(frozen=True, slots=True)
class Statement:
    accounts: list[str]
    opening: int
    lines: list[StatementLine]

    @property
    def closing(self) -> int:
        return self.lines[-1].balance if self.lines else self.opening


def statement(conn: psycopg.Connection, company_id: int, codes: list[str], *,
              since: dt.date | None = None, until: dt.date | None = None) -> Statement:
    """Postings on ``codes`` (e.g. ``AR:12`` and ``PREPAID:12``) by business day, with a running balance."""
    since = since or dt.date(1900, 1, 1)
    until = until or dt.date(9999, 12, 31)
    opening = conn.execute(
        """SELECT coalesce(sum(p.amount), 0)::bigint FROM posting p JOIN journal_entry e ON e.id = p.entry_id
            WHERE p.company_id = %s AND p.account_code = ANY(%s) AND e.booked_on < %s""",
        [company_id, codes, since]).fetchone()[0]
    rows = conn.execute(
        """SELECT e.id, e.booked_on, e.kind, e.memo, p.account_code, p.amount
             FROM posting p JOIN journal_entry e ON e.id = p.entry_id
            WHERE p.company_id = %s AND p.account_code = ANY(%s) AND e.booked_on BETWEEN %s AND %s
            ORDER BY e.booked_on, e.id, p.line_no""", [company_id, codes, since, until]).fetchall()
    lines = []
    running = opening
    for entry_id, booked, kind, memo, code, amount in rows:
        running += amount
        lines.append(StatementLine(entry_id, booked, kind, memo, code, amount, running))
    return Statement(codes, opening, lines)


@dataclass
class CheckReport:
    entries: int = 0
    postings: int = 0
    problems: list[str] = field(default_factory=list)
    repaired: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems


def check(conn: psycopg.Connection, company_id: int | None = None, *, repair: bool = False, limit: int = 20) -> CheckReport:
    """Rebuild from the postings and compare (all companies when ``company_id`` is None)."""
    report = CheckReport()
    c = {"c": company_id, "limit": limit}
    where_p = "WHERE (%(c)s::int IS NULL OR p.company_id = %(c)s)"
    report.entries, report.postings = conn.execute(
        f"""SELECT (SELECT count(*) FROM journal_entry e WHERE (%(c)s::int IS NULL OR e.company_id = %(c)s)),
                   (SELECT count(*) FROM posting p {where_p})""", c).fetchone()
    for entry_id, total in conn.execute(
            f"""SELECT p.entry_id, sum(p.amount) FROM posting p {where_p}
                 GROUP BY p.entry_id HAVING sum(p.amount) <> 0 LIMIT %(limit)s""", c).fetchall():
        report.problems.append(f"entry {entry_id} does not balance: postings sum to {total}")
    mismatched = conn.execute(
        f"""SELECT coalesce(r.company_id, m.company_id), coalesce(r.account_code, m.account_code),
                   coalesce(r.balance, 0), coalesce(m.balance, 0)
              FROM (SELECT p.company_id, p.account_code, sum(p.amount)::bigint AS balance FROM posting p {where_p}
                     GROUP BY 1, 2) r
              FULL JOIN (SELECT company_id, account_code, balance FROM ledger_account_balance
                          WHERE (%(c)s::int IS NULL OR company_id = %(c)s)) m
                ON m.company_id = r.company_id AND m.account_code = r.account_code
             WHERE coalesce(r.balance, 0) <> coalesce(m.balance, 0) LIMIT %(limit)s""", c).fetchall()
    for comp, code, rebuilt, kept in mismatched:
        report.problems.append(f"company {comp} {code}: maintained balance {kept}, postings say {rebuilt}")
    for item_id, settled, allocated in conn.execute(
            """SELECT i.id, i.settled, coalesce(a.s, 0) FROM receivable_item i
                 LEFT JOIN (SELECT item_id, sum(amount)::bigint AS s FROM allocation GROUP BY item_id) a ON a.item_id = i.id
                WHERE (%(c)s::int IS NULL OR i.company_id = %(c)s) AND i.settled <> coalesce(a.s, 0)
                LIMIT %(limit)s""", c).fetchall():
        report.problems.append(f"item {item_id}: settled {settled}, allocations sum to {allocated}")
    for code, ar, items in conn.execute(
            f"""SELECT coalesce(r.code, i.code), coalesce(r.b, 0), coalesce(i.open, 0)
                  FROM (SELECT p.account_code AS code, sum(p.amount)::bigint AS b FROM posting p {where_p}
                          AND p.account_code LIKE 'AR:%%' GROUP BY 1) r
                  FULL JOIN (SELECT 'AR:' || account_id AS code, sum(amount - settled)::bigint AS open
                               FROM receivable_item WHERE (%(c)s::int IS NULL OR company_id = %(c)s) GROUP BY 1) i
                    ON i.code = r.code
                 WHERE coalesce(r.b, 0) <> coalesce(i.open, 0) LIMIT %(limit)s""", c).fetchall():
        report.problems.append(f"{code}: receivable {ar}, open items {items}")
    for entry_id, booked, kind, closed_at in conn.execute(
            """SELECT e.id, e.booked_on, c.kind, c.closed_at FROM journal_entry e
                 JOIN ledger_close c ON c.company_id = e.company_id AND e.booked_on BETWEEN c.first_day AND c.last_day
                  AND (c.channel = '*' OR (c.channel = e.channel AND (c.cashier = '*' OR c.cashier = coalesce(e.cashier, ''))))
                WHERE (%(c)s::int IS NULL OR e.company_id = %(c)s) AND e.created_at > c.closed_at LIMIT %(limit)s""",
            c).fetchall():
        report.problems.append(f"entry {entry_id} booked on {booked} after its {kind} close at {closed_at}")
    for pid, amount, cash in conn.execute(
            """SELECT p.id, p.amount, coalesce(sum(po.amount) FILTER (WHERE po.account_code LIKE 'CASH:%%'), 0)
                 FROM payment p LEFT JOIN posting po ON po.entry_id = p.entry_id
                WHERE (%(c)s::int IS NULL OR p.company_id = %(c)s)
                GROUP BY p.id, p.amount HAVING p.amount <> coalesce(sum(po.amount) FILTER (WHERE po.account_code LIKE 'CASH:%%'), 0)
                LIMIT %(limit)s""", c).fetchall():
        report.problems.append(f"payment {pid} of {amount} has {cash} posted to cash")
    if repair and mismatched:
        conn.execute("SELECT ledger_rebuild_balances()")
        report.repaired = True
    return report


@dataclass(frozen=True, slots=True)
class ItemAsOf:
    """A receivable item as it stood at the end of a business day."""

    id: int
    account_id: int
    kind: str
    bill_id: int | None
    due_date: dt.date
    amount: int
    open: int  #: amount minus what was allocated to it by entries booked on or before the day


# One grouped pass: each item joined to its allocations and their entries by index probes (or
# hashes), so the cost stays linear whatever the planner believes about a fresh billing run's
# row counts (a CTE joined to a grouped CTE was planned as a nested loop over both: quadratic).
OPEN_ITEMS_AS_OF_SQL = """
SELECT i.id, i.account_id, i.kind, i.bill_id, i.due_date, i.amount,
       (i.amount - coalesce(sum(a.amount) FILTER (WHERE ae.booked_on <= %(day)s), 0))::bigint AS open
  FROM receivable_item i
  JOIN journal_entry e ON e.id = i.entry_id
  LEFT JOIN allocation a ON a.item_id = i.id
  LEFT JOIN journal_entry ae ON ae.id = a.entry_id
 WHERE i.company_id = %(c)s AND e.booked_on <= %(day)s
   AND (%(accounts)s::bigint[] IS NULL OR i.account_id = ANY(%(accounts)s::bigint[]))
 GROUP BY i.id
"""


def open_items_as_of(conn: psycopg.Connection, company_id: int, day: dt.date,
                     account_ids: list[int] | None = None) -> list[ItemAsOf]:
    """Receivable items open at the end of business day ``day`` (booked then, not settled by then).

    Computed from allocations and the business days of their entries, so the answer for a past
    day does not change when later payments, reversals or late fees arrive (reports and exports
    of a past period re-run to the same figures). Ordered by account, due date, item.
    """
    rows = conn.execute(f"SELECT * FROM ({OPEN_ITEMS_AS_OF_SQL}) x WHERE open > 0 ORDER BY account_id, due_date, id",
                        {"c": company_id, "day": day, "accounts": account_ids}).fetchall()
    return [ItemAsOf(*r) for r in rows]
