"""``oms``: LoRaWAN payloads carrying OMS / M-Bus application-layer records (EN 13757-3).

The payload is a CI byte, the header it announces, then records::

    0x78  no header
    0x7A  short header: access number, status, configuration (2 bytes)
    0x72  long header: identification (4), manufacturer (2), version, medium, access, status, configuration (2)

Records are decoded by :mod:`meterline.protocols.mbus.records` (DIF/VIF, exact values); this
module adds what LoRaWAN metering payloads use on top of them:

* **registers**: volume and energy registers (instantaneous, tariff 0) in base units; a stored
  value (storage n > 0) is stamped with the time point record of the same storage number, in
  the device's ``timezone`` (parameter, default UTC); storage 0 takes the uplink's time;
* **inverse compact profiles** (VIFE 0x13, variable-length data): a spacing byte (bits 7–6
  increment mode: 00 absolute, 01 increments, 10 decrements, 11 signed differences; bits 5–4 unit:
  seconds, minutes, hours, days; bits 3–0 element size in bytes), a spacing value, then the
  elements, going back in time from the base value (the register of the same storage number);
  an element with every bit set means "no value" and ends the profile;
* **status**: the header's status byte as :class:`~meterline.ingest.model.MeterStatus`.

``sensus-iperl`` is this codec under the name of the Sensus iPERL's device profile (its payload
is OMS with a short header and a compact hourly profile).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal
from typing import Any, Mapping, Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from meterline.errors import ConfigError, DecodeError
from meterline.ingest.model import MeterStatus
from meterline.protocols.lorawan.codecs import CodecError, Payload, Register, check_params, register
from meterline.protocols.mbus.errors import NoRegisterError
from meterline.protocols.mbus.records import Function, Record, decode_records, meter_status, to_readings

UTC = dt.timezone.utc
HEADER_LENGTH = {0x78: 0, 0x7A: 4, 0x72: 12}
INVERSE_COMPACT_PROFILE = 0x13
SPACING_UNIT = (dt.timedelta(seconds=1), dt.timedelta(minutes=1), dt.timedelta(hours=1), dt.timedelta(days=1))
_NOW = dt.datetime(1970, 1, 1, tzinfo=UTC)  # stands for "the uplink's time" when asking records.to_readings


@dataclasses.dataclass(frozen=True, slots=True)
class Header:
    ci: int
    access: int | None = None
    status: int | None = None
    config: int | None = None
    ident: str | None = None
    manufacturer: int | None = None
    version: int | None = None
    medium: int | None = None


def split(payload: bytes, codec: str, f_port: int | None) -> tuple[Header, bytes]:
    """The header and the record bytes of a payload."""
    if not payload:
        raise CodecError("empty payload", payload, "empty_payload", codec, f_port)
    ci = payload[0]
    n = HEADER_LENGTH.get(ci)
    if n is None:
        raise CodecError(f"unsupported CI field 0x{ci:02X} (expected 78, 7A or 72)", payload, "unsupported_frame",
                         codec, f_port)
    if len(payload) < 1 + n:
        raise CodecError(f"header of CI 0x{ci:02X} truncated", payload, "truncated", codec, f_port)
    h = payload[1:1 + n]
    if ci == 0x7A:
        header = Header(ci, h[0], h[1], int.from_bytes(h[2:4], "little"))
    elif ci == 0x72:
        header = Header(ci, h[8], h[9], int.from_bytes(h[10:12], "little"), h[3::-1].hex(),
                        int.from_bytes(h[4:6], "little"), h[6], h[7])
    else:
        header = Header(ci)
    return header, payload[1 + n:]


def records(payload: bytes, codec: str, f_port: int | None) -> tuple[Header, list[Record]]:
    header, body = split(payload, codec, f_port)
    try:
        return header, decode_records(body)
    except DecodeError as exc:
        raise CodecError(f"records: {exc}", payload, exc.reason, codec, f_port) from exc


def is_profile(rec: Record) -> bool:
    return len(rec.vif) >= 2 and (rec.vif[-1] & 0x7F) == INVERSE_COMPACT_PROFILE and rec.vif[0] & 0x80 != 0


def _scale(rec: Record) -> Decimal | None:
    """The value of one unit of the profile's VIF (e.g. 0.001 m³), asked of the record decoder."""
    probe = bytes([0x01, rec.vif[0] & 0x7F, 0x01])  # DIF 8-bit integer, the VIF alone, value 1
    try:
        (r,) = decode_records(probe)
    except (DecodeError, ValueError):
        return None
    return r.value if isinstance(r.value, Decimal) else None


def profile_values(rec: Record, base: Decimal, base_time: dt.datetime) -> list[tuple[dt.datetime, Decimal]]:
    """The values of an inverse compact profile, newest first, each with its time (UTC)."""
    data = rec.data
    if len(data) < 2:
        raise ValueError("compact profile shorter than its spacing bytes")
    control, spacing_value = data[0], data[1]
    mode, unit, size = control >> 6, (control >> 4) & 0x03, control & 0x0F
    if size not in (1, 2, 3, 4, 6, 8):
        raise ValueError(f"compact profile element size {size} is not supported")
    elements = data[2:]
    if len(elements) % size:
        raise ValueError(f"compact profile of {len(elements)} bytes is not a whole number of {size}-byte elements")
    scale = _scale(rec)
    if scale is None:
        raise ValueError("compact profile of a unit without a numeric scale")
    step = SPACING_UNIT[unit] * spacing_value
    if not step:
        raise ValueError("compact profile spacing is zero")
    invalid = (1 << (8 * size)) - 1
    out = []
    value = base
    when = base_time.astimezone(UTC)
    for k in range(0, len(elements), size):
        raw = int.from_bytes(elements[k:k + size], "little")
        if raw == invalid:
            break
        if mode == 0:
            value = raw * scale
        elif mode == 1:
            value = value - raw * scale
        elif mode == 2:
            value = value + raw * scale
        else:
            signed = raw - (1 << (8 * size)) if raw >> (8 * size - 1) else raw
            value = value - signed * scale
        when = when - step
        out.append((when, value))
    return out


def register_of(rec: Record, value: Decimal, ts: dt.datetime) -> Register | None:
    """A register (base units, exact) of ``rec``'s quantity and unit holding ``value`` at ``ts``."""
    probe = dataclasses.replace(rec, value=value, storage=0, function=Function.INSTANTANEOUS, tariff=0,
                                modifiers=tuple(m for m in rec.modifiers if "compact" not in m), error=None)
    try:
        (r,) = to_readings([probe], ts=ts, subunit=rec.subunit)
    except (NoRegisterError, ValueError):
        return None
    return Register(r.value, r.quantity, ts)


class RecordsPayload:
    """What the OMS-family codecs share: registers, profiles, status from records."""

    name = "oms"
    DEFAULTS: Mapping[str, Any] = {"timezone": "UTC"}

    def __init__(self, params: Mapping[str, Any]) -> None:
        p = check_params(self.name, params, self.DEFAULTS)
        try:
            self.tz = ZoneInfo(p["timezone"]) if p["timezone"] != "UTC" else UTC
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError([f"codec {self.name}: timezone {p['timezone']!r} is not an IANA time zone"]) from None
        self.params = p

    def fail(self, message: str, payload: bytes, f_port: int | None, reason: str) -> CodecError:
        return CodecError(message, payload, reason, self.name, f_port)

    def registers(self, recs: Sequence[Record], payload: bytes, f_port: int | None, status: int,
                  ) -> tuple[list[Register], list[dict[str, Any]], list[str]]:
        """Registers (base value and profiles), the profile values as fields, and warnings."""
        warnings: list[str] = []
        try:
            base = to_readings(recs, ts=_NOW, history=True, tz=self.tz)
        except NoRegisterError:
            base = []
        out = [Register(r.value, r.quantity, None if r.ts == _NOW else r.ts, status) for r in base]
        profile_fields: list[dict[str, Any]] = []
        for rec in recs:
            if not is_profile(rec):
                continue
            found = self._base_of(rec, recs)
            if found is None:
                raise self.fail(f"compact profile of storage {rec.storage} without its base value and time",
                                payload, f_port, "no_base_value")
            base_rec, base_time = found
            try:
                values = profile_values(rec, base_rec.value, base_time)
            except ValueError as exc:
                raise self.fail(str(exc), payload, f_port, "bad_profile") from exc
            for k, (when, value) in enumerate(values, 1):
                reg = register_of(base_rec, value, when)
                if reg is None:
                    continue
                if reg.value < 0:
                    warnings.append(f"profile value {k} of storage {rec.storage} is negative; profile cut there")
                    break
                out.append(dataclasses.replace(reg, status=status))
                profile_fields.append({"storage": rec.storage + k, "ts": when.isoformat(), "value": str(value),
                                       "unit": rec.unit})
        return out, profile_fields, warnings

    def _base_of(self, profile: Record, recs: Sequence[Record]) -> tuple[Record, dt.datetime] | None:
        base = time = None
        for r in recs:
            if r is profile or r.storage != profile.storage or r.subunit != profile.subunit or r.tariff != profile.tariff:
                continue
            if base is None and r.quantity == profile.quantity and isinstance(r.value, Decimal) and not is_profile(r) \
                    and r.function is Function.INSTANTANEOUS:
                base = r
            if time is None and r.quantity.startswith("Time point") and isinstance(r.value, dt.datetime):
                time = r.value.replace(tzinfo=self.tz)
        if base is None or time is None:
            return None
        return base, time


class OmsCodec(RecordsPayload):
    name = "oms"

    def decode(self, payload: bytes, f_port: int | None = None, obj: Mapping[str, Any] | None = None) -> Payload:
        header, recs = records(payload, self.name, f_port)
        status = int(meter_status(header.status)) if header.status is not None else 0
        regs, profile, warnings = self.registers(recs, payload, f_port, status)
        if not regs:
            raise self.fail("no volume or energy register among the records", payload, f_port, "no_register")
        fields = {
            "ci": header.ci, "access": header.access, "status": header.status, "config": header.config,
            "alarms": [m.name for m in MeterStatus if m.name and m is not MeterStatus.NONE and status & m],
            "records": [_record_fields(r) for r in recs],
            "profile": profile,
        }
        if header.ident is not None:
            fields.update(ident=header.ident, manufacturer=header.manufacturer, version=header.version,
                          medium=header.medium)
        return Payload(tuple(regs), fields, status, tuple(warnings))


def _record_fields(r: Record) -> dict[str, Any]:
    v = r.value
    shown: Any = str(v) if isinstance(v, Decimal) else v.isoformat() if isinstance(v, (dt.date, dt.time)) else \
        v.hex() if isinstance(v, bytes) else v
    if is_profile(r):
        shown = r.data.hex()
    return {"function": r.function.name.lower(), "storage": r.storage, "tariff": r.tariff, "subunit": r.subunit,
            "quantity": r.quantity, "unit": r.unit, "value": shown, "compact_profile": is_profile(r)}


@register("oms")
def _oms(params: Mapping[str, Any]) -> OmsCodec:
    return OmsCodec(params)


class SensusIperl(OmsCodec):
    name = "sensus-iperl"


@register("sensus-iperl")
def _sensus(params: Mapping[str, Any]) -> SensusIperl:
    return SensusIperl(params)
