"""``meterline user``: staff, their roles per company, API keys."""

from __future__ import annotations

import argparse

from rich.table import Table

from meterline.cli._base import Command, Context
from meterline.store import access, audit
from meterline.store.company import get_company
from meterline.store.db import set_company


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    a = sub.add_parser("add", help="add a staff member (the first one becomes the group's administrator "
                                   "and ends the implicit local administrator)")
    a.add_argument("login")
    a.add_argument("name")
    for name, helptext in (("grant", "grant a role"), ("revoke", "revoke a role")):
        g = sub.add_parser(name, help=helptext)
        g.add_argument("login")
        g.add_argument("role")
        where = g.add_mutually_exclusive_group(required=True)
        where.add_argument("--in", dest="in_company", metavar="CODE", help="in this company")
        where.add_argument("--group", action="store_true", help="in every company of the group")
    sub.add_parser("list", help="staff and their roles")
    sub.add_parser("roles", help="roles and their permissions")
    k = sub.add_parser("key", help="issue an API key for a staff member (shown once)")
    k.add_argument("login")
    k.add_argument("--label", default="api", help="what the key is for")
    sub.add_parser("whoami", help="who you are and what you may do here")


def run(ctx: Context, args: argparse.Namespace) -> int:
    if args.action == "roles":
        table = Table(title="roles")
        for col in ("role", "title", "permissions", "read-only"):
            table.add_column(col)
        for role in ctx.policy.roles.values():
            perms = ", ".join(p for p in ctx.policy.permissions if role.allows(p))
            table.add_row(role.name, role.title, perms, "yes" if role.read_only else "")
        ctx.console.print(table)
        return 0
    if args.action == "whoami":
        actor = ctx.actor
        company = ctx.company
        perms = access.permissions_of(ctx.policy, actor, company.id)
        kind = " (local administrator: no staff configured yet)" if actor.bootstrap else ""
        ctx.console.print(f"{actor.login} ({actor.name}){kind}")
        ctx.console.print(f"roles in {company.code}: {', '.join(actor.roles_in(company.id)) or 'none'}")
        ctx.console.print(f"permissions: {', '.join(sorted(perms)) or 'none'}")
        return 0
    with ctx.db.connection() as conn:
        if args.action == "list":
            table = Table(title="staff")
            for col in ("login", "name", "active", "roles"):
                table.add_column(col)
            for u in access.list_users(conn):
                table.add_row(u.login, u.name, "yes" if u.active else "no", ", ".join(f"{r}@{c}" for c, r in u.grants))
            ctx.console.print(table)
            return 0
        if args.action == "add":
            first = ctx.actor.bootstrap
            uid = access.add_user(conn, args.login, args.name)
            audit.record(conn, None, "user.add", "staff_user", uid, None, {"login": args.login, "name": args.name},
                         group_level=True)
            if first:  # the first staff member ends the implicit administrator and takes over from it
                access.grant(conn, ctx.policy, args.login, access.ADMIN_ROLE, None, ctx.actor.login)
            conn.commit()
            ctx.console.print(f"user {args.login} (id {uid})"
                              + (f": the first user, administrator of the group; from now on name yourself with "
                                 f"--user {args.login}" if first else
                                 f"; grant roles with `meterline user grant {args.login} ROLE --in CODE`"))
            return 0
        if args.action == "key":
            key = access.create_api_key(conn, args.login, args.label)
            audit.record(conn, None, "api_key.issue", "staff_user", args.login, None, {"label": args.label},
                         group_level=True)
            conn.commit()
            ctx.console.print(key)
            return 0
        company_id = None if args.group else get_company(conn, args.in_company).id
        where = "every company" if args.group else args.in_company
        if company_id is not None:
            set_company(conn, company_id)  # the grant is that company's business (and audit row)
        if args.action == "grant":
            done = access.grant(conn, ctx.policy, args.login, args.role, company_id, ctx.actor.login)
            conn.commit()
            ctx.console.print(f"{args.login}: {args.role} in {where}" + ("" if done else " (already granted)"))
            return 0
        done = access.revoke(conn, args.login, args.role, company_id)
        conn.commit()
        ctx.console.print(f"{args.login}: {args.role} in {where} " + ("revoked" if done else "was not granted"))
        return 0 if done else 1


COMMANDS = [Command("user", "staff, roles and API keys", run, configure,
                    permission={"roles": None, "whoami": None, "*": "users.manage"}, scope="group")]  # type: ignore[dict-item]
