"""Connection strings: URIs and key=value strings, TCP hosts and Unix-socket directories.

``postgresql://user@127.0.0.1:5432/meterline``, ``postgresql://postgres@/meterline?host=/run/pg``
and ``host=/run/pg dbname=meterline`` are all accepted; a Unix socket is a ``host`` that is a
directory path (libpq's rule).
"""

from __future__ import annotations

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from meterline.errors import ConfigError


def parse(dsn: str) -> dict[str, str]:
    try:
        return {k: str(v) for k, v in conninfo_to_dict(dsn).items()}
    except Exception as exc:  # psycopg.ProgrammingError on malformed strings
        raise ConfigError([f"database.dsn is not a valid connection string: {exc}"]) from exc


def with_dbname(dsn: str, dbname: str) -> str:
    """Return ``dsn`` pointing at database ``dbname`` (everything else kept)."""
    return make_conninfo(dsn, dbname=dbname)


def dbname(dsn: str) -> str | None:
    return parse(dsn).get("dbname")


def is_unix_socket(dsn: str) -> bool:
    host = parse(dsn).get("host", "")
    return host.startswith("/") or host.startswith("@")


def describe(dsn: str) -> str:
    """A loggable description of ``dsn`` with any password removed."""
    parts = parse(dsn)
    parts.pop("password", None)
    host = parts.get("host") or "localhost"
    where = f"socket {host}" if host.startswith("/") else f"{host}:{parts.get('port', '5432')}"
    return f"{parts.get('user', '')}@{where}/{parts.get('dbname', '')}"
