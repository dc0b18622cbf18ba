"""Benchmark: the ledger — bills and payments posted in bulk, the journal's balance check, and
one API payment under concurrent load — each against a naive baseline in the same run.

    python benchmarks/bench_ledger.py [--n 1000000] [--sample 5000] [--repeat 3] [--workers 2]
                                      [--api-requests 4000] [--concurrency 200] [--load wrk|asyncio|httpx] [--skip-api]
                                      [--api-batch both|on|off]

Builds a fresh database with ``--n`` customer accounts, then, ``--repeat`` times (medians printed):

* bills: a billing run of ``--n`` bills (two lines each) posted by ``ledger.bills.post_bills``
  (one statement: entries, postings, receivable items; then prepaid credit applied);
* payments: ``--n`` bank payments (70% pay the bill, 20% part of it, 10% more than it: credit)
  recorded, allocated and posted by ``ledger.payments.record_payments`` in chunks of 50,000, in
  one transaction;
* with ``--workers`` N > 1 (default 2), another billing run and its ``--n`` payments through
  ``ledger.payments.record_payments_parallel``: N connections on disjoint account sets, each
  committing its part.

Baselines on ``--sample`` rows, same database: the naive way — one transaction per bill or
payment with a statement per row (select the open items, allocate in Python, insert the entry,
its postings, the payment, the allocations, update the items) — and the library's own one-payment
path (``record_payment`` per call, as the API does).

Journal check: entries of three postings inserted in bulk into the journal as migrated (one
statement-level check per INSERT) and into a copy with the 0001 design (a deferred row trigger
re-summing the entry per posting, plus the per-row foreign keys).

API: ``meterline api serve`` in a subprocess, with group commit of payments (``[api]
batch_payments``) and without (a transaction per payment, the baseline); a second process
(``--load wrk``: wrk with a Lua script, the default when wrk is installed; ``--load asyncio``:
keep-alive connections on plain asyncio streams, the default otherwise; ``--load httpx``: an
async httpx client, which saturates before the server does) sends ``--api-requests`` bank
payments (wrk: for ``--wrk-seconds``), each a new transaction id, ``--concurrency`` at a time,
to each server in turn; per-request latency median / p90 / p99 of the committed payments and
payments/s, and at concurrency 1 for reference. The ceiling (``--api-ceiling``, on by default): the
same web stack without the database (``_api_ceiling.py``: FastAPI and uvicorn with the API's
workers, its request and response models and key check, answering at once) under the same load —
no API payment can be faster — and the payments/s a 20 ms median needs at that concurrency.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_server_args, fresh_database, median_rate, server  # noqa: E402

from meterline.ledger.allocation import OpenItem, allocate  # noqa: E402
from meterline.ledger.bills import post_bills  # noqa: E402
from meterline.ledger.payments import (PaymentIn, record_payment, record_payments,  # noqa: E402
                                       record_payments_parallel)
from meterline.ledger.policy import AllocationPolicy  # noqa: E402

UTC = dt.timezone.utc
POLICY = AllocationPolicy()


# -- data ----------------------------------------------------------------------------------------

def make_company(dsn: str, n: int) -> int:
    with psycopg.connect(dsn, autocommit=True) as c:
        cid = c.execute("INSERT INTO company (code, name) VALUES ('bench', '基准水司') RETURNING id").fetchone()[0]
        c.execute("INSERT INTO use_type (company_id, code, name) VALUES (%s, 'RES', '居民')", [cid])
        c.execute("""INSERT INTO customer (company_id, code, name)
                     SELECT %s, 'C' || g, '客户' || g FROM generate_series(1, %s) g""", [cid, n])
        c.execute("""INSERT INTO account (company_id, code, customer_id, address, use_type, tariff_id)
                     SELECT %s, 'A' || substr(code, 2), id, '人民路' || substr(code, 2) || '号', 'RES', 'T1'
                       FROM customer WHERE company_id = %s ORDER BY id""", [cid, cid])
        c.execute("ANALYZE")
    return cid


_run_no = iter(range(1, 10_000))


def make_bills(dsn: str, cid: int, limit: int | None = None) -> int:
    """A billing run with one bill (water + sewage) for every account (or the first ``limit``)."""
    k = next(_run_no)
    period = f"{2000 + k // 12:04d}-{k % 12 + 1:02d}"  # one per run: an account has one standing bill a period
    with psycopg.connect(dsn, autocommit=True) as c:
        run = c.execute("INSERT INTO billing_run (company_id, cycle, period, status) VALUES (%s, 'M', %s, 'completed') RETURNING id",
                        [cid, period]).fetchone()[0]
        c.execute(
            """INSERT INTO bill (company_id, run_id, account_id, period, period_start, period_end, consumption,
                                 amount, tax, total, due_date)
               SELECT %(c)s, %(run)s, id, %(period)s, DATE '2026-03-01', DATE '2026-03-31', 10000,
                      1000 + id %% 5000 + 300, 0, 1000 + id %% 5000 + 300, DATE '2026-04-20'
                 FROM account WHERE company_id = %(c)s AND (%(lim)s::int IS NULL OR id <= (SELECT min(id) FROM account WHERE company_id = %(c)s) + %(lim)s - 1)""",
            {"c": cid, "run": run, "lim": limit, "period": period})
        c.execute(
            """INSERT INTO bill_line (bill_id, line_no, company_id, component, quantity, amount)
               SELECT id, l, %s, CASE l WHEN 1 THEN 'water' ELSE 'sewage' END, 1000,
                      CASE l WHEN 1 THEN amount - 300 ELSE 300 END
                 FROM bill, generate_series(1, 2) l WHERE run_id = %s""", [cid, run])
        c.execute("ANALYZE bill; ANALYZE bill_line")
    return run


def payments_for(dsn: str, cid: int, run: int, tag: str, rnd: random.Random) -> list[PaymentIn]:
    with psycopg.connect(dsn) as c:
        rows = c.execute("SELECT account_id, total FROM bill WHERE run_id = %s ORDER BY account_id", [run]).fetchall()
    at = dt.datetime.now(UTC)
    out = []
    for account_id, total in rows:
        x = rnd.random()
        amount = total if x < 0.7 else (max(1, total // 2) if x < 0.9 else total + 500)
        out.append(PaymentIn(f"{tag}-{account_id}", account_id, amount, at, cashier="icbc", tender="transfer",
                             evidence={"bank": "icbc"}))
    return out


# -- naive baselines ---------------------------------------------------------------------------

def naive_post_bills(conn: psycopg.Connection, cid: int, run: int) -> int:
    bills = conn.execute("SELECT id, account_id, total, due_date FROM bill WHERE run_id = %s", [run]).fetchall()
    conn.commit()
    for bill_id, account_id, total, due in bills:
        lines = conn.execute("SELECT component, amount FROM bill_line WHERE bill_id = %s ORDER BY line_no", [bill_id]).fetchall()
        entry = conn.execute(
            "INSERT INTO journal_entry (company_id, booked_on, kind, ref_type, ref_id, idempotency_key) VALUES (%s, %s, 'bill', 'bill', %s, %s) RETURNING id",
            [cid, dt.date(2026, 4, 1), bill_id, f"bill:{bill_id}"]).fetchone()[0]
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO posting (entry_id, line_no, company_id, account_code, amount) VALUES (%s, %s, %s, %s, %s)",
                            [(entry, 1, cid, f"AR:{account_id}", total)] +
                            [(entry, n, cid, f"REV:{comp}", -amt) for n, (comp, amt) in enumerate(lines, start=2)])
        conn.execute("INSERT INTO receivable_item (company_id, account_id, kind, bill_id, entry_id, amount, due_date) VALUES (%s, %s, 'bill', %s, %s, %s, %s)",
                     [cid, account_id, bill_id, entry, total, due])
        conn.commit()
    return len(bills)


def naive_payments(conn: psycopg.Connection, cid: int, payments: list[PaymentIn]) -> None:
    for p in payments:
        items = [OpenItem(*r) for r in conn.execute(
            """SELECT id, kind, bill_id, due_date, amount - settled FROM receivable_item
                WHERE account_id = %s AND status = 'open' AND settled < amount ORDER BY id FOR UPDATE""",
            [p.account_id]).fetchall()]
        allocs, rest = allocate(p.amount, items, POLICY)
        entry = conn.execute(
            """INSERT INTO journal_entry (company_id, booked_on, kind, idempotency_key, channel, cashier)
               VALUES (%s, %s, 'payment', %s, 'bank', 'icbc') RETURNING id""",
            [cid, p.received_at.date(), f"pay:bank:{p.external_id}"]).fetchone()[0]
        postings = [(entry, 1, cid, "CASH:bank:icbc", p.amount)]
        if p.amount - rest:
            postings.append((entry, 2, cid, f"AR:{p.account_id}", -(p.amount - rest)))
        if rest:
            postings.append((entry, 3, cid, f"PREPAID:{p.account_id}", -rest))
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO posting (entry_id, line_no, company_id, account_code, amount) VALUES (%s, %s, %s, %s, %s)", postings)
        pid = conn.execute(
            """INSERT INTO payment (company_id, channel, external_id, account_id, amount, received_at, booked_on, entry_id, cash_account)
               VALUES (%s, 'bank', %s, %s, %s, %s, %s, %s, 'CASH:bank:icbc') RETURNING id""",
            [cid, p.external_id, p.account_id, p.amount, p.received_at, p.received_at.date(), entry]).fetchone()[0]
        for item_id, amount in allocs:
            conn.execute("INSERT INTO allocation (company_id, entry_id, item_id, payment_id, source, amount) VALUES (%s, %s, %s, %s, 'payment', %s)",
                         [cid, entry, item_id, pid, amount])
            conn.execute("UPDATE receivable_item SET settled = settled + %s WHERE id = %s", [amount, item_id])
        conn.commit()


# -- journal check design ------------------------------------------------------------------------

OLD_DESIGN = """
CREATE TABLE bench_entry (LIKE journal_entry INCLUDING DEFAULTS INCLUDING IDENTITY);
ALTER TABLE bench_entry ADD PRIMARY KEY (id), ADD FOREIGN KEY (company_id) REFERENCES company(id);
CREATE TABLE bench_posting (
    entry_id bigint NOT NULL REFERENCES bench_entry(id), line_no smallint NOT NULL,
    company_id integer NOT NULL REFERENCES company(id), account_code text NOT NULL,
    amount bigint NOT NULL CHECK (amount <> 0), PRIMARY KEY (entry_id, line_no));
CREATE INDEX ON bench_posting (account_code, entry_id);
CREATE FUNCTION bench_check_entry() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE total bigint; n integer;
BEGIN
    SELECT coalesce(sum(amount), 0), count(*) INTO total, n FROM bench_posting WHERE entry_id = NEW.entry_id;
    IF total <> 0 OR n < 2 THEN RAISE EXCEPTION 'unbalanced'; END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER bench_posting_balanced AFTER INSERT ON bench_posting DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION bench_check_entry();
"""


def journal_insert(dsn: str, cid: int, n: int, entry_table: str, posting_table: str) -> None:
    with psycopg.connect(dsn) as c:
        base = c.execute(f"SELECT coalesce(max(id), 0) + 1000000 FROM {entry_table}").fetchone()[0]
        c.execute(f"""INSERT INTO {entry_table} (id, company_id, booked_on, kind)
                      SELECT g, %s, DATE '2026-04-01', 'bench' FROM generate_series(%s, %s) g""", [cid, base, base + n - 1])
        c.execute(f"""INSERT INTO {posting_table} (entry_id, line_no, company_id, account_code, amount)
                      SELECT g, l, %s, CASE l WHEN 1 THEN 'AR:' || (g %% 100000) WHEN 2 THEN 'REV:water' ELSE 'TAX:vat' END,
                             CASE l WHEN 1 THEN 300 ELSE -150 END
                        FROM generate_series(%s, %s) g, generate_series(1, 3) l""", [cid, base, base + n - 1])
        c.commit()


# -- API load ----------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _load(url: str, key: str, n: int, concurrency: int, accounts: int, tag: str) -> dict:
    import httpx

    latencies: list[float] = []
    errors: dict[int, int] = {}
    counter = iter(range(n))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60, headers={"X-API-Key": key}) as client:
        async def worker() -> None:
            for i in counter:
                body = {"transaction_id": f"{tag}-{i}", "account_code": f"A{random.randint(1, accounts)}", "amount": 100}
                t = time.perf_counter()
                r = await client.post("/v1/bank/payments", json=body)
                elapsed = time.perf_counter() - t
                if r.status_code == 200:
                    latencies.append(elapsed)
                else:
                    errors[r.status_code] = errors.get(r.status_code, 0) + 1
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return _summary(latencies, errors, wall)


async def _load_raw(url: str, key: str, n: int, concurrency: int, accounts: int, tag: str) -> dict:
    """The same load over plain asyncio streams: one keep-alive connection per worker, each request
    written at once. httpx's pool spends more CPU per request than the server does (measured: both
    servers ~90 payments/s under httpx at 200 concurrent, 300 and 2,200/s under wrk)."""
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    errors: dict[int, int] = {}
    counter = iter(range(n))

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            for i in counter:
                body = json.dumps({"transaction_id": f"{tag}-{i}", "account_code": f"A{random.randint(1, accounts)}",
                                   "amount": 100}).encode()
                t = time.perf_counter()
                writer.write(b"POST /v1/bank/payments HTTP/1.1\r\nHost: %s\r\nX-API-Key: %s\r\n"
                             b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                             % (host.encode(), key.encode(), len(body), body))
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                await reader.readexactly(length)
                elapsed = time.perf_counter() - t
                if status == 200:
                    latencies.append(elapsed)
                else:
                    errors[status] = errors.get(status, 0) + 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    return _summary(latencies, errors, wall)


def _summary(latencies: list[float], errors: dict[int, int], wall: float) -> dict:
    """Committed payments, errors by status, latency median / p90 / p99 (ms) and payments/s of a load run."""
    latencies = sorted(latencies)
    q = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else float("nan")  # noqa: E731
    return {"ok": len(latencies), "errors": errors, "median_ms": q(0.5), "p90_ms": q(0.9), "p99_ms": q(0.99),
            "rps": len(latencies) / wall}


def load_generator(argv: list[str]) -> None:
    kind, url, key, n, concurrency, accounts, tag = argv
    load = _load_raw if kind == "asyncio" else _load
    print(json.dumps(asyncio.run(load(url, key, int(n), int(concurrency), int(accounts), tag))))


WRK_LUA = """
local n = 0
local key = os.getenv("BENCH_KEY")
local accounts = tonumber(os.getenv("BENCH_ACCOUNTS"))
local tag = os.getenv("BENCH_TAG")
local threads = {}
function setup(thread) thread:set("tid", #threads + 1); table.insert(threads, thread) end
function request()
  n = n + 1
  local body = string.format('{"transaction_id":"%s-%d-%d","account_code":"A%d","amount":100}', tag, tid, n, math.random(1, accounts))
  return wrk.format("POST", "/v1/bank/payments", {["Content-Type"] = "application/json", ["X-API-Key"] = key}, body)
end
"""


def run_wrk(url: str, key: str, seconds: int, concurrency: int, accounts: int, tag: str) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(WRK_LUA)
    env = {**os.environ, "BENCH_KEY": key, "BENCH_ACCOUNTS": str(accounts), "BENCH_TAG": tag}
    out = subprocess.run(["wrk", f"-t{min(2, concurrency)}", f"-c{concurrency}", f"-d{seconds}s", "--latency", "-s", fh.name, url],
                         capture_output=True, text=True, env=env, check=True).stdout
    os.unlink(fh.name)

    def ms(label: str) -> float:
        for line in out.splitlines():
            parts = line.split()
            if parts and parts[0] == label:
                v = parts[1]
                return float(v[:-2]) if v.endswith("ms") else float(v[:-2]) / 1000 if v.endswith("us") else float(v[:-1]) * 1000
        return float("nan")

    rps = next((float(line.split()[1]) for line in out.splitlines() if line.startswith("Requests/sec")), float("nan"))
    non2xx = next((int(line.split()[-1]) for line in out.splitlines() if "Non-2xx" in line), 0)
    return {"median_ms": ms("50%"), "p90_ms": ms("90%"), "p99_ms": ms("99%"), "rps": rps, "errors": {"non-2xx": non2xx}}


def _start_server(dsn: str, channels: Path, args: argparse.Namespace, batch: bool) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "METERLINE_DSN": dsn, "METERLINE_COMPANY": "bench",
           "METERLINE__LEDGER__CHANNELS_FILE": str(channels),
           "METERLINE__API__POOL_MAX_SIZE": str(args.api_pool), "METERLINE__API__THREADS": str(args.api_threads),
           "METERLINE__API__BATCH_PAYMENTS": "true" if batch else "false"}
    env.pop("METERLINE_CONFIG", None)
    cmd = [sys.executable, "-m", "meterline", "api", "serve", "--port", str(port), "--workers", str(args.api_workers)]
    return _serving(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), port)


def _serving(proc: subprocess.Popen, port: int) -> tuple[subprocess.Popen, str]:
    """Wait (up to a minute) until the server started as ``proc`` accepts connections on ``port``."""
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.3)
    return proc, f"http://127.0.0.1:{port}"


def _start_ceiling(digest: str, args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    """The API's web stack without a database (``_api_ceiling.py``), as many workers as the API."""
    port = free_port()
    env = {**os.environ, "BENCH_KEY_SHA256": digest}
    cmd = [sys.executable, "-m", "uvicorn", "_api_ceiling:app", "--app-dir", str(Path(__file__).resolve().parent),
           "--port", str(port), "--workers", str(args.api_workers), "--log-level", "warning", "--no-access-log"]
    return _serving(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), port)


def _tag(batch: bool | None) -> int:
    return 2 if batch is None else int(batch)


def api_benchmark(dsn: str, cid: int, args: argparse.Namespace) -> None:
    """Servers with group commit on and off (``--api-batch both``), and the web stack alone
    (``--api-ceiling``), their load runs interleaved."""
    from meterline.ledger.api.config import new_key

    key, digest = new_key()
    tmp = Path(tempfile.mkdtemp(prefix="meterline-bench-api-"))
    (tmp / "channels.toml").write_text(
        f'[[api_keys]]\nname = "bench-bank"\ncompany = "bench"\nscopes = ["bank"]\ncashier = "icbc"\nkey_sha256 = "{digest}"\n',
        encoding="utf-8")
    modes: list[bool | None] = {"both": [True, False], "on": [True], "off": [False]}[args.api_batch]
    label = {True: "group commit", False: "a transaction each", None: "web stack alone, no database"}
    servers: dict[bool | None, tuple[subprocess.Popen, str]] = {}
    try:
        for batch in modes:
            servers[batch] = _start_server(dsn, tmp / "channels.toml", args, batch)
        if args.api_ceiling:
            servers[None] = _start_ceiling(digest, args)

        def run(url: str, n: int, conc: int, tag: str) -> dict:
            gen = [sys.executable, __file__, "--load-generator", args.load if args.load != "wrk" else "asyncio", url, key,
                   str(n), str(conc), str(args.n), tag]
            return json.loads(subprocess.run(gen, capture_output=True, text=True, check=True).stdout)

        for batch, (_, url) in servers.items():
            run(url, 200, 20, f"warm{_tag(batch)}")
            # one at a time: wrk too when it is there (an httpx client's separate header and body writes
            # meet delayed ACKs on loopback and add ~40 ms that are the client's, not the server's)
            single = (run_wrk(url, key, 5, 1, args.n, f"seq{_tag(batch)}") if args.load == "wrk"
                      else run(url, 300, 1, f"seq{_tag(batch)}"))
            print(f"{f'API bank payment, 1 at a time, {label[batch]}':<56} median {single['median_ms']:7.1f} ms  "
                  f"p90 {single['p90_ms']:7.1f} ms  ({single['rps']:,.0f}/s)", flush=True)
        results: dict[bool, list[dict]] = {b: [] for b in servers}
        for k in range(args.repeat):  # interleaved: the machine's noise falls on both
            for batch, (_, url) in servers.items():
                tag = f"load{_tag(batch)}-{k}"
                r = (run_wrk(url, key, args.wrk_seconds, args.concurrency, args.n, tag) if args.load == "wrk"
                     else run(url, args.api_requests, args.concurrency, tag))
                results[batch].append(r)
                print(f"  run {k + 1}, {label[batch]}: median {r['median_ms']:.1f} ms, p90 {r['p90_ms']:.1f}, "
                      f"p99 {r['p99_ms']:.1f}, {r['rps']:,.0f} payments/s, errors {r['errors']}", flush=True)
        for batch, rs in results.items():
            med = statistics.median(r["median_ms"] for r in rs)
            p90 = statistics.median(r["p90_ms"] for r in rs)
            rps = statistics.median(r["rps"] for r in rs)
            print(f"{f'API bank payment, {args.concurrency} concurrent ({args.load}), {label[batch]}':<56} median "
                  f"{med:7.1f} ms  p90 {p90:7.1f} ms  {rps:6,.0f}/s  (medians of {args.repeat} runs; target <= 20 ms)",
                  flush=True)
        if True in results and False in results:
            on, off = (statistics.median(r["rps"] for r in results[b]) for b in (True, False))
            print(f"ratio API payments/s group commit / a transaction each: {on / off:5.1f}x", flush=True)
        if None in results and True in results:
            top, on = (statistics.median(r["rps"] for r in results[b]) for b in (None, True))
            print(f"ratio API payments/s group commit / web stack alone: {on / top:5.2f}x; "
                  f"{args.concurrency} concurrent at a 20 ms median need {args.concurrency / 0.020:,.0f}/s "
                  "(Little's law: concurrency / latency)", flush=True)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(20)
        shutil.rmtree(tmp, ignore_errors=True)


# -- main ----------------------------------------------------------------------------------------

def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--load-generator":
        load_generator(sys.argv[2:])
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000, help="accounts, bills per run and payments per run")
    p.add_argument("--sample", type=int, default=5000, help="rows for the naive baselines")
    p.add_argument("--journal", type=int, default=200_000, help="entries for the journal-check comparison")
    p.add_argument("--skip-api", action="store_true")
    p.add_argument("--workers", type=int, default=2,
                   help="connections for the parallel payment figure (record_payments_parallel); 1: skip it")
    p.add_argument("--only", choices=["bulk", "baselines", "journal", "api"], action="append",
                   help="run only these sections (repeatable; default: all)")
    p.add_argument("--load", choices=["wrk", "asyncio", "httpx"], default="wrk" if shutil.which("wrk") else "asyncio",
                   help="load generator: wrk (default when installed), plain asyncio streams, or an httpx client")
    p.add_argument("--api-requests", type=int, default=4000, help="requests per load run (asyncio, httpx)")
    p.add_argument("--wrk-seconds", type=int, default=10)
    p.add_argument("--concurrency", type=int, default=200)
    # two workers (this machine's cores): with httptools and uvloop one at a time is as fast as with
    # one worker (7.8 vs 7.4 ms; with h11 and several workers each response once waited ~40 ms for
    # a delayed ACK), and 200 concurrent payments/s went up 20-40%
    p.add_argument("--api-workers", type=int, default=2)
    p.add_argument("--api-pool", type=int, default=16)
    p.add_argument("--api-threads", type=int, default=64)
    p.add_argument("--api-batch", choices=["both", "on", "off"], default="both",
                   help="API servers with group commit of payments on, off, or both (interleaved; default)")
    p.add_argument("--api-ceiling", action=argparse.BooleanOptionalAction, default=True,
                   help="also load the API's web stack without a database (benchmarks/_api_ceiling.py)")
    add_server_args(p)
    args = p.parse_args()
    wanted = set(args.only or ["bulk", "baselines", "journal", "api"]) - ({"api"} if args.skip_api else set())
    rnd = random.Random(7)
    with server(args.dsn) as maintenance, fresh_database(maintenance, "ml_bench_ledger", args.keep) as dsn:
        t = time.perf_counter()
        cid = make_company(dsn, args.n)
        print(f"{args.n:,} accounts created in {time.perf_counter() - t:.1f} s", flush=True)
        bill_rates, pay_rates, par_rates = [], [], []
        if wanted != {"api"}:
            print(f"-- bulk, {args.n:,} per run", flush=True)
        else:  # the API needs bills to pay
            _post(dsn, cid, make_bills(dsn, cid))
        for k in range(args.repeat if wanted != {"api"} else 0):
            run = make_bills(dsn, cid)
            with psycopg.connect(dsn) as conn:
                t = time.perf_counter()
                posted = post_bills(conn, cid, run, day=dt.date(2026, 4, 1))
                conn.commit()
                bill_rates.append(posted / (time.perf_counter() - t))
            payments = payments_for(dsn, cid, run, f"bulk{k}", rnd)
            with psycopg.connect(dsn) as conn:
                t = time.perf_counter()
                result = record_payments(conn, cid, "bank", payments, policy=POLICY)
                conn.commit()
                pay_rates.append(result.recorded / (time.perf_counter() - t))
            print(f"  run {k + 1}: bills {bill_rates[-1]:,.0f}/s, payments {pay_rates[-1]:,.0f}/s "
                  f"(allocated {result.allocated:,}, to credit {result.to_prepaid:,})", flush=True)
            if args.workers > 1:
                run = make_bills(dsn, cid)
                _post(dsn, cid, run)
                payments = payments_for(dsn, cid, run, f"par{k}", rnd)
                t = time.perf_counter()
                result = record_payments_parallel(lambda: psycopg.connect(dsn), cid, "bank", payments,
                                                  workers=args.workers, policy=POLICY)
                par_rates.append(result.recorded / (time.perf_counter() - t))
                print(f"  run {k + 1}: payments on {args.workers} connections {par_rates[-1]:,.0f}/s "
                      f"(allocated {result.allocated:,}, to credit {result.to_prepaid:,})", flush=True)
        if bill_rates:
            bills_bulk, pays_bulk = statistics.median(bill_rates), statistics.median(pay_rates)
            print(f"{'bills posted in bulk (post_bills)':<48} {bills_bulk:>14,.0f} /s   (median of {args.repeat})")
            print(f"{'payments allocated+posted in bulk':<48} {pays_bulk:>14,.0f} /s   (median of {args.repeat}; "
                  "target >= 50,000)", flush=True)
            if par_rates:
                print(f"{f'payments, {args.workers} connections (parallel)':<48} {statistics.median(par_rates):>14,.0f} /s   "
                      f"(median of {args.repeat}; one transaction per connection)", flush=True)
        if "baselines" in wanted and bill_rates:
            baselines(dsn, cid, args, rnd, bills_bulk, pays_bulk)
        if "journal" in wanted:
            journal_check(dsn, cid, args)
        if "api" in wanted:
            print(f"-- API ({args.api_workers} server worker(s), pool {args.api_pool}, load from a second process)", flush=True)
            api_benchmark(dsn, cid, args)


def baselines(dsn: str, cid: int, args: argparse.Namespace, rnd: random.Random, bills_bulk: float, pays_bulk: float) -> None:
    print(f"-- baselines, {args.sample:,} rows", flush=True)
    sample_runs = []

    def fresh_sample() -> None:
        sample_runs.append(make_bills(dsn, cid, args.sample))

    def naive_bills() -> None:
        with psycopg.connect(dsn) as conn:
            naive_post_bills(conn, cid, sample_runs[-1])

    naive_b = median_rate("bills, naive (a transaction per bill)", args.sample, naive_bills, args.repeat, fresh_sample)

    def naive_pay() -> None:
        with psycopg.connect(dsn) as conn:
            naive_payments(conn, cid, payments_for(dsn, cid, sample_runs[-1], f"naive{len(sample_runs)}", rnd))

    naive_p = median_rate("payments, naive (a transaction per payment)", args.sample, naive_pay, args.repeat,
                          lambda: (fresh_sample(), _post(dsn, cid, sample_runs[-1])))

    def one_by_one() -> None:
        pays = payments_for(dsn, cid, sample_runs[-1], f"single{len(sample_runs)}", rnd)
        with psycopg.connect(dsn) as conn:
            for pmt in pays:
                record_payment(conn, cid, "bank", pmt, policy=POLICY)
                conn.commit()

    single = median_rate("payments, record_payment one per transaction", args.sample, one_by_one, args.repeat,
                         lambda: (fresh_sample(), _post(dsn, cid, sample_runs[-1])))
    print(f"ratio bills bulk / naive:        {bills_bulk / naive_b:8.1f}x")
    print(f"ratio payments bulk / naive:     {pays_bulk / naive_p:8.1f}x")
    print(f"ratio payments bulk / one-by-one:{pays_bulk / single:8.1f}x", flush=True)


def journal_check(dsn: str, cid: int, args: argparse.Namespace) -> None:
    print(f"-- journal balance check, {args.journal:,} entries x 3 postings", flush=True)
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(OLD_DESIGN)
    new = median_rate("entries, statement-level check (0600)", args.journal,
                      lambda: journal_insert(dsn, cid, args.journal, "journal_entry", "posting"), args.repeat)
    old = median_rate("entries, per-row deferred re-sum + FKs (0001)", args.journal,
                      lambda: journal_insert(dsn, cid, args.journal, "bench_entry", "bench_posting"), args.repeat)
    print(f"ratio statement-level / per-row: {new / old:8.1f}x", flush=True)


def _post(dsn: str, cid: int, run: int) -> None:
    with psycopg.connect(dsn) as conn:
        post_bills(conn, cid, run, day=dt.date(2026, 4, 1))
        conn.commit()


if __name__ == "__main__":
    main()
