"""TimescaleDB specifics: compression of the reading hypertable.

TimescaleDB refuses to compress a table that has row-level security ("columnstore cannot be
used on table with row security"), so a deployment chooses, with
``database.compress_readings`` (default true):

* true — ``reading`` is compressed after 60 days, segmented by meter and ordered by time
  (the storage a utility with billions of readings needs). ``reading`` is then recorded in
  ``meterline_rls_exempt``: company isolation of raw readings rests on the application's
  permission checks, while every table that names a customer, an account, a bill or money
  stays row-secured. Readings hold meter ids and register values, no personal data.
* false — ``reading`` stays row-secured like every other table, and is not compressed.

On plain PostgreSQL there is no compression and ``reading`` is always row-secured.
Runs after the migrations and before row-level security is applied (``store.migrate``).
"""

from __future__ import annotations

import logging

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

COMPRESS_AFTER = "60 days"
EXEMPT_REASON = ("TimescaleDB cannot compress a row-secured table; compression chosen "
                 "(database.compress_readings): readings hold no personal data")


def is_compressed(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT compression_enabled FROM timescaledb_information.hypertables WHERE hypertable_name = 'reading'"
    ).fetchone()
    return bool(row and row[0])


def configure_compression(conn: psycopg.Connection, enabled: bool) -> str:
    """Make the reading hypertable's compression match ``enabled``; return what was done."""
    if enabled == is_compressed(conn):
        return "unchanged"
    has_exempt = conn.execute("SELECT to_regclass('meterline_rls_exempt') IS NOT NULL").fetchone()[0]
    with conn.transaction():
        if enabled:
            if has_exempt:
                conn.execute(
                    "INSERT INTO meterline_rls_exempt (relname, reason) VALUES ('reading', %s) ON CONFLICT DO NOTHING",
                    [EXEMPT_REASON])
            for (policy,) in conn.execute(
                    "SELECT policyname FROM pg_policies WHERE tablename = 'reading'").fetchall():
                conn.execute(sql.SQL("DROP POLICY {} ON reading").format(sql.Identifier(policy)))
            conn.execute("ALTER TABLE reading NO FORCE ROW LEVEL SECURITY")
            conn.execute("ALTER TABLE reading DISABLE ROW LEVEL SECURITY")
            conn.execute(
                """ALTER TABLE reading SET (timescaledb.compress, timescaledb.compress_segmentby = 'meter_id',
                                            timescaledb.compress_orderby = 'ts DESC, quantity')""")
            conn.execute("SELECT add_compression_policy('reading', %s::interval, if_not_exists => true)",
                         [COMPRESS_AFTER])
            log.info("reading hypertable: compression after %s, segmented by meter", COMPRESS_AFTER)
            return "compression enabled"
        # switching compression off: decompress everything first, then row security can return
        conn.execute("SELECT remove_compression_policy('reading', if_exists => true)")
        conn.execute("SELECT decompress_chunk(c, if_compressed => true) FROM show_chunks('reading') c")
        conn.execute("ALTER TABLE reading SET (timescaledb.compress = false)")
        if has_exempt:
            conn.execute("DELETE FROM meterline_rls_exempt WHERE relname = 'reading'")
        return "compression disabled"
