"""Schema, migrations and the two storage paths."""

import datetime as dt

import psycopg
import pytest

from meterline.ingest.model import Reading, Source
from meterline.ingest.writer import write_readings
from meterline.store import maintain, migrate, partitions
from meterline.store.company import ensure_company

UTC = dt.timezone.utc


def test_migrate_is_idempotent(conn: psycopg.Connection) -> None:
    assert migrate.migrate(conn) == []
    assert migrate.migrate(conn) == []
    status = migrate.status(conn)
    assert status and all(s.applied_at is not None and s.checksum_ok for s in status)


def test_fresh_database_migrates_on_the_plain_path_when_timescaledb_is_refused(pg_server) -> None:
    dsn = pg_server.fresh("plain")
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert migrate.backend(conn) == "plain"
            assert partitions.is_partitioned(conn)
    finally:
        pg_server.drop(dsn)


def test_migrate_from_empty_database_records_versions(pg_server) -> None:
    import uuid

    from psycopg import sql

    name = f"ml_empty_{uuid.uuid4().hex[:8]}"
    with pg_server.admin() as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        from meterline.store.dsn import with_dbname

        with psycopg.connect(with_dbname(pg_server.dsn, name), autocommit=True) as conn:
            first = migrate.migrate(conn, allow_timescaledb=False)
            assert [m.version for m in first] == sorted(migrate.discover())
            assert migrate.migrate(conn, allow_timescaledb=False) == []
            rows = conn.execute("SELECT version, variant FROM meterline_migration ORDER BY version").fetchall()
            assert rows[1] == (2, "plain")
            assert migrate.get_meta(conn, "day_timezone") == "Asia/Shanghai"
    finally:
        with pg_server.admin() as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_changed_migration_is_refused(conn: psycopg.Connection) -> None:
    conn.execute("UPDATE meterline_migration SET checksum = 'tampered' WHERE version = 1")
    with pytest.raises(Exception, match="changed after it was applied"):
        migrate.migrate(conn)


def test_partitions_are_created_ahead_and_on_demand(conn: psycopg.Connection) -> None:
    have = partitions.existing_months(conn)
    today = dt.date.today()
    assert (today.year, today.month) in have
    assert partitions.add_months((today.year, today.month), 3) in have
    created = partitions.ensure_months(conn, [(2031, 7)])
    assert created == ["reading_y2031m07"]
    assert partitions.ensure_months(conn, [(2031, 7)]) == []


def _meter(conn: psycopg.Connection, company_id: int, serial: str, digits: int = 5) -> int:
    cust = conn.execute("INSERT INTO customer (company_id, code, name) VALUES (%s, %s, %s) RETURNING id",
                        [company_id, "C-" + serial, "客户" + serial]).fetchone()[0]
    conn.execute("INSERT INTO use_type VALUES (%s, 'residential', '居民') ON CONFLICT DO NOTHING", [company_id])
    acc = conn.execute(
        """INSERT INTO account (company_id, code, customer_id, address, use_type, tariff_id)
           VALUES (%s, %s, %s, '人民路1号', 'residential', 'water-residential') RETURNING id""",
        [company_id, "A-" + serial, cust]).fetchone()[0]
    return conn.execute(
        "INSERT INTO meter (company_id, serial, comm_address, account_id, register_digits) VALUES (%s, %s, %s, %s, %s) RETURNING id",
        [company_id, serial, serial, acc, digits]).fetchone()[0]


def test_daily_aggregate_reads_the_same_on_every_backend(backend_dsn: str) -> None:
    with psycopg.connect(backend_dsn, autocommit=True) as conn:
        co = ensure_company(conn, "acme", "测试水务公司")
        m = _meter(conn, co.id, "M1")
        tz_day = dt.datetime(2026, 10, 1, tzinfo=UTC)
        readings = [
            Reading(ts=tz_day + dt.timedelta(hours=h), value=1000 + 10 * h, meter_id=m, source=Source.MQTT)
            for h in range(0, 72, 6)
        ]
        assert write_readings(conn, readings).written == len(readings)
        maintain.refresh_daily(conn, dt.datetime(2026, 9, 29, tzinfo=UTC), dt.datetime(2026, 10, 6, tzinfo=UTC))
        rows = conn.execute(
            "SELECT day, first_value, last_value, n, consumption FROM reading_daily WHERE meter_id = %s ORDER BY day",
            [m]).fetchall()
    # Asia/Shanghai days: UTC 00:00-15:59 of Oct 1 is Oct 1 local (08:00..23:59), 16:00 onwards is Oct 2
    assert [r[0] for r in rows] == [dt.date(2026, 10, 1), dt.date(2026, 10, 2), dt.date(2026, 10, 3), dt.date(2026, 10, 4)]
    assert rows[0][1:4] == (1000, 1120, 3)  # 00, 06, 12 UTC
    assert rows[1][1:4] == (1180, 1360, 4)  # 18 UTC Oct 1 .. 12 UTC Oct 2
    assert rows[0][4] is None and rows[1][4] == 1360 - 1120
    assert sum(r[3] for r in rows) == len(readings)


def test_journal_is_append_only_and_entries_balance(conn: psycopg.Connection, company) -> None:
    entry = conn.execute(
        "INSERT INTO journal_entry (company_id, booked_on, kind) VALUES (%s, CURRENT_DATE, 'test') RETURNING id",
        [company.id]).fetchone()[0]
    with conn.transaction():
        conn.execute("INSERT INTO posting VALUES (%s, 1, %s, 'AR:1', 500), (%s, 2, %s, 'REV:water', -500)",
                     [entry, company.id, entry, company.id])
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("UPDATE posting SET amount = 1 WHERE entry_id = %s", [entry])
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("DELETE FROM journal_entry WHERE id = %s", [entry])
    with pytest.raises(psycopg.errors.CheckViolation, match="does not balance"):
        with conn.transaction():
            e2 = conn.execute(
                "INSERT INTO journal_entry (company_id, booked_on, kind) VALUES (%s, CURRENT_DATE, 'test') RETURNING id",
                [company.id]).fetchone()[0]
            conn.execute("INSERT INTO posting VALUES (%s, 1, %s, 'AR:1', 500), (%s, 2, %s, 'REV:water', -499)",
                         [e2, company.id, e2, company.id])


def test_register_modulus_follows_digits_and_unit(conn: psycopg.Connection, company) -> None:
    m = _meter(conn, company.id, "MOD1", digits=5)
    assert conn.execute("SELECT register_modulus FROM meter WHERE id = %s", [m]).fetchone()[0] == 100_000_000
    conn.execute("UPDATE meter SET display_unit = 'MWh', register_digits = 4 WHERE id = %s", [m])
    assert conn.execute("SELECT register_modulus FROM meter WHERE id = %s", [m]).fetchone()[0] == 10_000 * 1_000_000


def test_readings_are_row_secured_or_compressed_per_backend(backend_dsn: str) -> None:
    from meterline.store import timescale

    with psycopg.connect(backend_dsn, autocommit=True) as conn:
        secured = conn.execute("SELECT relrowsecurity FROM pg_class WHERE oid = 'reading'::regclass").fetchone()[0]
        if migrate.backend(conn) == "plain":
            assert secured
            return
        # TimescaleDB: compressed by default, and therefore exempt from row security (documented)
        assert timescale.is_compressed(conn) and not secured
        assert conn.execute("SELECT 1 FROM meterline_rls_exempt WHERE relname = 'reading'").fetchone()
        # a deployment that prefers row security over compression
        migrate.migrate(conn, compress_readings=False)
        assert not timescale.is_compressed(conn)
        assert conn.execute("SELECT relrowsecurity FROM pg_class WHERE oid = 'reading'::regclass").fetchone()[0]
