"""The counter (营业厅坐收): cashiers take cash or card against numbered receipts.

* Receipt numbers come from ranges issued to each cashier (票据号码登记): ``issue_range``; ranges
  of one prefix never overlap; a cashier uses their ranges in order, each number once.
* ``pay`` records a payment with its evidence (cashier, shift, tender, receipt) and the receipt;
  replaying the terminal's transaction id returns the same payment and receipt, using no number.
* A spoiled receipt (printer jam, wrong form) is voided and kept (``spoil_receipt``); a receipt is
  reprinted on a new number with the old one voided (``reprint``); ``void`` voids a receipt and
  reverses its payment (作废), booked into the cashier's next open day.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import psycopg

from meterline.ledger.corrections import reverse_payment
from meterline.ledger.errors import InvalidPayment, NothingToDo, ReceiptRangeError
from meterline.ledger.journal import company_info, open_day
from meterline.ledger.payments import PaymentIn, PaymentRecord, get_payment, record_payment
from meterline.ledger.policy import AllocationPolicy

CHANNEL = "counter"
TENDERS = ("cash", "card", "cheque", "transfer")


@dataclass(frozen=True, slots=True)
class ReceiptRange:
    id: int
    cashier: str
    prefix: str
    first_no: int
    last_no: int
    next_no: int

    @property
    def left(self) -> int:
        return self.last_no - self.next_no + 1


def issue_range(conn: psycopg.Connection, company_id: int, cashier: str, first_no: int, last_no: int, *,
                prefix: str = "", issued_by: str | None = None) -> ReceiptRange:
    """Give ``cashier`` the receipt numbers ``first_no..last_no`` (inclusive) of ``prefix``."""
    if not cashier:
        raise ReceiptRangeError(cashier, "a cashier is required")
    if first_no < 0 or last_no < first_no:
        raise ReceiptRangeError(cashier, f"range {first_no}..{last_no} is empty or negative")
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('receipt_range'), hashtext(%s))", [f"{company_id}:{prefix}"])
    clash = conn.execute(
        """SELECT cashier, first_no, last_no FROM receipt_range
            WHERE company_id = %s AND prefix = %s AND first_no <= %s AND last_no >= %s LIMIT 1""",
        [company_id, prefix, last_no, first_no]).fetchone()
    if clash:
        raise ReceiptRangeError(cashier, f"{prefix}{first_no}..{last_no} overlaps {prefix}{clash[1]}..{clash[2]} of {clash[0]}")
    row = conn.execute(
        """INSERT INTO receipt_range (company_id, cashier, prefix, first_no, last_no, next_no, issued_by)
           VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id""",
        [company_id, cashier, prefix, first_no, last_no, first_no, issued_by]).fetchone()
    return ReceiptRange(row[0], cashier, prefix, first_no, last_no, first_no)


def ranges(conn: psycopg.Connection, company_id: int, cashier: str) -> list[ReceiptRange]:
    rows = conn.execute(
        """SELECT id, cashier, prefix, first_no, last_no, next_no FROM receipt_range
            WHERE company_id = %s AND cashier = %s ORDER BY id""", [company_id, cashier]).fetchall()
    return [ReceiptRange(*r) for r in rows]


def _take_number(conn: psycopg.Connection, company_id: int, cashier: str) -> tuple[str, int, int]:
    row = conn.execute(
        """UPDATE receipt_range SET next_no = next_no + 1
            WHERE id = (SELECT id FROM receipt_range WHERE company_id = %s AND cashier = %s AND next_no <= last_no
                         ORDER BY id LIMIT 1 FOR UPDATE)
        RETURNING prefix, next_no - 1, id""", [company_id, cashier]).fetchone()
    if row is None:
        raise ReceiptRangeError(cashier, "no receipt numbers left: issue a new range")
    return row[0], row[1], row[2]


def _issue(conn: psycopg.Connection, company_id: int, cashier: str, payment_id: int | None, day: dt.date) -> str:
    prefix, number, range_id = _take_number(conn, company_id, cashier)
    conn.execute(
        """INSERT INTO receipt (company_id, prefix, number, range_id, cashier, payment_id, business_day)
           VALUES (%s, %s, %s, %s, %s, %s, %s)""", [company_id, prefix, number, range_id, cashier, payment_id, day])
    return f"{prefix}{number}"


@dataclass(frozen=True, slots=True)
class CounterReceipt:
    payment: PaymentRecord
    receipt: str
    replay: bool


def receipt_of(conn: psycopg.Connection, company_id: int, payment_id: int) -> str | None:
    row = conn.execute(
        """SELECT r.prefix, r.number FROM receipt r
            WHERE r.company_id = %s AND r.payment_id = %s
              AND NOT EXISTS (SELECT 1 FROM receipt_void v WHERE v.company_id = r.company_id AND v.prefix = r.prefix
                                                             AND v.number = r.number)
            ORDER BY r.created_at DESC, r.number DESC LIMIT 1""", [company_id, payment_id]).fetchone()
    return f"{row[0]}{row[1]}" if row else None


def pay(conn: psycopg.Connection, company_id: int, *, cashier: str, shift: str, tender: str, transaction_id: str,
        account_id: int, amount: int, received_at: dt.datetime, policy: AllocationPolicy | None = None) -> CounterReceipt:
    """Take a payment at the counter and issue its receipt (idempotent by ``transaction_id``)."""
    if tender not in TENDERS:
        raise InvalidPayment(f"tender must be one of {', '.join(TENDERS)}, got {tender!r}", transaction_id)
    stored = get_payment(conn, company_id, CHANNEL, transaction_id)
    if stored is None:
        company = company_info(conn, company_id)
        day = open_day(conn, company_id, company.day_of(received_at), CHANNEL, cashier)
        prefix, number, range_id = _take_number(conn, company_id, cashier)
        receipt = f"{prefix}{number}"
        evidence = {"cashier": cashier, "shift": shift, "tender": tender, "receipt": receipt}
        record = record_payment(conn, company_id, CHANNEL,
                                PaymentIn(transaction_id, account_id, amount, received_at, cashier=cashier,
                                          tender=tender, evidence=evidence), policy=policy, created_by=cashier)
        conn.execute(
            """INSERT INTO receipt (company_id, prefix, number, range_id, cashier, payment_id, business_day)
               VALUES (%s, %s, %s, %s, %s, %s, %s)""", [company_id, prefix, number, range_id, cashier, record.id, day])
        return CounterReceipt(record, receipt, False)
    # a replay: same content or a conflict, never a second receipt
    record = record_payment(conn, company_id, CHANNEL,
                            PaymentIn(transaction_id, account_id, amount, received_at, cashier=cashier, tender=tender),
                            policy=policy)
    return CounterReceipt(record, receipt_of(conn, company_id, record.id) or "", True)


def _void_row(conn: psycopg.Connection, company_id: int, receipt: str, cashier: str, reason: str, voided_by: str | None,
              day: dt.date) -> tuple[str, int, int | None]:
    row = conn.execute(
        """SELECT r.prefix, r.number, r.payment_id, r.cashier FROM receipt r
            WHERE r.company_id = %s AND r.prefix || r.number::text = %s""", [company_id, receipt]).fetchone()
    if row is None:
        raise NothingToDo(f"receipt {receipt} was never issued")
    prefix, number, payment_id, owner = row
    if owner != cashier:
        raise NothingToDo(f"receipt {receipt} belongs to cashier {owner}, not {cashier}")
    if conn.execute("SELECT 1 FROM receipt_void WHERE company_id = %s AND prefix = %s AND number = %s",
                    [company_id, prefix, number]).fetchone():
        raise NothingToDo(f"receipt {receipt} is already void")
    conn.execute(
        """INSERT INTO receipt_void (company_id, prefix, number, reason, voided_by, business_day)
           VALUES (%s, %s, %s, %s, %s, %s)""", [company_id, prefix, number, reason, voided_by, day])
    return prefix, number, payment_id


def spoil_receipt(conn: psycopg.Connection, company_id: int, cashier: str, *, reason: str,
                  day: dt.date | None = None) -> str:
    """Void the cashier's next unused receipt form (kept, with the reason)."""
    company = company_info(conn, company_id)
    day = open_day(conn, company_id, day or company.today(), CHANNEL, cashier)
    receipt = _issue(conn, company_id, cashier, None, day)
    _void_row(conn, company_id, receipt, cashier, reason, cashier, day)
    return receipt


def reprint(conn: psycopg.Connection, company_id: int, cashier: str, receipt: str, *, reason: str,
            day: dt.date | None = None) -> str:
    """Void ``receipt`` and issue its payment on the next number."""
    company = company_info(conn, company_id)
    day = open_day(conn, company_id, day or company.today(), CHANNEL, cashier)
    _prefix, _number, payment_id = _void_row(conn, company_id, receipt, cashier, reason, cashier, day)
    if payment_id is None:
        raise NothingToDo(f"receipt {receipt} carried no payment")
    return _issue(conn, company_id, cashier, payment_id, day)


def void(conn: psycopg.Connection, company_id: int, cashier: str, receipt: str, *, reason: str,
         approved_by: str | None = None, day: dt.date | None = None) -> int | None:
    """Void ``receipt`` and reverse its payment (作废); returns the reversal entry id."""
    company = company_info(conn, company_id)
    day = open_day(conn, company_id, day or company.today(), CHANNEL, cashier)
    _prefix, _number, payment_id = _void_row(conn, company_id, receipt, cashier, reason, approved_by or cashier, day)
    if payment_id is None:
        return None
    return reverse_payment(conn, company_id, payment_id, reason=f"receipt {receipt} void: {reason}",
                           created_by=approved_by or cashier, day=day).entry_id
