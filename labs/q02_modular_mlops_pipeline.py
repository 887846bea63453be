"""Q2: a modular ML pipeline — cached steps, reproducible rebuilds, lead time and rollback.

A real eight-step pipeline (ingest → validate → features → split → train → evaluate → register →
deploy) on scikit-learn's digits is a networkx DAG. Each step is keyed by its code digest, its
inputs' hashes and its parameters (DVC's run-cache rule), so a change reruns only the steps it
reaches; which steps each change type reruns is measured on the real pipeline. Reproducibility
is measured in fresh Python processes: the pinned build (seeded, input pinned by hash, sorted
columns) against ad hoc builds with switchable causes (unseeded training, a "latest" input that
changed at ``mutation_rate``, feature columns in a set's PYTHONHASHSEED order). Lead time and
rollback come from a SimPy model whose step durations, hand-offs and failure rates are assumed
inputs; the rollback is a real registry alias flip, its duration assumed. Code reuse is counted
over the lab's own catalogue of three projects.
"""
from __future__ import annotations

import functools
import tempfile

import numpy as np
import pandas as pd
import simpy

import sim.pipeline_dag as pdg
from sim.cache import DiskCache
from sim.rng import Streams

from .contract import Arm, Exercise, Lab, Outcome, Param
from .measure import Measurements
from .plotting import bar_chart

CACHE = DiskCache("q02_reruns", code=[pdg])
MIX = {"data": 0.30, "hyperparameter": 0.25, "features_code": 0.15, "evaluation_code": 0.10,
       "deploy_config": 0.10, "refactor": 0.10}  # the assumed share of each change type
STEP_MIN = {"ingest": 10.0, "validate": 5.0, "features": 15.0, "split": 2.0, "evaluate": 5.0, "register": 2.0,
            "deploy": 10.0}  # assumed minutes per step (train: train_min)
CATALOGUE = ("digits", "wine", "breast_cancer")
# ad hoc causes: (unseeded training, columns in a set's order, a mutable latest input)
CAUSES = {"all": (1, 1, 1), "unseeded": (1, 0, 0), "set_columns": (0, 1, 0), "latest_input": (0, 0, 1),
          "none": (0, 0, 0)}


class ModularPipelineLab(Lab):
    id = "q02"
    headline = ("pattern", "deployment_time_min")
    refine_param = "changes"
    arms = (Arm("baseline", "Ad hoc scripts", "one script rerun end to end with hand-offs between people; rebuilt "
                "from whatever the environment gives (seed, latest input, column order)"),
            Arm("pattern", "Modular pipeline", "a DAG of cached steps keyed by code + input hashes, seeded and pinned; "
                "a rollback moves the registry's champion alias back"))
    assumptions = (
        "Step durations (minutes): ingest 10, validate 5, features 15, split 2, train train_min, evaluate 5, "
        "register 2, deploy 10; each run's time is lognormal around them (sigma 0.5).",
        "The change mix: data 30%, hyperparameter 25%, features_code 15%, evaluation_code 10%, deploy_config 10%, "
        "refactor 10%; which steps each type reruns is measured on the real pipeline.",
        "In the baseline every step waits for a person: an exponential hand-off of mean handoff_h hours.",
        "One training runner serves every change (first come, first served); changes arrive as a Poisson stream.",
        "A rollback takes detect_min plus alias_flip_min (pattern) or a full rebuild with hand-offs (baseline).",
        "Code reuse is decided by the lab's own project catalogue (digits, wine, breast_cancer): components "
        "used by two or more projects over distinct components, told apart by code digest.",
        "Rebuilds are compared on one CPU kind; pinned builds are byte-identical per CPU kind and library set only.",
    )
    parts = {"reruns": (), "rebuilds": ("profile", "rebuilds"), "rollback": ()}
    params = (
        Param("changes", 1000, 100, 30000, unit="changes", help="changes simulated through the pipeline per arm"),
        Param("changes_per_day", 4.0, 0.1, 50.0, unit="/day", help="rate at which changes arrive (Poisson)"),
        Param("change_type", "mix", choices=("mix",) + tuple(MIX), key=True,
              help="one change type for every change, or the assumed mix"),
        Param("train_min", 30.0, 1.0, 600.0, unit="min", key=True, help="mean duration of the training step"),
        Param("handoff_h", 4.0, 0.0, 48.0, unit="h", key=True,
              help="baseline: mean wait for a person between steps (0 = no hand-offs)"),
        Param("step_failure_pct", 5.0, 0.0, 50.0, unit="%", help="chance a step run fails and is rerun"),
        Param("detect_min", 2.0, 0.0, 120.0, unit="min", help="time to notice a bad model (both arms)"),
        Param("alias_flip_min", 0.5, 0.0, 60.0, unit="min", help="pattern: move the alias and reload serving"),
        Param("rebuilds", 7, 1, 7, unit="builds", help="fresh-process rebuilds compared with the original"),
        Param("profile", "reference", choices=("reference", "live"),
              help="rebuild outcomes: the committed measurement, or measured on this machine (minutes, cached)"),
        Param("causes", "all", choices=tuple(CAUSES), key=True,
              help="ad hoc causes switched on: all, one of unseeded / set_columns / latest_input, or none"),
        Param("mutation_rate", 0.3, 0.0, 1.0, unit="fraction", key=True,
              help="latest_input cause: share of rebuilds whose 'latest' input changed since the original"),
        Param("projects", 3, 1, 3, unit="projects", help="projects of the catalogue that share components"),
    )
    exercises = (
        Exercise("Leave only one ad hoc cause: a 'latest' input that changed before 30% of rebuilds. "
                 "How often does an ad hoc rebuild reproduce the model?",
                 {"causes": "latest_input"}, ("baseline", "reproducibility_pct"),
                 why="With only the mutable input left, a rebuild reproduces the model exactly when that input has "
                 "not changed since the last build; the other causes (unseeded training, set-ordered columns) "
                 "would make every rebuild differ."),
        Exercise("Make every change a data change. What is the modular pipeline's lead time now?",
                 {"change_type": "data"}, ("pattern", "deployment_time_min"),
                 why="A data change alters the first step's input hash, so every step after it reruns: the pipeline's "
                 "lead time becomes a full rebuild, its worst case."),
        Exercise("Remove the hand-offs (handoff_h = 0). How long does the ad hoc team take now?",
                 {"handoff_h": 0.0}, ("baseline", "deployment_time_min"),
                 why="Nearly all of the script's lead time is people waiting to pick up the next step; with no "
                 "hand-offs what is left is the steps' own work, still rerun in full for every change."),
    )

    def prepare(self, seed: int = 0) -> None:
        self.part("reruns", seed, self.settings())

    # ------------------------------------------------------------------ real work
    def part_reruns(self, seed: int, p) -> dict:
        """The steps each change type reruns on the real cached DAG (measured once; data seed fixed)."""
        hit = CACHE.get_json("reruns", {"v": 1})
        if hit is None:
            hit = pdg.measure_reruns()
            CACHE.put_json("reruns", {"v": 1}, hit)
        return hit

    def part_rebuilds(self, seed: int, p) -> dict:
        return pdg.reference_rebuilds() if p.profile == "reference" else pdg.live_rebuilds(p.rebuilds + 1)

    def part_rollback(self, seed: int, p) -> dict:
        """Register two versions, point champion at the second, flip it back: does serving get v1's bytes?"""
        with tempfile.TemporaryDirectory(prefix="archlab-q02-") as tmp:
            reg = pdg.Registry(tmp)
            blobs = [f"model-{k}".encode() * 1000 for k in (1, 2)]
            shas = [pdg.digest_bytes(b) for b in blobs]
            for b, h in zip(blobs, shas):
                reg.add(b, {"sha256": h, "accuracy": 0.0, "bytes": len(b)})
            reg.set_alias("champion", 2)
            served_bad = pdg.digest_bytes(reg.load("champion")) == shas[1]
            reg.set_alias("champion", 1)
            return {"ok": bool(served_bad and pdg.digest_bytes(reg.load("champion")) == shas[0]),
                    "versions": len(reg._read()["versions"])}

    # ------------------------------------------------------------------ the SimPy model
    def _lead_times(self, s: Streams, p, reruns: dict) -> dict[str, np.ndarray]:
        types = list(MIX) if p.change_type == "mix" else [p.change_type]
        probs = np.array([MIX[t] for t in types]) / sum(MIX[t] for t in types)
        kinds = s["types"].choice(len(types), size=p.changes, p=probs)
        gaps = s["arrivals"].exponential(1440.0 / p.changes_per_day, p.changes)
        n, k_train = len(pdg.STEP_NAMES), pdg.STEP_NAMES.index("train")
        mean = np.array([p.train_min if st == "train" else STEP_MIN[st] for st in pdg.STEP_NAMES])
        dur = mean[None, :, None] * np.exp(0.5 * _norm(s["durations"].random((p.changes, n, 4))) - 0.125)
        ok = s["failures"].random((p.changes, n, 4)) >= p.step_failure_pct / 100.0
        ok[:, :, -1] = True  # a failed run is retried, at most three times
        tries = np.arange(4)[None, None, :] <= np.argmax(ok, axis=2)[:, :, None]  # the attempts made
        handoff = p.handoff_h * 60.0 * s["handoffs"].exponential(1.0, (p.changes, n, 4))
        out = {}
        for arm in ("baseline", "pattern"):
            wait = handoff if arm == "baseline" else np.zeros_like(handoff)
            step_time = ((wait + dur) * tries).sum(axis=2)  # every step but train runs on its own resources
            reach = np.zeros((p.changes, n), bool)
            for t, name in enumerate(types):
                steps = pdg.STEP_NAMES if arm == "baseline" else reruns[name]
                reach[np.ix_(kinds == t, [pdg.STEP_NAMES.index(x) for x in steps])] = True
            before = (step_time * reach)[:, :k_train].sum(axis=1)
            after = (step_time * reach)[:, k_train + 1:].sum(axis=1)
            train = [[(w, d) for w, d, a in zip(wait[i, k_train], dur[i, k_train], tries[i, k_train]) if a]
                     if reach[i, k_train] else [] for i in range(p.changes)]
            env = simpy.Environment()
            runner = simpy.Resource(env, capacity=1)  # the one training runner, first come first served
            lead = np.zeros(p.changes)

            def change(i, env=env, runner=runner, lead=lead, before=before, after=after, train=train):
                t0 = env.now
                yield env.timeout(before[i])
                for w, d in train[i]:
                    if w > 0:
                        yield env.timeout(w)
                    with runner.request() as req:
                        yield req
                        yield env.timeout(d)
                yield env.timeout(after[i])
                lead[i] = env.now - t0

            def source(env=env):
                for i in range(p.changes):
                    yield env.timeout(gaps[i])
                    env.process(change(i))

            env.process(source())
            env.run()
            out[arm] = lead
        return out

    # ------------------------------------------------------------------ metrics
    def simulate(self, seed: int, p) -> Outcome:
        s = Streams(seed)
        reruns = self.part("reruns", seed, p)
        m = Measurements(self.arm_names)
        lead = self._lead_times(s, p, reruns)
        full = len(pdg.STEP_NAMES)
        mix = MIX if p.change_type == "mix" else {p.change_type: 1.0}
        share = sum(w * len(reruns[t]) for t, w in mix.items()) / sum(mix.values()) / full
        for arm in ("baseline", "pattern"):
            m.batch_mean(arm, "deployment_time_min", lead[arm])
            m.percentiles(arm, lead[arm], qs=(95,), key="deployment_p{q}_min", scale=1.0)
            m.value(arm, "steps_rerun_pct", 100.0 if arm == "baseline" else 100.0 * share)
        # rollback: an alias flip, or a rebuild of the previous version with every hand-off
        rb = self.part("rollback", seed, p)
        m.value("pattern", "rollback_time_min", p.detect_min + p.alias_flip_min)
        m.share("pattern", "rollback_serves_previous_pct", int(rb["ok"]), 1)
        # the baseline rolls back by rebuilding the previous version: a full run with every hand-off
        m.batch_mean("baseline", "rollback_time_min", p.detect_min + lead["baseline"])
        self._reproducibility(m, s, p)
        shared, distinct = _reuse(p.projects)
        m.value("pattern", "code_reuse_pct", 100.0 * shared / distinct)
        m.value("baseline", "code_reuse_pct", 0.0)  # one script per project: nothing is a shared component
        table = pd.DataFrame([{"change": t, "steps": len(reruns[t]), "arm": "pattern"} for t in MIX] +
                             [{"change": t, "steps": full, "arm": "baseline"} for t in MIX])
        notes = [f"Reruns measured on the real DAG: " + ", ".join(f"{t} {len(reruns[t])}/{full}" for t in MIX) + ".",
                 f"Rebuilds: {p.profile} profile measured on {self.part('rebuilds', seed, p)['provenance']['cpu']}; "
                 "durations, hand-offs and failure rates are assumed."]
        return Outcome(m, series={"reruns": table}, notes=notes)

    def _reproducibility(self, m: Measurements, s: Streams, p) -> None:
        builds = self.part("rebuilds", seed=0, p=p)["builds"][:p.rebuilds + 1]
        unseeded, set_columns, latest = CAUSES[p.causes]
        mutated = (s["mutations"].random(len(builds)) < p.mutation_rate) & bool(latest)
        cause = f"u{unseeded}s{set_columns}"
        ref = {"pattern": builds[0]["variants"]["m0u0s0"], "baseline": builds[0]["variants"][f"m0{cause}"]}
        for arm in ("baseline", "pattern"):
            got = [b["variants"]["m0u0s0" if arm == "pattern" else f"m{int(mutated[i + 1])}{cause}"]
                   for i, b in enumerate(builds[1:])]
            same = sum(g["sha256"] == ref[arm]["sha256"] for g in got)
            close = sum(abs(g["accuracy"] - ref[arm]["accuracy"]) * 100 <= 0.1 for g in got)
            m.share(arm, "reproducibility_pct", same, len(got))
            m.share(arm, "accuracy_match_pct", close, len(got))
            acc = [100 * g["accuracy"] for g in got] + [100 * ref[arm]["accuracy"]]
            m.value(arm, "accuracy_spread_pct", max(acc) - min(acc))

    def plots(self, result):
        if "reruns" not in result.series:
            return []
        return [bar_chart(result.series["reruns"], "change", "steps", "Steps a change reruns (of 8)", "steps rerun",
                          color="arm")]


@functools.lru_cache(maxsize=None)
def _reuse(projects: int) -> tuple[int, int]:
    return pdg.code_reuse(CATALOGUE[:projects])


def _norm(u):
    """Standard normal quantile of u (common random numbers for the lognormal durations)."""
    from scipy.special import ndtri

    return ndtri(np.clip(u, 1e-12, 1 - 1e-12))


LAB = ModularPipelineLab()
