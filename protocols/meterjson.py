"""meterline's own JSON schema for meters and concentrators that push (MQTT, CoAP).

One message carries one reading or a batch::

    {"meter": "860000000000017", "ts": "2026-11-26T02:00:00+08:00", "value": 123456}

    {"id": "c7-000812", "concentrator": "C07", "ts": 1795716000,
     "readings": [{"meter": "860000000000017", "value": 123456},
                  {"meter": "860000000000018", "value": "88.125", "unit": "m3", "status": ["leak"]}]}

Fields of a reading (a batch's ``meter``, ``meter_id``, ``ts``, ``unit`` and ``quantity`` are
the defaults of its readings):

``meter``     the address the meter is registered under (``meter.comm_address``: IMEI, devEUI,
              serial); or ``meter_id``, meterline's integer id of the metering point.
``ts``        ISO 8601 with a UTC offset (``Z`` or ``+08:00``), or Unix seconds (integer or number).
``value``     the cumulative register: an integer in base units (L, Wh), or with ``unit`` any of
              ``L m3 Wh kWh MWh`` as a number or a decimal string, converted exactly and truncated
              to the base unit (a register never counts a litre it has not completed).
``quantity``  ``volume`` (default), ``energy`` or ``volume_reverse``.
``status``    integer bit mask (:class:`~meterline.ingest.model.MeterStatus`) or a list of names
              (``leak burst backflow tamper low_battery dry hardware_error temporary_error``).
``id``        (message) the sender's message id; kept as each reading's ``source_ref``.

A message that is not an object of this shape raises :class:`SchemaError`; in a batch, a bad
reading is reported in :attr:`Decoded.rejected` with its index and the good ones are kept.
Pure: no clock, no I/O.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Mapping

from meterline.errors import DecodeError
from meterline.ingest.model import MeterStatus, Quantity, Reading, Source

UTC = dt.timezone.utc
MAX_VALUE = 2**63 - 1

#: base units per unit: value in base units = value × factor
UNITS: dict[str, int] = {"L": 1, "l": 1, "m3": 1000, "Wh": 1, "kWh": 1000, "MWh": 1_000_000}
UNIT_QUANTITY: dict[str, tuple[Quantity, ...]] = {
    "L": (Quantity.VOLUME, Quantity.VOLUME_REVERSE), "l": (Quantity.VOLUME, Quantity.VOLUME_REVERSE),
    "m3": (Quantity.VOLUME, Quantity.VOLUME_REVERSE),
    "Wh": (Quantity.ENERGY,), "kWh": (Quantity.ENERGY,), "MWh": (Quantity.ENERGY,),
}
QUANTITIES = {"volume": Quantity.VOLUME, "energy": Quantity.ENERGY, "volume_reverse": Quantity.VOLUME_REVERSE}
STATUS_NAMES = {m.name.lower(): int(m) for m in MeterStatus if m.name and m is not MeterStatus.NONE}
READING_KEYS = frozenset({"meter", "meter_id", "ts", "value", "unit", "quantity", "status"})
BATCH_KEYS = frozenset({"id", "concentrator", "meter", "meter_id", "ts", "unit", "quantity", "readings"})
SINGLE_KEYS = READING_KEYS | {"id"}


class SchemaError(DecodeError):
    """A message does not follow meterline's JSON schema; ``path`` names the offending field."""

    def __init__(self, message: str, raw: bytes | None = None, reason: str = "bad_schema", path: str = "") -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message, raw, reason)


@dataclass(frozen=True, slots=True)
class Rejected:
    """A reading of a batch that could not be decoded."""

    index: int
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Decoded:
    readings: tuple[Reading, ...]
    rejected: tuple[Rejected, ...] = ()
    message_id: str | None = None
    concentrator: str | None = None


def loads(raw: bytes | str) -> Any:
    """``json.loads`` translating its errors into :class:`SchemaError` (reason ``bad_json``)."""
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        data = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")
        raise SchemaError(f"not valid JSON: {exc}", data, "bad_json") from exc


def decode(raw: bytes | str, *, source: Source = Source.MQTT, meter: str | None = None) -> Decoded:
    """Decode a JSON message (bytes or text); ``meter`` is the default meter address (e.g. from
    a CoAP path ``/r/{meter}``)."""
    obj = loads(raw)
    try:
        return decode_object(obj, source=source, meter=meter)
    except SchemaError as exc:
        if exc.raw is None:
            exc.raw = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")
        raise


def decode_object(obj: Any, *, source: Source = Source.MQTT, meter: str | None = None) -> Decoded:
    """Decode an already parsed message (JSON or CBOR) into readings."""
    if not isinstance(obj, dict):
        raise SchemaError(f"expected an object, got {_type(obj)}", reason="bad_schema")
    msg_id = obj.get("id")
    if msg_id is not None:
        if isinstance(msg_id, bool) or not isinstance(msg_id, (str, int)):
            raise SchemaError(f"expected a string, got {_type(msg_id)}", reason="wrong_type", path="id")
        msg_id = str(msg_id)
    if "readings" not in obj:
        unknown = obj.keys() - SINGLE_KEYS
        if unknown:
            raise SchemaError(f"unknown field(s) {', '.join(sorted(map(str, unknown)))}", reason="bad_schema")
        r = _fast(obj, meter, None, source, msg_id)
        if r is None:
            r = _reading(obj, _Defaults(meter, None, None, None, None), source, msg_id, "")
        return Decoded((r,), (), msg_id)
    unknown = obj.keys() - BATCH_KEYS
    if unknown:
        raise SchemaError(f"unknown field(s) {', '.join(sorted(map(str, unknown)))}", reason="bad_schema")
    items = obj["readings"]
    if not isinstance(items, list):
        raise SchemaError(f"expected a list, got {_type(items)}", reason="wrong_type", path="readings")
    concentrator = obj.get("concentrator")
    if concentrator is not None and not isinstance(concentrator, str):
        raise SchemaError(f"expected a string, got {_type(concentrator)}", reason="wrong_type", path="concentrator")
    defaults = _Defaults(
        _opt_meter(obj, "meter", meter),
        _opt_meter_id(obj),
        _timestamp(obj["ts"], "ts") if "ts" in obj else None,
        _unit(obj["unit"], "unit") if "unit" in obj else None,
        _quantity(obj["quantity"], "quantity") if "quantity" in obj else None,
    )
    readings: list[Reading] = []
    rejected: list[Rejected] = []
    fast = defaults.meter_id is None and defaults.unit is None and defaults.quantity is None
    for i, item in enumerate(items):
        if fast and type(item) is dict:
            r = _fast(item, defaults.meter, defaults.ts, source, msg_id)
            if r is not None:
                readings.append(r)
                continue
        try:
            if not isinstance(item, dict):
                raise SchemaError(f"expected an object, got {_type(item)}", reason="bad_schema", path=f"readings[{i}]")
            unknown = item.keys() - READING_KEYS
            if unknown:
                raise SchemaError(f"unknown field(s) {', '.join(sorted(map(str, unknown)))}", reason="bad_schema",
                                  path=f"readings[{i}]")
            readings.append(_reading(item, defaults, source, msg_id, f"readings[{i}]."))
        except SchemaError as exc:
            rejected.append(Rejected(i, exc.reason, str(exc)))
    return Decoded(tuple(readings), tuple(rejected), msg_id, concentrator)


@dataclass(frozen=True, slots=True)
class _Defaults:
    meter: str | None
    meter_id: int | None
    ts: dt.datetime | None
    unit: str | None
    quantity: Quantity | None


_VOLUME = Quantity.VOLUME
_fromtimestamp = dt.datetime.fromtimestamp
_fromisoformat = dt.datetime.fromisoformat


def _fast(d: dict, meter: str | None, ts: dt.datetime | None, source: Source, msg_id: str | None) -> Reading | None:
    """The common shapes, checked cheaply: ``{"meter": str, "ts": int|str, "value": int}`` (meter and
    ts may come from the defaults). None: take the careful path (which also names the problem)."""
    n = 1
    m = d.get("meter")
    if m is not None:
        if type(m) is not str or not m:
            return None
        n += 1
    elif meter is None or "meter_id" in d:
        return None
    else:
        m = meter
    t = d.get("ts")
    if t is not None:
        n += 1
        tt = type(t)
        try:
            if tt is int:
                ts = _fromtimestamp(t, UTC)
            elif tt is str:
                ts = _fromisoformat(t)
                if ts.tzinfo is None:
                    return None
            else:
                return None
        except (ValueError, OverflowError, OSError):
            return None
    elif ts is None:
        return None
    v = d.get("value")
    if type(v) is not int or v < 0 or v > MAX_VALUE or len(d) != n:
        return None
    return Reading(ts, v, _VOLUME, None, m, source, msg_id, 0)


def _reading(d: Mapping[str, Any], defaults: _Defaults, source: Source, msg_id: str | None, where: str) -> Reading:
    meter = d.get("meter")
    meter_id = None
    if meter is None:
        if "meter_id" in d:
            meter_id = _meter_id(d["meter_id"], where + "meter_id")
        else:
            meter, meter_id = defaults.meter, defaults.meter_id
            if meter is None and meter_id is None:
                raise SchemaError("no meter named (meter or meter_id)", reason="missing_field", path=where + "meter")
    elif type(meter) is not str or not meter:
        raise SchemaError(f"expected a non-empty string, got {_type(meter)}", reason="wrong_type", path=where + "meter")
    if "ts" in d:
        ts = _timestamp(d["ts"], where + "ts")
    elif defaults.ts is not None:
        ts = defaults.ts
    else:
        raise SchemaError("missing", reason="missing_field", path=where + "ts")
    if "quantity" in d:
        quantity = _quantity(d["quantity"], where + "quantity")
    else:
        quantity = defaults.quantity or Quantity.VOLUME
    if "value" not in d:
        raise SchemaError("missing", reason="missing_field", path=where + "value")
    unit = _unit(d["unit"], where + "unit") if "unit" in d else defaults.unit
    if unit is not None and quantity not in UNIT_QUANTITY[unit]:
        raise SchemaError(f"unit {unit} does not measure {quantity.name.lower()}", reason="bad_unit", path=where + "unit")
    value = _value(d["value"], UNITS[unit] if unit else 1, where + "value")
    status = _status(d["status"], where + "status") if "status" in d else 0
    return Reading(ts=ts, value=value, quantity=quantity, meter_id=meter_id, device=meter if meter_id is None else None,
                   source=source, source_ref=msg_id, status=status)


def _opt_meter(d: Mapping[str, Any], key: str, default: str | None) -> str | None:
    if key not in d:
        return default
    v = d[key]
    if type(v) is not str or not v:
        raise SchemaError(f"expected a non-empty string, got {_type(v)}", reason="wrong_type", path=key)
    return v


def _opt_meter_id(d: Mapping[str, Any]) -> int | None:
    return _meter_id(d["meter_id"], "meter_id") if "meter_id" in d else None


def _meter_id(v: Any, path: str) -> int:
    if type(v) is not int or not 0 < v <= MAX_VALUE:
        raise SchemaError(f"expected a positive integer, got {_type(v)} {v!r:.40}", reason="wrong_type", path=path)
    return v


def _timestamp(v: Any, path: str) -> dt.datetime:
    if type(v) is str:
        try:
            ts = dt.datetime.fromisoformat(v)
        except ValueError as exc:
            raise SchemaError(f"not an ISO 8601 timestamp: {v!r:.60}", reason="bad_timestamp", path=path) from exc
        if ts.tzinfo is None or ts.utcoffset() is None:
            raise SchemaError(f"timestamp {v!r:.60} has no UTC offset", reason="naive_timestamp", path=path)
        return ts
    if type(v) in (int, float):
        try:
            return dt.datetime.fromtimestamp(v, UTC)
        except (OverflowError, ValueError, OSError) as exc:
            raise SchemaError(f"Unix time {v!r} is out of range", reason="bad_timestamp", path=path) from exc
    if type(v) is dt.datetime:  # CBOR tags 0 and 1
        if v.tzinfo is None or v.utcoffset() is None:
            raise SchemaError(f"timestamp {v.isoformat()} has no UTC offset", reason="naive_timestamp", path=path)
        return v
    raise SchemaError(f"expected an ISO 8601 string or Unix seconds, got {_type(v)}", reason="wrong_type", path=path)


def _unit(v: Any, path: str) -> str:
    if type(v) is not str or v not in UNITS:
        raise SchemaError(f"unknown unit {v!r:.40} (one of {', '.join(UNITS)})", reason="bad_unit", path=path)
    return v


def _quantity(v: Any, path: str) -> Quantity:
    if type(v) is not str or v not in QUANTITIES:
        raise SchemaError(f"unknown quantity {v!r:.40} (one of {', '.join(QUANTITIES)})", reason="bad_quantity",
                          path=path)
    return QUANTITIES[v]


def _value(v: Any, factor: int, path: str) -> int:
    """Exact conversion to base units, truncating digits finer than the base unit."""
    t = type(v)
    if t is int:
        out = v * factor
    elif t is float or t is str:
        if t is float and not math.isfinite(v):
            raise SchemaError(f"register value {v!r} is not a number", reason="bad_value", path=path)
        try:
            d = Decimal(repr(v) if t is float else v.strip())
        except (InvalidOperation, ValueError) as exc:
            raise SchemaError(f"register value {v!r:.40} is not a decimal number", reason="bad_value", path=path) from exc
        if not d.is_finite():
            raise SchemaError(f"register value {v!r:.40} is not a number", reason="bad_value", path=path)
        if d < 0:
            raise SchemaError(f"register value {v!r:.40} is negative", reason="negative_register", path=path)
        if d.adjusted() > 30:
            raise SchemaError(f"register value {v!r:.40} is out of range", reason="bad_value", path=path)
        out = int(d * factor)  # int() truncates toward zero
    else:
        raise SchemaError(f"expected a number, got {_type(v)}", reason="wrong_type", path=path)
    if out < 0:
        raise SchemaError(f"register value {v!r:.40} is negative", reason="negative_register", path=path)
    if out > MAX_VALUE:
        raise SchemaError(f"register value {v!r:.40} is out of range", reason="bad_value", path=path)
    return out


def _status(v: Any, path: str) -> int:
    if type(v) is int:
        if not 0 <= v < 2**31:
            raise SchemaError(f"status {v} is out of range", reason="bad_status", path=path)
        return v
    if type(v) is list:
        bits = 0
        for name in v:
            if type(name) is not str or name.lower() not in STATUS_NAMES:
                raise SchemaError(f"unknown status {name!r:.40} (one of {', '.join(STATUS_NAMES)})",
                                  reason="bad_status", path=path)
            bits |= STATUS_NAMES[name.lower()]
        return bits
    raise SchemaError(f"expected an integer or a list of names, got {_type(v)}", reason="wrong_type", path=path)


def _type(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def encode(reading: Mapping[str, Any] | None = None, **fields: Any) -> bytes:
    """The JSON bytes of a message (for simulators and tests): ``encode(meter=..., ts=..., value=...)``."""
    body = dict(reading or {}, **fields)
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, default=_default).encode()


def _default(v: Any) -> Any:
    if isinstance(v, dt.datetime):
        return v.isoformat()
    if isinstance(v, Decimal):
        return str(v)
    raise TypeError(f"cannot encode {type(v).__name__}")
