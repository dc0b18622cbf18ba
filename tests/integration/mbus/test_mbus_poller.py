"""The M-Bus master and the ``mbus`` ingest source against simulated slaves answering with
libmbus corpus frames over a pseudo-terminal and over TCP, writing to a real PostgreSQL."""

from __future__ import annotations

import asyncio
import threading

import psycopg
import pytest

from meterline.errors import ConfigError
from meterline.ingest.mbus_master import BadResponse, MBusMaster, NoResponse, SerialTransport, TcpTransport
from meterline.ingest.model import Quantity, Source
from meterline.ingest.sources import load
from meterline.ingest.sources.base import Sink
from meterline.ingest.writer import BatchingWriter
from meterline.protocols.mbus import frame as mbus
from meterline.ingest.fieldsim.mbus import SimBus, SimSlave
from tests.corpora import LIBMBUS

CORPUS = LIBMBUS


def corpus_frame(name: str, folder: str = "test-frames") -> bytes:
    return mbus.parse_hex((CORPUS / folder / f"{name}.hex").read_text())


KAMSTRUP = corpus_frame("kamstrup_multical_601")  # id 06855817: 37351 kWh, 561.080 m³
ENGELMANN = corpus_frame("EFE_Engelmann-WaterStar")  # id 04990254: 0.332 m³
ITRON = corpus_frame("ACW_Itron-CYBLE-M-Bus-14")  # id 09011523: 0.031 m³
ELSTER_F2 = corpus_frame("Elster-F2")  # id 00802657, ends in DIF 0x1F: more telegrams follow
APP_BUSY = corpus_frame("application_busy", "error-frames")
TEMPERATURE_ONLY = mbus.long_frame(0x08, 9, 0x72, bytes.fromhex("99999999 2C2D 01 04 01 00 0000") + bytes.fromhex("025B1500"))


def elster_second_telegram() -> bytes:
    """Telegram 2 of the Elster readout: the due-date volume (storage 1) and its date."""
    header = bytearray(mbus.decode_response(ELSTER_F2).raw[7:19])
    header[8] = (header[8] + 1) & 0xFF  # access number
    body = bytes.fromhex("4413 98390100" "426C 1F3C")  # 80.280 m³ on 2024-12-31
    return mbus.long_frame(0x08, 1, 0x72, bytes(header) + body)


def make_bus() -> SimBus:
    return SimBus([
        SimSlave(2, [KAMSTRUP], behaviour="silent"),
        SimSlave(3, [KAMSTRUP], behaviour="garbage"),
        SimSlave(4, [ITRON], behaviour="bad_checksum"),
        SimSlave(5, [APP_BUSY]),
        SimSlave(9, [TEMPERATURE_ONLY]),
        SimSlave(17, [KAMSTRUP]),
        SimSlave(None, [ENGELMANN]),  # reachable by secondary address only
        SimSlave(1, [ELSTER_F2, elster_second_telegram()]),
    ])


@pytest.fixture
def stop() -> threading.Event:
    event = threading.Event()
    yield event
    event.set()


@pytest.fixture
def pty_bus(stop: threading.Event) -> tuple[SimBus, str]:
    bus = make_bus()
    path, _ = bus.serve_pty(stop)
    return bus, path


def test_master_reads_primary_secondary_and_multi_telegram(pty_bus) -> None:
    bus, path = pty_bus
    master = MBusMaster(SerialTransport(path), timeout=0.3, retries=1)
    try:
        kam = master.read(17)
        assert kam.telegrams[0].slave.id == "06855817" and kam.frames == [KAMSTRUP]
        eng = master.read("04990254")  # 8 digits: manufacturer, version, medium wildcarded
        assert eng.telegrams[0].slave.manufacturer == "EFE"
        eng16 = master.read("04990254C5140006")
        assert eng16.frames == [ENGELMANN]
        multi = master.read(1)
        assert [t.more_follows for t in multi.telegrams] == [True, False]
        assert multi.telegrams[1].records[0].storage == 1
        # the REQ_UD2s of the readout toggled the FCB: 0x7B then 0x5B
        requests = [f for f in bus.log if len(f) == 5 and f[2] == 1 and f[1] in (0x5B, 0x7B)]
        assert [f[1] for f in requests] == [0x7B, 0x5B]
    finally:
        master.close()


def test_master_failures_carry_reasons(pty_bus) -> None:
    bus, path = pty_bus
    master = MBusMaster(SerialTransport(path), timeout=0.2, retries=1)
    try:
        with pytest.raises(NoResponse, match="no answer within 0.2s"):
            master.read(2)
        assert sum(1 for f in bus.log if f == mbus.snd_nke(2)) == 2  # one retry
        with pytest.raises(BadResponse) as garbage:
            master.read(3)
        assert garbage.value.reason == "bad_frame" and "0x55 starts no M-Bus frame" in str(garbage.value)
        with pytest.raises(BadResponse) as checksum:
            master.read(4)
        assert checksum.value.reason == "bad_checksum"
        with pytest.raises(BadResponse) as busy:
            master.read(5)
        assert busy.value.reason == "slave_error" and "Application busy" in str(busy.value)
        with pytest.raises(NoResponse):
            master.read("12345678")  # nobody has this secondary address
        assert master.read(17).telegrams  # the line still works after all that
    finally:
        master.close()


def test_master_over_tcp_gateway(stop: threading.Event) -> None:
    bus = make_bus()
    port, _ = bus.serve_tcp(stop)
    master = MBusMaster(TcpTransport("127.0.0.1", port), timeout=0.3, retries=0)
    try:
        assert master.read(17).frames == [KAMSTRUP]
        assert len(master.read(1).telegrams) == 2
    finally:
        master.close()


# --- the ingest source, into PostgreSQL ----------------------------------------------------

@pytest.fixture
def meters(conn: psycopg.Connection, company) -> dict[str, int]:
    ids = {}
    for addr, unit in (("06855817", "kWh"), ("04990254", "m3"), ("00802657", "kWh"), ("09011523", "m3")):
        ids[addr] = conn.execute(
            """INSERT INTO meter (company_id, serial, comm_address, protocol, register_digits, display_unit)
               VALUES (%s, %s, %s, 'mbus', 9, %s) RETURNING id""", [company.id, addr, addr, unit]).fetchone()[0]
    return ids


DEVICES = [
    {"address": 2}, {"address": 3}, {"address": 4}, {"address": 5}, {"address": 9},
    {"address": 17}, {"secondary": "04990254"}, {"address": 1},
]


async def _one_cycle(source) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(source.run(stop))
    while source.cycles < 1:
        await asyncio.sleep(0.05)
        assert not task.done() or task.exception() is None
    stop.set()
    await asyncio.wait_for(task, 10)


def _run_source(db_dsn: str, settings: dict):
    writer = BatchingWriter(db_dsn).start()
    try:
        source = load("mbus")("basement-a", settings, Sink(writer))
        asyncio.run(_one_cycle(source))
        return source
    finally:
        writer.close()


def _check_database(conn: psycopg.Connection, meters: dict[str, int]) -> None:
    rows = conn.execute("SELECT meter_id, quantity, value, source FROM reading ORDER BY meter_id, quantity").fetchall()
    assert (meters["06855817"], int(Quantity.VOLUME), 561080, int(Source.MBUS)) in rows
    assert (meters["06855817"], int(Quantity.ENERGY), 37351000, int(Source.MBUS)) in rows
    assert (meters["04990254"], int(Quantity.VOLUME), 332, int(Source.MBUS)) in rows
    assert (meters["00802657"], int(Quantity.VOLUME), 1204270, int(Source.MBUS)) in rows
    dead = conn.execute("SELECT device, reason, raw IS NOT NULL FROM dead_letter WHERE source = 'mbus:basement-a' "
                        "ORDER BY device").fetchall()
    assert dead == [("2", "no_response", False), ("3", "bad_frame", True), ("4", "bad_checksum", True),
                    ("5", "slave_error", True), ("9", "no_register", True)]


def test_source_polls_every_device_over_pty(db_dsn: str, conn: psycopg.Connection, meters, pty_bus) -> None:
    _, path = pty_bus
    source = _run_source(db_dsn, {"kind": "mbus", "transport": "serial", "port": path, "timeout_s": 0.2,
                                  "retries": 1, "interval_s": 3600, "devices": DEVICES})
    _check_database(conn, meters)
    report = source.last_report
    assert (report.devices, report.dead_letters) == (8, 5) and report.readings >= 4


def test_source_with_history_over_tcp(db_dsn: str, conn: psycopg.Connection, meters, stop) -> None:
    bus = make_bus()
    port, _ = bus.serve_tcp(stop)
    _run_source(db_dsn, {"transport": "tcp", "host": "127.0.0.1", "tcp_port": port, "timeout_s": 0.2,
                         "retries": 0, "history": True, "timezone": "Asia/Shanghai", "devices": DEVICES})
    _check_database(conn, meters)
    due = conn.execute("SELECT ts AT TIME ZONE 'Asia/Shanghai', value FROM reading WHERE meter_id = %s "
                       "AND quantity = 1 ORDER BY ts", [meters["00802657"]]).fetchall()
    assert due[0][1] == 80280 and str(due[0][0]) == "2025-01-01 00:00:00"  # end of the due date


def test_unreachable_port_is_a_dead_letter(db_dsn: str, conn: psycopg.Connection, meters) -> None:
    _run_source(db_dsn, {"port": "/dev/does-not-exist", "devices": [{"address": 1}]})
    (reason, message), = conn.execute("SELECT reason, message FROM dead_letter").fetchall()
    assert reason == "transport_error" and "cannot open serial port" in message


def test_settings_are_validated_all_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        load("mbus")("x", {"transport": "serial", "colour": 1,
                           "devices": [{"address": 300}, {"address": 1, "secondary": "12"}]}, sink=None)
    text = "\n".join(info.value.problems)
    for words in ("ingest.sources.x.colour: unknown key", "address 300 is not a primary address",
                  "give exactly one of address", "secondary '12' is not 8 or 16 hex digits"):
        assert words in text
    with pytest.raises(ConfigError) as info:
        load("mbus")("x", {"transport": "serial", "baudrate": 1234, "timezone": "Mars/Base", "devices": []}, sink=None)
    text = "\n".join(info.value.problems)
    for words in ("port is required", "baudrate 1234", "Mars/Base", "at least one device"):
        assert words in text
