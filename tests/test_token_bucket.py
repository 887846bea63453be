"""sim.token_bucket: Envoy local rate limit token bucket semantics (REFERENCES.md §4)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from sim.token_bucket import ENVOY_MIN_FILL_INTERVAL_S, TokenBucket


def test_bucket_starts_full_and_each_request_takes_one_token():
    b = TokenBucket(max_tokens=5, tokens_per_fill=1, fill_interval=1.0)
    ok = b.admit(np.zeros(8))  # a burst at t=0: the initial fill is max_tokens
    assert ok.tolist() == [True] * 5 + [False] * 3


def test_refill_is_discrete_at_multiples_of_fill_interval():
    b = TokenBucket(max_tokens=2, tokens_per_fill=1, fill_interval=1.0)
    t = np.array([0.0, 0.0, 0.5, 0.999, 1.0, 1.5, 2.0, 2.0])
    # two at t=0 drain the bucket; nothing until the refill at 1 s; one token at 1 s, one at 2 s
    assert b.admit(t).tolist() == [True, True, False, False, True, False, True, False]


def test_refill_never_exceeds_max_tokens():
    b = TokenBucket(max_tokens=3, tokens_per_fill=2, fill_interval=1.0)
    # idle for 10 intervals: still only max_tokens available, not 3 + 20
    t = np.concatenate([[0.0, 0.0, 0.0], np.full(10, 10.0)])
    assert b.admit(t).sum() == 3 + 3
    assert b.tokens_per_fill_effective == 2
    assert TokenBucket(3, 10, 1.0).tokens_per_fill_effective == 3


def test_refused_requests_consume_nothing():
    b = TokenBucket(max_tokens=1, tokens_per_fill=1, fill_interval=1.0)
    t = np.array([0.0, 0.1, 0.2, 0.3, 1.0])
    assert b.admit(t).tolist() == [True, False, False, False, True]


def test_time_to_admit_closed_form_matches_a_greedy_client():
    b = TokenBucket(max_tokens=100, tokens_per_fill=10, fill_interval=6.0)
    # greedy client: many requests at every instant it may be served (t = 0 and each refill)
    t = np.repeat(np.arange(0, 600.0, 6.0), 200)
    ok = b.admit(t)
    admitted_times = t[ok]
    for n in (1, 100, 101, 150, 1000):
        assert admitted_times[n - 1] == b.time_to_admit(n)
    # one sending every millisecond lags by at most the time to spend one refill, 1 ms a token
    t = np.arange(0, 600.0, 0.001)
    admitted_times = t[b.admit(t)]
    for n in (101, 150, 1000):
        assert 0 <= admitted_times[n - 1] - b.time_to_admit(n) < b.tokens_per_fill * 0.001
    assert b.time_to_admit(100) == 0.0
    assert b.time_to_admit(101) == 6.0
    assert b.time_to_admit(1000) == math.ceil(900 / 10) * 6.0


def test_admitted_by_inverts_time_to_admit():
    b = TokenBucket(max_tokens=100, tokens_per_fill=100, fill_interval=60.0)
    for n in (50, 100, 101, 5000, 123456):
        t = b.time_to_admit(n)
        assert b.admitted_by(t) >= n
        if t > 0:
            assert b.admitted_by(t - 1e-6) < n


def test_keys_split_the_work_and_client_rate_caps_it():
    b = TokenBucket(max_tokens=100, tokens_per_fill=100, fill_interval=60.0)
    one = b.time_to_admit(1_000_000)
    ten = b.time_to_admit(1_000_000, keys=10)
    assert one == pytest.approx(9_999 * 60.0)
    assert ten == pytest.approx(math.ceil((100_000 - 100) / 100) * 60.0)
    # an unlimited bucket but a slow client: the client's own rate binds
    assert b.time_to_admit(1_000_000, keys=100_000, client_rps=50.0) == pytest.approx(20_000.0)
    assert b.sustained_rate_per_s == pytest.approx(100 / 60)


def test_long_run_admitted_share_of_an_overloaded_key():
    b = TokenBucket(max_tokens=100, tokens_per_fill=100, fill_interval=60.0)
    rng = np.random.default_rng(1)
    t = np.cumsum(rng.exponential(60 / 1000, 50_000))  # 1000/min against 100/min
    share = b.admit(t).mean()
    assert share == pytest.approx(0.1, abs=0.01)


@pytest.mark.parametrize("kwargs", [dict(max_tokens=0), dict(max_tokens=1.5), dict(tokens_per_fill=0),
                                    dict(fill_interval=ENVOY_MIN_FILL_INTERVAL_S / 2), dict(fill_interval=math.inf)])
def test_invalid_settings_are_refused(kwargs):
    args = dict(max_tokens=10, tokens_per_fill=1, fill_interval=1.0) | kwargs
    with pytest.raises(ValueError):
        TokenBucket(**args)


def test_unsorted_arrivals_are_refused():
    with pytest.raises(ValueError):
        TokenBucket(1, 1, 1.0).admit(np.array([1.0, 0.0]))
