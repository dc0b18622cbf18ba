"""The hand-computed utility of exportkit, exported and reported in the company's scope (role meterline_app)."""

from __future__ import annotations

from typing import Iterator

import psycopg
import pytest

from meterline.store.db import Database
from tests.integration.exports import exportkit


@pytest.fixture
def app_db(db_dsn: str) -> Iterator[Database]:
    database = Database(db_dsn, min_size=1, max_size=4, role="meterline_app")
    database.open()
    try:
        yield database
    finally:
        database.close()


@pytest.fixture
def owner(db_dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def utility(owner: psycopg.Connection, app_db: Database) -> exportkit.Utility:
    return exportkit.build(owner, app_db)


@pytest.fixture
def scoped(app_db: Database, utility: exportkit.Utility) -> Iterator[psycopg.Connection]:
    with app_db.connection(company_id=utility.company_id) as conn:
        yield conn
