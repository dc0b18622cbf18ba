"""The database handle: a psycopg 3 connection pool, on a configured server or the embedded one.

``open_database(settings)`` returns a :class:`Database`. With ``database.dsn`` set (or
``METERLINE_DSN``) it connects there; without, it starts the embedded PostgreSQL
(:mod:`meterline.store.embedded`) and creates the ``meterline`` database on it.

Connections come from ``db.connection(company_id=...)``: the company is set as the session
setting ``meterline.company_id`` that row-level security keys on, and the pool resets it when
the connection is returned.

With ``role`` set (``open_database`` passes ``security.app_role``, default ``meterline_app``)
every connection switches to that role with ``SET ROLE`` right after connecting, so row-level
security applies to everything it runs (``RESET ALL`` keeps the role). ``connect(owner=True)``
keeps the DSN's login role: migrations, maintenance and the ingest writer use it.
``session_settings`` are set on every connection handed out (the CLI puts the caller's
identity there for the audit trail).
"""

from __future__ import annotations

import logging
import weakref
from contextlib import contextmanager
from typing import Iterator

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from meterline.config.settings import Settings
from meterline.errors import StoreError
from meterline.store import dsn as dsnlib
from meterline.store.embedded import EmbeddedServer, start_embedded

log = logging.getLogger(__name__)

APPLICATION_NAME = "meterline"


def _reset(conn: psycopg.Connection) -> None:
    """Return a connection to the pool without the previous user's session settings."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.rollback()
    conn.execute("RESET ALL")
    if not conn.autocommit:
        conn.commit()


class Database:
    """A pool of connections to one meterline database (plus the embedded server, if any)."""

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 8,
        timeout_s: float = 10.0,
        embedded: EmbeddedServer | None = None,
        role: str | None = None,
    ) -> None:
        self.dsn = dsn
        self.embedded = embedded
        self.role = role or None
        #: session settings applied to every connection handed out (e.g. meterline.actor)
        self.session_settings: dict[str, str] = {}
        self._timeout_s = timeout_s
        self.pool = ConnectionPool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            open=False,
            timeout=timeout_s,
            kwargs={"application_name": APPLICATION_NAME, "connect_timeout": max(1, int(timeout_s))},
            reset=_reset,
            name="meterline",
        )
        # pooled connections already switched to ``role`` (RESET ALL keeps the role)
        self._in_role: weakref.WeakSet[psycopg.Connection] = weakref.WeakSet()

    def _session(self, conn: psycopg.Connection) -> None:
        for name, value in self.session_settings.items():
            conn.execute("SELECT set_config(%s, %s, false)", [name, value])

    # -- lifecycle ---------------------------------------------------------------------
    def open(self) -> "Database":
        try:
            self.pool.open(wait=True, timeout=self._timeout_s)
        except Exception as exc:  # psycopg_pool.PoolTimeout, OperationalError
            raise StoreError(f"cannot connect to {dsnlib.describe(self.dsn)}: {exc}") from exc
        return self

    def close(self) -> None:
        self.pool.close()
        if self.embedded is not None:
            self.embedded.stop()
            self.embedded = None

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- connections -------------------------------------------------------------------
    @contextmanager
    def connection(self, company_id: int | None = None) -> Iterator[psycopg.Connection]:
        """A pooled connection, scoped to ``company_id`` when given. Commit is yours."""
        with self.pool.connection() as conn:
            if self.role and conn not in self._in_role:
                set_role(conn, self.role)
                self._in_role.add(conn)
            if self.session_settings:
                self._session(conn)
            if company_id is not None:
                set_company(conn, company_id)
            if not conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS:
                conn.commit()  # a rollback of the caller's work must not undo role and scope
            yield conn

    def connect(self, *, autocommit: bool = False, company_id: int | None = None, owner: bool = False) -> psycopg.Connection:
        """A dedicated (unpooled) connection for long work: the writer, LISTEN, big COPYs.

        ``owner=True`` keeps the login role of the DSN (no ``SET ROLE``): for migrations,
        maintenance and cross-company services such as the reading writer.
        """
        try:
            conn = psycopg.connect(
                self.dsn,
                autocommit=autocommit,
                application_name=APPLICATION_NAME,
                connect_timeout=max(1, int(self._timeout_s)),
            )
        except psycopg.OperationalError as exc:
            raise StoreError(f"cannot connect to {dsnlib.describe(self.dsn)}: {exc}") from exc
        if self.role and not owner:
            set_role(conn, self.role)
        if self.session_settings:
            self._session(conn)
        if company_id is not None:
            set_company(conn, company_id)
        if not autocommit:
            conn.commit()
        return conn

    def describe(self) -> str:
        where = dsnlib.describe(self.dsn)
        return f"embedded PostgreSQL ({self.embedded.data_dir}) {where}" if self.embedded else where


@contextmanager
def local_settings(conn: psycopg.Connection, **values: str) -> Iterator[None]:
    """Planner or executor settings (``jit="off"``, ``work_mem="256MB"``, ...) for the statements
    of the block only: set transaction-local, then put back as they were (unless the transaction
    failed: its rollback restores them)."""
    names = list(values)
    saved = conn.execute("SELECT " + ", ".join("current_setting(%s)" for _ in names), names).fetchone()
    pairs = ", ".join("set_config(%s, %s, true)" for _ in names)
    conn.execute("SELECT " + pairs, [x for n in names for x in (n, values[n])])
    try:
        yield
    finally:
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.INERROR:
            conn.execute("SELECT " + pairs, [x for n, v in zip(names, saved) for x in (n, v)])


def set_company(conn: psycopg.Connection, company_id: int) -> None:
    """Scope the session to one company (the setting row-level security policies read)."""
    conn.execute("SELECT set_config('meterline.company_id', %s, false)", [str(int(company_id))])


def set_role(conn: psycopg.Connection, role: str) -> None:
    """Switch the session to ``role`` (row-level security then applies to it)."""
    try:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
    except psycopg.errors.InvalidParameterValue as exc:
        raise StoreError(f"database role {role!r} does not exist: run `meterline db migrate` (migration 0100 creates it)") from exc
    except psycopg.errors.InsufficientPrivilege as exc:
        raise StoreError(f"the login role may not switch to {role!r}: GRANT {role} TO <login role>") from exc


def ensure_database(maintenance_dsn: str, name: str) -> None:
    """Create database ``name`` on the server of ``maintenance_dsn`` unless it exists."""
    with psycopg.connect(maintenance_dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            try:
                conn.execute(sql.SQL("CREATE DATABASE {} ENCODING 'UTF8' TEMPLATE template0").format(sql.Identifier(name)))
            except psycopg.errors.DuplicateDatabase:
                pass  # created concurrently by another process


_SETTING: object = object()


def open_database(settings: Settings, *, min_size: int | None = None, max_size: int | None = None,
                  role: object = _SETTING) -> Database:
    """Open (and, for the embedded default, start and create) the configured database.

    Connections run as ``security.app_role`` unless ``role`` says otherwise (None: the login role).
    """
    dbs = settings.database
    embedded = None
    dsn = dbs.dsn
    if not dsn:
        embedded = start_embedded(dbs.embedded_data_dir)
        try:
            ensure_database(embedded.dsn, dbs.embedded_database)
        except psycopg.Error as exc:
            embedded.stop()
            raise StoreError(f"cannot create database {dbs.embedded_database} on the embedded server: {exc}") from exc
        dsn = embedded.dsn_for(dbs.embedded_database)
    else:
        dsnlib.parse(dsn)  # reject malformed strings with a clear message
    db = Database(
        dsn,
        min_size=dbs.pool_min_size if min_size is None else min_size,
        max_size=dbs.pool_max_size if max_size is None else max_size,
        timeout_s=dbs.connect_timeout_s,
        embedded=embedded,
        role=settings.security.app_role if role is _SETTING else role,
    )
    try:
        return db.open()
    except StoreError:
        db.close()
        raise
