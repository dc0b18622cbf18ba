"""Bank withholding file formats (出盘 / 回盘), described per bank in TOML.

A format (``config/banks/<bank>.toml``; the two there are documented samples) gives the layout
— ``fixed`` width (widths in **bytes of the encoding**, so a Chinese name takes two per
character in GBK) or ``delimited`` — the encoding (``gbk``, ``gb18030``, ``utf-8``), the line
ending, how amounts are written (``fen``: integer minor units; ``yuan``: decimal with two
places), and for the out-file and the return file the fields of the header, detail and trailer
records, each ``{field = NAME, width = N, align = "left"|"right", pad = " "|"0"}``:

=================  =======================================================  ===========
field              meaning                                                  records
=================  =======================================================  ===========
literal            the fixed text ``value`` (a record type such as "H")     any
filler             blanks (``width``)                                       any
merchant_id        our code at the bank (format's ``merchant_id``)          any
batch_no           the batch number we gave the out-file                    header, trailer
date               the batch's business day (``format``, default %Y%m%d)    header, trailer
count / total      number of detail records / sum of their amounts          header, trailer
paid_count / paid_total   successes only (return trailer)                   trailer
seq                the detail's number in the batch                         detail
account_code       the customer's account code                              detail
bank_account_no    the account the bank debits                              detail
holder_name        the holder of that account                               detail
amount             the amount to withhold / withheld                        detail
status             the bank's result code (``success`` lists the paid ones) return detail
reason_code        the bank's reason for a failure (``reasons`` names them) return detail
reason_text        the bank's own words                                     return detail
bank_ref           the bank's transaction reference                         return detail
=================  =======================================================  ===========

Rendering and parsing are pure (bytes in, records out); :mod:`.withholding` does the I/O.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

from meterline.config.loader import build, read_toml
from meterline.errors import ConfigError

DEFAULT_BANKS_DIR = Path(__file__).resolve().parents[2] / "config" / "banks"

FIELDS = {"literal", "filler", "merchant_id", "batch_no", "date", "count", "total", "paid_count", "paid_total",
          "seq", "account_code", "bank_account_no", "holder_name", "amount", "status", "reason_code",
          "reason_text", "bank_ref"}
_INT_FIELDS = {"count", "total", "paid_count", "paid_total", "seq"}
_AMOUNT_FIELDS = {"total", "paid_total", "amount"}


@dataclass(frozen=True, slots=True)
class FieldSpec:
    field: str
    width: int = 0  # fixed layout: bytes; delimited: 0 (no limit) or a maximum
    align: Literal["left", "right"] = "left"
    pad: str = " "
    value: str = ""  # literal
    format: str = "%Y%m%d"  # date

    def validate(self) -> list[str]:
        out = []
        if self.field not in FIELDS:
            out.append(f"field {self.field!r} is not one of {', '.join(sorted(FIELDS))}")
        if len(self.pad) != 1:
            out.append("pad must be one character")
        if self.width < 0:
            out.append("width must be >= 0")
        if self.field == "literal" and not self.value:
            out.append("a literal needs a value")
        return out


@dataclass(frozen=True, slots=True)
class FileSpec:
    header: list[FieldSpec] = field(default_factory=list)
    detail: list[FieldSpec] = field(default_factory=list)
    trailer: list[FieldSpec] = field(default_factory=list)
    #: return files: status codes that mean "withheld"
    success: list[str] = field(default_factory=list)
    #: return files: the bank's reason codes and what they mean
    reasons: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BankFormat:
    bank: str
    name: str
    layout: Literal["fixed", "delimited"] = "fixed"
    encoding: Literal["gbk", "gb18030", "utf-8"] = "gbk"
    delimiter: str = "|"
    line_ending: Literal["crlf", "lf"] = "crlf"
    amount: Literal["fen", "yuan"] = "fen"
    merchant_id: str = ""
    out: FileSpec = field(default_factory=FileSpec)
    returns: FileSpec = field(default_factory=FileSpec)

    @property
    def eol(self) -> bytes:
        return b"\r\n" if self.line_ending == "crlf" else b"\n"

    def validate(self) -> list[str]:
        out = []
        for side, spec in (("out", self.out), ("returns", self.returns)):
            if not spec.detail:
                out.append(f"{side}.detail has no fields")
            for rec in ("header", "detail", "trailer"):
                fields = getattr(spec, rec)
                if self.layout == "fixed":
                    for f in fields:
                        if f.width <= 0:
                            out.append(f"{side}.{rec}.{f.field}: fixed layout needs a width")
        detail_fields = {f.field for f in self.returns.detail}
        for need in ("seq", "amount", "status"):
            if need not in detail_fields:
                out.append(f"returns.detail needs a {need} field")
        if not self.returns.success:
            out.append("returns.success lists no status code")
        if self.layout == "delimited" and len(self.delimiter) != 1:
            out.append("delimiter must be one character")
        return out

    # -- values ------------------------------------------------------------------------
    def amount_text(self, minor: int) -> str:
        if self.amount == "fen":
            return str(minor)
        sign = "-" if minor < 0 else ""
        return f"{sign}{abs(minor) // 100}.{abs(minor) % 100:02d}"

    def parse_amount(self, text: str) -> int:
        text = text.strip()
        if self.amount == "fen":
            if not text.lstrip("-").isdigit():
                raise ValueError(f"amount {text!r} is not an integer of fen")
            return int(text)
        try:
            value = Decimal(text)
        except InvalidOperation as exc:
            raise ValueError(f"amount {text!r} is not a decimal of yuan") from exc
        fen = value * 100
        if fen != fen.to_integral_value():
            raise ValueError(f"amount {text!r} has more than two decimal places")
        return int(fen)


def load_format(path: str | Path) -> BankFormat:
    path = Path(path)
    data = read_toml(path, "bank format file")
    return build(BankFormat, data, source=str(path))


def load_formats(directory: str | Path | None = None) -> dict[str, BankFormat]:
    """Every ``*.toml`` format of ``directory`` (default ``config/banks``), by bank code."""
    directory = Path(directory) if directory else DEFAULT_BANKS_DIR
    formats = {}
    problems = []
    for path in sorted(directory.glob("*.toml")):
        try:
            fmt = load_format(path)
        except ConfigError as exc:
            problems.extend(f"{path.name}: {p}" for p in exc.problems)
            continue
        if fmt.bank in formats:
            problems.append(f"{path.name}: bank {fmt.bank} is defined twice")
        formats[fmt.bank] = fmt
    if problems:
        raise ConfigError(problems, str(directory))
    return formats


# -- rendering -------------------------------------------------------------------------------

def _fit(fmt: BankFormat, spec: FieldSpec, text: str) -> bytes:
    data = text.encode(fmt.encoding, errors="replace")
    if fmt.layout == "delimited":
        if fmt.delimiter.encode(fmt.encoding) in data or b"\n" in data or b"\r" in data:
            raise ValueError(f"{spec.field} value {text!r} contains the delimiter or a line break")
        return data
    if len(data) > spec.width:
        # cut on a character boundary (never half a GBK character)
        cut = ""
        for ch in text:
            if len((cut + ch).encode(fmt.encoding, errors="replace")) > spec.width:
                break
            cut += ch
        data = cut.encode(fmt.encoding, errors="replace")
    padding = spec.pad.encode(fmt.encoding) * (spec.width - len(data))
    return padding + data if spec.align == "right" else data + padding


def _value(fmt: BankFormat, spec: FieldSpec, values: dict[str, Any]) -> str:
    if spec.field == "literal":
        return spec.value
    if spec.field == "filler":
        return ""
    if spec.field == "merchant_id":
        return fmt.merchant_id
    value = values.get(spec.field)
    if value is None:
        return ""
    if spec.field == "date":
        return value.strftime(spec.format)
    if spec.field in _AMOUNT_FIELDS:
        return fmt.amount_text(int(value))
    return str(value)


def render_record(fmt: BankFormat, fields: list[FieldSpec], values: dict[str, Any]) -> bytes:
    parts = [_fit(fmt, f, _value(fmt, f, values)) for f in fields]
    sep = b"" if fmt.layout == "fixed" else fmt.delimiter.encode(fmt.encoding)
    return sep.join(parts)


def render(fmt: BankFormat, spec: FileSpec, header: dict[str, Any], details: list[dict[str, Any]]) -> bytes:
    """A whole file: header, details, trailer (header values also serve the trailer)."""
    lines = []
    if spec.header:
        lines.append(render_record(fmt, spec.header, header))
    lines.extend(render_record(fmt, spec.detail, d) for d in details)
    if spec.trailer:
        lines.append(render_record(fmt, spec.trailer, header))
    return fmt.eol.join(lines) + fmt.eol


# -- parsing ---------------------------------------------------------------------------------

@dataclass
class ParsedFile:
    header: dict[str, Any] = field(default_factory=dict)
    details: list[dict[str, Any]] = field(default_factory=list)
    trailer: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _split(fmt: BankFormat, fields: list[FieldSpec], line: bytes, lineno: int, problems: list[str]) -> dict[str, str] | None:
    if fmt.layout == "fixed":
        width = sum(f.width for f in fields)
        if len(line) != width:
            problems.append(f"line {lineno}: {len(line)} bytes, the format has {width}")
            return None
        out, pos = {}, 0
        for f in fields:
            chunk = line[pos:pos + f.width]
            pos += f.width
            try:
                text = chunk.decode(fmt.encoding)
            except UnicodeDecodeError:
                problems.append(f"line {lineno}: {f.field} is not valid {fmt.encoding}")
                return None
            out[f.field] = text.strip(f.pad + " ") if f.field not in _INT_FIELDS | _AMOUNT_FIELDS else text.strip()
        return out
    try:
        text = line.decode(fmt.encoding)
    except UnicodeDecodeError:
        problems.append(f"line {lineno}: not valid {fmt.encoding}")
        return None
    parts = text.split(fmt.delimiter)
    if len(parts) != len(fields):
        problems.append(f"line {lineno}: {len(parts)} fields, the format has {len(fields)}")
        return None
    return {f.field: p.strip() for f, p in zip(fields, parts)}


def _typed(fmt: BankFormat, raw: dict[str, str], fields: list[FieldSpec], lineno: int, problems: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields:
        text = raw.get(f.field, "")
        try:
            if f.field in _AMOUNT_FIELDS:
                out[f.field] = fmt.parse_amount(text)
            elif f.field in _INT_FIELDS:
                if not text.isdigit():
                    raise ValueError(f"{text!r} is not a number")
                out[f.field] = int(text)
            elif f.field == "date":
                out[f.field] = dt.datetime.strptime(text, f.format).date()
            elif f.field == "literal":
                if text != f.value.strip():
                    raise ValueError(f"record type {text!r}, expected {f.value!r}")
            elif f.field != "filler":
                out[f.field] = text
        except ValueError as exc:
            problems.append(f"line {lineno}: {f.field}: {exc}")
    return out


def parse(fmt: BankFormat, spec: FileSpec, data: bytes) -> ParsedFile:
    """Split and type a file; structural problems (widths, types, counts, totals) are collected."""
    result = ParsedFile()
    lines = [ln.rstrip(b"\r") for ln in data.split(b"\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    numbered = list(enumerate(lines, start=1))
    if spec.header:
        if not numbered:
            result.problems.append("the file is empty")
            return result
        lineno, line = numbered.pop(0)
        raw = _split(fmt, spec.header, line, lineno, result.problems)
        if raw is not None:
            result.header = _typed(fmt, raw, spec.header, lineno, result.problems)
    if spec.trailer:
        if not numbered:
            result.problems.append("the file has no trailer record")
            return result
        lineno, line = numbered.pop()
        raw = _split(fmt, spec.trailer, line, lineno, result.problems)
        if raw is not None:
            result.trailer = _typed(fmt, raw, spec.trailer, lineno, result.problems)
    for lineno, line in numbered:
        raw = _split(fmt, spec.detail, line, lineno, result.problems)
        if raw is not None:
            rec = _typed(fmt, raw, spec.detail, lineno, result.problems)
            rec["_line"] = lineno
            result.details.append(rec)
    control = {**result.header, **result.trailer}
    paid = [d for d in result.details if d.get("status") in spec.success]
    checks = (("count", len(result.details)), ("total", sum(d.get("amount", 0) for d in result.details)),
              ("paid_count", len(paid)), ("paid_total", sum(d.get("amount", 0) for d in paid)))
    for name, actual in checks:
        if name in control and control[name] != actual:
            shown = fmt.amount_text(control[name]) if "total" in name else control[name]
            real = fmt.amount_text(actual) if "total" in name else actual
            result.problems.append(f"control {name} says {shown}, the detail records give {real}")
    return result
