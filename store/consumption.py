"""Consumption from cumulative registers: the one definition validation and rating share.

A meter reports a cumulative register; consumption between two reads is derived, and three
things make that more than a subtraction:

* **rollover**: the register wraps to 0 at ``meter.register_modulus`` (10^digits display
  units, in base units). A read below the previous one is a rollover when going forward
  through the wrap is shorter than going back *and* at most ``rollover_window`` × modulus
  (a five-digit m³ register at 99 999.500 m³ followed by 0.300 m³ advanced 0.800 m³);
* **reverse flow**: the register went back by at most ``reverse_max`` register units (litres
  for water): water flowed backwards; consumption is negative;
* **replacement**: the device at the metering point changed in between (``meter_installation``):
  the old device's advance up to its final register, plus what devices installed and removed
  in between counted, plus the new device's advance from its initial register.

Anything else that goes backwards is a **reset** (an unrecorded replacement, a register that
restarted): the advance is the current value counted from zero, and validation holds such a
read for a person to explain. Consumption is in base units and multiplied by
``meter.multiplier``.

Use :func:`consumption` on arrays (numpy; the loop is numba-compiled) or :func:`consumption_one`
for one pair. The SQL function ``meterline_consumption`` (migration 0400) is the same definition
for SQL (the view ``reading_consumption`` applies it between consecutive effective reads); tests
keep the two equal. :func:`replacement_terms` turns install history into the replacement
arguments for pairs of reads.

This module is pure (numpy and numba, no database) so rating kernels can import it.
"""

from __future__ import annotations

import enum

import numba
import numpy as np

#: register units a register may go back and still count as reverse flow (not a reset)
DEFAULT_REVERSE_MAX = 200
#: share of the register a rollover may span (wrapped advance <= this × modulus)
DEFAULT_ROLLOVER_WINDOW = 0.1


class Kind(enum.IntEnum):
    """How consumption between two reads was derived (``kind`` in SQL: the lower-case name)."""

    FORWARD = 0
    ROLLOVER = 1
    REPLACEMENT = 2
    REVERSE = 3
    RESET = 4


@numba.njit(cache=True, nogil=True)
def register_advance(prev: int, cur: int, modulus: int, reverse_max: int, rollover_window: float) -> tuple[int, int]:
    """Advance of one device's register from ``prev`` to ``cur`` (register units) and its kind."""
    if cur >= prev:
        return cur - prev, 0
    back = prev - cur
    wrapped = cur + modulus - prev
    if wrapped < back and wrapped <= rollover_window * modulus:
        return wrapped, 1
    if back <= reverse_max:
        return -back, 3
    return cur, 4


@numba.njit(cache=True, nogil=True)
def consumption_one(prev: int, cur: int, modulus: int, multiplier: int, final_old: int, initial_new: int,
                    between: int, reverse_max: int, rollover_window: float) -> tuple[int, int]:
    """Consumption (base units × multiplier) and :class:`Kind` code between two reads.

    ``final_old < 0`` means no replacement in between; otherwise ``final_old`` is the removed
    device's final register, ``initial_new`` the new device's initial register and ``between``
    what devices installed and removed in between counted.
    """
    if final_old < 0:
        adv, kind = register_advance(prev, cur, modulus, reverse_max, rollover_window)
        return adv * multiplier, kind
    a1, k1 = register_advance(prev, final_old, modulus, reverse_max, rollover_window)
    a2, k2 = register_advance(initial_new, cur, modulus, reverse_max, rollover_window)
    kind = 4 if (k1 == 4 or k2 == 4) else 2
    return (a1 + between + a2) * multiplier, kind


@numba.njit(cache=True, nogil=True)
def _consumption_loop(prev, cur, modulus, multiplier, final_old, initial_new, between, reverse_max,
                      rollover_window, out, kinds):  # pragma: no cover - compiled
    for i in range(prev.shape[0]):
        c, k = consumption_one(prev[i], cur[i], modulus[i], multiplier[i], final_old[i], initial_new[i],
                               between[i], reverse_max, rollover_window)
        out[i] = c
        kinds[i] = k


def _arr(x, n: int, fill: int) -> np.ndarray:
    if x is None:
        return np.full(n, fill, dtype=np.int64)
    a = np.asarray(x, dtype=np.int64)
    return np.broadcast_to(a, (n,)).copy() if a.ndim == 0 or a.shape[0] != n else np.ascontiguousarray(a)


def consumption(
    prev,
    cur,
    modulus,
    multiplier=1,
    final_old=None,
    initial_new=None,
    between=None,
    *,
    reverse_max: int = DEFAULT_REVERSE_MAX,
    rollover_window: float = DEFAULT_ROLLOVER_WINDOW,
) -> tuple[np.ndarray, np.ndarray]:
    """Consumption between pairs of reads, vectorized: ``(int64 base units, int8 Kind codes)``.

    Every argument is an array of the pairs' length or a scalar. ``final_old`` < 0 (or None)
    means no replacement between the pair (see :func:`replacement_terms`).
    """
    cur_a = np.asarray(cur, dtype=np.int64)
    n = cur_a.shape[0] if cur_a.ndim else 1
    args = [_arr(prev, n, 0), _arr(cur, n, 0), _arr(modulus, n, 0), _arr(multiplier, n, 1),
            _arr(final_old, n, -1), _arr(initial_new, n, 0), _arr(between, n, 0)]
    if (args[2] <= 0).any():
        raise ValueError("register modulus must be positive")
    out = np.empty(n, dtype=np.int64)
    kinds = np.empty(n, dtype=np.int8)
    _consumption_loop(*args, int(reverse_max), float(rollover_window), out, kinds)
    return out, kinds


def replacement_terms(
    pair_meter: np.ndarray,
    prev_ts: np.ndarray,
    ts: np.ndarray,
    inst_meter: np.ndarray,
    inst_installed: np.ndarray,
    inst_initial: np.ndarray,
    inst_removed: np.ndarray,
    inst_final: np.ndarray,
    modulus: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(final_old, initial_new, between)`` for pairs of reads from the install history.

    Pairs are ``(pair_meter, prev_ts, ts]``; installations are rows of ``meter_installation``
    (timestamps as int64 of any one unit, ``inst_removed``/``inst_final`` = -1 when still
    installed); ``modulus`` is per pair. A device installed inside ``(prev_ts, ts]`` replaced
    the one before it. Pairs with no replacement get ``final_old = -1``.
    """
    n = len(pair_meter)
    final_old = np.full(n, -1, dtype=np.int64)
    initial_new = np.zeros(n, dtype=np.int64)
    between = np.zeros(n, dtype=np.int64)
    if n == 0 or len(inst_meter) == 0:
        return final_old, initial_new, between
    order = np.lexsort((inst_installed, inst_meter))
    im, it, ii, ir, ifin = (np.asarray(a)[order] for a in (inst_meter, inst_installed, inst_initial, inst_removed, inst_final))
    # a replacement event: install k of a meter whose install k-1 is the same meter
    is_event = np.zeros(len(im), dtype=bool)
    is_event[1:] = im[1:] == im[:-1]
    ev = np.flatnonzero(is_event)
    if len(ev) == 0:
        return final_old, initial_new, between
    ev_meter, ev_ts = im[ev], it[ev]
    # events in (prev_ts, ts] of the pair's meter: a range of the (meter, ts)-sorted events
    m_lo = np.searchsorted(ev_meter, pair_meter, side="left")
    m_hi = np.searchsorted(ev_meter, pair_meter, side="right")
    for i in np.flatnonzero(m_hi > m_lo).tolist():
        seg = ev_ts[m_lo[i]:m_hi[i]]
        a = int(m_lo[i] + np.searchsorted(seg, prev_ts[i], side="right"))
        b = int(m_lo[i] + np.searchsorted(seg, ts[i], side="right"))
        if b <= a:
            continue
        e_first, e_last = ev[a], ev[b - 1]
        if ifin[e_first - 1] < 0:
            raise ValueError(f"installation history of meter {int(im[e_first])} has a replaced device "
                             "without a final register")
        final_old[i] = ifin[e_first - 1]
        initial_new[i] = ii[e_last]
        mod = int(modulus[i])
        for k in range(a, b - 1):  # devices installed and removed inside the pair
            j = ev[k]
            if ifin[j] < 0:
                raise ValueError(f"installation history of meter {int(im[j])} has a replaced device "
                                 "without a final register")
            between[i] += (int(ifin[j]) - int(ii[j]) + mod) % mod
    return final_old, initial_new, between
