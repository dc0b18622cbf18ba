"""What every subcommand gets: its settings, the database, the company, the caller, a console.

The caller: ``--user LOGIN`` / ``METERLINE_USER`` / the OS login, resolved to a staff member
(:mod:`meterline.store.access`; the local administrator while no staff exist). A command
declares what it needs with ``Command(permission=...)`` (one name, a dict by ``args.action``,
or a function of the arguments) and ``main`` checks it before running; inside a command,
``ctx.require("ledger.post")`` checks more. ``ctx.scoped()`` is a connection in the company's
scope, ``ctx.group()`` one in group scope (read-only, every company; needs ``group.read``).
Every connection carries the caller as ``meterline.actor`` for the audit trail.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Literal, Mapping

import psycopg
from rich.console import Console

from meterline.config.settings import Settings, load_settings
from meterline.errors import StoreError
from meterline.store import access
from meterline.store import migrate as migrations
from meterline.store import partitions
from meterline.store import scope as scopes
from meterline.store.audit import session_settings
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
    #: permission checked before ``run``: a name, a dict by ``args.action`` ("*": any other
    #: action), or a function of the arguments returning a name (None: nothing to check)
    permission: str | Mapping[str, str] | Callable[[argparse.Namespace], str | None] | None = None
    #: where the permission must be held: in the command's company, or group-wide
    #: (commands that act on the deployment: db, company, user, seed, demo)
    scope: Literal["company", "group"] = "company"

    def permission_for(self, args: argparse.Namespace) -> str | None:
        p = self.permission
        if p is None or isinstance(p, str):
            return p
        if isinstance(p, Mapping):
            action = getattr(args, "action", None)
            return p.get(action, p.get("*")) if action is not None else p.get("*")
        return p(args)


@dataclass
class Context:
    config_path: str | None = None
    company_code: str | None = None
    user_login: str | None = None
    console: Console = field(default_factory=lambda: Console(highlight=False, markup=False))
    _settings: Settings | None = None
    _db: Database | None = None
    _actor: access.Actor | None = None
    _policy: access.Policy | None = None

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
            self._db.session_settings.update(session_settings(self.login, self.origin))
            if migrate != "skip":
                with self._db.connect(autocommit=True, owner=True) as conn:
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
        applied = migrations.migrate(conn, allow_timescaledb=s.database.timescaledb, day_timezone=s.utility.timezone,
                                     compress_readings=s.database.compress_readings)
        partitions.ensure_window(conn, dt.date.today(), s.database.partitions_behind_months,
                                 s.database.partitions_ahead_months)
        return applied

    @property
    def company(self) -> Company:
        code = self.company_code or self.settings.utility.company
        with self.db.connection() as conn:
            return get_company(conn, code)

    # -- the caller -------------------------------------------------------------------------
    @property
    def login(self) -> str:
        return self.user_login or os.environ.get("METERLINE_USER") or getpass.getuser()

    @property
    def origin(self) -> str:
        return f"cli:{socket.gethostname()}"

    @property
    def policy(self) -> access.Policy:
        if self._policy is None:
            self._policy = access.load_policy(self.settings.security.roles_file)
        return self._policy

    @property
    def actor(self) -> access.Actor:
        """The caller as a staff member (resolved once, on the login role: before any scope)."""
        if self._actor is None:
            with self.database(migrate="skip").connect(autocommit=True, owner=True) as conn:
                self._actor = access.resolve_user(conn, self.login, self.origin)
        return self._actor

    def require(self, permission: str, *, group: bool = False) -> None:
        """Refuse unless the caller holds ``permission`` in the company (``group``: group-wide)."""
        if group or permission == access.GROUP_PERMISSION:
            access.require(self.policy, self.actor, permission, None)
            company_id = None
        else:
            company = self.company
            access.require(self.policy, self.actor, permission, company.id, company.code)
            company_id = company.id
        if access.read_only(self.policy, self.actor, company_id):
            self.db.session_settings["default_transaction_read_only"] = "on"

    def authorize(self, command: Command, args: argparse.Namespace) -> None:
        """The check ``main`` runs before a command (nothing when it declares no permission)."""
        permission = command.permission_for(args)
        if permission:
            self.require(permission, group=command.scope == "group")

    def can(self, permission: str) -> bool:
        company_id = None if permission == access.GROUP_PERMISSION else self.company.id
        return access.allowed(self.policy, self.actor, permission, company_id)

    @contextmanager
    def scoped(self) -> Iterator[psycopg.Connection]:
        """A pooled connection in the company's scope (row-level security: its rows only)."""
        with self.db.connection(company_id=self.company.id) as conn:
            yield conn

    @contextmanager
    def group(self) -> Iterator[psycopg.Connection]:
        """A read-only pooled connection seeing every company (checks ``group.read``)."""
        self.require(access.GROUP_PERMISSION)
        with scopes.group_connection(self.db) as conn:
            yield conn

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
