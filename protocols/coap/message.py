"""The CoAP message format (RFC 7252 §3), just enough for meters: requests out, responses in.

A meter (or meterline's simulator and benchmarks, which play thousands of meters from one
process) builds confirmable ``POST /r/{meter}`` requests with :func:`request` and reads the
server's piggybacked responses with :func:`parse`. Pure: bytes in, bytes out.
"""

from __future__ import annotations

from dataclasses import dataclass

from meterline.errors import DecodeError

CON, NON, ACK, RST = 0, 1, 2, 3
POST = 2  # code 0.02
URI_PATH = 11
CONTENT_FORMAT = 12
MAX_AGE = 14


class CoapMessageError(DecodeError):
    """A datagram that is not a CoAP message."""


def code_str(code: int) -> str:
    return f"{code >> 5}.{code & 31:02d}"


@dataclass(frozen=True, slots=True)
class Message:
    type: int
    code: int
    message_id: int
    token: bytes
    options: tuple[tuple[int, bytes], ...]
    payload: bytes

    @property
    def code_str(self) -> str:
        return code_str(self.code)


def _opt_nibble(v: int) -> tuple[int, bytes]:
    if v < 13:
        return v, b""
    if v < 269:
        return 13, bytes([v - 13])
    return 14, (v - 269).to_bytes(2, "big")


def encode(type_: int, code: int, message_id: int, token: bytes = b"",
           options: list[tuple[int, bytes]] | None = None, payload: bytes = b"") -> bytes:
    if len(token) > 8:
        raise ValueError("token longer than 8 bytes")
    out = bytearray([0x40 | (type_ << 4) | len(token), code, (message_id >> 8) & 0xFF, message_id & 0xFF])
    out += token
    last = 0
    for number, value in sorted(options or [], key=lambda o: o[0]):
        d, dx = _opt_nibble(number - last)
        n, nx = _opt_nibble(len(value))
        out.append((d << 4) | n)
        out += dx + nx + value
        last = number
    if payload:
        out.append(0xFF)
        out += payload
    return bytes(out)


def uint(v: int) -> bytes:
    return b"" if v == 0 else v.to_bytes((v.bit_length() + 7) // 8, "big")


def request(path: list[str], payload: bytes, message_id: int, token: bytes = b"", content_format: int | None = None,
            confirmable: bool = True, code: int = POST) -> bytes:
    """A request datagram, e.g. ``request(["r", imei], body, mid, token, 60)``."""
    options = [(URI_PATH, seg.encode()) for seg in path]
    if content_format is not None:
        options.append((CONTENT_FORMAT, uint(content_format)))
    return encode(CON if confirmable else NON, code, message_id, token, options, payload)


def parse(data: bytes) -> Message:
    """Parse a datagram; :class:`CoapMessageError` if it is not a well-formed CoAP message."""
    if len(data) < 4 or data[0] >> 6 != 1:
        raise CoapMessageError("not a CoAP version 1 message", bytes(data[:64]), "bad_coap")
    tkl = data[0] & 0x0F
    if tkl > 8 or len(data) < 4 + tkl:
        raise CoapMessageError("bad token length", bytes(data[:64]), "bad_coap")
    i = 4 + tkl
    options = []
    number = 0
    payload = b""
    while i < len(data):
        b = data[i]
        if b == 0xFF:
            payload = bytes(data[i + 1:])
            break
        i += 1
        delta, length = b >> 4, b & 0x0F
        try:
            delta, i = _ext(delta, data, i)
            length, i = _ext(length, data, i)
        except IndexError as exc:
            raise CoapMessageError("truncated option", bytes(data[:64]), "bad_coap") from exc
        number += delta
        if i + length > len(data):
            raise CoapMessageError("truncated option value", bytes(data[:64]), "bad_coap")
        options.append((number, bytes(data[i:i + length])))
        i += length
    return Message((data[0] >> 4) & 3, data[1], (data[2] << 8) | data[3], bytes(data[4:4 + tkl]), tuple(options),
                   payload)


def _ext(v: int, data: bytes, i: int) -> tuple[int, int]:
    if v < 13:
        return v, i
    if v == 13:
        return data[i] + 13, i + 1
    if v == 14:
        return int.from_bytes(data[i:i + 2], "big") + 269, i + 2
    raise CoapMessageError("reserved option nibble 15", bytes(data[:64]), "bad_coap")
