"""Handheld route uploads (CSV or JSON) → validated rows + a per-line error list. Pure.

What a handheld brings back from a route: one row per meter visited::

    meter,reader,read_at,register,skip_code,photo,note
    WM-000123,R07,2024-03-05 09:12,01234.567,,IMG_0042.jpg,
    WM-000124,R07,2024-03-05T09:15:00+08:00,,no_access,,gate locked

* ``meter`` (required): the meter's serial number;
* ``reader`` (required): the reader's id;
* ``read_at`` (required): ``YYYY-MM-DD HH:MM[:SS]`` or ISO 8601 (``T``, ``Z``, ``±HH:MM``);
  without an offset it is the utility's local time;
* ``register``: the dial as read, a decimal in the meter's display unit (m³, kWh, ...);
  required unless ``skip_code`` is given, and then it must be empty;
* ``skip_code``: why the meter was not read (:data:`SKIP_CODES`);
* ``photo``, ``note``: optional references.

Other columns are ignored (and named in the report, except the informational ones of a route
file exported by ``meterline route export``, :data:`ROUTE_INFO`). JSON uploads are JSON Lines (one object per line) or one array of objects, with the
same keys. Text must be UTF-8 (a byte-order mark is fine) unless another encoding is named.

:func:`parse_upload` raises :class:`UploadError` for problems with the file as a whole
(encoding, missing columns, not CSV/JSON) and returns every row problem as a
:class:`RowError` with its line number. Meter-dependent checks (is the serial known, does the
value fit the register) are the importer's (``ingest.handheld``).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import polars as pl

from meterline.errors import DecodeError

SKIP_CODES = ("no_access", "meter_damaged", "meter_illegible", "meter_missing", "customer_refused", "hazard", "other")
REQUIRED = ("meter", "reader", "read_at")
OPTIONAL = ("register", "skip_code", "photo", "note")
COLUMNS = REQUIRED + OPTIONAL
#: what a route file from ``meterline route export`` carries for the reader (read, not imported)
ROUTE_INFO = ("seq", "book", "account", "address", "customer", "unit", "digits", "last_value", "last_read_at",
              "expected_low", "expected_high")
MAX_DIGITS = 12
EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
FUTURE_TOLERANCE = dt.timedelta(minutes=10)
_REGISTER = r"^\d{1,12}(\.\d{1,9})?$"


class UploadError(DecodeError):
    """The upload as a whole cannot be read (encoding, missing columns, format)."""

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        super().__init__(f"{name}: {message}", reason="bad_upload")


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    field: str | None
    message: str
    raw: str = ""

    def __str__(self) -> str:
        col = f" [{self.field}]" if self.field else ""
        return f"line {self.line}{col}: {self.message}"


@dataclass(slots=True)
class ParsedUpload:
    """Rows that passed the syntax checks (a polars frame) and every problem found."""

    name: str
    format: str  #: csv | json
    rows: pl.DataFrame  #: line, meter, reader, ts (µs since epoch, UTC), register, skip_code, photo, note
    errors: list[RowError] = field(default_factory=list)
    total: int = 0  #: data rows in the file (blank lines not counted)
    ignored_columns: tuple[str, ...] = ()


def _decode(data: bytes, name: str, encoding: str) -> str:
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        hint = ""
        if encoding.lower().replace("-", "") in ("utf8", "utf8sig"):
            try:
                data.decode("gb18030")
                hint = "; it reads as GB18030 (GBK): re-import with --encoding gb18030 or save the file as UTF-8"
            except UnicodeDecodeError:
                pass
        raise UploadError(name, f"not {encoding} text: byte 0x{data[exc.start]:02X} at offset {exc.start} "
                                f"(line {line}) is invalid{hint}") from exc
    except LookupError as exc:
        raise UploadError(name, f"unknown encoding {encoding!r}") from exc
    return text.removeprefix("\ufeff")


def _header(names: list[str], name: str) -> tuple[list[str], tuple[str, ...]]:
    cols = [n.strip().lower() for n in names]
    missing = [c for c in REQUIRED if c not in cols]
    if missing:
        found = ", ".join(c for c in cols if c) or "none"
        raise UploadError(name, f"missing required column(s): {', '.join(missing)} (found: {found})")
    dup = sorted({c for c in cols if c in COLUMNS and cols.count(c) > 1})
    if dup:
        raise UploadError(name, f"column(s) given twice: {', '.join(dup)}")
    return cols, tuple(c for c in cols if c not in COLUMNS and c not in ROUTE_INFO)


def _csv_fast(text: str, name: str, delimiter: str) -> tuple[pl.DataFrame, list[RowError], int, tuple[str, ...]]:
    """Files without quote characters: split lines and fields vectorized (exact line numbers)."""
    if "\n\n" not in text and "\n\r\n" not in text and not text.startswith(("\n", "\r\n")):
        # no empty lines, so none is skipped: line numbers are positions (native line splitting)
        lines = pl.read_csv(io.StringIO(text), has_header=False, separator="\x1f", quote_char=None,
                            infer_schema=False, new_columns=["text"])["text"].str.strip_suffix("\r")
    else:
        lines = pl.Series("text", text.split("\n"), dtype=pl.String).str.strip_suffix("\r")
    df = pl.DataFrame({"line": pl.int_range(1, len(lines) + 1, dtype=pl.Int32, eager=True), "text": lines})
    df = df.filter(pl.col("text").str.strip_chars() != "")
    if df.height == 0:
        raise UploadError(name, "the file is empty")
    header = df["text"][0].split(delimiter)
    cols, ignored = _header(header, name)
    width = len(cols)
    df = df.slice(1).with_columns(n=pl.col("text").str.count_matches(delimiter, literal=True) + 1)
    errors = [RowError(line, None, f"{n} field(s), the header has {width}", t)
              for line, t, n in df.filter(pl.col("n") != width).select("line", "text", "n").iter_rows()]
    total = df.height
    fields = pl.col("text").str.split_exact(delimiter, width - 1) if width > 1 else pl.struct(pl.col("text").alias("field_0"))
    df = df.filter(pl.col("n") == width).select("line", fields.alias("f")).unnest("f")
    names = df.columns[1:]
    padded = df.select(pl.any_horizontal(pl.col(n).str.contains(r"^\s|\s$") for n in names).any()).item() \
        if df.height else False

    def field(c: str) -> pl.Expr:
        col = pl.col(names[cols.index(c)])
        return (col.str.strip_chars() if padded else col).alias(c)

    out = df.select("line", *(field(c) if c in cols else pl.lit("", dtype=pl.String).alias(c) for c in COLUMNS))
    return out, errors, total, ignored


def _csv_rows(text: str, name: str) -> tuple[dict[str, list] | pl.DataFrame, list[RowError], int, tuple[str, ...]]:
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t") if text.strip() else csv.excel
    except csv.Error:
        dialect = csv.excel
    if '"' not in text and text.strip():
        return _csv_fast(text, name, dialect.delimiter)
    reader = csv.reader(io.StringIO(text, newline=""), dialect)
    try:
        header = next(reader)
    except StopIteration:
        raise UploadError(name, "the file is empty") from None
    except csv.Error as exc:
        raise UploadError(name, f"not CSV: {exc}") from exc
    cols, ignored = _header(header, name)
    index = {c: cols.index(c) for c in COLUMNS if c in cols}
    width = len(cols)
    out: dict[str, list] = {c: [] for c in COLUMNS}
    lines: list[int] = []
    errors: list[RowError] = []
    total = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            total += 1
            errors.append(RowError(reader.line_num, None, f"not a CSV row: {exc}"))
            continue
        if not row or all(not f.strip() for f in row):
            continue
        total += 1
        line = reader.line_num
        if len(row) != width:
            errors.append(RowError(line, None, f"{len(row)} field(s), the header has {width}", ",".join(row)))
            continue
        lines.append(line)
        for c in COLUMNS:
            i = index.get(c)
            out[c].append(row[i].strip() if i is not None else "")
    out["line"] = lines
    return out, errors, total, ignored


def _json_objects(text: str, name: str) -> list[tuple[int, object]]:
    """(line, object) pairs of a JSON array or of JSON Lines."""
    stripped = text.lstrip()
    decoder = json.JSONDecoder()
    items: list[tuple[int, object]] = []
    if stripped.startswith("["):
        pos = len(text) - len(stripped) + 1
        n = len(text)

        def skip(p: int) -> int:
            while p < n and text[p] in " \t\r\n":
                p += 1
            return p

        pos = skip(pos)
        if pos < n and text[pos] == "]":
            return []
        while True:
            try:
                obj, end = decoder.raw_decode(text, pos)
            except json.JSONDecodeError as exc:
                raise UploadError(name, f"not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
            items.append((text.count("\n", 0, pos) + 1, obj))
            pos = skip(end)
            if pos < n and text[pos] == ",":
                pos = skip(pos + 1)
                continue
            if pos < n and text[pos] == "]":
                if skip(pos + 1) != n:
                    raise UploadError(name, "text after the closing ] of the JSON array")
                return items
            raise UploadError(name, f"not valid JSON at line {text.count(chr(10), 0, pos) + 1}: expected , or ]")
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append((i, json.loads(line)))
        except json.JSONDecodeError as exc:
            items.append((i, exc))
    return items


def _json_rows(text: str, name: str) -> tuple[dict[str, list], list[RowError], int, tuple[str, ...]]:
    items = _json_objects(text, name)
    if not items:
        raise UploadError(name, "the file holds no readings")
    keys: set[str] = set()
    for _, obj in items:
        if isinstance(obj, dict):
            keys.update(k.strip().lower() for k in obj)
    missing = [c for c in REQUIRED if c not in keys]
    if missing:
        raise UploadError(name, f"missing required key(s): {', '.join(missing)} (found: {', '.join(sorted(keys)) or 'none'})")
    out: dict[str, list] = {c: [] for c in COLUMNS}
    lines: list[int] = []
    errors: list[RowError] = []
    for line, obj in items:
        if isinstance(obj, json.JSONDecodeError):
            errors.append(RowError(line, None, f"not valid JSON: {obj.msg}"))
            continue
        if not isinstance(obj, dict):
            errors.append(RowError(line, None, f"expected an object, got {type(obj).__name__}"))
            continue
        row = {k.strip().lower(): v for k, v in obj.items()}
        bad = [k for k in COLUMNS if isinstance(row.get(k), (dict, list, bool))]
        if bad:
            errors.append(RowError(line, bad[0], f"{bad[0]} must be a string or a number", json.dumps(obj)[:200]))
            continue
        lines.append(line)
        for c in COLUMNS:
            v = row.get(c)
            out[c].append("" if v is None else str(v).strip())
    out["line"] = lines
    ignored = tuple(sorted(keys - set(COLUMNS) - set(ROUTE_INFO)))
    return out, errors, len(items), ignored


def detect_format(name: str, text: str) -> str:
    lower = name.lower()
    if lower.endswith((".json", ".jsonl", ".ndjson")):
        return "json"
    if lower.endswith((".csv", ".txt", ".tsv")):
        return "csv"
    return "json" if text.lstrip()[:1] in ("[", "{") else "csv"


_NAIVE = ("%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M:%S%.f")
_AWARE = ("%Y-%m-%d %H:%M:%S%z", "%Y-%m-%d %H:%M%z", "%Y-%m-%d %H:%M:%S%.f%z")


def _timestamps(col: pl.Expr, tz: str) -> pl.Expr:
    """µs since the epoch (UTC) of the accepted spellings; null when none matches."""
    norm = col.str.replace(r"^(\d{4}-\d{2}-\d{2})T", "$1 ").str.replace(r"Z$", "+00:00")
    aware = [norm.str.strptime(pl.Datetime("us", "UTC"), fmt, strict=False) for fmt in _AWARE]
    naive = [norm.str.strptime(pl.Datetime("us"), fmt, strict=False) for fmt in _NAIVE]
    local = pl.coalesce(naive).dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null") \
        .dt.convert_time_zone("UTC")
    return pl.coalesce(aware + [local]).dt.epoch("us")


def _parse_times(df: pl.DataFrame, tz: str) -> pl.DataFrame:
    """Add ``ts``: the common spelling (local ``YYYY-MM-DD HH:MM``) for all rows at once, every
    other spelling only for the rows it did not fit."""
    first = pl.col("read_at").str.strptime(pl.Datetime("us"), _NAIVE[0], strict=False) \
        .dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null").dt.convert_time_zone("UTC").dt.epoch("us")
    df = df.with_columns(ts=first)
    misses = df["ts"].is_null()
    if not misses.any():
        return df
    rest = df.filter(misses).with_columns(ts=_timestamps(pl.col("read_at"), tz))
    # one chunk: polars 2.1 panics ("i < self.len()") formatting messages from a filtered
    # two-chunk string column (test_mixed_spellings_with_errors_in_both_parts)
    return pl.concat([df.filter(~misses), rest], rechunk=True).sort("line")


def parse_upload(data: bytes, *, name: str, tz: str | ZoneInfo, encoding: str = "utf-8",
                 now: dt.datetime | None = None, fmt: str | None = None) -> ParsedUpload:
    """Parse and check an upload; see the module docstring."""
    tz_name = tz.key if isinstance(tz, ZoneInfo) else tz
    text = _decode(data, name, encoding)
    fmt = fmt or detect_format(name, text)
    if fmt == "csv":
        out, errors, total, ignored = _csv_rows(text, name)
    elif fmt == "json":
        out, errors, total, ignored = _json_rows(text, name)
    else:
        raise UploadError(name, f"unknown format {fmt!r} (csv or json)")
    now = now or dt.datetime.now(dt.timezone.utc)
    if isinstance(out, pl.DataFrame):
        df = out
    else:
        df = pl.DataFrame({"line": pl.Series(out["line"], dtype=pl.Int32),
                           **{c: pl.Series(out[c], dtype=pl.String) for c in COLUMNS}})
    skip_known = pl.col("skip_code").is_in(list(SKIP_CODES))
    df = _parse_times(df, tz_name)
    latest = int((now + FUTURE_TOLERANCE).timestamp() * 1_000_000)
    earliest = int(EARLIEST.timestamp() * 1_000_000)
    has_skip = pl.col("skip_code") != ""
    has_register = pl.col("register") != ""
    checks: list[tuple[str, pl.Expr, pl.Expr]] = [
        ("meter", pl.col("meter") == "", pl.lit("meter serial is empty")),
        ("reader", pl.col("reader") == "", pl.lit("reader is empty")),
        ("read_at", pl.col("read_at") == "", pl.lit("read_at is empty")),
        ("read_at", (pl.col("read_at") != "") & pl.col("ts").is_null(),
         pl.format("read_at '{}' is not a date and time (YYYY-MM-DD HH:MM[:SS], ISO 8601) "
                   "or does not exist in " + tz_name, pl.col("read_at"))),
        ("read_at", pl.col("ts") > latest, pl.format("read_at '{}' is in the future", pl.col("read_at"))),
        ("read_at", pl.col("ts") < earliest, pl.format("read_at '{}' is before 2000", pl.col("read_at"))),
        ("skip_code", has_skip & ~skip_known,
         pl.format("unknown skip code '{}' (known: " + ", ".join(SKIP_CODES) + ")", pl.col("skip_code"))),
        ("register", has_skip & has_register,
         pl.format("register '{}' given together with skip code '{}'", pl.col("register"), pl.col("skip_code"))),
        ("register", ~has_skip & ~has_register, pl.lit("register is empty and no skip code says why")),
        ("register", has_register & ~pl.col("register").str.contains(_REGISTER),
         pl.format("register '{}' is not a non-negative decimal of at most 12 digits", pl.col("register"))),
        ("photo", pl.col("photo").str.len_chars() > 500, pl.lit("photo reference is longer than 500 characters")),
    ]
    flags = df.select([cond.alias(f"e{i}") for i, (_, cond, _) in enumerate(checks)])
    any_bad = flags.select(pl.any_horizontal(pl.all()).alias("bad"))["bad"]
    if any_bad.any():
        bad = df.filter(any_bad)
        bad_flags = flags.filter(any_bad)
        messages = bad.select([msg.alias(f"m{i}") for i, (_, _, msg) in enumerate(checks)])
        lines = bad["line"].to_list()
        raws = dict(zip(lines, bad.select(pl.concat_str(list(COLUMNS), separator=",")).to_series().to_list()))
        for i, (column, _, _) in enumerate(checks):
            hit = bad_flags[f"e{i}"].to_list()
            texts = messages[f"m{i}"].to_list()
            for line, h, t in zip(lines, hit, texts):
                if h:
                    errors.append(RowError(line, column, t, raws.get(line, "")))
        df = df.filter(~any_bad)
    errors.sort(key=lambda e: e.line)
    df = df.select("line", "meter", "reader", "ts", "register", "skip_code", "photo", "note")
    return ParsedUpload(name, fmt, df, errors, total, ignored)
