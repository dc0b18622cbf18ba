"""The ledger: an append-only double-entry book of what every account owes and paid.

Modules, bottom up:

* :mod:`.chart` — account codes (``AR:<account>``, ``REV:<component>``, ``CASH:<channel>`` …);
* :mod:`.journal` — entries of balanced postings, business days, :func:`~.journal.open_day`;
* :mod:`.policy` — allocation order and late-fee policy per company (TOML);
* :mod:`.allocation` — which open items a payment settles (plain and set-based, the same);
* :mod:`.bills` — ``post_bills(conn, company_id, run_id)``, the billing run's contract; bill reversal;
* :mod:`.payments` — payments idempotent by (channel, external id), allocated, in bulk;
* :mod:`.prepaid` — prepaid credit applied to bills; prepaid-meter top-ups and consumption;
* :mod:`.corrections` — payment reversal, suspense matching, adjustments with a second approver;
* :mod:`.late_fees` — 滞纳金 once per company and day;
* :mod:`.close` — daily and monthly close, trial balance;
* :mod:`.balances` — balances, statements, the consistency check;
* :mod:`.channels` — counter (receipts), bank withholding files, WeChat Pay / Alipay notifications;
* :mod:`.api` — the HTTP API (FastAPI) for the channels and queries.

Every function takes the caller's connection and works inside the caller's transaction; the
database (``store/migrations/0600_ledger.sql``) enforces balance, append-only and closed days
whatever the code does.
"""
