"""PostgreSQL storage: connection pool, migrations, partitions, maintenance, embedded default.

* :mod:`~meterline.store.db` — ``open_database(settings)`` → :class:`Database` (pool);
* :mod:`~meterline.store.migrate` — versioned SQL migrations, TimescaleDB detection;
* :mod:`~meterline.store.partitions` / :mod:`~meterline.store.maintain` — monthly reading
  partitions and the daily aggregate on plain PostgreSQL;
* :mod:`~meterline.store.embedded` — the embedded server used when no DSN is configured;
* :mod:`~meterline.store.registry` — registry import/export (customers, accounts, meters, books);
* :mod:`~meterline.store.seed` — the synthetic utility.
"""
