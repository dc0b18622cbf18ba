"""paho-mqtt for a subscriber that takes tens of thousands of messages a second.

Profiling the MQTT source showed most of its thread's time inside paho, in two places that do
not depend on what the messages say:

* **system calls**: paho reads a packet with three ``recv`` calls (command byte, length,
  body) after one ``select``, and writes every PUBACK with two ``send`` calls (the packet, and
  a wake-up byte on its socket pair). :class:`BufferedSocket` reads 256 KiB at a time and
  queues writes until the loop flushes them once per turn; the source drives paho through its
  documented external-loop API (``loop_read``, ``loop_write``, ``loop_misc``) with its own
  ``select``, so there is no socket pair either.
* **MQTT 5 properties**: paho 2.2 builds a :class:`~paho.mqtt.properties.Properties` for every
  PUBLISH, each time rebuilding its tables of property names and types, then clears it attribute
  by attribute. :class:`LeanProperties` shares those tables (they are never changed) and clears
  only what was set. It behaves the same (tests compare the two); it is installed only on the
  paho version it was written for.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import paho.mqtt as paho_pkg
import paho.mqtt.client as paho
from paho.mqtt import _packet
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

log = logging.getLogger(__name__)

READ_CHUNK = 256 * 1024
LEAN_FOR = ("2.2.0",)


class BufferedSocket:
    """A non-blocking socket with a read buffer and a write queue, flushed by the owner's loop."""

    __slots__ = ("sock", "_rbuf", "_rpos", "_wbuf")

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self._rbuf = b""
        self._rpos = 0
        self._wbuf = bytearray()

    # what paho uses
    def recv(self, n: int) -> bytes:
        pos = self._rpos
        if pos >= len(self._rbuf):
            data = self.sock.recv(READ_CHUNK)  # BlockingIOError propagates: paho takes it as "again"
            if not data:
                return b""
            self._rbuf, pos = data, 0
        end = pos + n
        out = self._rbuf[pos:end]
        self._rpos = min(end, len(self._rbuf))
        return out

    def send(self, data: bytes | bytearray) -> int:
        self._wbuf += data
        if len(self._wbuf) >= READ_CHUNK:
            self.flush()
        return len(data)

    def pending(self) -> int:
        """Bytes received and not yet taken (here, or decrypted inside an SSL socket)."""
        inner = getattr(self.sock, "pending", None)
        return len(self._rbuf) - self._rpos + (inner() if inner is not None else 0)

    def fileno(self) -> int:
        return self.sock.fileno()

    def setblocking(self, flag: bool) -> None:
        self.sock.setblocking(flag)

    def close(self) -> None:
        try:
            if self._wbuf:
                self.sock.setblocking(True)
                self.sock.settimeout(2)
                self.sock.sendall(self._wbuf)
        except OSError:
            pass
        finally:
            self._wbuf.clear()
            self.sock.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)

    # what the owner's loop uses
    def out_pending(self) -> int:
        return len(self._wbuf)

    def flush(self) -> None:
        """Send what is queued, as much as the socket takes now; raise OSError if the connection broke."""
        while self._wbuf:
            try:
                n = self.sock.send(self._wbuf)
            except BlockingIOError:
                return
            del self._wbuf[:n]


class FastClient(paho.Client):
    """A paho client whose socket is a :class:`BufferedSocket` (see the module documentation)."""

    def _create_socket(self) -> Any:  # paho 2.x: called by reconnect()
        return BufferedSocket(super()._create_socket())

    def buffered(self) -> BufferedSocket | None:
        sock = self.socket()
        return sock if isinstance(sock, BufferedSocket) else None


_NAMES: dict[str, int] | None = None
_TYPES: list[str] | None = None
_PROPS: dict[int, Any] | None = None
_FIXED = ("packetType", "types", "names", "properties")


class LeanProperties(Properties):
    """:class:`Properties` sharing its constant tables instead of rebuilding them per packet."""

    def __init__(self, packetType: int) -> None:  # noqa: N803 (paho's name)
        object.__setattr__(self, "packetType", packetType)
        object.__setattr__(self, "types", _TYPES)
        object.__setattr__(self, "names", _NAMES)
        object.__setattr__(self, "properties", _PROPS)

    def clear(self) -> None:
        for name in [k for k in self.__dict__ if k not in _FIXED]:
            delattr(self, name)


def install_lean_properties() -> bool:
    """Let paho decode PUBLISH properties with :class:`LeanProperties` (on the versions it fits)."""
    global _NAMES, _TYPES, _PROPS
    version = getattr(paho_pkg, "__version__", "")
    if version not in LEAN_FOR:
        log.info("paho-mqtt %s: keeping its own Properties", version)
        return False
    if _packet.Properties is LeanProperties:
        return True
    template = Properties(PacketTypes.PUBLISH)
    _NAMES, _TYPES, _PROPS = template.names, template.types, template.properties
    _packet.Properties = LeanProperties  # decode_publish() builds one per message
    return True


def tcp_nodelay(client: paho.Client) -> None:
    sock = client.socket()
    try:
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass
