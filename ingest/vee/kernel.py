"""The reading rules as one compiled pass over readings in (meter, time) order.

Both run modes use this kernel: the batch run feeds it a period of every meter (after some
history), the ingest path feeds it each committed batch with the meters' state kept between
calls (:class:`KernelState`). It is a state machine per meter:

* the **accepted** read (last read kept for billing) is the baseline consumption is measured
  from, with :func:`meterline.store.consumption.consumption_one` (rollover, reverse flow,
  replacement from the install history, reset);
* a read whose consumption is implausible (register reset, spike against the meter's rolling
  median of daily use, above the high limit for its size) becomes **pending** and is not
  accepted. The next read decides: back in line with the accepted read → the pending read was
  an isolated outlier (a corrupt telegram: 1.387 m³ → 15 430.611 m³ → 1.390 m³) and is
  rejected; in line with the pending read → the level really moved (an unrecorded meter
  change, a burst) and the pending read, still held for review, becomes the baseline;
* on accepted reads: stuck register (no advance for N days on an active account), low limit,
  night flow (minimum flow over local night hours above a threshold N nights running, for
  meters with interval data), and the daily-use history the median is taken from;
* on every read: timestamps ahead of their receipt or far behind it, gaps, status bits.

Inputs are int64/float64 arrays; nothing here touches the database, the clock or the logs.
Flags are bit words (bits defined in :mod:`.rules`); actions are 0 valid, 1 flag, 2 hold,
3 reject (per flag bit from the configuration, the highest wins).
"""

from __future__ import annotations

import numba
import numpy as np

from meterline.ingest.vee import rules as R
from meterline.ingest.vee.config import P_INDEX
from meterline.store.consumption import consumption_one

DAY_US = 86_400_000_000
HOUR_US = 3_600_000_000
NO_CONS = np.iinfo(np.int64).min

# review decisions (reading_validation.review) as codes
REVIEW_NONE, REVIEW_APPROVED, REVIEW_OVERRIDDEN, REVIEW_REREAD = 0, 1, 2, 3
REVIEW_CODE = {None: 0, "approved": 1, "overridden": 2, "reread_requested": 3}

# per-meter state (int64 columns)
S_HAS_ACC, S_ACC_TS, S_ACC_VAL = 0, 1, 2
S_HAS_PEND, S_PEND_TS, S_PEND_VAL, S_PEND_ROW, S_PEND_FLAGS = 3, 4, 5, 6, 7
S_HAS_LAST, S_LAST_TS = 8, 9
S_STUCK_SINCE, S_STUCK_FLAGGED = 10, 11
S_RING_N, S_RING_POS = 12, 13
S_DAY, S_DAY_SPAN, S_DAY_CONS = 14, 15, 16
S_NIGHT_DAY, S_NIGHT_N, S_NIGHT_CONSEC, S_NIGHT_LAST = 17, 18, 19, 20
S_EV_START, S_EV_COUNT = 21, 22
NS = 23
# per-meter state (float64 columns)
F_NIGHT_MIN = 0
NF = 1

# parameter columns
_P = P_INDEX
P_FUTURE, P_MAXAGE = _P["future_tolerance_s"], _P["max_age_days"]
P_SPIKE_F, P_SPIKE_MIN, P_HIST_MIN = _P["spike_factor"], _P["spike_min"], _P["history_min_days"]
P_MAXPD, P_MINPD = _P["max_per_day"], _P["min_per_day"]
P_REV, P_ROLL = _P["reverse_max"], _P["rollover_window"]
P_STUCK, P_GAP = _P["stuck_days"], _P["gap_days"]
P_N_START, P_N_END, P_N_MAXI = _P["night_start_hour"], _P["night_end_hour"], _P["night_max_interval_h"]
P_N_MININT, P_N_THR, P_N_NIGHTS = _P["night_min_intervals"], _P["night_threshold_per_h"], _P["night_nights"]

B_FUTURE = R.FUTURE_TIMESTAMP.bit
B_PAST = R.PAST_TIMESTAMP.bit
B_ROLLOVER = R.ROLLOVER.bit
B_REVERSE = R.REVERSE_FLOW.bit
B_REPLACED = R.METER_REPLACED.bit
B_RESET = R.REGISTER_RESET.bit
B_SPIKE = R.SPIKE.bit
B_HIGH = R.HIGH_LIMIT.bit
B_LOW = R.LOW_LIMIT.bit
B_OUTLIER = R.ISOLATED_OUTLIER.bit
B_STUCK = R.STUCK.bit
B_GAP = R.READING_GAP.bit
B_NIGHT = R.NIGHT_FLOW.bit
STATUS_MAP = np.array(R.status_bits(), dtype=np.int64).reshape(-1, 2)


@numba.njit(cache=True, nogil=True)
def _action(flags: int, act: np.ndarray) -> int:
    a = 0
    f = flags
    b = 0
    while f:
        if f & 1:
            if act[b] > a:
                a = act[b]
        f >>= 1
        b += 1
    return a


@numba.njit(cache=True, nogil=True)
def _median(ring: np.ndarray, n: int, buf: np.ndarray) -> float:
    for j in range(n):
        x = ring[j]
        k = j
        while k > 0 and buf[k - 1] > x:
            buf[k] = buf[k - 1]
            k -= 1
        buf[k] = x
    if n % 2:
        return buf[n // 2]
    return 0.5 * (buf[n // 2 - 1] + buf[n // 2])


@numba.njit(cache=True, nogil=True)
def _terms(s, t0, t1, S, ev_ts, ev_final, ev_initial, modulus):
    """Replacement terms between t0 (exclusive) and t1 (inclusive) from the slot's events."""
    start = S[s, S_EV_START]
    cnt = S[s, S_EV_COUNT]
    first = -1
    last = -1
    for e in range(start, start + cnt):
        if ev_ts[e] > t0 and ev_ts[e] <= t1:
            if first < 0:
                first = e
            last = e
    if first < 0:
        return -1, 0, 0
    between = 0
    for e in range(first, last):
        between += (ev_final[e + 1] - ev_initial[e] + modulus) % modulus
    return ev_final[first], ev_initial[last], between


@numba.njit(cache=True, nogil=True)
def _candidate(s, c, kind, dt_days, p, S, ring, buf):
    """Flags that make a read implausible (reset, high limit, spike) and the median used."""
    cf = 0
    med = np.nan
    if kind == 4:
        cf |= 1 << B_RESET
    elif c > 0:
        maxpd = p[P_MAXPD]
        if maxpd > 0 and c > maxpd * max(dt_days, 1.0 / 24.0):
            cf |= 1 << B_HIGH
        n = S[s, S_RING_N]
        if c > p[P_SPIKE_MIN] and n >= p[P_HIST_MIN]:
            med = _median(ring, n, buf)
            if c > p[P_SPIKE_F] * med * max(1.0, dt_days):
                cf |= 1 << B_SPIKE
    return cf, med


@numba.njit(cache=True, nogil=True)
def _finish_night(s, p, S, F):
    """Close the night being measured; True when it makes night_nights leaking nights in a row."""
    fired = False
    if S[s, S_NIGHT_N] >= p[P_N_MININT]:
        if S[s, S_NIGHT_DAY] - S[s, S_NIGHT_LAST] > 1:
            S[s, S_NIGHT_CONSEC] = 0
        if F[s, F_NIGHT_MIN] > p[P_N_THR]:
            S[s, S_NIGHT_CONSEC] += 1
        else:
            S[s, S_NIGHT_CONSEC] = 0
        S[s, S_NIGHT_LAST] = S[s, S_NIGHT_DAY]
        fired = S[s, S_NIGHT_CONSEC] >= p[P_N_NIGHTS]
    S[s, S_NIGHT_DAY] = -1
    S[s, S_NIGHT_N] = 0
    F[s, F_NIGHT_MIN] = np.inf
    return fired


@numba.njit(cache=True, nogil=True)
def evaluate(slot, ts, value, status, pset, received, lday, lmin, emit, review, override,
             P, enabled, act, status_map, modulus, multiplier, active,
             ev_ts, ev_final, ev_initial, S, F, RING,
             out_flags, out_action, out_acc, out_cons, out_kind, out_median, out_x,
             rev_slot, rev_ts, rev_flags, rev_action):  # pragma: no cover - compiled
    """Evaluate rows (sorted by slot, then ts); return the number of revisions written.

    A revision changes the verdict on a pending read of an earlier call (ingest) or on a row
    not emitted (history before a batch period): (slot, ts, flags, action).
    """
    n = slot.shape[0]
    W = RING.shape[1]
    buf = np.empty(W, dtype=np.float64)
    nrev = 0
    for i in range(n):
        s = slot[i]
        t = ts[i]
        v = value[i]
        p = P[pset[i]]
        en = enabled[pset[i]]
        mod = modulus[s]
        flags = 0
        x = np.nan
        out_cons[i] = NO_CONS
        out_kind[i] = -1
        out_median[i] = np.nan
        if S[s, S_HAS_ACC] == 1 and t <= S[s, S_ACC_TS]:
            # not after the accepted read (a replay overlap): leave it as it stands
            out_flags[i] = 0
            out_action[i] = 0
            out_acc[i] = True
            out_x[i] = np.nan
            continue
        # gap since the previous read of any kind
        if S[s, S_HAS_LAST] == 1 and t - S[s, S_LAST_TS] >= p[P_GAP] * DAY_US and p[P_GAP] > 0:
            flags |= 1 << B_GAP
            x = (t - S[s, S_LAST_TS]) / DAY_US
        S[s, S_HAS_LAST] = 1
        S[s, S_LAST_TS] = t
        # timestamps against receipt
        if t - received[i] > p[P_FUTURE] * 1e6:
            flags |= 1 << B_FUTURE
        if received[i] - t > p[P_MAXAGE] * DAY_US:
            flags |= 1 << B_PAST
        # meter-reported status bits
        st = status[i]
        if st != 0:
            for k in range(status_map.shape[0]):
                if st & status_map[k, 0]:
                    flags |= 1 << status_map[k, 1]
        flags &= en
        rv = review[i]
        forced = rv == REVIEW_APPROVED or rv == REVIEW_OVERRIDDEN
        if rv == REVIEW_OVERRIDDEN:
            v = override[i]
        base_action = _action(flags, act)
        if rv == REVIEW_REREAD or (not forced and base_action >= 2):
            # not usable (bad timestamp, tamper, re-read requested): no consumption, no state
            out_flags[i] = flags
            out_action[i] = base_action
            out_acc[i] = forced
            out_x[i] = x
            continue
        if S[s, S_HAS_ACC] == 0:
            S[s, S_HAS_ACC] = 1
            S[s, S_ACC_TS] = t
            S[s, S_ACC_VAL] = v
            out_flags[i] = flags
            out_action[i] = base_action
            out_acc[i] = True
            out_x[i] = x
            continue
        acc_ts = S[s, S_ACC_TS]
        fo, ini, btw = _terms(s, acc_ts, t, S, ev_ts, ev_final, ev_initial, mod)
        c, kind = consumption_one(S[s, S_ACC_VAL], v, mod, multiplier[s], fo, ini, btw,
                                  np.int64(p[P_REV]), p[P_ROLL])
        dt_days = (t - acc_ts) / DAY_US
        cf, med = _candidate(s, c, kind, dt_days, p, S, RING[s], buf)
        cf &= en
        if S[s, S_HAS_PEND] == 1:
            pts = S[s, S_PEND_TS]
            fo2, ini2, btw2 = _terms(s, pts, t, S, ev_ts, ev_final, ev_initial, mod)
            c2, kind2 = consumption_one(S[s, S_PEND_VAL], v, mod, multiplier[s], fo2, ini2, btw2,
                                        np.int64(p[P_REV]), p[P_ROLL])
            dt2 = (t - pts) / DAY_US
            cf2, med2 = _candidate(s, c2, kind2, dt2, p, S, RING[s], buf)
            cf2 &= en
            pend_fell = (S[s, S_PEND_FLAGS] >> B_RESET) & 1 == 1  # the pending read fell back
            came_back = kind2 == 3 or kind2 == 4  # this read is below the pending one
            if cf == 0 and (pend_fell or came_back):
                # back in line with the accepted read: the pending read was an isolated outlier
                pf = S[s, S_PEND_FLAGS] | ((1 << B_OUTLIER) & en)
                pa = _action(pf, act)
                row = S[s, S_PEND_ROW]
                if row >= 0 and emit[row]:
                    out_flags[row] = pf
                    out_action[row] = pa
                else:
                    rev_slot[nrev] = s
                    rev_ts[nrev] = pts
                    rev_flags[nrev] = pf
                    rev_action[nrev] = pa
                    nrev += 1
                S[s, S_HAS_PEND] = 0
            elif (pend_fell and cf2 == 0) or (not pend_fell and not came_back):
                # in line with the pending read: the level really moved (an unrecorded meter change,
                # a burst); the pending read, still held for review, becomes the baseline
                S[s, S_ACC_TS] = pts
                S[s, S_ACC_VAL] = S[s, S_PEND_VAL]
                S[s, S_HAS_PEND] = 0
                S[s, S_STUCK_SINCE] = 0
                S[s, S_STUCK_FLAGGED] = 0
                acc_ts = pts
                c, kind, dt_days, cf, med = c2, kind2, dt2, cf2, med2
            # else: off from both; the pending read stays held and this one takes its place
        out_cons[i] = c
        out_kind[i] = kind
        out_median[i] = med
        if cf != 0 and not forced:
            flags |= cf
            a = _action(flags, act)
            S[s, S_HAS_PEND] = 1
            S[s, S_PEND_TS] = t
            S[s, S_PEND_VAL] = v
            S[s, S_PEND_ROW] = i
            S[s, S_PEND_FLAGS] = flags
            out_flags[i] = flags
            out_action[i] = a
            out_acc[i] = a <= 1
            out_x[i] = x
            continue
        flags |= cf
        # accepted: how the register moved
        if kind == 1:
            flags |= 1 << B_ROLLOVER
        elif kind == 2:
            flags |= 1 << B_REPLACED
        elif kind == 3:
            flags |= 1 << B_REVERSE
        if p[P_MINPD] > 0 and dt_days >= 1.0 and c >= 0 and c / dt_days < p[P_MINPD]:
            flags |= 1 << B_LOW
        # stuck register on an occupied account
        if c == 0 and kind == 0:
            if S[s, S_STUCK_SINCE] == 0:
                S[s, S_STUCK_SINCE] = acc_ts
            days = (t - S[s, S_STUCK_SINCE]) / DAY_US
            if active[s] and S[s, S_STUCK_FLAGGED] == 0 and p[P_STUCK] > 0 and days >= p[P_STUCK]:
                flags |= 1 << B_STUCK
                S[s, S_STUCK_FLAGGED] = 1
                x = days
        elif c != 0:
            S[s, S_STUCK_SINCE] = 0
            S[s, S_STUCK_FLAGGED] = 0
        # night flow, from short intervals inside the local night window
        span = t - acc_ts
        end_min = lmin[i]
        start_min = end_min - span / 60_000_000
        is_night = (span > 0 and span <= p[P_N_MAXI] * HOUR_US and start_min >= p[P_N_START] * 60
                    and end_min <= p[P_N_END] * 60 and c >= 0)
        if is_night:
            if S[s, S_NIGHT_DAY] != lday[i]:
                mn = F[s, F_NIGHT_MIN]
                if S[s, S_NIGHT_DAY] >= 0 and _finish_night(s, p, S, F):
                    flags |= 1 << B_NIGHT
                    x = mn
                S[s, S_NIGHT_DAY] = lday[i]
                S[s, S_NIGHT_N] = 0
                F[s, F_NIGHT_MIN] = np.inf
            rate = c / (span / HOUR_US)
            if rate < F[s, F_NIGHT_MIN]:
                F[s, F_NIGHT_MIN] = rate
            S[s, S_NIGHT_N] += 1
        elif S[s, S_NIGHT_DAY] >= 0 and (lday[i] > S[s, S_NIGHT_DAY] or end_min >= p[P_N_END] * 60):
            mn = F[s, F_NIGHT_MIN]
            if _finish_night(s, p, S, F):
                flags |= 1 << B_NIGHT
                x = mn
        # daily use history for the rolling median (ordinary intervals only)
        if kind <= 2 and span > 0 and cf == 0:
            d = lday[i]
            if S[s, S_DAY] != d:
                if S[s, S_DAY_SPAN] >= DAY_US // 2:
                    pos = S[s, S_RING_POS]
                    RING[s, pos] = S[s, S_DAY_CONS] / (S[s, S_DAY_SPAN] / DAY_US)
                    S[s, S_RING_POS] = (pos + 1) % W
                    if S[s, S_RING_N] < W:
                        S[s, S_RING_N] += 1
                S[s, S_DAY] = d
                S[s, S_DAY_SPAN] = 0
                S[s, S_DAY_CONS] = 0
            S[s, S_DAY_SPAN] += span
            S[s, S_DAY_CONS] += c
        S[s, S_ACC_TS] = t
        S[s, S_ACC_VAL] = v
        flags &= en
        out_flags[i] = flags
        out_action[i] = _action(flags, act)
        out_acc[i] = True
        out_x[i] = x
    return nrev


class KernelState:
    """Per-meter state between kernel calls, by slot (one slot per meter), with meter facts."""

    def __init__(self, capacity: int = 1024, history: int = 14) -> None:
        self.history = history
        self.S = np.zeros((0, NS), dtype=np.int64)
        self.F = np.zeros((0, NF), dtype=np.float64)
        self.R = np.zeros((0, history), dtype=np.float64)
        self.modulus = np.zeros(0, dtype=np.int64)
        self.multiplier = np.zeros(0, dtype=np.int64)
        self.active = np.zeros(0, dtype=np.bool_)
        self.combo = np.zeros(0, dtype=np.int64)
        self.ev_ts = np.zeros(0, dtype=np.int64)
        self.ev_final = np.zeros(0, dtype=np.int64)
        self.ev_initial = np.zeros(0, dtype=np.int64)
        self.size = 0
        self._grow(capacity)

    def _grow(self, capacity: int) -> None:
        old = len(self.S)
        if capacity <= old:
            return
        def grow(a: np.ndarray, fill) -> np.ndarray:
            out = np.empty((capacity,) + a.shape[1:], dtype=a.dtype)
            out[:old] = a
            out[old:] = fill
            return out
        self.S = grow(self.S, 0)
        self.F = grow(self.F, np.inf)
        self.R = grow(self.R, 0.0)
        self.modulus = grow(self.modulus, 1)
        self.multiplier = grow(self.multiplier, 1)
        self.active = grow(self.active, False)
        self.combo = grow(self.combo, 0)

    def add(self, n: int) -> np.ndarray:
        """Allocate ``n`` fresh slots; return their indices."""
        if self.size + n > len(self.S):
            self._grow(max(2 * len(self.S), self.size + n))
        idx = np.arange(self.size, self.size + n, dtype=np.int64)
        self.reset(slice(self.size, self.size + n))
        self.size += n
        return idx

    def reset(self, idx: np.ndarray | slice) -> None:
        """Forget what the slots knew (their meter facts and replacement events stay)."""
        events = self.S[idx][:, [S_EV_START, S_EV_COUNT]]
        self.S[idx] = 0
        self.S[idx, S_EV_START] = events[:, 0]
        self.S[idx, S_EV_COUNT] = events[:, 1]
        self.S[idx, S_NIGHT_DAY] = -1
        self.S[idx, S_NIGHT_LAST] = -10
        self.S[idx, S_DAY] = -1
        self.S[idx, S_PEND_ROW] = -1
        self.F[idx] = np.inf
        self.R[idx] = 0.0

    def set_events(self, idx: np.ndarray, events: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
        """Replacement events per slot: (installed_at µs, final register of the removed device,
        initial register of the new one), sorted by time."""
        starts, counts = [], []
        parts_ts, parts_f, parts_i = [self.ev_ts], [self.ev_final], [self.ev_initial]
        base = len(self.ev_ts)
        for ets, efin, eini in events:
            starts.append(base)
            counts.append(len(ets))
            base += len(ets)
            parts_ts.append(ets)
            parts_f.append(efin)
            parts_i.append(eini)
        self.ev_ts = np.concatenate(parts_ts).astype(np.int64)
        self.ev_final = np.concatenate(parts_f).astype(np.int64)
        self.ev_initial = np.concatenate(parts_i).astype(np.int64)
        self.S[idx, S_EV_START] = np.array(starts, dtype=np.int64)
        self.S[idx, S_EV_COUNT] = np.array(counts, dtype=np.int64)


def run(state: KernelState, rows: dict[str, np.ndarray], params: np.ndarray, enabled: np.ndarray,
        actions: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Evaluate sorted rows; return per-row outputs and the revisions.

    ``rows`` holds equal-length arrays: slot, ts (µs), value, status, pset, received (µs),
    lday (local day number), lmin (local minute of day), emit, review, override.
    """
    n = len(rows["slot"])
    out = {
        "flags": np.zeros(n, dtype=np.int64),
        "action": np.zeros(n, dtype=np.int8),
        "accepted": np.zeros(n, dtype=np.bool_),
        "consumption": np.zeros(n, dtype=np.int64),
        "kind": np.zeros(n, dtype=np.int8),
        "median": np.zeros(n, dtype=np.float64),
        "x": np.zeros(n, dtype=np.float64),
    }
    rev = {
        "slot": np.zeros(n, dtype=np.int64),
        "ts": np.zeros(n, dtype=np.int64),
        "flags": np.zeros(n, dtype=np.int64),
        "action": np.zeros(n, dtype=np.int8),
    }
    if n:
        state.S[rows["slot"], S_PEND_ROW] = -1
        nrev = evaluate(
            rows["slot"], rows["ts"], rows["value"], rows["status"], rows["pset"], rows["received"],
            rows["lday"], rows["lmin"], rows["emit"], rows["review"], rows["override"],
            params, enabled, actions, STATUS_MAP, state.modulus, state.multiplier, state.active,
            state.ev_ts, state.ev_final, state.ev_initial, state.S, state.F, state.R,
            out["flags"], out["action"], out["accepted"], out["consumption"], out["kind"], out["median"], out["x"],
            rev["slot"], rev["ts"], rev["flags"], rev["action"],
        )
    else:
        nrev = 0
    return out, {k: v[:nrev] for k, v in rev.items()}


def warm_up() -> None:
    """Load (or compile, the first time on a machine) the kernel before timing-sensitive work."""
    from meterline.ingest.vee.config import VeeConfig

    cfg = VeeConfig()
    params, enabled = cfg.param_table([(None, None)])
    state = KernelState(1, cfg.history_days)
    state.add(1)
    n = 2
    rows = {"slot": np.zeros(n, np.int64), "ts": np.array([0, DAY_US], np.int64), "value": np.array([0, 1], np.int64),
            "status": np.zeros(n, np.int64), "pset": np.zeros(n, np.int64), "received": np.array([0, DAY_US], np.int64),
            "lday": np.array([0, 1], np.int64), "lmin": np.zeros(n, np.int64), "emit": np.ones(n, np.bool_),
            "review": np.zeros(n, np.int64), "override": np.zeros(n, np.int64)}
    run(state, rows, params, enabled, cfg.actions())
