"""A simulated M-Bus segment: slaves that answer a master with recorded frames.

Used by the M-Bus tests (libmbus corpus frames) and by ``meterline demo`` (a concentrator of the
demo utility's M-Bus water meters, :func:`water_telegram`). It speaks the link layer for real (SND_NKE → E5, secondary selection with CI 0x52, REQ_UD2
with the FCB rule: a repeated FCB gets the same telegram again, a toggled one the next) over a
pseudo-terminal (``os.openpty``) or a TCP socket. Slaves can misbehave on purpose: stay
silent, answer garbage, corrupt the checksum.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import tty
from dataclasses import dataclass, field

from meterline.protocols.mbus import frame as mbus
from meterline.protocols.mbus.tables import manufacturer_id

C_RSP_UD = 0x08
CI_RSP_LONG = 0x72
MEDIUM_WATER = 0x07


def water_telegram(ident: str, litres: int, *, address: int = 0xFD, access: int = 0, status: int = 0,
                   manufacturer: str = "LXS", version: int = 1) -> bytes:
    """An RSP_UD long frame of a water meter: identification ``ident`` (8 decimal digits) and
    one instantaneous volume record (32-bit integer, VIF 0x13: litres)."""
    if len(ident) != 8 or not ident.isdigit():
        raise ValueError(f"M-Bus identification {ident!r} is not 8 decimal digits")
    if not 0 <= litres < 2**31:
        raise ValueError(f"volume {litres} L does not fit a 32-bit integer record")
    header = (bytes.fromhex(ident)[::-1] + manufacturer_id(manufacturer).to_bytes(2, "little")
              + bytes((version, MEDIUM_WATER, access & 0xFF, status & 0xFF)) + b"\x00\x00")
    record = bytes((0x04, 0x13)) + litres.to_bytes(4, "little")
    return mbus.long_frame(C_RSP_UD, address, CI_RSP_LONG, header + record)


@dataclass
class SimSlave:
    primary: int | None
    telegrams: list[bytes]
    behaviour: str = "ok"  #: ok | silent | garbage | bad_checksum
    secondary: str | None = None  #: 16 hex digits; default: from the first telegram's header
    index: int = 0
    last_fcb: bool | None = None
    requests: int = 0
    selected: bool = False

    def __post_init__(self) -> None:
        if self.secondary is None and self.telegrams:
            try:
                resp = mbus.decode_response(self.telegrams[0])
                if resp.slave is not None:
                    self.secondary = resp.slave.secondary_address
            except Exception:  # noqa: BLE001 - a deliberately broken telegram has no address
                self.secondary = None

    def reset(self) -> None:
        self.index = 0
        self.last_fcb = None

    def answer(self, fcb: bool) -> bytes:
        self.requests += 1
        if self.last_fcb is not None and fcb != self.last_fcb:
            self.index = min(self.index + 1, len(self.telegrams) - 1)
        self.last_fcb = fcb
        data = self.telegrams[self.index]
        if self.behaviour == "bad_checksum":
            data = data[:-2] + bytes([(data[-2] + 1) & 0xFF]) + data[-1:]
        if self.behaviour == "garbage":
            data = bytes([0x55, 0xAA, 0x00, 0xFF, 0x13, 0x37])
        return data


@dataclass
class SimBus:
    slaves: list[SimSlave]
    log: list[bytes] = field(default_factory=list)

    def _by_primary(self, address: int) -> SimSlave | None:
        return next((s for s in self.slaves if s.primary == address), None)

    def handle(self, raw: bytes) -> bytes | None:
        """The answer to one master frame (None: nobody answers)."""
        self.log.append(raw)
        try:
            f = mbus.parse_frame(raw)
        except mbus.FrameError:
            return None
        if f.kind == "short" and f.control == mbus.C_SND_NKE:
            if f.address == mbus.ADDRESS_NETWORK_LAYER:
                for s in self.slaves:
                    s.selected = False
                return bytes([mbus.ACK])
            slave = self._by_primary(f.address)
            if slave is None or slave.behaviour == "silent":
                return None
            slave.reset()
            return bytes([mbus.ACK])
        if f.kind == "long" and f.ci == mbus.CI_SELECT_SECONDARY:
            mask = mbus.parse_selection(f)
            hits = [s for s in self.slaves if s.secondary and mask and mbus.secondary_matches(mask, s.secondary)]
            for s in self.slaves:
                s.selected = s in hits
            if len(hits) == 1 and hits[0].behaviour != "silent":
                hits[0].reset()
                return bytes([mbus.ACK])
            return None if not hits else b"\xe5\xe5"  # a collision garbles the ACKs
        if f.kind == "short" and f.control & 0xCF == 0x4B:  # REQ_UD2 (FCV set)
            fcb = bool(f.control & mbus.FCB)
            if f.address == mbus.ADDRESS_NETWORK_LAYER:
                slave = next((s for s in self.slaves if s.selected), None)
            else:
                slave = self._by_primary(f.address)
            if slave is None or slave.behaviour == "silent":
                return None
            return slave.answer(fcb)
        return None

    # -- byte streams ----------------------------------------------------------------------
    def _serve(self, recv, send, stop: threading.Event) -> None:
        buf = bytearray()
        while not stop.is_set():
            chunk = recv()
            if chunk is None:
                continue
            if chunk == b"":
                return
            buf += chunk
            while buf:
                try:
                    need = mbus.frame_length(bytes(buf))
                except mbus.FrameError:
                    buf.clear()
                    break
                if need is None or len(buf) < need:
                    break
                request, buf = bytes(buf[:need]), buf[need:]
                answer = self.handle(request)
                if answer:
                    send(answer)

    def serve_pty(self, stop: threading.Event) -> tuple[str, threading.Thread]:
        """Serve on a new pseudo-terminal; returns the device path the master opens."""
        master_fd, slave_fd = os.openpty()
        tty.setraw(slave_fd)
        path = os.ttyname(slave_fd)

        def recv() -> bytes | None:
            ready, _, _ = select.select([master_fd], [], [], 0.05)
            if not ready:
                return None
            try:
                return os.read(master_fd, 512)
            except OSError:  # the other side closed; keep waiting for the next open
                stop.wait(0.05)
                return None

        def send(data: bytes) -> None:
            os.write(master_fd, data)

        def loop() -> None:
            try:
                self._serve(recv, send, stop)
            finally:
                os.close(master_fd)
                os.close(slave_fd)

        thread = threading.Thread(target=loop, name="mbus-sim-pty", daemon=True)
        thread.start()
        return path, thread

    def serve_tcp(self, stop: threading.Event) -> tuple[int, threading.Thread]:
        """Serve as a transparent M-Bus gateway on 127.0.0.1; returns the port."""
        server = socket.create_server(("127.0.0.1", 0))
        server.settimeout(0.05)
        port = server.getsockname()[1]

        def loop() -> None:
            with server:
                while not stop.is_set():
                    try:
                        conn, _ = server.accept()
                    except TimeoutError:
                        continue
                    with conn:
                        conn.settimeout(0.05)

                        def recv() -> bytes | None:
                            try:
                                return conn.recv(512)
                            except TimeoutError:
                                return None
                            except OSError:
                                return b""

                        self._serve(recv, conn.sendall, stop)

        thread = threading.Thread(target=loop, name="mbus-sim-tcp", daemon=True)
        thread.start()
        return port, thread
