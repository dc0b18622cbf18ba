"""Exports: bill files, bank withholding files, Parquet/CSV, Prometheus metrics, alert sinks."""
