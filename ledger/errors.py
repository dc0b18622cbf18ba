"""Errors of the ledger: each carries the data a caller needs to react (and a readable message)."""

from __future__ import annotations

import datetime as dt

from meterline.errors import MeterlineError


class LedgerError(MeterlineError):
    """Something the ledger refuses to do."""


class UnbalancedEntry(LedgerError):
    def __init__(self, kind: str, total: int, postings: int) -> None:
        self.kind = kind
        self.total = total
        self.postings = postings
        super().__init__(f"{kind} entry does not balance: {postings} posting(s) summing to {total}")


class UnknownAccountCode(LedgerError):
    def __init__(self, code: str) -> None:
        self.code = code
        super().__init__(f"account code {code!r} is not in the chart of accounts")


class DayClosed(LedgerError):
    """A business day (for a channel and cashier, or the whole company) is closed."""

    def __init__(self, day: dt.date, channel: str | None = None, cashier: str | None = None, detail: str = "") -> None:
        self.day = day
        self.channel = channel
        self.cashier = cashier
        scope = f" for {channel}" + (f"/{cashier}" if cashier else "") if channel else ""
        super().__init__(f"business day {day}{scope} is closed{': ' + detail if detail else ''}")


class PaymentConflict(LedgerError):
    """The (channel, external id) was already used for a payment with different content."""

    def __init__(self, channel: str, external_id: str, field: str, stored: object, given: object) -> None:
        self.channel = channel
        self.external_id = external_id
        self.field = field
        self.stored = stored
        self.given = given
        super().__init__(
            f"payment {channel}:{external_id} already recorded with {field}={stored!r}, now {given!r}: refused")


class InvalidPayment(LedgerError):
    def __init__(self, message: str, external_id: str | None = None) -> None:
        self.external_id = external_id
        super().__init__(message)


class ApprovalError(LedgerError):
    """A correction was approved by its enterer, decided twice, or is not allowed."""


class NothingToDo(LedgerError):
    """The request names something that has nothing open (a settled item, a reversed bill)."""


class ReceiptRangeError(LedgerError):
    def __init__(self, cashier: str, message: str) -> None:
        self.cashier = cashier
        super().__init__(f"cashier {cashier}: {message}")


class BankFileError(LedgerError):
    """A bank file was rejected as a whole; ``problems`` lists why (with line numbers)."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = list(problems)
        shown = "\n".join(f"  {p}" for p in self.problems[:50])
        super().__init__(f"{path}: rejected, nothing posted:\n{shown}")


class BankFormatError(LedgerError):
    def __init__(self, bank: str, problems: list[str]) -> None:
        self.bank = bank
        self.problems = list(problems)
        super().__init__(f"bank format {bank}: " + "; ".join(problems))


class SignatureError(LedgerError):
    """A channel notification's signature did not verify."""

    def __init__(self, channel: str, reason: str) -> None:
        self.channel = channel
        self.reason = reason
        super().__init__(f"{channel} notification refused: {reason}")
