"""Wireless M-Bus telegrams (EN 13757-4 link layer, EN 13757-3/OMS transport layer): pure.

A telegram as receivers log it (without the link layer's CRCs; :func:`strip_crcs` removes and
checks them for frame formats A and B) is decoded in layers::

    L  C  M M  A A A A A A  CI  ...
    │  │  │    └ id (4 BCD, LSB first), version, device type
    │  │  └ manufacturer (FLAG code)
    │  └ C field (SND_NR 0x44, SND_IR 0x46, RSP_UD 0x08, ...)
    └ length of what follows

* **ELL** (extended link layer, CI 0x8C/0x8D/0x8E/0x8F): communication control, access number,
  for 0x8D/0x8F a session number whose top bits say "AES-CTR encrypted" and a CRC of the
  payload. With a key the payload is decrypted (IV = M, A, CC, SN, frame/block counters); the
  CRC then verifies it. Without a key, a payload whose CRC already matches is plain.
* **TPL** (transport layer): CI 0x7A short header (access number, status, configuration word),
  0x72 long header (the meter's own id, manufacturer, version, device type, then the short
  header fields), 0x78 none. The configuration word carries the security mode and the number
  of encrypted 16-byte blocks.
* **Security mode 5** (AES-128-CBC, IV = manufacturer + address of the meter + 8 × access
  number): decrypted with the meter's key (``keys`` maps the 8-digit id to 16 bytes); the
  plaintext must begin with the 2F 2F verification bytes. A telegram whose header says mode 5
  but whose payload already begins with 2F 2F (receivers that decrypted it, test captures) is
  taken as plain when no key is configured for the meter; with a key it is decrypted, and if
  that fails the error says the payload looked plain.
* **AFL** (CI 0x90) is skipped; **mode 7** (OMS, derived keys, AFL MAC) is read only in its
  plain form (payload already 2F 2F, no key configured) and otherwise rejected as not
  implemented. Bytes after the encrypted blocks are decoded as plain records; when they do not
  form records (some meters append two bytes), ``Telegram.warnings`` says so.
* The application data are EN 13757-3 records, decoded by :mod:`meterline.protocols.mbus.records`.

Manufacturer-specific application layers (CI 0xA0–0xB7: Techem, Diehl PRIOS/SAP scrambling),
compact frames (CI 0x79: they need the format signature of an earlier full frame) and
manufacturer security modes (e.g. Diehl mode 29) need a meter-model driver and are rejected
with :class:`UnsupportedTelegram` naming the reason.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Callable, Mapping

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from meterline.ingest.model import Reading, Source
from meterline.protocols.mbus import tables
from meterline.protocols.mbus.errors import ChecksumError, FrameError, MBusError
from meterline.protocols.mbus.records import Record, decode_records, meter_status, to_readings

__all__ = [
    "Telegram", "decode_telegram", "telegram_readings", "strip_crcs", "crc16", "add_crcs",
    "WMBusError", "UnsupportedTelegram", "KeyRequired", "DecryptionFailed",
]


class WMBusError(MBusError):
    reason_code = "wmbus_decode"


class UnsupportedTelegram(WMBusError):
    """A well-formed telegram whose application layer needs a manufacturer-specific driver."""

    reason_code = "unsupported_telegram"


class KeyRequired(WMBusError):
    """The payload is encrypted and no key is configured for the meter."""

    reason_code = "no_key"

    def __init__(self, meter: str, mode: int, raw: bytes | None = None) -> None:
        self.meter = meter
        self.mode = mode
        super().__init__(f"meter {meter}: payload is encrypted (security mode {mode}) and no key is configured", raw)


class DecryptionFailed(WMBusError):
    """Decryption with the configured key did not give the 2F 2F verification bytes (or CRC)."""

    reason_code = "decryption_failed"


# --- CRC (EN 13757-4: polynomial 0x3D65, complemented) --------------------------------------

def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x3D65) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
        table.append(crc)
    return table


_CRC_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    crc = 0
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC_TABLE[(crc >> 8) ^ b]
    return crc ^ 0xFFFF


def _blocks_a(total: int) -> list[int]:
    """Block sizes of a format-A frame carrying ``total`` bytes (L field included)."""
    sizes = [min(10, total)]
    rest = total - sizes[0]
    while rest > 0:
        sizes.append(min(16, rest))
        rest -= sizes[-1]
    return sizes


def strip_crcs(frame: bytes, frame_format: str = "A") -> bytes:
    """The telegram without its link-layer CRCs, each one checked (:class:`ChecksumError`)."""
    frame = bytes(frame)
    if not frame:
        raise FrameError("empty wM-Bus frame")
    if frame_format == "A":
        total = frame[0] + 1  # L counts everything after itself, CRCs excluded
        out = bytearray()
        pos = 0
        for size in _blocks_a(total):
            block = frame[pos:pos + size]
            crc = frame[pos + size:pos + size + 2]
            if len(block) < size or len(crc) < 2:
                raise FrameError(f"format A frame truncated: L={frame[0]} needs more than {len(frame)} bytes", frame)
            if crc16(block) != int.from_bytes(crc, "big"):
                raise ChecksumError(crc16(block), int.from_bytes(crc, "big"), frame)
            out += block
            pos += size + 2
        if pos != len(frame):
            raise FrameError(f"{len(frame) - pos} byte(s) after the end of a format A frame", frame)
        return bytes(out)
    if frame_format == "B":
        total = frame[0] + 1  # L counts everything after itself, CRCs included
        if len(frame) != total:
            raise FrameError(f"format B frame of {len(frame)} bytes, L field says {total}", frame)
        first = min(total, 128)
        out = bytearray()
        for start, end in ((0, first), (first, total)):
            if start >= end:
                continue
            block, crc = frame[start:end - 2], frame[end - 2:end]
            if crc16(block) != int.from_bytes(crc, "big"):
                raise ChecksumError(crc16(block), int.from_bytes(crc, "big"), frame)
            out += block
        out[0] = len(out) - 1
        return bytes(out)
    raise ValueError(f"frame format {frame_format!r} is not 'A' or 'B'")


def add_crcs(telegram: bytes) -> bytes:
    """Format A frame of a telegram (the inverse of :func:`strip_crcs`; for simulators and tests)."""
    out = bytearray()
    pos = 0
    for size in _blocks_a(len(telegram)):
        block = telegram[pos:pos + size]
        out += block + crc16(block).to_bytes(2, "big")
        pos += size
    return bytes(out)


# --- telegram ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Telegram:
    c: int
    manufacturer: str  #: of the meter (TPL long header, else the link layer)
    id: str  #: 8-digit identification of the meter
    version: int
    device_type: int
    ci: int  #: the CI of the application data (after any ELL)
    access_number: int | None
    status: int
    security_mode: int
    records: list[Record] = field(default_factory=list)
    decrypted: bool = False  #: the payload was decrypted with the meter's key
    link_id: str = ""  #: id in the link layer (the repeater/gateway when it differs from ``id``)
    raw: bytes = b""
    warnings: tuple[str, ...] = ()  #: what was tolerated (an unparseable unencrypted tail)

    @property
    def medium(self) -> str:
        return tables.MEDIA.get(self.device_type, f"Reserved (0x{self.device_type:02X})")


KeyLookup = Mapping[str, bytes] | Callable[[str], bytes | None] | None


def _key_for(keys: KeyLookup, meter: str) -> bytes | None:
    if keys is None:
        return None
    key = keys(meter) if callable(keys) else keys.get(meter)
    if key is not None and len(key) != 16:
        raise WMBusError(f"meter {meter}: AES-128 key must be 16 bytes, got {len(key)}")
    return key


def _address(raw: bytes) -> tuple[str, int, int]:
    ident = raw[0:4][::-1].hex().upper()
    return ident, raw[4], raw[5]


def _aes_cbc(key: bytes, iv: bytes, data: bytes) -> bytes:
    dec = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    return dec.update(data) + dec.finalize()


def _aes_ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    dec = Cipher(algorithms.AES(key), modes.CTR(iv)).decryptor()
    return dec.update(data) + dec.finalize()


_ELL_SIZES = {0x8C: 2, 0x8D: 8, 0x8E: 10, 0x8F: 16}
_MANUFACTURER_CI = range(0xA0, 0xB8)


def decode_telegram(raw: bytes, *, keys: KeyLookup = None, strict: bool = False) -> Telegram:
    """Decode one wM-Bus telegram (no link-layer CRCs): see the module docstring."""
    raw = bytes(raw)
    if len(raw) < 11:
        raise FrameError(f"wM-Bus telegram of {len(raw)} bytes is shorter than L, C, M, A, CI (11)", raw)
    if raw[0] != len(raw) - 1:
        raise FrameError(f"L field says {raw[0]} bytes follow, the telegram has {len(raw) - 1}", raw)
    c = raw[1]
    man_raw = int.from_bytes(raw[2:4], "little")
    link_id, version, device_type = _address(raw[4:10])
    manufacturer = tables.manufacturer_code(man_raw)
    m_bytes, a_bytes = raw[2:4], raw[4:10]
    pos = 10
    ci = raw[pos]
    pos += 1
    access: int | None = None
    decrypted = False
    # extended link layer
    if ci in _ELL_SIZES:
        size = _ELL_SIZES[ci]
        if len(raw) < pos + size + 1:
            raise FrameError(f"extended link layer (CI 0x{ci:02X}) needs {size} bytes and a CI", raw)
        ell = raw[pos:pos + size]
        access = ell[1]
        pos += size
        if ci in (0x8D, 0x8F):
            cc = ell[0]
            sn = ell[-6:-2] if ci == 0x8F else ell[2:6]
            payload_crc = int.from_bytes(ell[-2:], "little")
            enc = sn[3] >> 5  # ENC field: 0 none, 1 AES-128-CTR
            payload = raw[pos:]
            if enc == 1:
                if crc16(payload) == payload_crc:
                    pass  # already decrypted
                else:
                    key = _key_for(keys, link_id)
                    if key is None:
                        raise KeyRequired(link_id, 1, raw)
                    iv = m_bytes + a_bytes + bytes([cc]) + sn + b"\x00\x00\x00"
                    plain = _aes_ctr(key, iv, payload)
                    if crc16(plain) != payload_crc:
                        raise DecryptionFailed(f"meter {link_id}: ELL payload CRC does not match after "
                                               "decryption (wrong key?)", raw)
                    raw = raw[:pos] + plain
                    decrypted = True
            elif crc16(payload) != payload_crc and enc == 0:
                raise ChecksumError(crc16(payload), payload_crc, raw)
        if pos >= len(raw):
            raise FrameError("telegram ends after the extended link layer", raw)
        ci = raw[pos]
        pos += 1
    # authentication and fragmentation layer: skipped (its MAC needs the mode 7 keys)
    if ci == 0x90:
        if pos >= len(raw) or len(raw) < pos + 1 + raw[pos] + 1:
            raise FrameError("authentication and fragmentation layer (CI 0x90) runs past the end", raw)
        pos += 1 + raw[pos]
        ci = raw[pos]
        pos += 1
    # transport layer
    meter_m, meter_a = m_bytes, a_bytes
    meter_id, meter_version, meter_type = link_id, version, device_type
    status = 0
    config = 0
    if ci == 0x72:
        if len(raw) < pos + 12:
            raise FrameError("long transport header (CI 0x72) needs 12 bytes", raw)
        hdr = raw[pos:pos + 12]
        meter_id = hdr[0:4][::-1].hex().upper()
        manufacturer = tables.manufacturer_code(int.from_bytes(hdr[4:6], "little"))
        meter_version, meter_type = hdr[6], hdr[7]
        meter_m, meter_a = hdr[4:6], hdr[0:4] + hdr[6:8]
        access, status, config = hdr[8], hdr[9], int.from_bytes(hdr[10:12], "little")
        pos += 12
    elif ci == 0x7A:
        if len(raw) < pos + 4:
            raise FrameError("short transport header (CI 0x7A) needs 4 bytes", raw)
        hdr = raw[pos:pos + 4]
        access, status, config = hdr[0], hdr[1], int.from_bytes(hdr[2:4], "little")
        pos += 4
    elif ci == 0x78:
        pass
    elif ci == 0x79:
        raise UnsupportedTelegram(f"meter {meter_id}: compact frame (CI 0x79) needs the format of an earlier "
                                  "full frame and a meter driver", raw)
    elif ci in _MANUFACTURER_CI:
        raise UnsupportedTelegram(f"meter {meter_id} ({manufacturer}): manufacturer-specific application layer "
                                  f"(CI 0x{ci:02X}) needs a meter driver", raw)
    else:
        what = tables.OTHER_CI.get(ci, "unknown")
        raise UnsupportedTelegram(f"meter {meter_id}: CI 0x{ci:02X} ({what}) is not a data telegram", raw)
    mode = (config >> 8) & 0x1F
    if mode == 7:  # one configuration-extension byte follows the configuration word
        pos += 1
    body = raw[pos:]
    n = 0
    if mode in (5, 7):
        blocks = (config >> 4) & 0x0F
        n = blocks * 16
        if n > len(body):
            raise FrameError(f"configuration says {blocks} encrypted blocks ({n} bytes), payload has {len(body)}", raw)
        key = _key_for(keys, meter_id)
        looks_plain = body[:2] == b"\x2f\x2f"
        if key is None:
            if not looks_plain:
                raise KeyRequired(meter_id, mode, raw)
        elif mode == 7:
            raise UnsupportedTelegram(f"meter {meter_id}: security mode 7 (key derivation, AFL MAC) is not "
                                      "implemented; only its plain (already decrypted) form is read", raw)
        elif n:
            iv = meter_m + meter_a + bytes([access or 0]) * 8
            plain = _aes_cbc(key, iv, body[:n])
            if plain[:2] != b"\x2f\x2f":
                hint = " (the payload already began with 2F 2F: it looks unencrypted)" if looks_plain else " (wrong key?)"
                raise DecryptionFailed(f"meter {meter_id}: decrypted payload does not begin with 2F 2F{hint}", raw)
            body = plain + body[n:]
            decrypted = True
    elif mode != 0:
        raise UnsupportedTelegram(f"meter {meter_id} ({manufacturer}): security mode {mode} is not supported "
                                  "(manufacturer-specific or not implemented)", raw)
    if mode and n and len(body) > n:
        # the encrypted blocks are complete records; the unencrypted rest is decoded on its own,
        # and when it is not a record (some meters append bytes) it is reported, not fatal
        records = decode_records(body[:n], strict=strict)
        try:
            records += decode_records(body[n:], strict=strict)
        except MBusError as exc:
            warnings = (f"unencrypted tail after the encrypted blocks ignored: {exc}",)
        else:
            warnings = ()
    else:
        records, warnings = decode_records(body, strict=strict), ()
    return Telegram(c, manufacturer, meter_id, meter_version, meter_type, ci, access, status, mode,
                    records, decrypted, link_id, raw, warnings)


def telegram_readings(telegram: Telegram, *, ts: dt.datetime, meter_id: int | None = None,
                      history: bool = False, tz: dt.tzinfo = dt.timezone.utc) -> list[Reading]:
    """Readings of a decoded telegram: device = the meter's 8-digit id, status from the TPL."""
    ref = f"wmbus:{telegram.manufacturer}:{telegram.id}:{telegram.access_number}"
    return to_readings(telegram.records, ts=ts, device=telegram.id, meter_id=meter_id, source=Source.WMBUS,
                       source_ref=ref, status=int(meter_status(telegram.status)), history=history, tz=tz)
