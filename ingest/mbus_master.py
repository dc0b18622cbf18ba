"""An M-Bus master (EN 13757-2): talks to slaves over a serial line or a TCP gateway.

Blocking I/O (pyserial, sockets) on purpose: an M-Bus line is half duplex and strictly
request/response, so one poll cycle per concentrator runs in a worker thread
(``asyncio.to_thread``) and never blocks the event loop.

* :class:`SerialTransport` — a level converter on a serial port (2400 8E1 by default);
* :class:`TcpTransport` — a transparent M-Bus gateway (serial server) on TCP;
* :class:`MBusMaster` — ``ping`` (SND_NKE → E5), ``read`` by primary address or secondary
  address (select with CI 0x52, then address 0xFD), multi-telegram readout (REQ_UD2 with the
  FCB toggled while a telegram ends in DIF 0x1F), retries on silence and on broken frames.

Failures raise :class:`PollError` subclasses carrying the device, a reason code for the dead
letter and the bytes received, so the caller can record them and go on with the next device.
"""

from __future__ import annotations

import collections
import logging
import socket
import time
from dataclasses import dataclass
from typing import Protocol

import serial

from meterline.errors import DecodeError, MeterlineError
from meterline.protocols.mbus import frame as mbus
from meterline.protocols.mbus.errors import FrameError

log = logging.getLogger(__name__)


class PollError(MeterlineError):
    """A device could not be read. ``reason`` is the dead-letter reason code."""

    reason = "poll_error"

    def __init__(self, device: str, message: str, raw: bytes | None = None, reason: str | None = None) -> None:
        self.device = device
        self.raw = raw
        if reason:
            self.reason = reason
        super().__init__(f"{device}: {message}")


class NoResponse(PollError):
    reason = "no_response"


class BadResponse(PollError):
    reason = "bad_response"


class TransportError(PollError):
    """The serial port or the gateway could not be opened or used."""

    reason = "transport_error"


class Transport(Protocol):
    def write(self, data: bytes) -> None: ...

    def read(self, size: int, timeout: float) -> bytes: ...

    def flush_input(self) -> None: ...

    def close(self) -> None: ...


class SerialTransport:
    """A serial port with an M-Bus level converter."""

    SLICE_S = 0.02

    def __init__(self, port: str, baudrate: int = 2400, parity: str = "E", bytesize: int = 8, stopbits: int = 1) -> None:
        self.name = port
        try:
            # the port's own timeout stays fixed (changing it re-applies the line settings,
            # which some drivers refuse); read() polls in slices of it up to its deadline
            self._port = serial.serial_for_url(port, baudrate=baudrate, parity=parity, bytesize=bytesize,
                                               stopbits=stopbits, timeout=self.SLICE_S)
        except (serial.SerialException, ValueError) as exc:
            raise TransportError(port, f"cannot open serial port: {exc}") from exc

    def write(self, data: bytes) -> None:
        try:
            self._port.write(data)
            self._port.flush()
        except serial.SerialException as exc:
            raise TransportError(self.name, f"write failed: {exc}") from exc

    def read(self, size: int, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        try:
            while True:
                data = self._port.read(size)
                if data or time.monotonic() >= deadline:
                    return data
        except serial.SerialException as exc:
            raise TransportError(self.name, f"read failed: {exc}") from exc

    def flush_input(self) -> None:
        try:
            self._port.reset_input_buffer()
        except serial.SerialException as exc:
            raise TransportError(self.name, f"flush failed: {exc}") from exc

    def close(self) -> None:
        self._port.close()


class TcpTransport:
    """A transparent M-Bus gateway on TCP (serial server: bytes in, bytes out)."""

    def __init__(self, host: str, port: int, connect_timeout: float = 5.0) -> None:
        self.name = f"{host}:{port}"
        try:
            self._sock = socket.create_connection((host, port), timeout=connect_timeout)
        except OSError as exc:
            raise TransportError(self.name, f"cannot connect to the M-Bus gateway: {exc}") from exc

    def write(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
        except OSError as exc:
            raise TransportError(self.name, f"send failed: {exc}") from exc

    def read(self, size: int, timeout: float) -> bytes:
        self._sock.settimeout(timeout)
        try:
            data = self._sock.recv(size)
        except TimeoutError:
            return b""
        except OSError as exc:
            raise TransportError(self.name, f"receive failed: {exc}") from exc
        if not data:
            raise TransportError(self.name, "the gateway closed the connection")
        return data

    def flush_input(self) -> None:
        self._sock.setblocking(False)
        try:
            while self._sock.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass
        finally:
            self._sock.setblocking(True)

    def close(self) -> None:
        self._sock.close()


@dataclass(frozen=True, slots=True)
class Readout:
    """What one device answered: every telegram of a (multi-telegram) readout."""

    device: str
    telegrams: list[mbus.Response]
    frames: list[bytes]


class MBusMaster:
    """Requests and responses on one M-Bus line.

    ``timeout`` is how long to wait for the first byte of an answer; ``char_timeout`` the
    gap allowed between bytes of one frame. ``last_frames`` keeps the most recent frames
    received (for the log when a decode fails).
    """

    def __init__(self, transport: Transport, *, timeout: float = 1.0, char_timeout: float = 0.2,
                 retries: int = 2, max_telegrams: int = 16) -> None:
        self.transport = transport
        self.timeout = timeout
        self.char_timeout = char_timeout
        self.retries = retries
        self.max_telegrams = max_telegrams
        self.last_frames: collections.deque[bytes] = collections.deque(maxlen=8)

    # -- frames --------------------------------------------------------------------------
    def _read_frame(self, device: str) -> bytes:
        buf = bytearray()
        deadline = time.monotonic() + self.timeout
        need: int | None = None
        while True:
            remaining = deadline - time.monotonic() if not buf else self.char_timeout
            if remaining <= 0:
                break
            chunk = self.transport.read((need - len(buf)) if need else 1 if not buf else 3, remaining)
            if not chunk:
                if buf:
                    break
                continue
            buf += chunk
            try:
                need = mbus.frame_length(bytes(buf))
            except FrameError as exc:
                self.last_frames.append(bytes(buf))
                self.transport.flush_input()
                raise BadResponse(device, f"garbage on the line: {exc}", bytes(buf), "bad_frame") from exc
            if need is not None and len(buf) >= need:
                break
        if not buf:
            raise NoResponse(device, f"no answer within {self.timeout:g}s")
        self.last_frames.append(bytes(buf))
        if need is None or len(buf) < need:
            raise BadResponse(device, f"frame cut off after {len(buf)} bytes", bytes(buf), "truncated")
        return bytes(buf[:need])

    def _exchange(self, request: bytes, device: str, expect_ack: bool = False) -> bytes:
        """Send ``request`` and return the answer frame, retrying silence and broken frames."""
        last: PollError | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                log.info("retry %d of %s for %s: %s", attempt, request[:2].hex(), device, last)
                self.transport.flush_input()
            self.transport.write(request)
            try:
                raw = self._read_frame(device)
                if expect_ack:
                    if raw != bytes([mbus.ACK]):
                        raise BadResponse(device, f"expected ACK (E5), got {raw.hex(' ')}", raw, "bad_ack")
                    return raw
                mbus.parse_frame(raw)
                return raw
            except DecodeError as exc:
                last = BadResponse(device, str(exc), exc.raw, exc.reason)
            except (NoResponse, BadResponse) as exc:
                last = exc
        assert last is not None
        if last.raw:
            log.warning("%s: giving up; last frames: %s", device, [f.hex(" ") for f in self.last_frames])
        raise last

    # -- operations ----------------------------------------------------------------------
    def ping(self, address: int) -> None:
        self._exchange(mbus.snd_nke(address), f"primary {address}", expect_ack=True)

    def select(self, secondary: str) -> None:
        self._exchange(mbus.select_secondary(secondary), f"secondary {secondary}", expect_ack=True)

    def read(self, address: int | str, *, strict: bool = False) -> Readout:
        """Read a slave by primary address (int) or secondary address (8 or 16 hex digits)."""
        if isinstance(address, str):
            device = f"secondary {address}"
            self.select(address)
            target = mbus.ADDRESS_NETWORK_LAYER
        else:
            device = f"primary {address}"
            self.ping(address)
            target = address
        telegrams: list[mbus.Response] = []
        frames: list[bytes] = []
        fcb = True  # after SND_NKE (or a selection) the first FCV request carries FCB = 1
        for _ in range(self.max_telegrams):
            raw = self._exchange(mbus.req_ud2(target, fcb), device)
            try:
                response = mbus.decode_response(raw, strict=strict)
            except DecodeError as exc:
                raise BadResponse(device, str(exc), raw, exc.reason) from exc
            telegrams.append(response)
            frames.append(raw)
            if not response.more_follows:
                return Readout(device, telegrams, frames)
            fcb = not fcb
        raise BadResponse(device, f"still 'more records follow' after {self.max_telegrams} telegrams",
                          frames[-1], "too_many_telegrams")

    def close(self) -> None:
        self.transport.close()
