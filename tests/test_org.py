"""sim.org: sync points, who works on what, delivery through SimPy, and the paired ratio interval."""
import numpy as np
import pytest

from sim import org
from sim.rng import Streams


def _one(arrival, home, domains, tables, work, teams=5):
    k = len(domains)
    return org.Requests(np.array([arrival]), np.array([home]), np.array([domains]), np.array([tables]),
                        np.zeros((1, k), dtype=int), np.array([work], dtype=float), np.zeros((1, k), dtype=int))


def test_next_sync_is_the_first_point_at_or_after_t():
    assert org.next_sync(0.0, 7.0) == 0.0
    assert org.next_sync(1.5, 7.0) == 7.0
    assert org.next_sync(7.0, 7.0) == 7.0
    assert org.next_sync(7.01, 7.0) == 14.0


def test_joint_units_cost_the_home_team_the_work_and_every_other_team_a_review():
    parts = org.parts_of(np.array([0, -1, 2]), np.array([1.0, 2.0, 3.0]), home=0, teams=4, review_days=0.5)
    assert parts == {0: 3.0, 1: 0.5, 2: 3.5, 3: 0.5}


def test_a_foreign_part_waits_for_the_next_sync_then_works():
    req = _one(1.5, 0, [0, 3], [False, False], [1.0, 2.0])
    r = org.run_org(req, org.owners(req, "contexts", 1, 5), 5, 1, 7.0, 0.25)
    assert r["coordination_days"][0] == pytest.approx(7.0 - 1.5)
    assert r["lead_days"][0] == pytest.approx(7.0 + 2.0 - 1.5)
    assert r["teams_involved"][0] == 1


def test_a_shared_table_involves_every_team_and_a_private_one_nobody():
    req = _one(0.5, 2, [2], [True], [1.0])
    shared = org.run_org(req, org.owners(req, "shared_database", 1, 5), 5, 1, 7.0, 0.25)
    private = org.run_org(req, org.owners(req, "contexts", 1, 5), 5, 1, 7.0, 0.25)
    assert shared["teams_involved"][0] == 4 and shared["lead_days"][0] == pytest.approx(7.0 + 0.25 - 0.5)
    assert private["teams_involved"][0] == 0 and private["lead_days"][0] == pytest.approx(1.0)


def test_without_queues_or_other_teams_lead_time_is_the_work():
    req = org.draw_requests(Streams(1), 200, 5, 3, 1.0, 0.0, 4, 0.05, 1.0)
    r = org.run_org(req, org.owners(req, "contexts", 1, 5), 5, 10, 7.0, 0.25)
    assert np.all(r["coordination_days"] == 0)
    np.testing.assert_allclose(r["lead_days"], req.work.sum(axis=1))


def test_random_boundaries_make_every_design_the_same():
    req = org.draw_requests(Streams(2), 300, 5, 4, 0.7, 0.4, 4, 1.0, 1.0)
    runs = [org.run_org(req, org.owners(req, "random", 1, 5), 5, 2, 7.0, 0.25) for _ in range(2)]
    np.testing.assert_array_equal(runs[0]["lead_days"], runs[1]["lead_days"])
    with pytest.raises(ValueError):
        org.owners(req, "federated", 1, 5)


def test_paired_ratio_is_the_ratio_of_means_and_covers_a_known_ratio():
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(200):
        base = rng.exponential(1.0, 400)
        num = 2.0 * base + rng.normal(0, 0.3, 400)
        iv = org.paired_ratio(num, base)
        assert iv.estimate == pytest.approx(num.mean() / base.mean())
        covered += iv.low <= 2.0 <= iv.high
    assert covered >= 180  # about 95% of 200
