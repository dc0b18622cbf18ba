"""``kind = "modbus"``: poll Modbus meters and concentrators (pymodbus, TCP and RTU) on a schedule.

Settings (the ``[ingest.sources.<name>]`` table)::

    [ingest.sources.pump-room]
    kind = "modbus"
    transport = "tcp"            # "tcp" (Modbus TCP), "rtu" (serial line), "rtu-over-tcp" (serial server)
    host = "10.1.2.4"            # tcp, rtu-over-tcp
    port = 502                   # tcp, rtu-over-tcp
    serial_port = "/dev/ttyUSB1" # rtu
    baudrate = 9600              # rtu
    parity = "N"                 # rtu: N, E or O
    stopbits = 1                 # rtu
    interval_s = 900             # one poll cycle every interval_s seconds
    align = true                 # start cycles on multiples of interval_s
    timeout_s = 1.0              # default answer timeout per request
    retries = 2                  # default repeats of a request that got no answer
    max_gap = 0                  # read across gaps of up to this many unused registers
    devices = [
      { unit = 1, profile = "heat-meter-float32", device = "HM-0001" },
      { unit = 7, profile = "/etc/meterline/my-meter.toml", device = "WM-0007", timeout_s = 3.0, retries = 0 },
    ]

``profile`` names a built-in profile (``protocols/modbus/profiles``) or a TOML file. Each
device's registers are read in as few batched requests as the profile allows; its billing
registers become readings addressed to ``device`` (the meter's ``comm_address``), stamped with
the time of the answer. A device that does not answer, answers with a Modbus exception, or
whose registers do not decode becomes a dead letter (source ``modbus:<name>``) and the cycle
goes on with the next device.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import Literal

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from meterline.config.loader import build
from meterline.errors import ConfigError, DecodeError, MeterlineError
from meterline.ingest.model import DeadLetter, Reading
from meterline.ingest.schedule import next_tick
from meterline.ingest.sources import register
from meterline.ingest.sources.base import Sink
from meterline.protocols.modbus.profiles import Profile, ReadBlock, decode_registers, load_profile, plan_reads, to_readings

log = logging.getLogger(__name__)
UTC = dt.timezone.utc

EXCEPTION_CODES = {
    1: "illegal function", 2: "illegal data address", 3: "illegal data value", 4: "server device failure",
    5: "acknowledge", 6: "server device busy", 8: "memory parity error", 10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


class ModbusPollError(MeterlineError):
    """A device could not be read; ``reason`` is the dead-letter reason code."""

    def __init__(self, reason: str, message: str, raw: bytes | None = None) -> None:
        self.reason = reason
        self.raw = raw
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class ModbusDevice:
    unit: int
    profile: str
    device: str
    timeout_s: float | None = None
    retries: int | None = None

    def validate(self) -> list[str]:
        problems = []
        if not 0 <= self.unit <= 247:
            problems.append(f"unit {self.unit} is not a Modbus device id 0..247")
        if self.timeout_s is not None and self.timeout_s <= 0:
            problems.append("timeout_s must be positive")
        if self.retries is not None and not 0 <= self.retries <= 10:
            problems.append("retries must be 0..10")
        return problems


@dataclass(frozen=True, slots=True)
class ModbusSourceSettings:
    kind: str = "modbus"
    transport: Literal["tcp", "rtu", "rtu-over-tcp"] = "tcp"
    host: str | None = None
    port: int = 502
    serial_port: str | None = None
    baudrate: int = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: int = 1
    interval_s: float = 900.0
    align: bool = True
    timeout_s: float = 1.0
    retries: int = 2
    max_gap: int = 0
    devices: tuple[ModbusDevice, ...] = field(default_factory=tuple)

    def validate(self) -> list[str]:
        problems = []
        if self.transport in ("tcp", "rtu-over-tcp") and not self.host:
            problems.append(f"host is required for transport {self.transport!r}")
        if self.transport == "rtu" and not self.serial_port:
            problems.append("serial_port is required for transport 'rtu'")
        if self.interval_s <= 0 or self.timeout_s <= 0:
            problems.append("interval_s and timeout_s must be positive")
        if not 0 <= self.retries <= 10 or not 0 <= self.max_gap <= 100:
            problems.append("retries must be 0..10 and max_gap 0..100")
        if not self.devices:
            problems.append("devices: at least one device is needed")
        return problems


@dataclass(slots=True)
class CycleReport:
    devices: int = 0
    readings: int = 0
    requests: int = 0
    dead_letters: int = 0
    failures: dict[str, str] = field(default_factory=dict)


@register("modbus")
class ModbusSource:
    """Polls every device of one Modbus line or gateway per cycle; see the module docstring."""

    def __init__(self, name: str, settings: dict, sink: Sink) -> None:
        self.name = name
        path = f"ingest.sources.{name}"
        self.settings = build(ModbusSourceSettings, settings, source=path, path=path)
        self.sink = sink
        problems = []
        self.profiles: dict[str, Profile] = {}
        self.plans: dict[str, list[ReadBlock]] = {}
        for i, dev in enumerate(self.settings.devices):
            if dev.profile in self.profiles:
                continue
            try:
                profile = load_profile(dev.profile)
            except ConfigError as exc:
                problems += [f"{path}.devices[{i}].profile: {p}" for p in exc.problems]
                continue
            self.profiles[dev.profile] = profile
            self.plans[dev.profile] = plan_reads(profile.registers, max_gap=self.settings.max_gap)
        if problems:
            raise ConfigError(problems, path)
        self.cycles = 0
        self.last_report: CycleReport | None = None

    def _client(self):
        s = self.settings
        longest = max([s.timeout_s] + [d.timeout_s for d in s.devices if d.timeout_s is not None]) + 1.0
        if s.transport == "rtu":
            return AsyncModbusSerialClient(str(s.serial_port), framer=FramerType.RTU, baudrate=s.baudrate,
                                           parity=s.parity, stopbits=s.stopbits, timeout=longest, retries=0,
                                           reconnect_delay=0)
        framer = FramerType.SOCKET if s.transport == "tcp" else FramerType.RTU
        return AsyncModbusTcpClient(str(s.host), port=s.port, framer=framer, timeout=longest, retries=0,
                                    reconnect_delay=0)

    def _dead(self, reason: str, message: str, raw: bytes | None, device: str | None) -> DeadLetter:
        return DeadLetter(source=f"modbus:{self.name}", reason=reason, message=message, raw=raw, device=device,
                          received_at=dt.datetime.now(UTC))

    async def _read_block(self, client, dev: ModbusDevice, block: ReadBlock, report: CycleReport) -> list[int]:
        timeout = dev.timeout_s if dev.timeout_s is not None else self.settings.timeout_s
        retries = dev.retries if dev.retries is not None else self.settings.retries
        read = client.read_holding_registers if block.function == 3 else client.read_input_registers
        what = f"unit {dev.unit}: read of {block.count} register(s) at {block.function}:{block.address}"
        last = ""
        for attempt in range(retries + 1):
            if not client.connected and not await client.connect():
                raise ModbusPollError("transport_error", f"{what}: cannot connect to {self._where()}")
            report.requests += 1
            try:
                # the device's own timeout; pymodbus's (the longest of all devices) never fires first
                rr = await asyncio.wait_for(read(block.address, count=block.count, device_id=dev.unit), timeout)
            except (ModbusException, TimeoutError) as exc:
                last = str(exc) or type(exc).__name__
                log.info("%s: attempt %d failed: %s", what, attempt + 1, last)
                continue
            if rr.isError():
                code = getattr(rr, "exception_code", 0)
                text = EXCEPTION_CODES.get(code, f"exception code {code}")
                raise ModbusPollError("modbus_exception", f"{what}: exception response {code} ({text})",
                                      bytes([rr.function_code, code]))
            words = list(rr.registers)
            if len(words) != block.count:
                raise ModbusPollError("bad_response", f"{what}: got {len(words)} register(s)")
            return words
        raise ModbusPollError("no_response", f"{what}: no answer after {retries + 1} attempt(s) "
                                             f"of {timeout:g}s ({last})")

    def _where(self) -> str:
        s = self.settings
        return str(s.serial_port) if s.transport == "rtu" else f"{s.host}:{s.port}"

    async def poll_once(self) -> tuple[list[Reading], list[DeadLetter], CycleReport]:
        report = CycleReport()
        readings: list[Reading] = []
        dead: list[DeadLetter] = []
        client = self._client()
        try:
            for dev in self.settings.devices:
                report.devices += 1
                profile = self.profiles[dev.profile]
                blocks: dict[tuple[int, int], list[int]] = {}
                try:
                    for block in self.plans[dev.profile]:
                        blocks[(block.function, block.address)] = await self._read_block(client, dev, block, report)
                    now = dt.datetime.now(UTC).replace(microsecond=0)
                    values = decode_registers(profile, blocks)
                    readings += to_readings(profile, values, ts=now, device=dev.device,
                                            source_ref=f"modbus:{self.name}:{dev.unit}")
                except ModbusPollError as exc:
                    report.failures[dev.device] = str(exc)
                    dead.append(self._dead(exc.reason, f"{dev.device}: {exc}", exc.raw, dev.device))
                except DecodeError as exc:
                    report.failures[dev.device] = str(exc)
                    raw = b"".join(w.to_bytes(2, "big") for words in blocks.values() for w in words)
                    dead.append(self._dead(exc.reason, f"{dev.device}: {exc}", raw, dev.device))
        finally:
            client.close()
        report.readings = len(readings)
        report.dead_letters = len(dead)
        return readings, dead, report

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        while not stop.is_set():
            readings, dead, report = await self.poll_once()
            if readings or dead:
                await self.sink.submit(readings, dead)
            self.cycles += 1
            self.last_report = report
            log.info("modbus %s: cycle %d: %d devices, %d requests, %d readings, %d failures", self.name,
                     self.cycles, report.devices, report.requests, report.readings, len(report.failures))
            try:
                await asyncio.wait_for(stop.wait(), timeout=next_tick(time.time(), s.interval_s, s.align))
            except TimeoutError:
                pass
