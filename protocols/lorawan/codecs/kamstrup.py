"""``kamstrup``: Kamstrup water meters (flowIQ 2200 family) over LoRaWAN.

The frames are OMS/M-Bus records (:mod:`.oms`, decoded by :mod:`meterline.protocols.mbus.records`)
with Kamstrup's own manufacturer-specific VIFEs; what those mean — names, info-code flags and the
meter status they set, the "no value" marker — is data, in ``kamstrup.toml`` next to this module,
together with the codec's vectors. Registers: the volume at the frame's time point and the
hourly inverse compact profile behind it; info flags become the readings' status. A frame
without a register (an installation frame with the module's configuration number) decodes to
no readings rather than an error.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any, Mapping

from meterline.ingest.model import MeterStatus
from meterline.protocols.lorawan.codecs import Payload, register
from meterline.protocols.lorawan.codecs.oms import RecordsPayload, is_profile, records
from meterline.protocols.mbus.records import Function, Record

TABLE_PATH = Path(__file__).with_suffix(".toml")
STATUS = {m.name.lower(): int(m) for m in MeterStatus if m.name and m is not MeterStatus.NONE}
PREFIX = {Function.MINIMUM: "Min ", Function.MAXIMUM: "Max "}


def load_table(path: Path = TABLE_PATH) -> dict[str, Any]:
    with open(path, "rb") as fh:
        return tomllib.load(fh)


class KamstrupCodec(RecordsPayload):
    name = "kamstrup"

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.table = load_table()
        self.DEFAULTS = dict(self.table.get("params", {}))
        super().__init__(params)
        self.manufacturer = {m["vife"]: m for m in self.table.get("manufacturer", [])}
        self.units = self.table.get("units", {})
        self.signed_minimum = bool(self.table.get("invalid", {}).get("signed_minimum"))

    def decode(self, payload: bytes, f_port: int | None = None, obj: Mapping[str, Any] | None = None) -> Payload:
        header, recs = records(payload, self.name, f_port)
        times = {r.storage: r.value for r in recs
                 if r.quantity.startswith("Time point") and isinstance(r.value, dt.datetime)}
        values: list[dict[str, Any]] = []
        warnings: list[str] = []
        status = 0
        for r in recs:
            stamp = times.get(r.storage)
            shown = stamp.strftime("%Y-%m-%dT%H:%M:%S.000") if stamp is not None else None
            if r.quantity.startswith("Time point") or is_profile(r):
                continue
            vife = self._manufacturer_vife(r)
            if vife is not None:
                entry = self.manufacturer.get(vife)
                if entry is None:
                    warnings.append(f"unknown manufacturer VIFE 0x{vife:02X}")
                    continue
                number = int(r.value) if isinstance(r.value, Decimal) else None
                if "flags" in entry:
                    for flag in entry["flags"]:
                        on = number is not None and bool(number >> flag["bit"] & 1)
                        if on and "status" in flag:
                            status |= STATUS[flag["status"]]
                        values.append({"Type": flag["type"], "Value": on, "Unit": "NA", "Timestamp": shown})
                else:
                    values.append({"Type": entry["type"], "Value": number, "Unit": "NA", "Timestamp": shown})
                continue
            value: Any = r.value
            unit = self.units.get(r.unit, r.unit)
            if self._invalid(r):
                value, unit = None, "Invalid"
                warnings.append("Invalid value among data")
            elif isinstance(value, Decimal):
                value = int(value) if value == value.to_integral_value() else float(value)
            values.append({"Type": PREFIX.get(r.function, "") + r.quantity, "Value": value, "Unit": unit,
                           "Timestamp": shown})
        regs, profile, more = self.registers(recs, payload, f_port, status)
        warnings.extend(more)
        for p in profile:
            when = dt.datetime.fromisoformat(p["ts"]).astimezone(self.tz).replace(tzinfo=None)
            v = Decimal(p["value"])
            values.append({"Type": "Volume", "Value": int(v) if v == v.to_integral_value() else float(v),
                           "Unit": self.units.get(p["unit"], p["unit"]),
                           "Timestamp": when.strftime("%Y-%m-%dT%H:%M:%S.000")})
        fields: dict[str, Any] = {"values": values}
        latest = next((v["Value"] for v in values if v["Type"] == "Volume"), None)
        if latest is not None:
            fields["latestVolume"] = latest
        fields["header"] = {"ci": header.ci, "access": header.access, "status": header.status}
        return Payload(tuple(regs), fields, status, tuple(warnings))

    @staticmethod
    def _manufacturer_vife(r: Record) -> int | None:
        if len(r.vif) >= 2 and r.vif[0] == 0xFF:
            return r.vif[1] & 0x7F
        return None

    def _invalid(self, r: Record) -> bool:
        if not self.signed_minimum or not r.data or r.value is None:
            return r.value is None and r.error is not None
        n = len(r.data)
        return n in (1, 2, 3, 4) and int.from_bytes(r.data, "little") == 1 << (8 * n - 1)


@register("kamstrup")
def _kamstrup(params: Mapping[str, Any]) -> KamstrupCodec:
    return KamstrupCodec(params)
