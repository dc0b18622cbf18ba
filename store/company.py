"""Companies: every business row belongs to one (a deployment may serve a group of them)."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from meterline.errors import NotFound


@dataclass(frozen=True, slots=True)
class Company:
    id: int
    code: str
    name: str
    timezone: str
    currency: str
    minor_units: int


_COLS = "id, code, name, timezone, currency, minor_units"


def get_company(conn: psycopg.Connection, code: str) -> Company:
    row = conn.execute(f"SELECT {_COLS} FROM company WHERE code = %s", [code]).fetchone()
    if row is None:
        raise NotFound(f"company {code!r} does not exist (create it with `meterline company add {code} NAME`)")
    return Company(*row)


def list_companies(conn: psycopg.Connection) -> list[Company]:
    return [Company(*r) for r in conn.execute(f"SELECT {_COLS} FROM company ORDER BY code").fetchall()]


def ensure_company(
    conn: psycopg.Connection,
    code: str,
    name: str,
    *,
    timezone: str = "Asia/Shanghai",
    currency: str = "CNY",
    minor_units: int = 100,
) -> Company:
    """Create the company if it does not exist (existing companies are left as they are)."""
    conn.execute(
        """INSERT INTO company (code, name, timezone, currency, minor_units) VALUES (%s, %s, %s, %s, %s)
           ON CONFLICT (code) DO NOTHING""",
        [code, name, timezone, currency, minor_units],
    )
    return get_company(conn, code)
