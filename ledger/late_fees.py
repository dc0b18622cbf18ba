"""Late fees (滞纳金), computed in batch once per company and day.

For every open bill whose due date plus grace days is before the run day, a run charges the
days since the bill's last charge (or since due date + grace) through the run day:

    accrual = open principal × daily rate × days           (exact, in millionths of a fen)
    owed    = round(all accruals of the bill so far)       (rounded once, per policy)
    fee     = min(owed, cap × bill principal) − late fees already charged on the bill

where the open principal is the bill item's open amount on the run day. Because the rounding is
applied to the bill's running total, daily charges never drift from the exact sum (3‰ of 1.00
yuan for ten days is 3 fen, not ten roundings). A fee below ``min_charge`` is not posted and
its days stay uncharged, so the next run charges them. Each charge is a late-fee item of the bill
(due with the bill, so allocation keeps it next to its principal) with ``accrued_through`` set
to the run day; one entry per account and run: Dr ``AR:<account>``, Cr ``INC:late_fee``.

A run is idempotent per company and day (``late_fee_run``); running an earlier day after a later
one charges nothing twice (the days are already accrued). Runs are meant to be daily: a day
skipped is charged by the next run at that run's open principal.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import psycopg
from psycopg.types.json import Jsonb

from meterline.ledger.journal import company_info, open_day
from meterline.ledger.policy import LateFeePolicy, LedgerPolicy
from meterline.ledger.prepaid import apply_prepaid

log = logging.getLogger(__name__)

_RUN = """
WITH bills AS MATERIALIZED (
    SELECT i.id AS item_id, i.bill_id, i.account_id, i.amount AS principal, i.amount - i.settled AS open, i.due_date,
           coalesce(lf.through, i.due_date + %(grace)s) AS through, coalesce(lf.charged, 0) AS charged,
           coalesce(lf.accrued, 0) AS accrued
      FROM receivable_item i
      LEFT JOIN LATERAL (SELECT max(accrued_through) AS through, sum(amount)::bigint AS charged, sum(accrual)::bigint AS accrued
                           FROM receivable_item f WHERE f.bill_id = i.bill_id AND f.kind = 'late_fee') lf ON true
     WHERE i.company_id = %(company)s AND i.kind = 'bill' AND i.status = 'open' AND i.settled < i.amount
       AND i.due_date + %(grace)s < %(run_day)s
),
fees AS MATERIALIZED (
    SELECT b.*, b.open * %(ppm)s * (%(run_day)s - b.through) AS accrual,
           CASE WHEN %(half_up)s THEN (b.accrued + b.open * %(ppm)s * (%(run_day)s - b.through) + 500000) / 1000000
                ELSE (b.accrued + b.open * %(ppm)s * (%(run_day)s - b.through)) / 1000000 END AS due_total
      FROM bills b WHERE b.through < %(run_day)s
),
charged AS MATERIALIZED (
    SELECT f.*, CASE WHEN %(cap_ppm)s::bigint IS NULL THEN f.due_total
                     ELSE least(f.due_total, f.principal * %(cap_ppm)s::bigint / 1000000) END - f.charged AS fee
      FROM fees f
),
per_account AS MATERIALIZED (
    SELECT account_id, sum(fee)::bigint AS amount, nextval('journal_entry_id_seq') AS entry_id
      FROM charged WHERE fee >= %(min_charge)s GROUP BY account_id
),
je AS (
    INSERT INTO journal_entry (id, company_id, booked_on, kind, ref_type, ref_id, idempotency_key, created_by, memo)
    SELECT entry_id, %(company)s, %(book_day)s, 'late_fee', 'late_fee_run', %(run_id)s,
           'late_fee:' || %(run_day)s || ':' || account_id, %(by)s, 'late fee through ' || %(run_day)s
      FROM per_account
),
po AS (
    INSERT INTO posting (entry_id, line_no, company_id, account_code, amount)
    SELECT entry_id, 1, %(company)s, 'AR:' || account_id, amount FROM per_account
    UNION ALL
    SELECT entry_id, 2, %(company)s, 'INC:late_fee', -amount FROM per_account
),
ri AS (
    INSERT INTO receivable_item (company_id, account_id, kind, bill_id, entry_id, amount, due_date, accrued_through,
                                 accrual)
    SELECT %(company)s, c.account_id, 'late_fee', c.bill_id, p.entry_id, c.fee, c.due_date, %(run_day)s, c.accrual
      FROM charged c JOIN per_account p USING (account_id) WHERE c.fee >= %(min_charge)s
)
SELECT count(*) FILTER (WHERE fee >= %(min_charge)s), coalesce(sum(fee) FILTER (WHERE fee >= %(min_charge)s), 0)::bigint,
       coalesce(array_agg(DISTINCT account_id) FILTER (WHERE fee >= %(min_charge)s), '{}')
  FROM charged
"""


@dataclass(frozen=True, slots=True)
class LateFeeRun:
    run_id: int
    run_date: dt.date
    bills: int
    amount: int
    created: bool  # False: this day had been run before, nothing was charged now


def run_late_fees(conn: psycopg.Connection, company_id: int, run_day: dt.date, *,
                  policy: LedgerPolicy | None = None, created_by: str | None = None) -> LateFeeRun:
    """Charge the late fees of ``run_day`` (in the caller's transaction)."""
    policy = policy or LedgerPolicy()
    fee_policy: LateFeePolicy = policy.late_fee
    company_info(conn, company_id)
    done = conn.execute("SELECT id, bills, amount FROM late_fee_run WHERE company_id = %s AND run_date = %s",
                        [company_id, run_day]).fetchone()
    if done:
        return LateFeeRun(done[0], run_day, done[1], done[2], False)
    run_id = conn.execute("SELECT nextval('late_fee_run_id_seq')").fetchone()[0]
    bills = amount = 0
    accounts: list[int] = []
    book_day = open_day(conn, company_id, run_day)
    if fee_policy.enabled and fee_policy.rate_ppm > 0:
        params = {
            "company": company_id, "run_day": run_day, "grace": fee_policy.grace_days, "ppm": fee_policy.rate_ppm,
            "half_up": fee_policy.rounding == "half_up", "cap_ppm": fee_policy.cap_ppm,
            "min_charge": fee_policy.min_charge, "run_id": run_id, "by": created_by, "book_day": book_day,
        }
        conn.execute("SELECT set_config('work_mem', '256MB', true)")
        bills, amount, accounts = conn.execute(_RUN, params, prepare=False).fetchone()
    # a concurrent run of the same day fails here (or on the entries' idempotency keys): never twice
    conn.execute(
        """INSERT INTO late_fee_run (id, company_id, run_date, bills, amount, policy) VALUES (%s, %s, %s, %s, %s, %s)""",
        [run_id, company_id, run_day, bills, amount, Jsonb(policy.as_json()["late_fee"])])
    if accounts:
        apply_prepaid(conn, company_id, accounts, day=book_day, policy=policy.allocation, created_by=created_by)
    log.info("late fees %s: %d bill(s), %d minor units", run_day, bills, amount)
    return LateFeeRun(run_id, run_day, bills, amount, True)
