"""Printable payment notices (缴费通知单): one self-contained HTML page per account and period.

:func:`export_notices` writes ``notices/<company>_<period>/<account code>.html`` for every
account with an issued bill in the period: the company, the account and its address, the
period's readings per meter (opening and closing register, estimated reads marked), the
consumption and charges by component and tier, this period's amount, tax and total, what the
account's prepaid credit already covered, the arrears (receivable items of earlier bills and
late fees still open) and the total due with its due date. Print CSS (A5, no colours needed);
no scripts, fonts or images are fetched, so the page prints the same anywhere.

Readings: a billing run may record them on its lines, the line's source (``bill_line_sourced``) with ``opening``
and ``closing`` objects (``{"meter_id", "ts", "value", "estimated"}``; a bare number is taken
as the value). Where no line carries them, each meter's effective read nearest the period's
start and end (within ``read_window_days``; ``reading_effective``) is shown; where there is
none, the row says so. Nothing fails for want of readings.

Re-runnable: arrears and the amount still due are those at the end of the business day the
bill was posted (its journal entry; the period's last day for a bill not posted), computed from
allocations booked by then (:func:`meterline.ledger.balances.open_items_as_of`), so payments
and late fees that come later do not change a notice once written; the page carries no time of
writing. Personal data: the phone is printed as ``disclosure`` says (default: not at all).
"""

from __future__ import annotations

import datetime as dt
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg.rows import dict_row

from meterline.exporters._files import CompanyRef, Period, company_ref, money, scaled, unit_price_text, write_file
from meterline.ledger.balances import open_items_as_of
from meterline.store.personal import Disclosure, KeyRing, default_keyring

_BILLS = """
SELECT b.id, b.account_id, b.period, b.period_start, b.period_end, b.consumption, b.amount, b.tax, b.total,
       b.due_date, b.estimated, a.code AS account, a.address, mb.code AS book, cu.name AS customer_name,
       cu.phone, b.period_end AS as_of
  FROM bill b
  JOIN account a ON a.id = b.account_id
  JOIN customer cu ON cu.id = a.customer_id
  LEFT JOIN meter_book mb ON mb.id = a.book_id
 WHERE b.company_id = %(c)s AND b.period = %(p)s AND b.status = 'issued'
 ORDER BY a.code, b.id
"""

_LINES = """
SELECT l.bill_id, l.line_no, l.component, l.tier, l.quantity, l.unit_price, l.price_scale, l.amount, l.tax, l.source
  FROM bill_line_sourced l JOIN bill b ON b.id = l.bill_id
 WHERE b.company_id = %(c)s AND b.period = %(p)s AND b.status = 'issued'
 ORDER BY l.bill_id, l.line_no
"""

_READS = """
SELECT m.id, m.account_id, m.serial, m.medium, m.multiplier,
       s.ts AS open_ts, s.value AS open_value, s.estimated AS open_est,
       e.ts AS close_ts, e.value AS close_value, e.estimated AS close_est
  FROM meter m
  LEFT JOIN LATERAL (SELECT r.ts, r.value, r.estimated FROM reading_effective r
                      WHERE r.meter_id = m.id AND r.quantity = m.quantity
                        AND r.ts BETWEEN %(s)s - %(w)s AND %(s)s + %(w)s
                      ORDER BY abs(extract(epoch FROM r.ts - %(s)s)), r.estimated, r.ts LIMIT 1) s ON true
  LEFT JOIN LATERAL (SELECT r.ts, r.value, r.estimated FROM reading_effective r
                      WHERE r.meter_id = m.id AND r.quantity = m.quantity
                        AND r.ts BETWEEN %(e)s - %(w)s AND %(e)s + %(w)s
                      ORDER BY abs(extract(epoch FROM r.ts - %(e)s)), r.estimated, r.ts LIMIT 1) e ON true
 WHERE m.company_id = %(c)s AND m.account_id = ANY(%(accounts)s)
 ORDER BY m.account_id, m.serial
"""

KIND_ZH = {"bill": "水费", "late_fee": "滞纳金", "charge": "费用", "reinstated": "恢复欠费"}


@dataclass(frozen=True, slots=True)
class Read:
    serial: str
    medium: str
    open_ts: dt.datetime | None
    open_value: int | None
    open_est: bool
    close_ts: dt.datetime | None
    close_value: int | None
    close_est: bool


@dataclass(frozen=True, slots=True)
class NoticeExport:
    directory: Path
    files: list[Path]
    total_due: int  #: minor units over every notice


def _unit(component: str, medium: str) -> tuple[str, int]:
    """Display unit and base units per display unit of a bill line's quantity."""
    if component in ("heating", "area"):
        return "m²", 100
    if medium == "heat" or medium == "cooling":
        return "kWh", 1000
    return "m³", 1000


def _source_reads(lines: list[dict[str, Any]]) -> dict[str, Any] | None:
    for ln in lines:
        src = ln["source"] or {}
        if isinstance(src, dict) and "closing" in src:
            return src
    return None


def _as_read(obj: Any) -> tuple[dt.datetime | None, int | None, bool]:
    if obj is None:
        return None, None, False
    if isinstance(obj, (int, float)):
        return None, int(obj), False
    if isinstance(obj, dict):
        ts = obj.get("ts")
        if isinstance(ts, str):
            try:
                ts = dt.datetime.fromisoformat(ts)
            except ValueError:
                ts = None
        value = obj.get("value")
        return (ts if isinstance(ts, dt.datetime) else None, int(value) if value is not None else None,
                bool(obj.get("estimated", False)))
    return None, None, False


def notice_data(conn: psycopg.Connection, company_id: int, period: str, *, read_window_days: int = 3,
                disclosure: Disclosure = Disclosure.NONE, keyring: KeyRing | None = None) -> list[dict[str, Any]]:
    """One dict per account with an issued bill in ``period``: what its notice shows (amounts in minor units)."""
    company = company_ref(conn, company_id)
    per = Period.parse(period, company.timezone)
    params = {"c": company_id, "p": period}
    with conn.cursor(row_factory=dict_row) as cur:
        bills = cur.execute(_BILLS, params).fetchall()
        # the business day each bill was posted: probed by its idempotency key, in one statement
        # (a join here was planned as a scan per bill when statistics lag behind a fresh run)
        posted = dict(conn.execute(
            "SELECT idempotency_key, booked_on FROM journal_entry WHERE company_id = %s AND idempotency_key = ANY(%s)",
            [company_id, [f"bill:{b['id']}" for b in bills]]).fetchall()) if bills else {}
        for b in bills:
            b["as_of"] = posted.get(f"bill:{b['id']}", b["as_of"])
        lines = cur.execute(_LINES, params).fetchall()
        accounts = sorted({b["account_id"] for b in bills})
        reads = cur.execute(_READS, {"c": company_id, "accounts": accounts, "s": per.start, "e": per.end,
                                     "w": dt.timedelta(days=read_window_days)}).fetchall() if accounts else []
    by_bill: dict[int, list[dict[str, Any]]] = {}
    for ln in lines:
        by_bill.setdefault(ln["bill_id"], []).append(ln)
    meters: dict[int, list[dict[str, Any]]] = {}
    for r in reads:
        meters.setdefault(r["account_id"], []).append(r)
    ring = keyring if keyring is not None or disclosure is Disclosure.NONE else default_keyring()

    grouped: dict[int, list[dict[str, Any]]] = {}
    for b in bills:
        grouped.setdefault(b["account_id"], []).append(b)
    # one as-of day per account (its latest bill's posting day); items fetched per distinct day
    days: dict[dt.date, list[int]] = {}
    for account_id, own in grouped.items():
        days.setdefault(max(b["as_of"] for b in own), []).append(account_id)
    items: dict[int, list[Any]] = {}
    for day, ids in sorted(days.items()):
        for it in open_items_as_of(conn, company_id, day, ids):
            items.setdefault(it.account_id, []).append(it)
    periods = dict(conn.execute(
        """SELECT i.id, b.period FROM receivable_item i JOIN bill b ON b.id = i.bill_id
            WHERE i.company_id = %s AND i.account_id = ANY(%s) AND i.bill_id IS NOT NULL""",
        [company_id, accounts]).fetchall()) if accounts else {}

    out = []
    for account_id in sorted(grouped, key=lambda a: grouped[a][0]["account"]):
        own = grouped[account_id]
        first = own[0]
        bill_ids = {b["id"] for b in own}
        own_lines = [ln for b in own for ln in by_bill.get(b["id"], [])]
        medium = (meters.get(account_id) or [{"medium": "water"}])[0]["medium"]
        src = _source_reads(own_lines)
        read_rows: list[Read] = []
        if src is not None:
            ots, oval, oest = _as_read(src.get("opening"))
            cts, cval, cest = _as_read(src.get("closing"))
            serial = str(src.get("serial") or (meters.get(account_id) or [{"serial": ""}])[0]["serial"])
            read_rows.append(Read(serial, medium, ots, oval, oest, cts, cval, cest))
        else:
            for m in meters.get(account_id, []):
                read_rows.append(Read(m["serial"], m["medium"], m["open_ts"], m["open_value"], bool(m["open_est"]),
                                      m["close_ts"], m["close_value"], bool(m["close_est"])))
        acc_items = items.get(account_id, [])
        this_open = sum(i.open for i in acc_items if i.bill_id in bill_ids and i.kind == "bill")
        arrears = [{"kind": i.kind, "period": periods.get(i.id), "due_date": i.due_date, "open": i.open}
                   for i in acc_items if not (i.bill_id in bill_ids and i.kind == "bill")]
        total = sum(b["total"] for b in own)
        phone = None
        if first["phone"] and disclosure is not Disclosure.NONE and ring is not None:
            phone = ring.reveal(first["phone"], disclosure, company_id=company_id, field="phone")
        out.append({
            "account": first["account"], "address": first["address"], "book": first["book"],
            "customer_name": first["customer_name"], "phone": phone, "period": period,
            "period_start": min(b["period_start"] for b in own), "period_end": max(b["period_end"] for b in own),
            "as_of": max(b["as_of"] for b in own), "due_date": min(b["due_date"] for b in own),
            "estimated": any(b["estimated"] for b in own), "consumption": sum(b["consumption"] for b in own),
            "medium": medium, "reads": read_rows, "lines": own_lines,
            "amount": sum(b["amount"] for b in own), "tax": sum(b["tax"] for b in own), "total": total,
            "covered": total - this_open, "this_due": this_open, "arrears": arrears,
            "arrears_total": sum(a["open"] for a in arrears), "total_due": this_open + sum(a["open"] for a in arrears),
        })
    return out


_CSS = """
@page { size: A5; margin: 10mm; }
body { font-family: "Noto Sans CJK SC", "Source Han Sans SC", "Microsoft YaHei", "PingFang SC", sans-serif;
       font-size: 10pt; color: #000; margin: 0; }
h1 { font-size: 14pt; text-align: center; margin: 0 0 2mm; }
h2 { font-size: 10.5pt; margin: 4mm 0 1mm; border-bottom: 0.3mm solid #000; }
table { width: 100%; border-collapse: collapse; }
th, td { border: 0.2mm solid #444; padding: 0.8mm 1.2mm; text-align: left; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
.meta td { border: none; padding: 0.4mm 1mm; }
.due { font-size: 12pt; font-weight: bold; }
.note { font-size: 8pt; margin-top: 3mm; }
@media print { .page { page-break-after: always; } }
"""


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def render_notice(n: dict[str, Any], company: CompanyRef) -> str:
    """The notice page for one account (UTF-8 HTML text; the same input gives the same text)."""
    mu = company.minor_units
    zone = company.timezone
    m = lambda x: money(x, mu)  # noqa: E731
    reads = []
    for r in n["reads"]:
        use = None if r.open_value is None or r.close_value is None else r.close_value - r.open_value

        def when(ts: dt.datetime | None) -> str:
            return "" if ts is None else ts.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d")

        reads.append(
            f"<tr><td>{_e(r.serial)}</td><td>{when(r.open_ts)}</td>"
            f"<td class=n>{'' if r.open_value is None else scaled(r.open_value, 3)}{'（估）' if r.open_est else ''}</td>"
            f"<td>{when(r.close_ts)}</td>"
            f"<td class=n>{'' if r.close_value is None else scaled(r.close_value, 3)}{'（估）' if r.close_est else ''}</td>"
            f"<td class=n>{'' if use is None else scaled(use, 3)}</td></tr>")
    if not reads:
        reads.append("<tr><td colspan=6>本期读数未记录 no readings recorded for this period</td></tr>")
    charges = []
    for ln in n["lines"]:
        unit, per = _unit(ln["component"], n["medium"])
        qty = "" if not ln["quantity"] else f"{scaled(ln['quantity'], len(str(per)) - 1)} {unit}"
        charges.append(
            f"<tr><td>{_e(ln['component'])}</td><td class=n>{'' if ln['tier'] is None else ln['tier']}</td>"
            f"<td class=n>{_e(qty)}</td>"
            f"<td class=n>{'' if not ln['unit_price'] else unit_price_text(ln['unit_price'], ln['price_scale'], mu)}</td>"
            f"<td class=n>{m(ln['amount'])}</td><td class=n>{m(ln['tax'])}</td></tr>")
    arrears = "".join(
        f"<tr><td>{_e(KIND_ZH.get(a['kind'], a['kind']))} {_e(a['kind'])}</td><td>{_e(a['period'] or '')}</td>"
        f"<td>{a['due_date'].isoformat()}</td><td class=n>{m(a['open'])}</td></tr>" for a in n["arrears"])
    arrears_block = (f"<h2>往期欠费 Arrears</h2><table><tr><th>项目 item</th><th>账期 period</th><th>到期 due</th>"
                     f"<th class=n>未缴 open</th></tr>{arrears}</table>") if n["arrears"] else ""
    phone = f"<tr><td>电话 Phone</td><td>{_e(n['phone'])}</td></tr>" if n["phone"] else ""
    unit, per = _unit("", n["medium"])
    return f"""<!DOCTYPE html>
<html lang="zh-CN">
<head>
<meta charset="utf-8">
<title>{_e(company.name)} 缴费通知单 {_e(n['account'])} {_e(n['period'])}</title>
<style>{_CSS}</style>
</head>
<body>
<div class="page">
<h1>{_e(company.name)}<br>缴费通知单 Payment notice</h1>
<table class="meta">
<tr><td>户号 Account</td><td>{_e(n['account'])}</td><td>账期 Period</td><td>{_e(n['period'])} ({n['period_start'].isoformat()} – {n['period_end'].isoformat()})</td></tr>
<tr><td>户名 Name</td><td>{_e(n['customer_name'])}</td><td>抄表册 Book</td><td>{_e(n['book'] or '')}</td></tr>
<tr><td>地址 Address</td><td colspan=3>{_e(n['address'])}</td></tr>
{phone}</table>
<h2>本期读数 Readings</h2>
<table><tr><th>表号 meter</th><th>上期日期 from</th><th class=n>上期读数 opening</th><th>本期日期 to</th><th class=n>本期读数 closing</th><th class=n>用量 use ({unit})</th></tr>
{''.join(reads)}</table>
<h2>本期费用 Charges (用量 consumption {scaled(n['consumption'], len(str(per)) - 1)} {unit}{'，估抄 estimated' if n['estimated'] else ''})</h2>
<table><tr><th>项目 component</th><th class=n>阶梯 tier</th><th class=n>数量 quantity</th><th class=n>单价 price</th><th class=n>金额 amount</th><th class=n>税额 tax</th></tr>
{''.join(charges)}
<tr><td colspan=4>合计 Total</td><td class=n>{m(n['amount'])}</td><td class=n>{m(n['tax'])}</td></tr></table>
{arrears_block}
<h2>应缴 Amount due</h2>
<table class="meta">
<tr><td>本期应缴 This period</td><td class=n>{m(n['total'])}</td></tr>
<tr><td>预存抵扣及已缴 Covered by credit / paid</td><td class=n>{m(n['covered'])}</td></tr>
<tr><td>往期欠费 Arrears</td><td class=n>{m(n['arrears_total'])}</td></tr>
<tr class="due"><td>合计应缴 Total due ({_e(company.currency)})</td><td class=n>{m(n['total_due'])}</td></tr>
<tr><td>缴费截止日 Due date</td><td class=n>{n['due_date'].isoformat()}</td></tr>
</table>
<p class="note">截至 {n['as_of'].isoformat()} 营业日终的账务。逾期未缴将按规定收取滞纳金。As of the end of business day {n['as_of'].isoformat()}; late fees apply after the due date.</p>
</div>
</body>
</html>
"""


def export_notices(conn: psycopg.Connection, company_id: int, period: str, out_dir: Path, *,
                   disclosure: Disclosure = Disclosure.NONE, keyring: KeyRing | None = None,
                   read_window_days: int = 3) -> NoticeExport:
    """Write one notice per account under ``out_dir/notices/<company>_<period>/``; stale pages of
    accounts no longer billed in the period (a reversed bill) are removed."""
    company = company_ref(conn, company_id)
    data = notice_data(conn, company_id, period, read_window_days=read_window_days, disclosure=disclosure,
                       keyring=keyring)
    directory = Path(out_dir) / "notices" / f"{company.code}_{period}"
    files = []
    for n in data:
        name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in n["account"]) + ".html"
        files.append(write_file(directory / name, render_notice(n, company).encode("utf-8")))
    keep = {f.name for f in files}
    if directory.exists():
        for old in directory.glob("*.html"):
            if old.name not in keep:
                old.unlink()
    return NoticeExport(directory, files, sum(n["total_due"] for n in data))
