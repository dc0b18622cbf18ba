"""Shared pieces of the push-ingest integration tests: meters, a service in a thread, MQTT publishing."""

from __future__ import annotations

import asyncio
import getpass
import json
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import paho.mqtt.client as paho
import psycopg

from meterline.config.settings import settings_from_mapping
from meterline.ingest.service import IngestService

IMEIS = [f"86{i:013d}" for i in range(1, 21)]
EUIS = [f"70b3d5{i:010x}" for i in range(1, 21)]


def add_meters(conn: psycopg.Connection, company_id: int) -> dict[str, int]:
    """Twenty NB-IoT meters (IMEI) and twenty LoRaWAN meters (devEUI); address → meter id."""
    out = {}
    for i, addr in enumerate(IMEIS + EUIS):
        out[addr] = conn.execute(
            """INSERT INTO meter (company_id, serial, comm_address, register_digits, protocol)
               VALUES (%s, %s, %s, 6, %s) RETURNING id""",
            [company_id, f"WM{i:06d}", addr, "mqtt" if addr in IMEIS else "lorawan"]).fetchone()[0]
    return out


class ServiceThread:
    """An :class:`IngestService` on its own event loop in a thread (stop() = SIGTERM)."""

    def __init__(self, dsn: str, sources: dict[str, dict[str, Any]], writer: dict[str, Any] | None = None) -> None:
        self.settings = settings_from_mapping({
            "ingest": {"metrics_port": 0, "sources": sources, "shutdown_timeout_s": 20},
            "writer": writer or {"max_delay_ms": 10, "batch_size": 5000, "queue_max": 50000},
        })
        self.service = IngestService(self.settings, dsn)
        self.service.build_sources()
        self.loop = asyncio.new_event_loop()
        self.stop_event: asyncio.Event | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        async def main() -> None:
            self.stop_event = asyncio.Event()
            await self.service.run(self.stop_event)

        try:
            self.loop.run_until_complete(main())
        except BaseException as exc:  # reported by stop()
            self.error = exc
        finally:
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.loop.close()

    def source(self, name: str) -> Any:
        return next(st.source for st in self.service.sources if st.name == name)

    def __enter__(self) -> "ServiceThread":
        self.thread.start()
        return self

    def stop(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + 10
        while self.stop_event is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if self.stop_event is not None:
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "service did not stop"
        if self.error:
            raise self.error

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_for(predicate: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def publish(host: str, port: int, messages: list[tuple[str, bytes]], qos: int = 1) -> None:
    """Publish at QoS 1 and wait until the broker has acknowledged every message."""
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}")
    c.connect(host, port)
    c.loop_start()
    try:
        infos = [c.publish(t, p, qos=qos) for t, p in messages]
        for info in infos:
            info.wait_for_publish(30)
    finally:
        c.disconnect()
        c.loop_stop()


def count(conn: psycopg.Connection, sql: str, *args: Any) -> int:
    return conn.execute(sql, list(args)).fetchone()[0]


def reading_json(meter: str, ts: int, value: int, **extra: Any) -> bytes:
    return json.dumps({"meter": meter, "ts": ts, "value": value, **extra}).encode()


def free_udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CoapClient:
    """A plain UDP socket speaking CoAP (confirmable POSTs; one answer awaited per call)."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        import socket

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(10)
        self.addr = (host, port)
        self.mid = 1000

    def send(self, datagram: bytes):
        """Send a request; return its answer: piggybacked on the ACK, or a separate response
        (matched by token and acknowledged, as RFC 7252 §5.2.2 says)."""
        from meterline.protocols.coap import message

        request = message.parse(datagram)
        self.sock.sendto(datagram, self.addr)
        while True:
            data, _ = self.sock.recvfrom(2048)
            reply = message.parse(data)
            if reply.type == message.CON:
                self.sock.sendto(message.encode(message.ACK, 0, reply.message_id), self.addr)
            if reply.code == 0:
                continue  # empty ACK: the answer follows separately
            if reply.token != request.token:
                continue  # a repeated separate response to an earlier request
            return reply

    def post(self, meter: str, body: bytes, content_format: int | None = 50, mid: int | None = None,
             token: bytes | None = None):
        from meterline.protocols.coap import message

        if mid is None:
            self.mid += 1
            mid = self.mid
        if token is None:
            token = mid.to_bytes(4, "big")
        return self.send(message.request(["r", meter], body, mid, token, content_format))

    def close(self) -> None:
        self.sock.close()


class Mosquitto:
    """A private Mosquitto on a free port with its own configuration and persistence directory
    (never the machine's shared broker), so a test may stop and restart it."""

    BINARY = "/usr/sbin/mosquitto"

    def __init__(self, directory: "Path") -> None:
        import socket

        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {self.dir}/\nmax_queued_messages 0\nautosave_interval 0\n"
            f"log_dest file {self.dir}/mosquitto.log\n"
            # started as root, Mosquitto would switch to its own user and could not write here
            f"user {getpass.getuser()}\n")
        self.proc: "subprocess.Popen | None" = None

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def start(self) -> "Mosquitto":
        import shutil
        import socket
        import subprocess

        binary = self.BINARY if shutil.which(self.BINARY) else shutil.which("mosquitto")
        assert binary, "mosquitto is not installed"
        self.proc = subprocess.Popen([binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(self.address, 0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError("private mosquitto did not start")

    def stop(self) -> None:
        """Graceful stop (SIGTERM): Mosquitto writes its persistence file and exits."""
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(20)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()
