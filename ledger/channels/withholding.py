"""Bank withholding (托收 / 代扣): the out-file of what to withhold, the return file of what was.

``write_out`` takes every account with an active agreement (``bank_mandate``) at the bank that
owes something and is not waiting in an earlier batch, records the batch and its items, and
writes the out-file in the bank's format (:mod:`.bankfile`). ``read_return`` checks a return
file as a whole first — its layout, its header's batch, every line against the batch item it
answers, and the trailer's counts and totals — and rejects it (recorded, nothing posted) if
anything is wrong; otherwise it posts the successes as payments of channel ``withholding``
(external id ``<bank>:<batch no>:<seq>``, so importing a file twice changes nothing) and
records the failures with the bank's reason code and its meaning.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from meterline.ledger import chart
from meterline.ledger.channels.bankfile import BankFormat, parse, render
from meterline.ledger.journal import company_info
from meterline.ledger.payments import PaymentIn, record_payments
from meterline.ledger.policy import AllocationPolicy

log = logging.getLogger(__name__)

CHANNEL = "withholding"


@dataclass(frozen=True, slots=True)
class OutBatch:
    batch_id: int | None
    batch_no: str
    path: Path | None
    items: int
    total: int


def add_mandate(conn: psycopg.Connection, company_id: int, account_id: int, bank: str, bank_account_no: str,
                holder_name: str) -> int:
    return conn.execute(
        """INSERT INTO bank_mandate (company_id, account_id, bank, bank_account_no, holder_name)
           VALUES (%s, %s, %s, %s, %s)
           ON CONFLICT (company_id, account_id, bank) DO UPDATE
              SET bank_account_no = EXCLUDED.bank_account_no, holder_name = EXCLUDED.holder_name, active = true
           RETURNING id""", [company_id, account_id, bank, bank_account_no, holder_name]).fetchone()[0]


_DUE = """
SELECT m.account_id, a.code, m.bank_account_no, m.holder_name, sum(i.amount - i.settled)::bigint AS due
  FROM bank_mandate m
  JOIN account a ON a.id = m.account_id
  JOIN receivable_item i ON i.account_id = m.account_id AND i.status = 'open' AND i.settled < i.amount
 WHERE m.company_id = %(company)s AND m.bank = %(bank)s AND m.active
   AND NOT EXISTS (SELECT 1 FROM withholding_item w JOIN withholding_batch b ON b.id = w.batch_id
                    WHERE w.account_id = m.account_id AND b.bank = m.bank
                      AND NOT EXISTS (SELECT 1 FROM withholding_result r WHERE r.batch_id = w.batch_id AND r.seq = w.seq))
 GROUP BY m.account_id, a.code, m.bank_account_no, m.holder_name
HAVING sum(i.amount - i.settled) > 0
 ORDER BY a.code
"""


def write_out(conn: psycopg.Connection, company_id: int, fmt: BankFormat, *, day: dt.date | None = None,
              out_dir: Path | None = None, created_by: str | None = None) -> OutBatch:
    """Create the next batch for ``fmt.bank`` and write its out-file into ``out_dir``."""
    company = company_info(conn, company_id)
    day = day or company.today()
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('withholding'), hashtext(%s))", [f"{company_id}:{fmt.bank}"])
    rows = conn.execute(_DUE, {"company": company_id, "bank": fmt.bank}).fetchall()
    seq_of_day = conn.execute(
        "SELECT count(*) + 1 FROM withholding_batch WHERE company_id = %s AND bank = %s AND business_day = %s",
        [company_id, fmt.bank, day]).fetchone()[0]
    batch_no = f"{day:%Y%m%d}{seq_of_day:04d}"
    if not rows:
        return OutBatch(None, batch_no, None, 0, 0)
    total = sum(r[4] for r in rows)
    out_dir = Path(out_dir or ".")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{fmt.bank}_{company.code}_{batch_no}_out.txt"
    batch_id = conn.execute(
        """INSERT INTO withholding_batch (company_id, bank, batch_no, business_day, file_name, items, total, created_by)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id""",
        [company_id, fmt.bank, batch_no, day, path.name, len(rows), total, created_by]).fetchone()[0]
    with conn.cursor() as cur:
        # INSERT, not COPY: row-level security refuses COPY FROM for the application role
        cur.executemany(
            """INSERT INTO withholding_item (batch_id, seq, company_id, account_id, account_code, bank_account_no,
                                             holder_name, amount) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)""",
            [(batch_id, seq, company_id, account_id, code, bank_no, holder, due)
             for seq, (account_id, code, bank_no, holder, due) in enumerate(rows, start=1)])
    details = [{"seq": seq, "account_code": code, "bank_account_no": bank_no, "holder_name": holder, "amount": due}
               for seq, (_a, code, bank_no, holder, due) in enumerate(rows, start=1)]
    header = {"batch_no": batch_no, "date": day, "count": len(rows), "total": total}
    data = render(fmt, fmt.out, header, details)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    log.info("withholding %s batch %s: %d account(s), %d minor units -> %s", fmt.bank, batch_no, len(rows), total, path)
    return OutBatch(batch_id, batch_no, path, len(rows), total)


@dataclass
class ReturnResult:
    file_id: int | None
    status: str  # accepted, rejected, duplicate
    batch_no: str | None = None
    lines: int = 0
    paid: int = 0
    paid_amount: int = 0
    failed: int = 0
    replayed: int = 0
    problems: list[str] = field(default_factory=list)
    failures: list[tuple[int, str, str, str]] = field(default_factory=list)  # seq, account, code, reason


def read_return(conn: psycopg.Connection, company_id: int, fmt: BankFormat, data: bytes, *, file_name: str,
                created_by: str | None = None, policy: AllocationPolicy | None = None,
                received_at: dt.datetime | None = None) -> ReturnResult:
    """Import a return file (inside the caller's transaction; a rejection is recorded, not raised)."""
    sha = hashlib.sha256(data).hexdigest()
    earlier = conn.execute(
        """SELECT id FROM bank_return_file WHERE company_id = %s AND bank = %s AND sha256 = %s AND status = 'accepted'""",
        [company_id, fmt.bank, sha]).fetchone()
    if earlier:
        return ReturnResult(earlier[0], "duplicate", problems=[f"this file was imported before (file {earlier[0]})"])
    parsed = parse(fmt, fmt.returns, data)
    problems = list(parsed.problems)
    control = {**parsed.header, **parsed.trailer}
    batch_no = control.get("batch_no")
    batch = None
    if batch_no is None:
        problems.append("the file names no batch (batch_no in its header or trailer)")
    else:
        batch = conn.execute(
            "SELECT id, items FROM withholding_batch WHERE company_id = %s AND bank = %s AND batch_no = %s",
            [company_id, fmt.bank, batch_no]).fetchone()
        if batch is None:
            problems.append(f"batch {batch_no} was never sent to {fmt.bank}")
    items: dict[int, tuple] = {}
    if batch is not None:
        items = {r[0]: r[1:] for r in conn.execute(
            "SELECT seq, account_id, account_code, amount FROM withholding_item WHERE batch_id = %s", [batch[0]]).fetchall()}
        seen = set()
        for d in parsed.details:
            seq, line = d.get("seq"), d["_line"]
            if seq not in items:
                problems.append(f"line {line}: seq {seq} is not in batch {batch_no}")
                continue
            if seq in seen:
                problems.append(f"line {line}: seq {seq} appears twice")
            seen.add(seq)
            _acct, code, asked = items[seq]
            if "account_code" in d and d["account_code"] != code:
                problems.append(f"line {line}: seq {seq} is account {code}, the file says {d['account_code']}")
            amount = d.get("amount", 0)
            if d.get("status") in fmt.returns.success and not 0 < amount <= asked:
                problems.append(f"line {line}: seq {seq} withheld {fmt.amount_text(amount)}, asked {fmt.amount_text(asked)}")
    if problems:
        file_id = conn.execute(
            """INSERT INTO bank_return_file (company_id, bank, file_name, sha256, batch_id, status, reason, lines, raw)
               VALUES (%s, %s, %s, %s, %s, 'rejected', %s, %s, %s) RETURNING id""",
            [company_id, fmt.bank, file_name, sha, batch[0] if batch else None, "; ".join(problems)[:4000],
             len(parsed.details), data]).fetchone()[0]
        log.warning("return file %s rejected: %s", file_name, "; ".join(problems[:5]))
        return ReturnResult(file_id, "rejected", batch_no, len(parsed.details), problems=problems)

    assert batch is not None
    received_at = received_at or dt.datetime.now(dt.timezone.utc)
    paid = [d for d in parsed.details if d.get("status") in fmt.returns.success]
    failed = [d for d in parsed.details if d.get("status") not in fmt.returns.success]
    file_id = conn.execute(
        """INSERT INTO bank_return_file (company_id, bank, file_name, sha256, batch_id, status, lines, paid, failed,
                                         paid_amount, raw)
           VALUES (%s, %s, %s, %s, %s, 'accepted', %s, %s, %s, %s, %s) RETURNING id""",
        [company_id, fmt.bank, file_name, sha, batch[0], len(parsed.details), len(paid), len(failed),
         sum(d["amount"] for d in paid), data]).fetchone()[0]
    result = ReturnResult(file_id, "accepted", batch_no, len(parsed.details))
    payments = [
        PaymentIn(f"{fmt.bank}:{batch_no}:{d['seq']}", items[d["seq"]][0], d["amount"], received_at,
                  cash_account=chart.cash(CHANNEL, fmt.bank), cashier=fmt.bank, tender="withholding",
                  evidence={"bank": fmt.bank, "batch_no": batch_no, "seq": d["seq"], "bank_ref": d.get("bank_ref"),
                            "file": file_name})
        for d in paid]
    if payments:
        batch_result = record_payments(conn, company_id, CHANNEL, payments, policy=policy, created_by=created_by)
        result.replayed = batch_result.replayed
    pay_ids = dict(conn.execute(
        "SELECT external_id, id FROM payment WHERE company_id = %s AND channel = %s AND external_id = ANY(%s)",
        [company_id, CHANNEL, [p.external_id for p in payments]]).fetchall()) if payments else {}
    rows = []
    for d in paid:
        pid = pay_ids[f"{fmt.bank}:{batch_no}:{d['seq']}"]
        rows.append((batch[0], d["seq"], company_id, file_id, "paid", d["amount"], None, None, d.get("bank_ref"), pid))
        result.paid += 1
        result.paid_amount += d["amount"]
    for d in failed:
        code = d.get("reason_code") or d.get("status")
        meaning = fmt.returns.reasons.get(code or "", "") or d.get("reason_text") or "unknown reason"
        rows.append((batch[0], d["seq"], company_id, file_id, "failed", d.get("amount", 0), code, meaning,
                     d.get("bank_ref"), None))
        result.failed += 1
        result.failures.append((d["seq"], items[d["seq"]][1], code or "", meaning))
    with conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO withholding_result (batch_id, seq, company_id, file_id, status, amount, reason_code, reason,
                                               bank_ref, payment_id)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (batch_id, seq) DO NOTHING""", rows)
    log.info("return file %s: %d paid (%d), %d failed", file_name, result.paid, result.paid_amount, result.failed)
    return result


def read_return_file(conn: psycopg.Connection, company_id: int, fmt: BankFormat, path: Path, **kw) -> ReturnResult:
    return read_return(conn, company_id, fmt, Path(path).read_bytes(), file_name=Path(path).name, **kw)
