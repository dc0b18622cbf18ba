"""Handheld routes: the route file a reader loads, and the import of what comes back.

``export_route(conn, company, book)`` lists the meters of a meter book in walking order with
their last reading and the range the next reading is expected in; ``write_route`` writes it
as CSV (UTF-8 with BOM, which spreadsheet programs open correctly) or JSON. The CSV has the
upload columns (``reader``, ``read_at``, ``register``, ``skip_code``, ``photo``, ``note``)
left empty, so the filled-in file can be imported as it is.

``import_upload(conn, company, data, name=...)`` checks every row
(:mod:`meterline.protocols.handheld.upload` for the syntax; here the meter: known serial, not
removed, value within its register), commits the good rows in one transaction and records the
bad ones with their line numbers:

* a read becomes a ``reading`` (source ``handheld``, ``source_ref`` =
  ``handheld:<import>:<line, 7 digits>``)
  and a ``handheld_read`` row (reader, photo, note, file, line); a skip (no access, meter
  damaged, ...) only a ``handheld_read`` row;
* refused rows go to ``handheld_bad_row`` (line, field, message, the row's text);
* the file is recorded in ``handheld_import`` once per company and content (sha256): importing
  the same file again changes nothing and says when it was imported. Rows already stored by an
  earlier, different file (same meter and time) are counted, not stored twice.

Expected range of the next read (``expected_low``..``expected_high``): the average daily
consumption between the last reading and the one about a cycle (≥ 20 days) before it,
times the days from the last reading to the read date, ± ``tolerance`` (default 50 %), plus
one display unit of slack above; the low end never goes below the last reading. Without
history the high end is left empty.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import logging
import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Callable, Iterable

import numpy as np
import polars as pl
import psycopg

from meterline.errors import NotFound
from meterline.ingest import columns
from meterline.ingest.model import DeadLetter, Source
from meterline.ingest.writer import write_readings
from meterline.protocols.handheld.upload import ROUTE_INFO, ParsedUpload, RowError, UploadError, parse_upload
from meterline.store import partitions
from meterline.store.company import Company

log = logging.getLogger(__name__)
UTC = dt.timezone.utc

#: display unit → decimal digits of the base unit (m³ → L: 3, kWh → Wh: 3, MWh → Wh: 6)
UNIT_DIGITS = {"m3": 3, "L": 0, "kWh": 3, "MWh": 6}
ROUTE_COLUMNS = ROUTE_INFO[:5] + ("meter",) + ROUTE_INFO[5:] + ("reader", "read_at", "register", "skip_code",
                                                               "photo", "note")


# --- export --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class RouteEntry:
    seq: int
    book: str
    account: str
    address: str
    customer: str
    meter: str
    unit: str
    digits: int
    last_value: Decimal | None
    last_read_at: dt.datetime | None
    expected_low: Decimal | None
    expected_high: Decimal | None
    reader: str = ""

    def row(self, tz: dt.tzinfo) -> dict[str, str]:
        def num(v: Decimal | None) -> str:
            return "" if v is None else format(v.normalize(), "f") if v == v.to_integral() else format(v, "f")

        return {
            "seq": str(self.seq), "book": self.book, "account": self.account, "address": self.address,
            "customer": self.customer, "meter": self.meter, "unit": self.unit, "digits": str(self.digits),
            "last_value": num(self.last_value),
            "last_read_at": self.last_read_at.astimezone(tz).strftime("%Y-%m-%d %H:%M") if self.last_read_at else "",
            "expected_low": num(self.expected_low), "expected_high": num(self.expected_high),
            "reader": self.reader, "read_at": "", "register": "", "skip_code": "", "photo": "", "note": "",
        }


_EXPORT_SQL = """
SELECT b.code, b.reader, a.route_order, a.code, a.address, c.name, m.serial, m.display_unit, m.register_digits,
       last.ts, last.value, prev.ts, prev.value
FROM meter_book b
JOIN account a ON a.book_id = b.id AND a.company_id = b.company_id AND a.status = 'active'
JOIN customer c ON c.id = a.customer_id
JOIN meter m ON m.account_id = a.id AND m.company_id = b.company_id AND m.status = 'active'
LEFT JOIN LATERAL (
    SELECT r.ts, r.value FROM reading r WHERE r.meter_id = m.id AND r.quantity = m.quantity
    ORDER BY r.ts DESC LIMIT 1) last ON true
LEFT JOIN LATERAL (
    SELECT r.ts, r.value FROM reading r WHERE r.meter_id = m.id AND r.quantity = m.quantity
      AND r.ts <= last.ts - interval '20 days'
    ORDER BY r.ts DESC LIMIT 1) prev ON true
WHERE b.company_id = %s AND b.code = %s
ORDER BY a.route_order NULLS LAST, a.code, m.serial
"""


def export_route(conn: psycopg.Connection, company: Company, book: str, *, on: dt.date | None = None,
                 tolerance: float = 0.5) -> list[RouteEntry]:
    """The route of meter book ``book``: see the module docstring."""
    if conn.execute("SELECT 1 FROM meter_book WHERE company_id = %s AND code = %s", [company.id, book]).fetchone() is None:
        raise NotFound(f"meter book {book!r} does not exist in company {company.code!r}")
    on = on or dt.date.today()
    rows = conn.execute(_EXPORT_SQL, [company.id, book]).fetchall()
    out = []
    for seq, (bcode, reader, _order, acc, address, cust, serial, unit, digits, last_ts, last_v, prev_ts, prev_v) \
            in enumerate(rows, start=1):
        scale = Decimal(10) ** UNIT_DIGITS[unit]
        last = None if last_v is None else Decimal(last_v) / scale
        low = high = None
        if last is not None:
            low = last
            if prev_v is not None and prev_ts is not None and last_v >= prev_v and last_ts > prev_ts:
                per_day = Decimal(last_v - prev_v) / Decimal((last_ts - prev_ts).total_seconds() / 86400)
                target = dt.datetime.combine(on, dt.time(12), tzinfo=UTC)
                days = max(Decimal(0), Decimal((target - last_ts).total_seconds() / 86400))
                expected = per_day * days
                tol = Decimal(str(tolerance))
                low = (Decimal(last_v) + (expected * (1 - tol)).to_integral_value(rounding="ROUND_FLOOR")) / scale
                high_base = Decimal(last_v) + (expected * (1 + tol)).to_integral_value(rounding="ROUND_CEILING") + scale
                high = (high_base / scale).to_integral_value(rounding="ROUND_CEILING")
                low = low.to_integral_value(rounding="ROUND_FLOOR") if unit != "L" else low
                low = max(low, Decimal(math.floor(last)))
        out.append(RouteEntry(seq, bcode, acc, address, cust, serial, unit, digits, last, last_ts, low, high,
                              reader or ""))
    return out


def write_route(entries: Iterable[RouteEntry], fmt: str, out: io.TextIOBase, *, tz: dt.tzinfo,
                book: str = "", generated_at: dt.datetime | None = None) -> int:
    """Write a route file (``csv`` or ``json``) to ``out``; returns the number of meters."""
    rows = [e.row(tz) for e in entries]
    if fmt == "csv":
        w = csv.DictWriter(out, fieldnames=list(ROUTE_COLUMNS), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    elif fmt == "json":
        doc = {"book": book, "generated_at": (generated_at or dt.datetime.now(UTC)).isoformat(timespec="seconds"),
               "timezone": str(tz), "meters": rows}
        json.dump(doc, out, ensure_ascii=False, indent=1)
        out.write("\n")
    else:
        raise ValueError(f"route format {fmt!r} is not csv or json")
    return len(rows)


# --- import --------------------------------------------------------------------------------

@dataclass(slots=True)
class ImportReport:
    file: str
    format: str = ""
    sha256: str = ""
    import_id: int | None = None
    already_imported_at: dt.datetime | None = None  #: set when this very file was imported before
    rows_total: int = 0
    rows_read: int = 0
    rows_skipped: int = 0
    rows_duplicate: int = 0  #: rows repeating an identical row of the same file
    readings_new: int = 0
    readings_known: int = 0  #: reads stored before (by an earlier file)
    errors: list[RowError] = field(default_factory=list)
    ignored_columns: tuple[str, ...] = ()

    @property
    def rows_bad(self) -> int:
        return len({e.line for e in self.errors})


_ANY_LIMIT = 20_000  #: beyond this many serials, reading the company's meters is cheaper than ANY(array)


def _meters(conn: psycopg.Connection, company_id: int, serials: list[str]) -> pl.DataFrame:
    if len(serials) <= _ANY_LIMIT:
        cur = conn.execute(
            """SELECT serial, id, display_unit, register_modulus, quantity, status FROM meter
               WHERE company_id = %s AND serial = ANY(%s)""", [company_id, serials])
    else:
        cur = conn.execute("""SELECT serial, id, display_unit, register_modulus, quantity, status FROM meter
                              WHERE company_id = %s""", [company_id])
    rows = cur.fetchall()
    return pl.DataFrame(rows, schema={"meter": pl.String, "meter_id": pl.Int64, "unit": pl.String,
                                      "modulus": pl.Int64, "quantity": pl.Int16, "status": pl.String},
                        orient="row")


def _base_units(df: pl.DataFrame) -> pl.DataFrame:
    """Register text in display units → integer base units (finer digits truncated)."""
    parts = pl.col("register").str.split_exact(".", 1).struct.rename_fields(["int", "frac"])
    df = df.with_columns(parts.alias("_p")).unnest("_p")
    value = pl.lit(None, dtype=pl.Int64)
    for unit, k in UNIT_DIGITS.items():
        frac = (pl.col("frac").fill_null("").str.pad_end(k, "0").str.slice(0, k).cast(pl.Int64)
                if k else pl.lit(0, dtype=pl.Int64))
        value = pl.when(pl.col("unit") == unit).then(pl.col("int").cast(pl.Int64) * 10 ** k + frac).otherwise(value)
    return df.with_columns(value=pl.when(pl.col("register") != "").then(value)).drop("int", "frac")


def _row_errors(df: pl.DataFrame, cond: pl.Expr, field_: str, message: pl.Expr) -> list[RowError]:
    bad = df.filter(cond).select("line", message.alias("m"),
                                 pl.concat_str(["meter", "reader", "register", "skip_code"], separator=",").alias("raw"))
    return [RowError(line, field_, m, raw) for line, m, raw in bad.iter_rows()]


def check_rows(conn: psycopg.Connection, company: Company, parsed: ParsedUpload) -> tuple[pl.DataFrame, list[RowError], int]:
    """Place the parsed rows on meters and check them against their registers.

    Returns the good rows (with meter_id, quantity, value), the new errors, and how many rows
    merely repeated an identical earlier row of the file.
    """
    df = parsed.rows
    errors: list[RowError] = []
    if df.height == 0:
        return df, errors, 0
    meters = _meters(conn, company.id, df["meter"].unique().to_list())
    df = df.join(meters, on="meter", how="left")
    errors += _row_errors(df, pl.col("meter_id").is_null(), "meter",
                          pl.format("unknown meter serial '{}'", pl.col("meter")))
    errors += _row_errors(df, pl.col("status") == "removed", "meter",
                          pl.format("meter '{}' is removed", pl.col("meter")))
    df = df.filter(pl.col("meter_id").is_not_null() & (pl.col("status") != "removed"))
    df = _base_units(df)
    over = pl.col("value") >= pl.col("modulus")
    errors += _row_errors(df, over, "register", pl.format(
        "register '{}' does not fit the meter's register (it wraps at {} base units)",
        pl.col("register"), pl.col("modulus")))
    df = df.filter(~over.fill_null(False))
    # the same meter and time twice in the file: identical rows are repeats, different ones conflict
    repeats = 0
    key = ["meter_id", "ts"]
    dup = df.select(pl.struct(key).is_duplicated()).to_series()
    if dup.any():
        d = df.filter(dup).sort("line").with_columns(
            first_line=pl.col("line").first().over(key),
            last_line=pl.col("line").last().over(key),
            variants=pl.struct("value", "skip_code").n_unique().over(key),
            repeat=pl.col("line").cum_count().over(key) > 1,
        )
        conflict = pl.col("variants") > 1
        errors += _row_errors(d, conflict & (pl.col("line") != pl.col("first_line")), "read_at", pl.format(
            "meter '{}' has a different read at the same time on line {}", pl.col("meter"), pl.col("first_line")))
        errors += _row_errors(d, conflict & (pl.col("line") == pl.col("first_line")), "read_at", pl.format(
            "meter '{}' has a different read at the same time on line {}", pl.col("meter"), pl.col("last_line")))
        dropped = d.filter(conflict | pl.col("repeat"))
        repeats = d.filter(~conflict & pl.col("repeat")).height
        df = df.filter(~pl.col("line").is_in(dropped["line"].implode()))
    return df, errors, repeats


_STAGE_COLUMNS = ["line", "meter_id", "ts", "value", "quantity", "reader", "skip_code", "photo", "note"]
_READ_COLUMNS = ["company_id", "meter_id", "read_at", "reader", "value", "skip_code", "photo_ref", "note", "import_id",
                 "line"]
_READING_COPY = ("COPY reading (meter_id, ts, value, received_at, company_id, status, quantity, source, source_ref) "
                 "FROM STDIN (FORMAT BINARY)")
_REF_DIGITS = 7  #: source_ref = handheld:<import>:<line, zero-padded> (one width per import: vectorized)


def _ts_text(col: str) -> pl.Expr:
    return pl.col(col).cast(pl.Datetime("us", "UTC")).dt.strftime("%Y-%m-%d %H:%M:%S%.6f+00").alias(col)


def _null_if_empty(col: str) -> pl.Expr:
    return pl.when(pl.col(col) != "").then(pl.col(col)).alias(col)


def _stage_frame(df: pl.DataFrame) -> pl.DataFrame:
    return df.select("line", "meter_id", _ts_text("ts"), "value", "quantity", "reader",
                     *(_null_if_empty(c) for c in ("skip_code", "photo", "note")))


def _ref_digits(lines) -> int:
    return max(_REF_DIGITS, len(str(int(lines.max())))) if len(lines) else _REF_DIGITS


def _reading_copy_data(reads: pl.DataFrame, company_id: int, import_id: int, now: dt.datetime) -> bytes:
    """Binary COPY data for ``reading``, built with numpy (no per-row Python)."""
    n = reads.height
    fixed = np.empty(n, dtype=columns._FIXED)
    fixed["nf"] = 9
    for name, size in (("meter", 8), ("ts", 8), ("value", 8), ("recv", 8), ("company", 4), ("status", 4),
                       ("quantity", 2), ("source", 2)):
        fixed[f"l_{name}"] = size
    fixed["meter"] = reads["meter_id"].to_numpy()
    fixed["ts"] = reads["ts"].to_numpy() - columns.PG_EPOCH_US
    fixed["value"] = reads["value"].to_numpy()
    fixed["recv"] = columns.to_us(now) - columns.PG_EPOCH_US
    fixed["company"] = company_id
    fixed["status"] = 0
    fixed["quantity"] = reads["quantity"].to_numpy()
    fixed["source"] = int(Source.HANDHELD)
    prefix = f"handheld:{import_id}:".encode()
    lines = reads["line"].to_numpy().astype(np.int64)
    k = _ref_digits(lines)
    width = len(prefix) + k
    digits = (lines[:, None] // 10 ** np.arange(k - 1, -1, -1, dtype=np.int64)) % 10 + ord("0")
    ref = np.hstack((np.tile(np.frombuffer(width.to_bytes(4, "big") + prefix, dtype=np.uint8), (n, 1)),
                     digits.astype(np.uint8)))
    rows = np.hstack((fixed.view(np.uint8).reshape(n, columns._FIXED.itemsize), ref))
    return columns.COPY_HEADER + rows.tobytes() + columns.COPY_TRAILER


_STAGE = """CREATE TEMP TABLE handheld_stage (
    line integer NOT NULL, meter_id bigint NOT NULL, ts timestamptz NOT NULL, value bigint,
    quantity smallint NOT NULL, reader text NOT NULL, skip_code text, photo text, note text
) ON COMMIT DROP"""


def _copy_frame(cur: psycopg.Cursor, table: str, columns: list[str], df: pl.DataFrame) -> None:
    buf = io.BytesIO()
    df.write_csv(buf, include_header=False, null_value="\\N", quote_style="non_numeric")
    with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT csv, NULL '\\N')") as copy:
        copy.write(buf.getvalue())


def import_upload(conn: psycopg.Connection, company: Company, data: bytes, *, name: str, encoding: str = "utf-8",
                  now: dt.datetime | None = None, progress: Callable[[str], None] | None = None) -> ImportReport:
    """Import one upload (see the module docstring). ``conn`` must be in autocommit mode.

    Raises :class:`~meterline.protocols.handheld.upload.UploadError` (after recording a dead
    letter) when the file as a whole cannot be read.
    """
    step = progress or (lambda _msg: None)
    now = now or dt.datetime.now(UTC)
    report = ImportReport(name, sha256=hashlib.sha256(data).hexdigest())
    step("parsing and checking rows")
    try:
        parsed = parse_upload(data, name=name, tz=company.timezone, encoding=encoding, now=now)
    except UploadError as exc:
        write_readings(conn, [], [DeadLetter(source="handheld", reason=exc.reason, message=str(exc),
                                             raw=data[:65536], company_id=company.id,
                                             detail={"file": name, "sha256": report.sha256, "bytes": len(data)},
                                             received_at=now)])
        raise
    report.format, report.rows_total, report.ignored_columns = parsed.format, parsed.total, parsed.ignored_columns
    good, more_errors, report.rows_duplicate = check_rows(conn, company, parsed)
    report.errors = sorted(parsed.errors + more_errors, key=lambda e: (e.line, e.field or ""))
    bad_lines = {e.line for e in report.errors}
    if bad_lines:  # a row with any problem is refused as a whole
        good = good.filter(~pl.col("line").is_in(list(bad_lines)))
    report.rows_read = good.filter(pl.col("value").is_not_null()).height
    report.rows_skipped = good.height - report.rows_read
    prior = conn.execute("SELECT id, imported_at FROM handheld_import WHERE company_id = %s AND file_sha256 = %s",
                         [company.id, report.sha256]).fetchone()
    if prior is not None:
        report.import_id, report.already_imported_at = prior
        report.readings_known = report.rows_read
        return report
    months = {(d.year, d.month) for d in
              good.select(pl.col("ts").cast(pl.Datetime("us", "UTC")).dt.truncate("1mo")).to_series().unique().to_list()}
    partitions.ensure_months(conn, months)
    step("writing to the database")
    with conn.transaction():
        with conn.cursor() as cur:
            row = cur.execute(
                """INSERT INTO handheld_import (company_id, file_name, file_sha256, format, imported_at)
                   VALUES (%s, %s, %s, %s, %s) ON CONFLICT (company_id, file_sha256) DO NOTHING
                   RETURNING id""", [company.id, name, report.sha256, parsed.format, now]).fetchone()
            if row is None:  # imported concurrently by someone else: nothing to do
                report.import_id, report.already_imported_at = cur.execute(
                    "SELECT id, imported_at FROM handheld_import WHERE company_id = %s AND file_sha256 = %s",
                    [company.id, report.sha256]).fetchone()
                report.readings_known = report.rows_read
                return report
            report.import_id = row[0]
            ordered = good.sort("meter_id", "ts")  # key order: index entries go in in sequence
            reads = ordered.filter(pl.col("value").is_not_null())
            staged = False

            def stage() -> None:
                nonlocal staged
                if not staged:
                    cur.execute(_STAGE)
                    _copy_frame(cur, "handheld_stage", _STAGE_COLUMNS, _stage_frame(ordered))
                    staged = True

            # most uploads hold only new reads: a plain COPY (in a savepoint) is much cheaper than
            # staging + INSERT ... ON CONFLICT; a key already stored sends it the staging way
            try:
                with conn.transaction():
                    with cur.copy(_READING_COPY) as copy:
                        copy.write(_reading_copy_data(reads, company.id, report.import_id, now))
                report.readings_new = reads.height
            except psycopg.errors.UniqueViolation:
                stage()
                cur.execute(
                    """INSERT INTO reading (meter_id, ts, value, received_at, company_id, status, quantity, source,
                                            source_ref)
                       SELECT meter_id, ts, value, %s, %s, 0, quantity, %s,
                              'handheld:' || %s || ':' || lpad(line::text, %s, '0')
                       FROM handheld_stage WHERE value IS NOT NULL
                       ON CONFLICT DO NOTHING""", [now, company.id, int(Source.HANDHELD), report.import_id,
                                                   _ref_digits(reads["line"].to_numpy())])
                report.readings_new = cur.rowcount
            report.readings_known = report.rows_read - report.readings_new
            details = ordered.select(
                pl.lit(company.id, dtype=pl.Int32).alias("company_id"), "meter_id", _ts_text("ts"), "reader", "value",
                *(_null_if_empty(c) for c in ("skip_code", "photo", "note")),
                pl.lit(report.import_id, dtype=pl.Int64).alias("import_id"), "line")
            try:
                with conn.transaction():
                    _copy_frame(cur, "handheld_read", _READ_COLUMNS, details)
            except psycopg.errors.UniqueViolation:
                stage()
                cur.execute(
                    """INSERT INTO handheld_read (company_id, meter_id, read_at, reader, value, skip_code, photo_ref,
                                                  note, import_id, line)
                       SELECT %s, meter_id, ts, reader, value, skip_code, photo, note, %s, line FROM handheld_stage
                       ON CONFLICT DO NOTHING""", [company.id, report.import_id])
            if report.errors:
                bad = pl.DataFrame({
                    "import_id": [report.import_id] * len(report.errors),
                    "line": [e.line for e in report.errors],
                    "field": [e.field for e in report.errors],
                    "message": [e.message for e in report.errors],
                    "raw": [e.raw[:2000] for e in report.errors],
                }, schema={"import_id": pl.Int64, "line": pl.Int32, "field": pl.String, "message": pl.String,
                           "raw": pl.String}).unique(subset=["line", "message"], keep="first", maintain_order=True)
                _copy_frame(cur, "handheld_bad_row", ["import_id", "line", "field", "message", "raw"], bad)
            cur.execute(
                """UPDATE handheld_import SET rows_total = %s, rows_read = %s, rows_skipped = %s, rows_bad = %s,
                          readings_new = %s WHERE id = %s""",
                [report.rows_total, report.rows_read, report.rows_skipped, report.rows_bad, report.readings_new,
                 report.import_id])
    log.info("handheld import %s (%s): %d rows, %d read, %d skipped, %d bad, %d new readings", name,
             report.import_id, report.rows_total, report.rows_read, report.rows_skipped, report.rows_bad,
             report.readings_new)
    return report
