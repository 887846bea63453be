"""sim.hotspots (code-maat churn, radon complexity) against git itself on a fixture repo, and sim.debt."""
import subprocess

import numpy as np
import pytest

from sim import hotspots as hs
from sim.debt import Codebase, DebtModel, even_progress, hotspots_first_progress


def git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def commit(repo, files: dict, message: str):
    for name, text in files.items():
        path = repo / name
        if text is None:
            path.unlink()
        elif isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


A1 = "".join(f"x{i} = {i}\n" for i in range(10))
A2 = A1.replace("x3 = 3\n", "x3 = 33\n") + "x10 = 10\n"  # +2 -1
FUNC = "def f(x):\n    if x and x > 1:\n        return 1\n    for i in range(3):\n        pass\n    return 0\n"


@pytest.fixture
def repo(tmp_path):
    r = tmp_path / "fixture"
    r.mkdir()
    git(r, "init", "-q")
    git(r, "config", "user.name", "Fixture Author")
    git(r, "config", "user.email", "fixture@example.com")
    commit(r, {"a.py": A1, "b.py": "y = 1\nz = 2\nw = 3\n"}, "first")
    commit(r, {"a.py": A2}, "second")
    commit(r, {"b.py": "y = 1\n", "img.bin": bytes(range(256)) * 4, "c.py": FUNC}, "third")
    commit(r, {"gone.py": "q = 1\n"}, "fourth")
    commit(r, {"gone.py": None}, "fifth")
    return r


def test_churn_matches_git_log(repo):
    ch = hs.churn(repo).set_index("entity")
    assert ch.loc["a.py"].tolist() == [2, 12, 1, 13]  # revisions, added, deleted, churn
    assert ch.loc["b.py"].tolist() == [2, 3, 2, 5]
    assert ch.loc["img.bin"].tolist() == [1, 0, 0, 0]  # binary: a revision, no lines
    assert ch.loc["gone.py"].tolist() == [2, 1, 1, 2]
    # the same numbers straight from git's own numstat
    raw = git(repo, "log", "--numstat", "--pretty=format:", "--no-renames")
    added = sum(int(l.split("\t")[0]) for l in raw.splitlines() if l and l.split("\t")[2] == "a.py")
    assert added == ch.loc["a.py", "added"]
    assert ch["revisions"].is_monotonic_decreasing


def test_complexity_follows_radon_rules():
    cc, sloc = hs.complexity_of(FUNC)
    assert cc == 4  # 1 + if + and + for
    assert sloc == 6
    assert hs.complexity_of("x = 1\n")[0] == 1
    assert np.isnan(hs.complexity_of("def broken(:\n")[0])


def test_hotspots_are_files_at_head_scored_by_revisions_times_complexity(repo):
    m = hs.mine(repo)
    t = m.hotspots.set_index("entity")
    assert set(t.index) == {"a.py", "b.py", "c.py"}  # gone.py and the binary are not scored
    assert (t["score"] == t["revisions"] * t["complexity"]).all()
    assert t.loc["c.py", "complexity"] == 4 and t.loc["a.py", "revisions"] == 2
    assert m.info.commits == 5 and not m.info.shallow
    assert hs.mine(repo).cached  # second call: read from the cache keyed by HEAD
    commit(repo, {"a.py": A2 + "x11 = 11\n"}, "sixth")
    again = hs.mine(repo)
    assert again.info.head != m.info.head and again.hotspots.set_index("entity").loc["a.py", "revisions"] == 3


def test_shallow_clone_is_mined_and_flagged(repo, tmp_path):
    shallow = tmp_path / "shallow"
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{repo}", str(shallow)], check=True)
    m = hs.mine(shallow)
    assert m.info.shallow and m.info.commits == 1
    assert (m.hotspots["revisions"] == 1).all()


def test_not_a_repository(tmp_path):
    with pytest.raises(hs.NotARepository):
        hs.repository_root(tmp_path)
    with pytest.raises(hs.NotARepository):
        hs.repository_root(tmp_path / "missing")


def test_even_progress_is_water_filling():
    effort = np.array([[1.0, 2.0, 10.0], [5.0, 5.0, 5.0]])
    done = even_progress(effort, 6.0)
    assert np.allclose((done * effort).sum(axis=1), 6.0)
    assert np.allclose(done[0], [1.0, 1.0, 3.0 / 10.0])  # the two small files finish, the rest goes to the big one
    assert np.allclose(done[1], 6.0 / 15.0)
    assert np.allclose(even_progress(effort, 100.0), 1.0)


def test_hotspots_first_goes_down_the_ranking():
    effort = np.array([[2.0, 2.0, 2.0]])
    order = np.array([2, 0, 1])
    assert np.allclose(hotspots_first_progress(effort, order, 3.0), [[0.5, 0.0, 1.0]])


def test_flat_codebase_gives_both_allocations_the_same_defects():
    code = Codebase([5, 1, 1, 1], [40, 2, 2, 2], [100, 100, 100, 100]).flat()
    model = DebtModel(10, 4, 40.0, 4.0, 10.0, 1.0, 0.8, 1.0)
    rng = np.random.default_rng(1)
    effort = np.full((50, 4), 20.0)
    u0, u = rng.random((50, 4)), rng.random((50, 10))
    even, hot = model.run(code, effort, u0, u, "even"), model.run(code, effort, u0, u, "hotspots_first")
    assert np.array_equal(even["bugs"], hot["bugs"])
    skewed = Codebase([5, 1, 1, 1], [40, 2, 2, 2], [100, 100, 100, 100])
    assert model.run(skewed, effort, u0, u, "hotspots_first")["bugs"].sum() < \
        model.run(skewed, effort, u0, u, "even")["bugs"].sum()
