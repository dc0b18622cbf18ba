"""Moving polars frames in and out of PostgreSQL in bulk, under row-level security.

* :func:`query_frame`: ``COPY (query) TO STDOUT`` as CSV into a polars frame (row-level security
  applies to ``COPY (query) TO`` like to any query). Timestamps are best selected as epoch
  microseconds (``ml_us(ts)``-style expressions in the caller's SQL) to skip parsing.
* :func:`copy_in`: a frame into a *temporary* table (binary COPY for fixed-width columns, CSV
  when a frame has text). Row-level security refuses ``COPY FROM`` into the business tables for
  the application role, so bulk writes go to a temporary staging table first and then
  ``INSERT … SELECT`` into the secured table, where the policies' ``WITH CHECK`` applies to
  every row (the ledger's payment import does the same).
"""

from __future__ import annotations

import io
from typing import Any, Sequence

import numpy as np
import polars as pl
import psycopg

PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in Unix microseconds
PG_EPOCH_DAYS = 10_957             # 2000-01-01 in Unix days
_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_TRAILER = b"\xff\xff"

# polars dtype -> (big-endian numpy type, byte length)
_FIXED = {pl.Int64: (">i8", 8), pl.Int32: (">i4", 4), pl.Int16: (">i2", 2), pl.Boolean: ("u1", 1),
          pl.Date: (">i4", 4), pl.Datetime: (">i8", 8)}


def query_frame(conn: psycopg.Connection, query: str, params: Sequence[Any] | dict[str, Any] | None = None,
                schema: dict[str, pl.DataType] | None = None) -> pl.DataFrame:
    """Rows of ``query`` as a polars frame (through ``COPY … TO STDOUT`` CSV)."""
    buf = io.BytesIO()
    with conn.cursor() as cur:
        with cur.copy(f"COPY ({query}) TO STDOUT (FORMAT csv, HEADER)", params) as copy:
            for chunk in copy:
                buf.write(chunk)
    data = buf.getvalue()
    if data.count(b"\n") <= 1:  # nothing but the header
        return pl.DataFrame(schema=schema) if schema is not None else pl.DataFrame()
    if schema is None:
        return pl.read_csv(data, infer_schema_length=10_000)
    # PostgreSQL writes booleans as t / f
    read = {k: (pl.Utf8 if v == pl.Boolean else v) for k, v in schema.items()}
    frame = pl.read_csv(data, schema_overrides=read)
    return frame.select([(pl.col(k) == "t").alias(k) if v == pl.Boolean else pl.col(k) for k, v in schema.items()])


def _binary(frame: pl.DataFrame) -> bytes:
    """PostgreSQL binary COPY data of a frame of fixed-width columns without nulls."""
    fields: list[tuple[str, str]] = [("nf", ">i2")]
    values: list[tuple[str, np.ndarray, int]] = []
    for name, dtype in frame.schema.items():
        np_type, length = _FIXED[dtype.base_type()]
        s = frame[name]
        if dtype == pl.Date:
            v = s.cast(pl.Int32).to_numpy().astype(np.int64) - PG_EPOCH_DAYS
        elif isinstance(dtype, pl.Datetime):
            v = s.dt.cast_time_unit("us").cast(pl.Int64).to_numpy() - PG_EPOCH_US
        elif dtype == pl.Boolean:
            v = s.cast(pl.UInt8).to_numpy()
        else:
            v = s.to_numpy()
        fields += [(f"l_{name}", ">i4"), (f"v_{name}", np_type)]
        values.append((name, v, length))
    rows = np.empty(frame.height, dtype=np.dtype(fields))
    rows["nf"] = len(values)
    for name, v, length in values:
        rows[f"l_{name}"] = length
        rows[f"v_{name}"] = v
    return _HEADER + rows.tobytes() + _TRAILER


def copy_in(conn: psycopg.Connection, table: str, frame: pl.DataFrame) -> None:
    """COPY ``frame`` into ``table`` (columns by name): binary when every column is fixed-width
    and without nulls, else CSV."""
    if frame.height == 0:
        return
    columns = ", ".join(frame.columns)
    fixed = all(dt.base_type() in _FIXED for dt in frame.dtypes)
    with conn.cursor() as cur:
        if fixed and not any(frame[c].null_count() for c in frame.columns):
            with cur.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT binary)") as copy:
                copy.write(_binary(frame))
        else:
            out = frame.with_columns(
                [pl.col(c).dt.convert_time_zone("UTC").dt.strftime("%Y-%m-%d %H:%M:%S%.6f+00")
                 for c, dt in frame.schema.items() if isinstance(dt, pl.Datetime)])
            with cur.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT csv)") as copy:
                copy.write(out.write_csv(include_header=False, null_value=""))
