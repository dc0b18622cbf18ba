"""Handheld (walk-by, optical-read) route uploads: parsing and row checks (pure).

See :mod:`.upload`; the importer and the route export live in :mod:`meterline.ingest.handheld`.
"""
