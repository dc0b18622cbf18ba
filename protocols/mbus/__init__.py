"""M-Bus (EN 13757-2 link layer, EN 13757-3 application layer): pure decoders.

* :mod:`.records` — data records (DIF/VIF/data) → :class:`~.records.Record` → ``Reading``; the
  record layer wired M-Bus, wireless M-Bus and OMS LoRaWAN payloads share;
* :mod:`.frame` — long/short/ack frames, the variable and fixed data structures, and the
  master's request frames (SND_NKE, REQ_UD2, secondary-address selection);
* :mod:`.tables` — the code tables as data; :mod:`.errors` — the error classes.
"""
