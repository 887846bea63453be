"""sim.rate_limiters against Envoy's token bucket, pyrate-limiter's InMemoryBucket and limits' sliding counter (§4)."""
from __future__ import annotations

import math
from unittest import mock

import numpy as np
import pytest

from sim.rate_limiters import (EnvoyTokenBucket, FixedWindow, SlidingCounter, SlidingLog,
                               burst_duration_closed_form, retry_after_header)
from sim.token_bucket import TokenBucket


def admit(lim, times):
    return np.array([lim.acquire(float(t)) == 0.0 for t in times])


def poisson(rate, T, seed):
    rng = np.random.default_rng(seed)
    return np.sort(rng.uniform(0, T, rng.poisson(rate * T)))


@pytest.mark.parametrize("seed", range(4))
def test_timer_refill_matches_sim_token_bucket(seed):
    t = poisson(25, 30, seed)
    for cap, add, fi in ((5, 1, 0.1), (20, 2, 0.25), (3, 5, 1.0)):
        ours = admit(EnvoyTokenBucket(cap, add, fi, refill="timer"), t)
        assert np.array_equal(ours, TokenBucket(cap, add, fi).admit(t))


def test_on_access_refill_is_continuous_and_capped():
    b = EnvoyTokenBucket(2, 1, 1.0, refill="on_access")
    t = [0.0, 0.0, 0.0, 0.5, 1.0, 1.0, 100.0, 100.0, 100.0]
    assert admit(b, t).tolist() == [True, True, False, False, True, False, True, True, False]
    b = EnvoyTokenBucket(1, 1, 1.0)
    b.acquire(0.0)
    assert b.acquire(0.25) == pytest.approx(0.75)  # the wait until the next whole token
    timer = EnvoyTokenBucket(1, 1, 1.0, refill="timer")
    timer.acquire(0.0)
    assert timer.acquire(0.25) == pytest.approx(0.75)
    assert retry_after_header(0.75) == 1 and retry_after_header(2.0) == 2 and retry_after_header(2.01) == 3


@pytest.mark.parametrize("refill", ["timer", "on_access"])
def test_both_refills_sustain_the_same_rate(refill):
    t = np.arange(0, 200, 0.01)  # 100/s against a 10/s bucket
    ok = admit(EnvoyTokenBucket(20, 1, 0.1, refill), t)
    assert ok.sum() == pytest.approx(20 + 10 * 200, abs=2)


@pytest.mark.parametrize("B,R,k", [(20, 10, 2.0), (100, 10, 2.0), (20, 10, 3.0), (50, 5, 1.5)])
def test_burst_lasts_b_over_k_minus_one_r(B, R, k):
    t = np.arange(0, 60, 1 / (k * R))
    ok = admit(EnvoyTokenBucket(B, R * 0.1, 0.1, "on_access"), t)
    first_refusal = t[np.argmin(ok)]
    closed = burst_duration_closed_form(B, R, k)
    assert abs(first_refusal - closed) <= 1 / ((k - 1) * R) + 1 / (k * R)
    assert burst_duration_closed_form(20, 10, 2) == 2.0 and burst_duration_closed_form(100, 10, 2) == 10.0


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("limit,window_ms", [(5, 1000), (10, 2000), (3, 250)])
def test_sliding_log_agrees_with_pyrate_limiter(seed, limit, window_ms):
    from pyrate_limiter import InMemoryBucket, Rate, RateItem

    rng = np.random.default_rng(seed)
    ms = np.sort(rng.integers(0, 20_000, 400))  # integer milliseconds, ties included
    ms = np.concatenate([ms, [20_000, 20_000 + window_ms, 20_000 + window_ms + 1]])
    bucket = InMemoryBucket([Rate(limit, window_ms)])
    theirs = [bucket.put(RateItem("k", int(x))) for x in ms]
    ours = admit(SlidingLog(limit, window_ms / 1000), ms / 1000)
    assert ours.tolist() == theirs


def test_sliding_log_window_includes_both_ends():
    log = SlidingLog(5, 1.0)
    assert admit(log, [0, 0, 0, 0, 0, 1.0, 1.001]).tolist() == [True] * 5 + [False, True]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("limit,window", [(5, 1), (10, 2), (20, 5)])
def test_sliding_counter_agrees_with_the_limits_library(seed, limit, window):
    import limits
    from limits.storage import MemoryStorage
    from limits.strategies import SlidingWindowCounterRateLimiter

    t = 1_000_000.0 * window + poisson(limit / window * 1.6, 40, seed)  # aligned windows, over the limit
    clock = {"now": t[0]}
    with mock.patch("limits.storage.memory.time.time", lambda: clock["now"]):
        storage = MemoryStorage()
        lim = SlidingWindowCounterRateLimiter(storage)
        item = limits.RateLimitItemPerSecond(limit, window)
        theirs = []
        for x in t:
            clock["now"] = float(x)
            theirs.append(lim.hit(item, "k"))
    ours = admit(SlidingCounter(limit, window), t)
    assert ours.tolist() == theirs
    assert 0 < ours.mean() < 1


def test_sliding_counter_formula():
    c = SlidingCounter(10, 1.0)
    assert admit(c, [0.5] * 12).tolist() == [True] * 10 + [False] * 2
    # 0.25 s into the next window: weighted = 10 * 0.75 + 0 = 7.5 -> floor 7, so 2 more fit (7 + 1, 8 + 1 <= 10)
    assert admit(c, [1.25] * 4).tolist() == [True, True, True, False]


def test_fixed_window_admits_twice_its_limit_around_a_boundary():
    w = FixedWindow(10, 1.0)
    t = np.concatenate([np.full(10, 0.999), np.full(10, 1.0)])
    assert admit(w, t).sum() == 20  # 2N within a millisecond
    for other in (SlidingLog(10, 1.0), SlidingCounter(10, 1.0), EnvoyTokenBucket(10, 1, 0.1)):
        assert admit(other, t).sum() <= 10
    w2 = FixedWindow(10, 1.0)
    assert w2.acquire(0.2) == 0.0
    for _ in range(9):
        w2.acquire(0.3)
    assert w2.acquire(0.4) == pytest.approx(0.6)


def test_uniform_arrivals_at_the_limit_pass_every_limiter():
    # just under 10/s, off the window edges (exactly 10/s puts 11 in pyrate's closed window [t - 1, t])
    t = np.arange(300) * 0.1001 + 0.05
    for lim in (FixedWindow(10, 1.0), SlidingLog(10, 1.0), SlidingCounter(10, 1.0), EnvoyTokenBucket(10, 1, 0.1)):
        assert admit(lim, t).all(), type(lim).__name__


def test_refusals_consume_nothing_and_waits_are_honest():
    for lim in (EnvoyTokenBucket(3, 1, 0.5), FixedWindow(3, 1.0), SlidingLog(3, 1.0), SlidingCounter(3, 1.0)):
        for _ in range(3):
            assert lim.acquire(0.0) == 0.0
        wait = lim.acquire(0.0)
        assert wait > 0
        assert lim.acquire(wait + 1e-6) == 0.0, type(lim).__name__
    assert math.isinf(burst_duration_closed_form(20, 10, 1.0))


def test_serve_retries_honouring_retry_after_or_not():
    from sim.rate_limiters import serve

    t = np.zeros(30)  # 30 calls at once on one key with 10 tokens, 1 token/s
    for honour, most in ((True, 5), (False, 50)):
        lim = EnvoyTokenBucket(10, 0.1, 0.1)
        r = serve(t, np.zeros(30, int), [lim], [honour], retry_gap_s=0.05, max_attempts=most)
        assert r["ok"][:10].all() and r["attempts"][:10].max() == 1
        assert r["refused"] == int(r["attempts"].sum() - r["ok"].sum())
        if honour:  # Retry-After "1": each wave waits a whole second and one token is there for it
            assert np.all(np.diff(np.sort(r["when"][r["ok"]])[10:]) >= 0)
            assert r["attempts"].max() <= 5
        else:  # hammering every 50 ms: many more attempts for the same admissions
            assert r["attempts"].sum() > 3 * 30
    shared = EnvoyTokenBucket(5, 0.5, 0.1)
    r = serve(np.zeros(20), np.arange(20) % 4, [shared] * 4, [None] * 4)
    assert r["ok"].sum() == 5 and r["attempts"].max() == 1  # one global bucket for four keys, no retries


@pytest.mark.parametrize("kind", ["token_bucket", "fixed_window", "sliding_log", "sliding_counter"])
def test_a_key_over_its_limit_is_admitted_the_same_count_at_any_higher_rate(kind):
    from sim.rate_limiters import make_limiter

    # the lab simulates an attacker key at 5 x its limit: check that 5x and 100x admit alike
    counts = []
    for rate in (50.0, 1000.0):
        t = poisson(rate, 60, 7)
        counts.append(admit(make_limiter(kind, 10.0, 20, 2.0), t).sum())
    assert abs(counts[0] - counts[1]) <= 0.02 * counts[1] + 2


def test_the_real_api_refuses_with_429_and_the_limiters_retry_after():
    import asyncio
    import json

    import httpx

    from sim.inference_api import ApiConfig, build_app

    clock = {"now": 0.0}
    buckets = {}

    def limiter(client, now):
        return buckets.setdefault(client, EnvoyTokenBucket(2, 0.5, 0.1)).acquire(now)  # 2 deep, 5/s

    app = build_app(lambda x: np.full((1, 10), 0.1), config=ApiConfig(limiter=limiter, clock=lambda: clock["now"]))
    body = json.dumps({"features": [1.0] * 64}).encode()

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            out = []
            for t, who in ((0.0, "a"), (0.0, "a"), (0.0, "a"), (0.0, "b"), (0.2, "a")):
                clock["now"] = t
                out.append(await c.post("/v1/predict", content=body, headers={"x-client-id": who}))
            return out
    r = asyncio.run(go())
    assert [x.status_code for x in r] == [200, 200, 429, 200, 200]
    assert r[2].headers["retry-after"] == str(retry_after_header(0.2)) == "1"
    assert r[2].headers["content-type"] == "application/problem+json" and r[2].json()["status"] == 429
