"""meterline: a meter-to-bill pipeline for water, heat and gas utilities.

Readings flow one way (see ARCHITECTURE in the README):
``protocols`` (pure decoders) → ``ingest`` (sources, validation, dedupe, batching writer) →
``store`` (PostgreSQL schema, TimescaleDB when present) → ``rating`` (billing runs) →
``ledger`` (double-entry journal) → ``exporters`` (files, metrics, alert sinks).
"""

__version__ = "0.1.0"
