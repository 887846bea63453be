"""Circuit breaker with resilience4j's semantics, as a pure state machine.

This follows resilience4j (``resilience4j/resilience4j@af9e7c9``, REFERENCES.md
section 1a): ``CircuitBreakerConfig``, ``CircuitBreakerStateMachine`` with its
``ClosedState`` / ``OpenState`` / ``HalfOpenState``, ``CircuitBreakerMetrics``,
``FixedSizeSlidingWindowMetrics`` and ``SlidingTimeWindowMetrics``. There is no
SimPy in here: every method takes the current simulated time ``now`` (seconds),
so a lab can drive it from any event loop and a test can step it transition by
transition.

Name mapping (resilience4j -> here)::

    failureRateThreshold                          failure_rate_threshold
    slowCallRateThreshold                         slow_call_rate_threshold
    slowCallDurationThreshold                     slow_call_duration_threshold
    slidingWindowType / slidingWindowSize         sliding_window_type / sliding_window_size
    minimumNumberOfCalls                          minimum_number_of_calls
    waitDurationInOpenState                       wait_duration_in_open_state
    waitIntervalFunctionInOpenState               wait_interval_function
    permittedNumberOfCallsInHalfOpenState         permitted_number_of_calls_in_half_open_state
    automaticTransitionFromOpenToHalfOpenEnabled  automatic_transition_from_open_to_half_open_enabled
    maxWaitDurationInHalfOpenState                max_wait_duration_in_half_open_state
    CircuitBreakerConfig.ofDefaults()             CircuitBreakerConfig.resilience4j_defaults()
    tryAcquirePermission / onSuccess / onError    try_acquire_permission / on_success / on_error
    getMetrics().getFailureRate()/getSlowCallRate()  failure_rate(now) / slow_call_rate(now)
    getMetrics().getNumberOfNotPermittedCalls()   not_permitted (a running total, see below)
    OpenState.attempts                            attempts
    state transition events                       transitions

Behaviour taken from the Java source (and tested in tests/test_breaker.py):

* CLOSED records SUCCESS / ERROR / SLOW_SUCCESS / SLOW_ERROR (slow means
  ``duration > slow_call_duration_threshold``, strictly) and checks the
  thresholds after every call. No decision while the window holds fewer than
  the minimum number of calls (``min(minimum, size)`` for COUNT_BASED, not
  clamped for TIME_BASED). Opens when ``failure% >= threshold`` or
  ``slow% >= threshold``.
* OPEN: ``attempts += 1``; wait = ``wait_interval_function(attempts)`` or the
  fixed wait. Rejects (``not_permitted += 1``) until the first call strictly
  after ``opened_at + wait`` (``Instant.isAfter``), which moves to HALF_OPEN
  and then asks HALF_OPEN for a permit. OPEN keeps the previous state's window:
  a late result of a call permitted before opening is *recorded* there
  (``OpenState.onError`` calls ``circuitBreakerMetrics.onError``) but never
  evaluated, so it shows up in ``failure_rate`` but cannot cause a transition.
* HALF_OPEN: a fresh COUNT_BASED window of ``permitted`` calls with minimum
  ``min(minimum, permitted)``; an atomic-style permit counter. Once the
  minimum is reached: thresholds exceeded -> OPEN (attempts keeps growing),
  else -> CLOSED (attempts back to 0, fresh CLOSED window). Any result arriving
  in HALF_OPEN counts, including one from a call permitted while CLOSED, as in
  resilience4j.
* Timers (``automaticTransitionFromOpenToHalfOpenEnabled``,
  ``maxWaitDurationInHalfOpenState``): resilience4j schedules them on an
  executor; here they are deadlines, fired by ``tick(now)`` and also at the
  start of every other call, so a caller that forgets ``tick`` still sees the
  same states. A timer fires at its deadline (``>=``) and the transition is
  stamped with the deadline, not with the ``now`` that noticed it.

Deliberate differences, all small:

* Time is float seconds; resilience4j truncates waits to milliseconds. Like
  its ``toMillis() >= 1`` check, a max half-open wait below 1 ms means "off".
* Rates are float64 percentages; Java computes them in float32. The two can
  disagree only when a rate and the threshold differ by less than a float32
  ulp (e.g. never for integer thresholds).
* ``not_permitted`` is one total over the breaker's life. Java keeps the count
  in each state's metrics object (reset on every transition) and, when OPEN
  expires but HALF_OPEN has no permit left, increments it in both objects.
* Not modelled: DISABLED / METRICS_ONLY / FORCED_OPEN, record/ignore
  predicates, ``releasePermission``, ``transitionOnResult``,
  ``transitionToStateAfterWaitDuration`` (always OPEN here), events.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from enum import Enum
from typing import Callable, NamedTuple

__all__ = [
    "State",
    "SlidingWindowType",
    "CircuitBreakerConfig",
    "CircuitBreaker",
    "BreakerSnapshot",
]

_INF = math.inf
_floor = math.floor


class State(str, Enum):
    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"


class SlidingWindowType(str, Enum):
    COUNT_BASED = "COUNT_BASED"
    TIME_BASED = "TIME_BASED"


_CLOSED, _OPEN, _HALF_OPEN = State.CLOSED, State.OPEN, State.HALF_OPEN

# Outcome codes: bit 0 = failed, bit 1 = slow, bit 2 = "slot in use" (so an
# empty COUNT_BASED slot, 0, is told apart from a recorded SUCCESS).
_SUCCESS, _ERROR, _SLOW_SUCCESS, _SLOW_ERROR = 4, 5, 6, 7


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _require(ok: bool, name: str, allowed: str, value) -> None:
    if not ok:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


@dataclass(frozen=True)
class CircuitBreakerConfig:
    """resilience4j's ``CircuitBreakerConfig`` defaults; durations in seconds."""

    failure_rate_threshold: float = 50.0
    slow_call_rate_threshold: float = 100.0
    slow_call_duration_threshold: float = 60.0
    sliding_window_type: str = "COUNT_BASED"
    sliding_window_size: int = 100
    minimum_number_of_calls: int = 100
    wait_duration_in_open_state: float = 60.0
    permitted_number_of_calls_in_half_open_state: int = 10
    automatic_transition_from_open_to_half_open_enabled: bool = False
    max_wait_duration_in_half_open_state: float = 0.0
    wait_interval_function: Callable[[int], float] | None = None

    def __post_init__(self):
        # Ranges are resilience4j's Builder checks, converted to seconds.
        for name in ("failure_rate_threshold", "slow_call_rate_threshold"):
            v = getattr(self, name)
            _require(_is_real(v) and 0 < v <= 100, name, "a percentage in (0, 100]", v)
        v = self.slow_call_duration_threshold
        _require(_is_real(v) and v >= 1e-9, "slow_call_duration_threshold",
                 "a duration >= 1e-9 s (1 ns)", v)
        v = self.sliding_window_type
        _require(v in ("COUNT_BASED", "TIME_BASED"), "sliding_window_type",
                 "'COUNT_BASED' or 'TIME_BASED'", v)
        object.__setattr__(self, "sliding_window_type", SlidingWindowType(v))
        for name in ("sliding_window_size", "minimum_number_of_calls",
                     "permitted_number_of_calls_in_half_open_state"):
            v = getattr(self, name)
            _require(_is_int(v) and v >= 1, name, "an integer >= 1", v)
        v = self.wait_duration_in_open_state
        _require(_is_real(v) and v >= 1e-3, "wait_duration_in_open_state",
                 "a duration >= 0.001 s (1 ms)", v)
        v = self.max_wait_duration_in_half_open_state
        _require(_is_real(v) and v >= 0, "max_wait_duration_in_half_open_state",
                 "a duration >= 0 s (0 = off)", v)
        v = self.automatic_transition_from_open_to_half_open_enabled
        _require(isinstance(v, bool), "automatic_transition_from_open_to_half_open_enabled",
                 "a bool", v)
        v = self.wait_interval_function
        _require(v is None or callable(v), "wait_interval_function",
                 "None or a callable attempts -> seconds", v)

    @classmethod
    def resilience4j_defaults(cls) -> "CircuitBreakerConfig":
        """``CircuitBreakerConfig.ofDefaults()``."""
        return cls()


class _CountWindow:
    """FixedSizeSlidingWindowMetrics: ring of the last ``size`` outcomes.

    Totals are kept incrementally (subtract-on-evict), so recording is O(1)
    and allocation-free.
    """

    __slots__ = ("size", "min_calls", "ring", "head", "total", "failed", "slow")

    def __init__(self, size: int, min_calls: int):
        self.size = size
        self.min_calls = min_calls
        self.ring = [0] * size
        self.head = 0
        self.total = self.failed = self.slow = 0

    def advance(self, now: float) -> None:
        pass

    def record(self, now: float, code: int) -> None:
        ring = self.ring
        i = self.head
        old = ring[i]
        if old:  # full ring: evict the oldest; total is unchanged (one out, one in)
            self.failed += (code & 1) - (old & 1)
            self.slow += ((code >> 1) & 1) - ((old >> 1) & 1)
        else:
            self.total += 1
            self.failed += code & 1
            self.slow += (code >> 1) & 1
        ring[i] = code
        i += 1
        self.head = 0 if i == self.size else i


class _TimeWindow:
    """SlidingTimeWindowMetrics: ``size`` one-second buckets, subtract-on-evict.

    The head bucket is epoch second ``floor(now)``; the window covers seconds
    ``floor(now) - size + 1 .. floor(now)``. Buckets always hold consecutive
    seconds, so only the head's second is stored. Moving forward costs one
    step per elapsed second, capped at ``size`` (O(1) amortised).
    """

    __slots__ = ("size", "min_calls", "b_total", "b_failed", "b_slow",
                 "head", "head_sec", "total", "failed", "slow")

    def __init__(self, size: int, min_calls: int):
        self.size = size
        self.min_calls = min_calls
        self.b_total = [0] * size
        self.b_failed = [0] * size
        self.b_slow = [0] * size
        self.head = 0
        self.head_sec = None  # set by the first advance
        self.total = self.failed = self.slow = 0

    def advance(self, now: float) -> None:
        sec = _floor(now)
        head_sec = self.head_sec
        if head_sec is None:
            self.head_sec = sec
            return
        diff = sec - head_sec
        if diff <= 0:  # same second (or time went backwards: stay on the head)
            return
        n = self.size
        steps = diff if diff < n else n
        bt, bf, bs = self.b_total, self.b_failed, self.b_slow
        i = self.head
        for _ in range(steps):
            i += 1
            if i == n:
                i = 0
            if bt[i]:
                self.total -= bt[i]
                self.failed -= bf[i]
                self.slow -= bs[i]
                bt[i] = bf[i] = bs[i] = 0
        self.head = i
        self.head_sec = sec

    def record(self, now: float, code: int) -> None:
        if _floor(now) != self.head_sec:
            self.advance(now)
        i = self.head
        f = code & 1
        s = (code >> 1) & 1
        self.b_total[i] += 1
        self.b_failed[i] += f
        self.b_slow[i] += s
        self.total += 1
        self.failed += f
        self.slow += s


class BreakerSnapshot(NamedTuple):
    state: State
    buffered_calls: int
    failed_calls: int
    slow_calls: int
    failure_rate: float
    slow_call_rate: float


class CircuitBreaker:
    """resilience4j's ``CircuitBreakerStateMachine`` on a simulated clock.

    Usage per request: ``tick(now)`` (optional), ``try_acquire_permission(now)``;
    if permitted, later ``on_success(t, duration)`` or ``on_error(t, duration)``.
    """

    __slots__ = ("config", "name", "_state", "_win", "transitions", "not_permitted",
                 "attempts", "_open_until", "_deadline", "_permits", "_slow_thr",
                 "_frt", "_srt", "_wait", "_wait_fn", "_auto", "_max_wait",
                 "_permitted", "_half_open_min")

    def __init__(self, config: CircuitBreakerConfig = CircuitBreakerConfig(), name="breaker"):
        self.config = config
        self.name = name
        self.transitions: list[tuple[float, State, State]] = []
        self.not_permitted = 0
        self.attempts = 0
        # Config copied into slots: these are read on every call.
        self._slow_thr = float(config.slow_call_duration_threshold)
        self._frt = float(config.failure_rate_threshold)
        self._srt = float(config.slow_call_rate_threshold)
        self._wait = float(config.wait_duration_in_open_state)
        self._wait_fn = config.wait_interval_function
        self._auto = config.automatic_transition_from_open_to_half_open_enabled
        mw = float(config.max_wait_duration_in_half_open_state)
        self._max_wait = mw if mw >= 1e-3 else 0.0  # resilience4j: toMillis() >= 1
        self._permitted = config.permitted_number_of_calls_in_half_open_state
        self._half_open_min = min(config.minimum_number_of_calls, self._permitted)
        self._state = _CLOSED
        self._win = self._closed_window()
        self._open_until = _INF  # OPEN permits only when now > this
        self._deadline = _INF  # next timer: auto OPEN->HALF_OPEN or half-open expiry
        self._permits = 0

    # -- public API -------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def open_until(self) -> float | None:
        """While OPEN: the first call strictly after this time is let through."""
        return self._open_until if self._state is _OPEN else None

    @property
    def next_deadline(self) -> float:
        """Time of the next timer-driven transition (inf if none), for scheduling ``tick``."""
        return self._deadline

    def tick(self, now: float) -> None:
        """Fire timer-driven transitions due by ``now``; one comparison when none is."""
        if now >= self._deadline:
            self._fire_timers(now)

    def try_acquire_permission(self, now: float) -> bool:
        """``tryAcquirePermission``: may move OPEN -> HALF_OPEN; counts rejections."""
        state = self._state
        if state is _CLOSED:
            return True
        if now >= self._deadline:
            self._fire_timers(now)
            state = self._state
        if state is _OPEN:
            if now > self._open_until:  # Instant.isAfter: strictly after
                self._to_half_open(now)
            else:
                self.not_permitted += 1
                return False
        if self._permits > 0:
            self._permits -= 1
            return True
        self.not_permitted += 1
        return False

    def on_success(self, now: float, duration: float) -> None:
        """Record a successful call that took ``duration`` seconds, finishing at ``now``."""
        if now >= self._deadline:
            self._fire_timers(now)
        self._record(now, _SLOW_SUCCESS if duration > self._slow_thr else _SUCCESS)

    def on_error(self, now: float, duration: float) -> None:
        """Record a failed call that took ``duration`` seconds, finishing at ``now``."""
        if now >= self._deadline:
            self._fire_timers(now)
        self._record(now, _SLOW_ERROR if duration > self._slow_thr else _ERROR)

    def failure_rate(self, now: float) -> float:
        """Percent failed in the current state's window; -1.0 below the minimum calls."""
        return self._rate(now, "failed")

    def slow_call_rate(self, now: float) -> float:
        """Percent slow in the current state's window; -1.0 below the minimum calls."""
        return self._rate(now, "slow")

    def snapshot(self, now: float) -> BreakerSnapshot:
        """State plus window counts, for plots and logs (not for the hot path)."""
        win = self._current_window(now)
        return BreakerSnapshot(self._state, win.total, win.failed, win.slow,
                               self.failure_rate(now), self.slow_call_rate(now))

    def in_state(self, times, state: State):
        """A boolean mask over ``times`` (numpy array): True where the breaker was in ``state`` then."""
        import numpy as np

        tr, times = self.transitions, np.asarray(times)
        mask = np.zeros(times.size, dtype=bool)
        for k, (t, _, new) in enumerate(tr):
            if new == state:
                end = tr[k + 1][0] if k + 1 < len(tr) else np.inf
                mask |= (times >= t) & (times < end)
        return mask

    def timeline(self, horizon: float) -> list[tuple[float, str]]:
        """(time, state) steps from 0 to ``horizon``, starting CLOSED."""
        rows = [(0.0, State.CLOSED.value)] + [(t, new.value) for t, _, new in self.transitions]
        return rows + [(horizon, rows[-1][1])]

    def __repr__(self) -> str:
        return (f"CircuitBreaker({self.name!r}, state={self._state.value}, "
                f"attempts={self.attempts}, not_permitted={self.not_permitted})")

    # -- internals ----------------------------------------------------------

    def _rate(self, now: float, count: str) -> float:
        win = self._current_window(now)
        total = win.total
        if total == 0 or total < win.min_calls:
            return -1.0
        return getattr(win, count) * 100.0 / total

    def _current_window(self, now: float):
        if now >= self._deadline:
            self._fire_timers(now)
        win = self._win
        win.advance(now)
        return win

    def _closed_window(self):
        cfg = self.config
        size = cfg.sliding_window_size
        if cfg.sliding_window_type == "COUNT_BASED":
            return _CountWindow(size, min(cfg.minimum_number_of_calls, size))
        return _TimeWindow(size, cfg.minimum_number_of_calls)

    def _record(self, now: float, code: int) -> None:
        win = self._win
        win.record(now, code)
        state = self._state
        if state is _OPEN:
            return  # OpenState records into the carried-over metrics, never evaluates
        total = win.total
        if total < win.min_calls:  # min_calls >= 1, so this also covers total == 0
            return
        exceeded = (win.failed * 100.0 / total >= self._frt
                    or win.slow * 100.0 / total >= self._srt)
        if exceeded:
            self._to_open(now)
        elif state is _HALF_OPEN:
            self._to_closed(now)

    def _fire_timers(self, now: float) -> None:
        # Several timers may be due if the caller skipped ticks; replay them in order.
        while now >= self._deadline:
            t = self._deadline
            if self._state is _OPEN:
                self._to_half_open(t)
            else:  # HALF_OPEN past maxWaitDurationInHalfOpenState
                self._to_open(t)

    def _transition(self, t: float, new: State) -> None:
        self.transitions.append((t, self._state, new))
        self._state = new

    def _to_open(self, t: float) -> None:
        self.attempts += 1
        fn = self._wait_fn
        wait = self._wait if fn is None else float(fn(self.attempts))
        if not wait >= 0:
            raise ValueError(f"wait_interval_function({self.attempts}) must return "
                             f"a duration >= 0 s, got {wait!r}")
        self._open_until = t + wait
        self._deadline = t + wait if self._auto else _INF
        self._permits = 0
        self._transition(t, _OPEN)  # the window is kept: OpenState shares it

    def _to_half_open(self, t: float) -> None:
        self._win = _CountWindow(self._permitted, self._half_open_min)
        self._permits = self._permitted
        self._open_until = _INF
        self._deadline = t + self._max_wait if self._max_wait else _INF
        self._transition(t, _HALF_OPEN)

    def _to_closed(self, t: float) -> None:
        self.attempts = 0
        self._win = self._closed_window()
        self._open_until = _INF
        self._deadline = _INF
        self._transition(t, _CLOSED)
