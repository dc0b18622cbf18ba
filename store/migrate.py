"""SQL migrations with a version table.

Migrations are files in ``store/migrations``: ``NNNN_name.sql`` runs on both storage paths;
``NNNN_name.plain.sql`` / ``NNNN_name.timescale.sql`` are the two variants of one version, of
which the one matching the database's backend runs. The backend is chosen once, on the first
migrate: ``timescaledb`` when ``CREATE EXTENSION timescaledb`` succeeds (and the setting allows
it), else ``plain``; it is recorded in ``meterline_meta`` and never changes.

Each migration runs in its own transaction unless its first line is
``-- meterline: no-transaction`` (TimescaleDB continuous aggregates cannot be created in one).
``{{day_timezone}}`` in a file is replaced by the zone daily buckets are cut in.
Applied versions are recorded in ``meterline_migration`` with a checksum; a file changed after
it was applied is an error. Concurrent migrators serialize on an advisory lock, so ``migrate``
is safe to run from several processes and idempotent.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from meterline.errors import MigrationError

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+?)(?:\.(?P<variant>plain|timescale))?\.sql$")
_LOCK_KEY = 0x6D6C_6D69  # "mlmi"
NO_TRANSACTION = "-- meterline: no-transaction"
BACKENDS = ("plain", "timescaledb")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    variant: str | None  # None, 'plain' or 'timescale'
    path: Path

    @property
    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()[:16]

    @property
    def transactional(self) -> bool:
        return not self.text.lstrip().startswith(NO_TRANSACTION)


@dataclass(frozen=True, slots=True)
class MigrationStatus:
    version: int
    name: str
    variant: str | None
    applied_at: object | None
    checksum_ok: bool | None  # None when not applied


def discover(directory: Path = MIGRATIONS_DIR) -> dict[int, list[Migration]]:
    """Migrations by version; a version has one common file or a plain and a timescale variant."""
    found: dict[int, list[Migration]] = {}
    for path in sorted(directory.glob("*.sql")):
        m = _NAME.match(path.name)
        if not m:
            raise MigrationError(f"migration file name not understood: {path.name} (want NNNN_name[.plain|.timescale].sql)")
        mig = Migration(int(m["version"]), m["name"], m["variant"], path)
        found.setdefault(mig.version, []).append(mig)
    for version, migs in found.items():
        variants = sorted(str(m.variant) for m in migs)
        if not (variants == ["None"] or variants == ["plain", "timescale"]):
            names = ", ".join(m.path.name for m in migs)
            raise MigrationError(f"version {version:04d} needs one common file or a plain+timescale pair: {names}", version)
    return dict(sorted(found.items()))


def pick(migs: list[Migration], backend: str) -> Migration:
    if len(migs) == 1:
        return migs[0]
    want = "timescale" if backend == "timescaledb" else "plain"
    return next(m for m in migs if m.variant == want)


def _ensure_bookkeeping(conn: psycopg.Connection) -> None:
    conn.execute(
        """CREATE TABLE IF NOT EXISTS meterline_migration (
               version     integer PRIMARY KEY,
               name        text NOT NULL,
               variant     text,
               checksum    text NOT NULL,
               applied_at  timestamptz NOT NULL DEFAULT now(),
               duration_ms integer NOT NULL
           )"""
    )


def applied(conn: psycopg.Connection) -> dict[int, tuple[str, str | None, str, object]]:
    exists = conn.execute("SELECT to_regclass('meterline_migration') IS NOT NULL").fetchone()[0]
    if not exists:
        return {}
    rows = conn.execute("SELECT version, name, variant, checksum, applied_at FROM meterline_migration").fetchall()
    return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}


def get_meta(conn: psycopg.Connection, key: str) -> str | None:
    if not conn.execute("SELECT to_regclass('meterline_meta') IS NOT NULL").fetchone()[0]:
        return None
    row = conn.execute("SELECT value FROM meterline_meta WHERE key = %s", [key]).fetchone()
    return row[0] if row else None


def backend(conn: psycopg.Connection) -> str | None:
    """'timescaledb' or 'plain' once migrated, else None."""
    return get_meta(conn, "backend")


def try_timescaledb(conn: psycopg.Connection) -> bool:
    """True when ``CREATE EXTENSION timescaledb`` succeeds on this database."""
    # installed but not preloaded, CREATE EXTENSION fails FATAL and takes the connection with it
    preloaded = conn.execute("SELECT current_setting('shared_preload_libraries') LIKE '%timescaledb%'").fetchone()
    if not preloaded or not preloaded[0]:
        log.info("TimescaleDB not preloaded (shared_preload_libraries), using plain PostgreSQL partitioning")
        return False
    try:
        with conn.transaction():
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        return True
    except psycopg.Error as exc:
        log.info("TimescaleDB not available, using plain PostgreSQL partitioning: %s", str(exc).splitlines()[0])
        return False


def status(conn: psycopg.Connection, directory: Path = MIGRATIONS_DIR) -> list[MigrationStatus]:
    done = applied(conn)
    chosen = backend(conn) or "plain"
    out = []
    for version, migs in discover(directory).items():
        mig = pick(migs, chosen)
        if version in done:
            _name, variant, checksum, at = done[version]
            ran = next((m for m in migs if m.variant == variant), mig)
            out.append(MigrationStatus(version, ran.name, variant, at, checksum == ran.checksum))
        else:
            out.append(MigrationStatus(version, mig.name, mig.variant, None, None))
    return out


def migrate(
    conn: psycopg.Connection,
    *,
    allow_timescaledb: bool = True,
    day_timezone: str = "Asia/Shanghai",
    directory: Path = MIGRATIONS_DIR,
) -> list[Migration]:
    """Apply every pending migration in version order; return what was applied.

    ``conn`` must be in autocommit mode (each migration manages its own transaction).
    """
    if not conn.autocommit:
        raise MigrationError("migrate needs an autocommit connection")
    conn.execute("SELECT pg_advisory_lock(%s)", [_LOCK_KEY])
    try:
        _ensure_bookkeeping(conn)
        done = applied(conn)
        migrations = discover(directory)
        for version, (name, variant, checksum, _at) in done.items():
            migs = migrations.get(version)
            if not migs:
                raise MigrationError(f"database has migration {version:04d}_{name} that this meterline does not know", version)
            ran = next((m for m in migs if m.variant == variant), None)
            if ran is None or ran.checksum != checksum:
                raise MigrationError(
                    f"migration {version:04d}_{name} was changed after it was applied "
                    f"(database checksum {checksum}); add a new migration instead", version)
        chosen = backend(conn)
        if chosen is None:
            chosen = "timescaledb" if allow_timescaledb and try_timescaledb(conn) else "plain"
        tz = get_meta(conn, "day_timezone") or day_timezone
        ran_now: list[Migration] = []
        for version, migs in migrations.items():
            if version in done:
                continue
            mig = pick(migs, chosen)
            text = mig.text.replace("{{day_timezone}}", tz)
            started = time.perf_counter()
            log.info("applying migration %04d_%s (%s)", mig.version, mig.name, mig.variant or "common")
            try:
                if mig.transactional:
                    with conn.transaction():
                        conn.execute(text)
                        _record(conn, mig, started, chosen, tz)
                else:
                    # one statement at a time: a multi-statement string is an implicit transaction
                    for statement in split_statements(text):
                        conn.execute(statement)
                    with conn.transaction():
                        _record(conn, mig, started, chosen, tz)
            except psycopg.Error as exc:
                raise MigrationError(f"migration {mig.path.name} failed: {exc}", version) from exc
            ran_now.append(mig)
        return ran_now
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", [_LOCK_KEY])


def _record(conn: psycopg.Connection, mig: Migration, started: float, chosen: str, tz: str) -> None:
    # meterline_meta is created by the first migration; the backend is fixed once it exists
    if conn.execute("SELECT to_regclass('meterline_meta') IS NOT NULL").fetchone()[0]:
        conn.execute(
            "INSERT INTO meterline_meta (key, value) VALUES ('backend', %s), ('day_timezone', %s) ON CONFLICT (key) DO NOTHING",
            [chosen, tz],
        )
    conn.execute(
        "INSERT INTO meterline_migration (version, name, variant, checksum, duration_ms) VALUES (%s, %s, %s, %s, %s)",
        [mig.version, mig.name, mig.variant, mig.checksum, int((time.perf_counter() - started) * 1000)],
    )


def split_statements(text: str) -> list[str]:
    """Split SQL text into statements at top-level semicolons.

    Understands single-quoted strings, double-quoted identifiers, dollar quoting ($$ / $tag$),
    ``--`` line comments and ``/* */`` block comments.
    """
    out: list[str] = []
    buf: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "-" and text.startswith("--", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            buf.append(text[i:j])
            i = j
            continue
        if c == "/" and text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            buf.append(text[i:j])
            i = j
            continue
        if c in ("'", '"'):
            j = i + 1
            while j < n:
                if text[j] == c:
                    if j + 1 < n and text[j + 1] == c:
                        j += 2
                        continue
                    break
                j += 1
            buf.append(text[i:j + 1])
            i = j + 1
            continue
        if c == "$":
            m = re.match(r"\$[A-Za-z_]*\$", text[i:])
            if m:
                tag = m.group(0)
                j = text.find(tag, i + len(tag))
                j = n if j < 0 else j + len(tag)
                buf.append(text[i:j])
                i = j
                continue
        if c == ";":
            stmt = "".join(buf).strip()
            if _has_code(stmt):
                out.append(stmt)
            buf = []
            i += 1
            continue
        buf.append(c)
        i += 1
    stmt = "".join(buf).strip()
    if _has_code(stmt):
        out.append(stmt)
    return out


def _has_code(stmt: str) -> bool:
    lines = [ln for ln in stmt.splitlines() if ln.strip() and not ln.strip().startswith("--")]
    return bool(lines)
