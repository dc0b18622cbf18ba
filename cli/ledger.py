"""``meterline ledger``: trial balance, statements, closes, late fees, corrections, checks."""

from __future__ import annotations

import argparse
import datetime as dt
import json

from rich.table import Table

from meterline.cli._base import Command, Context
from meterline.errors import MeterlineError
from meterline.ledger import balances, bills, close, corrections, late_fees
from meterline.ledger.balances import resolve_account
from meterline.ledger.channels import counter
from meterline.ledger.policy import LedgerPolicy, load_policy


def money(minor: int) -> str:
    sign = "-" if minor < 0 else ""
    return f"{sign}{abs(minor) // 100:,}.{abs(minor) % 100:02d}"


def day(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date YYYY-MM-DD") from exc


def policy_for(ctx: Context, company_code: str) -> LedgerPolicy:
    return load_policy(ctx.settings.ledger.policy_file).for_company(company_code)


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    tb = sub.add_parser("trial-balance", help="debits, credits and balance per account up to a day")
    tb.add_argument("--date", type=day, required=True, help="business day (inclusive), YYYY-MM-DD")
    tb.add_argument("--detail", action="store_true", help="one row per customer account too (AR:<id>, PREPAID:<id>)")
    st = sub.add_parser("statement", help="an account's postings with a running balance")
    st.add_argument("account", help="a customer account code (its AR and PREPAID), or a ledger code such as CASH:wechat")
    st.add_argument("--from", dest="since", type=day)
    st.add_argument("--to", dest="until", type=day)
    bal = sub.add_parser("balance", help="what a customer account owes, its credit and open items")
    bal.add_argument("account")
    ck = sub.add_parser("check", help="rebuild balances and sub-ledger from the postings and compare")
    ck.add_argument("--repair", action="store_true", help="rebuild the maintained balances when they differ")
    cd = sub.add_parser("close-day", help="daily close (日结) of a channel and cashier, or of everything")
    cd.add_argument("--date", type=day, required=True)
    cd.add_argument("--channel", default="*", help="counter, bank, wechat, ... (default: everything)")
    cd.add_argument("--cashier", default="*", help="cashier / bank / merchant within the channel")
    cm = sub.add_parser("close-month", help="monthly close (月结) with its trial balance")
    cm.add_argument("--month", required=True, help="YYYY-MM")
    lf = sub.add_parser("late-fees", help="charge the late fees (滞纳金) of a day (idempotent)")
    lf.add_argument("--date", type=day, required=True)
    pb = sub.add_parser("post-bills", help="post the bills of a billing run not posted yet")
    pb.add_argument("--run", type=int, required=True)
    pb.add_argument("--date", type=day, help="business day to book on (default: today)")
    rb = sub.add_parser("reverse-bill", help="reverse (红冲) a bill")
    rb.add_argument("bill", type=int)
    rb.add_argument("--reason", required=True)
    rp = sub.add_parser("reverse-payment", help="reverse (红冲) a payment")
    rp.add_argument("payment", type=int, help="payment id")
    rp.add_argument("--reason", required=True)
    ad = sub.add_parser("adjust", help="request a waiver, charge, write-off, recovery or refund (needs approval)")
    ad.add_argument("--kind", choices=corrections.ADJUSTMENT_KINDS, required=True)
    ad.add_argument("--account", required=True, help="customer account code")
    ad.add_argument("--amount", type=int, required=True, help="minor units (fen)")
    ad.add_argument("--reason", required=True)
    ad.add_argument("--item", type=int, help="the open item a waiver forgives")
    for name, text in (("approve", "approve and post an adjustment"), ("reject", "reject an adjustment")):
        a = sub.add_parser(name, help=text)
        a.add_argument("adjustment", type=int)
        a.add_argument("--note")
    rr = sub.add_parser("receipts", help="issue a range of receipt numbers to a cashier")
    rr.add_argument("--cashier", required=True)
    rr.add_argument("--first", type=int, required=True)
    rr.add_argument("--last", type=int, required=True)
    rr.add_argument("--prefix", default="")
    sub.add_parser("fold", help="fold balance deltas into the balance table")


def run(ctx: Context, args: argparse.Namespace) -> int:
    company = ctx.company
    console = ctx.console
    with ctx.db.connection(company_id=company.id) as conn:
        a = args.action
        if a == "trial-balance":
            rows = close.trial_balance(conn, company.id, args.date, detail=args.detail)
            table = Table(title=f"trial balance of {company.code} to {args.date}")
            for col in ("account", "debit", "credit", "balance"):
                table.add_column(col, justify="left" if col == "account" else "right")
            for r in rows:
                table.add_row(r.account, money(r.debit), money(r.credit), money(r.balance))
            debit, credit = sum(r.debit for r in rows), sum(r.credit for r in rows)
            table.add_row("total", money(debit), money(credit), money(debit - credit))
            console.print(table)
            console.print("balanced" if debit == credit else "NOT BALANCED")
            return 0 if debit == credit else 1
        if a in ("statement", "balance"):
            code = args.account
            if ":" in code:
                codes = [code]
            else:
                account_id, name = resolve_account(conn, company.id, code)
                codes = [f"AR:{account_id}", f"PREPAID:{account_id}"]
            if a == "balance":
                pos = balances.customer_position(conn, company.id, int(codes[0][3:]))
                console.print(f"{pos.account_code} {pos.customer_name}: owes {money(pos.due)}, prepaid credit "
                              f"{money(pos.prepaid_credit)}, net {money(pos.net_due)}, overdue {money(pos.overdue)}")
                table = Table()
                for col in ("item", "kind", "period", "due", "amount", "settled", "open"):
                    table.add_column(col)
                for i in pos.open_items:
                    table.add_row(str(i.id), i.kind, i.period or "", str(i.due_date), money(i.amount), money(i.settled),
                                  money(i.open))
                console.print(table)
                return 0
            stmt = balances.statement(conn, company.id, codes, since=args.since, until=args.until)
            table = Table(title=f"statement of {args.account} ({', '.join(codes)})")
            for col in ("day", "entry", "kind", "account", "debit", "credit", "balance", "memo"):
                table.add_column(col)
            table.add_row("", "", "opening", "", "", "", money(stmt.opening), "")
            for ln in stmt.lines:
                table.add_row(str(ln.booked_on), str(ln.entry_id), ln.kind, ln.account,
                              money(ln.amount) if ln.amount > 0 else "", money(-ln.amount) if ln.amount < 0 else "",
                              money(ln.balance), ln.memo or "")
            console.print(table)
            console.print(f"closing balance {money(stmt.closing)} ({len(stmt.lines)} posting(s))")
            return 0
        if a == "check":
            report = balances.check(conn, company.id, repair=args.repair)
            conn.commit()
            for p in report.problems:
                console.print(f"problem: {p}")
            console.print(f"{report.entries:,} entries, {report.postings:,} postings checked: "
                          f"{'all consistent' if report.ok else f'{len(report.problems)} problem(s)'}"
                          f"{'; maintained balances rebuilt' if report.repaired else ''}")
            return 0 if report.ok else 1
        if a == "close-day":
            result = close.close_day(conn, company.id, args.date, channel=args.channel, cashier=args.cashier,
                                     closed_by=ctx.login)
            conn.commit()
            s = result.summary
            console.print(f"day {args.date} {'closed' if result.created else 'was already closed'} for "
                          f"{args.channel}/{args.cashier}")
            table = Table(title="payments by tender")
            for col in ("channel", "cashier", "tender", "count", "amount"):
                table.add_column(col)
            for p in s["payments"]:
                table.add_row(p["channel"], p["cashier"], p["tender"], str(p["count"]), money(p["amount"]))
            console.print(table)
            for kind, v in s["entries"].items():
                console.print(f"  {kind}: {v['entries']} entr{'y' if v['entries'] == 1 else 'ies'}, cash {money(v['cash'])}")
            if s.get("receipts"):
                console.print(f"  receipts used: {len(s['receipts']['used'])}, voided: {len(s['receipts']['voided'])}")
            console.print(f"net cash to hand over: {money(s['net_cash'])}")
            return 0
        if a == "close-month":
            result = close.close_month(conn, company.id, args.month, closed_by=ctx.login)
            conn.commit()
            s = result.summary
            console.print(f"month {args.month} {'closed' if result.created else 'was already closed'}: trial balance "
                          f"to {s['through']}, debit {money(s['debit'])} = credit {money(s['credit'])} over "
                          f"{s['accounts']} account(s)")
            return 0
        if a == "late-fees":
            run_ = late_fees.run_late_fees(conn, company.id, args.date, policy=policy_for(ctx, company.code))
            conn.commit()
            console.print(f"late fees {args.date}: {run_.bills} bill(s), {money(run_.amount)}"
                          f"{'' if run_.created else ' (this day had been run before: nothing new)'}")
            return 0
        if a == "post-bills":
            result = bills.post_bills_detail(conn, company.id, args.run, day=args.date,
                                             policy=policy_for(ctx, company.code).allocation)
            conn.commit()
            console.print(f"billing run {args.run}: {result.bills} bill(s) posted, {money(result.amount)}; "
                          f"prepaid credit applied {money(result.prepaid_applied)}")
            return 0
        if a == "reverse-bill":
            r = bills.reverse_bill(conn, company.id, args.bill, reason=args.reason, created_by=ctx.login,
                                   policy=policy_for(ctx, company.code).allocation)
            conn.commit()
            console.print(f"bill {args.bill} reversed by entry {r.entry_id} on {r.booked_on}; "
                          f"{money(r.released_to_prepaid)} paid on it became prepaid credit")
            return 0
        if a == "reverse-payment":
            r = corrections.reverse_payment(conn, company.id, args.payment, reason=args.reason, created_by=ctx.login)
            conn.commit()
            console.print(f"payment {args.payment} reversed by entry {r.entry_id} on {r.booked_on}: reopened "
                          f"{money(r.reopened)}, from prepaid {money(r.from_prepaid)}, owed again {money(r.owed_again)}")
            return 0
        if a == "adjust":
            account_id, _ = resolve_account(conn, company.id, args.account)
            adj = corrections.request_adjustment(conn, company.id, kind=args.kind, account_id=account_id,
                                                 amount=args.amount, reason=args.reason, entered_by=ctx.login,
                                                 item_id=args.item)
            conn.commit()
            console.print(f"adjustment {adj} ({args.kind} {money(args.amount)}) waits for approval by someone else")
            return 0
        if a == "approve":
            entry = corrections.approve(conn, company.id, args.adjustment, decided_by=ctx.login, note=args.note,
                                        policy=policy_for(ctx, company.code).allocation)
            conn.commit()
            console.print(f"adjustment {args.adjustment} approved and posted as entry {entry}")
            return 0
        if a == "reject":
            corrections.reject(conn, company.id, args.adjustment, decided_by=ctx.login, note=args.note)
            conn.commit()
            console.print(f"adjustment {args.adjustment} rejected")
            return 0
        if a == "receipts":
            r = counter.issue_range(conn, company.id, args.cashier, args.first, args.last, prefix=args.prefix)
            conn.commit()
            console.print(f"cashier {r.cashier}: receipts {r.prefix}{r.first_no}..{r.prefix}{r.last_no} issued")
            return 0
        if a == "fold":
            n = balances.fold(conn)
            conn.commit()
            console.print(f"{n} balance(s) folded")
            return 0
    raise MeterlineError(f"unknown action {json.dumps(args.action)}")


# who acts is the identified caller (--user / METERLINE_USER), never an option anyone could set:
# separation of duties (the enterer of an adjustment cannot approve it) depends on it
PERMISSIONS = {
    "trial-balance": "ledger.read", "statement": "ledger.read", "balance": "ledger.read", "check": "ledger.read",
    "close-day": "ledger.close", "close-month": "ledger.close", "late-fees": "ledger.post", "fold": "ledger.post",
    "post-bills": "billing.run", "reverse-bill": "billing.run", "reverse-payment": "payments.reverse",
    "adjust": "adjustments.enter", "approve": "adjustments.approve", "reject": "adjustments.approve",
    "receipts": "ledger.post",
}
COMMANDS = [Command("ledger", "ledger: trial balance, statements, closes, late fees, corrections", run, configure,
                    permission=PERMISSIONS)]
