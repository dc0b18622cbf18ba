"""Company isolation enforced by the database: raw SQL under the application role."""

from __future__ import annotations

import psycopg
import pytest

from meterline.store import maintain, scope
from meterline.store import migrate as migrations
from meterline.store.db import Database

from .conftest import APP_ROLE, TwoCompanies, business_tables


def test_every_business_table_is_row_secured(two: TwoCompanies) -> None:
    with psycopg.connect(two.dsn) as conn:
        tables = business_tables(conn)
        unsecured = conn.execute(
            """SELECT relname FROM pg_class WHERE relname = ANY(%s)
               AND NOT (relrowsecurity AND relforcerowsecurity)""", [tables]).fetchall()
        no_policy = [t for t in tables if not conn.execute(
            "SELECT 1 FROM pg_policy WHERE polrelid = %s::regclass AND polname = 'meterline_company'", [t]).fetchone()]
    assert {"customer", "account", "meter", "reading", "dead_letter", "payment", "posting", "audit_log"} <= set(tables)
    assert unsecured == [] and no_policy == []


def test_one_company_sees_none_of_the_others_rows(two: TwoCompanies, app_db: Database) -> None:
    with app_db.connection(company_id=two.north) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == APP_ROLE
        seen = {}
        for table in business_tables(conn):
            other = conn.execute(f"SELECT count(*) FROM {table} WHERE company_id IS DISTINCT FROM %s", [two.north]).fetchone()[0]
            assert other == 0, table
            seen[table] = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        # joins and views too: no path leads to the other company
        assert conn.execute("SELECT count(*) FROM reading_named WHERE serial LIKE 'S%'").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM reading_effective re JOIN meter m ON m.id = re.meter_id").fetchone()[0] >= 0
        assert conn.execute("SELECT count(*) FROM meter WHERE serial LIKE 'S%'").fetchone()[0] == 0
    for table in ("customer", "account", "meter", "meter_book", "reading", "dead_letter", "alert", "audit_log"):
        assert seen[table] > 0, table  # there was something to see: the test can fail


def test_the_daily_aggregate_is_secured_through_its_meter(two: TwoCompanies, app_db: Database) -> None:
    with psycopg.connect(two.dsn, autocommit=True) as conn:
        maintain.maintain(conn, refresh_days=5)
        south_meters = conn.execute("SELECT count(DISTINCT meter_id) FROM reading_daily_agg d JOIN meter m ON m.id = d.meter_id "
                                    "WHERE m.company_id = %s", [two.south]).fetchone()[0]
    assert south_meters > 0
    with app_db.connection(company_id=two.north) as conn:
        rows = conn.execute("SELECT DISTINCT m.company_id FROM reading_daily d JOIN meter m ON m.id = d.meter_id").fetchall()
        raw = conn.execute("SELECT count(*) FROM reading_daily_agg WHERE meter_id IN "
                           "(SELECT id FROM meter WHERE company_id <> %s)", [two.north]).fetchone()[0]
        total = conn.execute("SELECT count(*) FROM reading_daily_agg").fetchone()[0]
    assert rows == [(two.north,)] and raw == 0 and total > 0


def test_no_scope_sees_nothing_and_partitions_are_closed(two: TwoCompanies, app_db: Database) -> None:
    with app_db.connection() as conn:
        for table in business_tables(conn):
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0, table
        part = conn.execute("SELECT relname FROM pg_class WHERE relispartition AND relkind = 'r' AND relname LIKE 'reading%%' LIMIT 1").fetchone()[0]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"SELECT count(*) FROM {part}")
        conn.rollback()
        # the role cannot be dropped by the pool's reset: a new checkout is still the application role
    with app_db.connection() as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == APP_ROLE


def test_writes_into_another_company_are_refused(two: TwoCompanies, app_db: Database) -> None:
    with app_db.connection(company_id=two.north) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO district (company_id, code, name) VALUES (%s, 'X', 'x')", [two.south])
        conn.rollback()
        changed = conn.execute("UPDATE account SET address = 'hijacked' WHERE company_id = %s", [two.south]).rowcount
        gone = conn.execute("DELETE FROM alert WHERE company_id = %s", [two.south]).rowcount
        conn.commit()
    assert changed == 0 and gone == 0
    with psycopg.connect(two.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM account WHERE address = 'hijacked'").fetchone()[0] == 0


def test_group_scope_reads_everything_and_writes_nothing(two: TwoCompanies, app_db: Database) -> None:
    with scope.group_connection(app_db) as conn:
        companies = {r[0] for r in conn.execute("SELECT DISTINCT company_id FROM meter").fetchall()}
        assert companies == {two.north, two.south}
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("UPDATE account SET address = 'x'")
        conn.rollback()
    # returned to the pool: nothing of the group scope is left on the connection
    with app_db.connection(company_id=two.north) as conn:
        assert {r[0] for r in conn.execute("SELECT DISTINCT company_id FROM meter").fetchall()} == {two.north}
        conn.execute("UPDATE account SET household_size = household_size WHERE false")


def test_group_figures_one_row_per_company(two: TwoCompanies, app_db: Database) -> None:
    with scope.group_connection(app_db) as conn:
        figures = scope.company_figures(conn, days=10)
    by = {f.company: f for f in figures}
    assert set(by) == {"north", "south", "(unplaced)"}
    assert by["north"].meters == 80 and by["south"].meters == 80
    assert by["north"].dead_letters == 1 and by["(unplaced)"].dead_letters == 1
    assert by["north"].open_alerts == 1 and 0 < by["north"].meters_read <= 80
    assert 0 < by["north"].reading_rate <= 1
    total = scope.totals(figures)
    assert total.meters == 160 and total.dead_letters == 3
    with app_db.connection(company_id=two.south) as conn:
        assert [f.company for f in scope.company_figures(conn, days=10)] == ["south"]


def test_tables_added_later_are_covered_by_the_next_migrate(two: TwoCompanies, app_db: Database) -> None:
    with psycopg.connect(two.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE tariff_test (id bigint GENERATED ALWAYS AS IDENTITY, company_id integer NOT NULL, name text)")
        conn.execute("INSERT INTO tariff_test (company_id, name) VALUES (%s, 'n'), (%s, 's')", [two.north, two.south])
        assert migrations.apply_security(conn) >= 1
        assert migrations.apply_security(conn) == 0  # idempotent
    with app_db.connection(company_id=two.north) as conn:
        assert conn.execute("SELECT name FROM tariff_test").fetchall() == [("n",)]
