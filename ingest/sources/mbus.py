"""``kind = "mbus"``: poll wired M-Bus slaves behind one concentrator on a schedule.

Settings (the ``[ingest.sources.<name>]`` table)::

    [ingest.sources.basement-a]
    kind = "mbus"
    transport = "serial"          # "serial" (level converter) or "tcp" (transparent gateway)
    port = "/dev/ttyUSB0"         # serial: device path or pyserial URL
    baudrate = 2400               # serial: 300 .. 38400 (8E1)
    host = "10.1.2.3"             # tcp: gateway host
    tcp_port = 10001              # tcp: gateway port
    interval_s = 900              # one poll cycle every interval_s seconds
    align = true                  # start cycles on multiples of interval_s (wall clock)
    timeout_s = 1.0               # answer timeout per request
    retries = 2                   # repeats of a request after silence or a broken frame
    max_telegrams = 16            # multi-telegram readout limit per device
    history = false               # also store stored values (storage n > 0) at their dates
    timezone = "Asia/Shanghai"    # meter clocks and due dates are local time in this zone
    devices = [
      { address = 5 },                                  # primary address
      { secondary = "12345678" },                       # secondary address (8 or 16 hex digits)
      { address = 7, device = "MB-0007", subunit = 0 }, # reading device override, subunit
    ]

Each device's readings are addressed to ``device`` if given, else to the slave's 8-digit
identification number (the meter's ``comm_address``); readings are stamped with the time of
the answer. A device that stays silent, answers garbage or a bad checksum, reports an
application error, or has no volume/energy register becomes a dead letter (source
``mbus:<name>``, the reason code, the raw frame) and the cycle goes on with the next device.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from meterline.config.loader import build
from meterline.errors import DecodeError
from meterline.ingest.mbus_master import MBusMaster, PollError, Readout, SerialTransport, TcpTransport, TransportError
from meterline.ingest.model import DeadLetter, Reading, Source
from meterline.ingest.sources import register
from meterline.ingest.sources.base import Sink
from meterline.ingest.schedule import next_tick
from meterline.protocols.mbus.records import meter_status, to_readings

log = logging.getLogger(__name__)
UTC = dt.timezone.utc


@dataclass(frozen=True, slots=True)
class MBusDevice:
    address: int | None = None
    secondary: str | None = None
    device: str | None = None
    subunit: int = 0

    def validate(self) -> list[str]:
        problems = []
        if (self.address is None) == (self.secondary is None):
            problems.append("give exactly one of address (primary) or secondary")
        if self.address is not None and not 0 <= self.address <= 250:
            problems.append(f"address {self.address} is not a primary address 0..250")
        if self.secondary is not None:
            s = self.secondary
            if len(s) not in (8, 16) or any(ch not in "0123456789abcdefABCDEF" for ch in s):
                problems.append(f"secondary {s!r} is not 8 or 16 hex digits")
        return problems

    @property
    def target(self) -> int | str:
        return self.address if self.address is not None else str(self.secondary).upper()


@dataclass(frozen=True, slots=True)
class MBusSourceSettings:
    kind: str = "mbus"
    transport: Literal["serial", "tcp"] = "serial"
    port: str | None = None
    baudrate: int = 2400
    host: str | None = None
    tcp_port: int = 10001
    interval_s: float = 900.0
    align: bool = True
    timeout_s: float = 1.0
    retries: int = 2
    max_telegrams: int = 16
    history: bool = False
    timezone: str = "UTC"
    devices: tuple[MBusDevice, ...] = field(default_factory=tuple)

    def validate(self) -> list[str]:
        problems = []
        if self.transport == "serial" and not self.port:
            problems.append("port is required for transport 'serial'")
        if self.transport == "tcp" and not self.host:
            problems.append("host is required for transport 'tcp'")
        if self.baudrate not in (300, 600, 1200, 2400, 4800, 9600, 19200, 38400):
            problems.append(f"baudrate {self.baudrate} is not an M-Bus rate (300..38400)")
        if self.interval_s <= 0 or self.timeout_s <= 0:
            problems.append("interval_s and timeout_s must be positive")
        if not 0 <= self.retries <= 10 or not 1 <= self.max_telegrams <= 255:
            problems.append("retries must be 0..10 and max_telegrams 1..255")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(f"timezone {self.timezone!r} is not an IANA time zone")
        if not self.devices:
            problems.append("devices: at least one device is needed")
        return problems


@dataclass(slots=True)
class CycleReport:
    devices: int = 0
    readings: int = 0
    dead_letters: int = 0
    failures: dict[str, str] = field(default_factory=dict)


@register("mbus")
class MBusSource:
    """Polls every device of one concentrator per cycle; see the module docstring."""

    def __init__(self, name: str, settings: dict, sink: Sink) -> None:
        self.name = name
        self.settings = build(MBusSourceSettings, settings, source=f"ingest.sources.{name}",
                              path=f"ingest.sources.{name}")
        self.sink = sink
        self.tz = ZoneInfo(self.settings.timezone)
        self.cycles = 0
        self.last_report: CycleReport | None = None

    def _transport(self):
        s = self.settings
        if s.transport == "tcp":
            return TcpTransport(str(s.host), s.tcp_port, connect_timeout=max(s.timeout_s, 1.0))
        return SerialTransport(str(s.port), baudrate=s.baudrate)

    def _dead(self, reason: str, message: str, raw: bytes | None, device: str | None) -> DeadLetter:
        return DeadLetter(source=f"mbus:{self.name}", reason=reason, message=message, raw=raw, device=device,
                          received_at=dt.datetime.now(UTC))

    def _readings(self, dev: MBusDevice, readout: Readout) -> list[Reading]:
        s = self.settings
        now = dt.datetime.now(UTC).replace(microsecond=0)
        first = readout.telegrams[0].slave
        address = dev.device or (first.id if first is not None and first.id else str(dev.target))
        records = [r for t in readout.telegrams for r in t.records]
        status = int(meter_status(first.status)) if first is not None else 0
        access = first.access_number if first is not None else 0
        return to_readings(records, ts=now, device=address, source=Source.MBUS,
                           source_ref=f"mbus:{self.name}:{address}:{access}", status=status,
                           subunit=dev.subunit, history=s.history, tz=self.tz)

    def poll_once(self) -> tuple[list[Reading], list[DeadLetter], CycleReport]:
        """One blocking poll cycle over every device (run in a worker thread)."""
        s = self.settings
        report = CycleReport()
        readings: list[Reading] = []
        dead: list[DeadLetter] = []
        try:
            transport = self._transport()
        except TransportError as exc:
            dead.append(self._dead(exc.reason, str(exc), None, None))
            report.failures["*"] = str(exc)
            report.dead_letters = len(dead)
            return readings, dead, report
        master = MBusMaster(transport, timeout=s.timeout_s, retries=s.retries, max_telegrams=s.max_telegrams)
        try:
            for dev in s.devices:
                report.devices += 1
                label = str(dev.target)
                readout = None
                try:
                    readout = master.read(dev.target)
                    readings.extend(self._readings(dev, readout))
                except PollError as exc:
                    report.failures[label] = str(exc)
                    dead.append(self._dead(exc.reason, str(exc), exc.raw, label))
                except DecodeError as exc:  # decoded, but nothing to bill from
                    report.failures[label] = str(exc)
                    raw = b"".join(readout.frames) if readout is not None else exc.raw
                    dead.append(self._dead(exc.reason, f"{label}: {exc}", raw, label))
        except TransportError as exc:  # the line itself failed mid-cycle: the rest waits for the next cycle
            report.failures["*"] = str(exc)
            dead.append(self._dead(exc.reason, str(exc), None, None))
        finally:
            master.close()
        report.readings = len(readings)
        report.dead_letters = len(dead)
        return readings, dead, report

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        while not stop.is_set():
            readings, dead, report = await asyncio.to_thread(self.poll_once)
            if readings or dead:
                await self.sink.submit(readings, dead)
            self.cycles += 1
            self.last_report = report
            log.info("mbus %s: cycle %d: %d devices, %d readings, %d failures", self.name, self.cycles,
                     report.devices, report.readings, len(report.failures))
            delay = next_tick(time.time(), s.interval_s, s.align)
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except TimeoutError:
                pass
