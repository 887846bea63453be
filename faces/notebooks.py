"""Generate and execute the lab notebooks: one per built lab, from the lab and the catalogue.

Run ``python -m faces.notebooks`` to rewrite every built lab's notebook (or
``python -m faces.notebooks q08 q12`` for some of them). Each notebook is built
from the lab's parameters, exercises and headline and the question's title,
summary, claims and metrics; nothing about a question is written here. The
notebook is then executed in a kernel of the current Python environment (the
same interpreter ``pytest --nbval --nbval-current-env`` uses) with ``notebooks/``
as its working directory, and written with its outputs, which nbval later
compares cell by cell.

Before building, the generator runs the lab once at the notebook's seed and
records each claim's verdict in an ``assert`` cell, so a notebook fails loudly
when a change to a lab or to the catalogue flips a verdict. Regenerate after
any intended change. A lab may declare ``cpu_tolerance = {(arm, metric): rel}``
for numbers another CPU's floating point may move (trained models): the cells
that print them are tagged ``nbval-ignore-output``, a strict table repeats every
other metric, and one assert cell checks each such number against its recorded
value within ``rel``.

Only the standard library and nbformat are imported at module level; nbconvert
and jupyter_client are imported when notebooks are executed.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
import time
from pathlib import Path
from typing import Iterable

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
SEED = 0
TIMEOUT_S = 600
KERNEL_NAME = "python3"
KERNELSPEC = {"name": KERNEL_NAME, "display_name": "Python 3 (ipykernel)", "language": "python"}
COMMAND = "python -m faces.notebooks"

# Section headings, in order; tests/test_notebooks.py looks for them.
SECTIONS = {
    "claims": "## Claims under test",
    "setup": "## Setup",
    "parameters": "## Parameters",
    "run": "## The run",
    "plots": "## Plots",
    "targets": "## Metrics against targets",
    "verdicts": "## Verdicts",
    "exercises": "## Exercises",
    "checks": "## Checks",
}
SOLUTION_TAG = "solution"
SCORE_TAG = "score"  # scores the learner's prediction against the changed run's interval
ASSERT_VERDICT = re.compile(r'^assert verdicts\["(?P<id>[^"]+)"\] == "(?P<verdict>holds|fails|conditional|inconclusive|not_measured)"', re.M)
INTERVAL_MARK = "assert low <= value <= high"
IGNORE_OUTPUT = "nbval-ignore-output"
CPU_CHECK = re.compile(r'^cpu_check\("(?P<arm>[^"]+)", "(?P<metric>[^"]+)", (?P<expected>\S+), (?P<tol>\S+)\)$', re.M)


def cpu_tolerance(lab) -> dict[tuple[str, str], float]:
    """The lab's CPU-sensitive (arm, metric) pairs and their relative tolerances (none by default)."""
    return dict(getattr(lab, "cpu_tolerance", {}) or {})


# --------------------------------------------------------------------------- building
def _md(text: str) -> str:
    """Escape the characters that would break a markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _num(x) -> str:
    if isinstance(x, float):
        return str(int(x)) if x.is_integer() and abs(x) < 1e15 else f"{x:g}"
    return str(x)


def _allowed(p) -> str:
    if p.choices is not None:
        return ", ".join(f"`{c}`" for c in p.choices)
    if p.kind is bool:
        return "`True`, `False`"
    lo = "-inf" if p.low is None else _num(p.low)
    hi = "inf" if p.high is None else _num(p.high)
    return f"{lo} to {hi}"


def _kwargs(changes: dict) -> str:
    return ", ".join(f"{name}={value!r}" for name, value in changes.items())


def _unit_of(question, metric: str) -> str:
    for m in question.metrics:
        if m.key == metric:
            return m.unit
    return ""


class _Cells:
    """Collects cells with stable ids (``q08-07-run``) so regenerating gives a clean diff."""

    def __init__(self, lab_id: str):
        self.lab_id = lab_id
        self.cells: list = []

    def _id(self, name: str) -> str:
        return f"{self.lab_id}-{len(self.cells):02d}-{name}"[:64]

    def md(self, name: str, text: str) -> None:
        self.cells.append(new_markdown_cell(text.strip("\n"), id=self._id(name)))

    def code(self, name: str, source: str, tags: Iterable[str] = (), hidden: bool = False) -> None:
        cell = new_code_cell(source.strip("\n"), id=self._id(name))
        if tags:
            cell.metadata["tags"] = list(tags)
        if hidden:
            cell.metadata["jupyter"] = {"source_hidden": True}
        self.cells.append(cell)


def build_notebook(lab, verdicts: dict[str, str], headline_interval: bool,
                   cpu_expected: dict[tuple[str, str], float] | None = None):
    """The notebook of ``lab`` (not executed).

    ``verdicts`` maps each claim id to the verdict the notebook asserts; ``headline_interval``
    says whether the headline metric had a confidence interval at the seed (then the
    notebook also asserts the value lies inside it). ``cpu_expected``: the recorded value of
    each CPU-sensitive metric (default: the values the stored notebook asserts).
    """
    tolerance = cpu_tolerance(lab)
    if tolerance and cpu_expected is None:
        cpu_expected = stored_cpu_expectations(lab.id)
    missing_cpu = [k for k in tolerance if k not in (cpu_expected or {})]
    if missing_cpu:
        raise ValueError(f"{lab.id}: no recorded value for CPU-sensitive {missing_cpu}; regenerate the notebook")
    loose = [IGNORE_OUTPUT] if tolerance else []  # cells that print CPU-sensitive numbers
    q = lab.question
    claims = list(q.claims)
    missing = [c.id for c in claims if c.id not in verdicts]
    if missing:
        raise ValueError(f"{lab.id}: no expected verdict for {', '.join(missing)}")
    head_arm, head_metric = lab.headline
    head_unit = _unit_of(q, head_metric)
    nb = new_notebook()
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["archlab"] = {"lab": lab.id, "seed": SEED, "generated_by": COMMAND}
    c = _Cells(lab.id)

    # 1. title and the question
    c.md("title", f"""
# {q.id} · {q.title}

**Topic {q.topic}: {q.topic_name}** · **Difficulty: {q.difficulty}** · question {q.number} of 30

{q.summary}

Every number in this notebook comes from `lab.run(seed=SEED)`, the call the explorer, the `archlab`
command line and the test suite make too. The notebook is generated from the lab and the question
catalogue by `{COMMAND} {lab.id}`: change the lab, then regenerate, rather than editing it by hand.
""")

    # 2. claims
    lines = "\n".join(f"- **`{cl.id}`**: {cl.text}  \n  reading: `{cl.arm}` `{cl.metric}` {cl.reading}"
                      for cl in claims)
    c.md("claims", f"""
{SECTIONS["claims"]}

The question makes these claims. Each is read as a number on one arm of the run: `baseline` runs
without the pattern, `pattern` with it, and `comparison` holds figures that set the two side by side.

{lines}
""")

    # 3. setup
    c.md("setup", f"""
{SECTIONS["setup"]}

`fmt` prints four significant digits without scientific notation; tables use it too, so the stored
outputs read the same on every machine. Change `SEED` to see another draw of the same experiment.
""")
    c.code("setup", f"""
import logging
logging.getLogger("matplotlib").setLevel(logging.ERROR)  # keep one-off notices (font cache) out of the outputs

%matplotlib inline
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display

from labs import get_lab
from faces.progress import notebook_scorer
from labs.workshop import exercise_answer


def fmt(x):
    \"\"\"A number with four significant digits, never in scientific notation.\"\"\"
    return np.format_float_positional(x, precision=4, unique=True, fractional=False, trim="-")


pd.set_option("display.float_format", fmt)
pd.set_option("display.max_colwidth", None)
pd.set_option("display.width", 200)  # fixed, so a terminal's width never changes a stored table
pd.set_option("display.max_columns", 50)

lab = get_lab("{lab.id}")
SEED = {SEED}
score_prediction = notebook_scorer(lab.id)  # scores a guess and saves it to your progress
""")

    # 4. parameters
    rows = "\n".join(f"| `{p.name}` | `{p.default!r}` | {_allowed(p)} | {_md(p.unit)} | {_md(p.help)} |"
                     for p in lab.params)
    example = lab.exercises[0].changes if lab.exercises else ({lab.params[0].name: lab.params[0].default}
                                                              if lab.params else {})
    c.md("parameters", f"""
{SECTIONS["parameters"]}

The run below uses the defaults. Any parameter can be passed to the run by name, for example
`lab.run(seed=SEED, {_kwargs(example)})`; a value outside its range is refused with a message
naming the parameter.

| parameter | default | allowed | unit | meaning |
|---|---|---|---|---|
{rows}
""")

    # 5. the run
    c.md("run", f"""
{SECTIONS["run"]}

Before running it, guess the headline number: `{head_metric}` on the `{head_arm}` arm{f" (in {head_unit})" if head_unit else ""}.
The table has one column per arm; `NaN` means the arm does not measure that metric.
""")
    c.code("run", """
result = lab.run(seed=SEED)
metrics = pd.DataFrame(result.metrics).rename_axis("metric")
metrics
""", tags=loose)
    c.code("notes", """
for note in result.notes:
    print("-", note)
""", tags=loose)
    if tolerance:
        pairs = ", ".join(f"({a!r}, {m!r})" for a, m in tolerance)
        c.md("cpu-sensitive", f"""
Some numbers come from models trained here in floating point, and another CPU may move them
slightly (its kernels round differently). They are marked `cpu` in the table below, which
repeats every other number exactly; the cells above and the tables below that print them are not
compared digit by digit, and the checks at the end hold each of them to a stated tolerance.
""")
        c.code("stable", f"""
CPU_SENSITIVE = [{pairs}]
stable = metrics.map(lambda x: "" if pd.isna(x) else fmt(x))
for arm, metric in CPU_SENSITIVE:
    stable.loc[metric, arm] = "cpu"
stable
""")

    # 6. plots
    c.md("plots", f"""
{SECTIONS["plots"]}

The lab's own charts, the ones the explorer shows (JupyterLab draws them; hover for values).
""")
    c.code("plots", """
for chart in lab.plots(result):
    display(chart)
    if hasattr(chart, "savefig"):  # a matplotlib figure: close it once shown
        plt.close(chart)
""", tags=("nbval-ignore-output",))

    # 7. targets
    c.md("targets", f"""
{SECTIONS["targets"]}

The question's metric table with what this run measured on each arm. `ci_low` and `ci_high` bound
the measured value where the lab computes a confidence interval; `met` says whether the value meets
the target (empty when the target is not a number).
""")
    c.code("targets", """
result.metric_table(lab.question)
""", tags=loose)

    # 8. verdicts
    c.md("verdicts", f"""
{SECTIONS["verdicts"]}

Each claim judged at these settings: `holds` or `fails` when its 95% interval is clear of the target,
`inconclusive` when it straddles it, `not_measured` when the metric does not exist here (the detail
says why). The evidence column says what decided it: `measured` (real code or a real model ran),
`simulated` (the model's dynamics), `assumed` (an input, named), `setting` (a configuration). Whether a
claim holds everywhere or only in part of the parameter space takes a sweep: `lab.check()`, or
`archlab check {lab.id}` on the command line, runs it (it takes longer, so it is not run here).
""")
    c.code("verdicts", """
verdict_table = pd.DataFrame(
    [{"claim": v.id, "verdict": v.verdict, "evidence": v.evidence, "detail": v.detail} for v in result.claims]
)
verdicts = dict(zip(verdict_table["claim"], verdict_table["verdict"]))
verdict_table
""", tags=loose)

    # 8b. why: the lab's write-up, after the verdicts (our words; labs/writeups/qNN.md)
    writeup = lab.writeup()
    if writeup:
        parts = [f"### {cl.text}\n\n{writeup[cl.id]}" for cl in claims if writeup.get(cl.id)]
        arms = f"### The arms\n\n{writeup['Arms']}\n\n" if writeup.get("Arms") else ""
        c.md("writeup", "## Why: the write-up\n\nRead this after you have made your predictions.\n\n"
             + arms + "\n\n".join(parts))

    # 8c. the simulator against a real server (the committed calibration, when the lab has one)
    from labs import calibration

    report = calibration.last_report(lab.id)
    if report is not None:
        lines = "\n".join(f"- {line}" for line in calibration.summary_lines(report))
        c.md("calibration", "## How far to trust the simulator: a real server\n\n"
             f"`archlab calibrate {lab.id}` serves the lab's real model on 127.0.0.1 and compares its latency "
             "with the simulator's at the same load. The committed result (data/calibration/"
             f"{lab.id}.json):\n\n" + lines)

    # 9. exercises
    c.md("exercises", f"""
{SECTIONS["exercises"]}

Each exercise changes a few parameters and names one number to watch. Write your prediction in the
cell under it before running the solution. The solution cell is collapsed: click it to show the code.
It reruns the lab on the same seed with only those changes, so the difference is the change alone;
the cell after it scores your prediction against the changed run's 95% interval.
""" if lab.exercises else f"""
{SECTIONS["exercises"]}

This lab has no exercises yet. Try changing a parameter from the table above and rerunning.
""")
    for k, ex in enumerate(lab.exercises, 1):
        arm, metric = ex.watch
        unit = _unit_of(q, metric)
        changes = "\n".join(f"  - `{name}` = `{value!r}`" for name, value in ex.changes.items())
        c.md(f"exercise{k}", f"""
### Exercise {k}: predict, then run

{ex.prompt}

- Change:
{changes}
- Watch: `{metric}` on the `{arm}` arm{f" ({unit})" if unit else ""}
""")
        c.code(f"prediction{k}", f"prediction = None  # your guess for {arm} {metric}{f' ({unit})' if unit else ''}")
        sensitive = (arm, metric) in tolerance
        c.code(f"solution{k}", f"""
changed = lab.run(seed=SEED, {_kwargs(ex.changes)})
arm, metric = {arm!r}, {metric!r}
print(f"{{arm}} {{metric}}: {{fmt(result.metrics[arm][metric])}} with the defaults, "
      f"{{fmt(changed.metrics[arm][metric])}} after the change")
flipped = [f"{{v.id}}: {{verdicts[v.id]}} -> {{v.verdict}}" for v in changed.claims if v.verdict != verdicts[v.id]]
print("verdicts that change:", "; ".join(flipped) if flipped else "none")
print(exercise_answer(lab.exercises[{k - 1}], result, changed, {unit!r}))
""", tags=[SOLUTION_TAG] + (loose if sensitive else []), hidden=True)
        c.code(f"score{k}", f"print(score_prediction(prediction, changed, {arm!r}, {metric!r}, {unit!r}))",
               tags=[SCORE_TAG])

    # 10. checks
    c.md("checks", f"""
{SECTIONS["checks"]}

The verdicts below were recorded when this notebook was generated. If one of these cells fails, a
change to the lab or to the question catalogue has flipped a claim: find out why, and if the change
is intended, regenerate the notebook with `{COMMAND} {lab.id}`.
""")
    for cl in claims:
        name = cl.id.partition(".")[2]
        c.code(f"check-{name}",
               f'assert verdicts["{cl.id}"] == "{verdicts[cl.id]}", verdict_table.set_index("claim").loc["{cl.id}", "detail"]')
    headline = f"""
arm, metric = lab.headline
value = result.metrics[arm][metric]
assert math.isfinite(value), f"headline {{arm}} {{metric}} is {{value}}"
"""
    if headline_interval:
        headline += f"""low, high = result.intervals[arm][metric]
{INTERVAL_MARK}, f"headline {{arm}} {{metric}} = {{fmt(value)}} lies outside [{{fmt(low)}}, {{fmt(high)}}]"
"""
    c.code("check-headline", headline)
    if tolerance:
        c.code("cpu-check-def", """
def cpu_check(arm, metric, expected, rel):
    \"\"\"A CPU-sensitive number within its relative tolerance of the value recorded at generation.\"\"\"
    value = result.metrics[arm][metric]
    assert abs(value - expected) <= rel * abs(expected), (
        f"{arm} {metric} = {value!r}, recorded {expected!r}: moved more than {rel:.0%}")
""")
        for (arm, metric), rel in tolerance.items():
            c.code(f"cpu-{arm}-{metric}", f'cpu_check("{arm}", "{metric}", {cpu_expected[(arm, metric)]!r}, {rel!r})')
    nb.cells = c.cells
    nbformat.validate(nb)
    return nb


def expectations(lab, seed: int = SEED) -> tuple[dict[str, str], bool]:
    """Run the lab once: each claim's verdict, and whether the headline metric has an interval
    (the CPU-sensitive values of that run: :func:`cpu_expectations`)."""
    result = lab.run(seed=seed)
    arm, metric = lab.headline
    value = result.metrics.get(arm, {}).get(metric)
    if value is None:
        raise ValueError(f"{lab.id}: headline {arm}.{metric} is not among the run's metrics")
    for k, ex in enumerate(lab.exercises, 1):
        w_arm, w_metric = ex.watch
        if w_metric not in result.metrics.get(w_arm, {}):
            raise ValueError(f"{lab.id}: exercise {k} watches {w_arm}.{w_metric}, which the run does not measure")
        lab.validate(ex.changes)  # a bad exercise fails here with the parameter's message
    interval = result.intervals.get(arm, {}).get(metric)
    has_interval = interval is not None and all(math.isfinite(x) for x in interval)
    return {v.id: v.verdict for v in result.claims}, has_interval


def cpu_expectations(lab, seed: int = SEED) -> dict[tuple[str, str], float]:
    """The CPU-sensitive metrics' values at ``seed`` (a cached run: the one ``expectations`` made)."""
    tolerance = cpu_tolerance(lab)
    if not tolerance:
        return {}
    result = lab.run(seed=seed)
    return {(arm, metric): float(result.metrics[arm][metric]) for arm, metric in tolerance}


def stored_cpu_expectations(lab_id: str) -> dict[tuple[str, str], float]:
    """The CPU-sensitive values a stored notebook asserts (empty if there is none)."""
    try:
        nb = nbformat.read(str(notebook_path(lab_id)), as_version=4)
    except (OSError, ValueError):
        return {}
    out = {}
    for cell in nb.cells:
        if cell.cell_type == "code":
            for m in CPU_CHECK.finditer(cell.source):
                out[(m["arm"], m["metric"])] = float(m["expected"])
    return out


def stored_expectations(nb) -> tuple[dict[str, str], bool]:
    """The verdicts a stored notebook asserts, and whether it asserts the headline interval."""
    verdicts: dict[str, str] = {}
    interval = False
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for m in ASSERT_VERDICT.finditer(cell.source):
            verdicts[m["id"]] = m["verdict"]
        interval = interval or INTERVAL_MARK in cell.source
    return verdicts, interval


def notebook_path(lab_id: str) -> Path:
    from labs.catalog import load_catalog

    return ROOT / load_catalog().get(lab_id).notebook


# --------------------------------------------------------------------------- executing
def _kernel_manager_class():
    """A kernel manager class for this interpreter, whatever kernelspecs are (or are not) installed.

    Like ``nbval --nbval-current-env``: the kernel is ``sys.executable -m ipykernel_launcher``,
    so notebooks are executed by the environment that has ArchLab installed, never by whatever
    ``python`` an installed ``python3`` kernelspec happens to find on the PATH.
    """
    import ipykernel.kernelspec
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class CurrentEnvSpecs(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            return KernelSpec(resource_dir=ipykernel.kernelspec.RESOURCES, **ipykernel.kernelspec.get_kernel_dict())

    class CurrentEnvKernelManager(AsyncKernelManager):
        @default("kernel_spec_manager")
        def _current_env_specs(self):
            return CurrentEnvSpecs(data_dir=self.data_dir)

    return CurrentEnvKernelManager


def execute(nb, cwd: Path = NOTEBOOK_DIR):
    """Execute a notebook in place: cells in order, in one fresh kernel that is shut down afterwards."""
    from nbconvert.preprocessors import ExecutePreprocessor

    ep = ExecutePreprocessor(timeout=TIMEOUT_S, kernel_name=KERNEL_NAME, record_timing=False,
                             kernel_manager_class=_kernel_manager_class(),
                             extra_arguments=["--IPKernelApp.log_level=ERROR"])  # no transport chatter
    ep.preprocess(nb, {"metadata": {"path": str(cwd)}})
    return nb


def _stderr_outputs(nb) -> list[str]:
    found = []
    for k, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                found.append(f"cell {k}: {out.get('text', '').strip()[:200]}")
    return found


def generate(lab_id: str, log=None) -> tuple[Path, float]:
    """Build, execute and write one lab's notebook; returns its path and the seconds it took."""
    from labs.registry import get_lab

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    t0 = time.perf_counter()
    lab = get_lab(lab_id)
    path = notebook_path(lab.id)
    log(f"{lab.id}: running the lab for the expected verdicts")
    verdicts, interval = expectations(lab)
    nb = build_notebook(lab, verdicts, interval, cpu_expectations(lab))
    log(f"{lab.id}: executing {path.relative_to(ROOT)}")
    execute(nb, path.parent)
    for line in _stderr_outputs(nb):
        log(f"{lab.id}: warning: stderr output, which may differ between machines: {line}")
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    seconds = time.perf_counter() - t0
    log(f"{lab.id}: wrote {path.relative_to(ROOT)} ({seconds:.1f} s; verdicts: "
        + ", ".join(f"{k.partition('.')[2]} {v}" for k, v in verdicts.items()) + ")")
    return path, seconds


def _generate_in_worker(lab_id: str) -> tuple[str, float]:
    path, seconds = generate(lab_id)
    return str(path), seconds


def stray_notebooks(keep: Iterable[Path], ids: Iterable[str] | None = None) -> list[Path]:
    """Notebooks in notebooks/ that no built lab writes (all of them, or only those of ``ids``)."""
    keep = {Path(p).resolve() for p in keep}
    prefixes = None if ids is None else tuple(f"{i}_" for i in ids)
    return sorted(p for p in NOTEBOOK_DIR.glob("q[0-9][0-9]_*.ipynb")
                  if p.resolve() not in keep and (prefixes is None or p.name.startswith(prefixes)))


def main(argv: list[str] | None = None) -> int:
    from labs.registry import UnknownLab, built_ids, get_lab

    parser = argparse.ArgumentParser(prog=COMMAND, description=(
        "Regenerate the lab notebooks (built from the lab and the catalogue), execute them and "
        "write them with their outputs. With no ids, every built lab, and notebooks of labs that "
        "are not built are removed."))
    parser.add_argument("ids", nargs="*", help="lab ids such as q08 (default: every built lab)")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="notebooks executed in parallel (default 1)")
    args = parser.parse_args(argv)

    try:
        ids = [get_lab(i).id for i in args.ids] if args.ids else built_ids()
    except UnknownLab as e:
        print(e, file=sys.stderr)
        return 2
    if args.jobs < 1:
        print(f"parameter jobs: {args.jobs} is not allowed; expected an integer >= 1", file=sys.stderr)
        return 2
    ids = list(dict.fromkeys(ids))
    t0 = time.perf_counter()
    written, failed = [], []
    if args.jobs == 1 or len(ids) == 1:
        for lab_id in ids:
            try:
                written.append(generate(lab_id)[0])
            except Exception as e:  # report every lab, then fail
                failed.append(lab_id)
                print(f"{lab_id}: FAILED: {type(e).__name__}: {_first_lines(e)}", file=sys.stderr, flush=True)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx) as pool:
            futures = {pool.submit(_generate_in_worker, lab_id): lab_id for lab_id in ids}
            for fut in as_completed(futures):
                lab_id = futures[fut]
                try:
                    written.append(Path(fut.result()[0]))
                except Exception as e:
                    failed.append(lab_id)
                    print(f"{lab_id}: FAILED: {type(e).__name__}: {_first_lines(e)}", file=sys.stderr, flush=True)

    keep = [notebook_path(i) for i in built_ids()]
    for stray in stray_notebooks(keep, ids if args.ids else None):
        stray.unlink()
        print(f"removed {stray.relative_to(ROOT)} (no built lab writes it)", file=sys.stderr)
    print(f"{len(written)} notebook(s) written in {time.perf_counter() - t0:.1f} s"
          + (f"; failed: {', '.join(sorted(failed))}" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


def _first_lines(e: Exception, n: int = 30) -> str:
    text = str(e).strip()
    lines = text.splitlines()
    return "\n".join(lines[-n:]) if len(lines) > n else text


if __name__ == "__main__":
    sys.exit(main())
