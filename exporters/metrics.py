"""Prometheus metrics of the pipeline beyond ingest: billing runs, payments, dead letters, alerts.

Billing runs, payments and dead letters are written by many processes — a billing run is a
command that exits, payments come through the API workers, the bank-file import and the
counter — so counters kept in any one process would be wrong (lost at exit, one worker's share
only). These figures are therefore read from the database when Prometheus scrapes
(:class:`PipelineCollector`, at most every ``min_interval_s``; one short read-only query each),
which is right whatever runs where, and the same on every replica serving them. The ingest
service's own counters (rates, latencies, dead letters per source as they happen) stay where
they are counted, on the ingest service's ``/metrics`` (:mod:`meterline.ingest.metrics`).

=================================================  =================================================
``meterline_billing_run_duration_seconds``         last finished run per company and cycle: finished − started
``meterline_billing_run_accounts``                 accounts of that run
``meterline_billing_run_accounts_per_second``      accounts / duration of that run
``meterline_billing_run_finished_timestamp_seconds``  when that run finished (Unix time)
``meterline_billing_runs``                         runs by company and status (running, completed, failed)
``meterline_payments_total``                       payments recorded, by company and channel (counter)
``meterline_payments_amount_minor_total``          their amount in minor units (counter)
``meterline_dead_letters_total``                   dead letters stored, by company, source and reason (counter)
``meterline_alerts_open``                          open alerts by company, rule, severity (:class:`OpenAlertsCollector`)
``meterline_metrics_scrape_seconds``               time the collector's queries took
=================================================  =================================================

``meterline metrics serve`` exposes them (plus the open-alerts gauge) on ``/metrics``.
"""

from __future__ import annotations

import threading
import time
from typing import Iterable

import psycopg
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from meterline.exporters.alert_sinks import OpenAlertsCollector

_RUNS = """
SELECT DISTINCT ON (c.code, r.cycle) c.code, r.cycle, r.accounts,
       extract(epoch FROM r.finished_at - r.started_at)::float8, extract(epoch FROM r.finished_at)::float8
  FROM billing_run r JOIN company c ON c.id = r.company_id
 WHERE r.finished_at IS NOT NULL AND r.status = 'completed'
 ORDER BY c.code, r.cycle, r.finished_at DESC, r.id DESC
"""
_RUN_STATUS = """
SELECT c.code, r.status, count(*) FROM billing_run r JOIN company c ON c.id = r.company_id GROUP BY 1, 2 ORDER BY 1, 2
"""
_PAYMENTS = """
SELECT c.code, p.channel, count(*), sum(p.amount)::bigint
  FROM payment p JOIN company c ON c.id = p.company_id GROUP BY 1, 2 ORDER BY 1, 2
"""
_DEAD = """
SELECT coalesce(c.code, '(unplaced)'), d.source, d.reason, count(*)
  FROM dead_letter d LEFT JOIN company c ON c.id = d.company_id GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"""


class PipelineCollector(Collector):
    """Billing-run, payment and dead-letter figures read from the database at scrape time."""

    def __init__(self, dsn: str, min_interval_s: float = 10.0) -> None:
        self.dsn = dsn
        self.min_interval_s = min_interval_s
        self._lock = threading.Lock()
        self._at = 0.0
        self._data: dict[str, list[tuple]] = {}
        self._seconds = 0.0

    def _refresh(self) -> None:
        started = time.perf_counter()
        with psycopg.connect(self.dsn, autocommit=True, application_name="meterline-metrics") as conn:
            conn.execute("SET default_transaction_read_only = on")
            conn.execute("SET statement_timeout = '30s'")
            self._data = {name: conn.execute(sql).fetchall() for name, sql in
                          (("runs", _RUNS), ("status", _RUN_STATUS), ("payments", _PAYMENTS), ("dead", _DEAD))}
        self._seconds = time.perf_counter() - started
        self._at = time.monotonic()

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            if not self._at or time.monotonic() - self._at >= self.min_interval_s:
                self._refresh()
            data, seconds = dict(self._data), self._seconds
        labels = ["company", "cycle"]
        duration = GaugeMetricFamily("meterline_billing_run_duration_seconds",
                                     "Duration of the last completed billing run", labels=labels)
        accounts = GaugeMetricFamily("meterline_billing_run_accounts", "Accounts of the last completed billing run",
                                     labels=labels)
        rate = GaugeMetricFamily("meterline_billing_run_accounts_per_second",
                                 "Accounts per second of the last completed billing run", labels=labels)
        finished = GaugeMetricFamily("meterline_billing_run_finished_timestamp_seconds",
                                     "When the last completed billing run finished", labels=labels)
        for company, cycle, n, secs, at in data.get("runs", []):
            duration.add_metric([company, cycle], secs or 0.0)
            accounts.add_metric([company, cycle], n)
            rate.add_metric([company, cycle], (n / secs) if secs else 0.0)
            finished.add_metric([company, cycle], at)
        yield from (duration, accounts, rate, finished)
        runs = GaugeMetricFamily("meterline_billing_runs", "Billing runs by status", labels=["company", "status"])
        for company, status, n in data.get("status", []):
            runs.add_metric([company, status], n)
        yield runs
        pay = CounterMetricFamily("meterline_payments", "Payments recorded", labels=["company", "channel"])
        amount = CounterMetricFamily("meterline_payments_amount_minor", "Amount of payments recorded (minor units)",
                                     labels=["company", "channel"])
        for company, channel, n, total in data.get("payments", []):
            pay.add_metric([company, channel], n)
            amount.add_metric([company, channel], total)
        yield pay
        yield amount
        dead = CounterMetricFamily("meterline_dead_letters", "Dead letters stored",
                                   labels=["company", "source", "reason"])
        for company, source, reason, n in data.get("dead", []):
            dead.add_metric([company, source, reason], n)
        yield dead
        yield GaugeMetricFamily("meterline_metrics_scrape_seconds", "Time the pipeline queries took", value=seconds)


def pipeline_registry(dsn: str, min_interval_s: float = 10.0) -> CollectorRegistry:
    """A registry with the pipeline collector and the open-alerts gauge."""
    registry = CollectorRegistry()
    registry.register(PipelineCollector(dsn, min_interval_s))
    registry.register(OpenAlertsCollector(dsn, min_interval_s))
    return registry
