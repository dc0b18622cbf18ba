"""The paho speed-ups behave like paho: buffered socket semantics, lean MQTT 5 properties."""

import socket

import pytest
from paho.mqtt import _packet
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from meterline.ingest.sources._paho import BufferedSocket, LeanProperties, install_lean_properties


def test_buffered_socket_reads_in_chunks_and_queues_writes() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        s = BufferedSocket(a)
        with pytest.raises(BlockingIOError):
            s.recv(1)
        b.sendall(b"\x30\x05hello\x30\x02hi")
        assert s.recv(1) == b"\x30" and s.pending() == 10
        assert s.recv(1) == b"\x05" and s.recv(5) == b"hello"
        assert s.recv(10) == b"\x30\x02hi" and s.pending() == 0  # never more than there is
        assert s.send(b"ack1") == 4 and s.send(b"ack2") == 4 and s.out_pending() == 8
        b.setblocking(False)
        with pytest.raises(BlockingIOError):
            b.recv(16)  # queued, not sent yet
        s.flush()
        assert b.recv(16) == b"ack1ack2" and s.out_pending() == 0
        s.send(b"bye")
        s.close()  # sends what is queued
        assert b.recv(16) == b"bye"


def test_buffered_socket_eof() -> None:
    a, b = socket.socketpair()
    with a:
        s = BufferedSocket(a)
        b.close()
        assert s.recv(1) == b""


def _props_bytes(props: Properties) -> bytes:
    return props.pack()


@pytest.mark.parametrize("fill", [
    {},
    {"ContentType": "application/json", "MessageExpiryInterval": 30},
    {"UserProperty": [("a", "1"), ("b", "2")], "CorrelationData": b"\x01\x02", "ResponseTopic": "r/t"},
])
def test_lean_properties_decode_like_paho(fill) -> None:
    original = Properties(PacketTypes.PUBLISH)
    for k, v in fill.items():
        setattr(original, k, v)
    wire = original.pack()
    theirs = Properties(PacketTypes.PUBLISH)
    theirs.unpack(wire)
    install_lean_properties()
    ours = LeanProperties(PacketTypes.PUBLISH)
    ours.unpack(wire)
    assert ours.json() == theirs.json()
    assert ours.pack() == wire
    ours.clear()
    assert ours.json() == {}
    assert ours.isEmpty()
    with pytest.raises(Exception):
        ours.SessionExpiryInterval = 5  # not a PUBLISH property: refused as paho does


def test_paho_decodes_publish_with_the_lean_class() -> None:
    assert install_lean_properties()
    assert _packet.Properties is LeanProperties
