"""``meterline bank``: withholding out-files and return files (托收/代扣 出盘 · 回盘)."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from rich.table import Table

from meterline.cli._base import Command, Context
from meterline.cli.ledger import day, money, policy_for
from meterline.errors import NotFound
from meterline.ledger.balances import resolve_account
from meterline.ledger.channels import withholding
from meterline.ledger.channels.bankfile import BankFormat, load_formats


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    o = sub.add_parser("out", help="write the out-file of what to withhold at a bank")
    o.add_argument("--bank", required=True, help="bank code (a format in ledger.banks_dir)")
    o.add_argument("--date", type=day, help="business day of the batch (default: today)")
    o.add_argument("--out", type=Path, help="directory (default: ledger.bank_out_dir)")
    i = sub.add_parser("in", help="import a bank's return file: post successes, record failures")
    i.add_argument("file", type=Path)
    i.add_argument("--bank", required=True)
    sub.add_parser("formats", help="the bank formats configured")
    m = sub.add_parser("mandate", help="record a withholding agreement of an account")
    m.add_argument("--account", required=True, help="customer account code")
    m.add_argument("--bank", required=True)
    m.add_argument("--number", required=True, help="the bank account to debit")
    m.add_argument("--holder", required=True, help="its holder's name")


def _format(ctx: Context, bank: str) -> BankFormat:
    formats = load_formats(ctx.settings.ledger.banks_dir)
    if bank not in formats:
        raise NotFound(f"no format for bank {bank!r} (known: {', '.join(sorted(formats)) or 'none'})")
    return formats[bank]


def run(ctx: Context, args: argparse.Namespace) -> int:
    console = ctx.console
    if args.action == "formats":
        table = Table(title="bank withholding formats")
        for col in ("bank", "name", "layout", "encoding", "amounts"):
            table.add_column(col)
        for code, f in sorted(load_formats(ctx.settings.ledger.banks_dir).items()):
            table.add_row(code, f.name, f.layout, f.encoding, f.amount)
        console.print(table)
        return 0
    company = ctx.company
    fmt = _format(ctx, args.bank) if args.action in ("out", "in") else None
    with ctx.db.connection(company_id=company.id) as conn:
        if args.action == "mandate":
            account_id, _ = resolve_account(conn, company.id, args.account)
            withholding.add_mandate(conn, company.id, account_id, args.bank, args.number, args.holder)
            conn.commit()
            console.print(f"account {args.account}: withholding at {args.bank} from {args.number}")
            return 0
        assert fmt is not None
        if args.action == "out":
            batch = withholding.write_out(conn, company.id, fmt, day=args.date,
                                          out_dir=args.out or ctx.settings.ledger.bank_out_dir)
            conn.commit()
            if batch.path is None:
                console.print(f"{fmt.bank}: nothing to withhold (no account with an agreement owes anything)")
                return 0
            console.print(f"{fmt.bank} batch {batch.batch_no}: {batch.items} account(s), {money(batch.total)} -> {batch.path}")
            return 0
        result = withholding.read_return_file(conn, company.id, fmt, args.file,
                                              policy=policy_for(ctx, company.code).allocation,
                                              received_at=dt.datetime.now(dt.timezone.utc))
        conn.commit()
        if result.status == "rejected":
            console.print(f"{args.file}: REJECTED, nothing posted (recorded as return file {result.file_id}):")
            for p in result.problems:
                console.print(f"  {p}")
            return 1
        if result.status == "duplicate":
            console.print(f"{args.file}: {result.problems[0]}; nothing changed")
            return 0
        console.print(f"{args.file}: batch {result.batch_no}, {result.lines} line(s): {result.paid} paid "
                      f"({money(result.paid_amount)}), {result.failed} failed")
        if result.failures:
            table = Table(title="failures")
            for col in ("seq", "account", "reason code", "reason"):
                table.add_column(col)
            for seq, account, code, reason in result.failures:
                table.add_row(str(seq), account, code, reason)
            console.print(table)
        return 0


COMMANDS = [Command("bank", "bank withholding: out-files, return files, agreements", run, configure,
                    permission={"formats": "payments.read", "*": "payments.post"})]
