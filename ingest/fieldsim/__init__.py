"""Simulated field devices for tests and the demo: wired M-Bus slaves (:mod:`.mbus`) and
Modbus meters served by a pymodbus server (:mod:`.modbus`).

They speak the real protocols over real transports (a pseudo-terminal, TCP), so the pollers of
``ingest.sources`` run unchanged against them; nothing here is used in production paths.
"""
