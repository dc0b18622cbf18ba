"""Benchmark: registry import under the application role with audit capture and encryption.

    python benchmarks/bench_registry_audit.py [--meters 20000] [--repeat 3]

Builds a synthetic utility of ``--meters`` metering points and, in the same run, imports it
into a fresh company each time:

* guarded: as ``meterline_app`` in the company's scope (row-level security), with the audit
  triggers recording every inserted row and personal data encrypted — what a user's import does;
* baseline: as the login role with the audit triggers disabled and no encryption — the
  import as it was before group operation.

Figures are registry rows per second, medians of ``--repeat`` runs, and their ratio.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_server_args, fresh_database, median_rate, server  # noqa: E402

from meterline.store.company import ensure_company  # noqa: E402
from meterline.store.db import set_company, set_role  # noqa: E402
from meterline.store.personal import KeyRing, generate_key  # noqa: E402
from meterline.store.registry import load_rows  # noqa: E402
from meterline.store.seed import build_utility  # noqa: E402

AUDITED = ("customer", "account", "meter", "meter_book", "district", "use_type", "meter_installation")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--meters", type=int, default=20_000)
    add_server_args(p)
    args = p.parse_args()
    # one utility per run, with its own serials and meter addresses (addresses are unique in a deployment)
    utilities = [build_utility(args.meters, seed=7, company_prefix=f"P{i}", address_base=i * 10**6).rows
                 for i in range(1, 2 * args.repeat + 1)]
    ring = KeyRing.from_text({"b1": generate_key()})
    counter = {"n": 0}
    with server(args.dsn) as maintenance, fresh_database(maintenance, "ml_bench_audit", args.keep) as dsn:
        def company(conn: psycopg.Connection) -> int:
            counter["n"] += 1
            return ensure_company(conn, f"c{counter['n']}", "基准").id

        def guarded() -> None:
            with psycopg.connect(dsn, autocommit=True) as conn:
                cid = company(conn)
                set_role(conn, "meterline_app")
                set_company(conn, cid)
                load_rows(conn, cid, utilities.pop(), keyring=ring)

        def baseline() -> None:
            with psycopg.connect(dsn, autocommit=True) as conn:
                cid = company(conn)
                for t in AUDITED:
                    conn.execute(f"ALTER TABLE {t} DISABLE TRIGGER USER")
                try:
                    rows = [r.__class__(**{**{f: getattr(r, f) for f in r.__slots__}, "phone": None, "id_number": None})
                            for r in utilities.pop()]
                    load_rows(conn, cid, rows)
                finally:
                    for t in AUDITED:
                        conn.execute(f"ALTER TABLE {t} ENABLE TRIGGER USER")

        n = len(utilities[0])
        print(f"registry import of {n:,} rows (medians of {args.repeat})")
        g = median_rate("guarded (RLS + audit + encryption)", n, guarded, args.repeat)
        b = median_rate("baseline (login role, no audit, no encryption)", n, baseline, args.repeat)
        print(f"ratio guarded / baseline: {g / b:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
