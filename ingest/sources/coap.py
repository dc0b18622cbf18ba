"""CoAP source: an aiocoap server for NB-IoT meters, ``POST /r/{meter}``.

The body is meterline's reading schema in JSON (Content-Format 50) or CBOR (60), one reading or
a batch (:mod:`meterline.protocols.coap`); ``{meter}`` is the address the meter is registered
under (``meter.comm_address``, an IMEI) and names the readings that do not name their own.

Answers:

* ``2.04 Changed`` only after the readings (and any dead letters) are committed; the payload
  says ``written=N duplicates=N dead=N``;
* ``4.00 Bad Request`` with the reason as the diagnostic payload for a body that cannot be read
  (the body is stored as a dead letter first) or whose readings were all refused;
* ``4.04 Not Found`` for an unknown meter or another path; ``5.03 Service Unavailable``
  (Max-Age 5) while shutting down, so the meter retries later.

A confirmable request repeated with the same message id (a retransmission, the ACK having been
lost) is recognised by aiocoap's message-layer deduplication and answered from its cache of
responses, without being processed again; a repeat beyond that is still harmless (the reading
key).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import socket
from dataclasses import dataclass
from typing import Any

import aiocoap
import aiocoap.resource as resource
from aiocoap.numbers.codes import Code

from meterline.config.loader import build
from meterline.errors import DecodeError
from meterline.ingest.model import DeadLetter, Source
from meterline.ingest.sources import Sink, register
from meterline.protocols import coap

log = logging.getLogger(__name__)
UTC = dt.timezone.utc


@dataclass(frozen=True, slots=True)
class CoapSettings:
    """``[ingest.sources.<name>]`` with ``kind = "coap"``."""

    kind: str = "coap"
    host: str = "0.0.0.0"
    port: int = 5683
    #: first path segment: POST /<path>/{meter}
    path: str = "r"
    #: UDP receive buffer asked for (the kernel caps it at net.core.rmem_max): a burst of requests
    #: beyond the buffer is dropped and only comes back with the meters' retransmissions, seconds later
    receive_buffer_bytes: int = 4 * 1024 * 1024

    def validate(self) -> list[str]:
        problems = []
        if not 0 <= self.port <= 65535:
            problems.append("port must be between 0 and 65535")
        if self.receive_buffer_bytes < 0:
            problems.append("receive_buffer_bytes must be >= 0")
        if not self.path or "/" in self.path:
            problems.append("path must be one non-empty segment")
        return problems


class ReadingsResource(resource.Resource, resource.PathCapable):
    """``/r/{meter}``: aiocoap hands us the request with the path after ``r``."""

    def __init__(self, source: "CoapSource") -> None:
        super().__init__()
        self.source = source

    async def needs_blockwise_assembly(self, request: aiocoap.Message) -> bool:
        return True

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        return await self.source.handle(request)


@register("coap")
class CoapSource:
    def __init__(self, name: str, settings: dict[str, Any], sink: Sink) -> None:
        where = f"ingest.sources.{name}"
        self.name = name
        self.settings = build(CoapSettings, settings, source=where, path=where)
        self.sink = sink
        self.tolerance = getattr(getattr(sink.writer, "settings", None), "future_tolerance_s", 300)
        self.context: aiocoap.Context | None = None
        self.ready = asyncio.Event()
        self.closing = False
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        site = resource.Site()
        site.add_resource([s.path], ReadingsResource(self))
        # NB-IoT meters speak CoAP over UDP: bind only that (aiocoap's defaults would also open
        # TCP, TLS and WebSocket servers on the same port number, which may be taken)
        self.context = await aiocoap.Context.create_server_context(site, bind=(s.host, s.port), transports=["udp6"])
        self._tune_sockets()
        log.info("coap %s: listening on %s:%s, POST /%s/{meter}", self.name, s.host, s.port, s.path)
        self.ready.set()
        try:
            await stop.wait()
        finally:
            self.closing = True
            try:
                await asyncio.wait_for(self._idle.wait(), 60)
            except asyncio.TimeoutError:
                log.warning("coap %s: %d request(s) still waiting for the writer at shutdown", self.name, self._active)
            await self.context.shutdown()

    def _tune_sockets(self) -> None:
        """Enlarge the receive buffer of aiocoap's UDP sockets (best effort: aiocoap does not expose them)."""
        n = self.settings.receive_buffer_bytes
        for ti in getattr(self.context, "request_interfaces", ()):
            transport = getattr(getattr(getattr(ti, "token_interface", None), "message_interface", None),
                                "transport", None)
            sock = transport.get_extra_info("socket") if transport is not None else None
            if sock is None:
                continue
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, n)
                log.debug("coap %s: receive buffer %d bytes", self.name,
                          sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
            except OSError as exc:
                log.info("coap %s: cannot enlarge the receive buffer: %s", self.name, exc)

    async def handle(self, request: aiocoap.Message) -> aiocoap.Message:
        if self.closing:
            return aiocoap.Message(code=Code.SERVICE_UNAVAILABLE, max_age=5, payload=b"shutting down; retry")
        self._active += 1
        self._idle.clear()
        try:
            return await self._handle(request)
        finally:
            self._active -= 1
            if self._active == 0:
                self._idle.set()

    async def _handle(self, request: aiocoap.Message) -> aiocoap.Message:
        path = request.opt.uri_path
        if len(path) != 1 or not path[0]:
            return aiocoap.Message(code=Code.NOT_FOUND, payload=f"use POST /{self.settings.path}/{{meter}}".encode())
        meter = path[0]
        body = bytes(request.payload)
        fmt = request.opt.content_format
        self.sink.note("received")
        try:
            decoded = coap.decode_body(body, None if fmt is None else int(fmt), meter=meter, source=Source.COAP)
        except DecodeError as exc:
            await self.sink.submit((), [self._dead(body, meter, exc.reason, str(exc))])
            return _bad(f"{exc.reason}: {exc}")
        dead = [self._dead(body, meter, r.reason, r.message, reading=r.index) for r in decoded.rejected]
        latest = dt.datetime.now(UTC) + dt.timedelta(seconds=self.tolerance)
        readings = []
        for i, r in enumerate(decoded.readings):
            if r.ts > latest:
                dead.append(self._dead(body, r.device or meter, "future_timestamp",
                                       f"timestamp {r.ts.isoformat()} is more than {self.tolerance}s in the future",
                                       reading=i))
            else:
                readings.append(r)
        result = await self.sink.submit(readings, dead)
        if readings and not result.written and not result.duplicates:
            reasons = ", ".join(f"{k} ({v})" for k, v in sorted(result.reasons.items()))
            code = Code.NOT_FOUND if set(result.reasons) == {"unknown_meter"} else Code.BAD_REQUEST
            return aiocoap.Message(code=code, payload=f"no reading accepted: {reasons}".encode())
        if not readings:
            reasons = ", ".join(sorted({d.reason for d in dead})) or "no readings"
            return _bad(f"no reading accepted: {reasons}")
        return aiocoap.Message(code=Code.CHANGED, payload=(
            f"written={result.written} duplicates={result.duplicates} dead={result.dead + len(dead)}").encode())

    def _dead(self, body: bytes, meter: str, reason: str, message: str, **detail: Any) -> DeadLetter:
        return DeadLetter(source=self.name, reason=reason, message=message, raw=body, device=meter,
                          detail={"path": f"/{self.settings.path}/{meter}", **detail})


def _bad(reason: str) -> aiocoap.Message:
    return aiocoap.Message(code=Code.BAD_REQUEST, payload=reason.encode("utf-8")[:512])
