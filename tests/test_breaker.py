"""sim.breaker against resilience4j's CircuitBreakerStateMachine, transition by transition."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings, strategies as st

from sim.breaker import CircuitBreaker, CircuitBreakerConfig, State

C, O, H = State.CLOSED, State.OPEN, State.HALF_OPEN


def cfg(**kw) -> CircuitBreakerConfig:
    """Small-window config for tests; defaults overridden per test."""
    base = dict(sliding_window_size=10, minimum_number_of_calls=10,
                wait_duration_in_open_state=5.0, permitted_number_of_calls_in_half_open_state=3)
    base.update(kw)
    return CircuitBreakerConfig(**base)


def call(b: CircuitBreaker, now: float, ok: bool, duration: float = 0.1) -> bool:
    """One request: permission, then the result at the same instant."""
    if not b.try_acquire_permission(now):
        return False
    (b.on_success if ok else b.on_error)(now, duration)
    return True


def open_breaker(b: CircuitBreaker, now: float) -> None:
    """Drive a CLOSED breaker to OPEN with failures at time ``now``."""
    while b.state is C:
        assert call(b, now, ok=False)
    assert b.state is O


def to_half_open(b: CircuitBreaker, opened_at: float, wait: float) -> float:
    """First call strictly after the wait moves OPEN -> HALF_OPEN (and uses a permit)."""
    t = opened_at + wait + 0.001
    assert b.try_acquire_permission(t)
    assert b.state is H
    return t


# -- configuration -----------------------------------------------------------

def test_defaults_equal_resilience4j_table():
    d = CircuitBreakerConfig.resilience4j_defaults()
    assert d == CircuitBreakerConfig()
    assert d.failure_rate_threshold == 50
    assert d.slow_call_rate_threshold == 100
    assert d.slow_call_duration_threshold == 60.0
    assert d.sliding_window_type == "COUNT_BASED"
    assert d.sliding_window_size == 100
    assert d.minimum_number_of_calls == 100
    assert d.wait_duration_in_open_state == 60.0
    assert d.permitted_number_of_calls_in_half_open_state == 10
    assert d.automatic_transition_from_open_to_half_open_enabled is False
    assert d.max_wait_duration_in_half_open_state == 0.0
    assert d.wait_interval_function is None
    assert CircuitBreaker().state is C


@pytest.mark.parametrize("field, value, allowed", [
    ("failure_rate_threshold", 0, r"\(0, 100\]"),
    ("failure_rate_threshold", 100.5, r"\(0, 100\]"),
    ("slow_call_rate_threshold", 0.0, r"\(0, 100\]"),
    ("slow_call_rate_threshold", 101, r"\(0, 100\]"),
    ("slow_call_duration_threshold", 0.0, r">= 1e-9 s"),
    ("sliding_window_type", "SLIDING", r"'COUNT_BASED' or 'TIME_BASED'"),
    ("sliding_window_size", 0, r"integer >= 1"),
    ("sliding_window_size", 2.5, r"integer >= 1"),
    ("minimum_number_of_calls", 0, r"integer >= 1"),
    ("minimum_number_of_calls", True, r"integer >= 1"),
    ("permitted_number_of_calls_in_half_open_state", 0, r"integer >= 1"),
    ("wait_duration_in_open_state", 0.0005, r">= 0.001 s"),
    ("wait_duration_in_open_state", math.nan, r">= 0.001 s"),
    ("max_wait_duration_in_half_open_state", -1.0, r">= 0 s"),
    ("automatic_transition_from_open_to_half_open_enabled", "yes", r"a bool"),
    ("wait_interval_function", 30.0, r"callable"),
])
def test_validation_error_names_field_and_range(field, value, allowed):
    with pytest.raises(ValueError, match=rf"^{field} must be .*{allowed}"):
        CircuitBreakerConfig(**{field: value})


def test_time_based_type_accepted_and_normalised():
    c = cfg(sliding_window_type="TIME_BASED")
    assert c.sliding_window_type == "TIME_BASED"


# -- CLOSED: minimum calls and thresholds -------------------------------------

def test_no_decision_below_minimum_calls():
    b = CircuitBreaker(cfg())  # window 10, minimum 10
    for i in range(9):
        call(b, i, ok=False)
        assert b.state is C
        assert b.failure_rate(i) == -1.0
        assert b.slow_call_rate(i) == -1.0
    call(b, 9, ok=False)  # 10th call: 100% >= 50%
    assert b.state is O
    assert b.transitions == [(9, C, O)]


def test_opens_at_exactly_5_of_10_not_earlier():
    b = CircuitBreaker(cfg(failure_rate_threshold=50))
    for i in range(9):  # S F S F S F S F S : below minimum, no decision
        call(b, i, ok=(i % 2 == 0))
        assert b.state is C
    call(b, 9, ok=False)  # 5 failures of 10 = 50% >= 50
    assert b.state is O
    assert b.failure_rate(9) == 50.0
    assert b.transitions == [(9, C, O)]


def test_rate_reaching_threshold_opens_on_that_call():
    b = CircuitBreaker(cfg(minimum_number_of_calls=4))
    for i, ok in enumerate([True, True, True, False]):
        call(b, i, ok)
    assert b.failure_rate(3) == 25.0
    call(b, 4, ok=False)  # 2/5 = 40% < 50
    assert b.state is C and b.failure_rate(4) == 40.0
    call(b, 5, ok=False)  # 3/6 = 50% >= 50: opens on this call
    assert b.state is O
    assert b.transitions == [(5, C, O)]


def test_4_of_10_stays_closed():
    b = CircuitBreaker(cfg())
    for i in range(10):
        call(b, i, ok=i >= 4)
    assert b.state is C
    assert b.failure_rate(9) == 40.0


def test_slow_call_rate_opens_and_equal_duration_is_not_slow():
    b = CircuitBreaker(cfg(minimum_number_of_calls=2, slow_call_duration_threshold=1.0,
                           slow_call_rate_threshold=50))
    call(b, 0, ok=True, duration=1.0)  # == threshold: not slow
    call(b, 1, ok=True, duration=1.0)
    assert b.slow_call_rate(1) == 0.0 and b.state is C
    call(b, 2, ok=True, duration=1.5)  # 1/3 slow
    assert b.slow_call_rate(2) == pytest.approx(100 / 3) and b.state is C
    assert b.failure_rate(2) == 0.0
    call(b, 3, ok=True, duration=1.0000001)  # 2/4 = 50% slow, no failures
    assert b.state is O
    assert b.transitions == [(3, C, O)]


def test_slow_error_counts_as_failed_and_slow():
    b = CircuitBreaker(cfg(minimum_number_of_calls=2, slow_call_duration_threshold=1.0,
                           failure_rate_threshold=100, slow_call_rate_threshold=100))
    call(b, 0, ok=True)
    call(b, 1, ok=False, duration=2.0)
    assert b.failure_rate(1) == 50.0
    assert b.slow_call_rate(1) == 50.0
    snap = b.snapshot(1)
    assert (snap.buffered_calls, snap.failed_calls, snap.slow_calls) == (2, 1, 1)


# -- OPEN -----------------------------------------------------------------------

def test_open_rejects_and_counts_not_permitted():
    b = CircuitBreaker(cfg())
    open_breaker(b, 100.0)
    assert b.attempts == 1
    assert b.open_until == 105.0
    for k, t in enumerate([100.0, 101.0, 104.999], start=1):
        assert not b.try_acquire_permission(t)
        assert b.not_permitted == k
    assert b.state is O


def test_open_to_half_open_only_strictly_after_wait():
    b = CircuitBreaker(cfg())
    open_breaker(b, 10.0)
    assert not b.try_acquire_permission(15.0)  # exactly opened_at + wait: still rejected
    assert b.state is O and b.not_permitted == 1
    b.tick(1000.0)  # no automatic transition configured: tick does nothing
    assert b.state is O
    assert b.try_acquire_permission(15.5)  # first call after the wait: HALF_OPEN + permit
    assert b.state is H
    assert b.transitions == [(10.0, C, O), (15.5, O, H)]


def test_automatic_transition_via_tick():
    b = CircuitBreaker(cfg(automatic_transition_from_open_to_half_open_enabled=True))
    open_breaker(b, 10.0)
    assert b.next_deadline == 15.0
    b.tick(14.999)
    assert b.state is O
    b.tick(15.0)  # the scheduled timer fires at the deadline
    assert b.state is H
    assert b.transitions == [(10.0, C, O), (15.0, O, H)]
    assert b.next_deadline == math.inf


def test_automatic_transition_fires_lazily_at_its_deadline():
    b = CircuitBreaker(cfg(automatic_transition_from_open_to_half_open_enabled=True))
    open_breaker(b, 10.0)
    assert b.try_acquire_permission(40.0)  # no tick called: the timer still fired at 15
    assert b.transitions == [(10.0, C, O), (15.0, O, H)]


# -- HALF_OPEN ----------------------------------------------------------------

def test_half_open_permits_exactly_n_then_rejects():
    b = CircuitBreaker(cfg(permitted_number_of_calls_in_half_open_state=3))
    open_breaker(b, 0.0)
    t = to_half_open(b, 0.0, 5.0)  # permit 1 of 3
    assert b.try_acquire_permission(t)  # 2
    assert b.try_acquire_permission(t)  # 3
    before = b.not_permitted
    assert not b.try_acquire_permission(t)
    assert not b.try_acquire_permission(t + 1)
    assert b.not_permitted == before + 2
    assert b.state is H


def test_half_open_success_closes_and_resets_attempts():
    b = CircuitBreaker(cfg(permitted_number_of_calls_in_half_open_state=3))
    open_breaker(b, 0.0)
    t = to_half_open(b, 0.0, 5.0)
    b.on_success(t, 0.1)
    assert b.try_acquire_permission(t)
    b.on_success(t, 0.1)
    assert b.state is H and b.failure_rate(t) == -1.0  # 2 < min(10, 3)
    assert b.try_acquire_permission(t)
    b.on_error(t + 1, 0.1)  # 1/3 = 33% < 50
    assert b.state is C
    assert b.attempts == 0
    assert b.transitions == [(0.0, C, O), (t, O, H), (t + 1, H, C)]
    # A fresh CLOSED window: the old failures are gone.
    assert b.snapshot(t + 1).buffered_calls == 0
    assert b.failure_rate(t + 1) == -1.0


def test_half_open_decides_at_min_of_minimum_and_permitted():
    b = CircuitBreaker(cfg(minimum_number_of_calls=2, sliding_window_size=4,
                           permitted_number_of_calls_in_half_open_state=5))
    open_breaker(b, 0.0)
    t = to_half_open(b, 0.0, 5.0)
    b.on_success(t, 0.1)
    assert b.state is H
    assert b.try_acquire_permission(t)
    b.on_error(t, 0.1)  # 2 calls = min(2, 5): 50% -> OPEN
    assert b.state is O
    assert b.attempts == 2


def test_half_open_failure_reopens_with_exponential_wait():
    def backoff(attempts: int) -> float:
        return 10.0 * 2 ** (attempts - 1)

    b = CircuitBreaker(cfg(wait_interval_function=backoff, wait_duration_in_open_state=1.0,
                           permitted_number_of_calls_in_half_open_state=1))
    open_breaker(b, 0.0)
    assert b.attempts == 1 and b.open_until == 10.0  # the function overrides the fixed wait
    opened = 0.0
    for attempts, wait in [(2, 20.0), (3, 40.0), (4, 80.0)]:
        prev_wait = backoff(attempts - 1)
        assert not b.try_acquire_permission(opened + prev_wait)
        t = to_half_open(b, opened, prev_wait)
        assert b.attempts == attempts - 1  # HALF_OPEN keeps the count
        b.on_error(t, 0.1)  # the single probe fails
        assert b.state is O
        assert b.attempts == attempts
        assert b.open_until == t + wait
        opened = t
    t = to_half_open(b, opened, 80.0)
    b.on_success(t, 0.1)
    assert b.state is C and b.attempts == 0
    open_breaker(b, t + 1)
    assert b.attempts == 1 and b.open_until == t + 1 + 10.0  # back to the first wait
    assert [(a, z) for _, a, z in b.transitions] == [
        (C, O), (O, H), (H, O), (O, H), (H, O), (O, H), (H, O), (O, H), (H, C), (C, O)]


def test_max_wait_in_half_open_expiry_goes_to_open():
    b = CircuitBreaker(cfg(max_wait_duration_in_half_open_state=5.0))
    open_breaker(b, 0.0)
    t = to_half_open(b, 0.0, 5.0)  # one probe in flight, no result yet
    assert b.next_deadline == t + 5.0
    b.tick(t + 4.999)
    assert b.state is H
    b.tick(t + 5.0)
    assert b.state is O
    assert b.attempts == 2
    assert b.transitions[-1] == (t + 5.0, H, O)
    assert b.open_until == t + 5.0 + 5.0
    # The probe's late success lands in OPEN: recorded, but no transition.
    b.on_success(t + 6, 0.1)
    assert b.state is O and len(b.transitions) == 3


def test_max_wait_below_one_millisecond_is_off():
    b = CircuitBreaker(cfg(max_wait_duration_in_half_open_state=0.0005))
    open_breaker(b, 0.0)
    t = to_half_open(b, 0.0, 5.0)
    b.tick(t + 1e6)
    assert b.state is H


def test_timers_chain_when_ticks_are_skipped():
    b = CircuitBreaker(cfg(automatic_transition_from_open_to_half_open_enabled=True,
                           max_wait_duration_in_half_open_state=2.0))
    open_breaker(b, 0.0)
    b.tick(12.5)  # 5: O->H, 7: H->O, 12: O->H
    assert [(t, a, z) for t, a, z in b.transitions] == [
        (0.0, C, O), (5.0, O, H), (7.0, H, O), (12.0, O, H)]
    assert b.attempts == 2


# -- windows ------------------------------------------------------------------

def test_count_based_eviction_rolls_old_outcomes_out():
    b = CircuitBreaker(cfg(sliding_window_size=4, minimum_number_of_calls=4,
                           failure_rate_threshold=60))
    expected = []
    for i, ok in enumerate([False, False, True, True, True, False, False]):
        call(b, i, ok)
        expected.append(b.failure_rate(i))
    # rates over the last 4 calls only (index 4: F S S S = 25%, not 2/5 cumulative)
    assert expected == [-1.0, -1.0, -1.0, 50.0, 25.0, 25.0, 50.0]
    assert b.state is C
    call(b, 7, ok=False)  # S F F F = 75% >= 60
    assert b.state is O


def test_count_based_minimum_is_clamped_to_window_size():
    b = CircuitBreaker(cfg(sliding_window_size=2, minimum_number_of_calls=5))
    call(b, 0, ok=False)
    assert b.state is C
    call(b, 1, ok=False)  # min(5, 2) = 2 calls suffice
    assert b.state is O


def test_time_based_minimum_is_not_clamped():
    b = CircuitBreaker(cfg(sliding_window_type="TIME_BASED", sliding_window_size=2,
                           minimum_number_of_calls=5))
    for i in range(4):
        call(b, 0.1 * i, ok=False)
        assert b.state is C and b.failure_rate(0.1 * i) == -1.0
    call(b, 0.5, ok=False)
    assert b.state is O


def test_time_based_failures_older_than_window_roll_out():
    b = CircuitBreaker(cfg(sliding_window_type="TIME_BASED", sliding_window_size=10,
                           minimum_number_of_calls=2, failure_rate_threshold=100))
    call(b, 0.2, ok=True)
    call(b, 0.5, ok=False)
    call(b, 0.7, ok=False)
    call(b, 3.0, ok=True)
    call(b, 9.9, ok=True)
    assert b.failure_rate(9.9) == 40.0
    assert b.failure_rate(9.999) == 40.0  # still epoch second 9: seconds 0..9 in window
    assert b.failure_rate(10.0) == 0.0  # second 0 evicted: seconds 1..10
    assert b.snapshot(10.0).buffered_calls == 2
    assert b.failure_rate(13.5) == -1.0  # only the 9.9 call left: below minimum
    assert b.failure_rate(20.0) == -1.0 and b.snapshot(20.0).buffered_calls == 0
    assert b.state is C


def test_time_based_calls_in_same_second_share_a_bucket():
    b = CircuitBreaker(cfg(sliding_window_type="TIME_BASED", sliding_window_size=10,
                           minimum_number_of_calls=1, failure_rate_threshold=100))
    call(b, 3.1, ok=True)
    call(b, 3.9, ok=False)
    call(b, 4.0, ok=True)
    assert b.snapshot(12.99).buffered_calls == 3
    assert b.failure_rate(12.99) == pytest.approx(100 / 3)
    assert b.snapshot(13.0).buffered_calls == 1  # both second-3 calls leave together
    assert b.failure_rate(13.0) == 0.0
    assert b.snapshot(14.0).buffered_calls == 0


def test_time_based_opens_only_on_recent_failures():
    b = CircuitBreaker(cfg(sliding_window_type="TIME_BASED", sliding_window_size=5,
                           minimum_number_of_calls=3))
    call(b, 0.0, ok=False)
    call(b, 0.5, ok=False)
    call(b, 6.0, ok=True)  # the two failures are gone: 1 call, below minimum
    call(b, 6.1, ok=True)
    call(b, 6.2, ok=False)  # 1/3 = 33%
    assert b.state is C
    call(b, 7.0, ok=False)  # 2/4 = 50%
    assert b.state is O
    assert b.transitions == [(7.0, C, O)]


# -- results arriving in another state ------------------------------------------

def test_results_arriving_in_open_are_recorded_but_never_evaluated():
    b = CircuitBreaker(cfg(sliding_window_size=4, minimum_number_of_calls=4))
    for i in range(8):  # eight calls in flight while CLOSED
        assert b.try_acquire_permission(0.0)
    b.on_error(1.0, 0.1)
    b.on_error(1.0, 0.1)
    b.on_success(1.0, 0.1)
    b.on_error(1.0, 0.1)  # 3/4 = 75%: OPEN
    assert b.state is O
    assert b.failure_rate(1.0) == 75.0
    for _ in range(4):  # late results of calls permitted before opening
        b.on_success(2.0, 0.1)
    assert b.state is O
    assert b.transitions == [(1.0, C, O)]
    assert b.failure_rate(2.0) == 0.0  # OpenState records into the carried window
    assert b.not_permitted == 0
    t = to_half_open(b, 1.0, 5.0)
    assert b.snapshot(t).buffered_calls == 0  # HALF_OPEN starts a fresh window


def test_result_of_closed_call_arriving_in_half_open_counts_as_probe():
    # resilience4j records whatever result arrives in the current state.
    b = CircuitBreaker(cfg(sliding_window_size=2, minimum_number_of_calls=2,
                           permitted_number_of_calls_in_half_open_state=1))
    assert b.try_acquire_permission(0.0)  # slow call started while CLOSED
    open_breaker(b, 0.0)
    t = to_half_open(b, 0.0, 5.0)
    b.on_error(t, 30.0)  # the old call fails now: it decides HALF_OPEN
    assert b.state is O and b.attempts == 2


def test_wait_interval_function_negative_result_is_rejected():
    b = CircuitBreaker(cfg(wait_interval_function=lambda n: -1.0))
    with pytest.raises(ValueError, match="wait_interval_function"):
        open_breaker(b, 0.0)


# -- property: windows equal a naive recomputation; legal transitions only ------

LEGAL = {(C, O), (O, H), (H, O), (H, C)}


@st.composite
def configs(draw, window_type):
    return CircuitBreakerConfig(
        sliding_window_type=window_type,
        sliding_window_size=draw(st.integers(1, 8)),
        minimum_number_of_calls=draw(st.integers(1, 10)),
        failure_rate_threshold=draw(st.sampled_from([25.0, 50.0, 60.0, 100.0])),
        slow_call_rate_threshold=draw(st.sampled_from([34.0, 50.0, 100.0])),
        slow_call_duration_threshold=1.0,
        wait_duration_in_open_state=draw(st.sampled_from([0.5, 2.0, 4.0])),
        permitted_number_of_calls_in_half_open_state=draw(st.integers(1, 3)),
        automatic_transition_from_open_to_half_open_enabled=draw(st.booleans()),
        max_wait_duration_in_half_open_state=draw(st.sampled_from([0.0, 3.0])),
    )


# (dt, failed, slow, mode): mode 0 = call and result now, 1 = call now and
# result later, 2 = deliver the oldest deferred result now.
RARE = st.sampled_from([False, False, False, True])  # mostly healthy: CLOSED lasts a while
OPS = st.lists(st.tuples(st.sampled_from([0.0, 0.0, 0.25, 0.5, 0.999, 1.0, 1.75, 3.0, 9.5]),
                         RARE, RARE, st.sampled_from([0, 0, 0, 1, 2])),
               min_size=10, max_size=300)


def naive_rates(calls, now, config):
    """Failure and slow rates recomputed from scratch over the CLOSED window."""
    n = config.sliding_window_size
    if config.sliding_window_type == "COUNT_BASED":
        kept = calls[-n:]
        minimum = min(config.minimum_number_of_calls, n)
    else:
        kept = [c for c in calls if math.floor(c[0]) > math.floor(now) - n]
        minimum = config.minimum_number_of_calls
    total = len(kept)
    if total == 0 or total < minimum:
        return -1.0, -1.0
    failed = sum(1 for c in kept if c[1])
    slow = sum(1 for c in kept if c[2])
    return failed * 100.0 / total, slow * 100.0 / total


def run_against_naive(config, ops):
    b = CircuitBreaker(config)
    now = 0.0
    closed_calls: list[tuple[float, bool, bool]] = []  # results recorded in this CLOSED window
    pending: list[tuple[bool, bool]] = []
    for dt, failed, slow, mode in ops:
        now += dt
        b.tick(now)
        if mode == 2:
            if not pending:
                continue
            failed, slow = pending.pop(0)
        elif not b.try_acquire_permission(now):
            continue
        elif mode == 1:
            pending.append((failed, slow))
            continue
        state_before = b.state
        n_before = len(b.transitions)
        (b.on_error if failed else b.on_success)(now, 2.0 if slow else 0.5)
        if state_before is C:
            closed_calls.append((now, failed, slow))
            fr, sr = naive_rates(closed_calls, now, config)
            exceeded = fr >= 0 and (fr >= config.failure_rate_threshold
                                    or sr >= config.slow_call_rate_threshold)
            assert (b.state is O) == exceeded
        if len(b.transitions) > n_before and b.transitions[-1][2] is C:
            closed_calls = []  # HALF_OPEN -> CLOSED: fresh window
        if b.state is C:
            fr, sr = naive_rates(closed_calls, now, config)
            assert b.failure_rate(now) == fr
            assert b.slow_call_rate(now) == sr
    prev_to, prev_t = C, -math.inf
    for t, frm, to in b.transitions:
        assert (frm, to) in LEGAL  # in particular never CLOSED -> HALF_OPEN
        assert frm is prev_to and t >= prev_t
        prev_to, prev_t = to, t
    assert b.state is prev_to


@settings(max_examples=300, deadline=None)
@given(config=configs("COUNT_BASED"), ops=OPS)
def test_property_count_based_matches_naive_window(config, ops):
    run_against_naive(config, ops)


@settings(max_examples=300, deadline=None)
@given(config=configs("TIME_BASED"), ops=OPS)
def test_property_time_based_matches_naive_window(config, ops):
    run_against_naive(config, ops)


def test_state_mask_and_timeline_follow_the_transitions():
    import numpy as np

    cb = CircuitBreaker(CircuitBreakerConfig(sliding_window_type="COUNT_BASED", sliding_window_size=2,
                                             minimum_number_of_calls=2, wait_duration_in_open_state=5.0))
    for t in (1.0, 2.0):
        assert cb.try_acquire_permission(t)
        cb.on_error(t, 0.1)
    assert cb.state is State.OPEN
    assert cb.try_acquire_permission(7.5)  # the wait is over: half-open lets a probe through
    mask = cb.in_state(np.array([0.5, 2.5, 6.9, 7.6]), State.OPEN)
    assert mask.tolist() == [False, True, True, False]
    steps = cb.timeline(10.0)
    assert steps[0] == (0.0, "CLOSED") and steps[-1] == (10.0, "HALF_OPEN")
    assert [s for _, s in steps] == ["CLOSED", "OPEN", "HALF_OPEN", "HALF_OPEN"]


def test_guarded_calls_waste_nothing_without_an_outage_and_refuse_into_the_cache_with_one():
    """sim.guarded_calls: the control (no outage) wastes no caller time and never opens the breaker; a hang
    with a breaker refuses calls, which answer from the cache exactly where a request has an entry."""
    import numpy as np

    from sim.breaker import CircuitBreaker, CircuitBreakerConfig
    from sim.components import Outage
    from sim.guarded_calls import simulate_guarded_calls
    from sim.metrics import ERROR, FALLBACK, TIMEOUT

    rng = np.random.default_rng(0)
    n = 4000
    arrivals, service = np.cumsum(rng.exponential(0.05, n)), rng.exponential(0.02, n)
    cached = rng.random(n) < 0.5
    kw = dict(replicas=4, caller_threads=200, network_s=0.002, timeout_s=5.0, error_s=0.005, fallback_s=0.002)
    calm = simulate_guarded_calls(arrivals, service, cached, Outage(50.0, 100.0, "none"),
                                  CircuitBreaker(CircuitBreakerConfig()), **kw)
    assert calm["wasted"].sum() == 0 and not calm["probe"].any() and not calm["opened_at_rates"]
    assert np.all(calm["log"].latency >= service + 0.002 - 1e-12)  # at least the service time and the round trip
    breaker = CircuitBreaker(CircuitBreakerConfig())
    hang = simulate_guarded_calls(arrivals, service, cached, Outage(50.0, 100.0, "hang"), breaker, **kw)
    log = hang["log"]
    assert hang["opened_at_rates"] and breaker.not_permitted > 0
    refused = (log.outcome != TIMEOUT) & (hang["wasted"] == 0) & (log.arrival >= 60) & (log.arrival < 100)
    assert refused.any()
    assert np.all(log.outcome[refused & cached] == FALLBACK) and np.all(log.outcome[refused & ~cached] != FALLBACK)
    assert set(np.unique(log.outcome[~cached & (hang["wasted"] > 0)])) <= {ERROR}
