"""The demo's ledger steps: the month's bills paid through every channel, then the day closed.

The billed customers behave the way a utility's customers do (deterministic for the demo's
seed): about a quarter pay by bank withholding (托收), others through WeChat Pay and Alipay,
at the counter (cash or card, with numbered receipts; some pay only part), by bank real-time
payment, a few top up their prepaid IC card beyond the bill; the rest have not paid yet.
Everything goes through the ledger's own functions (``ledger.channels.*``,
``ledger.payments``), the same code the HTTP API and ``meterline bank``/``ledger`` run:

* **counter**: receipt ranges issued to two cashiers; one receipt form spoiled, one payment
  taken on the wrong account voided (its payment reversed);
* **WeChat Pay / Alipay**: an order per payment, the wallet's notification signed with its
  RSA key (WeChat: the resource encrypted with the API v3 key), verified and settled; one
  notification with a forged signature (refused, recorded), one delivered twice (a replay
  changes nothing), one for a different amount than the order (refused);
* **bank real-time**: one batch through ``record_payments`` (idempotent by transaction id);
* **prepaid**: IC-card top-ups; what the bill does not take stays as prepaid credit;
* **withholding round trip**: agreements, ``bank out`` file, the bank's return file (a
  simulated bank reads our out-file and answers, some debits failing with its reason codes),
  ``bank in``;
* **late fees** (滞纳金) for today on the bills past due, one waived on approval by a second
  person; then the **daily close** (日结) and the ledger's own consistency check.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import secrets
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from cryptography.hazmat.primitives.asymmetric import rsa
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from meterline.cli.ledger import money
from meterline.ledger import balances, chart, close, corrections, late_fees
from meterline.ledger.channels import counter, wallet, withholding
from meterline.ledger.channels.bankfile import BankFormat, load_formats, parse, render
from meterline.ledger.errors import SignatureError
from meterline.ledger.payments import PaymentIn, record_payments
from meterline.ledger.policy import LedgerPolicy, load_policy
from meterline.ledger.prepaid import top_up

UTC = dt.timezone.utc
BANK = "icbc"
WECHAT_MCHID = "1900000109"
ALIPAY_APP = "2021000111"
CASHIERS = (("cashier-01", "A"), ("cashier-02", "B"))
#: share of billed accounts per way of paying; the rest have not paid yet
MIX = (("withholding", 0.26), ("wechat", 0.15), ("alipay", 0.10), ("counter", 0.08), ("bank", 0.15),
       ("prepaid", 0.02))
WITHHOLDING_FAILS = 0.08  #: share of withholding debits the bank refuses
FAIL_CODES = ("3001", "3001", "3001", "3003", "3004", "3005")  #: insufficient funds most often


@dataclass
class Due:
    account_id: int
    account_code: str
    holder: str
    amount: int  #: open on the account's bills


@dataclass
class LedgerDemo:
    """What the ledger steps did, for the summary and the end-to-end test."""

    by_channel: dict[str, list[int]] = field(default_factory=dict)  # channel -> [count, amount]
    notices: dict[str, int] = field(default_factory=dict)  # verdict -> count
    refused: list[str] = field(default_factory=list)
    bank_out: withholding.OutBatch | None = None
    bank_return: withholding.ReturnResult | None = None
    bank_files: list[Path] = field(default_factory=list)
    late_fee: late_fees.LateFeeRun | None = None
    waived: int = 0
    voided: int = 0
    spoiled: str = ""
    close: close.CloseResult | None = None

    def paid(self, channel: str, amount: int, n: int = 1) -> None:
        c = self.by_channel.setdefault(channel, [0, 0])
        c[0] += n
        c[1] += amount


class _Lap:
    """Prints how long each part of a step took (the demo shows where its time goes)."""

    def __init__(self, state: Any) -> None:
        self.console = state.ctx.console
        self.t = time.perf_counter()

    def __call__(self, what: str) -> None:
        now = time.perf_counter()
        self.console.print(f"  [dim]{what}: {now - self.t:.1f}s[/dim]")
        self.t = now


def _policy(state: Any) -> LedgerPolicy:
    return load_policy(state.ctx.settings.ledger.policy_file).for_company(state.data["seed"].company.code)


def _dues(conn: Any, company_id: int) -> list[Due]:
    rows = conn.execute(
        """SELECT a.id, a.code, c.name, sum(i.amount - i.settled)::bigint
             FROM receivable_item i JOIN account a ON a.id = i.account_id JOIN customer c ON c.id = a.customer_id
            WHERE i.company_id = %s AND i.status = 'open' AND i.amount > i.settled
            GROUP BY a.id, a.code, c.name ORDER BY a.id""", [company_id]).fetchall()
    return [Due(*r) for r in rows]


def _assign(dues: list[Due], rng: random.Random) -> dict[str, list[Due]]:
    out: dict[str, list[Due]] = {k: [] for k, _ in MIX}
    out["unpaid"] = []
    for d in dues:
        x, acc = rng.random(), 0.0
        for channel, share in MIX:
            acc += share
            if x < acc:
                out[channel].append(d)
                break
        else:
            out["unpaid"].append(d)
    return out


def _progress(state: Any) -> Progress:
    return Progress(TextColumn("{task.description:<26}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=state.ctx.console, transient=False)


def step_payments(state: Any) -> None:
    """Counter, wallets, bank real-time and prepaid top-ups for the month's bills."""
    assert state.db is not None and state.company_id is not None
    cid = state.company_id
    policy = _policy(state).allocation
    rng = random.Random(20261)
    demo = LedgerDemo()
    state.data["ledger"] = demo
    now = dt.datetime.now(UTC).replace(microsecond=0)
    token = f"{now:%Y%m%d%H%M%S}"  # transaction ids of this run (a --keep rerun pays what is still open)
    lap = _Lap(state)
    with state.db.connection(company_id=cid) as conn:
        dues = _dues(conn, cid)
        if not dues:
            raise RuntimeError("nothing is owed: the billing run posted no bill to the ledger")
        groups = _assign(dues, rng)
        state.data["payers"] = groups
        with _progress(state) as progress:
            # -- counter ------------------------------------------------------------------------
            task = progress.add_task("counter (receipts)", total=len(groups["counter"]))
            for cashier, prefix in CASHIERS:
                if not any(r.left for r in counter.ranges(conn, cid, cashier)):
                    counter.issue_range(conn, cid, cashier, 1, 9999, prefix=prefix)
            demo.spoiled = counter.spoil_receipt(conn, cid, CASHIERS[0][0], reason="打印机卡纸 (printer jam)")
            receipts = []
            for i, d in enumerate(groups["counter"]):
                cashier = CASHIERS[i % 2][0]
                amount = d.amount if rng.random() > 0.15 else max(1, d.amount // 2)  # some pay only part
                r = counter.pay(conn, cid, cashier=cashier, shift="day", tender="cash" if rng.random() < 0.7 else "card",
                                transaction_id=f"CTR-{token}-{i:06d}", account_id=d.account_id, amount=amount,
                                received_at=now, policy=policy)
                receipts.append((cashier, r.receipt, amount))
                demo.paid("counter", amount)
                progress.advance(task)
            if receipts:  # taken on the wrong account: the receipt is voided and its payment reversed
                cashier, receipt, amount = receipts[-1]
                counter.void(conn, cid, cashier, receipt, reason="收错户号 (wrong account)", approved_by="counter-lead")
                demo.voided = amount
                demo.paid("counter", -amount, n=-1)
            conn.commit()
            lap("counter")

            # -- WeChat Pay and Alipay ----------------------------------------------------------
            wx_key, ali_key = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2))
            apiv3 = secrets.token_bytes(32)
            merchant = wallet.WechatMerchant(WECHAT_MCHID, cid, apiv3, wx_key.public_key())
            app = wallet.AlipayApp(ALIPAY_APP, cid, ali_key.public_key())
            task = progress.add_task("WeChat Pay / Alipay", total=len(groups["wechat"]) + len(groups["alipay"]))
            for i, d in enumerate(groups["wechat"]):
                order = wallet.create_order(conn, cid, channel="wechat", merchant=WECHAT_MCHID, account_id=d.account_id,
                                            amount=d.amount, out_trade_no=f"WX{token}{i:06d}")
                headers, body = _wechat_notice(wx_key, apiv3, order, f"42000{token}{i:08d}", d.amount)
                _notify_wechat(conn, cid, merchant, headers, body, policy, demo)
                if i == 0:  # the wallet delivers the same notification again
                    _notify_wechat(conn, cid, merchant, headers, body, policy, demo)
                if i == 1:  # a forged one: signed with another key
                    forged = rsa.generate_private_key(public_exponent=65537, key_size=2048)
                    h, b = _wechat_notice(forged, apiv3, order, f"FORGED{i:08d}", d.amount)
                    _notify_wechat(conn, cid, merchant, h, b, policy, demo)
                progress.advance(task)
            for i, d in enumerate(groups["alipay"]):
                order = wallet.create_order(conn, cid, channel="alipay", merchant=ALIPAY_APP, account_id=d.account_id,
                                            amount=d.amount, out_trade_no=f"ALI{token}{i:06d}")
                if i == 0:  # paid less than the order says: refused
                    params = _alipay_form(ali_key, order, f"ALIX{token}{i:06d}", d.amount - 1 if d.amount > 1 else 2)
                    _notify_alipay(conn, cid, app, params, policy, demo)
                params = _alipay_form(ali_key, order, f"ALIT{token}{i:06d}", d.amount)
                _notify_alipay(conn, cid, app, params, policy, demo)
                progress.advance(task)
            conn.commit()
            lap("wallets")

            # -- bank real-time and prepaid top-ups -----------------------------------------------
            task = progress.add_task("bank real-time, prepaid", total=len(groups["bank"]) + len(groups["prepaid"]))
            bank = [PaymentIn(f"ICBC-RT-{token}-{i:07d}", d.account_id, d.amount, now,
                              cash_account=chart.cash("bank", BANK), cashier=BANK, tender="transfer",
                              evidence={"bank": BANK, "channel": "real-time"}) for i, d in enumerate(groups["bank"])]
            if bank:
                result = record_payments(conn, cid, "bank", bank, policy=policy, created_by="demo")
                demo.paid("bank real-time", sum(p.amount for p in bank), len(bank))
                if result.conflicts:
                    raise RuntimeError(f"bank real-time payments conflicted: {result.conflicts[:3]}")
            progress.advance(task, len(bank))
            for i, d in enumerate(groups["prepaid"]):
                amount = -(-d.amount // 10_000) * 10_000 + 10_000  # whole hundreds of yuan, more than the bill
                top_up(conn, cid, channel="ic_card", external_id=f"IC-{token}-{i:06d}", account_id=d.account_id,
                       amount=amount, received_at=now, card_no=f"IC{d.account_id:010d}", vendor="营业厅自助机-01",
                       policy=policy, created_by="demo")
                demo.paid("prepaid IC card", amount)
                progress.advance(task)
            conn.commit()
            lap("bank real-time, prepaid")
    table = Table(title="payments received today")
    for col in ("channel", "payments", "amount (yuan)"):
        table.add_column(col, justify="left" if col == "channel" else "right")
    for channel, (n, amount) in demo.by_channel.items():
        table.add_row(channel, f"{n:,}", money(amount))
    state.ctx.console.print(table)
    for line in demo.refused:
        state.ctx.console.print(f"  refused: {line}")
    for channel, (n, amount) in demo.by_channel.items():
        state.add("payments", channel, f"{n:,} · {money(amount)} yuan")
    state.add("payments", "wallet notifications", ", ".join(f"{k} {v}" for k, v in sorted(demo.notices.items())))
    state.add("payments", "counter corrections", f"receipt {demo.spoiled} spoiled; one payment of "
                                                 f"{money(demo.voided)} voided and reversed")


def _wechat_notice(key: rsa.RSAPrivateKey, apiv3: bytes, order: wallet.Order, transaction_id: str,
                   amount: int) -> tuple[dict[str, str], bytes]:
    now = dt.datetime.now(UTC)
    data = {"mchid": order.merchant, "appid": "wxdemo", "out_trade_no": order.out_trade_no,
            "transaction_id": transaction_id, "trade_state": "SUCCESS",
            "success_time": now.astimezone(wallet.CHINA).isoformat(timespec="seconds"),
            "amount": {"total": amount, "payer_total": amount, "currency": "CNY"}}
    body = json.dumps({"id": secrets.token_hex(6), "event_type": "TRANSACTION.SUCCESS",
                       "resource": wallet.wechat_encrypt(apiv3, data)}).encode()
    stamp, nonce = str(int(now.timestamp())), secrets.token_hex(8)
    signature = wallet.sign_rsa(key, wallet.wechat_message(stamp, nonce, body))
    return ({"Wechatpay-Timestamp": stamp, "Wechatpay-Nonce": nonce, "Wechatpay-Signature": signature,
             "Wechatpay-Serial": "DEMO", "Content-Type": "application/json"}, body)


def _alipay_form(key: rsa.RSAPrivateKey, order: wallet.Order, trade_no: str, amount: int) -> dict[str, str]:
    params = {"app_id": order.merchant, "out_trade_no": order.out_trade_no, "trade_no": trade_no,
              "trade_status": "TRADE_SUCCESS", "total_amount": f"{Decimal(amount).scaleb(-2):.2f}",
              "gmt_payment": dt.datetime.now(wallet.CHINA).strftime("%Y-%m-%d %H:%M:%S"),
              "notify_id": secrets.token_hex(4), "sign_type": "RSA2"}
    params["sign"] = wallet.sign_rsa(key, wallet.alipay_sign_content(params))
    return params


def _settled(demo: LedgerDemo, channel: str, outcome: wallet.NoticeOutcome, amount: int, what: str) -> None:
    demo.notices[outcome.verdict] = demo.notices.get(outcome.verdict, 0) + 1
    if outcome.verdict == "paid":
        demo.paid(channel, amount)
    elif outcome.verdict == "rejected":
        demo.refused.append(f"{channel} notification {what}: {outcome.reason}")


def _notify_wechat(conn: Any, cid: int, merchant: wallet.WechatMerchant, headers: dict[str, str], body: bytes,
                   policy: Any, demo: LedgerDemo) -> None:
    try:
        paid = wallet.verify_wechat(merchant, headers, body)
    except SignatureError as exc:
        wallet.record_notice(conn, company_id=cid, channel="wechat", merchant=merchant.mchid, verdict="rejected",
                             reason=str(exc), external_id=None, payment_id=None, headers=headers, body=body)
        demo.notices["rejected"] = demo.notices.get("rejected", 0) + 1
        demo.refused.append(str(exc))
        return
    outcome = wallet.settle_notice(conn, cid, "wechat", paid, headers=headers, body=body, policy=policy)
    _settled(demo, "wechat", outcome, paid.amount, paid.out_trade_no)


def _notify_alipay(conn: Any, cid: int, app: wallet.AlipayApp, params: dict[str, str], policy: Any,
                   demo: LedgerDemo) -> None:
    body = urlencode(params).encode()
    try:
        paid = wallet.verify_alipay(app, wallet.parse_alipay_form(body))
    except SignatureError as exc:
        wallet.record_notice(conn, company_id=cid, channel="alipay", merchant=app.app_id, verdict="rejected",
                             reason=str(exc), external_id=None, payment_id=None, headers={}, body=body)
        demo.notices["rejected"] = demo.notices.get("rejected", 0) + 1
        demo.refused.append(str(exc))
        return
    outcome = wallet.settle_notice(conn, cid, "alipay", paid, headers={}, body=body, policy=policy)
    _settled(demo, "alipay", outcome, paid.amount, paid.out_trade_no)


# --- bank withholding round trip ------------------------------------------------------------

def simulated_bank_return(fmt: BankFormat, out_file: bytes, rng: random.Random, fail_share: float) -> bytes:
    """What the bank answers to an out-file: every debit done except a share refused with reason codes."""
    parsed = parse(fmt, fmt.out, out_file)
    if parsed.problems:
        raise RuntimeError("the simulated bank cannot read the out-file: " + "; ".join(parsed.problems))
    details = []
    for d in parsed.details:
        ok = rng.random() >= fail_share
        code = "" if ok else rng.choice(FAIL_CODES)
        details.append({"seq": d["seq"], "account_code": d["account_code"], "bank_account_no": d["bank_account_no"],
                        "amount": d["amount"], "status": fmt.returns.success[0] if ok else code,
                        "reason_code": code, "bank_ref": f"R{d['seq']:010d}" if ok else ""})
    paid = [d for d in details if not d["reason_code"]]
    header = {"batch_no": parsed.header["batch_no"], "date": parsed.header["date"], "count": len(details),
              "total": sum(d["amount"] for d in details), "paid_count": len(paid),
              "paid_total": sum(d["amount"] for d in paid)}
    return render(fmt, fmt.returns, header, details)


def step_withholding(state: Any) -> None:
    """Agreements, the out-file, the bank's return file, imported."""
    assert state.db is not None and state.company_id is not None
    cid = state.company_id
    demo: LedgerDemo = state.data["ledger"]
    payers: list[Due] = state.data["payers"]["withholding"]
    fmt = load_formats(state.ctx.settings.ledger.banks_dir)[BANK]
    out_dir = state.out_dir / "bank"
    rng = random.Random(20262)
    with state.db.connection(company_id=cid) as conn:
        for d in payers:
            withholding.add_mandate(conn, cid, d.account_id, BANK, f"6222{d.account_id:015d}", d.holder)
        batch = withholding.write_out(conn, cid, fmt, out_dir=out_dir, created_by="demo")
        conn.commit()
        demo.bank_out = batch
        if batch.path is None:  # (a --keep rerun: the agreements' accounts have paid)
            state.add("bank withholding", "out-file", "nothing to withhold: no account with an agreement owes anything")
            return
        data = simulated_bank_return(fmt, batch.path.read_bytes(), rng, WITHHOLDING_FAILS)
        ret_path = out_dir / batch.path.name.replace("_out", "_return")
        ret_path.write_bytes(data)
        result = withholding.read_return_file(conn, cid, fmt, ret_path, policy=_policy(state).allocation,
                                              received_at=dt.datetime.now(UTC), created_by="demo")
        conn.commit()
        again = withholding.read_return_file(conn, cid, fmt, ret_path, policy=_policy(state).allocation,
                                             received_at=dt.datetime.now(UTC), created_by="demo")
        conn.rollback()
    demo.bank_return = result
    demo.bank_files = [batch.path, ret_path]
    if result.status != "accepted":
        raise RuntimeError(f"the bank's return file was not accepted: {result.problems}")
    demo.paid("bank withholding", result.paid_amount, result.paid)
    reasons: dict[str, int] = {}
    for _seq, _acct, code, meaning in result.failures:
        reasons[f"{code} {meaning}"] = reasons.get(f"{code} {meaning}", 0) + 1
    state.ctx.console.print(f"  out-file {batch.path.name}: {batch.items:,} debits, {money(batch.total)} yuan")
    state.ctx.console.print(f"  return {ret_path.name}: {result.paid:,} paid ({money(result.paid_amount)} yuan), "
                            f"{result.failed:,} refused: " + ", ".join(f"{k} ×{v}" for k, v in reasons.items()))
    state.add("bank withholding", "out-file", f"{batch.items:,} debits, {money(batch.total)} yuan → {batch.path}")
    state.add("bank withholding", "return file", f"{result.paid:,} paid ({money(result.paid_amount)} yuan), "
                                                 f"{result.failed:,} refused")
    state.add("bank withholding", "refusals by reason", ", ".join(f"{k} {v}" for k, v in reasons.items()) or "none")
    state.add("bank withholding", "same return file again", again.status + (f": {again.problems[0]}"
                                                                           if again.problems else ""))


def step_close(state: Any) -> None:
    """Late fees for today, one waived on approval, the daily close, the ledger's own check."""
    assert state.db is not None and state.company_id is not None
    cid = state.company_id
    demo: LedgerDemo = state.data["ledger"]
    policy = _policy(state)
    today = state.today
    lap = _Lap(state)
    with state.db.connection(company_id=cid) as conn:
        demo.late_fee = late_fees.run_late_fees(conn, cid, today, policy=policy, created_by="demo")
        conn.commit()
        lap("late fees")
        item = conn.execute(
            """SELECT id, account_id, amount - settled FROM receivable_item
                WHERE company_id = %s AND kind = 'late_fee' AND status = 'open' AND amount > settled
                ORDER BY amount DESC, id LIMIT 1""", [cid]).fetchone()
        if item is not None:  # the customer was in hospital: the supervisor forgives the late fee
            adj = corrections.request_adjustment(conn, cid, kind="waiver", account_id=item[1], amount=item[2],
                                                 reason="住院期间滞纳金减免 (in hospital)", entered_by="clerk-01",
                                                 item_id=item[0])
            corrections.approve(conn, cid, adj, decided_by="supervisor-01", policy=policy.allocation)
            demo.waived = item[2]
            conn.commit()
            lap("waiver")
        demo.close = close.close_day(conn, cid, today, channel="*", cashier="*", closed_by="demo")
        conn.commit()
        lap("daily close")
        check = balances.check(conn, cid)
        lap("ledger check")
        rows = close.trial_balance(conn, cid, today)
        lap("trial balance")
    if not check.ok:
        raise RuntimeError("the ledger's check found problems: " + "; ".join(check.problems[:5]))
    debit, credit = sum(r.debit for r in rows), sum(r.credit for r in rows)
    s = demo.close.summary
    lf = demo.late_fee
    state.ctx.console.print(f"  late fees {today}: {lf.bills:,} bills past due, {money(lf.amount)} yuan; "
                            f"waived {money(demo.waived)}")
    state.ctx.console.print(f"  day {today} closed: net cash to hand over {money(s['net_cash'])}; trial balance "
                            f"debit {money(debit)} = credit {money(credit)}")
    state.add("ledger", "late fees", f"{lf.bills:,} bills past their due date: {money(lf.amount)} yuan")
    state.add("ledger", "waiver (approved by a second person)", f"{money(demo.waived)} yuan")
    state.add("ledger", f"day {today} closed", f"{sum(p['count'] for p in s['payments']):,} payments; net cash "
                                               f"{money(s['net_cash'])} yuan")
    state.add("ledger", "consistency", f"{check.entries:,} entries, {check.postings:,} postings: "
                                       f"{'all consistent' if check.ok else 'PROBLEMS'}; trial balance "
                                       f"{'balanced' if debit == credit else 'NOT BALANCED'}")


# --- the figures a utility manager reads ------------------------------------------------------

_FIGURES_SQL = """
SELECT (SELECT coalesce(sum(total), 0) FROM bill WHERE company_id = %(c)s)::bigint,
       (SELECT count(*) FROM bill WHERE company_id = %(c)s),
       (SELECT coalesce(sum(amount), 0) FROM receivable_item WHERE company_id = %(c)s AND kind = 'late_fee')::bigint,
       (SELECT coalesce(sum(p.amount), 0) FROM payment p WHERE p.company_id = %(c)s
           AND NOT EXISTS (SELECT 1 FROM payment_reversal r WHERE r.payment_id = p.id))::bigint,
       (SELECT coalesce(sum(amount), 0) FROM adjustment WHERE company_id = %(c)s AND status = 'approved'
           AND kind IN ('waiver', 'write_off'))::bigint,
       (SELECT coalesce(-sum(amount), 0) FROM posting WHERE company_id = %(c)s AND account_code LIKE 'PREPAID:%%')::bigint,
       (SELECT coalesce(-sum(amount), 0) FROM posting WHERE company_id = %(c)s AND account_code LIKE 'SUSPENSE:%%')::bigint,
       (SELECT coalesce(sum(amount), 0) FROM posting WHERE company_id = %(c)s AND account_code LIKE 'AR:%%')::bigint,
       (SELECT coalesce(sum(balance), 0) FROM ledger_balance WHERE company_id = %(c)s AND account_code LIKE 'AR:%%')::bigint
     + (SELECT coalesce(sum(amount), 0) FROM ledger_balance_delta
         WHERE company_id = %(c)s AND account_code LIKE 'AR:%%')::bigint,
       (SELECT coalesce(sum(settled), 0) FROM receivable_item WHERE company_id = %(c)s AND kind = 'bill')::bigint,
       (SELECT count(DISTINCT account_id) FROM receivable_item
         WHERE company_id = %(c)s AND status = 'open' AND amount > settled)
"""


@dataclass(frozen=True, slots=True)
class Figures:
    """Money figures of a company, each from its own table (so they can check one another)."""

    billed: int  #: bill totals (``bill``)
    bills: int
    late_fees: int  #: late fees charged (``receivable_item``)
    collected: int  #: money received and not reversed (``payment``)
    adjustments: int  #: waivers and write-offs approved (``adjustment``)
    prepaid_credit: int  #: customers' prepaid credit (``PREPAID:*`` postings)
    suspense: int  #: money of unknown accounts (``SUSPENSE:*``)
    receivables: int  #: what customers owe (``AR:*`` postings)
    receivables_maintained: int  #: the same from the maintained balances
    bills_settled: int  #: of the bills' amounts, settled
    accounts_owing: int

    @property
    def collected_on_receivables(self) -> int:
        return self.collected - self.prepaid_credit - self.suspense

    @property
    def collection_rate(self) -> float:
        """Share of the amount billed that has been paid (回收率)."""
        return self.bills_settled / self.billed if self.billed else 0.0

    def reconciles(self) -> bool:
        """billed + late fees − collected − adjustments = receivables (journal and maintained)."""
        expect = self.billed + self.late_fees - self.collected_on_receivables - self.adjustments
        return expect == self.receivables == self.receivables_maintained


def ledger_figures(conn: Any, company_id: int) -> Figures:
    return Figures(*conn.execute(_FIGURES_SQL, {"c": company_id}).fetchone())
