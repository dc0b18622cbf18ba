"""Ingest: the Reading record, sources, validation, dedupe and the batching writer.

:mod:`~meterline.ingest.model` is the contract every decoder produces;
:mod:`~meterline.ingest.writer` is the only way readings enter the database.
"""
