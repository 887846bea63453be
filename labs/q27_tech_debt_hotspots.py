"""Q27: rank technical-debt hotspots from a real git history, then simulate paying them down.

The mining is real (``sim.hotspots``): ``git log --numstat`` gives revisions and churn per file,
radon gives each Python file's cyclomatic complexity, and the hotspot score is revisions x
complexity. By default the lab reads a stored mining of this project's own history (so the
notebook reproduces); ``repository = this_project`` mines this checkout live (cached by HEAD's
commit) and ``repository = path`` mines the repository named by ``$ARCHLAB_Q27_REPO`` (or call
``mine_repository(path)``). The Monte Carlo model (``sim.debt``) lets defects arrive in proportion
to churn x complexity and compares debt capacity spent on the top hotspots first with the same
capacity spread evenly; ``codebase = flat`` (every file equally hot) is the control.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pandas as pd

from sim import hotspots as hs
from sim.debt import Codebase, DebtModel
from sim.rng import Streams

from .contract import Arm, Exercise, Lab, Outcome, Param
from .measure import Measurements
from .params import Rule

ENV_REPO = "ARCHLAB_Q27_REPO"
BEFORE_WEEKS = 13  # a quarter at the starting rates, before any refactoring
AFTER_WEEKS = 13  # "after" is the last quarter of the horizon
SHORT_HISTORY = 20  # fewer commits than this: revisions barely separate files


def mine_repository(path) -> hs.Mined:
    """Mine any git repository (the documented way to pass a path); NotARepository if it is not one."""
    return hs.mine(path)


def _repo_path(choice: str) -> str | None:
    if choice == "this_project":
        return str(Path(__file__).resolve().parent)
    if choice == "path":
        return os.environ.get(ENV_REPO) or None
    return None


def _repository_rule(p) -> str | None:
    if p.repository == "project_snapshot":
        return None
    path = _repo_path(p.repository)
    if path is None:
        return f"a git repository path in ${ENV_REPO} (it is unset)"
    try:
        hs.repository_root(path)
    except hs.NotARepository as exc:
        return f"a git repository; {path} is not one ({str(exc).splitlines()[0][:120]})"
    return None


@functools.lru_cache(maxsize=1)
def _snapshot():
    return hs.load_snapshot()


def mined_table(choice: str) -> tuple[pd.DataFrame, dict]:
    """The hotspot table and what was mined (commit, commit count, shallow) for a repository choice."""
    if choice == "project_snapshot":
        table, meta = _snapshot()
        return table.copy(), {**meta, "source": f"stored mining of this project at {meta['commit'][:10]}"}
    m = hs.mine(_repo_path(choice))
    i = m.info
    return m.hotspots, {"commit": i.head, "commits": i.commits, "shallow": i.shallow, "first_date": i.first_date,
                        "last_date": i.last_date, "source": f"live mining of {i.root} at {i.head[:10]}"}


class TechDebtHotspotsLab(Lab):
    id = "q27"
    headline = ("comparison", "bug_reduction_pct")
    refine_param = "replications"
    arms = (Arm("baseline", "Spread evenly", "the debt budget is shared equally by every file not yet refactored"),
            Arm("pattern", "Hotspots first", "the debt budget refactors files in order of revisions x complexity"))
    assumptions = (
        "Files keep changing as often as their mined revisions say; defects arrive per week as a Poisson count "
        "in proportion to revisions x complexity, starting at bugs_per_week.",
        "Refactoring a file takes refactor_days_per_kloc per 1000 source lines (lognormal estimate error, "
        "effort_cv); its complexity falls linearly with the effort done, by refactor_effect when finished.",
        "A change costs 1 + complexity_drag x (its file's complexity / the change-weighted mean at the start) "
        "dev-days; velocity is feature time over that cost, feature time = capacity - debt time - bugs x "
        "bug_fix_days.",
        "Before = a quarter at the starting rates with no refactoring (all non-bug time on features); after = "
        "the last quarter of the horizon.",
        "Complexity is radon's total cyclomatic complexity per Python file; other languages are not scored.",
    )
    rules = (Rule("repository", ("repository",), _repository_rule),)
    params = (
        Param("repository", "project_snapshot", choices=("project_snapshot", "this_project", "path"),
              help=f"stored mining of this project, a live mining of this checkout, or the repo in ${ENV_REPO}"),
        Param("codebase", "mined", choices=("mined", "flat"), key=True,
              help="mined: files as measured; flat: every file given the mean revisions, complexity and lines"),
        Param("debt_share", 0.2, 0.0, 0.8, unit="fraction", key=True,
              help="share of team capacity spent refactoring every week"),
        Param("refactor_effect", 0.6, 0.0, 1.0, unit="fraction", key=True,
              help="share of a file's complexity that a finished refactoring removes"),
        Param("bugs_per_week", 6.0, 0.0, 100.0, unit="bugs/week", key=True,
              help="defects per week before any refactoring"),
        Param("weeks", 26, AFTER_WEEKS, 260, unit="weeks", help="length of the refactoring programme"),
        Param("team_size", 8, 1, 200, unit="developers", help="developers, 5 dev-days each per week"),
        Param("bug_fix_days", 1.5, 0.0, 20.0, unit="dev-days", help="time to fix one defect"),
        Param("refactor_days_per_kloc", 20.0, 1.0, 500.0, unit="dev-days",
              help="effort to refactor 1000 source lines"),
        Param("effort_cv", 0.5, 0.0, 2.0, unit="cv", help="spread of the real effort around the estimate"),
        Param("complexity_drag", 1.0, 0.0, 10.0, unit="x",
              help="extra cost of a change per unit of relative complexity of the file it touches"),
        Param("hotspot_pct", 10.0, 1.0, 100.0, unit="% of files", help="the top share of files called hotspots"),
        Param("replications", 200, 10, 2000, unit="runs", help="Monte Carlo replications"),
    )
    exercises = (
        Exercise("Make every file equally hot (codebase = flat). What is left of the gain from going hotspots first?",
                 {"codebase": "flat"}, ("comparison", "bug_reduction_pct"),
                 why="With every file equally hot there is no hotspot to find, yet working down a list is still not "
                 "the same as spreading: estimated efforts vary by file, and spreading finishes the cheap files "
                 "first (Jensen's inequality), so spreading wins by a little."),
        Exercise("Halve the debt budget to 10% of capacity. Does focusing matter more or less?",
                 {"debt_share": 0.1}, ("comparison", "bug_reduction_pct"),
                 why="With less capacity the hotspots-first arm still finishes its top files while spreading makes "
                 "little progress anywhere, but both arms now remove less complexity in total."),
        Exercise("Suppose a refactoring only removes 30% of a file's complexity. How far do bugs fall?",
                 {"refactor_effect": 0.3}, ("pattern", "bug_reduction_pct"),
                 why="Bugs fall with the complexity a refactoring removes; removing only 30% of each file's "
                 "complexity removes proportionally less of the defect rate."),
    )

    def simulate(self, seed: int, p) -> Outcome:
        table, meta = mined_table(p.repository)
        m = Measurements(("baseline", "pattern", "comparison"))
        notes = [f"{meta['source']}: {meta['commits']} commits"
                 f"{' (shallow clone)' if meta['shallow'] else ''}, {len(table)} Python files scored."]
        if meta["shallow"] or meta["commits"] < SHORT_HISTORY:
            notes.append(f"Short history ({meta['commits']} commits{', shallow' if meta['shallow'] else ''}): "
                         "revisions barely separate files, so the ranking leans on complexity.")
        m.value("pattern", "commits_mined", meta["commits"])
        m.value("pattern", "files_scored", len(table))
        if table.empty or table["revisions"].sum() <= 0:
            why = "the repository has no Python file with measurable complexity at HEAD"
            for arm in ("baseline", "pattern", "comparison"):
                for key in ("bug_reduction_pct", "velocity_gain_x", "debt_ratio_pct", "hotspot_coverage_pct"):
                    if not (arm == "comparison" and key in ("debt_ratio_pct", "hotspot_coverage_pct")):
                        m.missing(arm, key, why)
            return Outcome(m, {"hotspots": table}, notes=notes)
        code = Codebase(table["revisions"], table["complexity"], np.maximum(table["sloc"], 1))
        if p.codebase == "flat":
            code = code.flat()
        n_hot = max(1, int(np.ceil(code.n * p.hotspot_pct / 100)))
        hot = code.ranking()[:n_hot]
        score = code.revisions * code.complexity
        m.value("pattern", "hotspot_score_share_pct", 100 * float(score[hot].sum()) / float(score.sum()))  # exact
        m.value("pattern", "hotspots", n_hot)

        streams = Streams(seed)
        r = p.replications
        sigma = np.sqrt(np.log1p(p.effort_cv ** 2))
        noise = streams["effort"].lognormal(-sigma ** 2 / 2, sigma, (r, code.n)) if sigma > 0 else np.ones((r, code.n))
        effort = p.refactor_days_per_kloc * code.sloc / 1000 * noise
        u_before = streams["bugs_before"].random((r, BEFORE_WEEKS))
        u_after = streams["bugs"].random((r, p.weeks))
        capacity = 5.0 * p.team_size
        model = DebtModel(p.weeks, BEFORE_WEEKS, capacity, p.debt_share * capacity, p.bugs_per_week,
                          p.bug_fix_days, p.refactor_effect, p.complexity_drag)
        runs = {"baseline": model.run(code, effort, u_before, u_after, "even"),
                "pattern": model.run(code, effort, u_before, u_after, "hotspots_first")}

        after = slice(p.weeks - AFTER_WEEKS, p.weeks)
        per_rep = {}
        for arm, run in runs.items():
            b_before = run["bugs_before"].mean(axis=1)
            b_after = run["bugs"][:, after].mean(axis=1)
            v_before = run["velocity_before"].mean(axis=1)
            v_after = run["velocity"][:, after].mean(axis=1)
            per_rep[arm] = (b_after, v_after)
            m.mean(arm, "bugs_per_week_after", b_after)
            m.mean(arm, "bug_reduction_pct", 100 * (1 - _div(b_after, b_before)),
                   missing="no bugs before the programme (bugs_per_week = 0): nothing to reduce")
            m.mean(arm, "velocity_after", v_after)
            m.mean(arm, "velocity_gain_x", _div(v_after, v_before),
                   missing="no feature time before the programme: bugs used all capacity")
            feature = run["feature_days"].mean(axis=1)
            m.mean(arm, "debt_ratio_pct", 100 * _div(np.full_like(feature, model.debt_days), feature),
                   missing="no feature time at all: debt and bugs used the whole capacity")
            m.mean(arm, "hotspot_coverage_pct", 100 * (run["progress"][:, hot] >= 1.0).mean(axis=1))
        (bb, vb), (bp, vp) = per_rep["baseline"], per_rep["pattern"]
        m.mean("comparison", "bug_reduction_pct", 100 * (1 - _div(bp, bb)),
               missing="the even spread has no bugs left in the last quarter: nothing to compare")
        m.mean("comparison", "velocity_gain_x", _div(vp, vb),
               missing="the even spread has no feature time left in the last quarter")
        notes.append(f"Top {n_hot} of {code.n} files ({p.hotspot_pct:g}%) are the hotspots; bugs and velocity "
                     f"compare the last {AFTER_WEEKS} weeks of {p.weeks} over {r} replications.")
        return Outcome(m, {"hotspots": _hotspot_series(table, code, hot), "weekly": _weekly(runs)}, notes=notes,
                       extras={"mined": meta})

    def plots(self, result):
        from .plotting import arm_colour, figure

        h = result.series["hotspots"]
        fig, ax = figure("Hotspot map: revisions vs complexity (radon), size grows with source lines", size=(8, 4))
        for kind, colour in (("other", "#7f8c8d"), ("hotspot", "#c0392b")):
            d = h[h["kind"] == kind]
            ax.scatter(d["revisions"], d["complexity"], s=np.sqrt(d["sloc"].clip(lower=1)) * 4, alpha=0.6,
                       color=colour, label=f"{kind} ({len(d)})", edgecolors="none")
        for _, row in h[h["kind"] == "hotspot"].head(5).iterrows():
            ax.annotate(row["entity"].rsplit("/", 1)[-1], (row["revisions"], row["complexity"]), fontsize=7)
        ax.set_xlabel("revisions (commits touching the file)")
        ax.set_ylabel("cyclomatic complexity (whole file)")
        ax.legend(fontsize=8, loc="upper left")
        figs = [fig]
        if "weekly" in result.series:
            w = result.series["weekly"]
            for y, title in (("bugs", "Defects per week (mean, band: ±1 sd of one replication)"),
                             ("velocity", "Velocity: changes delivered per week (mean, ±1 sd)")):
                fig, ax = figure(title)
                ax.axvspan(w["week"].min() - 0.5, 0.5, color="0.9", zorder=0, label="before")
                for k, (arm, d) in enumerate(w.groupby("arm", sort=False)):
                    ax.plot(d["week"], d[y], color=arm_colour(arm, k), lw=1.5, label=arm)
                    ax.fill_between(d["week"], d[f"{y}_low"], d[f"{y}_high"], color=arm_colour(arm, k), alpha=0.15)
                ax.set_xlabel("week of the programme (0 and below: the quarter before)")
                ax.set_ylabel(y)
                ax.legend(fontsize=8, loc="upper right")
                figs.append(fig)
        return figs


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den per replication; NaN where den is 0 (recorded as missing when every one is)."""
    return np.divide(num, den, out=np.full(np.shape(num), np.nan), where=np.asarray(den) > 0)


def _hotspot_series(table: pd.DataFrame, code: Codebase, hot: np.ndarray) -> pd.DataFrame:
    out = table[["entity", "revisions", "added", "deleted", "churn", "complexity", "sloc"]].copy()
    out["revisions"], out["complexity"], out["sloc"] = code.revisions, code.complexity, code.sloc
    out["score"] = out["revisions"] * out["complexity"]
    rank = np.empty(code.n, dtype=int)
    rank[code.ranking()] = np.arange(1, code.n + 1)
    out["rank"] = rank
    out["kind"] = np.where(np.isin(np.arange(code.n), hot), "hotspot", "other")
    return out.sort_values("rank", ignore_index=True)


def _weekly(runs: dict) -> pd.DataFrame:
    frames = []
    for arm, run in runs.items():
        for y, before, during in (("bugs", run["bugs_before"], run["bugs"]),
                                  ("velocity", run["velocity_before"], run["velocity"])):
            x = np.concatenate([before, during], axis=1)
            mean, sd = x.mean(axis=0), x.std(axis=0)
            frames.append(pd.DataFrame({"week": np.arange(-before.shape[1], during.shape[1]) + 1, "arm": arm,
                                        "what": y, "value": mean, "low": mean - sd, "high": mean + sd}))
    long = pd.concat(frames, ignore_index=True)
    wide = long.pivot_table(index=["week", "arm"], columns="what", values=["value", "low", "high"], sort=False)
    wide.columns = [w if v == "value" else f"{w}_{v}" for v, w in wide.columns]
    return wide.reset_index()


LAB = TechDebtHotspotsLab()
