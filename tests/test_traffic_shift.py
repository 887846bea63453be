"""sim.traffic_shift against Envoy/Istio routing and mirroring semantics, and the monitor's error rates."""
import numpy as np
import pytest
from scipy.stats import binom

from sim.metrics import wilson
from sim.traffic_shift import (MAX_TOTAL_WEIGHT, RequestMirrorPolicy, WeightedClusters, nested_split,
                               one_sided_pvalue, required_samples, serve_with_mirror, sidak_alpha, window_alarms)


def test_envoy_pick_walks_clusters_in_order_modulo_the_total():
    wc = WeightedClusters({"legacy": 90, "new": 10})
    assert [wc.pick(v) for v in (0, 89, 90, 99, 100, 189, 190)] == \
        ["legacy", "legacy", "new", "new", "legacy", "legacy", "new"]


def test_zero_weight_gets_nothing_and_a_single_cluster_everything():
    rng = np.random.default_rng(1)
    assert set(WeightedClusters({"legacy": 0, "new": 7}).pick_many(rng, 5000)) == {1}
    assert set(WeightedClusters({"only": 3}).pick_many(rng, 100)) == {0}


@pytest.mark.parametrize("clusters", [{"a": 0, "b": 0}, {"a": MAX_TOTAL_WEIGHT, "b": 1}, {"a": -1, "b": 5},
                                      {"a": 1.5}, {}])
def test_invalid_weights_are_refused(clusters):
    with pytest.raises(ValueError):
        WeightedClusters(clusters)


def test_weights_are_relative_shares():
    wc = WeightedClusters({"legacy": 3, "new": 1})
    assert wc.shares() == {"legacy": 0.75, "new": 0.25}
    picks = wc.pick_many(np.random.default_rng(2), 40000)
    iv = wilson(int((picks == 1).sum()), picks.size)
    assert iv.low <= 0.25 <= iv.high


def test_mirror_sends_copies_but_users_get_the_primary_answer():
    rng = np.random.default_rng(3)
    assert RequestMirrorPolicy("new").mirrored(rng, 10).all()  # runtime_fraction absent: everything
    m = RequestMirrorPolicy("new", 0.2).mirrored(rng, 20000)
    assert 0.18 < m.mean() < 0.22
    primary, shadow = np.zeros(1000, dtype=int), np.ones(1000, dtype=int)  # the shadow fails everything
    users, seen = serve_with_mirror(primary, shadow, m[:1000])
    assert (users == 0).all() and (seen == 1).all() and seen.size == m[:1000].sum()
    with pytest.raises(ValueError):
        RequestMirrorPolicy("new", 1.5)


def test_nested_split_has_binomial_marginals_and_nests():
    rng = np.random.default_rng(4)
    a = rng.poisson(50, size=200000)
    c = nested_split(rng, a, [0.01, 0.1, 0.5, 1.0])
    assert (np.diff(c, axis=-1) >= 0).all() and (c[..., -1] == a).all()
    for k, w in enumerate((0.01, 0.1, 0.5)):
        # a thinned Poisson(50) is Poisson(50 w): mean and variance both 50 w
        assert c[:, k].mean() == pytest.approx(50 * w, rel=0.02)
        assert c[:, k].var() == pytest.approx(50 * w, rel=0.03)
    with pytest.raises(ValueError):
        nested_split(rng, a, [0.5, 0.1])


def _null_alarm_share(method, n, p, alpha, trials=40000, seed=5):
    rng = np.random.default_rng(seed)
    e = rng.binomial(n, p, size=trials)
    n_ref = 10**7
    e_ref = np.full(trials, p * n_ref)
    return (one_sided_pvalue(e, np.full(trials, n), e_ref, np.full(trials, n_ref), method) <= alpha).mean()


@pytest.mark.parametrize("method", ["binomial", "z"])
def test_false_alarm_rate_matches_alpha_when_counts_are_large(method):
    # 20,000 requests at 20% errors: discreteness and skew are negligible, so the share of
    # false alarms must match the nominal level within its Wilson interval
    share = _null_alarm_share(method, 20000, 0.2, 0.05)
    iv = wilson(share * 40000, 40000)
    assert iv.low <= 0.05 <= iv.high


def test_exact_test_stays_within_alpha_where_the_z_test_does_not():
    # rare errors in small windows: the z test fires far more often than its level
    z, exact = _null_alarm_share("z", 100, 0.01, 0.001), _null_alarm_share("binomial", 100, 0.01, 0.001)
    assert wilson(z * 40000, 40000).low > 2 * 0.001
    assert exact <= 0.001 + 3 * np.sqrt(0.001 / 40000)


def test_binomial_pvalue_is_the_exact_upper_tail():
    p = one_sided_pvalue(np.array([0, 3, 7]), np.array([50, 50, 50]), np.array([100]), np.array([10000]))
    assert p == pytest.approx([1.0, binom.sf(2, 50, 0.01), binom.sf(6, 50, 0.01)])


def test_sidak_keeps_the_family_wise_rate_and_the_monitor_honours_it():
    assert 1 - (1 - sidak_alpha(0.05, 40)) ** 40 == pytest.approx(0.05)
    rng = np.random.default_rng(6)
    rows, windows, p = 20000, 10, 0.2
    n = np.full((rows, windows), 5000)
    e = rng.binomial(n, p)
    first = window_alarms(e, n, p * 10**7, 10**7, sidak_alpha(0.05, windows), 1, "binomial")
    iv = wilson(int((first >= 0).sum()), rows)
    assert iv.low <= 0.05 <= iv.high  # no regression: false rollbacks match alpha


def test_small_windows_carry_over_until_min_requests():
    # 10 requests a window, min 30: tests only at windows 2, 5, 8 (0-based); a burst in window 4 shows at 5
    n = np.full((1, 9), 10)
    e = np.zeros((1, 9), dtype=int)
    e[0, 4] = 10
    assert window_alarms(e, n, 100, 10000, 0.01, 30)[0] == 5
    assert window_alarms(e, n, 100, 10000, 0.01, 1)[0] == 4
    assert window_alarms(np.zeros((1, 9)), n, 100, 10000, 0.01, 30)[0] == -1


@pytest.mark.parametrize("reference", ["known", "equal"])
def test_power_at_the_required_sample_size_is_about_the_target(reference):
    p0, p1, alpha = 0.05, 0.08, 0.01
    n = int(np.ceil(required_samples(p0, p1, alpha, 0.8, reference)))
    rng = np.random.default_rng(7)
    e = rng.binomial(n, p1, size=20000)
    n_ref = 10**7 if reference == "known" else n
    e_ref = np.full(e.size, p0 * n_ref) if reference == "known" else rng.binomial(n, p0, size=e.size)
    method = "binomial" if reference == "known" else "z"
    power = (one_sided_pvalue(e, np.full(e.size, n), e_ref, np.full(e.size, n_ref), method) <= alpha).mean()
    assert 0.74 < power < 0.86
    assert required_samples(0.05, 0.05) == float("inf")
