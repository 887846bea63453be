"""The interview drill: answer a question aloud or in writing, commit to its numbers, then see the lab.

A drill shows a question (title and summary) with a timer (2 to 5 minutes by
difficulty, shown, not enforced), takes a free-text answer, then asks the learner
to state what the answer rests on before any run is shown: the lab's headline
number and each claim's verdict (or, in multiple-choice mode, where each claim
holds, with wrong options taken from settings where it fails). ``labs.workshop``
scores each against the lab's run and region verdicts; a model answer is then
assembled from the write-up and the lab's numbers; follow-ups come from the
exercises and the claims' sweeps. Questions without a lab are drilled ungraded.
``drill_page`` is the explorer's /drill page; ``cli_drill`` the terminal drill.
"""
from __future__ import annotations

import random
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

from faces.explorer import fmt_with_ci, metric_unit
from labs.catalog import load_catalog
from labs.measure import fmt_number
from labs.params import fmt_value
from labs.registry import built_ids, get_lab
from labs.workshop import STATED_VERDICTS, score_number, score_verdict

TIMER_S = {"foundational": 120, "intermediate": 180, "advanced": 300}
MAX_SWEEP_FOLLOWUPS = 3
MAX_WRONG_OPTIONS = 3
_NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")


def clock(seconds: float) -> str:
    s = max(0, int(round(seconds)))
    return f"{s // 60}:{s % 60:02d}"


def parse_number(text) -> float | None:
    """The first number in what the learner typed ('30 s', '1,200'), or None."""
    if text is None:
        return None
    if isinstance(text, (int, float)):
        return float(text)
    m = _NUMBER.search(str(text).replace(",", ""))
    return float(m.group(0)) if m else None


def parse_verdict(text) -> str | None:
    t = str(text or "").strip().lower()
    for v in STATED_VERDICTS:
        if t and v.startswith(t):
            return v
    return None


@dataclass
class Item:
    """One thing the learner states: a number, a verdict, or a choice among options."""

    key: str
    kind: str  # number | verdict | choice
    prompt: str
    arm: str = ""
    metric: str = ""
    unit: str = ""
    claim: str = ""
    changes: dict = field(default_factory=dict)  # a follow-up's settings (empty: the drilled settings)
    options: tuple[str, ...] = ()
    correct: int | None = None  # the right option (choice items)


@dataclass
class Graded:
    item: Item
    stated: str
    credit: float | None  # None: not graded
    text: str
    score: object = None  # NumberScore / VerdictScore


class Drill:
    """A drill of one question at one seed; runs and sweeps the lab lazily, once."""

    def __init__(self, qid: str, seed: int = 0, regions: bool = True):
        self.question = load_catalog().get(qid)
        self.qid = self.question.id
        self.built = self.qid in built_ids()
        self.lab = get_lab(self.qid) if self.built else None
        self.seed, self.use_regions = seed, regions
        self.timer_s = TIMER_S.get(self.question.difficulty, 180)
        self._result, self._regions, self._runs = None, None, {}

    # ------------------------------------------------------------ lab numbers (lazy)
    @property
    def result(self):
        if self._result is None and self.lab is not None:
            self._result = self.lab.run(self.seed)
        return self._result

    @property
    def regions(self) -> dict:
        """Claim id -> region Verdict from ``Lab.check`` (empty when not swept or no lab)."""
        if self._regions is None:
            self._regions = ({v.id: v for v in self.lab.check(self.seed)}
                             if self.lab is not None and self.use_regions else {})
        return self._regions

    def run_at(self, changes: dict):
        key = tuple(sorted(changes.items()))
        if key not in self._runs:
            self._runs[key] = self.lab.run(self.seed, **changes) if changes else self.result
        return self._runs[key]

    def unit(self, metric: str) -> str:
        return metric_unit(self.question, metric)

    # ------------------------------------------------------------ what the learner states
    def statements(self, mode: str = "open") -> list[Item]:
        """Before any run: the headline number, then each claim's verdict (or where it holds, in choice mode)."""
        items = []
        if self.lab is not None:
            arm, metric = self.lab.headline
            unit = self.unit(metric)
            items.append(Item("headline", "number", f"The headline: {self.lab.arm(arm).label} ({arm}) {metric}"
                              + (f", in {unit}" if unit else "") + "?", arm, metric, unit))
        for c in self.question.claims:
            if mode == "choice" and self.lab is not None:
                items.append(self.choice_item(c))
            else:
                items.append(Item(c.id, "verdict", f"{c.text} Holds, fails or conditional?", c.arm, c.metric,
                                  claim=c.id, options=STATED_VERDICTS))
        return items

    def choice_item(self, c) -> Item:
        """Where does the claim hold? The right region and wrong options from settings where it fails."""
        region = self.regions.get(c.id)
        point = next(v for v in self.result.claims if v.id == c.id)
        if region is None or not region.grid:
            right = f"it {point.verdict} at these settings"
            wrong = [f"it {v} at these settings" for v in ("holds", "fails") if v != point.verdict]
        else:
            right = region.region
            failing = [cell for cell in region.grid if cell["verdict"] == "fails"]
            names = [k for k in region.grid[0] if k not in ("verdict", "measured", "low", "high", "reason")]
            wrong = []
            for cell in failing:
                text = "holds only when " + " and ".join(f"{n} = {fmt_value(cell[n])}" for n in names)
                if text not in wrong and text != right:
                    wrong.append(text)
            rng = random.Random(f"{self.qid}-{c.id}-{self.seed}")
            rng.shuffle(wrong)
            wrong = wrong[:MAX_WRONG_OPTIONS - 1]
            for alt in ("holds for every setting tried", "fails everywhere tried"):
                if alt not in right and len(wrong) < MAX_WRONG_OPTIONS:
                    wrong.append(alt)
        options = [right, *wrong]
        random.Random(f"order-{self.qid}-{c.id}-{self.seed}").shuffle(options)
        return Item(c.id, "choice", f"Where does this hold? {c.text}", c.arm, c.metric, claim=c.id,
                    options=tuple(options), correct=options.index(right))

    # ------------------------------------------------------------ grading
    def grade(self, item: Item, text) -> Graded:
        stated = "" if text is None else str(text).strip()
        if self.lab is None:
            return Graded(item, stated, None, "ungraded: this question has no lab yet, so nothing to score against.")
        if item.kind == "number":
            x = parse_number(stated)
            if x is None:
                return Graded(item, stated, 0.0, "skipped: no number stated.")
            run = self.run_at(item.changes)
            s = score_number(x, run.metrics.get(item.arm, {}).get(item.metric),
                             run.intervals.get(item.arm, {}).get(item.metric), item.unit)
            return Graded(item, stated, s.credit, s.sentence(), s)
        if item.kind == "verdict":
            v = parse_verdict(stated)
            if v is None:
                return Graded(item, stated, 0.0, "skipped: say holds, fails or conditional.")
            run = self.run_at(item.changes)
            point = next(x for x in run.claims if x.id == item.claim)
            region = None if item.changes else self.regions.get(item.claim)
            s = score_verdict(v, point, region)
            return Graded(item, v, s.credit if s.graded else None, s.sentence(), s)
        k = _choice_index(stated, len(item.options))
        if k is None:
            return Graded(item, stated, 0.0, f"skipped; the answer is: {item.options[item.correct]}.")
        if k == item.correct:
            return Graded(item, item.options[k], 1.0, f"right: {item.options[k]}.")
        why = "the sweep shows it fails there" if item.options[k].startswith("holds only when ") else \
            "that is not what the lab found"
        return Graded(item, item.options[k], 0.0, f"wrong: {why}; the answer is: {item.options[item.correct]}.")

    @staticmethod
    def total(graded: list[Graded]) -> float | None:
        credits = [g.credit for g in graded if g.credit is not None]
        return sum(credits) / len(credits) if credits else None

    # ------------------------------------------------------------ after the reveal
    def model_answer(self) -> str:
        """A model answer in our words: the lab's headline, each claim's verdict and region, the write-up."""
        q = self.question
        if self.lab is None:
            lines = [f"No lab is built for {q.id} yet, so there is no measured answer. A strong answer names, "
                     "for each claim, the number it rests on and the setting that would break it:"]
            lines += [f"- `{c.arm}` `{c.metric}` {c.reading}" for c in q.claims]
            return "\n".join(lines)
        r, lab = self.result, self.lab
        arm, metric = lab.headline
        head = fmt_with_ci(r.metrics[arm].get(metric), r.interval(arm, metric), self.unit(metric))
        lines = [f"At the lab's defaults (seed {r.seed}), {lab.arm(arm).label.lower()} {metric} is {head}."]
        writeup = lab.writeup()
        for point in r.claims:
            c = q.claim(point.id)
            region = self.regions.get(point.id)
            verdict = region.verdict if region is not None else point.verdict
            where = f" ({region.region})" if region is not None and region.region else ""
            measured = fmt_with_ci(point.measured, point.interval, c.unit)
            lines.append(f"\n**{c.arm} {c.metric} {c.reading}: {verdict.replace('_', ' ')}{where}.** "
                         f"Measured here: {measured}.")
            if writeup.get(point.id):
                lines.append(writeup[point.id])
        return "\n".join(lines)

    def followups(self) -> list[Item]:
        """'What if X were V?': the exercises (a number) and the claims' sweeps (a verdict)."""
        if self.lab is None:
            return []
        items = []
        for k, ex in enumerate(self.lab.exercises, 1):
            arm, metric = ex.watch
            unit = self.unit(metric)
            items.append(Item(f"exercise{k}", "number", f"What if {self._setting(ex.changes)}? "
                              f"{self.lab.arm(arm).label} ({arm}) {metric}" + (f", in {unit}" if unit else "") + "?",
                              arm, metric, unit, changes=dict(ex.changes)))
        base = self.lab.defaults()
        for c in self.question.claims:
            if len(items) >= len(self.lab.exercises) + MAX_SWEEP_FOLLOWUPS or not c.sweep:
                continue
            name, values = c.sweep[0]
            other = [v for v in values if v != base[name]]
            if other:
                changes = {name: other[0]}
                items.append(Item(f"sweep-{c.id}", "verdict", f"What if {self._setting(changes)}? {c.text} "
                                  "Holds or fails?", c.arm, c.metric, claim=c.id, changes=changes,
                                  options=STATED_VERDICTS[:2]))
        return items

    def _setting(self, changes: dict) -> str:
        parts = []
        for name, value in changes.items():
            unit = self.lab.param(name).unit
            unit = f" {unit}" if unit and not isinstance(value, str) else ""
            parts.append(f"{name} were {fmt_value(value)}{unit}")
        return " and ".join(parts)

    def save(self, graded: list[Graded], answer: str = "", duration_s: float | None = None, store=None) -> None:
        """Record each stated number and verdict and the drill (and its next review) in the progress store."""
        from faces.progress import Progress

        own = store is None
        store = store or Progress()
        try:
            for g in graded:
                if g.score is None:
                    continue
                if g.item.kind == "number":
                    store.record_number(self.qid, g.score, g.item.arm, g.item.metric,
                                        kind="followup" if g.item.changes else "drill", source="drill",
                                        settings=g.item.changes)
                elif g.item.kind == "verdict":
                    store.record_verdict(self.qid, g.item.claim, g.item.metric, g.score)
            store.record_drill(self.qid, self.total(graded), len(graded), duration_s, answer)
        finally:
            if own:
                store.close()


def _choice_index(text: str, n: int) -> int | None:
    t = text.strip().lower()
    if len(t) == 1 and "a" <= t < chr(ord("a") + n):
        return ord(t) - ord("a")
    if t.isdigit() and 1 <= int(t) <= n:
        return int(t) - 1
    return None


# ============================================================================ terminal
def cli_drill(qid: str, mode: str = "open", regions: bool = True, seed: int = 0, save: bool = True,
              read: Callable[[], str | None] | None = None, out=None) -> int:
    """The drill in a terminal; answers are read line by line (stdin), so a script can answer it."""
    from faces.progress import ProgressError

    out = out or sys.stdout
    read = read or _stdin_line

    def say(text=""):
        print(text, file=out, flush=True)

    def ask(prompt: str) -> str:
        say(prompt)
        line = read()
        return "" if line is None else line.strip()

    d = Drill(qid, seed, regions)
    q = d.question
    say(f"{q.id} · {q.title}  ({q.difficulty})\n\n{q.summary}\n")
    say(f"Timer: {clock(d.timer_s)} to answer as you would in an interview (shown, not enforced).")
    say("Your answer, in a few sentences (an empty line ends it):")
    t0 = time.monotonic()
    lines = []
    while True:
        line = read()
        if line is None or not line.strip():
            break
        lines.append(line.rstrip("\n"))
    answer = "\n".join(lines)
    say("\nNow commit to the numbers your answer rests on (before any run is shown).")
    stated = []
    for item in d.statements(mode):
        if item.kind == "choice":
            opts = "\n".join(f"  {chr(97 + k)}) {o}" for k, o in enumerate(item.options))
            stated.append((item, ask(f"{item.prompt}\n{opts}\nYour choice (a-{chr(96 + len(item.options))}):")))
        elif item.kind == "verdict":
            stated.append((item, ask(f"{item.prompt} [holds/fails/conditional]")))
        else:
            stated.append((item, ask(item.prompt)))
    took = time.monotonic() - t0
    say(f"\nYou took {clock(took)} of {clock(d.timer_s)}"
        + (" (over time)." if took > d.timer_s else "."))
    if d.lab is not None:
        say("Running the lab" + (" and sweeping each claim (this takes a while)…" if regions else "…"))
    graded = [d.grade(item, text) for item, text in stated]
    say("\n== Your numbers against the lab ==")
    for g in graded:
        say(f"- {g.item.claim or g.item.metric}: {g.text}")
    say("\n== A model answer ==\n" + d.model_answer())
    follow = []
    if d.followups():
        say("\n== Follow-up questions ==")
        for item in d.followups():
            suffix = " [holds/fails]" if item.kind == "verdict" else ""
            g = d.grade(item, ask(item.prompt + suffix))
            say(f"  {g.text}")
            follow.append(g)
    everything = graded + follow
    score = d.total(everything)
    say("\n" + (f"Score: {score:.0%} over {sum(g.credit is not None for g in everything)} graded answers."
                if score is not None else "Not graded: this question has no lab yet."))
    if save:
        try:
            d.save(everything, answer, took)
        except ProgressError as e:
            print(f"archlab: error: {e}", file=sys.stderr)
            return 1
    return 0


def _stdin_line() -> str | None:
    line = sys.stdin.readline()
    return None if line == "" else line


# ============================================================================ explorer page
_CACHE = {}


def _cached_drill(qid: str, seed: int, regions: bool) -> Drill:
    """One Drill per (question, seed, regions) for the whole server process (its runs are reused)."""
    import streamlit as st

    if "fn" not in _CACHE:
        @st.cache_resource(max_entries=32, ttl=2 * 3600, show_spinner=False)
        def make(qid: str, seed: int, regions: bool) -> Drill:
            return Drill(qid, seed, regions)
        _CACHE["fn"] = make
    return _CACHE["fn"](qid, seed, regions)


def drill_page():
    """The /drill page: pick a question, answer against the clock, state the numbers, then see the lab."""
    import streamlit as st

    from faces.progress import ProgressError

    cat = load_catalog()
    built = set(built_ids())
    st.title("Interview drill")
    ids = [q.id for q in cat]
    wanted = str(st.query_params.get("q", "")).strip().lower()  # /drill?q=q08 picks the question
    first = wanted if wanted in ids else (sorted(built)[0] if built else ids[0])
    qid = st.selectbox("Question", ids, index=ids.index(first), key="drill_q",
                       format_func=lambda i: f"{i} · {cat.get(i).title}" + ("" if i in built else " (no lab: ungraded)"))
    c1, c2 = st.columns(2)
    mode = c1.radio("Mode", ["open", "choice"], horizontal=True, key="drill_mode",
                    format_func=lambda m: {"open": "State verdicts", "choice": "Multiple choice"}[m])
    regions = c2.checkbox("Judge verdicts over each claim's sweep (slower, region-aware)", value=True,
                          key="drill_regions")
    d = _cached_drill(qid, 0, regions or mode == "choice")
    q = d.question
    st.subheader(q.title)
    st.markdown(q.summary)
    start_key = f"drill_start_{qid}"
    st.session_state.setdefault(start_key, time.time())
    st.info(f"Timer: {clock(d.timer_s)} to answer as in an interview (shown, not enforced). "
            f"Started {clock(time.time() - st.session_state[start_key])} ago.", icon=":material/timer:")
    done_key = f"drill_done_{qid}_{mode}"
    if mode == "choice" and d.lab is not None:
        with st.spinner("Sweeping each claim to build the options…"):
            items = d.statements(mode)
    else:
        items = d.statements(mode)
    with st.form(f"drill_form_{qid}_{mode}"):
        answer = st.text_area("Your answer", key=f"drill_answer_{qid}", height=150)
        st.markdown("**Before any run is shown, commit to the numbers your answer rests on.**")
        for item in items:
            if item.kind == "number":
                st.number_input(item.prompt, value=None, key=f"drill_{qid}_{item.key}", placeholder="a number")
            else:
                st.radio(item.prompt, item.options, index=None, key=f"drill_{qid}_{mode}_{item.key}")
        submitted = st.form_submit_button("Check my answer", type="primary")
    if submitted:
        stated = {}
        for item in items:
            value = st.session_state.get(f"drill_{qid}_{item.key}" if item.kind == "number"
                                         else f"drill_{qid}_{mode}_{item.key}")
            if item.kind == "choice" and value is not None:
                value = str(item.options.index(value) + 1)
            stated[item.key] = value
        st.session_state[done_key] = {"stated": stated, "answer": answer,
                                      "took": time.time() - st.session_state[start_key], "saved": False}
    done = st.session_state.get(done_key)
    if not done:
        return
    with st.spinner("Running the lab" + (" and sweeping each claim…" if d.use_regions else "…")):
        graded = [d.grade(item, done["stated"].get(item.key)) for item in items]
    st.subheader("Your numbers against the lab")
    st.caption(f"You took {clock(done['took'])} of {clock(d.timer_s)}.")
    for g in graded:
        show = st.success if g.credit == 1 else st.warning if g.credit else st.info if g.credit is None else st.error
        show(f"**{g.item.claim or g.item.metric}**: {g.text}")
    score = d.total(graded)
    if score is not None:
        st.metric("Drill score", f"{score:.0%}")
    if not done["saved"]:
        done["saved"] = True
        try:
            d.save(graded, done["answer"], done["took"])
        except ProgressError as e:
            st.warning(f"Your progress was not saved: {e}", icon=":material/warning:")
        from faces.room_pages import on_drill

        on_drill(qid, graded)  # a workshop room's member: the stated numbers and verdicts go to the room too
    st.subheader("A model answer")
    st.markdown(d.model_answer())
    follow = d.followups()
    if follow:
        st.subheader("Follow-up questions")
    for item in follow:
        key = f"drill_fu_{qid}_{item.key}"
        if item.kind == "number":
            value = st.number_input(item.prompt, value=None, key=key, placeholder="a number")
        else:
            value = st.radio(item.prompt, item.options, index=None, key=key)
        if st.button("Check", key=key + "_check", disabled=value is None):
            g = d.grade(item, value)
            (st.success if g.credit == 1 else st.error if g.credit == 0 else st.warning)(g.text)
