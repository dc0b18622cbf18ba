"""Prepaid balances: credit applied to bills, prepaid-meter top-ups and consumption.

``PREPAID:<account id>`` is a liability: its balance is negative (a credit) when the utility
holds the customer's money. Credit arises from overpayments, from IC-card / token top-ups of
prepaid meters, and from reversed bills that had been paid.

* :func:`apply_prepaid` uses an account's credit on its open items (oldest first, per policy):
  one ``prepaid_apply`` entry per account (Dr PREPAID, Cr AR) with its allocations. It runs after
  bills are posted, after charges and late fees, and after reversals that release money.
* :func:`top_up` records a card or token purchase as a payment of its channel (an account in
  arrears has them settled first, like any payment; the rest is credit).
* :func:`consume` draws the credit down by what a prepaid meter used (Dr PREPAID, Cr REV);
  what the credit does not cover becomes a receivable item.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Sequence

import psycopg

from meterline.ledger import chart
from meterline.ledger.allocation import LOCK_ACCOUNTS_SQL, LOCK_ITEMS_SQL, allocation_sql
from meterline.ledger.errors import InvalidPayment, LedgerError
from meterline.ledger.journal import Posting, company_info, open_day, post_entry
from meterline.ledger.payments import PaymentIn, PaymentRecord, record_payment
from meterline.ledger.policy import AllocationPolicy

PREPAID_CHANNELS = ("ic_card", "token")

# The codes are computed apart (in Python, passed as %(codes)s beside %(accounts)s): under
# row-level security only leakproof conditions can be index conditions, and 'PREPAID:' || id is
# not (textcat, int8out), while comparing to ready texts is; one index scan per table over all
# the codes (= ANY) rather than a probe per account (a million accounts billed: most have none).
_CREDIT = """
SELECT c.account_id, -sum(x.amount)::bigint AS amount
  FROM unnest(%(accounts)s::bigint[], %(codes)s::text[]) AS c(account_id, code)
  JOIN (SELECT account_code, balance AS amount FROM ledger_balance
         WHERE company_id = %(company)s AND account_code = ANY(%(codes)s::text[])
        UNION ALL
        SELECT account_code, amount FROM ledger_balance_delta
         WHERE company_id = %(company)s AND account_code = ANY(%(codes)s::text[])) x ON x.account_code = c.code
 GROUP BY c.account_id HAVING sum(x.amount) < 0
"""

_HAS_OPEN = """
SELECT DISTINCT account_id FROM receivable_item
 WHERE company_id = %(company)s AND account_id = ANY(%(accounts)s) AND status = 'open' AND settled < amount
"""


def prepaid_credit(conn: psycopg.Connection, company_id: int, account_ids: Sequence[int]) -> dict[int, int]:
    """Credit (> 0) held for each account that has any."""
    rows = conn.execute(_CREDIT, _with_codes({"company": company_id, "accounts": list(account_ids)})).fetchall()
    return {a: c for a, c in rows}


def _with_codes(params: dict[str, Any]) -> dict[str, Any]:
    params["codes"] = [chart.prepaid(a) for a in params["accounts"]]
    return params


def _apply_sql(policy: AllocationPolicy) -> str:
    return f"""
WITH credit AS MATERIALIZED ({_CREDIT}),
sources AS MATERIALIZED (
    SELECT row_number() OVER () AS src_no, account_id, amount,
           nextval('journal_entry_id_seq') AS entry_id, NULL::bigint AS payment_id
      FROM credit
),
{allocation_sql(policy, "sources")},
per AS MATERIALIZED (
    SELECT s.entry_id, s.account_id, sum(a.amount)::bigint AS allocated
      FROM sources s JOIN alloc a USING (entry_id) GROUP BY s.entry_id, s.account_id
),
je AS (
    INSERT INTO journal_entry (id, company_id, booked_on, kind, ref_type, ref_id, created_by, memo)
    SELECT entry_id, %(company)s, %(day)s, 'prepaid_apply', 'account', account_id, %(by)s, 'prepaid credit applied'
      FROM per
),
po AS (
    INSERT INTO posting (entry_id, line_no, company_id, account_code, amount)
    SELECT entry_id, 1, %(company)s, 'PREPAID:' || account_id, allocated FROM per
    UNION ALL
    SELECT entry_id, 2, %(company)s, 'AR:' || account_id, -allocated FROM per
),
al AS (
    INSERT INTO allocation (company_id, entry_id, item_id, payment_id, source, amount)
    SELECT %(company)s, entry_id, item_id, NULL, 'prepaid', amount FROM alloc
),
up AS (
    UPDATE receivable_item i SET settled = i.settled + a.amount
      FROM (SELECT item_id, sum(amount) AS amount FROM alloc GROUP BY item_id) a
     WHERE i.id = a.item_id
)
SELECT count(*), coalesce(sum(allocated), 0)::bigint FROM per
"""


@dataclass(frozen=True, slots=True)
class ApplyResult:
    accounts: int
    amount: int


def apply_prepaid(
    conn: psycopg.Connection,
    company_id: int,
    account_ids: Sequence[int] | None = None,
    *,
    day: dt.date | None = None,
    policy: AllocationPolicy | None = None,
    created_by: str | None = None,
) -> ApplyResult:
    """Use the prepaid credit of these accounts (all of the company's: None) on their open items."""
    policy = policy or AllocationPolicy()
    company = company_info(conn, company_id)
    if account_ids is None:
        account_ids = [r[0] for r in conn.execute(
            "SELECT DISTINCT account_id FROM receivable_item WHERE company_id = %s AND status = 'open' AND settled < amount",
            [company_id]).fetchall()]
    params: dict[str, Any] = {"company": company_id, "accounts": sorted(set(account_ids))}
    if not params["accounts"]:
        return ApplyResult(0, 0)
    # candidates: credit (few accounts have any) and something open (no lock yet); then lock and
    # recompute under the lock
    credit = prepaid_credit(conn, company_id, params["accounts"])
    if not credit:
        return ApplyResult(0, 0)
    params["accounts"] = sorted(credit)
    params["accounts"] = [r[0] for r in conn.execute(_HAS_OPEN + " ORDER BY 1", params).fetchall()]
    if not params["accounts"]:
        return ApplyResult(0, 0)
    _with_codes(params)
    conn.execute(LOCK_ACCOUNTS_SQL, params)
    conn.execute(LOCK_ITEMS_SQL, params)
    params["day"] = open_day(conn, company_id, day or company.today())
    params["by"] = created_by
    n, amount = conn.execute(_apply_sql(policy), params, prepare=False).fetchone()
    return ApplyResult(n, amount)


def top_up(
    conn: psycopg.Connection,
    company_id: int,
    *,
    channel: str,
    external_id: str,
    account_id: int,
    amount: int,
    received_at: dt.datetime,
    card_no: str | None = None,
    meter_serial: str | None = None,
    token: str | None = None,
    purchase_no: int | None = None,
    vendor: str | None = None,
    policy: AllocationPolicy | None = None,
    created_by: str | None = None,
) -> PaymentRecord:
    """A prepaid-meter purchase (IC card written at a counter or machine, or a token issued)."""
    if channel not in PREPAID_CHANNELS:
        raise InvalidPayment(f"prepaid channel must be one of {', '.join(PREPAID_CHANNELS)}, got {channel!r}")
    evidence: dict[str, Any] = {k: v for k, v in (("card_no", card_no), ("meter_serial", meter_serial),
                                                   ("token", token), ("purchase_no", purchase_no),
                                                   ("vendor", vendor)) if v is not None}
    if channel == "token" and not token:
        raise InvalidPayment("a token top-up needs the token issued", external_id)
    if channel == "ic_card" and not card_no:
        raise InvalidPayment("an IC-card top-up needs the card number", external_id)
    payment = PaymentIn(external_id, account_id, amount, received_at, cashier=vendor, tender="prepaid",
                        evidence=evidence)
    return record_payment(conn, company_id, channel, payment, policy=policy, created_by=created_by)


@dataclass(frozen=True, slots=True)
class Consumption:
    entry_id: int
    drawn: int  # from the credit
    receivable: int  # not covered: now owed
    created: bool


def consume(
    conn: psycopg.Connection,
    company_id: int,
    *,
    account_id: int,
    key: str,
    amount: int,
    component: str = "water",
    day: dt.date | None = None,
    due_date: dt.date | None = None,
    created_by: str | None = None,
) -> Consumption:
    """Draw ``amount`` of consumption (priced by the meter / vending system) from the credit.

    Idempotent by ``key`` (e.g. meter serial + reading period).
    """
    if amount <= 0:
        raise LedgerError(f"consumption amount must be positive, got {amount}")
    company = company_info(conn, company_id)
    ikey = f"consume:{key}"
    done = conn.execute("SELECT id FROM journal_entry WHERE company_id = %s AND idempotency_key = %s",
                        [company_id, ikey]).fetchone()
    if done:
        return Consumption(done[0], 0, 0, False)
    conn.execute(LOCK_ACCOUNTS_SQL, {"company": company_id, "accounts": [account_id]})
    credit = prepaid_credit(conn, company_id, [account_id]).get(account_id, 0)
    drawn = min(credit, amount)
    owed = amount - drawn
    day = day or company.today()
    postings = [Posting(chart.prepaid(account_id), drawn), Posting(chart.ar(account_id), owed),
                Posting(chart.rev(component), -amount)]
    entry = post_entry(conn, company_id, day=day, kind="consumption", postings=postings, ref_type="account",
                       ref_id=account_id, memo=f"prepaid meter consumption {key}"[:200], idempotency_key=ikey,
                       created_by=created_by)
    if owed:
        conn.execute(
            """INSERT INTO receivable_item (company_id, account_id, kind, entry_id, amount, due_date)
               VALUES (%s, %s, 'charge', %s, %s, %s)""",
            [company_id, account_id, entry.id, owed, due_date or entry.booked_on])
    return Consumption(entry.id, drawn, owed, True)
