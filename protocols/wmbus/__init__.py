"""Wireless M-Bus (EN 13757-4 link layer, ELL, TPL, security mode 5): pure decoders.

See :mod:`.telegram`. Records are decoded by :mod:`meterline.protocols.mbus.records`.
"""
