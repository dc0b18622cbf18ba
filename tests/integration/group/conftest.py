"""Two companies seeded side by side in one database, and the application role to look at them."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Iterator

import psycopg
import pytest

from meterline.cli.seed import seed
from meterline.store.db import Database
from meterline.store.personal import KeyRing, generate_key

APP_ROLE = "meterline_app"
KEY_ID = "t1"
KEY = generate_key()


@dataclass
class TwoCompanies:
    dsn: str
    north: int
    south: int
    keyring: KeyRing
    phones: dict[int, list[str]]  # company id -> the plain phone numbers seeded


@pytest.fixture
def keyring() -> KeyRing:
    return KeyRing.from_text({KEY_ID: KEY}, KEY_ID)


@pytest.fixture
def app_db(db_dsn: str) -> Iterator[Database]:
    """A pooled Database whose connections run as the application role."""
    database = Database(db_dsn, min_size=1, max_size=4, role=APP_ROLE)
    database.open()
    try:
        yield database
    finally:
        database.close()


@pytest.fixture
def two(db_dsn: str, app_db: Database, keyring: KeyRing) -> TwoCompanies:
    ids = {}
    phones = {}
    for code, prefix, seed_value in (("north", "N", 1), ("south", "S", 2)):
        report = seed(app_db, company_code=code, company_name=f"{code} water", timezone="Asia/Shanghai",
                      meters=80, days=3, seed_value=seed_value, end=dt.date.today(), keyring=keyring,
                      company_prefix=prefix)
        ids[code] = report.company.id
        phones[report.company.id] = [r.phone for r in report.utility.rows if r.phone]
    with psycopg.connect(db_dsn, autocommit=True) as conn:  # the login role: a dead letter of each company
        for cid in ids.values():
            conn.execute("INSERT INTO dead_letter (company_id, source, reason, message) VALUES (%s, 'test', 'x', 'y')", [cid])
        conn.execute("INSERT INTO dead_letter (company_id, source, reason, message) VALUES (NULL, 'test', 'unknown_meter', 'z')")
        for cid in ids.values():
            meter, account = conn.execute(
                "SELECT id, account_id FROM meter WHERE company_id = %s AND account_id IS NOT NULL LIMIT 1", [cid]).fetchone()
            conn.execute("""INSERT INTO alert (company_id, meter_id, account_id, rule, severity, message)
                            VALUES (%s, %s, %s, 'leak', 'warning', 'continuous flow')""", [cid, meter, account])
    return TwoCompanies(db_dsn, ids["north"], ids["south"], keyring, phones)


def business_tables(conn: psycopg.Connection) -> list[str]:
    """Every table of the schema with a company_id column (partitions excluded)."""
    return [r[0] for r in conn.execute(
        """SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'company_id' AND NOT a.attisdropped
           WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
             AND c.relname NOT IN (SELECT relname FROM meterline_rls_exempt)
           ORDER BY 1""").fetchall()]
