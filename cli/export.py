"""``meterline export``: bill files, payment notices, finance totals and analyst data of a period."""

from __future__ import annotations

import argparse
from pathlib import Path

from meterline.cli._base import Command, Context
from meterline.cli.registry import disclosure_for
from meterline.errors import MeterlineError
from meterline.store import audit
from meterline.store.personal import Disclosure, keyring_from_settings

KINDS = ("bills", "notices", "finance", "data", "all")


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=KINDS, help="bills (JSONL + CSV), notices (HTML per account), "
                                               "finance (journal totals CSV + Parquet), data (Parquet), all")
    p.add_argument("--period", required=True, metavar="YYYY-MM")
    p.add_argument("--out", default="exports", metavar="DIR", help="output directory (default: ./exports)")
    p.add_argument("--run", type=int, default=None, metavar="ID", help="bills: only this billing run")
    p.add_argument("--detail", action="store_true", help="finance: one row per customer account, not AR:* / PREPAID:*")


def run(ctx: Context, args: argparse.Namespace) -> int:
    from meterline.exporters.bills import export_bills
    from meterline.exporters.data import export_data
    from meterline.exporters.finance import export_finance
    from meterline.exporters.notice import export_notices

    if args.run is not None and args.kind != "bills":
        raise MeterlineError("--run applies to `export bills` only")
    if args.detail and args.kind not in ("finance", "all"):
        raise MeterlineError("--detail applies to `export finance` only")
    company = ctx.company
    out = Path(args.out)
    # bills and notices go to printers and e-invoicing platforms: outside parties
    disclosure = disclosure_for(ctx, outside=True)
    keyring = keyring_from_settings(ctx.settings) if disclosure is not Disclosure.NONE else None
    kinds = ("bills", "notices", "finance", "data") if args.kind == "all" else (args.kind,)
    done: dict[str, object] = {}
    with ctx.scoped() as conn:
        for kind in kinds:
            if kind == "bills":
                b = export_bills(conn, company.id, args.period, out, run_id=args.run, disclosure=disclosure,
                                 keyring=keyring)
                ctx.console.print(f"bills: {b.bills} bill(s), {_yuan(b.total)} issued → {b.jsonl}, {b.csv}")
                done["bills"] = b.bills
            elif kind == "notices":
                n = export_notices(conn, company.id, args.period, out, disclosure=disclosure, keyring=keyring)
                ctx.console.print(f"notices: {len(n.files)} account(s), {_yuan(n.total_due)} due → {n.directory}/")
                done["notices"] = len(n.files)
            elif kind == "finance":
                f = export_finance(conn, company.id, args.period, out, detail=args.detail)
                ctx.console.print(f"finance: {f.rows} day × account row(s), debit {_yuan(f.debit)} = credit "
                                  f"{_yuan(f.credit)} → {f.csv}, {f.parquet}")
                done["finance"] = f.rows
            else:
                d = export_data(conn, company.id, args.period, out)
                listed = ", ".join(f"{k} {v:,}" for k, v in d.rows.items())
                ctx.console.print(f"data: {listed} → {out / 'data'}/")
                done["data"] = d.rows
        audit.record(conn, None, "export.run", "export", f"{args.kind}:{args.period}", None,
                     {"kinds": list(kinds), "period": args.period, "out": str(out), "rows": done,
                      "personal_data": disclosure.value})
        conn.commit()
    return 0


def _yuan(minor: int) -> str:
    from meterline.exporters._files import money

    return money(minor)


COMMANDS = [Command("export", "exports of a period: bills, payment notices, finance totals, analyst data",
                    run, configure, permission="exports.run")]
