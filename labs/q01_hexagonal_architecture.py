"""Q1: one real scorer written three ways (ports and adapters, layers, one module), measured as code.

The scorer (validate four features, score with a scikit-learn or PyTorch model, apply a referral
rule) ships in ``data/code/q01`` as three packages that pass one acceptance suite. Coupling is
measured on five real change scenarios, each a shipped after-tree counted with ``git diff
--numstat`` and ``ast``: the share of files, or of top-level definitions, a change touches. The
change mix (``swap_share``, ``contract_share``) is assumed; events are drawn from it on common
random numbers. Propagation cost comes from grimp's import graph; the variant where each importer
of a changed module follows with probability ``importer_change_prob`` is assumed. Test speed is the
suite in fresh interpreters (``sim.suite_timing``), fakes against real adapters, stored in
``data/profiles/q01_test_speed.json`` and evaluated as T = start-up + I + S + n·t.
"""
from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from sim import structure as S
from sim.cache import DiskCache, fingerprint
from sim.rng import Streams
from sim.suite_timing import SuiteConfig, suite_seconds

from .contract import Arm, Exercise, Lab, Outcome, Param
from .measure import Measurements

CODE = Path(__file__).resolve().parent.parent / "data" / "code" / "q01"
PROFILE = Path(__file__).resolve().parent.parent / "data" / "profiles" / "q01_test_speed.json"
VARIANTS = {"baseline": ("layered", "layscorer"), "pattern": ("hexagonal", "hexscorer"),
            "monolith": ("monolith", "monoscorer")}
SCENARIOS = ("swap_model", "swap_store", "add_feature", "change_output", "change_rule")
_REAL = "from hexscorer.bootstrap import build_scorer\nimport hexscorer.adapters.{model}, hexscorer.adapters.sqlite_store"
CONFIGS = {  # how the suite runs: the unit suite (fakes), the control, real adapters, the other variants
    "fakes": SuiteConfig("hexagonal", (), "from hexscorer.core.scoring import Scorer\nfrom hexscorer.adapters.fakes "
                         "import FixedLogistic\nfrom hexscorer.adapters.memory_store import MemorySource",
                         "lambda rows: Scorer(FixedLogistic(), MemorySource(rows))"),
    "in_memory": SuiteConfig("hexagonal", (), "from hexscorer.bootstrap import make_source\nfrom hexscorer.core.scoring "
                             "import Scorer\nfrom hexscorer.adapters.fakes import FixedLogistic",
                             "lambda rows: Scorer(FixedLogistic(), make_source(rows, WORKDIR, 'memory'))"),
    "sklearn_sqlite": SuiteConfig("hexagonal", (), _REAL.format(model="sklearn_model"),
                                  "lambda rows: build_scorer(rows, WORKDIR)"),
    "torch_sqlite": SuiteConfig("hexagonal", ("swap_model",), _REAL.format(model="torch_model"),
                                "lambda rows: build_scorer(rows, WORKDIR)"),
    "layered": SuiteConfig("layered", (), "from layscorer.api import build_scorer", "lambda rows: build_scorer(rows, WORKDIR)"),
    "monolith": SuiteConfig("monolith", (), "from monoscorer.app import build_scorer",
                            "lambda rows: build_scorer(rows, WORKDIR)"),
}
_CACHE = DiskCache("q01", code=[S.__file__, __file__])


def fixture_digest() -> str:
    return fingerprint({p.relative_to(CODE).as_posix(): p.read_text(encoding="utf-8")
                        for p in sorted(CODE.rglob("*")) if p.is_file() and "__pycache__" not in p.parts})


def _scenario(variant: str, scenario: str, shipped: bool, tmp: Path) -> dict:
    base, overlay = CODE / "before" / variant, CODE / "changes" / scenario / variant
    before = S.materialise(base, tmp / "before")
    if shipped:  # modules the change adds (new adapters) were written earlier: lay them under the before-tree
        for f in overlay.rglob("*.py"):
            rel = f.relative_to(overlay)
            if not (base / rel).exists():
                (before / rel).parent.mkdir(parents=True, exist_ok=True)
                (before / rel).write_text(f.read_text(encoding="utf-8"), encoding="utf-8")
    after = S.materialise(base, tmp / "after", [overlay])
    stat = S.numstat(before, after)
    bf, af = S.python_files(before), S.python_files(after)
    changed, total = S.changed_definitions(bf, af)
    return {"files_changed": len(stat), "files_total": len(set(bf) | set(af)), "defs_changed": len(changed),
            "defs_total": total, "added": sum(c.added for c in stat), "deleted": sum(c.deleted for c in stat),
            "lines_before": S.count_lines(bf), "numstat": [[c.path, c.added, c.deleted] for c in stat]}


@functools.lru_cache(maxsize=2)
def analyse(shipped: bool) -> dict:
    """Every measured structure number of the fixtures (cached on their content and this code)."""
    key = {"digest": fixture_digest(), "shipped": shipped}
    hit = _CACHE.get_json("structure", key)
    if hit is not None:
        return hit
    out = {}
    for variant, package in VARIANTS.values():
        files = S.python_files(CODE / "before" / variant)
        imports = S.import_graph(CODE / "before" / variant, package)
        with tempfile.TemporaryDirectory() as tmp:
            scen = {s: _scenario(variant, s, shipped, Path(tmp) / s) for s in SCENARIOS}
        out[variant] = {"files": len(files), "lines": S.count_lines(files), "definitions": len(S.definitions(files)),
                        "imports": {m: sorted(v) for m, v in imports.items()},
                        "propagation_cost": S.propagation_cost(S.importers_of(imports)), "scenarios": scen}
    with tempfile.TemporaryDirectory() as tmp:
        seeded = S.materialise(CODE / "before" / "hexagonal", Path(tmp) / "seeded", [CODE / "seeded" / "hexagonal"])
        ini = CODE / "contracts" / "hexagonal.ini"
        out["contracts"] = {"before": S.lint_contracts(CODE / "before" / "hexagonal", ini).broken,
                            "seeded": S.lint_contracts(seeded, ini).broken}
    _CACHE.put_json("structure", key, out)
    return out


def timing_samples(which: str) -> tuple[dict, dict]:
    """(samples per configuration, provenance): the committed profile, or this machine (cached per CPU)."""
    import json

    from sim.suite_timing import measure, provenance

    if which == "reference":
        data = json.loads(PROFILE.read_text(encoding="utf-8"))
        return data["samples"], data["provenance"]
    prov = provenance()
    key = {"cpu": prov["cpu"], "versions": prov["versions"], "python": prov["python"], "digest": fixture_digest()}
    hit = _CACHE.get_json("live_timing", key)
    if hit is None:
        hit = {"samples": measure(CODE, CONFIGS, repeats=2, rounds=3), "provenance": prov}
        _CACHE.put_json("live_timing", key, hit)
    return hit["samples"], hit["provenance"]


class HexagonalLab(Lab):
    id = "q01"
    headline = ("pattern", "coupling_pct")
    refine_param = "change_events"
    arms = (Arm("baseline", "Layered", "the service imports scikit-learn and sqlite3 itself; api and training beside it"),
            Arm("pattern", "Ports and adapters", "a core with two ports; model and store adapters; one composition root"),
            Arm("monolith", "One module", "data access, model, rules and output in a single file"))
    assumptions = (
        "The five change scenarios are shipped after-trees; which changes happen how often (the mix) is assumed.",
        "A changed file is one git diff --numstat lists; a changed definition is a top-level statement whose ast differs.",
        "Coupling shares are over the union of the before- and after-tree's files or definitions; empty files are left out.",
        "Propagation: each importer of a changed module follows with probability importer_change_prob, decided once.",
        "Suite time T = start-up + I + S + n·t from fresh interpreters; the runner's own cost is runner_overhead_s.",
    )
    parts = {"timing": ("timings",)}
    params = (
        Param("change_events", 400, 20, 20000, unit="changes", help="change events drawn from the mix (the sample size)"),
        Param("swap_share", 0.4, 0.0, 1.0, unit="fraction", key=True,
              help="share of changes that swap the model or the store (half each)"),
        Param("contract_share", 2 / 3, 0.0, 1.0, unit="fraction",
              help="of the other changes, the share that add a feature or change the output (the rest change a rule)"),
        Param("coupling_unit", "files", choices=("files", "definitions"), key=True,
              help="count touched files, or touched top-level definitions (ast)"),
        Param("new_adapters", "written_in_change", choices=("written_in_change", "already_shipped"),
              help="whether a swap writes its new adapter module, or finds it already in the code base"),
        Param("importer_change_prob", 0.5, 0.0, 1.0, unit="probability", key=True,
              help="chance that an importer of a changed module must change too (1 = full reach)"),
        Param("n_tests", 200, 1, 100000, unit="tests", key=True, help="tests in the suite (each as long as the mean check)"),
        Param("fixture_scope", "shared", choices=("shared", "per_test"), key=True,
              help="build the scorer once per suite (session fixture) or once per test (function fixture)"),
        Param("integration_adapters", "sklearn_sqlite", choices=("sklearn_sqlite", "torch_sqlite", "in_memory"),
              help="adapters the integration suite runs through (in_memory: the control)"),
        Param("runner_overhead_s", 0.0, 0.0, 30.0, unit="s", help="fixed test-runner cost added to both suites (pytest start-up)"),
        Param("timings", "reference", choices=("reference", "live"),
              help="suite timings: the committed profile (data/profiles/q01_test_speed.json) or measured now"),
    )
    exercises = (
        Exercise("Count definitions instead of files. Does the layered code still look tightly coupled?",
                 {"coupling_unit": "definitions"}, ("baseline", "coupling_pct"),
                 why="The layered service is one big class plus a few constants: a change touches two of its three "
                 "files but only a few of its top-level definitions, so the unit you count decides how coupled it "
                 "looks."),
        Exercise("Rebuild the fixtures for every test. What happens to the integration ÷ unit ratio?",
                 {"fixture_scope": "per_test"}, ("comparison", "test_speedup_x"),
                 why="Real adapters pay their set-up (loading the model, opening SQLite) once per test instead of "
                 "once per suite, while a fake costs microseconds either way, so the integration suite slows and "
                 "the ratio grows."),
        Exercise("Suppose the PyTorch adapter was already written. What share of lines does the swap touch now?",
                 {"new_adapters": "already_shipped"}, ("pattern", "adapter_swap_lines_pct"),
                 why="When the new adapter already exists, a swap is only a change of wiring in the composition root: "
                 "a couple of lines instead of a new module."),
    )

    def part_timing(self, seed: int, p) -> tuple[dict, dict]:
        return timing_samples(p.timings)

    def simulate(self, seed: int, p) -> Outcome:
        facts = analyse(p.new_adapters == "already_shipped")
        s, m = Streams(seed), Measurements(self.arm_names + ("comparison",))
        other = 1.0 - p.swap_share
        mix = np.array([p.swap_share / 2, p.swap_share / 2, other * p.contract_share / 2,
                        other * p.contract_share / 2, other * (1 - p.contract_share)])
        events = s["changes"].choice(len(SCENARIOS), size=p.change_events, p=mix / mix.sum())
        rows = []
        for arm, (variant, package) in VARIANTS.items():
            f = facts[variant]
            sc = [f["scenarios"][name] for name in SCENARIOS]
            unit = "files" if p.coupling_unit == "files" else "defs"
            share = np.array([100 * x[f"{unit}_changed"] / x[f"{unit}_total"] for x in sc])
            m.mean(arm, "coupling_pct", share[events])
            crosses = np.array([x["files_changed"] >= 2 for x in sc])
            m.share(arm, "cross_module_changes_pct", int(crosses[events].sum()), len(events))
            importers = {k: set() for k in f["imports"]}
            for mod, targets in f["imports"].items():
                for t in targets:
                    importers[t].add(mod)
            m.value(arm, "propagation_cost_pct", 100 * f["propagation_cost"])
            mods, rng = sorted(importers), s.fresh("cascade")  # the same draws for every arm
            reached = [len(S.cascade(importers, mods[rng.integers(len(mods))], p.importer_change_prob, rng))
                       for _ in range(p.change_events)]
            m.mean(arm, "propagation_pct", 100 * np.array(reached) / len(mods))
            swap = f["scenarios"]["swap_model"]
            m.value(arm, "adapter_swap_lines_pct", 100 * swap["added"] / swap["lines_before"])
            m.value(arm, "code_lines", swap["lines_before"])
            m.value(arm, "modules", f["files"])
            m.value(arm, "definitions", f["definitions"])
            for name, x, pct in zip(SCENARIOS, sc, share):
                rows.append({"arm": arm, "scenario": name, "coupling_pct": pct, "files_changed": x["files_changed"],
                             "defs_changed": x["defs_changed"], "added": x["added"], "deleted": x["deleted"]})
        samples, prov = self.part("timing", seed, p)
        suite = {k: suite_seconds(v, p.n_tests, p.fixture_scope, p.runner_overhead_s) for k, v in samples.items()}
        m.mean("pattern", "suite_s", suite["fakes"])
        m.mean("pattern", "integration_suite_s", suite[p.integration_adapters])
        m.mean("baseline", "suite_s", suite["layered"])
        m.mean("monolith", "suite_s", suite["monolith"])
        # repeats ran interleaved (real and fake side by side under the same load): pair them
        m.mean("comparison", "test_speedup_x", suite[p.integration_adapters] / suite["fakes"])
        key = "t_shared_s" if p.fixture_scope == "shared" else "t_per_test_s"
        m.mean("pattern", "unit_test_us", [1e6 * x[key] for x in samples["fakes"]])
        m.mean("pattern", "integration_test_us", [1e6 * x[key] for x in samples[p.integration_adapters]])
        m.mean("comparison", "per_test_speedup_x", [r[key] / f[key] for r, f in
                                                     zip(samples[p.integration_adapters], samples["fakes"])])
        imp = {k: np.mean([x["import_s"] for x in v]) for k, v in samples.items()}
        c = facts["contracts"]
        notes = [f"Timings from {prov['cpu']} ({prov['cores']} cores, load {prov['loadavg_1m']}, {prov['date'][:10]}); "
                 f"imports {imp['fakes'] * 1e3:.0f} ms with fakes vs {imp[p.integration_adapters] * 1e3:.0f} ms "
                 f"through {p.integration_adapters}.",
                 f"Code size: {facts['hexagonal']['lines']} lines in {facts['hexagonal']['files']} files (ports and "
                 f"adapters), {facts['layered']['lines']} in {facts['layered']['files']} (layered), "
                 f"{facts['monolith']['lines']} in 1 (one module).",
                 f"import-linter: the core-imports-no-adapter contract is {'kept' if not c['before'] else 'BROKEN'}; "
                 f"the seeded violation {'breaks it' if c['seeded'] else 'is NOT caught'}."]
        return Outcome(m, {"scenarios": pd.DataFrame(rows)}, notes=notes,
                       extras={"contracts": c, "provenance": prov})

    def plots(self, result):
        from .plotting import bar_chart

        df = result.series["scenarios"]
        return [bar_chart(df, "scenario", "coupling_pct", "Share of the code base each change touches",
                          f"touched ({result.params['coupling_unit']}, %)", color="arm", rules=[(20, "20% target")]),
                bar_chart(df, "scenario", "added", "Lines added or edited per change (git diff --numstat)",
                          "lines", color="arm")]


LAB = HexagonalLab()
