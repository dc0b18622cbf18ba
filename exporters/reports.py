"""Management reports: collection rate, reading rate, arrears aging, non-revenue water, billing runs.

Every report is a function ``(conn, company_id, ...) -> list[Report]`` on a company-scoped
connection; a :class:`Report` is a title, columns and rows of plain values (money in minor
units, rates as fractions), printed by the CLI as a table, written as CSV by :func:`write_csv`,
and drawn by :func:`collection_chart` / :func:`nrw_chart` where a picture reads better.

* **collection** (回收率) by district and month: for the bills of each month of the window
  (``months`` back to ``period``), *billed* = bill receivables issued minus reversals (红冲),
  *collected* = what payments and prepaid credit settled of them (net of payment reversals),
  *adjusted* = waivers and write-offs, *open* = what is still owed; rate = collected / billed.
  Late fees are not in it. Everything "as of" the end of a business day (default: today), from
  allocations booked by then, so a past day's report never changes.
* **reading** (抄表率): per meter book and reader, the reading rate and the estimated share of the
  period (the figures of ``meterline readings figures``: :mod:`meterline.ingest.vee.figures`;
  the period-end windows of the validation rule file, the shipped one unless ``config`` is given).
* **aging**: receivable items open at the end of the day, by district, in buckets of days past
  the due date: not yet due, 0–30, 31–60, 61–90, over 90.
* **nrw** (产销差) per master meter: its consumption over the period against the sum of its
  direct sub-meters' (the same figures validation judges, :mod:`meterline.ingest.vee.trees`);
  non-revenue water = master − Σ subs, and its share of the master.
* **run**: the billing runs of the period (status, duration, accounts, accounts/s, bills,
  amount, tax, estimated share, reversed bills, skipped accounts) and the amount by component.
"""

from __future__ import annotations

import datetime as dt
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import psycopg

from meterline.exporters._files import Period, company_ref, csv_bytes, write_file
from meterline.ingest.vee import figures as F
from meterline.ingest.vee.config import VeeConfig, load_config
from meterline.ingest.vee.localtime import period_bounds
from meterline.ingest.vee.trees import tree_consumption
from meterline.ledger.balances import open_items_as_of

KINDS = ("collection", "reading", "aging", "nrw", "run")


@dataclass(frozen=True)
class Report:
    name: str          #: file stem: collection, aging, ...
    title: str
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    #: how each column is shown: "money" (minor units), "rate" (fraction), "int", "text", "volume" (base units)
    kinds: tuple[str, ...] = field(default=())

    def column(self, name: str) -> list[Any]:
        i = self.columns.index(name)
        return [r[i] for r in self.rows]


def _rate(num: int, den: int) -> float | None:
    return None if not den else num / den


def _today(conn: psycopg.Connection, company_id: int) -> dt.date:
    from zoneinfo import ZoneInfo

    tz = company_ref(conn, company_id).timezone
    return dt.datetime.now(ZoneInfo(tz)).date()


# -- collection rate ---------------------------------------------------------------------------
_COLLECTION = """
WITH items AS (
    SELECT i.id, i.amount, b.period, coalesce(d.code, '-') AS district
      FROM receivable_item i
      JOIN bill b ON b.id = i.bill_id
      JOIN journal_entry e ON e.id = i.entry_id
      JOIN account a ON a.id = i.account_id
      LEFT JOIN district d ON d.id = a.district_id
     WHERE i.company_id = %(c)s AND i.kind = 'bill' AND b.period = ANY(%(periods)s) AND e.booked_on <= %(day)s
)
SELECT it.district, it.period, count(*)::bigint AS bills, sum(it.amount)::bigint AS issued,
       coalesce(sum(x.reversed), 0)::bigint, coalesce(sum(x.collected), 0)::bigint, coalesce(sum(x.adjusted), 0)::bigint
  FROM items it
  LEFT JOIN LATERAL (
        SELECT sum(a.amount) FILTER (WHERE a.source = 'reversal') AS reversed,
               sum(a.amount) FILTER (WHERE a.source IN ('payment', 'prepaid', 'payment_reversal')) AS collected,
               sum(a.amount) FILTER (WHERE a.source IN ('waiver', 'write_off', 'recovery')) AS adjusted
          FROM allocation a JOIN journal_entry ae ON ae.id = a.entry_id
         WHERE a.item_id = it.id AND ae.booked_on <= %(day)s) x ON true
 GROUP BY 1, 2
 ORDER BY 1, 2
"""


def collection(conn: psycopg.Connection, company_id: int, period: str, *, months: int = 12,
               as_of: dt.date | None = None) -> list[Report]:
    company = company_ref(conn, company_id)
    last = Period.parse(period, company.timezone)
    periods = [last.shifted(-k, company.timezone).code for k in range(months - 1, -1, -1)]
    day = as_of or _today(conn, company_id)
    raw = conn.execute(_COLLECTION, {"c": company_id, "periods": periods, "day": day}).fetchall()
    rows: list[tuple[Any, ...]] = []
    totals: dict[str, list[int]] = {}
    for district, per, bills, issued, reversed_, collected, adjusted in raw:
        billed = issued - reversed_
        rows.append((district, per, bills, billed, collected, adjusted, billed - collected - adjusted,
                     _rate(collected, billed)))
        t = totals.setdefault(per, [0, 0, 0, 0])
        for i, v in enumerate((bills, billed, collected, adjusted)):
            t[i] += v
    for per in periods:
        if per in totals:
            bills, billed, collected, adjusted = totals[per]
            rows.append(("(all)", per, bills, billed, collected, adjusted, billed - collected - adjusted,
                         _rate(collected, billed)))
    return [Report("collection", f"collection rate (回收率) {company.code}, bills of {periods[0]}..{periods[-1]}, "
                                 f"as of {day.isoformat()}",
                   ("district", "month", "bills", "billed", "collected", "adjusted", "open", "rate"), rows,
                   ("text", "text", "int", "money", "money", "money", "money", "rate"))]


# -- reading rate ------------------------------------------------------------------------------
def reading(conn: psycopg.Connection, company_id: int, period: str, *, config: VeeConfig | None = None) -> list[Report]:
    company = company_ref(conn, company_id)
    Period.parse(period, company.timezone)
    figs = F.book_figures(conn, company_id, period, company.timezone, config or load_config())
    books = [(f.book, f.reader or "", f.meters, f.read, f.reading_rate, f.estimated, f.estimated_share, f.readings)
             for f in figs]
    readers = [(r["reader"] or "", r["books"], r["meters"], r["read"], r["reading_rate"], r["estimated"],
                r["estimated_share"]) for r in F.by_reader(figs)]
    return [Report("reading_books", f"reading rate (抄表率) by book {company.code} {period}",
                   ("book", "reader", "meters", "read", "reading_rate", "estimated", "estimated_share", "readings"),
                   books, ("text", "text", "int", "int", "rate", "int", "rate", "int")),
            Report("reading_readers", f"reading rate (抄表率) by reader {company.code} {period}",
                   ("reader", "books", "meters", "read", "reading_rate", "estimated", "estimated_share"),
                   readers, ("text", "int", "int", "int", "rate", "int", "rate"))]


# -- arrears aging -----------------------------------------------------------------------------
BUCKETS = ("not_due", "d0_30", "d31_60", "d61_90", "d90_plus")


def bucket(days_past_due: int) -> str:
    if days_past_due < 0:
        return "not_due"
    if days_past_due <= 30:
        return "d0_30"
    if days_past_due <= 60:
        return "d31_60"
    if days_past_due <= 90:
        return "d61_90"
    return "d90_plus"


def aging(conn: psycopg.Connection, company_id: int, *, as_of: dt.date | None = None) -> list[Report]:
    company = company_ref(conn, company_id)
    day = as_of or _today(conn, company_id)
    districts = dict(conn.execute(
        """SELECT a.id, coalesce(d.code, '-') FROM account a LEFT JOIN district d ON d.id = a.district_id
            WHERE a.company_id = %s""", [company_id]).fetchall())
    sums: dict[str, dict[str, int]] = {}
    accounts: dict[str, set[int]] = {}
    for it in open_items_as_of(conn, company_id, day):
        d = districts.get(it.account_id, "-")
        s = sums.setdefault(d, dict.fromkeys(BUCKETS, 0))
        s[bucket((day - it.due_date).days)] += it.open
        accounts.setdefault(d, set()).add(it.account_id)
    rows: list[tuple[Any, ...]] = []
    total = dict.fromkeys(BUCKETS, 0)
    for d in sorted(sums):
        s = sums[d]
        rows.append((d, len(accounts[d]), *(s[b] for b in BUCKETS), sum(s.values())))
        for b in BUCKETS:
            total[b] += s[b]
    all_accounts = set().union(*accounts.values()) if accounts else set()
    rows.append(("(all)", len(all_accounts), *(total[b] for b in BUCKETS), sum(total.values())))
    return [Report("aging", f"arrears aging {company.code} as of {day.isoformat()} (days past due)",
                   ("district", "accounts", *BUCKETS, "total"), rows,
                   ("text", "int", "money", "money", "money", "money", "money", "money"))]


# -- non-revenue water -------------------------------------------------------------------------
def nrw(conn: psycopg.Connection, company_id: int, period: str, *, config: VeeConfig | None = None) -> list[Report]:
    company = company_ref(conn, company_id)
    Period.parse(period, company.timezone)
    p = (config or load_config()).defaults
    start, end = period_bounds(period, company.timezone)
    trees = tree_consumption(conn, company_id, start, end, before_days=p.period_end_before_days,
                             after_days=p.period_end_after_days, reverse_max=p.reverse_max,
                             rollover_window=p.rollover_window)
    serials = dict(conn.execute("SELECT id, serial FROM meter WHERE company_id = %s AND id = ANY(%s)",
                                [company_id, list(trees.use)]).fetchall()) if trees.use else {}

    def root_and_level(m: int) -> tuple[int, int]:
        level, seen = 0, {m}
        while trees.parent.get(m) is not None and trees.parent[m] not in seen:
            m = trees.parent[m]  # type: ignore[assignment]
            seen.add(m)
            level += 1
        return m, level

    rows: list[tuple[Any, ...]] = []
    for master, subs in trees.children.items():
        root, level = root_and_level(master)
        mc = trees.use.get(master)
        sc = [trees.use.get(s) for s in subs]
        complete = mc is not None and all(c is not None for c in sc)
        total = sum(c for c in sc if c is not None)
        loss = mc - total if complete else None  # type: ignore[operator]
        rows.append((serials.get(root, str(root)), serials.get(master, str(master)), level, len(subs),
                     mc, total if complete else None, loss, _rate(loss, mc) if complete and mc else None,
                     "" if complete else "incomplete: a read is missing"))
    rows.sort(key=lambda r: (r[0], r[2], r[1]))
    return [Report("nrw", f"non-revenue water (产销差) per master meter {company.code} {period} (volume in litres)",
                   ("tree", "master", "level", "subs", "master_use", "subs_use", "nrw", "nrw_share", "note"), rows,
                   ("text", "text", "int", "int", "volume", "volume", "volume", "rate", "text"))]


# -- billing-run summary -----------------------------------------------------------------------
_RUNS = """
SELECT r.id, r.cycle, r.status, r.started_at, r.finished_at, r.accounts, r.amount, r.stats,
       count(b.id)::bigint AS bills,
       coalesce(sum(b.total) FILTER (WHERE b.status = 'issued'), 0)::bigint AS total,
       coalesce(sum(b.tax) FILTER (WHERE b.status = 'issued'), 0)::bigint AS tax,
       count(b.id) FILTER (WHERE b.estimated)::bigint AS estimated,
       count(b.id) FILTER (WHERE b.status = 'reversed')::bigint AS reversed
  FROM billing_run r LEFT JOIN bill b ON b.run_id = r.id
 WHERE r.company_id = %(c)s AND r.period = %(p)s
 GROUP BY r.id ORDER BY r.cycle, r.id
"""

_COMPONENTS = """
SELECT r.cycle, l.component, count(*)::bigint, sum(l.quantity)::bigint, sum(l.amount)::bigint, sum(l.tax)::bigint
  FROM billing_run r JOIN bill b ON b.run_id = r.id AND b.status = 'issued' JOIN bill_line l ON l.bill_id = b.id
 WHERE r.company_id = %(c)s AND r.period = %(p)s
 GROUP BY 1, 2 ORDER BY 1, 2
"""


def _skipped(stats: Any) -> int | None:
    if not isinstance(stats, dict):
        return None
    s = stats.get("skipped")
    if isinstance(s, int):
        return s
    if isinstance(s, dict):
        return sum(v for v in s.values() if isinstance(v, int))
    if isinstance(s, list):
        return len(s)
    return None


def run(conn: psycopg.Connection, company_id: int, period: str) -> list[Report]:
    company = company_ref(conn, company_id)
    Period.parse(period, company.timezone)
    rows = []
    for (rid, cycle, status, started, finished, accounts, amount, stats, bills, total, tax, est,
         reversed_) in conn.execute(_RUNS, {"c": company_id, "p": period}).fetchall():
        secs = (finished - started).total_seconds() if finished and started else None
        rows.append((rid, cycle, status, secs, accounts, (accounts / secs) if secs else None, bills, total, tax,
                     _rate(est, bills), reversed_, _skipped(stats)))
    comps = [tuple(r) for r in conn.execute(_COMPONENTS, {"c": company_id, "p": period}).fetchall()]
    return [Report("run", f"billing runs {company.code} {period}",
                   ("run", "cycle", "status", "seconds", "accounts", "accounts_per_s", "bills", "total", "tax",
                    "estimated_share", "reversed", "skipped"), rows,
                   ("int", "text", "text", "float", "int", "float", "int", "money", "money", "rate", "int", "int")),
            Report("run_components", f"billed by component {company.code} {period} (issued bills)",
                   ("cycle", "component", "lines", "quantity", "amount", "tax"), comps,
                   ("text", "text", "int", "volume", "money", "money"))]


# -- output ------------------------------------------------------------------------------------
def _csv_value(v: Any, kind: str) -> Any:
    if v is None:
        return ""
    if kind == "rate":
        return f"{v:.4f}"
    if kind == "float":
        return f"{v:.3f}"
    return v


def report_csv(report: Report) -> bytes:
    kinds = report.kinds or ("text",) * len(report.columns)
    return csv_bytes(report.columns, ([_csv_value(v, k) for v, k in zip(r, kinds)] for r in report.rows))


def write_csv(report: Report, path: Path) -> Path:
    return write_file(Path(path), report_csv(report))


def _figure():  # noqa: ANN202
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    import io

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # glyphs a font lacks are drawn as boxes, not an error
        fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    _figure().close(fig)
    return write_file(Path(path), buf.getvalue())


def collection_chart(report: Report, path: Path) -> Path:
    """Collection rate per month, one line per district and a bold one for all (PNG)."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    series: dict[str, list[tuple[str, float]]] = {}
    for district, month, *_rest, rate in report.rows:
        if rate is not None:
            series.setdefault(district, []).append((month, rate * 100))
    if len(series) > 9:  # too many lines to read: the whole and the four lowest districts of the last month
        last = {d: pts[-1][1] for d, pts in series.items() if d != "(all)"}
        keep = sorted(last, key=lambda d: (last[d], d))[:4]
        series = {d: series[d] for d in (*keep, "(all)") if d in series}
    months = sorted({m for pts in series.values() for m, _ in pts})
    for district in sorted(series, key=lambda d: (d == "(all)", d)):
        pts = dict(series[district])
        xs = [i for i, m in enumerate(months) if m in pts]
        ax.plot(xs, [pts[months[i]] for i in xs], marker="o",
                linewidth=3 if district == "(all)" else 1.2, label=district)
    ax.set_xticks(range(len(months)), months, rotation=45, ha="right")
    ax.set_ylabel("collected / billed (%)")
    ax.set_ylim(0, 105)
    ax.set_title("Collection rate by month")
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8, ncols=2)
    fig.tight_layout()
    return _save(fig, path)


def nrw_chart(report: Report, path: Path, top: int = 30) -> Path:
    """Non-revenue water share per master meter, the worst ``top`` (PNG)."""
    plt = _figure()
    rows = [r for r in report.rows if r[7] is not None]
    rows.sort(key=lambda r: (-r[7], r[1]))
    rows = rows[:top][::-1]
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.3 * len(rows) + 1)))
    ax.barh([f"{r[1]} ({r[0]})" if r[0] != r[1] else r[1] for r in rows], [r[7] * 100 for r in rows],
            color=["#c0392b" if r[7] > 0.25 else "#2e86c1" for r in rows])
    ax.set_xlabel("non-revenue water (% of master consumption)")
    ax.set_title("Non-revenue water by master meter")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def build(conn: psycopg.Connection, company_id: int, kind: str, period: str, *, as_of: dt.date | None = None,
          config: VeeConfig | None = None, months: int = 12) -> list[Report]:
    if kind == "collection":
        return collection(conn, company_id, period, months=months, as_of=as_of)
    if kind == "reading":
        return reading(conn, company_id, period, config=config)
    if kind == "aging":
        return aging(conn, company_id, as_of=as_of)
    if kind == "nrw":
        return nrw(conn, company_id, period, config=config)
    if kind == "run":
        return run(conn, company_id, period)
    raise ValueError(f"unknown report {kind!r} (one of {', '.join(KINDS)})")


def report_all(conn: psycopg.Connection, company_id: int, period: str, out_dir: Path, *,
               as_of: dt.date | None = None, config: VeeConfig | None = None,
               kinds: Sequence[str] = KINDS) -> list[Path]:
    """Every report of ``period`` as CSV (and the two charts as PNG) under ``out_dir/reports/``."""
    company = company_ref(conn, company_id)
    base = Path(out_dir) / "reports"
    paths = []
    for kind in kinds:
        for rep in build(conn, company_id, kind, period, as_of=as_of, config=config):
            paths.append(write_csv(rep, base / f"{company.code}_{period}_{rep.name}.csv"))
            if rep.name == "collection":
                paths.append(collection_chart(rep, base / f"{company.code}_{period}_collection.png"))
            elif rep.name == "nrw":
                paths.append(nrw_chart(rep, base / f"{company.code}_{period}_nrw.png"))
    return paths
