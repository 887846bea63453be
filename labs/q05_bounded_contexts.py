"""Q5: bounded contexts for a recommender platform, as real packages and as an organisation model.

The platform ships in ``data/code/q05/recplatform``: five context packages (profile, catalogue,
analytics, recommend, experiments) that may reach each other only through their ``api`` modules,
an import-linter contract that says so (kept; a seeded direct read of another context's table
breaks it), and a context map drawn from grimp's import graph. Storage is measured in SQLite
bytes: every table once in one shared database, against one database per context holding the
fields it copies (``copied_fields`` of each context's declared copies). The organisation model
(``sim.org``, SimPy) sends the same feature requests through three boundary designs (contexts,
a shared database, a shared kernel); cross-team parts wait for the next sync. The request mix
and the durations are assumed; ``boundaries = random`` gives every arm the same random owners.
"""
from __future__ import annotations

import functools
import importlib
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from sim import org, replicas
from sim import structure as S
from sim.cache import DiskCache, fingerprint
from sim.rng import Streams

from .contract import Arm, Exercise, Lab, Outcome, Param, Rule
from .measure import Measurements

CODE = Path(__file__).resolve().parent.parent / "data" / "code" / "q05"
CONTEXTS = ("profile", "catalogue", "analytics", "recommend", "experiments")
DESIGNS = {"baseline": "shared_database", "pattern": "contexts", "kernel": "shared_kernel"}
TEXT_BYTES = {"name": 12, "country": 2, "segment": 8, "preferred_category": 10, "title": 30, "category": 10,
              "description": 200, "kind": 5, "experiment": 7, "variant": 8}  # assumed field widths
_CACHE = DiskCache("q05", code=[S.__file__, replicas.__file__, __file__])


def fixture_digest() -> str:
    return fingerprint({p.relative_to(CODE).as_posix(): p.read_text(encoding="utf-8")
                        for p in sorted(CODE.rglob("*")) if p.is_file() and "__pycache__" not in p.parts})


def declared_schema() -> dict:
    """Each context's TABLES and COPIES, read from its own store module."""
    out = {}
    with S.on_path(CODE):
        for ctx in CONTEXTS:
            store = importlib.import_module(f"recplatform.{ctx}.store")
            out[ctx] = ({k: [tuple(c) for c in v] for k, v in store.TABLES.items()}, [tuple(c) for c in store.COPIES])
    return out


@functools.lru_cache(maxsize=1)
def structure() -> dict:
    """The context map (grimp) and the contract results (import-linter), cached on the fixture's content."""
    key = {"digest": fixture_digest()}
    hit = _CACHE.get_json("structure", key)
    if hit is not None:
        return hit
    imports = S.import_graph(CODE, "recplatform")
    edges = sorted({(m.split(".")[1], t.split(".")[1], t) for m, targets in imports.items() for t in targets
                    if m.count(".") >= 2 and t.count(".") >= 2 and m.split(".")[1] != t.split(".")[1]})
    ini = CODE / "contracts" / "contexts.ini"
    with tempfile.TemporaryDirectory() as tmp:
        seeded = S.materialise(CODE, Path(tmp) / "seeded", [CODE / "seeded"])
        contracts = {"before": S.lint_contracts(CODE, ini).broken, "seeded": S.lint_contracts(seeded, ini).broken}
    out = {"edges": [list(e) for e in edges], "contracts": contracts, "modules": len(imports)}
    _CACHE.put_json("structure", key, out)
    return out


def _too_small(p) -> str | None:
    return None if p.features > 10 * p.developers else f"> 10 × developers ({10 * p.developers}) for a warm-up"


class BoundedContextsLab(Lab):
    id = "q05"
    headline = ("comparison", "coordination_reduction_pct")
    refine_param = "features"
    arms = (Arm("baseline", "Shared database", "teams own code by domain, but every table sits in one schema all teams share"),
            Arm("pattern", "Bounded contexts", "each team owns its domain's code and data; others use its api"),
            Arm("kernel", "Shared kernel", "private data, except the first kernel_tables tables of each domain, shared by all"))
    assumptions = (
        "Five domains, five teams: a feature touches units_per_feature units, in its home domain with probability cohesion.",
        "A touched unit is a table with probability data_share; a jointly owned table costs every other team a review.",
        "Other teams start their part only at the next sync point (every sync_interval_days), then queue FIFO.",
        "Storage: SQLite page_count × page_size after VACUUM; text fields get the assumed widths in TEXT_BYTES.",
        "boundaries = random gives every arm the same random owner per unit: the arms must then agree exactly.",
    )
    rules = (Rule("features", ("features", "developers"), _too_small),)
    parts = {"storage": ("users", "events_per_user", "copied_fields")}
    params = (
        Param("features", 600, 50, 20000, unit="features", help="feature requests simulated per arm (the sample size)"),
        Param("features_per_week", 7.0, 0.5, 30.0, unit="1/week", help="feature requests arriving (Poisson), all teams"),
        Param("cohesion", 0.7, 0.0, 1.0, unit="probability", key=True,
              help="chance that a touched unit lies in the feature's home domain"),
        Param("sync_interval_days", 7.0, 0.5, 30.0, unit="days", key=True,
              help="how often teams meet to agree cross-team work (1 = daily, 7 = weekly)"),
        Param("units_per_feature", 4, 1, 12, unit="units", help="modules or tables a feature touches"),
        Param("data_share", 0.4, 0.0, 1.0, unit="fraction", help="share of touched units that are tables"),
        Param("kernel_tables", 1, 0, 4, unit="tables", help="tables per domain (of 4) in the shared kernel"),
        Param("developers", 2, 1, 10, unit="people", help="developers per team"),
        Param("unit_days", 1.0, 0.1, 10.0, unit="days", help="mean work on one unit (exponential)"),
        Param("review_days", 0.25, 0.0, 5.0, unit="days", help="a team's review of a change to a table it shares"),
        Param("boundaries", "domains", choices=("domains", "random"),
              help="owners follow the domains (designed) or are drawn at random (the control)"),
        Param("copied_fields", 3, 0, 5, unit="fields", key=True,
              help="fields each context copies from others (the first n of the copies it declares)"),
        Param("users", 1000, 100, 20000, unit="users", help="users in the storage test (items: half as many)"),
        Param("events_per_user", 25, 1, 200, unit="events", key=True, help="analytics events stored per user"),
    )
    exercises = (
        Exercise("Teams meet daily instead of weekly. How much coordination is left to save?",
                 {"sync_interval_days": 1.0}, ("comparison", "coordination_reduction_pct"),
                 why="Daily syncs cut the wait for the next meeting in both designs. What is left with the shared "
                 "database is the review work every table change puts in four other teams' queues, which meeting "
                 "more often does not remove, so the share that contexts save grows."),
        Exercise("Features scatter over the domains (cohesion 0.3). Do bounded contexts still speed delivery up?",
                 {"cohesion": 0.3}, ("comparison", "delivery_speedup_x"),
                 why="When features scatter over the domains, most of them cross a context boundary anyway and wait "
                 "for other teams as they do with the shared database, so the speed-up shrinks towards 1."),
        Exercise("Keep only one copied field per context. What does duplication cost now?",
                 {"copied_fields": 1}, ("comparison", "storage_overhead_pct"),
                 why="Each context keeps its own copy of the fields it reads from the others; with one copied field "
                 "per context the duplicated bytes are a small share of the data."),
    )

    def part_storage(self, seed: int, p) -> dict:
        key = {"digest": fixture_digest(), "seed": seed, **dict(p)}
        hit = _CACHE.get_json("storage", key)
        if hit is not None:
            return hit
        schema = declared_schema()
        tables = {name: cols for own, _ in schema.values() for name, cols in own.items()}
        n_items = max(p.users // 2, 1)
        counts = {"users": p.users, "items": n_items, "events": p.users * p.events_per_user, "scores": p.users * 10,
                  "assignments": p.users * 2}
        s = Streams(seed)
        data = {name: replicas.rows_for(s[f"rows_{name}"], cols, counts[name], TEXT_BYTES,
                                        {"user_id": p.users, "item_id": n_items}) for name, cols in tables.items()}
        contexts = {ctx: (own, copies[:p.copied_fields]) for ctx, (own, copies) in schema.items()}
        out = {"shared": replicas.shared(tables, data), "contexts": replicas.per_context(contexts, tables, data)}
        _CACHE.put_json("storage", key, out)
        return out

    def simulate(self, seed: int, p) -> Outcome:
        s = Streams(seed)
        req = org.draw_requests(s, p.features, len(CONTEXTS), p.units_per_feature, p.cohesion, p.data_share, 4,
                                p.features_per_week / 7.0, p.unit_days)
        m = Measurements(self.arm_names + ("comparison",))
        warm = p.features // 10
        rows, series = [], {}
        for arm, design in DESIGNS.items():
            own = org.owners(req, "random" if p.boundaries == "random" else design, p.kernel_tables, len(CONTEXTS))
            r = org.run_org(req, own, len(CONTEXTS), p.developers, p.sync_interval_days, p.review_days)
            lead, coord, inv = r["lead_days"][warm:], r["coordination_days"][warm:], r["teams_involved"][warm:]
            series[arm] = {"lead_time_days": lead, "coordination_days": coord}
            m.batch_mean(arm, "lead_time_days", lead)
            m.batch_mean(arm, "coordination_days", coord)
            m.share(arm, "cross_team_pct", int((inv > 0).sum()), len(inv))
            m.batch_mean(arm, "other_teams_per_feature", inv.astype(float))
            rows.append(pd.DataFrame({"feature": np.arange(warm, p.features), "lead_time_days": lead, "arm": arm}))
        # the arms serve the same requests: pair them batch by batch (ratio estimator)
        kept = org.paired_ratio(series["pattern"]["coordination_days"], series["baseline"]["coordination_days"])
        m.value("comparison", "coordination_reduction_pct", 100 * (1 - kept.estimate),
                (100 * (1 - kept.high), 100 * (1 - kept.low)),
                missing="no feature waited for another team in the shared-database arm")
        speed = org.paired_ratio(series["baseline"]["lead_time_days"], series["pattern"]["lead_time_days"])
        m.value("comparison", "delivery_speedup_x", speed.estimate, speed)
        st = self.part("storage", seed, p)
        per = sum(st["contexts"].values())
        m.value("baseline", "storage_mb", st["shared"] / 1e6)
        m.value("pattern", "storage_mb", per / 1e6)
        m.missing("kernel", "storage_mb", "the storage test compares one shared database with per-context copies only")
        m.value("comparison", "storage_overhead_pct", 100.0 * (per - st["shared"]) / st["shared"])
        g = structure()
        edges = pd.DataFrame(g["edges"], columns=["from", "to", "via"])
        c = g["contracts"]
        notes = [f"Context map from the import graph ({g['modules']} modules): "
                 + ", ".join(f"{a} → {b}" for a, b in sorted({(a, b) for a, b, _ in g['edges']})) + ".",
                 f"import-linter: the api-only contract is {'kept' if not c['before'] else 'BROKEN'}; the seeded "
                 f"direct table read {'breaks it' if c['seeded'] else 'is NOT caught'}.",
                 f"{p.features} features per arm (first {warm} dropped as warm-up); storage: "
                 f"{st['shared'] / 1e6:.2f} MB shared vs {per / 1e6:.2f} MB in {len(CONTEXTS)} context databases."]
        return Outcome(m, {"lead": pd.concat(rows, ignore_index=True), "context_map": edges,
                           "storage": pd.DataFrame([{"database": k, "bytes": v} for k, v in st["contexts"].items()]
                                                   + [{"database": "shared (all tables once)", "bytes": st["shared"]}])},
                       notes=notes, extras={"contracts": c})

    def plots(self, result):
        from .plotting import bar_chart, line_chart

        lead = result.series["lead"].copy()
        lead["window"] = lead["feature"] // 50 * 50
        smooth = lead.groupby(["arm", "window"], as_index=False)["lead_time_days"].mean()
        return [context_map(result.series["context_map"]),
                line_chart(smooth, "window", "lead_time_days", "Lead time per 50 features", "feature",
                           "lead time (days)"),
                bar_chart(result.series["storage"], "database", "bytes", "Bytes on disk (SQLite)", "bytes")]


def context_map(edges: pd.DataFrame):
    """The contexts on a circle and an arrow-less line per importing pair, from the real import graph."""
    import altair as alt

    angle = {c: 2 * np.pi * k / len(CONTEXTS) for k, c in enumerate(CONTEXTS)}
    nodes = pd.DataFrame({"context": CONTEXTS, "x": [np.cos(angle[c]) for c in CONTEXTS],
                          "y": [np.sin(angle[c]) for c in CONTEXTS]})
    pairs = edges.groupby(["from", "to"], as_index=False).agg(via=("via", lambda v: ", ".join(sorted(set(v)))))
    pairs["x"], pairs["y"] = pairs["from"].map(lambda c: np.cos(angle[c])), pairs["from"].map(lambda c: np.sin(angle[c]))
    pairs["x2"], pairs["y2"] = pairs["to"].map(lambda c: np.cos(angle[c])), pairs["to"].map(lambda c: np.sin(angle[c]))
    axis = alt.Axis(labels=False, ticks=False, title=None, grid=False)
    lines = alt.Chart(pairs).mark_rule(color="#888").encode(
        x=alt.X("x:Q", axis=axis, scale=alt.Scale(domain=[-1.4, 1.4])), y=alt.Y("y:Q", axis=axis,
                                                                               scale=alt.Scale(domain=[-1.4, 1.4])),
        x2="x2:Q", y2="y2:Q", tooltip=["from:N", "to:N", "via:N"])
    dots = alt.Chart(nodes).mark_circle(size=400).encode(x="x:Q", y="y:Q", tooltip=["context:N"])
    text = alt.Chart(nodes).mark_text(dy=-18).encode(x="x:Q", y="y:Q", text="context:N")
    return alt.layer(lines, dots, text).properties(title="Context map (who imports whose api)", height=260,
                                                   width="container")


LAB = BoundedContextsLab()
