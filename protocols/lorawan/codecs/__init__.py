"""Payload codecs: an uplink's application payload → register values, chosen per device profile.

A codec is registered by name and loaded on first use (a codec whose stack is missing never
breaks the others)::

    codec = codecs.create("milesight-em300-di", {"litres_per_pulse": 10})
    payload = codec.decode(uplink.payload, uplink.f_port, uplink.object)
    payload.registers   # (Register(value=2560, quantity=VOLUME, ts=None, status=0),)
    payload.fields      # {"battery": 92, "pulse": 256}: what the vendor's formatter outputs

Names and where they come from:

* layouts as data — every ``layouts/<name>.toml`` (Milesight EM300-DI channels, Axioma
  Qalcosonic W1 fixed frame), each with its vectors;
* code — ``object`` (the network server decoded the payload already), and the M-Bus
  application-layer codecs (``oms``, ``kamstrup``, ``sensus-iperl``) when their record decoder is
  present.

A codec raises :class:`CodecError` (a :class:`~meterline.errors.DecodeError`) for a payload it
cannot read, and :class:`~meterline.errors.ConfigError` for parameters it does not know.
"""

from __future__ import annotations

import datetime as dt
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

from meterline.errors import ConfigError, DecodeError
from meterline.ingest.model import Quantity

LAYOUTS = Path(__file__).resolve().parent / "layouts"


class CodecError(DecodeError):
    """A payload the codec cannot read; ``codec`` and ``f_port`` say which and where."""

    def __init__(self, message: str, raw: bytes | None = None, reason: str = "bad_payload", codec: str = "",
                 f_port: int | None = None) -> None:
        self.codec = codec
        self.f_port = f_port
        super().__init__(f"{codec}: {message}" if codec else message, raw, reason)


@dataclass(frozen=True, slots=True)
class Register:
    """One cumulative register value a payload carries, in base units (L, Wh)."""

    value: int
    quantity: Quantity = Quantity.VOLUME
    ts: dt.datetime | None = None  #: None: stamped with the uplink's time
    status: int = 0


@dataclass(frozen=True, slots=True)
class Payload:
    registers: tuple[Register, ...]
    fields: Mapping[str, Any] = field(default_factory=dict)
    status: int = 0
    warnings: tuple[str, ...] = ()


class Codec(Protocol):
    name: str

    def decode(self, payload: bytes, f_port: int | None = None, obj: Mapping[str, Any] | None = None) -> Payload:
        """Decode; raise :class:`CodecError` for a payload this codec cannot read."""


Factory = Callable[[Mapping[str, Any]], Codec]

REGISTRY: dict[str, Factory] = {}

#: codecs written as code, by module (imported when first asked for)
MODULES = {
    "object": "object",
    "oms": "oms",
    "kamstrup": "kamstrup",
    "sensus-iperl": "oms",
}


def register(name: str) -> Callable[[Factory], Factory]:
    def deco(factory: Factory) -> Factory:
        REGISTRY[name] = factory
        return factory

    return deco


def names() -> list[str]:
    """Every codec name that can be created here."""
    found = set(REGISTRY) | {p.stem.replace("_", "-") for p in LAYOUTS.glob("*.toml")}
    for name, module in MODULES.items():
        try:
            importlib.import_module(f"{__name__}.{module}")
        except ImportError:
            continue
        found.add(name)
    return sorted(n for n in found if n in REGISTRY or (LAYOUTS / f"{n.replace('-', '_')}.toml").exists())


def get(name: str) -> Factory:
    """The factory of codec ``name``, loading its module or layout on first use."""
    if name not in REGISTRY:
        layout = LAYOUTS / f"{name.replace('-', '_')}.toml"
        if layout.exists():
            from meterline.protocols.lorawan.codecs import layout as layouts

            layouts.register_file(layout)
        elif name in MODULES:
            try:
                importlib.import_module(f"{__name__}.{MODULES[name]}")
            except ImportError as exc:
                raise ConfigError([f"payload codec {name!r} is not available here: {exc}"]) from exc
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConfigError([f"no payload codec named {name!r} (known: {', '.join(names())})"]) from None


def create(name: str, params: Mapping[str, Any] | None = None) -> Codec:
    """A codec instance with its parameters checked (unknown ones are a ConfigError)."""
    return get(name)(dict(params or {}))


def check_params(codec: str, params: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``params`` over ``defaults``, rejecting unknown names and values of the wrong type."""
    problems = [f"codec {codec}: unknown parameter {k!r} (known: {', '.join(sorted(defaults)) or 'none'})"
                for k in params if k not in defaults]
    out = dict(defaults)
    for k, v in params.items():
        if k not in defaults:
            continue
        want = type(defaults[k])
        if want is int and (type(v) is not int):
            problems.append(f"codec {codec}: parameter {k!r} must be an integer, got {v!r}")
        elif want is str and not isinstance(v, str):
            problems.append(f"codec {codec}: parameter {k!r} must be a string, got {v!r}")
        else:
            out[k] = v
    if problems:
        raise ConfigError(problems)
    return out
