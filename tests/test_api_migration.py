"""sim.api_migration: upgrades through a cut-off (SimPy), versions live, and retries against the key store."""
from __future__ import annotations

import math

import numpy as np
import pytest

from sim.api_migration import (Clients, live_versions, live_versions_closed_form, lognormal_p99, retry_horizon_s,
                               simulate_retries, simulate_upgrades)


def clients(n=2000, seed=0, aware=0.0, median=30.0):
    rng = np.random.default_rng(seed)
    return Clients(lag_days=median * np.exp(rng.standard_normal(n)), aware=rng.random(n) < aware,
                   first_request_days=rng.random(n) * 7, breaks=rng.random(n) < 0.4)


@pytest.mark.parametrize("window", [0.0, 1.0, 45.0, 89.9, 90.0, 90.1, 180.0, 365.0, 400.0])
@pytest.mark.parametrize("interval", [30.0, 90.0, 180.0])
def test_versions_live_is_one_plus_ceil_window_over_interval(window, interval):
    assert live_versions(window, interval) == live_versions_closed_form(window, interval)
    assert live_versions(window, interval) == 1 + math.ceil(window / interval)


def test_hard_cutover_breaks_every_breaking_client_not_yet_upgraded():
    c = clients()
    r = simulate_upgrades(c, 0.0, 14.0, 7.0, 120.0)
    broken = ~np.isnan(r["broken_at"])
    assert np.array_equal(broken, c.breaks & (c.lag_days > 0))
    assert np.all(r["upgrade_days"][broken] <= 7.0 + 1e-9)  # fixed within fix_days


def test_without_header_aware_clients_breakage_is_lag_past_the_window_times_break_flag():
    c = clients()
    r = simulate_upgrades(c, 180.0, 14.0, 7.0, 400.0)
    broken = ~np.isnan(r["broken_at"])
    assert np.array_equal(broken, c.breaks & (c.lag_days > 180.0))
    late = ~broken & ~c.breaks & (c.lag_days > 180)
    assert np.allclose(r["upgrade_days"][late], c.lag_days[late])  # non-breaking clients keep their own pace


def test_acting_on_the_headers_lowers_breakage_but_cannot_help_a_zero_day_cutover():
    none, all_ = clients(aware=0.0, median=120.0), clients(aware=1.0, median=120.0)
    w = 180.0
    b0 = np.isfinite(simulate_upgrades(none, w, 14.0, 7.0, 400.0)["broken_at"]).mean()
    b1 = np.isfinite(simulate_upgrades(all_, w, 14.0, 7.0, 400.0)["broken_at"]).mean()
    assert b0 > 0.05 and b1 == 0.0  # every aware client saw the notice in week one and had 166 days
    cut0 = np.isfinite(simulate_upgrades(all_, 0.0, 14.0, 7.0, 60.0)["broken_at"])
    assert np.array_equal(cut0, all_.breaks)


def test_series_tracks_clients_on_v1_and_broken():
    c = clients()
    ser = simulate_upgrades(c, 30.0, 14.0, 7.0, 100.0)["series"]
    assert ser[0, 1] == 100.0 and np.all(np.diff(ser[:, 1]) <= 0)
    before = ser[ser[:, 0] < 30]
    assert np.all(before[:, 2] == 0)
    assert ser[ser[:, 0] == 30][0, 2] > 0


def retry_inputs(n=3000, seed=1, median=0.04, sigma=0.5, K=4):
    rng = np.random.default_rng(seed)
    return (np.cumsum(rng.exponential(1 / 50, n)), median * np.exp(sigma * rng.standard_normal((n, K))),
            rng.random((n, K)))


def test_retry_horizon_closed_form():
    assert retry_horizon_s(0.1, 3, 0.1, 1.0) == pytest.approx(0.3 + 0.1 + 0.2 + 0.4)
    assert retry_horizon_s(0.1, 5, 0.1, 0.25) == pytest.approx(0.5 + 0.1 + 0.2 + 0.25 + 0.25 + 0.25)
    assert retry_horizon_s(1.0, 0, 0.1, 1.0) == 0.0
    assert lognormal_p99(0.04, 0.5) == pytest.approx(0.04 * math.exp(2.326348 * 0.5), rel=1e-6)


def test_without_keys_every_timed_out_attempt_is_another_prediction():
    a, lat, jit = retry_inputs()
    timeout = lognormal_p99(0.04, 0.5)
    r = simulate_retries(a, lat, jit, timeout, 3, 0.1, 1.0, False, 86400.0, 0.002, 0.002)
    assert np.array_equal(r["executions"], r["attempts"])
    assert np.sum(r["executions"] > 1) == np.sum(lat[:, 0] > timeout) > 0


def test_with_long_lived_keys_nothing_runs_twice():
    a, lat, jit = retry_inputs()
    timeout = 0.5 * lognormal_p99(0.04, 0.5)
    r = simulate_retries(a, lat, jit, timeout, 3, 0.1, 1.0, True, 86400.0, 0.002, 0.002)
    assert r["executions"].max() == 1
    assert np.sum(r["conflicts"] > 0) > 0  # some retries found the original still running (409)
    assert np.sum(r["attempts"] > 1) > 0


def test_keys_pruned_before_the_retry_horizon_let_duplicates_through():
    a, lat, jit = retry_inputs()
    timeout = 0.5 * lognormal_p99(0.04, 0.5)
    short = simulate_retries(a, lat, jit, timeout, 3, 0.1, 1.0, True, 0.1, 0.002, 0.002)
    assert np.sum(short["executions"] > 1) > 0
    none = simulate_retries(a, lat, jit, timeout, 3, 0.1, 1.0, False, 0.1, 0.002, 0.002)
    assert np.sum(short["executions"] > 1) < np.sum(none["executions"] > 1)


def test_control_timeout_far_above_latency_means_no_retries():
    a, lat, jit = retry_inputs()
    for keys in (False, True):
        r = simulate_retries(a, lat, jit, 100 * lognormal_p99(0.04, 0.5), 3, 0.1, 1.0, keys, 1.0, 0.002, 0.002)
        assert r["attempts"].max() == 1 and r["executions"].max() == 1 and r["ok"].all()
