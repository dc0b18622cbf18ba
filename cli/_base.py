"""What every subcommand gets: its settings, the database, the company, a console."""

from __future__ import annotations

import argparse
import datetime as dt
from dataclasses import dataclass, field
from typing import Callable

import psycopg
from rich.console import Console

from meterline.config.settings import Settings, load_settings
from meterline.errors import StoreError
from meterline.store import migrate as migrations
from meterline.store import partitions
from meterline.store.company import Company, get_company
from meterline.store.db import Database, open_database


@dataclass
class Command:
    """One subcommand: ``configure`` adds its arguments, ``run`` does the work (returns an exit code)."""

    name: str
    help: str
    run: Callable[["Context", argparse.Namespace], int | None]
    configure: Callable[[argparse.ArgumentParser], None] = lambda parser: None
    description: str | None = None


@dataclass
class Context:
    config_path: str | None = None
    company_code: str | None = None
    console: Console = field(default_factory=lambda: Console(highlight=False, markup=False))
    _settings: Settings | None = None
    _db: Database | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_path)
        return self._settings

    def database(self, *, migrate: str = "check") -> Database:
        """The opened database. ``migrate``: 'check' (fail if migrations are pending; the embedded
        default migrates itself), 'auto' (apply them), or 'skip'."""
        if self._db is None:
            self._db = open_database(self.settings)
            if migrate != "skip":
                with self._db.connect(autocommit=True) as conn:
                    pending = [s for s in migrations.status(conn) if s.applied_at is None]
                    if pending and (migrate == "auto" or self._db.embedded is not None):
                        self.migrate(conn)
                    elif pending:
                        raise StoreError(
                            f"{self._db.describe()} has {len(pending)} pending migration(s); run `meterline db migrate`")
        return self._db

    @property
    def db(self) -> Database:
        return self.database()

    def migrate(self, conn: psycopg.Connection) -> list[migrations.Migration]:
        """Apply pending migrations, then make sure reading partitions cover the configured window."""
        s = self.settings
        applied = migrations.migrate(conn, allow_timescaledb=s.database.timescaledb, day_timezone=s.utility.timezone)
        partitions.ensure_window(conn, dt.date.today(), s.database.partitions_behind_months,
                                 s.database.partitions_ahead_months)
        return applied

    @property
    def company(self) -> Company:
        code = self.company_code or self.settings.utility.company
        with self.db.connection() as conn:
            return get_company(conn, code)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
