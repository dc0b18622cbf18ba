"""Simulated meters over the real protocols, against a running ingest service.

``meterline simulate`` (and the demo and benchmarks) play the registry's own meters: every
meter with an address (``meter.comm_address``) and a pushing protocol becomes a
:class:`SimMeter` whose register advances with each message:

* ``mqtt``      NB-IoT meters publishing meterline JSON to ``<prefix>/<IMEI>`` (or, with
  ``batch`` > 1, concentrators publishing batches of that many readings);
* ``lorawan``   LoRaWAN meters whose uplinks a network server republishes: ChirpStack v4 events
  on ``application/<app>/device/<devEUI>/event/up`` or The Things Stack v3 messages on
  ``v3/<app>@<tenant>/devices/<id>/up``, payload encoded for a codec (Kamstrup OMS records by
  default, like the registry's flowIQ meters; Milesight EM300-DI pulse counts; Axioma Qalcosonic
  W1 frames; or ``object``, the network server's decoded output), device profile named after
  the codec;
* ``coap``      NB-IoT meters posting JSON or CBOR to ``/r/<IMEI>`` (confirmable, retransmitted
  on timeout as RFC 7252 says).

Faults, each a probability per message: ``duplicates`` (sent twice; for LoRaWAN also a
retransmitted uplink with the same fCnt), ``reorder`` (held back behind later messages),
``malformed`` (broken JSON/CBOR, wrong types, negative registers, undecodable payloads),
``skew`` (the meter's clock off by hours, some beyond the future tolerance).

Transports are deliberately lean so that one process can play many meters: MQTT is published
at QoS 1 over a plain socket with a window of unacknowledged messages; CoAP runs a window of
confirmable requests on one UDP socket.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import random
import select
import socket
import struct
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import psycopg

from meterline.errors import MeterlineError
from meterline.protocols.coap import message as coapmsg

UTC = dt.timezone.utc
PROTOCOLS = ("mqtt", "lorawan", "coap")


class SimulatorError(MeterlineError):
    """The simulator could not reach a service or was given something it cannot play."""


@dataclass(slots=True)
class SimMeter:
    address: str
    protocol: str
    register: int  # litres
    modulus: int
    litres_per_message: int
    fcnt: int = 0

    def advance(self, rng: random.Random) -> int:
        self.register = (self.register + rng.randint(0, 2 * self.litres_per_message)) % self.modulus
        return self.register


@dataclass(frozen=True, slots=True)
class Faults:
    duplicates: float = 0.0
    reorder: float = 0.0
    malformed: float = 0.0
    skew: float = 0.0

    @classmethod
    def parse(cls, text: str | None) -> "Faults":
        """``"duplicates=0.01,reorder=0.02,malformed=0.005,skew=0.01"`` (names may be shortened to
        their first letters: dup, reo, mal, skew)."""
        if not text:
            return cls()
        values: dict[str, float] = {}
        for part in text.split(","):
            name, _, value = part.partition("=")
            name = name.strip().lower()
            match = [f for f in ("duplicates", "reorder", "malformed", "skew") if f.startswith(name)] if name else []
            if len(match) != 1:
                raise SimulatorError(f"unknown fault {name!r} (duplicates, reorder, malformed, skew)")
            try:
                p = float(value)
            except ValueError:
                raise SimulatorError(f"fault {match[0]}: {value!r} is not a probability") from None
            if not 0 <= p <= 1:
                raise SimulatorError(f"fault {match[0]}: {p} is not between 0 and 1")
            values[match[0]] = p
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Outgoing:
    transport: str  # "mqtt" or "coap"
    target: str  # MQTT topic, or the meter of /r/<meter>
    payload: bytes
    content_format: int | None = None
    fault: str | None = None
    readings: int = 1


@dataclass(slots=True)
class Plan:
    """How the simulated meters speak."""

    lorawan_server: str = "chirpstack"  # or "tts"
    lorawan_codec: str = "kamstrup"  # or "milesight-em300-di", "axioma-qalcosonic-w1", "object"
    mqtt_prefix: str = "meterline/up"
    coap_format: str = "cbor"  # or "json"
    batch: int = 1  # readings per MQTT message (concentrators)
    future_skew_h: tuple[int, int] = (2, 12)
    past_skew_h: tuple[int, int] = (1, 72)


def load_meters(conn: psycopg.Connection, company_id: int | None = None, protocols: Sequence[str] = PROTOCOLS,
                limit: int | None = None) -> list[SimMeter]:
    """The registry's pushing meters, each starting from its latest stored register."""
    rows = conn.execute(
        """SELECT m.id, m.comm_address, m.protocol, m.register_modulus,
                  coalesce((SELECT r.value FROM reading r WHERE r.meter_id = m.id ORDER BY r.ts DESC LIMIT 1),
                           (SELECT i.initial_register FROM meter_installation i WHERE i.meter_id = m.id
                            ORDER BY i.installed_at DESC LIMIT 1), 0)
           FROM meter m
           WHERE m.comm_address IS NOT NULL AND m.protocol = ANY(%s) AND m.status = 'active'
             AND (%s::int IS NULL OR m.company_id = %s)
           ORDER BY m.id LIMIT %s""",
        [list(protocols), company_id, company_id, limit]).fetchall()
    return [SimMeter(addr, proto, int(value), int(modulus), 50) for _mid, addr, proto, modulus, value in rows]


class MessageFactory:
    """Messages of the simulated meters, round robin, with faults injected."""

    def __init__(self, meters: Sequence[SimMeter], plan: Plan, faults: Faults, seed: int = 1) -> None:
        if not meters:
            raise SimulatorError("no meters to simulate (the registry has no meter with an address and a "
                                 f"protocol among {', '.join(PROTOCOLS)}; try `meterline seed`)")
        self.meters = list(meters)
        self.plan = plan
        self.faults = faults
        self.rng = random.Random(seed)
        self._i = 0
        self._held: deque[tuple[int, Outgoing]] = deque()
        self.injected: dict[str, int] = {}

    def _count(self, fault: str) -> None:
        self.injected[fault] = self.injected.get(fault, 0) + 1

    def stream(self) -> Iterator[Outgoing]:
        rng, faults = self.rng, self.faults
        sent = 0
        while True:
            now = dt.datetime.now(UTC)
            out = self._next(now)
            for o in out:
                if faults.reorder and rng.random() < faults.reorder:
                    self._count("reorder")
                    self._held.append((sent + rng.randint(1, 20), o))
                    continue
                yield o
                sent += 1
                if faults.duplicates and rng.random() < faults.duplicates:
                    self._count("duplicates")
                    yield Outgoing(o.transport, o.target, o.payload, o.content_format, "duplicate", o.readings)
            while self._held and self._held[0][0] <= sent:
                yield self._held.popleft()[1]
                sent += 1

    def _next(self, now: dt.datetime) -> list[Outgoing]:
        m = self.meters[self._i % len(self.meters)]
        self._i += 1
        rng, faults = self.rng, self.faults
        skew = None
        if faults.skew and rng.random() < faults.skew:
            self._count("skew")
            hours = (rng.randint(*self.plan.future_skew_h) if rng.random() < 0.5
                     else -rng.randint(*self.plan.past_skew_h))
            skew = dt.timedelta(hours=hours)
        malformed = bool(faults.malformed and rng.random() < faults.malformed)
        if malformed:
            self._count("malformed")
        ts = now + skew if skew is not None else now
        if m.protocol == "mqtt":
            return [self._mqtt(m, ts, malformed)]
        if m.protocol == "coap":
            return [self._coap(m, ts, malformed)]
        out = self._lorawan(m, ts, malformed)
        if faults.duplicates and rng.random() < faults.duplicates / 2:  # retransmitted uplink: same fCnt
            self._count("retransmission")
            m.fcnt -= 1
            out.append(self._lorawan(m, ts, malformed, register=m.register, retransmit=True)[0])
        return out

    # -- formats ------------------------------------------------------------------------
    def _mqtt(self, m: SimMeter, ts: dt.datetime, malformed: bool) -> Outgoing:
        topic = f"{self.plan.mqtt_prefix}/{m.address}"
        n = max(1, self.plan.batch)
        if n == 1:
            body: dict[str, Any] = {"meter": m.address, "ts": ts.isoformat(), "value": m.advance(self.rng)}
        else:
            base = self._i * n
            readings = []
            for k in range(n):
                mm = self.meters[(base + k) % len(self.meters)]
                readings.append({"meter": mm.address, "value": mm.advance(self.rng)})
            body = {"id": uuid.uuid4().hex, "concentrator": f"SIM{self._i % 100:02d}", "ts": ts.isoformat(),
                    "readings": readings}
        payload = json.dumps(body, separators=(",", ":")).encode()
        if malformed:
            payload = self._break_json(body, payload)
        return Outgoing("mqtt", topic, payload, None, "malformed" if malformed else None, n)

    def _coap(self, m: SimMeter, ts: dt.datetime, malformed: bool) -> Outgoing:
        body: dict[str, Any] = {"ts": ts.isoformat(), "value": m.advance(self.rng)}
        if self.plan.coap_format == "json":
            payload, fmt = json.dumps(body, separators=(",", ":")).encode(), 50
        else:
            import cbor2

            body["ts"] = int(ts.timestamp() * 1000) / 1000
            payload, fmt = cbor2.dumps(body), 60
        if malformed:
            payload = self._break_json(body, payload) if fmt == 50 else payload[: max(1, len(payload) // 2)] + b"\xff"
        return Outgoing("coap", m.address, payload, fmt, "malformed" if malformed else None)

    def _lorawan(self, m: SimMeter, ts: dt.datetime, malformed: bool, register: int | None = None,
                 retransmit: bool = False) -> list[Outgoing]:
        value = m.advance(self.rng) if register is None else register
        m.fcnt += 1
        codec = self.plan.lorawan_codec
        f_port, data, obj = encode_payload(codec, value, ts)
        if malformed and self.rng.random() < 0.5:
            data = b"\x09\xff\x00"  # undecodable by every codec (unknown CI / channel)
            obj = None if codec != "object" else {"value": "n/a"}
        iso = ts.isoformat()
        if self.plan.lorawan_server == "tts":
            app = "meterline-sim"
            topic = f"v3/{app}@sim/devices/{m.address}/up"
            up: dict[str, Any] = {"frm_payload": base64.b64encode(data).decode(), "f_cnt": m.fcnt, "f_port": f_port,
                                  "settings": {"frequency": "868100000"},
                                  "version_ids": {"brand_id": "meterline", "model_id": codec},
                                  "received_at": iso}
            if obj is not None:
                up["decoded_payload"] = obj
            body = {"end_device_ids": {"device_id": m.address, "dev_eui": m.address.upper(),
                                       "application_ids": {"application_id": app}},
                    "correlation_ids": [f"as:up:{uuid.uuid4().hex}"], "received_at": iso, "uplink_message": up}
        else:
            topic = f"application/meterline-sim/device/{m.address}/event/up"
            body = {"deduplicationId": str(uuid.uuid4()), "time": iso,
                    "deviceInfo": {"devEui": m.address, "deviceProfileName": codec, "applicationId": "meterline-sim"},
                    "fCnt": m.fcnt, "fPort": f_port, "data": base64.b64encode(data).decode(),
                    "txInfo": {"frequency": 868100000}}
            if obj is not None:
                body["object"] = obj
        payload = json.dumps(body, separators=(",", ":")).encode()
        if malformed and data != b"\x09\xff\x00":
            payload = payload[: len(payload) // 2]
        return [Outgoing("mqtt", topic, payload, None,
                         "malformed" if malformed else ("retransmission" if retransmit else None))]

    def _break_json(self, body: dict[str, Any], payload: bytes) -> bytes:
        kind = self.rng.randrange(4)
        if kind == 0:
            return payload[: max(1, len(payload) // 2)]  # truncated
        if kind == 1:
            return json.dumps({**body, "value": "about 12 cubic metres"}).encode()  # wrong type
        if kind == 2:
            return json.dumps({**body, "value": -abs(int(body.get("value", 1)) or 1)}).encode()  # negative
        return b"\x00\x01garbage"


def encode_payload(codec: str, litres: int, ts: dt.datetime) -> tuple[int, bytes, dict[str, Any] | None]:
    """(fPort, FRMPayload, decoded object) of one uplink carrying the register ``litres``."""
    if codec == "kamstrup":  # OMS records, no header: the volume register (storage 0: the uplink's time)
        return 1, b"\x78\x04\x13" + struct.pack("<I", litres % 2**32), None
    if codec == "milesight-em300-di":
        return 85, bytes([0x01, 0x75, 90, 0x05, 0xC8]) + struct.pack("<I", litres % 2**32), None
    if codec == "axioma-qalcosonic-w1":
        frame = bytes([1]) + struct.pack("<IBI", int(ts.timestamp()), 0, litres % 2**32) + bytes(41)
        return 100, frame, None
    if codec == "object":
        return 1, b"", {"value": litres, "unit": "L"}
    raise SimulatorError(f"the simulator cannot encode payloads for codec {codec!r} "
                         f"({', '.join(LORAWAN_CODECS)})")


LORAWAN_CODECS = ("kamstrup", "milesight-em300-di", "axioma-qalcosonic-w1", "object")


# -- transports ---------------------------------------------------------------------------

def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n % 128, n // 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


class MqttPublisher:
    """QoS 1 publishing over a plain socket (MQTT 3.1.1), up to ``window`` unacknowledged."""

    def __init__(self, host: str, port: int, window: int = 1000, client_id: str | None = None,
                 timeout: float = 30.0) -> None:
        self.window = window
        self.timeout = timeout
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise SimulatorError(f"cannot reach the MQTT broker at {host}:{port}: {exc}") from exc
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cid = (client_id or f"meterline-sim-{uuid.uuid4().hex[:8]}").encode()
        # clean session, keep-alive off (a slow simulation may be silent for long)
        body = b"\x00\x04MQTT\x04\x02" + struct.pack("!H", 0) + struct.pack("!H", len(cid)) + cid
        self.sock.sendall(b"\x10" + _remaining_length(len(body)) + body)
        ack = self._recv_exact(4)
        if ack[0] != 0x20 or ack[3] != 0:
            raise SimulatorError(f"the MQTT broker refused the connection (CONNACK {ack.hex()})")
        self.sock.setblocking(False)
        self._mid = 0
        self.unacked = 0
        self.sent = 0
        self.acked = 0
        self._out = bytearray()
        self._in = b""

    def _recv_exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise SimulatorError("the MQTT broker closed the connection")
            data += chunk
        return data

    def publish(self, topic: str, payload: bytes) -> None:
        self._mid = self._mid % 65535 + 1
        t = topic.encode()
        body = struct.pack("!H", len(t)) + t + struct.pack("!H", self._mid) + payload
        self._out += b"\x32" + _remaining_length(len(body)) + body
        self.unacked += 1
        self.sent += 1
        if len(self._out) > 65536 or self.unacked >= self.window:
            self.pump(block=self.unacked >= self.window)

    def pump(self, block: bool = False) -> None:
        """Write what is buffered, read PUBACKs; with ``block``, wait until below the window."""
        deadline = time.monotonic() + self.timeout
        while True:
            wl = [self.sock] if self._out else []
            r, w, _ = select.select([self.sock], wl, [], 0.05 if block else 0)
            if w:
                try:
                    n = self.sock.send(self._out)
                    del self._out[:n]
                except BlockingIOError:
                    pass
            if r:
                data = self.sock.recv(65536)
                if not data:
                    raise SimulatorError("the MQTT broker closed the connection")
                self._in += data
                k = len(self._in) // 4  # PUBACKs: 4 bytes each (40 02 mid mid)
                self._in = self._in[k * 4:]
                self.acked += k
                self.unacked -= k
            if not block or (self.unacked < self.window and not self._out):
                return
            if time.monotonic() > deadline:
                raise SimulatorError(f"the MQTT broker acknowledged nothing for {self.timeout:.0f}s")

    def flush(self) -> None:
        deadline = time.monotonic() + self.timeout
        while self.unacked or self._out:
            before = self.acked
            self.pump(block=True)
            if self.acked == before and time.monotonic() > deadline:
                raise SimulatorError(f"{self.unacked} message(s) not acknowledged by the broker")
            if self.acked != before:
                deadline = time.monotonic() + self.timeout

    def close(self) -> None:
        try:
            self.flush()
            self.sock.setblocking(True)
            self.sock.sendall(b"\xe0\x00")
        finally:
            self.sock.close()


@dataclass
class _Pending:
    datagram: bytes
    sent_at: float
    attempts: int
    timeout: float


@dataclass
class CoapStats:
    sent: int = 0
    retransmitted: int = 0
    answered: int = 0
    failed: int = 0  # gave up after MAX_RETRANSMIT
    codes: dict[str, int] = field(default_factory=dict)


class CoapClient:
    """Confirmable POSTs on one UDP socket, up to ``window`` outstanding (RFC 7252 retransmission)."""

    ACK_TIMEOUT = 2.0
    MAX_RETRANSMIT = 4

    def __init__(self, host: str, port: int, window: int = 64, path: str = "r") -> None:
        self.addr = (host, port)
        self.window = window
        self.path = path
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self._mid = random.randrange(65536)
        self._token = random.getrandbits(32)
        self.pending: dict[int, _Pending] = {}
        self.stats = CoapStats()

    def post(self, meter: str, payload: bytes, content_format: int | None) -> None:
        while len(self.pending) >= self.window:
            self.poll(0.05)
        self._mid = (self._mid + 1) % 65536
        self._token = (self._token + 1) % 2**32
        d = coapmsg.request([self.path, meter], payload, self._mid, self._token.to_bytes(4, "big"), content_format)
        self.pending[self._mid] = _Pending(d, time.monotonic(), 0, self.ACK_TIMEOUT * random.uniform(1, 1.5))
        self.sock.sendto(d, self.addr)
        self.stats.sent += 1

    def poll(self, timeout: float = 0.0) -> None:
        r, _, _ = select.select([self.sock], [], [], timeout)
        while r:
            try:
                data, _ = self.sock.recvfrom(4096)
            except BlockingIOError:
                break
            except ConnectionRefusedError:
                continue  # ICMP port unreachable: the server is not up (yet); retransmission covers it
            try:
                msg = coapmsg.parse(data)
            except coapmsg.CoapMessageError:
                continue
            if msg.code == 0:
                continue  # empty ACK: the answer comes separately (we keep waiting)
            if msg.type == coapmsg.CON:  # separate response: acknowledge it
                self.sock.sendto(coapmsg.encode(coapmsg.ACK, 0, msg.message_id), self.addr)
            p = self.pending.pop(msg.message_id, None) if msg.type == coapmsg.ACK else None
            if p is None and msg.type != coapmsg.ACK:
                # a separate response is matched by token; drop any pending with that token
                for mid, q in list(self.pending.items()):
                    if q.datagram[4:8] == msg.token:
                        p = self.pending.pop(mid)
                        break
            if p is not None:
                self.stats.answered += 1
                self.stats.codes[msg.code_str] = self.stats.codes.get(msg.code_str, 0) + 1
        now = time.monotonic()
        for mid, p in list(self.pending.items()):
            if now - p.sent_at > p.timeout:
                if p.attempts >= self.MAX_RETRANSMIT:
                    del self.pending[mid]
                    self.stats.failed += 1
                    continue
                p.attempts += 1
                p.timeout *= 2
                p.sent_at = now
                self.sock.sendto(p.datagram, self.addr)
                self.stats.retransmitted += 1

    def drain(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while self.pending and time.monotonic() < deadline:
            self.poll(0.05)

    def close(self) -> None:
        self.sock.close()


# -- the driver ---------------------------------------------------------------------------

@dataclass
class RunStats:
    messages: int = 0
    readings: int = 0
    seconds: float = 0.0
    by_transport: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    mqtt_acked: int = 0
    coap: CoapStats | None = None


class Simulator:
    def __init__(self, factory: MessageFactory, *, mqtt: tuple[str, int] | None = None,
                 coap: tuple[str, int] | None = None, mqtt_window: int = 1000, coap_window: int = 64) -> None:
        self.factory = factory
        protocols = {m.protocol for m in factory.meters}
        self.mqtt = MqttPublisher(*mqtt, window=mqtt_window) if mqtt and protocols & {"mqtt", "lorawan"} else None
        self.coap = CoapClient(*coap, window=coap_window) if coap and "coap" in protocols else None
        missing = [p for p, t in (("mqtt", self.mqtt), ("lorawan", self.mqtt), ("coap", self.coap))
                   if p in protocols and t is None]
        if missing:
            raise SimulatorError(f"no transport for the {', '.join(sorted(set(missing)))} meters")

    def run(self, count: int | None = None, duration: float | None = None, rate: float | None = None,
            progress: Any = None) -> RunStats:
        """Send ``count`` messages (or for ``duration`` seconds) at ``rate`` messages/s (None: as
        fast as the transports go); wait for every acknowledgement; return what happened."""
        stats = RunStats()
        started = time.monotonic()
        stream = self.factory.stream()
        while True:
            elapsed = time.monotonic() - started
            if (count is not None and stats.messages >= count) or (duration is not None and elapsed >= duration):
                break
            if rate:
                due = int(rate * elapsed) + 1 - stats.messages
                if due <= 0:
                    self._idle(min(0.01, (stats.messages + 1) / rate - elapsed))
                    continue
            else:
                due = 256
            if count is not None:
                due = min(due, count - stats.messages)
            for _ in range(due):
                o = next(stream)
                if o.transport == "mqtt":
                    assert self.mqtt is not None
                    self.mqtt.publish(o.target, o.payload)
                else:
                    assert self.coap is not None
                    self.coap.post(o.target, o.payload, o.content_format)
                stats.messages += 1
                stats.readings += o.readings
                stats.by_transport[o.transport] = stats.by_transport.get(o.transport, 0) + 1
            self._idle(0)
            if progress is not None:
                progress(stats.messages)
        if self.mqtt is not None:
            self.mqtt.flush()
            stats.mqtt_acked = self.mqtt.acked
        if self.coap is not None:
            self.coap.drain()
            stats.coap = self.coap.stats
        stats.seconds = time.monotonic() - started
        stats.faults = dict(self.factory.injected)
        return stats

    def _idle(self, seconds: float) -> None:
        if self.mqtt is not None:
            self.mqtt.pump()
        if self.coap is not None:
            self.coap.poll(max(0.0, seconds))
        elif seconds > 0:
            time.sleep(seconds)

    def close(self) -> None:
        if self.mqtt is not None:
            self.mqtt.close()
        if self.coap is not None:
            self.coap.close()
