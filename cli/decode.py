"""``meterline decode <protocol> FILE|HEX``: decode a captured frame and show what it says.

Protocols register in :data:`DECODERS` (name → (help, configure, run)), so another wire format
adds one entry here rather than a second ``decode`` command. No database is needed.

* ``decode mbus``: wired M-Bus long frames (one or several concatenated: a multi-telegram
  readout): slave information and records (id, function, storage, tariff, device, quantity,
  unit, value);
* ``decode wmbus``: a wireless M-Bus telegram (link-layer CRCs removed, or ``--crc A|B`` to
  check and strip them); keys from ``[wmbus] keys`` in the settings or ``--key ID=HEX``.

The input is hex text (spaces, colons and ``_ | #`` allowed) given on the command line or in a
file, or a binary file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable

from rich.table import Table

from meterline.cli._base import Command, Context
from meterline.errors import ConfigError
from meterline.protocols.mbus import frame as mbus
from meterline.protocols.mbus.errors import FrameError
from meterline.protocols.mbus.records import Record


def read_input(source: str) -> bytes:
    """Bytes from a file (hex text or binary) or from hex given on the command line."""
    path = Path(source)
    try:
        is_file = path.is_file()
    except OSError:  # hex too long to be a file name
        is_file = False
    if is_file:
        data = path.read_bytes()
        try:
            return mbus.parse_hex(data.decode("ascii"))
        except (UnicodeDecodeError, FrameError):
            return data
    return mbus.parse_hex(source)


def split_frames(data: bytes) -> list[bytes]:
    """Concatenated wired M-Bus frames, one by one (each checked by the decoder later)."""
    frames = []
    pos = 0
    while pos < len(data):
        need = mbus.frame_length(data[pos:])
        if need is None or pos + need > len(data):
            frames.append(data[pos:])  # the decoder names what is missing
            break
        frames.append(data[pos:pos + need])
        pos += need
    return frames


def _records_table(title: str, records: list[Record]) -> Table:
    table = Table(title=title)
    for col in ("id", "function", "storage", "tariff", "device", "quantity", "unit", "value"):
        table.add_column(col, justify="right" if col in ("id", "storage", "tariff", "device") else "left")
    for i, r in enumerate(records):
        value = r.value_text()
        if r.error:
            value = f"{value} ({r.error})" if value else f"({r.error})"
        if r.modifiers:
            value += "  [" + "; ".join(r.modifiers) + "]"
        table.add_row(str(i), r.function.label, str(r.storage), str(r.tariff), str(r.subunit), r.quantity, r.unit,
                      value)
    return table


# --- mbus ----------------------------------------------------------------------------------

def _mbus_configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", metavar="FILE|HEX", help="a file with the frame(s) (hex text or binary), or hex")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--strict", action="store_true", help="refuse reserved/unknown VIF codes")


def _mbus_run(ctx: Context, args: argparse.Namespace) -> int:
    data = read_input(args.input)
    responses = [mbus.decode_response(f, strict=args.strict) for f in split_frames(data)]
    if args.json:
        doc = [{"address": r.address, "ci": f"{r.ci:02X}", "slave": r.slave.as_dict() if r.slave else None,
                "more_records_follow": r.more_follows, "records": [rec.as_dict() for rec in r.records]}
               for r in responses]
        print(json.dumps(doc if len(doc) > 1 else doc[0], ensure_ascii=False, indent=1))
        return 0
    for n, r in enumerate(responses, start=1):
        head = Table(title=f"telegram {n} of {len(responses)}" if len(responses) > 1 else "slave information",
                     show_header=False)
        head.add_column("field")
        head.add_column("value")
        head.add_row("address", str(r.address))
        head.add_row("CI", f"0x{r.ci:02X}" + (" (fixed data structure)" if r.fixed else ""))
        if r.slave is not None:
            for key, value in r.slave.as_dict().items():
                if value != "" or key not in ("manufacturer",):
                    head.add_row(key.replace("_", " "), str(value))
        head.add_row("more records follow", "yes" if r.more_follows else "no")
        ctx.console.print(head)
        ctx.console.print(_records_table("records", r.records))
    return 0


# --- wmbus ---------------------------------------------------------------------------------

def _wmbus_configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", metavar="FILE|HEX", help="a file with the telegram (hex text or binary), or hex")
    p.add_argument("--key", action="append", default=[], metavar="ID=HEX",
                   help="AES-128 key of meter ID (32 hex digits); repeatable; adds to [wmbus] keys")
    p.add_argument("--crc", choices=("A", "B"), default=None, help="the telegram still has frame format A/B CRCs")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")


def _wmbus_run(ctx: Context, args: argparse.Namespace) -> int:
    from meterline.protocols.wmbus.telegram import decode_telegram, strip_crcs

    keys = ctx.settings.wmbus.key_bytes()
    problems = []
    for item in args.key:
        meter, _, hexkey = item.partition("=")
        try:
            key = bytes.fromhex(hexkey)
        except ValueError:
            key = b""
        if len(meter) != 8 or len(key) != 16:
            problems.append(f"--key {item!r}: need ID=HEX with an 8-digit id and 32 hex digits")
        else:
            keys[meter.upper()] = key
    if problems:
        raise ConfigError(problems, "command line")
    data = read_input(args.input)
    if args.crc:
        data = strip_crcs(data, args.crc)
    t = decode_telegram(data, keys=keys)
    if args.json:
        print(json.dumps({"id": t.id, "manufacturer": t.manufacturer, "version": t.version,
                          "device_type": t.medium, "ci": f"{t.ci:02X}", "access_number": t.access_number,
                          "status": f"{t.status:02X}", "security_mode": t.security_mode, "decrypted": t.decrypted,
                          "warnings": list(t.warnings), "records": [r.as_dict() for r in t.records]},
                         ensure_ascii=False, indent=1))
        return 0
    head = Table(title="telegram", show_header=False)
    head.add_column("field")
    head.add_column("value")
    for k, v in (("id", t.id), ("manufacturer", t.manufacturer), ("version", t.version), ("device type", t.medium),
                 ("CI", f"0x{t.ci:02X}"), ("access number", t.access_number), ("status", f"{t.status:02X}"),
                 ("security mode", t.security_mode), ("decrypted", "yes" if t.decrypted else "no")):
        head.add_row(k, str(v))
    for w in t.warnings:
        head.add_row("warning", w)
    ctx.console.print(head)
    ctx.console.print(_records_table("records", t.records))
    return 0


#: protocol name → (help, configure, run)
DECODERS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[Context, argparse.Namespace], int]]] = {
    "mbus": ("wired M-Bus frames (EN 13757-2/-3)", _mbus_configure, _mbus_run),
    "wmbus": ("a wireless M-Bus telegram (EN 13757-4)", _wmbus_configure, _wmbus_run),
}


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="protocol", metavar="PROTOCOL", required=True)
    for name, (help_, conf, _) in DECODERS.items():
        conf(sub.add_parser(name, help=help_))


def run(ctx: Context, args: argparse.Namespace) -> int:
    return DECODERS[args.protocol][2](ctx, args)


COMMANDS = [Command("decode", "decode a captured frame (mbus, wmbus) and show what it says", run, configure)]
