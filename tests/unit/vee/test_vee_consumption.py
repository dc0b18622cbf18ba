"""Consumption from cumulative registers: rollover, reverse flow, reset, replacement."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterline.store.consumption import Kind, consumption, consumption_one, replacement_terms

M5 = 100_000_000  # five-digit m³ register in litres


@pytest.mark.parametrize(("prev", "cur", "want", "kind"), [
    (1_387, 1_404, 17, Kind.FORWARD),
    (99_999_900, 200, 300, Kind.ROLLOVER),          # 99999.900 m³ → 0.200 m³
    (5_000_000, 4_999_950, -50, Kind.REVERSE),      # 50 L back: reverse flow
    (5_000_000, 4_000_000, 4_000_000, Kind.RESET),  # 1000 m³ back mid-register: reset, counted from 0
    (1_387, 0, 0, Kind.RESET),                      # a counter decoding as 0
    (50_000_000, 100, 100, Kind.RESET),             # far from the end: not a rollover
])
def test_kinds(prev: int, cur: int, want: int, kind: Kind) -> None:
    c, k = consumption([prev], [cur], M5)
    assert (int(c[0]), int(k[0])) == (want, kind)


def test_multiplier_and_replacement() -> None:
    # old device 809.600 → final 809.800, new device 0 → 0.250: 0.45 m³, × 10 (a pulse multiplier)
    assert consumption_one(809_600, 250, M5, 10, 809_800, 0, 0, 200, 0.1) == (4_500, int(Kind.REPLACEMENT))
    # a replacement where the new device's read went back: reset
    assert consumption_one(809_600, 0, M5, 1, 809_800, 5_000, 0, 200, 0.1)[1] == int(Kind.RESET)


def test_replacement_terms_from_install_history() -> None:
    # meter 7: device 1 from 2020 (removed at t=100 with 8000), device 2 installed at 100 from 10,
    # removed at 200 with 60, device 3 installed at 200 from 0
    inst = (np.array([7, 7, 7]), np.array([0, 100, 200]), np.array([0, 10, 0]),
            np.array([100, 200, -1]), np.array([8_000, 60, -1]))
    fo, ini, btw = replacement_terms(np.array([7, 7, 7, 8]), np.array([50, 50, 150, 50]),
                                     np.array([60, 250, 250, 250]), *inst, np.array([M5] * 4))
    assert fo.tolist() == [-1, 8_000, 60, -1]
    assert ini.tolist() == [0, 0, 0, 0]
    assert btw.tolist() == [0, 50, 0, 0]  # device 2 counted 10 → 60 while in between
    # 7000 on device 1 → 30 on device 3: 1000 + 50 + 30; 40 on device 2 → 30 on device 3: 20 + 30
    c, k = consumption([7_000, 40], [30, 30], M5, 1, fo[1:3], ini[1:3], btw[1:3])
    assert c.tolist() == [1_080, 50] and k.tolist() == [Kind.REPLACEMENT, Kind.REPLACEMENT]


def test_a_replaced_device_without_final_register_is_an_error() -> None:
    inst = (np.array([7, 7]), np.array([0, 100]), np.array([0, 0]), np.array([-1, -1]), np.array([-1, -1]))
    with pytest.raises(ValueError, match="meter 7"):
        replacement_terms(np.array([7]), np.array([50]), np.array([150]), *inst, np.array([M5]))


def test_modulus_must_be_positive() -> None:
    with pytest.raises(ValueError):
        consumption([1], [2], 0)


@given(prev=st.integers(0, M5 - 1), cur=st.integers(0, M5 - 1))
def test_register_arithmetic_is_consistent(prev: int, cur: int) -> None:
    c, k = consumption([prev], [cur], M5)
    c, k = int(c[0]), Kind(int(k[0]))
    if k in (Kind.FORWARD, Kind.ROLLOVER, Kind.REVERSE):
        assert (prev + c) % M5 == cur
    if k is Kind.ROLLOVER:
        assert 0 < c <= M5 // 10 and cur < prev
    if k is Kind.REVERSE:
        assert -200 <= c < 0
    if k is Kind.FORWARD:
        assert c == cur - prev >= 0
    if k is Kind.RESET:
        assert c == cur and cur < prev
