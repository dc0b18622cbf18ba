"""Modbus (pure part): register-map profiles as TOML data, register decoding, read planning.

The poller (pymodbus, TCP and RTU) lives in :mod:`meterline.ingest.modbus_poller`.
"""
