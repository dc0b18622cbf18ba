"""What every export shares: the period, money as text, and writers that give the same bytes twice.

Contract of every file written through here: the content depends only on the database rows it
is given, never on the clock, the locale, the process or the order rows came back in:

* text is UTF-8 with ``\\n`` line ends; JSON keys are sorted, no ASCII escaping, compact;
* CSV by :func:`csv_bytes` (``\\n``, minimal quoting); every caller sorts its rows by a key;
* Parquet by :func:`parquet_bytes`: polars' own writer with fixed settings (zstd level 3, one
  row group per 128k rows, statistics on), from a frame with an explicit schema;
* a file is replaced atomically (written beside it, then renamed), so a reader never sees half
  a file and a re-run over an older file leaves exactly the new bytes.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import tempfile
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable, Sequence
from zoneinfo import ZoneInfo

import polars as pl
import psycopg

from meterline.errors import MeterlineError

PARQUET_SETTINGS: dict[str, Any] = {"compression": "zstd", "compression_level": 3, "statistics": True,
                                    "row_group_size": 131_072}


class ExportError(MeterlineError):
    """An export cannot be written (bad period, nothing to export where something must be)."""


@dataclass(frozen=True, slots=True)
class Period:
    """A billing period ``YYYY-MM`` cut in the company's time zone."""

    code: str
    first_day: dt.date       #: inclusive
    last_day: dt.date        #: inclusive
    start: dt.datetime       #: local midnight of the first day (aware)
    end: dt.datetime         #: local midnight after the last day (aware, exclusive)

    @classmethod
    def parse(cls, code: str, timezone: str) -> "Period":
        try:
            year, month = (int(x) for x in code.split("-"))
            if len(code) != 7 or not 1 <= month <= 12:
                raise ValueError(code)
        except (ValueError, AttributeError) as exc:
            raise ExportError(f"period {code!r} is not YYYY-MM (e.g. 2026-10)") from exc
        first = dt.date(year, month, 1)
        nxt = dt.date(year + (month == 12), month % 12 + 1, 1)
        zone = ZoneInfo(timezone)
        return cls(code, first, nxt - dt.timedelta(days=1), dt.datetime(year, month, 1, tzinfo=zone),
                   dt.datetime(nxt.year, nxt.month, 1, tzinfo=zone))

    def shifted(self, months: int, timezone: str) -> "Period":
        k = self.first_day.year * 12 + self.first_day.month - 1 + months
        return Period.parse(f"{k // 12:04d}-{k % 12 + 1:02d}", timezone)


@dataclass(frozen=True, slots=True)
class CompanyRef:
    id: int
    code: str
    name: str
    timezone: str
    currency: str
    minor_units: int


def company_ref(conn: psycopg.Connection, company_id: int) -> CompanyRef:
    row = conn.execute("SELECT id, code, name, timezone, currency, minor_units FROM company WHERE id = %s",
                       [company_id]).fetchone()
    if row is None:
        raise ExportError(f"company {company_id} is not visible in this session (wrong scope?)")
    return CompanyRef(*row)


def money(minor: int | None, minor_units: int = 100) -> str:
    """Minor units as a decimal string: 12345 → ``123.45`` (exact; never a float)."""
    if minor is None:
        return ""
    digits = len(str(minor_units)) - 1
    q = Decimal(int(minor)).scaleb(-digits)
    return f"{q:.{digits}f}"


def scaled(value: int | None, scale: int) -> str:
    """An integer at ``scale`` decimals as text: (123456, 3) → ``123.456``."""
    if value is None:
        return ""
    return f"{Decimal(int(value)).scaleb(-scale):.{max(scale, 0)}f}"


def unit_price_text(unit_price: int, price_scale: int, minor_units: int = 100) -> str:
    """A bill line's unit price in currency units: minor units at ``price_scale`` → yuan."""
    digits = len(str(minor_units)) - 1
    q = Decimal(int(unit_price)).scaleb(-(price_scale + digits)).normalize()
    text = f"{q:f}"
    if "." not in text:
        text += ".00"
    elif len(text.split(".")[1]) < 2:
        text += "0"
    return text


def json_line(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=_json_default)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (dt.date, dt.datetime)):
        return obj.isoformat()
    if isinstance(obj, Decimal):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def csv_bytes(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in rows:
        w.writerow(["" if v is None else _cell(v) for v in row])
    return buf.getvalue().encode("utf-8")


def _cell(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (dt.date, dt.datetime)):
        return v.isoformat()
    return str(v)


def parquet_bytes(frame: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.write_parquet(buf, **PARQUET_SETTINGS)
    return buf.getvalue()


def write_file(path: Path, data: bytes) -> Path:
    """Replace ``path`` with ``data`` atomically (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def utc_iso(ts: dt.datetime | None) -> str | None:
    """An aware timestamp as ISO 8601 in UTC with ``Z`` (the same text whatever the session zone)."""
    if ts is None:
        return None
    return ts.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ").replace(".000000Z", "Z")


def local_iso(ts: dt.datetime | None, timezone: str) -> str | None:
    if ts is None:
        return None
    return ts.astimezone(ZoneInfo(timezone)).isoformat(timespec="seconds")
