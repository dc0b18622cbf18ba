"""The ``modbus`` ingest source against pymodbus servers started by the test.

The simulated devices serve the registers of the built-in profiles' own vectors, so what the
poller writes to PostgreSQL must be exactly the vectors' expected readings. Failing devices:
one answers with a Modbus exception (registers missing), one answers too late (after its
timeout: silence as far as the poller is concerned), one serves a NaN float. The poller records each as a dead letter and keeps polling the others.
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
import threading
import tty

import psycopg
import pytest
from pymodbus import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer

from meterline.errors import ConfigError
from meterline.ingest.fieldsim.modbus import sim_device
from meterline.ingest.model import Quantity, Source
from meterline.ingest.sources import load
from meterline.ingest.sources.base import Sink
from meterline.ingest.writer import BatchingWriter
from meterline.protocols.modbus.profiles import load_profile

HEAT = load_profile("heat-meter-float32")
WATER = load_profile("water-meter-uint32-litres")
HEAT_LE = load_profile("heat-meter-int64-wh-le")


async def _too_slow(*_args) -> None:
    await asyncio.sleep(0.5)  # answers, but long after the device's 0.2 s timeout


DEVICES = [
    sim_device(1, HEAT.vectors[0].registers),
    sim_device(2, WATER.vectors[0].registers),
    sim_device(3, {(3, 0): (1, 2)}),  # too few registers for the water profile: exception 2
    sim_device(4, WATER.vectors[0].registers, action=_too_slow),
    sim_device(5, {(4, 0): (0x7FC0, 0) * 5, (4, 20): (0, 1)}),  # NaN energy
    sim_device(6, HEAT_LE.vectors[0].registers),
]

SETTINGS_DEVICES = [
    {"unit": 3, "profile": "water-meter-uint32-litres", "device": "WM-3"},
    {"unit": 4, "profile": "water-meter-uint32-litres", "device": "WM-4", "timeout_s": 0.2, "retries": 1},
    {"unit": 5, "profile": "heat-meter-float32", "device": "HM-5"},
    {"unit": 1, "profile": "heat-meter-float32", "device": "HM-1"},
    {"unit": 2, "profile": "water-meter-uint32-litres", "device": "WM-2"},
    {"unit": 6, "profile": "heat-meter-int64-wh-le", "device": "HM-6"},
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def meters(conn: psycopg.Connection, company) -> dict[str, int]:
    ids = {}
    for dev in ("HM-1", "WM-2", "WM-3", "WM-4", "HM-5", "HM-6"):
        ids[dev] = conn.execute(
            """INSERT INTO meter (company_id, serial, comm_address, protocol, register_digits, display_unit)
               VALUES (%s, %s, %s, 'modbus', 12, 'L') RETURNING id""", [company.id, dev, dev]).fetchone()[0]
    return ids


async def _poll(db_dsn: str, make_server, settings: dict):
    server = make_server()  # pymodbus servers are built inside the running loop
    await server.serve_forever(background=True)
    writer = BatchingWriter(db_dsn).start()
    try:
        source = load("modbus")("pump-room", settings, Sink(writer))
        stop = asyncio.Event()
        task = asyncio.create_task(source.run(stop))
        while source.cycles < 1 and not task.done():
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 10)
        return source
    finally:
        await server.shutdown()
        await asyncio.to_thread(writer.close)


def _check(conn: psycopg.Connection, meters: dict[str, int]) -> None:
    got = {(m, q): v for m, q, v, src in conn.execute("SELECT meter_id, quantity, value, source FROM reading")
           if src == int(Source.MODBUS)}
    assert got == {
        (meters["HM-1"], int(Quantity.ENERGY)): 12345000, (meters["HM-1"], int(Quantity.VOLUME)): 678250,
        (meters["WM-2"], int(Quantity.VOLUME)): 123456789, (meters["WM-2"], int(Quantity.VOLUME_REVERSE)): 1500,
        (meters["HM-6"], int(Quantity.ENERGY)): 9876543210, (meters["HM-6"], int(Quantity.VOLUME)): 12345670,
    }
    dead = conn.execute("SELECT device, reason, message FROM dead_letter WHERE source = 'modbus:pump-room' "
                        "ORDER BY device").fetchall()
    assert [(d, r) for d, r, _ in dead] == [("HM-5", "bad_registers"), ("WM-3", "modbus_exception"),
                                            ("WM-4", "no_response")]
    messages = {d: m for d, _, m in dead}
    assert "exception response 2 (illegal data address)" in messages["WM-3"]
    assert "no answer after 2 attempt(s) of 0.2s" in messages["WM-4"]
    assert "energy: float32 register holds nan" in messages["HM-5"]


def test_modbus_tcp(db_dsn: str, conn: psycopg.Connection, meters) -> None:
    port = free_port()
    server = lambda: ModbusTcpServer(DEVICES, address=("127.0.0.1", port), ignore_missing_devices=True)  # noqa: E731
    source = asyncio.run(_poll(db_dsn, server, {"kind": "modbus", "transport": "tcp", "host": "127.0.0.1",
                                                "port": port, "timeout_s": 1.0, "devices": SETTINGS_DEVICES}))
    _check(conn, meters)
    # contiguous registers are read in one request each: HM-1 needs 2, WM-2 1, HM-6 1
    assert source.last_report.readings == 6


def test_modbus_rtu_over_tcp(db_dsn: str, conn: psycopg.Connection, meters) -> None:
    port = free_port()
    server = lambda: ModbusTcpServer(DEVICES, address=("127.0.0.1", port), framer=FramerType.RTU,  # noqa: E731
                                     ignore_missing_devices=True)
    asyncio.run(_poll(db_dsn, server, {"transport": "rtu-over-tcp", "host": "127.0.0.1", "port": port,
                                       "devices": SETTINGS_DEVICES}))
    _check(conn, meters)


@pytest.fixture
def pty_pair():
    """Two pseudo-terminals bridged back to back: a null-modem cable between two serial ports."""
    a_master, a_slave = os.openpty()
    b_master, b_slave = os.openpty()
    for fd in (a_slave, b_slave):
        tty.setraw(fd)
    stop = threading.Event()

    def bridge() -> None:
        pairs = {a_master: b_master, b_master: a_master}
        while not stop.is_set():
            ready, _, _ = select.select(list(pairs), [], [], 0.05)
            for fd in ready:
                try:
                    os.write(pairs[fd], os.read(fd, 1024))
                except OSError:
                    pass

    thread = threading.Thread(target=bridge, daemon=True)
    thread.start()
    yield os.ttyname(a_slave), os.ttyname(b_slave)
    stop.set()
    thread.join(1)
    for fd in (a_master, a_slave, b_master, b_slave):
        os.close(fd)


def test_modbus_rtu_serial_line(db_dsn: str, conn: psycopg.Connection, meters, pty_pair) -> None:
    server_port, client_port = pty_pair
    server = lambda: ModbusSerialServer(DEVICES, framer=FramerType.RTU, port=server_port,  # noqa: E731
                                        baudrate=9600, ignore_missing_devices=True)
    asyncio.run(_poll(db_dsn, server, {"transport": "rtu", "serial_port": client_port, "baudrate": 9600,
                                       "devices": SETTINGS_DEVICES}))
    _check(conn, meters)


def test_unreachable_gateway_is_a_dead_letter_per_device(db_dsn: str, conn: psycopg.Connection, meters) -> None:
    port = free_port()  # nobody listens here

    async def go() -> None:
        writer = BatchingWriter(db_dsn).start()
        try:
            source = load("modbus")("pump-room", {"host": "127.0.0.1", "port": port, "retries": 0,
                                                  "devices": SETTINGS_DEVICES[:2]}, Sink(writer))
            readings, dead, report = await source.poll_once()
            await Sink(writer).submit(readings, dead)
        finally:
            await asyncio.to_thread(writer.close)

    asyncio.run(go())
    reasons = [r for (r,) in conn.execute("SELECT reason FROM dead_letter ORDER BY device")]
    assert reasons == ["transport_error", "transport_error"]


def test_settings_and_profiles_are_validated() -> None:
    with pytest.raises(ConfigError) as info:
        load("modbus")("x", {"transport": "rtu", "devices": [
            {"unit": 1, "profile": "no-such-profile", "device": "A"}]}, sink=None)
    assert any("serial_port is required" in p for p in info.value.problems)
    with pytest.raises(ConfigError) as info:
        load("modbus")("x", {"host": "h", "devices": [{"unit": 1, "profile": "no-such-profile", "device": "A"}]},
                       sink=None)
    assert any("devices[0].profile: no Modbus profile 'no-such-profile'" in p for p in info.value.problems)
