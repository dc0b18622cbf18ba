"""Wired M-Bus frames (EN 13757-2) and the data structures of a slave's response (EN 13757-3).

Parsing (slave → master)::

    parse_frame(raw) -> Frame                 # any frame: ACK (E5), short, control, long
    decode_response(raw, strict=False) -> Response   # RSP_UD long frame → slave info + records
    frame_length(buffer) -> int | None        # bytes the frame at the start of buffer needs
    parse_hex(text) -> bytes                  # "68 1F 1F 68 ..." (spaces, colons optional)

Building (master → slave): :func:`snd_nke`, :func:`req_ud2`, :func:`select_secondary`.

A :class:`Response` holds the :class:`SlaveInfo` of the fixed header (identification number,
manufacturer, version, medium, access number, status, signature), the records, and
``more_follows`` (DIF 0x1F: the master should request the next telegram). CI fields that are
not data responses are rejected with :class:`~.errors.UnsupportedFrame` naming them; a slave's
application error (CI 0x70) raises :class:`~.errors.ApplicationError` with its code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal

from meterline.protocols.mbus import tables
from meterline.protocols.mbus.errors import ApplicationError, ChecksumError, FrameError, UnsupportedFrame
from meterline.protocols.mbus.records import Function, Record, decode_records

ACK = 0xE5
SHORT_START = 0x10
LONG_START = 0x68
STOP = 0x16

# control fields
C_SND_NKE = 0x40
C_SND_UD = 0x53
C_REQ_UD2 = 0x5B
C_REQ_UD1 = 0x5A
C_RSP_UD = 0x08
FCB = 0x20

ADDRESS_NETWORK_LAYER = 0xFD  #: the slave selected by secondary address
ADDRESS_BROADCAST_NO_REPLY = 0xFF
ADDRESS_BROADCAST_REPLY = 0xFE

CI_SELECT_SECONDARY = 0x52
_MASTER_FUNCTIONS = {0x40: "SND_NKE", 0x53: "SND_UD", 0x73: "SND_UD", 0x5B: "REQ_UD2", 0x7B: "REQ_UD2",
                     0x5A: "REQ_UD1", 0x7A: "REQ_UD1"}


@dataclass(frozen=True, slots=True)
class Frame:
    kind: str  #: "ack", "short", "control" (long frame without data) or "long"
    control: int = 0
    address: int = 0
    ci: int | None = None
    data: bytes = b""  #: user data after the CI field
    raw: bytes = b""


@dataclass(frozen=True, slots=True)
class SlaveInfo:
    id: str  #: identification number (8 BCD digits; secondary address)
    manufacturer: str  #: three-letter FLAG code
    version: int
    medium: int
    access_number: int
    status: int
    signature: int = 0
    fixed: bool = False  #: from a fixed data structure (EN 1434-3 medium codes)

    @property
    def medium_name(self) -> str:
        table = tables.FIXED_MEDIA if self.fixed else tables.MEDIA
        return table.get(self.medium, f"Reserved (0x{self.medium:02X})")

    @property
    def secondary_address(self) -> str:
        """16 hex digits: id, manufacturer (LSB first), version, medium, as used to select."""
        man = tables.manufacturer_id(self.manufacturer) if len(self.manufacturer) == 3 else 0
        return f"{self.id}{man & 0xFF:02X}{man >> 8:02X}{self.version:02X}{self.medium:02X}"

    def as_dict(self) -> dict:
        return {"id": self.id, "manufacturer": self.manufacturer, "version": self.version,
                "medium": self.medium_name, "access_number": self.access_number,
                "status": f"{self.status:02X}", "signature": f"{self.signature:04X}"}


@dataclass(frozen=True, slots=True)
class Response:
    address: int
    control: int
    ci: int
    slave: SlaveInfo | None
    records: list[Record] = field(default_factory=list)
    fixed: bool = False  #: EN 1434-3 fixed data structure (CI 0x73/0x77)
    raw: bytes = b""

    @property
    def more_follows(self) -> bool:
        return any(r.function is Function.MORE_RECORDS_FOLLOW for r in self.records)


# --- hex and framing -----------------------------------------------------------------------------

_HEX_SEP = re.compile(r"[\s:_\-|#,]+")


def parse_hex(text: str) -> bytes:
    """Bytes from hex text; whitespace and ``: _ - | # ,`` separate digits. Bad hex → FrameError."""
    digits = _HEX_SEP.sub("", text)
    if len(digits) % 2:
        raise FrameError(f"odd number of hex digits ({len(digits)}): not a byte string")
    try:
        return bytes.fromhex(digits)
    except ValueError as exc:
        bad = next((ch for ch in digits if ch not in "0123456789abcdefABCDEF"), "?")
        raise FrameError(f"not hexadecimal: character {bad!r}") from exc


def checksum(data: bytes) -> int:
    return sum(data) & 0xFF


def frame_length(buf: bytes) -> int | None:
    """Length of the frame starting at ``buf[0]``, or None if more bytes are needed to tell.

    Raises :class:`FrameError` when ``buf[0]`` starts no frame or the long-frame header is bad.
    """
    if not buf:
        return None
    start = buf[0]
    if start == ACK:
        return 1
    if start == SHORT_START:
        return 5
    if start == LONG_START:
        if len(buf) < 4:
            return None
        length = buf[1]
        if buf[2] != length or buf[3] != LONG_START:
            raise FrameError(f"long frame header 68 {buf[1]:02X} {buf[2]:02X} {buf[3]:02X} is not 68 L L 68",
                             bytes(buf[:4]), offset=0)
        if length < 3:
            raise FrameError(f"long frame length {length} is below the minimum of 3 (C, A, CI)",
                             bytes(buf[:4]), offset=1)
        return length + 6
    raise FrameError(f"0x{start:02X} starts no M-Bus frame (expected E5, 10 or 68)", bytes(buf[:1]), offset=0)


def parse_frame(raw: bytes) -> Frame:
    """Check and split one complete frame (start, lengths, checksum, stop byte)."""
    raw = bytes(raw)
    if not raw:
        raise FrameError("empty frame", raw)
    need = frame_length(raw)
    if need is None or len(raw) < need:
        expected = f"{need} bytes" if need is not None else "at least 4 bytes"
        raise FrameError(f"truncated frame: {len(raw)} bytes, expected {expected}", raw)
    if len(raw) > need:
        raise FrameError(f"{len(raw) - need} byte(s) after the end of a {need}-byte frame "
                         f"(length field says {need - 6 if raw[0] == LONG_START else need})", raw)
    if raw[0] == ACK:
        return Frame("ack", raw=raw)
    if raw[-1] != STOP:
        raise FrameError(f"stop byte is 0x{raw[-1]:02X}, expected 0x16", raw, offset=len(raw) - 1)
    if raw[0] == SHORT_START:
        if checksum(raw[1:3]) != raw[3]:
            raise ChecksumError(checksum(raw[1:3]), raw[3], raw)
        return Frame("short", raw[1], raw[2], raw=raw)
    body = raw[4:-2]
    if checksum(body) != raw[-2]:
        raise ChecksumError(checksum(body), raw[-2], raw)
    kind = "control" if len(body) == 3 else "long"
    return Frame(kind, body[0], body[1], body[2], body[3:], raw)


# --- responses ---------------------------------------------------------------------------------

def _bcd_id(raw: bytes) -> str:
    return raw[::-1].hex().upper()


def parse_long_header(data: bytes, *, msb_first: bool = False) -> SlaveInfo:
    """The 12-byte header of CI 0x72/0x76: ident, manufacturer, version, medium, access, status, signature."""
    if len(data) < 12:
        raise FrameError(f"variable data header needs 12 bytes, the frame has {len(data)}", data)
    ident = data[0:4]
    man = int.from_bytes(data[4:6], "big" if msb_first else "little")
    sig = int.from_bytes(data[10:12], "big" if msb_first else "little")
    return SlaveInfo(
        id=(ident.hex() if msb_first else _bcd_id(ident)).upper(),
        manufacturer=tables.manufacturer_code(man), version=data[6], medium=data[7],
        access_number=data[8], status=data[9], signature=sig,
    )


def _fixed(frame: Frame) -> Response:
    data = frame.data
    if len(data) != 16:
        raise FrameError(f"fixed data structure (CI 0x{frame.ci:02X}) is 16 bytes, this frame has {len(data)}",
                         frame.raw)
    msb = frame.ci == 0x77
    ident = data[0:4] if msb else data[0:4][::-1]
    access, status, u1, u2 = data[4], data[5], data[6], data[7]
    medium = (u1 >> 6) | ((u2 >> 6) << 2)
    slave = SlaveInfo(ident.hex().upper(), "", 0, medium, access, status, fixed=True)
    binary = bool(status & 0x80)
    historic = 1 if status & 0x40 else 0
    records = []
    for i, (code, raw) in enumerate(((u1 & 0x3F, data[8:12]), (u2 & 0x3F, data[12:16]))):
        storage = historic
        if i == 1 and code == 0x3E:  # "same but historic"
            code, storage = u1 & 0x3F, 1
        raw_le = raw[::-1] if msb else raw
        if binary:
            number: int | None = int.from_bytes(raw_le, "little")
        else:
            digits = raw_le[::-1].hex()
            number = int(digits) if digits.isdigit() else None
        quantity, unit, exp = tables.FIXED_UNITS.get(code, (f"Unit code 0x{code:02X}", "", 0))
        value = None if number is None else (Decimal(number * 10 ** exp) if exp >= 0 else Decimal(f"{number}e{exp}"))
        records.append(Record(Function.INSTANTANEOUS, storage, 0, 0, quantity, unit, value, b"", bytes([code]), raw,
                              error=None if number is not None else "invalid BCD digits"))
    return Response(frame.address, frame.control, frame.ci or 0, slave, records, True, frame.raw)


def decode_response(raw: bytes, *, strict: bool = False) -> Response:
    """Decode a slave's RSP_UD long frame: header and records (see the module docstring)."""
    frame = parse_frame(raw)
    if frame.kind != "long" and not (frame.kind == "control" and frame.ci == 0x70):
        raise UnsupportedFrame(f"{frame.kind} frame carries no data records", frame.raw)
    c = frame.control
    if c & 0x40:
        name = _MASTER_FUNCTIONS.get(c, "a master request")
        raise UnsupportedFrame(f"control field 0x{c:02X} is {name}, a master-to-slave frame, not a response",
                               frame.raw)
    if c & 0x0F != C_RSP_UD:
        raise UnsupportedFrame(f"control field 0x{c:02X} is not RSP_UD (0x08)", frame.raw)
    ci = frame.ci
    data = frame.data
    if ci == 0x70:
        code = data[0] if data else None
        text = tables.APPLICATION_ERRORS.get(code if code is not None else 0, f"reserved error code {code}")
        raise ApplicationError(code, text, frame.raw)
    if ci in (0x72, 0x76):
        msb = ci == 0x76
        slave = parse_long_header(data, msb_first=msb)
        body = data[12:]
    elif ci == 0x7A:
        if len(data) < 4:
            raise FrameError(f"short header needs 4 bytes, the frame has {len(data)}", frame.raw)
        slave = SlaveInfo("", "", 0, 0, data[0], data[1], int.from_bytes(data[2:4], "little"))
        body, msb = data[4:], False
    elif ci == 0x78:
        slave, body, msb = None, data, False
    elif ci in (0x73, 0x77):
        return _fixed(frame)
    else:
        what = tables.OTHER_CI.get(ci or 0, "not a data response")
        raise UnsupportedFrame(f"CI field 0x{ci:02X} ({what}) is not supported", frame.raw)
    records = decode_records(body, strict=strict, msb_first=msb)
    return Response(frame.address, c, ci, slave, records, False, frame.raw)


# --- master requests ---------------------------------------------------------------------------

def short_frame(control: int, address: int) -> bytes:
    return bytes((SHORT_START, control, address, (control + address) & 0xFF, STOP))


def long_frame(control: int, address: int, ci: int, data: bytes = b"") -> bytes:
    body = bytes((control, address, ci)) + bytes(data)
    if len(body) > 255:
        raise ValueError("long frame user data exceeds 252 bytes")
    return bytes((LONG_START, len(body), len(body), LONG_START)) + body + bytes((checksum(body), STOP))


def snd_nke(address: int) -> bytes:
    """SND_NKE: reset the slave's link layer (and its FCB)."""
    return short_frame(C_SND_NKE, address)


def req_ud2(address: int, fcb: bool = False) -> bytes:
    """REQ_UD2: request class-2 data; toggle ``fcb`` to get the next telegram of a multi-telegram readout."""
    return short_frame(C_REQ_UD2 | (FCB if fcb else 0), address)


_SECONDARY = re.compile(r"^[0-9A-Fa-f]{16}$")


def select_secondary(address: str) -> bytes:
    """SND_UD with CI 0x52 selecting a slave by its 16-hex-digit secondary address.

    ``address`` is id (8 BCD digits), manufacturer (4 hex, LSB first), version, medium; ``F``
    digits are wildcards. An 8-digit id alone is taken with manufacturer, version and medium
    wildcarded.
    """
    if re.fullmatch(r"[0-9A-Fa-f]{8}", address):
        address = address + "FFFFFFFF"
    if not _SECONDARY.match(address):
        raise ValueError(f"secondary address {address!r} is not 8 or 16 hex digits")
    ident = bytes.fromhex(address[0:8])[::-1]
    rest = bytes.fromhex(address[8:16])
    return long_frame(C_SND_UD, ADDRESS_NETWORK_LAYER, CI_SELECT_SECONDARY, ident + rest)


def parse_selection(frame: Frame) -> str | None:
    """The secondary address mask a select frame carries (for simulated slaves), else None."""
    if frame.kind != "long" or frame.ci != CI_SELECT_SECONDARY or len(frame.data) != 8:
        return None
    return frame.data[0:4][::-1].hex().upper() + frame.data[4:8].hex().upper()


def secondary_matches(mask: str, address: str) -> bool:
    """Whether a 16-digit secondary ``address`` matches ``mask`` (``F`` = any digit)."""
    return len(mask) == len(address) == 16 and all(m in "Ff" or m.upper() == a.upper() for m, a in zip(mask, address))
