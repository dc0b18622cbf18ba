"""Which meter a reading belongs to: a cache of the registry for the writer's hot path.

The writer resolves every reading's meter (by ``meter_id`` or by ``device`` = the meter's
``comm_address``) to its company and register wrap-around value. Asking the database per batch
means joining the whole meter table each time; this directory keeps what it has looked up and
asks only for the meters it has not seen, in one query per batch. Entries expire after
``ttl_s`` so registry changes (a new address, a replaced register) are picked up. Thread-safe:
the writer's connections share one directory.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Iterable

import psycopg


@dataclass(frozen=True, slots=True)
class MeterInfo:
    meter_id: int
    company_id: int
    register_modulus: int


class MeterDirectory:
    def __init__(self, ttl_s: float = 300.0) -> None:
        self.ttl_s = ttl_s
        self._by_id: dict[int, MeterInfo] = {}
        self._by_address: dict[str, MeterInfo] = {}
        self._lock = threading.Lock()
        self._loaded_at = time.monotonic()

    def _expire(self) -> None:
        if time.monotonic() - self._loaded_at > self.ttl_s:
            self._by_id.clear()
            self._by_address.clear()
            self._loaded_at = time.monotonic()

    def lookup(
        self, conn: psycopg.Connection, ids: Iterable[int], addresses: Iterable[str]
    ) -> tuple[dict[int, MeterInfo], dict[str, MeterInfo]]:
        """Return what is known of the given meter ids and addresses (unknown ones are absent)."""
        ids, addresses = set(ids), set(addresses)
        with self._lock:
            self._expire()
            missing_ids = [i for i in ids if i not in self._by_id]
            missing_addr = [a for a in addresses if a not in self._by_address]
        if missing_ids or missing_addr:
            rows = conn.execute(
                """SELECT id, comm_address, company_id, register_modulus FROM meter
                   WHERE id = ANY(%s) OR comm_address = ANY(%s)""",
                [missing_ids, missing_addr],
            ).fetchall()
            with self._lock:
                for mid, addr, cid, modulus in rows:
                    info = MeterInfo(mid, cid, modulus)
                    self._by_id[mid] = info
                    if addr is not None:
                        self._by_address[addr] = info
        with self._lock:
            found_ids = {i: self._by_id[i] for i in ids if i in self._by_id}
            found_addr = {a: self._by_address[a] for a in addresses if a in self._by_address}
        return found_ids, found_addr

    def forget(self) -> None:
        with self._lock:
            self._by_id.clear()
            self._by_address.clear()
