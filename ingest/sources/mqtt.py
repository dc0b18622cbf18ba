"""MQTT source: meters, concentrators and LoRaWAN network servers publishing to a broker.

Delivery guarantees:

* **QoS 1, persistent session.** The client connects with a fixed client id, ``clean_start``
  off and a session expiry (MQTT 5), so messages published while the service is down (or
  restarting) wait in its session at the broker.
* **Acknowledge after commit.** paho runs with ``manual_ack``: a message's PUBACK is sent only
  once its readings and dead letters are committed. A crash before that leaves the message
  unacknowledged and the broker redelivers it on the next connect.
* **Duplicates.** Redeliveries, retransmitted LoRaWAN uplinks (same devEUI and fCnt) and
  republished events (same ChirpStack ``deduplicationId`` / TTS ``as:up`` correlation id) are
  recognised in a :class:`~meterline.ingest.dedupe.DedupeWindow` and acknowledged once the
  original is committed; beyond the window the reading key keeps the database unchanged.
* **Several workers.** With ``shared_group`` the subscription is ``$share/<group>/<topic>``:
  the broker hands each message to one member of the group (each worker has its own client id).
* **Reconnect with backoff** (``reconnect_min_s`` doubling to ``reconnect_max_s``). Acks of the
  previous connection are never sent on the next one (packet ids are per connection); the
  broker redelivers those messages and the window recognises them.

The hot path runs on one thread that owns the paho client, driven through paho's external-loop
API (``loop_read``/``loop_write``/``loop_misc``) on a buffered socket (see ``_paho.py``):
each message is decoded as it arrives into the current batch; a batch goes to the writer as
one submission when it holds ``batch_readings`` readings or ``batch_messages`` messages or is
``batch_delay_ms`` old, and its messages are acknowledged from the same thread once it commits.
MQTT 5 is the default: its Receive Maximum lets the broker keep up to ``receive_maximum``
messages in flight to us whatever its own ``max_inflight_messages`` (20 by default in
Mosquitto), which acknowledgement after commit needs; with ``protocol = "auto"`` (the default)
a broker that refuses MQTT 5 is spoken to in 3.1.1, where its own in-flight limit applies.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from hashlib import blake2b
import logging
import select
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from meterline.ingest.dedupe import DedupeWindow, Ticket
from meterline.ingest.messages import DEFAULT_TOPICS, configure
from meterline.ingest.model import DeadLetter, Reading
from meterline.ingest.sources import Sink, register
from meterline.ingest.sources._paho import FastClient, install_lean_properties, tcp_nodelay

log = logging.getLogger(__name__)
UTC = dt.timezone.utc


@dataclass(frozen=True, slots=True)
class MqttSettings:
    """``[ingest.sources.<name>]`` with ``kind = "mqtt"``."""

    kind: str = "mqtt"
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls: bool = False
    #: the persistent session's id; one per worker (default: meterline-<source>-<host name>)
    client_id: str = ""
    #: MQTT version; "auto" uses 5 and falls back to 3.1.1 when the broker refuses it
    protocol: Literal["auto", "5", "3.1.1"] = "auto"
    #: what the messages are: meterline JSON, ChirpStack v4 or The Things Stack v3 uplinks
    format: Literal["meterline", "chirpstack", "tts"] = "meterline"
    #: topic filters (default by format: meterline/up/#, application/+/device/+/event/up, v3/+/devices/+/up)
    topics: list[str] = field(default_factory=list)
    #: share the subscription among the workers of this group: $share/<group>/<topic>
    shared_group: str = ""
    qos: int = 1
    #: how long the broker keeps the session (and queues messages) while we are away (MQTT 5)
    session_expiry_s: int = 7 * 86400
    #: messages the broker may have in flight to us, unacknowledged (MQTT 5 Receive Maximum)
    receive_maximum: int = 65535
    keepalive_s: int = 30
    #: a connection without CONNACK after this long is dropped (and, with "auto", retried in the other version)
    connack_timeout_s: float = 5.0
    #: a batch is handed to the writer when it holds this many readings or messages, or is this old
    batch_readings: int = 5000
    batch_messages: int = 5000
    batch_delay_ms: int = 20
    dedupe_window_s: float = 3600.0
    dedupe_max_keys: int = 200_000
    reconnect_min_s: float = 0.2
    reconnect_max_s: float = 30.0
    #: LoRaWAN formats: the payload codec of devices whose profile is not listed, and its parameters
    codec: str = "object"
    codec_params: dict[str, Any] = field(default_factory=dict)
    #: LoRaWAN formats: device profile name → {codec = "...", <codec parameters>}
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)

    def validate(self) -> list[str]:
        problems = []
        if self.qos not in (0, 1):
            problems.append("qos must be 0 or 1 (1 for acknowledgement after commit)")
        if not 1 <= self.receive_maximum <= 65535:
            problems.append("receive_maximum must be between 1 and 65535")
        if self.batch_messages < 1 or self.batch_readings < 1 or self.batch_delay_ms < 0:
            problems.append("batch_messages and batch_readings must be >= 1, batch_delay_ms >= 0")
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            problems.append("reconnect delays must satisfy 0 < reconnect_min_s <= reconnect_max_s")
        if self.shared_group and any(c in self.shared_group for c in "/+#"):
            problems.append("shared_group must not contain / + or #")
        for t in self.topics:
            if not t or t.startswith("$share/"):
                problems.append(f"topic {t!r}: give the plain filter (shared_group adds $share/<group>/)")
        return problems

    def filters(self) -> list[str]:
        topics = self.topics or [DEFAULT_TOPICS[self.format]]
        return [f"$share/{self.shared_group}/{t}" if self.shared_group else t for t in topics]


def message_key(topic: str, payload: bytes) -> bytes:
    """128-bit digest of a message (topic and bytes), its identity in the dedupe window.

    Hashed in pieces below hashlib's 2 KiB threshold, so the GIL is never released here: on a
    busy process a released GIL costs up to a switch interval (5 ms) to get back."""
    h = blake2b(topic.encode(), digest_size=16)
    n = len(payload)
    if n < 2000:
        h.update(payload)
    else:
        view = memoryview(payload)
        for i in range(0, n, 2000):
            h.update(view[i:i + 2000])
    return h.digest()


@dataclass(slots=True)
class _Batch:
    """Messages decoded since the last submission, and what to acknowledge once it commits."""

    generation: int = 0
    started: float = 0.0
    now: dt.datetime | None = None
    ticket: Ticket = field(default_factory=Ticket)
    readings: list[Reading] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    mids: list[int] = field(default_factory=list)
    keys: list[Any] = field(default_factory=list)
    received: int = 0
    duplicates: int = 0


@register("mqtt")
class MqttSource:
    """Subscribe, decode, write, acknowledge. See the module documentation."""

    def __init__(self, name: str, settings: dict[str, Any], sink: Sink) -> None:
        self.name = name
        tolerance = getattr(getattr(sink.writer, "settings", None), "future_tolerance_s", 300)
        self.settings, self.format = configure(MqttSettings, name, settings, tolerance)
        s = self.settings
        self.sink = sink
        self.client_id = s.client_id or f"meterline-{name}-{socket.gethostname()}"
        self.window = DedupeWindow(s.dedupe_window_s, s.dedupe_max_keys)
        self._acks: deque[tuple[int, int]] = deque()  # (generation, mid), filled by writer threads
        self._generation = 0
        self._connected = False
        self._session_present: bool | None = None
        self._batch = _Batch()
        self._inflight: set[Ticket] = set()
        self._inflight_lock = threading.Lock()
        self._stopping = threading.Event()
        self._reconnect = False
        self.ready = threading.Event()  #: set once subscribed (tests, start-up logs)
        self._error: BaseException | None = None
        self._closing = False
        self.stats = {"received": 0, "acked": 0, "duplicates": 0, "connects": 0}
        self.protocol = "3.1.1" if s.protocol == "3.1.1" else "5"  #: the version in use
        self._downgrade = False
        self._connack = False
        self._connect_started = 0.0
        install_lean_properties()

    # -- lifecycle --------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        thread = threading.Thread(target=self._serve, name=f"mqtt-{self.name}", daemon=True)
        thread.start()
        waiter = asyncio.create_task(stop.wait())
        dead = asyncio.create_task(asyncio.to_thread(thread.join))
        await asyncio.wait({waiter, dead}, return_when=asyncio.FIRST_COMPLETED)
        self._stopping.set()
        waiter.cancel()
        await dead
        if self._error is not None:
            raise self._error

    def _client(self) -> FastClient:
        s = self.settings
        v5 = self.protocol == "5"
        client = FastClient(paho.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
                             clean_session=None if v5 else False, manual_ack=True)
        if s.username is not None:
            client.username_pw_set(s.username, s.password)
        if s.tls:
            client.tls_set()
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    def _connect(self, client: paho.Client) -> None:
        s = self.settings
        if self.protocol == "5":
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = s.session_expiry_s
            props.ReceiveMaximum = s.receive_maximum
            client.connect(s.host, s.port, s.keepalive_s, clean_start=False, properties=props)
        else:
            client.connect(s.host, s.port, s.keepalive_s)
        tcp_nodelay(client)
        sock = client.buffered()
        if sock is not None:
            sock.flush()  # the CONNECT packet

    def _serve(self) -> None:
        try:
            self._serve_inner()
        except BaseException as exc:  # the thread must not die silently
            log.exception("mqtt source %s failed", self.name)
            self._error = exc

    def _serve_inner(self) -> None:
        s = self.settings
        client = self._client()
        delay = s.reconnect_min_s
        idle = min(0.05, max(0.001, s.batch_delay_ms / 1000))
        socket_open = False
        while not self._stopping.is_set():
            if not socket_open or self._reconnect:
                if socket_open:
                    client.disconnect()
                if self._downgrade:  # paho fixes the protocol version per client
                    self._downgrade = False
                    client = self._client()
                self._reconnect = False
                self._lost()
                try:
                    self._connack = False
                    self._connect_started = time.monotonic()
                    self._connect(client)
                    socket_open = True
                    self.stats["connects"] += 1
                except OSError as exc:
                    log.warning("mqtt %s: cannot connect to %s:%d (%s); retrying in %.1fs", self.name, s.host, s.port,
                                exc, delay)
                    self._stopping.wait(delay)
                    delay = min(delay * 2, s.reconnect_max_s)
                    continue
            alive = self._turn(client, idle)
            if alive and not self._connack and time.monotonic() - self._connect_started > s.connack_timeout_s:
                log.warning("mqtt %s: no CONNACK within %.0fs", self.name, s.connack_timeout_s)
                client.disconnect()
                alive = False
            if not alive:
                socket_open = False
                if not self._connack and s.protocol == "auto":
                    # closed before any CONNACK: a broker that does not speak this version does that
                    self.protocol = "3.1.1" if self.protocol == "5" else "5"
                    self._downgrade = True
                    log.warning("mqtt %s: connection closed before CONNACK; trying MQTT %s", self.name, self.protocol)
                log.warning("mqtt %s: connection lost; reconnecting in %.1fs", self.name, delay)
                self._lost()
                self._stopping.wait(delay)
                delay = min(delay * 2, s.reconnect_max_s)
                continue
            if self._connected:
                delay = s.reconnect_min_s
        self._drain(client, socket_open)

    def _turn(self, client: FastClient, timeout: float) -> bool:
        """One turn of the loop: read what arrived (every packet in the buffer), flush batches
        that are due, send the acks of committed ones, keep the connection alive. False when
        the connection is gone."""
        sock = client.buffered()
        if sock is None:
            return False
        try:
            if sock.pending():
                readable = True
            else:
                r, w, _ = select.select([sock], [sock] if sock.out_pending() or client.want_write() else [], [],
                                        timeout)
                readable = bool(r)
                if w and client.loop_write() != paho.MQTT_ERR_SUCCESS:
                    return False
            if readable:
                rc = client.loop_read()
                while rc == paho.MQTT_ERR_SUCCESS and sock.pending() and client.socket() is sock:
                    rc = client.loop_read()
                if rc != paho.MQTT_ERR_SUCCESS or client.socket() is not sock:
                    return False
            self._flush_if_due(client)
            self._send_acks(client)
            if client.loop_misc() != paho.MQTT_ERR_SUCCESS or client.socket() is not sock:
                return False
            sock.flush()
        except OSError as exc:
            log.warning("mqtt %s: socket error: %s", self.name, exc)
            client.disconnect()
            return False
        return True

    def _drain(self, client: paho.Client, socket_open: bool) -> None:
        """Stop: submit what was received, wait for its commit, send the acks, disconnect.

        Messages arriving after the stop are left unacknowledged (the broker keeps them in the
        session for the next start, or for another worker of a shared group)."""
        self._closing = True
        if self._batch.received:
            self._flush(None)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with self._inflight_lock:
                busy = bool(self._inflight)
            if not busy and not self._acks:
                break
            if socket_open:
                socket_open = self._turn(client, 0.01)
            else:
                time.sleep(0.01)
                self._send_acks(client)
        if socket_open:
            self._turn(client, 0.01)  # the last PUBACKs leave
            client.disconnect()
            sock = client.buffered()
            if sock is not None:
                sock.flush()

    # -- paho callbacks (on the source's thread) ------------------------------------------
    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._connack = True
        if reason.is_failure:
            if self.protocol == "5" and self.settings.protocol == "auto" and reason.value in (1, 132):
                log.warning("mqtt %s: the broker does not speak MQTT 5; using 3.1.1 (its own in-flight limit "
                            "applies: raise max_inflight_messages for acknowledgement after commit)", self.name)
                self.protocol = "3.1.1"
                self._downgrade = True
                self._reconnect = True
                return
            log.error("mqtt %s: broker refused the connection: %s", self.name, reason)
            return
        self._connected = True
        self._session_present = bool(getattr(flags, "session_present", False))
        if not self._session_present and self.stats["connects"] > 1:
            log.warning("mqtt %s: the broker had no session for %s (expired?): messages published while away "
                        "were not kept", self.name, self.client_id)
        log.info("mqtt %s: connected to %s:%d as %s (session present: %s)", self.name, self.settings.host,
                 self.settings.port, self.client_id, self._session_present)
        client.subscribe([(t, self.settings.qos) for t in self.settings.filters()])

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        bad = [r for r in reasons if getattr(r, "is_failure", False)]
        if bad:
            log.error("mqtt %s: subscription refused: %s", self.name, bad)
        else:
            self.ready.set()

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._connected = False

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        if self._closing:
            return  # not acknowledged: redelivered later
        b = self._batch
        if not b.received:
            b.started = time.monotonic()
            b.now = dt.datetime.now(UTC)
            b.generation = self._generation
        b.received += 1
        self._take(b, msg.mid, msg.topic, msg.payload)
        s = self.settings
        if len(b.readings) >= s.batch_readings or b.received >= s.batch_messages:
            self._flush(client)

    def _take(self, b: _Batch, mid: int, topic: str, payload: bytes) -> None:
        """Decode one message into the batch, or recognise it as a repeat."""
        window = self.window
        raw_key = message_key(topic, payload)
        prior = window.seen(raw_key)
        if prior is None:
            out = self.format.decode(topic, payload, b.now)
            prior = window.first_seen(out.keys) if out.keys else None
            if prior is None:
                if out.readings:
                    b.readings.extend(out.readings)
                if out.dead:
                    b.dead.extend(out.dead)
                b.keys.append(raw_key)
                if out.keys:
                    b.keys.extend(out.keys)
                    window.add(out.keys, b.ticket, b.started)
                window.add((raw_key,), b.ticket, b.started)
                b.mids.append(mid)
                return
        b.duplicates += 1
        if prior is b.ticket:
            b.mids.append(mid)
        else:
            gen = b.generation
            prior.on_commit(lambda ok: self._acks.append((gen, mid)) if ok else None)

    # -- batches ----------------------------------------------------------------------
    def _lost(self) -> None:
        """The connection is gone: what was received on it will be redelivered."""
        self._connected = False
        self._generation += 1
        orphan = self._batch
        self._batch = _Batch(generation=self._generation)
        orphan.ticket.resolve(False)  # never submitted: its keys must not make the redelivery a "repeat"
        self._acks.clear()

    def _flush_if_due(self, client: paho.Client) -> None:
        b = self._batch
        if b.received and (time.monotonic() - b.started) * 1000 >= self.settings.batch_delay_ms:
            self._flush(client)

    def _flush(self, client: paho.Client | None) -> None:
        batch, self._batch = self._batch, _Batch(generation=self._generation)
        self._submit(batch)

    def _submit(self, b: _Batch) -> None:
        self.window.evict()
        self.stats["received"] += b.received
        self.stats["duplicates"] += b.duplicates
        self.sink.note("received", b.received)
        if b.duplicates:
            self.sink.note("duplicate", b.duplicates)
        ticket, gen, mids, keys = b.ticket, b.generation, b.mids, b.keys
        if not mids:
            ticket.resolve(True)
            return
        with self._inflight_lock:
            self._inflight.add(ticket)

        def done(ok: bool) -> None:
            if ok:
                self._acks.extend((gen, m) for m in mids)
            else:
                self.window.forget(keys)
                self._reconnect = True
            ticket.resolve(ok)
            with self._inflight_lock:
                self._inflight.discard(ticket)

        def committed(future: Any) -> None:
            ok = not future.cancelled() and future.exception() is None
            if not ok:
                log.error("mqtt %s: %d message(s) not written (%s); they stay unacknowledged and will be redelivered",
                          self.name, len(mids), future.exception())
            done(ok)

        if b.readings or b.dead:
            self.sink.submit_threadsafe(b.readings, b.dead).add_done_callback(committed)
        else:  # nothing to write (e.g. status-only uplinks): acknowledge now
            done(True)

    def _send_acks(self, client: paho.Client) -> None:
        """Send the PUBACKs of committed messages received on this connection (others are stale:
        their messages come again after the reconnect)."""
        acks = self._acks
        if not acks:
            return
        gen = self._generation if self._connected else -1
        qos = self.settings.qos
        while acks:
            g, mid = acks.popleft()
            if g == gen and qos:
                # counted before it is sent: whoever has seen the PUBACK also sees it counted
                self.stats["acked"] += 1
                client.ack(mid, qos)
