"""Rating: tariffs, vectorized kernels, master–sub apportionment and the billing run.

* :mod:`.money`   decimal strings to scaled integers, named rounding rules, largest remainder;
* :mod:`.tariff`  tariff files (TOML), strictly validated, into a :class:`~.tariff.TariffBook`;
* :mod:`.kernels` numba int64 kernels (tiers, charges, tax, largest remainder);
* :mod:`.engine`  ``rate(book, frame) -> Rated``: bills and bill lines for many accounts at once;
* :mod:`.quote`   one case without the database (``meterline quote``).
"""
