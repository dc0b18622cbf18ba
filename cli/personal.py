"""``meterline personal``: keys for personal data, re-encryption after a key rotation."""

from __future__ import annotations

import argparse

from meterline.cli._base import Command, Context
from meterline.store import audit, personal


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("keygen", help="print a new data key (base64) for [security] data_keys")
    sub.add_parser("reencrypt", help="rewrite the company's personal data under the current key "
                                     "(after adding a key, or to encrypt data from before encryption)")


def run(ctx: Context, args: argparse.Namespace) -> int:
    if args.action == "keygen":
        ctx.console.print(personal.generate_key())
        return 0
    keyring = personal.keyring_from_settings(ctx.settings)
    company = ctx.company
    with ctx.scoped() as conn:
        report = personal.reencrypt(conn, company.id, keyring)
        audit.record(conn, None, "personal.reencrypt", "company", company.code, None,
                     {"key": keyring.current, "customers": report.customers, "rewritten": report.rewritten,
                      "plain": report.plain})
        conn.commit()
    # every value is an envelope now: let the database check it from here on
    with ctx.db.connect(autocommit=True, owner=True) as conn:
        for name in ("customer_id_number_encrypted", "customer_phone_encrypted"):
            conn.execute(f"ALTER TABLE customer VALIDATE CONSTRAINT {name}")
    ctx.console.print(f"{company.code}: {report.customers} customers with personal data, {report.rewritten} rewritten "
                      f"under key {keyring.current} ({report.plain} values were plain text)")
    return 0


COMMANDS = [Command("personal", "personal data: keys and re-encryption", run, configure,
                    permission={"keygen": None, "reencrypt": "personal.manage"})]  # type: ignore[dict-item]
