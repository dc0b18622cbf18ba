"""Link-layer frames of the master, framing checks, and the poll schedule."""

from __future__ import annotations

import pytest

from meterline.ingest.schedule import next_tick
from meterline.protocols.mbus import frame as mbus
from meterline.protocols.mbus.errors import ChecksumError, FrameError, UnsupportedFrame


def test_master_frames() -> None:
    assert mbus.snd_nke(5) == bytes.fromhex("10 40 05 45 16")
    assert mbus.req_ud2(5) == bytes.fromhex("10 5B 05 60 16")
    assert mbus.req_ud2(5, fcb=True) == bytes.fromhex("10 7B 05 80 16")
    sel = mbus.select_secondary("14491001FFFFFFFF")
    assert sel == bytes.fromhex("68 0B 0B 68 53 FD 52 01 10 49 14 FF FF FF FF 0C 16")
    assert mbus.parse_selection(mbus.parse_frame(sel)) == "14491001FFFFFFFF"
    assert mbus.select_secondary("14491001") == sel
    with pytest.raises(ValueError):
        mbus.select_secondary("1449")


def test_secondary_match_with_wildcards() -> None:
    assert mbus.secondary_matches("14491001FFFFFFFF", "144910012D2C0804")
    assert mbus.secondary_matches("1449100F2D2CFF04", "144910012D2C0804")
    assert not mbus.secondary_matches("14491002FFFFFFFF", "144910012D2C0804")


def test_frame_length_and_parse() -> None:
    assert mbus.frame_length(b"\xe5") == 1
    assert mbus.frame_length(b"\x10") == 5
    assert mbus.frame_length(b"\x68\x03") is None
    assert mbus.frame_length(b"\x68\x03\x03\x68") == 9
    with pytest.raises(FrameError, match="is not 68 L L 68"):
        mbus.frame_length(b"\x68\x03\x04\x68")
    with pytest.raises(FrameError, match="0x55 starts no M-Bus frame"):
        mbus.frame_length(b"\x55")
    with pytest.raises(ChecksumError) as info:
        mbus.parse_frame(bytes.fromhex("10 40 05 46 16"))
    assert (info.value.expected, info.value.actual, info.value.reason) == (0x45, 0x46, "bad_checksum")
    with pytest.raises(FrameError, match="stop byte is 0x17"):
        mbus.parse_frame(bytes.fromhex("10 40 05 45 17"))
    with pytest.raises(FrameError, match="truncated frame"):
        mbus.parse_frame(bytes.fromhex("68 05 05 68 08 01 72"))
    with pytest.raises(FrameError, match="2 byte\\(s\\) after the end"):
        mbus.parse_frame(bytes.fromhex("10 40 05 45 16 00 00"))


def test_short_frame_is_not_a_response() -> None:
    with pytest.raises(UnsupportedFrame, match="short frame carries no data records"):
        mbus.decode_response(mbus.snd_nke(1))
    with pytest.raises(UnsupportedFrame, match="CI field 0x71 \\(alarm status report\\)"):
        mbus.decode_response(mbus.long_frame(0x08, 1, 0x71, b"\x00"))


@pytest.mark.parametrize(("now", "interval", "align", "delay"), [
    (1000.0, 900, True, 800.0),  # next quarter hour at 1800
    (1800.0, 900, True, 900.0),  # exactly on a tick: the next one
    (1000.0, 900, False, 900.0),
    (86_399.5, 86_400, True, 0.5),
])
def test_next_tick(now: float, interval: float, align: bool, delay: float) -> None:
    assert next_tick(now, interval, align) == pytest.approx(delay)
