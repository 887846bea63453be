"""Q9: model versions pushed through a registry, ad hoc (MLflow stages, free writes) or a guarded machine.

Each deployment is one model version's pipeline (``sim.lifecycle``): Draft, Training, Trained,
Validated, Staged, Production. Candidates are real classifiers (``sim.candidates``): a strong one from
``sim.models`` or a logistic regression trained on few digits that misses the 0.90 accuracy bar.
Some pipelines issue one invalid operation (skip staging, promote early or unapproved, push a weak
model); others race emergently: two versions of one model promoted within the read-to-write window,
or a reviewer withdrawing approval while a promotion is in flight (a stale read). Both arms share every
draw. A judge (``invalid_reasons``) labels each write against the true facts, so the machine can be
caught letting one through (a faulty build whose sampled staging errors pass the error guard).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import simpy

from sim.candidates import accuracy
from sim.lifecycle import AdHocRegistry, Guards, LifecycleMachine, Stage, graph, invalid_reasons
from sim.rng import Streams

from .contract import Arm, Exercise, Lab, Outcome, Param
from .measure import Measurements

FAULTS = ("skip_staging", "early_promote", "unapproved", "force_weak")
WEAK_VARIANTS = 4
CATEGORIES = (("illegal edge", "skipped a stage"), ("not staged long", "staged < min"),
              ("second version", "two promotions at once"), ("not approved", "no approval"),
              ("accuracy", "weak model"), ("serving error", "faulty build"))


class ModelLifecycleLab(Lab):
    id = "q09"
    headline = ("baseline", "deployment_errors_pct")
    refine_param = "deployments"
    arms = (Arm("baseline", "Ad-hoc registry", "MLflow stages written freely; the pipeline checks in the client"),
            Arm("pattern", "Guarded state machine",
                "transition table, guards in the registry, compare-and-set on revisions, one champion"))
    assumptions = (
        "A deployment is one model version's pipeline; it counts as an error if any write on it that the registry "
        "applied was invalid (off the table, a failed guard on the true facts, or a second Production version).",
        "Training takes an exponential time (mean 2 h); staging lasts min_staged_h plus an exponential 4 h.",
        "Staging traffic is Poisson at staging_requests_per_h; each request fails with the build's true error rate.",
        "A pipeline whose write is refused as stale re-reads and retries (up to 3 times); other refusals end it.",
        "A reviewer's withdrawal of approval lands uniformly within one promote window before or after the read.",
    )
    parts = {"candidates": ("good_model", "weak_train_samples")}
    params = (
        Param("deployments", 2000, 200, 20000, unit="versions",
              help="model versions pushed through per arm (about 8 registry writes each)"),
        Param("invalid_share", 0.05, 0.0, 1.0, unit="fraction", key=True,
              help="share of pipelines that issue one invalid operation (skip, early, unapproved, weak model)"),
        Param("versions_per_day", 2.0, 0.05, 48.0, unit="versions/day", key=True,
              help="new versions per registered model per day; more means overlapping promotions"),
        Param("promote_window_min", 30.0, 0.0, 600.0, unit="min", key=True,
              help="time between a promotion's read of the registry and its write (the stale-read window)"),
        Param("revoke_share", 0.05, 0.0, 1.0, unit="fraction",
              help="share of staged versions whose approval a reviewer withdraws around promotion time"),
        Param("staging_requests_per_h", 100.0, 0.5, 100000.0, unit="req/h", key=True,
              help="staging traffic: the evidence the error-rate guard reads"),
        Param("models", 10, 1, 200, unit="models", help="registered models the versions belong to"),
        Param("weak_share", 0.2, 0.0, 1.0, unit="fraction", help="share of candidates that are the weak model"),
        Param("weak_train_samples", 60, 10, 1347, unit="digits",
              help="training digits of the weak logistic regression (60 gives about 0.8 accuracy)"),
        Param("good_model", "logreg", choices=("logreg", "mlp"), help="the strong candidate (sim.models)"),
        Param("faulty_build_share", 0.05, 0.0, 1.0, unit="fraction",
              help="share of builds whose true serving error rate is faulty_error_pct"),
        Param("faulty_error_pct", 2.0, 0.0, 100.0, unit="%", help="true serving error rate of a faulty build"),
        Param("healthy_error_pct", 0.3, 0.0, 100.0, unit="%", help="true serving error rate of a healthy build"),
        Param("min_accuracy", 0.90, 0.5, 0.99, unit="fraction", help="accuracy guard on the held-out digits"),
        Param("min_staged_h", 24.0, 0.0, 240.0, unit="h", help="time a version must spend in Staged"),
        Param("max_error_pct", 1.0, 0.01, 100.0, unit="%", help="staging error-rate guard"),
        Param("require_approval", True, help="promotion needs a reviewer's approval"),
    )
    exercises = (
        Exercise("Make promotions slow: 4 hours between reading the registry and writing. What happens to the "
                 "ad-hoc registry's deployment errors?", {"promote_window_min": 240.0}, ("baseline", "deployment_errors_pct"),
                 why="The ad-hoc registry reads the state, waits, then writes it: the longer that window, the more "
                 "often another actor changes the model in between, and each lost update deploys the wrong "
                 "version."),
        Exercise("Starve staging of traffic (2 requests per hour). Does the machine still keep errors under 0.5%?",
                 {"staging_requests_per_h": 2.0}, ("pattern", "deployment_errors_pct"),
                 why="The error-rate guard reads the errors seen in staging; with 2 requests an hour a faulty build "
                 "often shows no error at all in its few requests, passes the guard, and reaches production."),
        Exercise("Stop invalid operations, reviewer withdrawals and the promote window. How far apart are the arms?",
                 {"invalid_share": 0.0, "revoke_share": 0.0, "promote_window_min": 0.0},
                 ("comparison", "errors_avoided_pct"),
                 why="With no invalid operations, no withdrawals and no race window there is nothing for the state "
                 "machine to refuse, so both registries make the same (zero) errors and the share avoided has no "
                 "denominator."),
    )

    def part_candidates(self, seed, p) -> dict:
        s = Streams(seed).seed_sequence("candidates").generate_state(1 + WEAK_VARIANTS)
        return {"good": accuracy(p.good_model, int(s[0]), 0),
                "weak": [accuracy("weak", int(x), p.weak_train_samples) for x in s[1:]]}

    def prepare(self, seed: int = 0) -> None:
        self.part("candidates", seed, self.settings())

    def simulate(self, seed: int, p) -> Outcome:
        cands = self.part("candidates", seed, p)
        d = _draws(Streams(seed), p, cands)
        guards = Guards(p.min_accuracy, p.min_staged_h, p.max_error_pct / 100, p.require_approval)
        runs = {"baseline": _run_arm(AdHocRegistry(guards), p, d), "pattern": _run_arm(LifecycleMachine(guards), p, d)}
        n = p.deployments
        m = Measurements(("baseline", "pattern", "comparison"))
        for arm, r in runs.items():
            m.share(arm, "deployment_errors_pct", r["error"].sum(), n)
            m.value(arm, "invalid_states", r["applied_invalid"])
            m.value(arm, "invalid_attempted", r["attempted_invalid"])
            nothing = "no invalid transition was attempted at these settings: nothing to block"
            att = r["attempted_invalid"]
            m.value(arm, "transitions_blocked_pct", 100.0 * r["blocked_invalid"] / att if att else np.nan,
                    missing=nothing)  # a count over every attempt of this stream, not a sample: no interval
            m.share(arm, "escape_rate_pct", r["applied_invalid"], att, missing=nothing)
            m.value(arm, "stale_refusals", r["stale"])
            m.value(arm, "valid_refused", r["false_blocks"])
            m.share(arm, "reached_production_pct", r["reached"].sum(), n)
            m.value(arm, "registry_writes", r["writes"])
        m.value("pattern", "good_model_accuracy_pct", 100 * cands["good"])
        m.value("pattern", "weak_model_accuracy_pct", 100 * float(np.mean(cands["weak"])))
        m.saving_pct("comparison", "errors_avoided_pct", ("pattern", "deployment_errors_pct"),
                     ("baseline", "deployment_errors_pct"),
                     missing="the ad-hoc registry had no deployment error at these settings: nothing to avoid")
        attempts = pd.DataFrame([row for arm, r in runs.items() for row in r["attempts"]],
                                columns=["arm", "category", "from_stage", "to_stage", "applied", "time_h"])
        errors = pd.concat([pd.DataFrame({"time_d": d["arrival"] / 24, "errors": np.cumsum(r["error"]), "arm": arm})
                            for arm, r in runs.items()], ignore_index=True)
        notes = [f"{n} versions of {p.models} models over {d['arrival'][-1] / 24:.0f} days per arm; "
                 f"{runs['baseline']['writes']} registry writes (ad hoc), {runs['pattern']['writes']} (machine).",
                 f"Candidates: {p.good_model} {100 * cands['good']:.1f}% held-out accuracy; weak logistic regressions "
                 f"on {p.weak_train_samples} digits {', '.join(f'{100 * a:.1f}%' for a in cands['weak'])}."]
        return Outcome(m, {"attempts": attempts, "errors": errors}, notes=notes)

    def plots(self, result):
        from .plotting import bar_chart, line_chart

        a = result.series["attempts"]
        a = a[a["applied"]]
        table = (a.groupby(["category", "arm"]).size().unstack("arm")
                 .reindex(index=[c for _, c in CATEGORIES], columns=["baseline", "pattern"]).fillna(0))
        applied = table.rename_axis("cause").reset_index().melt("cause", var_name="arm", value_name="writes")
        return [_plot_graph(result.series["attempts"]),
                bar_chart(applied, "cause", "writes", "Invalid writes the registry applied, by cause",
                          "writes applied", color="arm"),
                line_chart(result.series["errors"], "time_d", "errors", "Deployments ending in an error",
                           "time (days)", "cumulative errors")]


def _draws(streams: Streams, p, cands: dict) -> dict:
    """Every random input, drawn once and shared by both arms (common random numbers)."""
    n = p.deployments
    rate_h = p.models * p.versions_per_day / 24
    weak = streams["weak"].random(n) < p.weak_share
    variant = streams["weak"].integers(0, WEAK_VARIANTS, n)
    invalid = streams["faults"].random(n) < p.invalid_share
    kind = streams["faults"].integers(0, len(FAULTS), n)
    weak |= invalid & (kind == FAULTS.index("force_weak"))
    faulty = streams["builds"].random(n) < p.faulty_build_share
    true_err = np.where(faulty, p.faulty_error_pct, p.healthy_error_pct) / 100
    early = invalid & (kind == FAULTS.index("early_promote"))
    staged_h = np.where(early, p.min_staged_h * streams["staging"].uniform(0.05, 0.5, n),
                        p.min_staged_h + streams["staging"].exponential(4.0, n))
    requests = streams["traffic"].poisson(p.staging_requests_per_h * staged_h)
    window_h = p.promote_window_min / 60
    return {
        "arrival": np.cumsum(streams["arrivals"].exponential(1 / rate_h, n)),
        "model": streams["models"].integers(0, p.models, n),
        "train_h": streams["training"].exponential(2.0, n),
        "accuracy": np.where(weak, np.asarray(cands["weak"])[variant], cands["good"]),
        "fault": np.where(invalid, kind, -1),
        "true_err": true_err, "staged_h": staged_h, "requests": requests,
        "errors": streams["traffic"].binomial(requests, true_err),
        "revoke": streams["reviews"].random(n) < p.revoke_share,
        "revoke_at": streams["reviews"].uniform(-1, 1, n) * window_h,
        "window_h": window_h,
    }


def _run_arm(reg: AdHocRegistry, p, d: dict) -> dict:
    env = simpy.Environment()
    n = p.deployments
    out = {"error": np.zeros(n, bool), "reached": np.zeros(n, bool), "attempts": [], "writes": 0,
           "attempted_invalid": 0, "blocked_invalid": 0, "applied_invalid": 0, "stale": 0, "false_blocks": 0}
    arm = "pattern" if reg.enforcing else "baseline"
    g = reg.guards

    def write(i, snap, target):
        why = invalid_reasons(reg, snap, target, env.now, d["true_err"][i])
        dec = reg.transition(snap, target, env.now)
        out["writes"] += 1
        if why:
            out["attempted_invalid"] += 1
            out["applied_invalid" if dec.applied else "blocked_invalid"] += 1
            out["error"][i] |= dec.applied
            label = next(c for k, c in CATEGORIES if any(k in w for w in why))
            out["attempts"].append((arm, label, snap.stage.value, target.value, dec.applied, env.now))
        elif not dec.applied and not dec.reason.startswith("stale"):
            out["false_blocks"] += 1
        out["stale"] += dec.reason.startswith("stale")
        return dec

    def step(i, name, version, target):
        return write(i, reg.read(name, version), target).applied

    def revoke(name, version, delay):
        yield env.timeout(delay)
        reg.set_approval(name, version, False)

    def pipeline(i):
        yield env.timeout(d["arrival"][i])
        name, fault = f"model-{d['model'][i]}", d["fault"][i]
        v = reg.create_version(name, float(d["accuracy"][i]), env.now).version
        if not step(i, name, v, Stage.TRAINING):
            return
        yield env.timeout(d["train_h"][i])
        if not step(i, name, v, Stage.TRAINED):
            return
        if fault == FAULTS.index("skip_staging"):
            out["reached"][i] = step(i, name, v, Stage.PRODUCTION)
            return
        if not (d["accuracy"][i] > g.min_accuracy or fault == FAULTS.index("force_weak")):
            step(i, name, v, Stage.ARCHIVED)  # the client's own check: retire the candidate
            return
        if not (step(i, name, v, Stage.VALIDATED) and step(i, name, v, Stage.STAGED)):
            return
        yield env.timeout(d["staged_h"][i])
        reg.record_staging(name, v, int(d["requests"][i]), int(d["errors"][i]))
        if fault != FAULTS.index("unapproved"):
            reg.set_approval(name, v, True)
        if d["revoke"][i]:
            if d["revoke_at"][i] <= 0:
                reg.set_approval(name, v, False)
            else:
                env.process(revoke(name, v, d["revoke_at"][i]))
        for _ in range(3):
            snap = reg.read(name, v)
            ok = (snap.stage is Stage.STAGED
                  and (snap.approved or not g.require_approval or fault == FAULTS.index("unapproved"))
                  and snap.observed_error_rate < g.max_error_rate
                  and (env.now - snap.staged_at >= g.min_staged_h or fault == FAULTS.index("early_promote")))
            if not ok:
                if snap.stage is Stage.STAGED:
                    step(i, name, v, Stage.ARCHIVED)
                return
            if d["window_h"] > 0:
                yield env.timeout(d["window_h"])
            dec = write(i, snap, Stage.PRODUCTION)
            if not dec.reason.startswith("stale"):
                break
        out["reached"][i] = dec.applied

    for i in range(n):
        env.process(pipeline(i))
    env.run()
    return out


def _plot_graph(attempts: pd.DataFrame):
    """The transition table as a graph; dashed red arrows: edges off the table that pipelines tried."""
    import networkx as nx

    from .plotting import figure

    g = graph()
    order = list(Stage)
    pos = {s: (k, 0.35 * (k % 2)) for k, s in enumerate(order)}
    pos[Stage.ARCHIVED] = (len(order) - 2, -1.1)
    fig, ax = figure("Lifecycle transition table (solid) and off-table writes tried (dashed)", size=(9, 4.2))
    ax.grid(False)
    nx.draw_networkx_nodes(g, pos, ax=ax, node_color="#d6eaf8", node_size=1900, edgecolors="#2471a3")
    nx.draw_networkx_labels(g, pos, {s: s.value for s in order}, ax=ax, font_size=8)
    nx.draw_networkx_edges(g, pos, ax=ax, arrows=True, arrowsize=14, node_size=1900, edge_color="#2471a3",
                           connectionstyle="arc3,rad=0.08")
    labels = {(a, b): "\n".join(e["guards"]) for a, b, e in g.edges(data=True) if e["guards"]}
    nx.draw_networkx_edge_labels(g, pos, labels, ax=ax, font_size=7, font_color="#7d3c98")
    off = attempts[attempts["category"] == "skipped a stage"].groupby(["from_stage", "to_stage"]).size()
    bad = nx.DiGraph()
    for (a, b), k in off.items():
        bad.add_edge(Stage(a), Stage(b), k=k)
    if bad.number_of_edges():
        nx.draw_networkx_edges(bad, pos, ax=ax, style="dashed", edge_color="#c0392b", arrows=True, node_size=1900,
                               connectionstyle="arc3,rad=-0.35")
        nx.draw_networkx_edge_labels(bad, pos, {e: f"{bad.edges[e]['k']} tried" for e in bad.edges}, ax=ax,
                                     font_size=7, font_color="#c0392b", connectionstyle="arc3,rad=-0.35")
    ax.margins(0.1, 0.15)
    ax.set_axis_off()
    return fig


LAB = ModelLifecycleLab()
