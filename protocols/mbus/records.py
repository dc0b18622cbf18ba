"""M-Bus application-layer records (EN 13757-3): bytes → :class:`Record` → ``Reading``.

This is the record layer every M-Bus flavour shares: wired long frames (``frame.py``), wireless
M-Bus (``protocols/wmbus``) and LoRaWAN payloads that carry OMS/M-Bus records (Kamstrup, ...).

Stable API (signatures are kept; new keyword arguments may be added with defaults)::

    decode_records(data: bytes, *, strict: bool = False, msb_first: bool = False) -> list[Record]
    to_readings(records, *, ts, device=None, meter_id=None, source=Source.MBUS, source_ref=None,
                status=0, subunit=0, history=False, tz=UTC) -> list[Reading]
    meter_status(status_byte: int) -> MeterStatus

``decode_records`` decodes bare record bytes (DIF, DIFEs, VIF, VIFEs, data; repeated), e.g.
the bytes after the CI field and header of a telegram. It raises only
:class:`~meterline.protocols.mbus.errors.MBusError` subclasses (all are
:class:`meterline.errors.DecodeError`), naming the record index and byte offset. Idle fillers
(DIF 0x2F) are skipped; manufacturer data (DIF 0x0F, or 0x1F "more records follow") ends the
list as one record whose value is the remaining bytes.

A :class:`Record` carries:

* ``function`` (:class:`Function`), ``storage``, ``tariff``, ``subunit`` (``device``) from the
  DIF/DIFEs;
* ``quantity`` and ``unit`` from the VIF tables (``"Volume"``/``"m^3"``,
  ``"Energy"``/``"Wh"`` or ``"J"``, ``"Flow temperature"``/``"°C"``, ...; a plain-text VIF gives
  its own text as quantity and unit ``"-"``);
* ``value``, exact: a :class:`~decimal.Decimal` already scaled to ``unit`` (VIF exponent,
  multiplicative-correction VIFEs; minutes/hours/days converted to seconds; a 32-bit real is
  taken as the shortest decimal that reads back as the same float32), a ``str`` (ASCII
  variable-length data), ``datetime.date``/``datetime``/``time`` for time points (types G, F,
  I, J; naive, in the meter's local time), ``bytes`` for manufacturer data (as sent) and for
  binary variable-length data longer than 8 bytes (most significant byte first), or ``None``
  (no data, an invalid date or BCD, or a record the meter flags with an error code: see
  ``error``);
* ``modifiers``: the combinable VIFEs in words (``"accumulation of abs value only if negative
  contributions"`` marks a reverse-flow register), and the raw ``dif``/``vif``/``data`` bytes.

``to_readings`` maps records to :class:`meterline.ingest.model.Reading` (cumulative registers
only: instantaneous values, tariff 0, the chosen subunit): volume → litres (m³ × 1000, also
ft³ and US gallons by their exact definitions), energy → Wh (kWh/MWh by exponent; J/kJ/GJ ÷
3600), digits finer than the base unit truncated. Storage 0 is stamped ``ts``; with
``history=True`` stored values (storage n > 0) are stamped with the time point record of the
same storage number (a date means the end of that day) in ``tz``, and skipped when there is none.
The first register of each quantity and storage number wins. A telegram with no volume or
energy register raises :class:`~meterline.protocols.mbus.errors.NoRegisterError` (reason
``no_register``), so it becomes a dead letter rather than nothing. For example, the OMS records
of a LoRaWAN uplink::

    records = decode_records(payload)
    readings = to_readings(records, ts=uplink_time, device=dev_eui, source=Source.LORAWAN,
                           source_ref=f"fcnt:{fcnt}", status=int(meter_status(status_byte)))
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import struct
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Iterable, Sequence, Union

from meterline.ingest.model import MeterStatus, Quantity, Reading, Source
from meterline.protocols.mbus import tables
from meterline.protocols.mbus.errors import (
    NoRegisterError, RecordError, ReservedCode, TooManyExtensions, TruncatedRecord, UnknownVIF,
)

__all__ = [
    "Function", "Record", "Value", "decode_records", "to_readings", "meter_status", "MAX_EXTENSIONS",
]

UTC = dt.timezone.utc
MAX_EXTENSIONS = 10  #: DIFEs and VIFEs allowed per record (EN 13757-3)

Value = Union[Decimal, str, dt.date, dt.datetime, dt.time, bytes, None]


class Function(enum.IntEnum):
    """What a record's value is (DIF bits 4–5), plus the two special DIFs that end the records."""

    INSTANTANEOUS = 0
    MAXIMUM = 1
    MINIMUM = 2
    ERROR_STATE = 3  #: value during error state
    MANUFACTURER_SPECIFIC = 4  #: DIF 0x0F: manufacturer data up to the end
    MORE_RECORDS_FOLLOW = 5  #: DIF 0x1F: manufacturer data, and the slave has more telegrams

    @property
    def label(self) -> str:
        return _FUNCTION_LABELS[self]


_FUNCTION_LABELS = {
    Function.INSTANTANEOUS: "Instantaneous value", Function.MAXIMUM: "Maximum value",
    Function.MINIMUM: "Minimum value", Function.ERROR_STATE: "Value during error state",
    Function.MANUFACTURER_SPECIFIC: "Manufacturer specific",
    Function.MORE_RECORDS_FOLLOW: "More records follow",
}
_FUNCTIONS = (Function.INSTANTANEOUS, Function.MAXIMUM, Function.MINIMUM, Function.ERROR_STATE)


@dataclass(frozen=True, slots=True)
class Record:
    function: Function
    storage: int
    tariff: int
    subunit: int
    quantity: str
    unit: str
    value: Value
    dif: bytes = b""  #: DIF and DIFEs
    vif: bytes = b""  #: VIF, plain-text unit and VIFEs
    data: bytes = b""  #: the data field as sent
    modifiers: tuple[str, ...] = ()
    error: str | None = None  #: the record error code the meter set, or why the value is None
    offset: int = 0  #: where the record starts in the decoded bytes

    @property
    def device(self) -> int:
        """The subunit (EN 13757-3 'device unit'), as libmbus calls it."""
        return self.subunit

    @property
    def reverse(self) -> bool:
        return "accumulation of abs value only if negative contributions" in self.modifiers

    def value_text(self) -> str:
        """The value as text: decimals plain, dates ISO, bytes as spaced hex."""
        v = self.value
        if v is None:
            return ""
        if isinstance(v, Decimal):
            return format(v, "f")
        if isinstance(v, bytes):
            return v.hex(" ").upper()
        if isinstance(v, (dt.date, dt.time)):
            return v.isoformat()
        return str(v)

    def as_dict(self) -> dict:
        return {
            "function": self.function.label, "storage": self.storage, "tariff": self.tariff,
            "device": self.subunit, "quantity": self.quantity, "unit": self.unit,
            "value": self.value_text(), "modifiers": list(self.modifiers), "error": self.error,
        }


# --- data field coding -----------------------------------------------------------------------

#: data length by DIF data field code (None: variable, special)
_LENGTH = (0, 1, 2, 3, 4, 4, 6, 8, 0, 1, 2, 3, 4, None, 6, None)
_INT_CODES = frozenset((1, 2, 3, 4, 6, 7))
_BCD_CODES = frozenset((9, 10, 11, 12, 14))
_F32 = struct.Struct("<f")


def _float32_decimal(raw: bytes) -> Decimal | None:
    """The shortest decimal that reads back as the same float32 (exactly what the meter meant)."""
    (x,) = _F32.unpack(raw)
    if x != x or x in (float("inf"), float("-inf")):
        return None
    packed = _F32.pack(x)
    for digits in range(1, 10):
        text = f"{x:.{digits}g}"
        if _F32.pack(float(text)) == packed:
            return Decimal(text)
    return Decimal(repr(x))  # pragma: no cover - 9 significant digits always round-trip


def _bcd(raw: bytes) -> int | None:
    """BCD, least significant byte first; 0xF in the top nibble means negative; other A–F: None."""
    text = raw[::-1].hex()
    if not text:
        return 0
    sign = 1
    if text[0] == "f":
        sign, text = -1, text[1:]
    if not text.isdigit():
        return None if text else 0
    return sign * int(text) if text else 0


_CTX = decimal.Context(prec=200)  # exact for every value a record can carry (≤ 64-byte numbers)
_NEG_POW10 = {e: Decimal(1).scaleb(e) for e in range(-40, 0)}


def _scaled(n: int, exp: int) -> Decimal:
    """n × 10**exp, exactly (never rounded by the caller's decimal context)."""
    if exp >= 0:
        return Decimal(n * 10 ** exp)
    return _CTX.multiply(Decimal(n), _NEG_POW10[exp]) if exp >= -40 else Decimal(f"{n}e{exp}")


def _year(y: int) -> int:
    return 2000 + y if y < 81 else 1900 + y


def _date_g(b: bytes) -> dt.date | None:
    day = b[0] & 0x1F
    month = b[1] & 0x0F
    year = ((b[0] & 0xE0) >> 5) | ((b[1] & 0xF0) >> 1)
    try:
        return dt.date(_year(year), month, day)
    except ValueError:
        return None


def _datetime_f(b: bytes) -> dt.datetime | None:
    if b[0] & 0x80:  # IV: time invalid
        return None
    minute = b[0] & 0x3F
    hour = b[1] & 0x1F
    day = b[2] & 0x1F
    month = b[3] & 0x0F
    year = ((b[2] & 0xE0) >> 5) | ((b[3] & 0xF0) >> 1)
    try:
        return dt.datetime(_year(year), month, day, hour, minute)
    except ValueError:
        return None


def _datetime_i(b: bytes) -> dt.datetime | None:
    if b[1] & 0x80:
        return None
    second = b[0] & 0x3F
    minute = b[1] & 0x3F
    hour = b[2] & 0x1F
    day = b[3] & 0x1F
    month = b[4] & 0x0F
    year = ((b[3] & 0xE0) >> 5) | ((b[4] & 0xF0) >> 1)
    try:
        return dt.datetime(_year(year), month, day, hour, minute, second)
    except ValueError:
        return None


def _time_j(b: bytes) -> dt.time | None:
    try:
        return dt.time(b[2] & 0x1F, b[1] & 0x3F, b[0] & 0x3F)
    except ValueError:
        return None


_DATE_BY_LENGTH = {2: _date_g, 3: _time_j, 4: _datetime_f, 6: _datetime_i}


def _lvar_length(lvar: int) -> int | None:
    if lvar <= 0xBF:
        return lvar
    if 0xC0 <= lvar <= 0xC9 or 0xD0 <= lvar <= 0xD9:
        return lvar & 0x0F
    if 0xE0 <= lvar <= 0xEF:
        return lvar - 0xE0
    if 0xF0 <= lvar <= 0xF4:
        return 4 * (lvar - 0xEC)
    if lvar == 0xF5:
        return 48
    if lvar == 0xF6:
        return 64
    return None


# --- VIF interpretation ----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Vib:
    info: tables.VifInfo
    exp_shift: int
    modifiers: tuple[str, ...]
    error: str | None
    is_date: bool

    @property
    def plain_number(self) -> bool:
        """A number scaled by exponent and factor (the common case, decoded inline)."""
        return self.info.kind == "number" and not self.is_date


#: interpreted VIBs by (VIF/VIFE bytes, strict): a meter sends the same few over and over
_VIB_CACHE: dict[tuple[bytes, bool], tuple[_Vib, bool, int, int]] = {}
_VIB_CACHE_MAX = 4096


def _interpret(vif: int, vifes: Sequence[int], text: str | None, strict: bool, where: dict) -> _Vib:
    """Quantity, unit and exponent of a VIF with its VIFEs (all codes with the extension bit)."""
    code = vif & 0x7F
    combinable: Sequence[int] = vifes
    if text is not None:
        info = tables.VifInfo(text, "-")
    elif vif == 0xFD or vif == 0xFB:
        table = tables.EXT_FD if vif == 0xFD else tables.EXT_FB
        ext = vifes[0] & 0x7F
        info = table.get(ext)
        if info is None:
            if strict:
                raise UnknownVIF(f"unknown VIFE 0x{vifes[0]:02X} in the 0x{vif:02X} extension table", **where)
            info = tables.RESERVED
        combinable = vifes[1:]
    elif vif == 0xEF:  # reserved for a future extension table
        if strict:
            raise UnknownVIF("VIF 0xEF (reserved extension table) is not defined", **where)
        info, combinable = tables.RESERVED, vifes[1:]
    else:
        info = tables.PRIMARY.get(code)
        if info is None:
            if strict:
                raise UnknownVIF(f"reserved VIF 0x{vif:02X}", **where)
            info = tables.RESERVED
        if info.kind == "manufacturer":
            return _Vib(info, 0, tuple(f"manufacturer VIFE 0x{v:02X}" for v in vifes), None, False)
    exp_shift = 0
    modifiers: list[str] = []
    error = None
    is_date = info.kind == "date"
    skip_next = False
    manufacturer = False
    for i, raw in enumerate(combinable):
        c = raw & 0x7F
        if manufacturer:
            modifiers.append(f"manufacturer VIFE 0x{raw:02X}")
            continue
        if skip_next:
            modifiers.append(f"second combinable table VIFE 0x{raw:02X}")
            skip_next = False
            continue
        if c <= 0x1F:
            if c:
                error = tables.RECORD_ERRORS.get(c, f"reserved record error code 0x{c:02X}")
            continue
        if 0x70 <= c <= 0x77:
            exp_shift += c - 0x76
        elif c == 0x7D:
            exp_shift += 3
        elif c == 0x7C:
            skip_next = True
            continue
        elif c == 0x7F:
            manufacturer = True
        if c in tables.DATE_VIFES:
            is_date = True
        name = tables.COMBINABLE.get(c)
        if name is None:
            if strict:
                raise UnknownVIF(f"reserved combinable VIFE 0x{raw:02X}", **where)
            name = f"reserved VIFE 0x{raw:02X}"
        modifiers.append(name)
    return _Vib(info, exp_shift, tuple(modifiers), error, is_date)


# --- the record decoder ------------------------------------------------------------------------

def decode_records(data: bytes, *, strict: bool = False, msb_first: bool = False) -> list[Record]:
    """Decode bare EN 13757-3 data records (see the module docstring)."""
    data = bytes(data)
    n = len(data)
    out: list[Record] = []
    pos = 0
    index = 0
    start = 0
    int_codes = _INT_CODES
    bcd_codes = _BCD_CODES
    lengths = _LENGTH
    cache = _VIB_CACHE

    def fail(cls: type[RecordError], message: str) -> RecordError:
        return cls(message, raw=data, offset=start, record=index)

    while pos < n:
        start = pos
        dif = data[pos]
        pos += 1
        code = dif & 0x0F
        if code == 0x0F:
            if dif == 0x2F:  # idle filler
                continue
            if dif == 0x0F or dif == 0x1F:
                fn = Function.MANUFACTURER_SPECIFIC if dif == 0x0F else Function.MORE_RECORDS_FOLLOW
                rest = data[pos:]
                out.append(Record(fn, 0, 0, 0, "", "", rest, data[start:pos], b"", rest, offset=start))
                break
            if dif == 0x7F:
                raise fail(ReservedCode, "DIF 0x7F is a global readout request (master to slave), not data")
            raise fail(ReservedCode, f"reserved special-function DIF 0x{dif:02X}")
        # DIF and DIFEs
        storage = (dif >> 6) & 1
        tariff = 0
        subunit = 0
        if dif & 0x80:
            k = 0
            ext = 0x80
            while ext:
                if pos >= n:
                    raise fail(TruncatedRecord, "premature end of data in the DIFE chain")
                if k >= MAX_EXTENSIONS:
                    raise fail(TooManyExtensions, f"more than {MAX_EXTENSIONS} DIFEs")
                dife = data[pos]
                pos += 1
                storage |= (dife & 0x0F) << (1 + 4 * k)
                tariff |= ((dife >> 4) & 0x03) << (2 * k)
                subunit |= ((dife >> 6) & 0x01) << k
                ext = dife & 0x80
                k += 1
        dib_end = pos
        # VIF, plain text, VIFEs
        if pos >= n:
            raise fail(TruncatedRecord, "premature end of data: DIF without VIF")
        vif = data[pos]
        pos += 1
        text = None
        if vif == 0x7C or vif == 0xFC:
            if pos >= n:
                raise fail(TruncatedRecord, "premature end of data: plain-text VIF without its length")
            ln = data[pos]
            if pos + 1 + ln > n:
                raise fail(TruncatedRecord, f"plain-text VIF of {ln} characters runs past the end of the data")
            text = data[pos + 1:pos + 1 + ln][::-1].decode("latin-1")
            pos += 1 + ln
        if vif & 0x80:
            vife_start = pos
            ext = 0x80
            while ext:
                if pos >= n:
                    raise fail(TruncatedRecord, "premature end of data in the VIFE chain")
                if pos - vife_start >= MAX_EXTENSIONS:
                    raise fail(TooManyExtensions, f"more than {MAX_EXTENSIONS} VIFEs")
                ext = data[pos] & 0x80
                pos += 1
            vifes = data[vife_start:pos]
        else:
            vifes = b""
        vib_bytes = data[dib_end:pos]
        hit = cache.get((vib_bytes, strict)) if text is None else None
        if hit is None:
            vib = _interpret(vif, vifes, text, strict, {"raw": data, "offset": start, "record": index})
            hit = (vib, vib.plain_number, vib.info.exp + vib.exp_shift, vib.info.mult)
            if text is None:
                if len(cache) >= _VIB_CACHE_MAX:
                    cache.clear()
                cache[(vib_bytes, strict)] = hit
        vib, plain, exp, mult = hit
        # data
        length = lengths[code]
        lvar = None
        if length is None:  # variable length
            if pos >= n:
                raise fail(TruncatedRecord, "premature end of data: variable-length record without LVAR")
            lvar = data[pos]
            pos += 1
            length = _lvar_length(lvar)
            if length is None:
                raise fail(ReservedCode, f"reserved LVAR 0x{lvar:02X}")
        if pos + length > n:
            raise fail(TruncatedRecord, f"premature end of data: {length} data byte(s) expected, {n - pos} left")
        raw = data[pos:pos + length]
        pos += length
        number = None
        if plain and not msb_first:
            if code in int_codes:
                number = int.from_bytes(raw, "little", signed=True)
            elif code in bcd_codes:
                number = _bcd(raw)
        if number is not None:
            value: Value = _scaled(number * mult, exp)
            error = None
        else:
            value, error = _value(code, raw, lvar, vib, msb_first)
        info = vib.info
        out.append(Record(
            _FUNCTIONS[(dif >> 4) & 0x03], storage, tariff, subunit, info.quantity, info.unit, value,
            data[start:dib_end], vib_bytes, raw, vib.modifiers, vib.error or error, start,
        ))
        index += 1
    return out


def _value(code: int, raw: bytes, lvar: int | None, vib: _Vib, msb_first: bool) -> tuple[Value, str | None]:
    info = vib.info
    kind = info.kind
    if msb_first and len(raw) > 1 and lvar is None:
        raw = raw[::-1]
    if code in _INT_CODES:
        if vib.is_date:
            decoder = _DATE_BY_LENGTH.get(len(raw))
            if decoder is not None:
                v = decoder(raw)
                return v, None if v is not None else "invalid date/time"
        number = int.from_bytes(raw, "little", signed=True)
    elif code in _BCD_CODES:
        number = _bcd(raw)
        if number is None:
            return None, "invalid BCD digits " + raw[::-1].hex().upper()
    elif code == 5:
        d = _float32_decimal(raw)
        if d is None:
            return None, "not a number"
        if kind == "number":
            d = d.scaleb(info.exp + vib.exp_shift) * info.mult  # ≤ 9 digits: exact
        return d, None
    elif code == 13:
        assert lvar is not None
        if lvar <= 0xBF:
            return raw[::-1].decode("latin-1"), None
        if lvar >= 0xE0:
            if len(raw) > 8:  # 16..64-byte binary: a key or container, not a count
                return raw[::-1], None
            number = int.from_bytes(raw, "little", signed=True)
        else:
            number = _bcd(raw)
            if number is None:
                return None, "invalid BCD digits " + raw[::-1].hex().upper()
            if lvar >= 0xD0:
                number = -number
    else:  # no data (0) or selection for readout (8)
        return None, None
    if kind == "manufacturer" or kind == "reserved" or kind == "any":
        return Decimal(number), None
    if kind == "id":
        return Decimal(number), None
    return _scaled(number * info.mult, info.exp + vib.exp_shift), None


# --- records → readings ----------------------------------------------------------------------

#: exact conversion factors to the base units (int() of the product truncates toward zero)
_LITRES_PER = {"m^3": Fraction(1000), "feet^3": Fraction("28.316846592"),
               "American gallon": Fraction("3.785411784")}
_WH_PER = {"Wh": Fraction(1), "J": Fraction(1, 3600)}


def _register(rec: Record) -> tuple[Quantity, int] | None:
    """(quantity, value in base units) of a cumulative register record, else None."""
    v = rec.value
    if not isinstance(v, Decimal):
        return None
    if rec.quantity == "Volume":
        per = _LITRES_PER.get(rec.unit)
        if per is None:
            return None
        q = Quantity.VOLUME_REVERSE if rec.reverse else Quantity.VOLUME
        return q, int(Fraction(v) * per)
    if rec.quantity == "Energy":
        per = _WH_PER.get(rec.unit)
        if per is not None:
            return Quantity.ENERGY, int(Fraction(v) * per)
    return None


def _stamp(point: Value, tz: dt.tzinfo) -> dt.datetime | None:
    if isinstance(point, dt.datetime):
        return point.replace(tzinfo=tz)
    if isinstance(point, dt.date):
        return dt.datetime.combine(point + dt.timedelta(days=1), dt.time(), tzinfo=tz)
    return None


def to_readings(
    records: Iterable[Record], *, ts: dt.datetime, device: str | None = None, meter_id: int | None = None,
    source: Source = Source.MBUS, source_ref: str | None = None, status: int = 0, subunit: int = 0,
    history: bool = False, tz: dt.tzinfo = UTC,
) -> list[Reading]:
    """Cumulative registers of ``records`` as readings (see the module docstring).

    Raises :class:`~meterline.protocols.mbus.errors.NoRegisterError` when no record is a volume
    or energy register, so a telegram that cannot be billed from is never dropped silently.
    """
    records = list(records)
    points: dict[int, dt.datetime] = {}
    if history:
        for rec in records:
            if rec.function is Function.INSTANTANEOUS and rec.subunit == subunit and rec.storage not in points \
                    and rec.quantity.startswith("Time point") and not rec.modifiers:
                stamp = _stamp(rec.value, tz)
                if stamp is not None:
                    points[rec.storage] = stamp
    seen: set[tuple[int, int]] = set()
    out: list[Reading] = []
    found_register = False
    for rec in records:
        if rec.function is not Function.INSTANTANEOUS or rec.tariff != 0 or rec.subunit != subunit:
            continue
        reg = _register(rec)
        if reg is None:
            continue
        found_register = True
        if rec.storage == 0:
            when = ts
        elif history and rec.storage in points:
            when = points[rec.storage]
        else:
            continue
        quantity, value = reg
        key = (int(quantity), rec.storage)
        if key in seen:
            continue
        seen.add(key)
        out.append(Reading(ts=when, value=value, quantity=quantity, meter_id=meter_id, device=device,
                           source=source, source_ref=source_ref, status=int(status)))
    if not found_register:
        raise NoRegisterError("no volume or energy register among the records")
    return out


def meter_status(status_byte: int) -> MeterStatus:
    """MeterStatus from the status byte of the M-Bus/wM-Bus header.

    Bits 0–1 application status (01 busy is not a meter fault; 10 application error →
    ``HARDWARE_ERROR``; 11 abnormal condition → ``TEMPORARY_ERROR``), bit 2 power low →
    ``LOW_BATTERY``, bit 3 permanent error → ``HARDWARE_ERROR``, bit 4 temporary error →
    ``TEMPORARY_ERROR``; bits 5–7 are manufacturer specific and not mapped.
    """
    s = MeterStatus.NONE
    app = status_byte & 0x03
    if app == 0x02:
        s |= MeterStatus.HARDWARE_ERROR
    elif app == 0x03:
        s |= MeterStatus.TEMPORARY_ERROR
    if status_byte & 0x04:
        s |= MeterStatus.LOW_BATTERY
    if status_byte & 0x08:
        s |= MeterStatus.HARDWARE_ERROR
    if status_byte & 0x10:
        s |= MeterStatus.TEMPORARY_ERROR
    return s

