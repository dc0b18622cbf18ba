"""One LoRaWAN uplink, whichever network server delivered it, and its readings."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from meterline.errors import DecodeError
from meterline.ingest.model import Reading, Source

UTC = dt.timezone.utc
_EUI = re.compile(r"[0-9a-fA-F]{16}")


class UplinkError(DecodeError):
    """An uplink envelope could not be read; ``server`` says whose format it was meant to be."""

    def __init__(self, message: str, raw: bytes | None = None, reason: str = "bad_uplink", server: str = "",
                 device: str | None = None) -> None:
        self.server = server
        self.device = device
        super().__init__(message, raw, reason)


@dataclass(frozen=True, slots=True)
class Uplink:
    """What meterline needs of an uplink event.

    ``dev_eui`` is lower-case hex (the form ``meter.comm_address`` holds); ``f_cnt`` and
    ``f_port`` are 0 when the network server omitted them (protobuf JSON leaves defaults out);
    ``dedup_id`` identifies the uplink at the network server (ChirpStack ``deduplicationId``,
    The Things Stack ``as:up:`` correlation id) so a republished event is recognised;
    ``profile`` names the device profile the payload codec is chosen by (ChirpStack device
    profile name and id; The Things Stack ``brand/model`` from ``version_ids``).
    """

    server: str
    dev_eui: str
    f_cnt: int
    f_port: int
    payload: bytes
    time: dt.datetime | None = None
    dedup_id: str | None = None
    profiles: tuple[str, ...] = ()
    object: Mapping[str, Any] | None = None
    confirmed: bool = False
    adr: bool = False
    frequency: int | None = None
    application: str | None = None
    device_name: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def fcnt_key(self) -> tuple[str, int, int, bytes]:
        """Key of the frame for retransmission dedupe: (devEUI, fCnt, fPort, payload)."""
        return (self.dev_eui, self.f_cnt, self.f_port, self.payload)


def loads(raw: bytes | str, server: str) -> dict[str, Any]:
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise UplinkError(f"{server} uplink is not valid JSON: {exc}", _bytes(raw), "bad_json", server) from exc
    if not isinstance(obj, dict):
        raise UplinkError(f"{server} uplink must be a JSON object, got {type(obj).__name__}", _bytes(raw),
                          "bad_uplink", server)
    return obj


def _bytes(raw: bytes | str) -> bytes:
    return raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")


class Fields:
    """Typed access to an envelope's fields; every failure is an :class:`UplinkError` with its path."""

    def __init__(self, raw: bytes | str, server: str) -> None:
        self.raw = _bytes(raw)
        self.server = server

    def fail(self, path: str, message: str, reason: str = "bad_uplink") -> UplinkError:
        return UplinkError(f"{self.server} uplink: {path}: {message}", self.raw, reason, self.server)

    def table(self, obj: Mapping[str, Any], key: str, path: str, required: bool = False) -> Mapping[str, Any]:
        v = obj.get(key)
        if v is None:
            if required:
                raise self.fail(path, "missing", "missing_field")
            return {}
        if not isinstance(v, dict):
            raise self.fail(path, f"expected an object, got {type(v).__name__}", "wrong_type")
        return v

    def string(self, obj: Mapping[str, Any], key: str, path: str, required: bool = False) -> str | None:
        v = obj.get(key)
        if v is None:
            if required:
                raise self.fail(path, "missing", "missing_field")
            return None
        if not isinstance(v, str):
            raise self.fail(path, f"expected a string, got {type(v).__name__}", "wrong_type")
        return v

    def integer(self, obj: Mapping[str, Any], key: str, path: str, lo: int, hi: int, default: int = 0) -> int:
        """An integer field that protobuf JSON may give as a number or a decimal string."""
        v = obj.get(key)
        if v is None:
            return default
        if isinstance(v, str) and v.strip().isdigit():
            v = int(v)
        if type(v) is not int:
            raise self.fail(path, f"expected an integer, got {type(v).__name__} {v!r:.30}", "wrong_type")
        if not lo <= v <= hi:
            raise self.fail(path, f"{v} is out of range {lo}..{hi}", "bad_value")
        return v

    def boolean(self, obj: Mapping[str, Any], key: str, path: str) -> bool:
        v = obj.get(key, False)
        if type(v) is not bool:
            raise self.fail(path, f"expected true or false, got {type(v).__name__}", "wrong_type")
        return v

    def base64(self, obj: Mapping[str, Any], key: str, path: str) -> bytes:
        v = obj.get(key)
        if v is None:
            return b""
        if not isinstance(v, str):
            raise self.fail(path, f"expected base64 text, got {type(v).__name__}", "wrong_type")
        try:
            return base64.b64decode(v, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise self.fail(path, f"not valid base64: {v!r:.40}", "bad_payload") from exc

    def time(self, obj: Mapping[str, Any], key: str, path: str) -> dt.datetime | None:
        v = obj.get(key)
        if v is None:
            return None
        if not isinstance(v, str):
            raise self.fail(path, f"expected an RFC 3339 time, got {type(v).__name__}", "wrong_type")
        try:
            ts = dt.datetime.fromisoformat(v)
        except ValueError as exc:
            raise self.fail(path, f"not an RFC 3339 time: {v!r:.40}", "bad_timestamp") from exc
        if ts.tzinfo is None or ts.utcoffset() is None:
            raise self.fail(path, f"time {v!r:.40} has no UTC offset", "naive_timestamp")
        return ts

    def eui(self, obj: Mapping[str, Any], key: str, path: str, required: bool = True) -> str | None:
        v = self.string(obj, key, path, required)
        if v is None:
            return None
        if not _EUI.fullmatch(v):
            raise self.fail(path, f"not a 64-bit EUI in hex: {v!r:.40}", "bad_value")
        return v.lower()


def to_readings(uplink: Uplink, registers: Any, *, source: Source = Source.LORAWAN,
                received_at: dt.datetime | None = None) -> list[Reading]:
    """Readings of the register values a codec found in ``uplink``.

    A register without its own time is stamped with the uplink's time (the network server's
    receive time), or ``received_at`` when the envelope had none. ``source_ref`` is the uplink's
    dedup id, else ``<devEUI>:<fCnt>``.
    """
    ref = uplink.dedup_id or f"{uplink.dev_eui}:{uplink.f_cnt}"
    when = uplink.time or received_at
    out = []
    for r in registers:
        ts = r.ts if r.ts is not None else when
        if ts is None:
            raise UplinkError("uplink has no time and no receive time was given", None, "bad_timestamp",
                              uplink.server, uplink.dev_eui)
        out.append(Reading(ts=ts, value=r.value, quantity=r.quantity, device=uplink.dev_eui, source=source,
                           source_ref=ref, status=r.status))
    return out
