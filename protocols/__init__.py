"""Wire-format decoders, one subpackage per protocol (mbus, modbus, lorawan, coap, handheld).

Decoders are pure: bytes, dicts or files in, :class:`meterline.ingest.model.Reading` records
(or a :class:`meterline.errors.DecodeError`) out. No sockets, no database, no clock.
"""
