"""sim.mesh against its references: Envoy's back-off and retry budget, Lindley queues, retry arithmetic."""
import numpy as np
import pytest

from sim import mesh
from sim.mesh_clients import cross_cutting_lines, logical_lines


@pytest.mark.parametrize("retry, upper_ms", [(1, 25), (2, 75), (3, 175), (4, 250), (8, 250)])
def test_envoy_backoff_is_full_jitter_under_the_exponential_capped_at_ten_bases(retry, upper_ms):
    rng = np.random.default_rng(0)
    x = np.array([mesh.envoy_backoff(rng, retry) for _ in range(4000)]) * 1e3
    assert x.min() >= 0 and x.max() < upper_ms
    assert abs(x.mean() - upper_ms / 2) < 0.05 * upper_ms  # uniform on [0, upper): mean upper / 2
    assert x.max() > 0.97 * upper_ms


def test_envoy_backoff_refuses_retry_zero():
    with pytest.raises(ValueError):
        mesh.envoy_backoff(np.random.default_rng(0), 0)


def test_retry_budget_is_max_of_floor_and_share_of_active():
    b = mesh.RetryBudget(20.0, 3)
    b.active = 2
    assert [b.try_acquire() for _ in range(4)] == [True, True, True, False]  # 2 active: still 3
    b = mesh.RetryBudget(20.0, 3, active=25)
    assert sum(b.try_acquire() for _ in range(10)) == 5 and b.overflow == 5  # 25 active: 5 retries
    b.release()
    assert b.try_acquire()


def test_fifo_departures_match_a_plain_loop_in_any_arrival_order():
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 10, 500)
    s = rng.exponential(0.02, 500)
    got = mesh.fifo_departures(a, s)
    order, d, t = np.argsort(a, kind="stable"), np.empty(500), 0.0
    for i in order:
        t = max(a[i], t) + s[i]
        d[i] = t
    np.testing.assert_allclose(got, d, rtol=0, atol=1e-9)


def test_proxy_station_pins_connections_to_workers():
    # two requests at once on one worker queue; on two workers they do not wait for each other
    a, cpu = np.zeros(2), np.full(2, 1.0)
    same = mesh.proxy_station(a, cpu, np.array([0, 0]), 2, 0.5)
    split = mesh.proxy_station(a, cpu, np.array([0, 1]), 2, 0.5)
    assert sorted(same) == [1.5, 2.5] and list(split) == [1.5, 1.5]


def test_one_unloaded_hop_adds_the_published_figure():
    rng = np.random.default_rng(2)
    n = 20000
    arr = np.cumsum(rng.exponential(1e-3, n))  # 1,000 rps, Istio's reference load
    app = rng.lognormal(np.log(5e-3), 0.5, (n, 1))
    zero = np.zeros((n, 1))
    cpu = mesh.cpu_times(rng, 0.2e-3, 0.5, (n, 1, 2))
    worker = rng.integers(0, 2, (n, 1, 2))
    fixed = mesh.calibrate_fixed_s(2.7e-3, 0.2e-3)
    base, with_mesh = mesh.sidecar_latency(arr, app, zero, cpu, worker, 2, fixed, zero, zero)
    added = (with_mesh - base) * 1e3
    assert 2.7 <= added.mean() <= 2.8  # a little queueing at 10% busy workers
    diff90 = np.percentile(with_mesh, 90) - np.percentile(base, 90)
    assert 2.6 <= diff90 * 1e3 <= 2.95  # Istio: 2.65-2.8 ms at P90


def test_new_connections_pay_the_handshake_in_full():
    n = 1000
    arr = np.arange(n) * 1.0  # one call a second: no queueing
    zero = np.zeros((n, 2))
    hs = np.full((n, 2), 5e-3)
    base, with_mesh = mesh.sidecar_latency(arr, zero, zero, np.zeros((n, 2, 2)), np.zeros((n, 2, 2), int), 1, 0.0,
                                           zero, hs)
    np.testing.assert_allclose(with_mesh - base, 10e-3)


def test_paired_percentile_difference_of_a_constant_shift():
    rng = np.random.default_rng(3)
    a = rng.exponential(1.0, 4000)
    iv = mesh.paired_percentile_diff(a, a + 2.5, 95)
    assert iv.estimate == pytest.approx(2.5) and iv.low == pytest.approx(2.5) and iv.high == pytest.approx(2.5)


def _chain(policy, layers, down, retries=2, outage=(0.0, 1e9), n=400, replicas=4, deadline=60.0, **kw):
    rng = np.random.default_rng(4)
    arr = np.cumsum(rng.exponential(0.05, n))
    work = np.full(n, 0.001)
    return arr, mesh.retry_chain(arr, work, policy, layers, retries, replicas, down, outage, deadline, 0.001,
                                 np.random.default_rng(5), np.random.default_rng(6), **kw)


@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("policy", ["immediate", "backoff"])
def test_a_hard_outage_multiplies_calls_by_one_plus_retries_to_the_layers(policy, layers):
    arr, r = _chain(policy, layers, down=4)
    assert r.attempt_t.size == arr.size * 3 ** layers
    assert not r.ok.any()


def test_without_an_outage_every_request_is_one_call_and_succeeds():
    for policy in mesh.POLICIES:
        arr, r = _chain(policy, 3, down=4, outage=None)
        assert r.attempt_t.size == arr.size and r.ok.all()


def test_the_budget_caps_retries_at_its_floor_when_traffic_is_light():
    arr, r = _chain("budget", 1, down=4, n=200)
    im = _chain("immediate", 1, down=4, n=200)[1]
    assert r.overflow > 0 and r.attempt_t.size < im.attempt_t.size
    # a budget that never binds behaves as plain back-off
    _, loose = _chain("budget", 1, down=4, n=200, budget_percent=100.0, min_retry_concurrency=1000)
    _, back = _chain("backoff", 1, down=4, n=200)
    assert loose.overflow == 0 and loose.attempt_t.size == back.attempt_t.size


def test_no_attempt_starts_after_a_request_deadline():
    arr, r = _chain("backoff", 3, down=4, deadline=0.03)
    assert np.all(r.attempt_t <= arr[r.attempt_req] + 0.03 + 1e-12)


def test_backlog_clear_time_walks_overlapping_waits():
    s = np.array([0.0, 1.0, 2.5, 6.0])
    e = np.array([2.0, 3.0, 4.0, 7.0])
    assert mesh.backlog_clear_time(s, e, 1.5) == 4.0
    assert mesh.backlog_clear_time(s, e, 4.5) == 4.5
    assert mesh.backlog_clear_time(s, e, 10.0) == 10.0


def test_ratio_reduction_of_identical_series_is_zero_with_a_zero_width_interval():
    x = np.arange(1.0, 21.0)
    iv = mesh.ratio_reduction(x, x)
    assert iv.estimate == 0 and iv.low == pytest.approx(0) and iv.high == pytest.approx(0)
    assert mesh.ratio_reduction(x / 2, x).estimate == pytest.approx(0.5)


def test_logical_lines_skip_docstrings_comments_and_blanks():
    src = '"""doc\nmore"""\nimport os\n\n# note\ndef f(x):\n    """f."""\n    return (x +\n            1)\n'
    assert logical_lines(src) == 4  # import, def, and the two lines of the return


def test_the_in_code_client_carries_more_cross_cutting_lines_than_the_mesh_client():
    lines = cross_cutting_lines()
    assert lines["in_code"] > 3 * lines["with_mesh"] > 0
