"""``object``: the network server already decoded the payload (ChirpStack ``object``, The Things
Stack ``decoded_payload``); take the register from one of its fields.

Parameters: ``field`` (dotted path of the register, default ``value``), ``unit`` (``L m3 Wh kWh
MWh``, default ``L``), ``quantity`` (default ``volume``), ``ts_field`` (optional dotted path of
the reading's time: RFC 3339 text or Unix seconds; default the uplink's time). Numbers are
converted to base units exactly (decimal, truncated), so ``12.345`` m³ is 12 345 L.
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal, InvalidOperation
from typing import Any, Mapping

from meterline.errors import ConfigError
from meterline.ingest.model import Quantity
from meterline.protocols.lorawan.codecs import CodecError, Payload, Register, check_params, register

UTC = dt.timezone.utc
UNITS = {"L": 1, "m3": 1000, "Wh": 1, "kWh": 1000, "MWh": 1_000_000}
QUANTITIES = {"volume": Quantity.VOLUME, "energy": Quantity.ENERGY, "volume_reverse": Quantity.VOLUME_REVERSE}
DEFAULTS = {"field": "value", "unit": "L", "quantity": "volume", "ts_field": ""}


class ObjectCodec:
    name = "object"

    def __init__(self, params: Mapping[str, Any]) -> None:
        p = check_params(self.name, params, DEFAULTS)
        problems = []
        if p["unit"] not in UNITS:
            problems.append(f"codec object: unit {p['unit']!r} is not one of {', '.join(UNITS)}")
        if p["quantity"] not in QUANTITIES:
            problems.append(f"codec object: quantity {p['quantity']!r} is not one of {', '.join(QUANTITIES)}")
        if problems:
            raise ConfigError(problems)
        self.path = tuple(p["field"].split("."))
        self.ts_path = tuple(p["ts_field"].split(".")) if p["ts_field"] else ()
        self.factor = UNITS[p["unit"]]
        self.quantity = QUANTITIES[p["quantity"]]

    def fail(self, message: str, payload: bytes, f_port: int | None, reason: str) -> CodecError:
        return CodecError(message, payload, reason, self.name, f_port)

    def decode(self, payload: bytes, f_port: int | None = None, obj: Mapping[str, Any] | None = None) -> Payload:
        if obj is None:
            raise self.fail("the network server sent no decoded object", payload, f_port, "no_object")
        v = _get(obj, self.path)
        if v is None:
            raise self.fail(f"decoded object has no {'.'.join(self.path)}", payload, f_port, "missing_field")
        value = self._value(v, payload, f_port)
        ts = None
        if self.ts_path:
            ts = self._time(_get(obj, self.ts_path), payload, f_port)
        return Payload((Register(value, self.quantity, ts),), dict(obj))

    def _value(self, v: Any, payload: bytes, f_port: int | None) -> int:
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            raise self.fail(f"{'.'.join(self.path)} is not a number: {v!r:.40}", payload, f_port, "wrong_type")
        if isinstance(v, float) and not math.isfinite(v):
            raise self.fail(f"{'.'.join(self.path)} is not a number: {v!r}", payload, f_port, "bad_value")
        try:
            d = Decimal(repr(v) if isinstance(v, float) else str(v).strip())
        except (InvalidOperation, ValueError) as exc:
            raise self.fail(f"{'.'.join(self.path)} is not a number: {v!r:.40}", payload, f_port, "wrong_type") from exc
        if not d.is_finite() or d.adjusted() > 30:
            raise self.fail(f"{'.'.join(self.path)} is out of range: {v!r:.40}", payload, f_port, "bad_value")
        if d < 0:
            raise self.fail(f"register {'.'.join(self.path)} is negative: {v!r:.40}", payload, f_port,
                            "negative_register")
        out = int(d * self.factor)
        if out >= 2**63:
            raise self.fail(f"{'.'.join(self.path)} is out of range: {v!r:.40}", payload, f_port, "bad_value")
        return out

    def _time(self, v: Any, payload: bytes, f_port: int | None) -> dt.datetime:
        try:
            if isinstance(v, str):
                ts = dt.datetime.fromisoformat(v)
                if ts.tzinfo is None or ts.utcoffset() is None:
                    raise self.fail(f"time {v!r:.40} has no UTC offset", payload, f_port, "naive_timestamp")
                return ts
            if type(v) in (int, float):
                return dt.datetime.fromtimestamp(v, UTC)
        except (ValueError, OverflowError, OSError) as exc:
            raise self.fail(f"bad time {v!r:.40}", payload, f_port, "bad_timestamp") from exc
        raise self.fail(f"{'.'.join(self.ts_path)} is not a time: {v!r:.40}", payload, f_port, "bad_timestamp")


def _get(obj: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    cur: Any = obj
    for key in path:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(key)
    return cur


@register("object")
def _factory(params: Mapping[str, Any]) -> ObjectCodec:
    return ObjectCodec(params)
