"""Simulated Modbus meters: pymodbus simulator devices and a TCP server in a background thread.

``sim_device(unit, {(function, address): words})`` is one device serving holding (function 3)
and input (function 4) registers; :func:`water_meter` serves the built-in
``water-meter-uint32-litres`` profile's registers for a volume in litres. :class:`ModbusTcpSim`
runs a Modbus TCP server for a list of devices on 127.0.0.1 in its own thread and event loop
(pymodbus servers must be built inside a running loop), for callers that are not asyncio code.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any, Callable

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice


def sim_device(unit: int, registers: dict[tuple[int, int], tuple[int, ...]],
               action: Callable[..., Any] | None = None) -> SimDevice:
    """A device answering ``unit`` with the given register words (others: exception 2)."""
    holding = [SimData(a, values=list(w), datatype=DataType.REGISTERS) for (fn, a), w in registers.items() if fn == 3]
    inputs = [SimData(a, values=list(w), datatype=DataType.REGISTERS) for (fn, a), w in registers.items() if fn == 4]
    filler = [SimData(60000, values=[0], datatype=DataType.REGISTERS)]
    return SimDevice(unit, simdata=([SimData(0, values=[False], datatype=DataType.BITS)],
                                    [SimData(0, values=[False], datatype=DataType.BITS)],
                                    holding or filler, inputs or filler), action=action)


def water_meter(unit: int, litres: int, *, reverse_litres: int = 0, flow_lph: int = 0, status: int = 0) -> SimDevice:
    """A water meter of profile ``water-meter-uint32-litres`` (holding registers 0..5)."""
    if not 0 <= litres < 2**32 or not 0 <= reverse_litres < 2**32:
        raise ValueError("volumes must fit uint32 litres")
    words = (litres >> 16, litres & 0xFFFF, reverse_litres >> 16, reverse_litres & 0xFFFF, flow_lph & 0xFFFF,
             status & 0xFFFF)
    return sim_device(unit, {(3, 0): words})


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ModbusTcpSim:
    """A Modbus TCP server for ``devices`` on 127.0.0.1, served from a background thread."""

    def __init__(self, devices: list[SimDevice], port: int | None = None) -> None:
        self.devices = devices
        self.port = port or free_tcp_port()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: ModbusTcpServer | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="modbus-sim", daemon=True)

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            async def start() -> None:
                self._server = ModbusTcpServer(self.devices, address=("127.0.0.1", self.port),
                                               ignore_missing_devices=True)
                await self._server.serve_forever(background=True)

            loop.run_until_complete(start())
        except BaseException as exc:  # noqa: BLE001 - reported to the starter
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._server.shutdown())
            loop.close()

    def start(self, timeout: float = 10.0) -> "ModbusTcpSim":
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            raise RuntimeError(f"the simulated Modbus server did not start: {self._error}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> "ModbusTcpSim":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
