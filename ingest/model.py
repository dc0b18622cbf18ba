"""The one reading record every source produces, and the dead-letter record.

A :class:`Reading` is a cumulative register value of one meter at one instant:

* ``value`` is an integer in the quantity's **base unit**: litres for water and gas volume
  (``Quantity.VOLUME``, ``VOLUME_REVERSE``), watt-hours for energy (``Quantity.ENERGY``).
  Decoders convert exactly (m³ × 1000 → L, kWh × 1000 → Wh, MWh × 10⁶ → Wh); digits finer than
  the base unit are truncated (a register never counts a litre it has not completed).
* ``ts`` must be timezone-aware; the writer stores it as UTC.
* the meter is named either by ``meter_id`` (meterline's id of the metering point) or by
  ``device``: the address its sender uses (``meter.comm_address``: a devEUI, an IMEI, an M-Bus
  secondary address, or the serial for meterline's own JSON schema).
* the key is ``(meter, ts, quantity)``: a reading delivered twice is stored once.

Records are frozen and slotted and validate nothing on construction (sources build millions
of them); the writer checks them and sends the bad ones to dead letters with a reason.
Protocol decoders (``protocols/``) import this module and nothing else of ingest.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
from dataclasses import dataclass, field
from typing import Any


class Quantity(enum.IntEnum):
    """What a register counts; each has one base unit (see ``BASE_UNIT``)."""

    VOLUME = 1  #: litres (water, hot water, gas)
    ENERGY = 2  #: Wh (heat, cooling)
    VOLUME_REVERSE = 3  #: litres that flowed backwards (reverse register)


BASE_UNIT = {Quantity.VOLUME: "L", Quantity.ENERGY: "Wh", Quantity.VOLUME_REVERSE: "L"}


class Source(enum.IntEnum):
    """Where a reading came from (kept in step with the ``reading_source`` table)."""

    MQTT = 1
    LORAWAN = 2
    COAP = 3
    MBUS = 4
    WMBUS = 5
    MODBUS = 6
    HANDHELD = 7
    MANUAL = 8
    IMPORT = 9
    SIMULATOR = 10
    ESTIMATE = 11

    @property
    def group(self) -> str:
        """Validation rule group: remote, handheld, manual or estimate."""
        if self is Source.HANDHELD:
            return "handheld"
        if self in (Source.MANUAL, Source.IMPORT):
            return "manual"
        if self is Source.ESTIMATE:
            return "estimate"
        return "remote"


class MeterStatus(enum.IntFlag):
    """Status bits a meter reports with its reading (from M-Bus, wM-Bus, LoRaWAN payloads)."""

    NONE = 0
    LEAK = 1
    BURST = 2
    BACKFLOW = 4
    TAMPER = 8  #: tamper / magnetic interference
    LOW_BATTERY = 16
    DRY = 32  #: empty pipe / no water
    HARDWARE_ERROR = 64
    TEMPORARY_ERROR = 128


@dataclass(frozen=True, slots=True)
class Reading:
    ts: dt.datetime
    value: int
    quantity: Quantity = Quantity.VOLUME
    meter_id: int | None = None
    device: str | None = None
    source: Source = Source.MANUAL
    source_ref: str | None = None
    status: int = 0
    received_at: dt.datetime | None = None

    def key(self) -> tuple[int | str | None, dt.datetime, int]:
        return (self.meter_id if self.meter_id is not None else self.device, self.ts, int(self.quantity))

    def as_dict(self) -> dict[str, Any]:
        return {
            "meter_id": self.meter_id,
            "device": self.device,
            "ts": self.ts.isoformat() if isinstance(self.ts, dt.datetime) else repr(self.ts),
            "value": self.value,
            "quantity": Quantity(self.quantity).name.lower() if self.quantity in Quantity._value2member_map_ else self.quantity,
            "source": Source(self.source).name.lower() if self.source in Source._value2member_map_ else self.source,
            "source_ref": self.source_ref,
            "status": int(self.status),
        }


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An input that could not be accepted: stored with its raw bytes and the reason.

    ``reason`` is a short code for counting (``bad_json``, ``unknown_meter``, ``bad_checksum``);
    ``message`` says what is wrong in words a supervisor can act on.
    """

    source: str
    reason: str
    message: str
    raw: bytes | None = None
    device: str | None = None
    company_id: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    received_at: dt.datetime | None = None

    @classmethod
    def for_reading(cls, reading: Reading, reason: str, message: str, source: str = "writer") -> "DeadLetter":
        body = reading.as_dict()
        return cls(
            source=source,
            reason=reason,
            message=message,
            raw=json.dumps(body, ensure_ascii=False, sort_keys=True).encode(),
            device=reading.device if reading.device is not None else (str(reading.meter_id) if reading.meter_id is not None else None),
            detail=body,
            received_at=reading.received_at,
        )
