"""Who the caller is and what they may do: staff, roles, permissions, API keys.

* Roles and permissions are data: ``config/roles.toml`` (plus ``[security] roles_file``),
  loaded by :func:`load_policy` into a :class:`Policy`.
* Staff are rows of ``staff_user``; ``staff_role`` grants a role in one company, or in every
  company (``company_id`` NULL: a group-wide grant). An API key is one staff identity.
* :func:`resolve_user` turns a login (CLI ``--user`` / ``METERLINE_USER``) into an
  :class:`Actor`; :func:`authenticate_api_key` does it for an API key. While ``staff_user`` is
  empty the caller is the local administrator (a fresh deployment and ``make demo`` need no
  setup); the first ``meterline user add`` ends that.
* :func:`require` is the one permission check (CLI commands, API endpoints, library code):
  it raises :class:`~meterline.errors.PermissionDenied` naming the missing permission, the
  caller, their roles there and the roles that have it.
* :func:`check_separation` is the separation-of-duties check (who entered something may not
  approve it).
"""

from __future__ import annotations

import fnmatch
import hashlib
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import psycopg

from meterline.config.loader import read_toml
from meterline.config.settings import CONFIG_DIR
from meterline.errors import ConfigError, NotFound, PermissionDenied, SeparationOfDutiesError

DEFAULT_ROLES_FILE = CONFIG_DIR / "roles.toml"
ADMIN_ROLE = "administrator"
GROUP_PERMISSION = "group.read"
API_KEY_PREFIX = "mlk_"


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    title: str
    permissions: tuple[str, ...]
    deny: tuple[str, ...] = ()
    read_only: bool = False

    def allows(self, permission: str) -> bool:
        if any(fnmatch.fnmatchcase(permission, p) for p in self.deny):
            return False
        return any(fnmatch.fnmatchcase(permission, p) for p in self.permissions)


@dataclass(frozen=True, slots=True)
class Policy:
    roles: dict[str, Role]
    permissions: dict[str, str]  # name -> description

    def role(self, name: str) -> Role:
        try:
            return self.roles[name]
        except KeyError:
            raise NotFound(f"role {name!r} does not exist (roles: {', '.join(sorted(self.roles))})") from None

    def check_permission_name(self, permission: str) -> None:
        if permission not in self.permissions:
            raise ConfigError([f"permission {permission!r} is not declared in the roles file's [permissions] table"])

    def roles_with(self, permission: str) -> list[str]:
        return sorted(r.name for r in self.roles.values() if r.allows(permission))


def load_policy(extra: str | Path | None = None, base: str | Path = DEFAULT_ROLES_FILE) -> Policy:
    """Roles and permissions from ``base`` with ``extra`` (a deployment's roles file) over it."""
    data = _read_toml(Path(base))
    if extra:
        over = _read_toml(Path(extra).expanduser())
        data.setdefault("permissions", {}).update(over.get("permissions", {}))
        data.setdefault("roles", {}).update(over.get("roles", {}))
        unknown = set(over) - {"permissions", "roles"}
        if unknown:
            raise ConfigError([f"{k}: unknown key (known keys: permissions, roles)" for k in sorted(unknown)], str(extra))
    problems: list[str] = []
    permissions = {str(k): str(v) for k, v in data.get("permissions", {}).items()}
    roles: dict[str, Role] = {}
    for name, spec in data.get("roles", {}).items():
        path = f"roles.{name}"
        if not isinstance(spec, dict):
            problems.append(f"{path}: expected a table")
            continue
        for key in spec:
            if key not in ("title", "permissions", "deny", "read_only"):
                problems.append(f"{path}.{key}: unknown key (known keys: deny, permissions, read_only, title)")
        patterns = tuple(spec.get("permissions", ()))
        deny = tuple(spec.get("deny", ()))
        for pattern in patterns + deny:
            if not any(fnmatch.fnmatchcase(p, pattern) for p in permissions):
                problems.append(f"{path}: {pattern!r} matches no declared permission")
        roles[name] = Role(name, str(spec.get("title", name)), patterns, deny, bool(spec.get("read_only", False)))
    if ADMIN_ROLE not in roles:
        problems.append(f"roles.{ADMIN_ROLE}: the administrator role must exist")
    if problems:
        raise ConfigError(problems, str(extra or base))
    return Policy(roles, permissions)


def _read_toml(path: Path) -> dict[str, Any]:
    return read_toml(path, "roles file")


# -- the caller ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Actor:
    """An identified caller: a staff login with its grants ((company id or None, role), ...)."""

    login: str
    name: str
    user_id: int | None
    grants: tuple[tuple[int | None, str], ...]
    origin: str = "local"
    bootstrap: bool = False  #: the implicit local administrator of a deployment with no staff yet

    def roles_in(self, company_id: int | None) -> list[str]:
        """Roles that apply in a company (its own grants and group-wide ones); None: group-wide only."""
        return sorted({r for c, r in self.grants if c is None or (company_id is not None and c == company_id)})

    def companies(self) -> set[int | None]:
        return {c for c, _r in self.grants}


def bootstrap_actor(login: str, origin: str = "local") -> Actor:
    return Actor(login, login, None, ((None, ADMIN_ROLE),), origin, bootstrap=True)


def _staff_exists(conn: psycopg.Connection) -> bool:
    if not conn.execute("SELECT to_regclass('staff_user') IS NOT NULL").fetchone()[0]:
        return False
    return bool(conn.execute("SELECT EXISTS (SELECT 1 FROM staff_user)").fetchone()[0])


def _grants(conn: psycopg.Connection, user_id: int) -> tuple[tuple[int | None, str], ...]:
    rows = conn.execute("SELECT company_id, role FROM staff_role WHERE user_id = %s ORDER BY company_id NULLS FIRST, role",
                        [user_id]).fetchall()
    return tuple((c, r) for c, r in rows)


def resolve_user(conn: psycopg.Connection, login: str, origin: str = "local") -> Actor:
    """The staff member ``login`` (the local administrator while no staff exist)."""
    if not _staff_exists(conn):
        return bootstrap_actor(login, origin)
    row = conn.execute("SELECT id, name, active FROM staff_user WHERE login = %s", [login]).fetchone()
    if row is None:
        raise PermissionDenied(f"{login!r} is not a meterline user (name one with --user or METERLINE_USER; "
                               f"an administrator adds users with `meterline user add`)", "login", login)
    uid, name, active = row
    if not active:
        raise PermissionDenied(f"user {login!r} is deactivated", "login", login)
    return Actor(login, name, uid, _grants(conn, uid), origin)


def _hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def authenticate_api_key(conn: psycopg.Connection, key: str, origin: str = "api") -> Actor:
    """The staff identity of an API key (only its SHA-256 is stored)."""
    row = conn.execute(
        """SELECT u.id, u.login, u.name, u.active FROM api_key k JOIN staff_user u ON u.id = k.user_id
           WHERE k.key_hash = %s AND k.revoked_at IS NULL""", [_hash_key(key)]).fetchone()
    if row is None or not row[3]:
        raise PermissionDenied("unknown, revoked or deactivated API key", "login")
    uid, login, name, _active = row
    return Actor(login, name, uid, _grants(conn, uid), origin)


# -- the check --------------------------------------------------------------------------------------
def permissions_of(policy: Policy, actor: Actor, company_id: int | None) -> set[str]:
    out: set[str] = set()
    for role_name in actor.roles_in(company_id):
        role = policy.roles.get(role_name)
        if role is not None:
            out.update(p for p in policy.permissions if role.allows(p))
    return out


def allowed(policy: Policy, actor: Actor, permission: str, company_id: int | None = None) -> bool:
    policy.check_permission_name(permission)
    if permission == GROUP_PERMISSION:
        company_id = None  # group scope needs a group-wide grant
    return any(policy.roles[r].allows(permission) for r in actor.roles_in(company_id) if r in policy.roles)


def require(policy: Policy, actor: Actor, permission: str, company_id: int | None = None,
            company_code: str | None = None) -> None:
    """Refuse (PermissionDenied) unless ``actor`` holds ``permission`` in the company (or group-wide)."""
    if allowed(policy, actor, permission, company_id):
        return
    scope_id = None if permission == GROUP_PERMISSION else company_id
    roles = actor.roles_in(scope_id)
    where = "group-wide" if scope_id is None else f"in company {company_code or company_id}"
    have = ", ".join(roles) if roles else "none"
    who = ", ".join(policy.roles_with(permission)) or "no role"
    raise PermissionDenied(
        f"permission denied: {actor.login} lacks permission {permission!r} {where} "
        f"(roles there: {have}; {permission!r} comes with: {who})", permission, actor.login, company_code)


def read_only(policy: Policy, actor: Actor, company_id: int | None) -> bool:
    """True when every role the actor has there is read-only (the database then refuses writes)."""
    roles = [policy.roles[r] for r in actor.roles_in(company_id) if r in policy.roles]
    return bool(roles) and all(r.read_only for r in roles)


def check_separation(entered_by: str | None, approver: str, what: str = "adjustment",
                     permission: str = "adjustments.approve") -> None:
    """Refuse when the approver is who entered the thing (separation of duties)."""
    if entered_by is not None and entered_by.strip().casefold() == approver.strip().casefold():
        raise SeparationOfDutiesError(
            f"separation of duties: {entered_by} entered this {what} and may not approve it; "
            f"another holder of {permission!r} must", permission, approver)


# -- staff administration -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StaffUser:
    id: int
    login: str
    name: str
    active: bool
    grants: tuple[tuple[str, str], ...] = field(default=())  # (company code or '*', role)


def add_user(conn: psycopg.Connection, login: str, name: str) -> int:
    row = conn.execute(
        """INSERT INTO staff_user (login, name) VALUES (%s, %s)
           ON CONFLICT (login) DO UPDATE SET name = EXCLUDED.name, active = true RETURNING id""", [login, name]).fetchone()
    return int(row[0])


def _user_id(conn: psycopg.Connection, login: str) -> int:
    row = conn.execute("SELECT id FROM staff_user WHERE login = %s", [login]).fetchone()
    if row is None:
        raise NotFound(f"user {login!r} does not exist (add it with `meterline user add {login} NAME`)")
    return int(row[0])


def grant(conn: psycopg.Connection, policy: Policy, login: str, role: str, company_id: int | None, by: str) -> bool:
    """Grant ``role`` (in a company, or group-wide with None); False if it was granted already."""
    policy.role(role)
    uid = _user_id(conn, login)
    cur = conn.execute(
        """INSERT INTO staff_role (user_id, company_id, role, granted_by) VALUES (%s, %s, %s, %s)
           ON CONFLICT (user_id, coalesce(company_id, 0), role) DO NOTHING""", [uid, company_id, role, by])
    return cur.rowcount == 1


def revoke(conn: psycopg.Connection, login: str, role: str, company_id: int | None) -> bool:
    uid = _user_id(conn, login)
    cur = conn.execute("DELETE FROM staff_role WHERE user_id = %s AND role = %s AND company_id IS NOT DISTINCT FROM %s",
                       [uid, role, company_id])
    return cur.rowcount > 0


def list_users(conn: psycopg.Connection) -> list[StaffUser]:
    users = []
    for uid, login, name, active in conn.execute("SELECT id, login, name, active FROM staff_user ORDER BY login").fetchall():
        grants = conn.execute(
            """SELECT coalesce(c.code, '*'), r.role FROM staff_role r LEFT JOIN company c ON c.id = r.company_id
               WHERE r.user_id = %s ORDER BY 1, 2""", [uid]).fetchall()
        users.append(StaffUser(uid, login, name, active, tuple((c, r) for c, r in grants)))
    return users


def create_api_key(conn: psycopg.Connection, login: str, label: str) -> str:
    """A new API key for ``login``; returned once, only its hash is kept."""
    uid = _user_id(conn, login)
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    conn.execute("INSERT INTO api_key (user_id, key_hash, label) VALUES (%s, %s, %s)", [uid, _hash_key(key), label])
    return key


def company_codes(conn: psycopg.Connection, ids: Iterable[int | None]) -> dict[int | None, str]:
    wanted = [i for i in ids if i is not None]
    rows = conn.execute("SELECT id, code FROM company WHERE id = ANY(%s)", [wanted]).fetchall() if wanted else []
    return {None: "*", **{i: c for i, c in rows}}
