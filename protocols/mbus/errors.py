"""Errors of the M-Bus decoders (wired EN 13757-2/-3 and the record layer wM-Bus shares).

Every error is a :class:`meterline.errors.DecodeError` (so ``raw`` holds the offending bytes and
``reason`` a short code for dead-letter counting) and names the problem in words.
"""

from __future__ import annotations

from meterline.errors import DecodeError


class MBusError(DecodeError):
    """Base of every M-Bus decode error."""

    reason_code = "mbus_decode"

    def __init__(self, message: str, raw: bytes | None = None, *, offset: int | None = None) -> None:
        self.offset = offset
        where = f" (at byte {offset})" if offset is not None else ""
        super().__init__(message + where, raw=raw, reason=self.reason_code)


# --- link layer (frames) ---------------------------------------------------------------------

class FrameError(MBusError):
    """The frame itself is malformed: start/stop byte, length fields, truncation, bad hex."""

    reason_code = "bad_frame"


class ChecksumError(FrameError):
    reason_code = "bad_checksum"

    def __init__(self, expected: int, actual: int, raw: bytes | None = None) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(f"checksum 0x{actual:02X} does not match the frame's sum 0x{expected:02X}", raw)


class UnsupportedFrame(MBusError):
    """A well-formed frame that is not a slave's data response (a master command, alarm, ...)."""

    reason_code = "unsupported_frame"


class ApplicationError(MBusError):
    """The slave answered with an application error (CI 0x70): busy, too many records, ..."""

    reason_code = "slave_error"

    def __init__(self, code: int | None, text: str, raw: bytes | None = None) -> None:
        self.code = code
        self.text = text
        shown = f" (code {code})" if code is not None else ""
        super().__init__(f"slave reported an application error: {text}{shown}", raw)


# --- application layer (records) -------------------------------------------------------------

class RecordError(MBusError):
    """A data record cannot be decoded; ``record`` is its index in the telegram."""

    reason_code = "bad_record"

    def __init__(self, message: str, raw: bytes | None = None, *, offset: int | None = None,
                 record: int | None = None) -> None:
        self.record = record
        prefix = f"record {record}: " if record is not None else ""
        super().__init__(prefix + message, raw, offset=offset)


class TruncatedRecord(RecordError):
    """The data ends inside a record (premature end of DIF, VIF, plain-text unit or data)."""

    reason_code = "truncated"


class TooManyExtensions(RecordError):
    """More than 10 DIFEs or 10 VIFEs in one record (EN 13757-3 allows at most 10 of each)."""

    reason_code = "too_many_extensions"


class ReservedCode(RecordError):
    """A DIF, VIF or length code that EN 13757-3 reserves (so the record length is unknown)."""

    reason_code = "reserved_code"


class UnknownVIF(RecordError):
    """Raised only in strict mode: a VIF/VIFE the tables do not know."""

    reason_code = "unknown_vif"


class NoRegisterError(MBusError):
    """The telegram decoded, but has no register meterline bills from (volume or energy)."""

    reason_code = "no_register"
