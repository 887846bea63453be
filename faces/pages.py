"""The explorer's pages: home map, claims, one page per question (a built lab's experiment), and their parts.

Everything here renders: parameters come from each lab's ``Param``s, numbers from
``Lab.run``, region verdicts from ``Lab.check`` and figures from ``Lab.plots``.
Nothing computes a metric or a verdict. Pure helpers (widget choice, URL
validation, number formatting, the home map) live in ``faces/explorer.py``;
``app.py`` only builds the navigation from these pages.
"""
from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import streamlit as st

from faces import explorer as ex
from faces import room_pages, runs
from faces.progress import home_marks, record_prediction
from labs.workshop import exercise_answer
from labs.catalog import Question, load_catalog
from labs import profiles as lab_profiles
from labs.params import ParamError
from labs.registry import built_ids, get_lab

ROOT = Path(__file__).resolve().parents[1]
CACHE_TTL_S = 2 * 3600
ICON_BUILT, ICON_UNBUILT = ":material/science:", ":material/description:"
PAGES: dict[str, st.Page] = {}  # url path -> page, refreshed on every run by main()
PREVIOUS_PAGE, CURRENT_PAGE = "_archlab_previous_page", "_archlab_current_page"
CHECKED = "_archlab_checked"  # (lab id, setting, seed) where the learner asked for region verdicts


# --------------------------------------------------------------------------- cached work
# Keys are (lab id, sorted parameter items, seed); entries are bounded so one
# process can serve a workshop room.
@st.cache_data(max_entries=128, ttl=CACHE_TTL_S, show_spinner=False)
def run_lab(lab_id: str, setting: tuple, seed: int):
    return runs.run(lab_id, setting, seed)  # the disk cache `archlab warm` fills, then one queued run


@st.cache_data(max_entries=64, ttl=CACHE_TTL_S, show_spinner=False)
def lab_plots(lab_id: str, setting: tuple, seed: int) -> list[tuple[str, object]]:
    """The lab's plots as Vega-Lite specs (drawn by the browser) or PNG bytes, so a cached view redraws nothing."""
    return runs.plots(lab_id, setting, seed, lambda: run_lab(lab_id, setting, seed))


@st.cache_resource(max_entries=8, ttl=CACHE_TTL_S, show_spinner=False)
def live_profile(name: str):
    """A latency profile measured now on the machine serving the app (imports torch: only on request)."""
    return lab_profiles.measure_here(name, repeats=60, warmup=10)


@st.cache_data(max_entries=32, ttl=CACHE_TTL_S, show_spinner=False)
def region_verdicts(lab_id: str, setting: tuple, seed: int):
    return get_lab(lab_id).check(seed, **dict(setting))


def default_setting(lab_id: str) -> tuple:
    return ex.params_key(get_lab(lab_id).defaults())


def default_counts(lab_id: str) -> dict | str:
    """Verdict counts of a lab's default run (cached), or the reason it failed."""
    try:
        return ex.verdict_counts(run_lab(lab_id, default_setting(lab_id), 0).claims)
    except Exception as e:  # a broken lab must not take the home page down
        return f"default run failed: {e}"


def checked_regions(lab_id: str, setting: tuple, seed: int):
    """Region verdicts if the learner asked for them at this setting (cached), else None."""
    if (lab_id, setting, seed) not in st.session_state.setdefault(CHECKED, set()):
        return None
    with st.spinner("Sweeping parameters to find where each claim holds…"):
        return {v.id: v for v in region_verdicts(lab_id, setting, seed)}


# --------------------------------------------------------------------------- small renderers
def metric_name(q: Question, key: str) -> str:
    try:
        return q.metric(key).name
    except KeyError:
        return ex.plain_name(key)


def targets_table(q: Question):
    st.dataframe([{"metric": m.name, "formula": m.formula, "target": m.target} for m in q.metrics],
                 hide_index=True, width="stretch", height="content")


def claim_card(v, region=None, why: str = ""):
    shown = region or v
    with st.container(border=True):
        colour = ex.VERDICT_COLOUR.get(shown.verdict, "gray")
        label = shown.verdict.replace("_", " ")
        st.markdown(f":{colour}[{ex.VERDICT_ICON.get(shown.verdict, '')} **{label}**] · {v.text}")
        st.caption(f"Evidence — {ex.EVIDENCE_TEXT.get(v.evidence, v.evidence)}")
        st.caption(f"At these settings: {v.detail}")
        if region is not None:
            st.caption(f"Across the sweep: {region.region if region.grid else region.detail}")
            if region.grid:
                chart, height = ex.regime_map(region.grid)
                st.altair_chart(chart, width="stretch", height=height)
            if region.control:
                ctl = region.control
                shown_ctl = ", ".join(f"{k}={val}" for k, val in ctl["setting"].items())
                st.caption(f"Control ({shown_ctl}): the effect "
                           + ("vanishes there, as it should." if ctl.get("vanishes") else
                              "is skipped there." if ctl.get("vanishes") is None else
                              "survives there: the claim's effect may come from another mechanism."))
        if why:
            with st.expander("Why, and how to say it in an interview"):
                st.markdown(why)


def param_widget(p, where):
    """One widget per Param, bound to the URL under the parameter's own name."""
    spec = ex.widget_spec(p)
    common = {"key": p.name, "help": spec.help, "bind": "query-params"}
    if spec.kind == "select":
        return where.selectbox(spec.label, spec.options, index=spec.options.index(spec.value),
                               format_func=str, **common)
    if spec.kind == "checkbox":
        return where.checkbox(spec.label, value=spec.value, **common)
    if spec.kind == "slider":
        return where.slider(spec.label, min_value=spec.min, max_value=spec.max, value=spec.value,
                            step=spec.step, format=spec.format, **common)
    return where.number_input(spec.label, min_value=spec.min, max_value=spec.max, value=spec.value,
                              step=spec.step, format=spec.format, **common)


def seed_widget(where) -> int:
    s = ex.SEED
    return int(where.number_input("seed", min_value=s.low, max_value=s.high, value=s.default, step=1,
                                  key=s.name, help=s.help + ". Keep it fixed while you move one parameter: "
                                  "both settings then see the same random arrivals.", bind="query-params"))


# --------------------------------------------------------------------------- pages
def calibration_box(lab_id: str):
    """The committed check of this lab's simulator against a real server, when there is one."""
    from labs import calibration

    rep = calibration.last_report(lab_id)
    if rep is None:
        return
    m = rep["meta"]
    with st.expander(f":material/compare_arrows: Simulator vs a real server: calibrated {m['date'][:10]}"):
        if m["cpu"] != calibration.this_cpu():
            st.warning(f"Measured on {m['cpu']}, not this machine's CPU ({calibration.this_cpu()}).")
        st.text("\n".join(calibration.summary_lines(rep)))
        st.caption("archlab calibrate " + lab_id + " re-measures it here (data/calibration/" + lab_id + ".json).")


def revealed(lab_id: str) -> bool:
    """Has the learner predicted (or skipped predicting) on this lab's page in this session?"""
    return st.session_state.get(f"revealed_at_{lab_id}") is not None


def spoiler_toggle() -> bool:
    return st.toggle("Show verdicts of labs I have not predicted on yet (spoilers)", key="_archlab_spoilers")


def home_page():
    cat = load_catalog()
    built = built_ids()
    st.title("ArchLab")
    st.markdown(
        "Thirty interview questions on AI/ML system architecture, each with confident numbers in its "
        "answer (*a circuit breaker keeps P99 under 200 ms*, *batching triples throughput*). ArchLab turns "
        "a question into a small experiment: a simulation or a measurement of real code, the plain design "
        "and the pattern side by side on the same random traffic, the question's metrics against their "
        "targets, and a verdict on each claim: **holds**, **fails**, or **holds only in a region** of the "
        "parameters.")
    with st.expander("Using it in a workshop", expanded=True):
        st.markdown(
            "1. **Predict first.** Open a lab, read the settings, write down what you expect the headline "
            "number to be, then reveal the run. Being wrong by 10× is the most useful thing that can happen.\n"
            "2. **Move one parameter.** Change a single setting and keep the seed: both runs then see the same "
            "arrivals, so the difference you see is the parameter's doing, not luck.\n"
            "3. **Compare arms.** Every lab runs a *baseline* and the *pattern*; read them side by side, "
            "and look at the confidence band before trusting a percentile.\n"
            "4. **Question the claim.** *Find where each claim holds* sweeps the parameter that matters and "
            "tells you where the interview answer is right. Share a view by copying the URL.")
    st.subheader("The map: six topics × five questions")
    spoil = spoiler_toggle()
    shown = [i for i in built if spoil or revealed(i)]
    counts = {}
    if shown:
        with st.spinner("Running the revealed labs once at their defaults…"):
            counts = {i: default_counts(i) for i in shown}
    grid = ex.home_map(cat, built, counts)
    marks = home_marks()  # your progress per question (predicted, drilled, due for review)
    if isinstance(marks, str):
        st.warning(f"Your progress is not shown: {marks}", icon=":material/warning:")
        marks = {}
    st.caption(f"{len(built)} of {len(cat)} labs built. Difficulty: ●○○ foundational, ●●○ intermediate, "
               "●●● advanced. A lab's verdicts at a glance (from its default run) appear once you have "
               "predicted on its page, or when you show spoilers.")
    for topic, row in grid.iterrows():
        st.markdown(f"**{topic}**")
        cols = st.columns(len(row))
        for col, cell in zip(cols, row):
            if not isinstance(cell, dict):
                continue
            with col.container(border=True):
                st.page_link(PAGES[cell["id"]], label=f"Q{cell['number']:02d}",
                             icon=ICON_BUILT if cell["built"] else ICON_UNBUILT)
                st.markdown(cell["title"])
                glance = cell["glance"] or "predict first"
                status = f"built · {glance}" if cell["built"] else "not built yet"
                status += f" · you: {marks.get(cell['id'], 'not tried')}"
                st.caption(f"{ex.DIFFICULTY_ICON[cell['difficulty']]} {cell['difficulty']} · {status}")


def claims_page():
    cat = load_catalog()
    st.title("Claims")
    st.markdown("Every claim of every built lab, with its verdict from the lab's default run. "
                "Where you have asked a lab to *find where each claim holds* at its default settings, "
                "the region verdict is shown too. A lab's verdicts stay hidden until you have predicted on "
                "its page, so they cannot spoil the exercise.")
    spoil = spoiler_toggle()
    built = built_ids()
    if not built:
        st.info("No lab is built yet.")
    for lab_id in built:
        q = cat.get(lab_id)
        st.subheader(ex.page_title(q))
        st.page_link(PAGES[lab_id], label=f"Open the {q.id.upper()} lab", icon=ICON_BUILT)
        if not (spoil or revealed(lab_id)):
            for c in q.claims:
                st.markdown(f"- {c.text} *(verdict hidden: predict on the lab page first)*")
            continue
        setting = default_setting(lab_id)
        try:
            with st.spinner(f"Running {lab_id} at its defaults…"):
                result = run_lab(lab_id, setting, 0)
        except Exception as e:
            st.error(f"The default run of {lab_id} failed: {e}")
            continue
        regions = checked_regions(lab_id, setting, 0) or {}
        for v in result.claims:
            claim_card(v, regions.get(v.id))


def question_page(q: Question, built: bool, default: bool = False) -> st.Page:
    """The one renderer behind all thirty question pages."""
    def render():
        if built:
            render_lab(q)
        else:
            render_unbuilt(q)

    render.__name__ = f"page_{q.id}"
    return st.Page(render, title=ex.page_title(q), url_path=q.id, icon=ICON_BUILT if built else ICON_UNBUILT,
                   default=default)


def render_unbuilt(q: Question):
    st.title(ex.page_title(q))
    st.caption(f"{q.topic_name} · {q.difficulty} · lab not built yet")
    st.markdown(q.summary)
    st.info("This lab is not built yet, so there is nothing to run and no numbers to show. Below are the "
            "question's metrics and targets, and the claims the lab will check once it exists.")
    st.subheader("Metrics and targets")
    targets_table(q)
    st.subheader("Claims to check")
    for c in q.claims:
        st.markdown(f"- {c.text} *({c.arm} {c.metric} {c.reading})*")


def _url_notes(lab_id: str, problems: dict):
    """Remember refused URL settings until the learner changes something."""
    if problems:
        st.session_state[f"url_notes::{lab_id}"] = {"problems": problems, "seen": None}


def render_lab(q: Question):
    lab_id = q.id
    lab = get_lab(lab_id)
    st.title(ex.page_title(q))
    st.caption(f"{q.topic_name} · {q.difficulty} · lab built")
    st.markdown(q.summary)
    predict_slot = st.container()  # the prediction comes first on the page; filled once the settings are read

    query = st.query_params.to_dict()
    if st.session_state.get(PREVIOUS_PAGE) != lab_id:
        # Widget keys are parameter names (they name the URL settings), so a value set on another lab's
        # page would follow the learner here. Arriving on a page, whatever the URL does not set starts
        # at its default: the URL alone decides the view.
        for p in (*lab.params, ex.SEED):
            if p.name not in query and p.name in st.session_state and st.session_state[p.name] != p.default:
                st.session_state[p.name] = p.default
    # A refused value is reset to its default once, before the widgets are drawn again.
    for name, value in st.session_state.pop(f"url_reset::{lab_id}", {}).items():
        st.session_state[name] = value
    reading = ex.read_query(lab.params, query)
    _url_notes(lab_id, reading.problems)
    notices = st.container()  # filled once the widgets have their values

    key_params = [p for p in lab.params if p.key] or list(lab.params)
    more_params = [p for p in lab.params if p not in key_params]
    with st.expander("Settings", expanded=True):
        cols = st.columns(3)
        values = {p.name: param_widget(p, cols[k % 3]) for k, p in enumerate(key_params)}
        if more_params:
            with st.expander(f"Advanced: {len(more_params)} more settings"):
                more = st.columns(3)
                values.update({p.name: param_widget(p, more[k % 3]) for k, p in enumerate(more_params)})
        values = {p.name: values[p.name] for p in lab.params}
        c1, c2, c3 = st.columns(3)
        seed = seed_widget(c1)
        if lab.refine_param:
            rp = lab.param(lab.refine_param)
            current = values[rp.name]
            target = ex.refined_value(rp, current)

            def refine(name=rp.name, value=target):
                st.session_state[name] = value

            c2.button(f"Refine: {rp.name} × 4 → {target:,}", key=f"refine_{lab_id}", on_click=refine,
                      disabled=target <= current,
                      help=f"Rerun with four times the {rp.name}: narrower confidence bands, a slower run.")

        def restore_defaults():
            for p in lab.params:
                st.session_state[p.name] = p.default
            st.session_state.pop(f"watch_{lab_id}", None)

        c3.button("Back to the defaults", key=f"defaults_{lab_id}", on_click=restore_defaults)

    # Streamlit may coerce a refused URL value (e.g. 2.5 -> 2 for an integer); put it back to the default.
    pending = {n: reading.values[n] for n in reading.problems
               if n in values and values[n] != reading.values[n]}
    if pending:
        st.session_state[f"url_reset::{lab_id}"] = pending
        st.rerun()
    current = {**values, "seed": seed}
    notes = st.session_state.get(f"url_notes::{lab_id}")
    if notes:
        if notes["seen"] is None:
            notes["seen"] = current
        if notes["seen"] == current:
            for msg in notes["problems"].values():
                notices.warning(f"Link setting refused: {msg}", icon=":material/warning:")
        else:
            del st.session_state[f"url_notes::{lab_id}"]
    link = ex.query_string(current, {**lab.defaults(), "seed": ex.SEED.default})
    changed = [f"**{p.name}** = {values[p.name]} (default {p.default})" for p in lab.params
               if values[p.name] != p.default]
    if changed:
        st.markdown(":material/tune: Changed from the defaults: " + "; ".join(changed))
    st.caption("This view's link (copy it with the button on the right):")
    st.code(f"/{lab_id}{link}", language=None)
    nb = ROOT / q.notebook
    if nb.is_file():
        c1, c2 = st.columns([3, 1])
        c1.markdown(f":material/menu_book: Notebook for this lab: `{q.notebook}` "
                    "(open it in JupyterLab to see the code behind this page).")
        c2.download_button("Download notebook", nb.read_bytes(), file_name=nb.name, key=f"nb_{lab_id}")

    calibration_box(lab_id)
    setting = ex.params_key(values)
    exercises_box(lab)
    watch = tuple(st.session_state.get(f"watch_{lab_id}", lab.headline))  # what the learner predicts
    each = st.toggle("Ask me to predict again after every change", key=f"predict_each_{lab_id}",
                     help="Hide the results at every new setting until you have made a new prediction.")
    if each and st.session_state.get(f"revealed_at_{lab_id}") not in (None, (setting, seed)):
        st.session_state[f"revealed_{lab_id}"] = False
    if not st.session_state.get(f"revealed_{lab_id}"):
        with predict_slot:
            predict_box(lab_id, watch, metric_name(q, watch[1]), ex.metric_unit(q, watch[1]), setting, seed)
    if not st.session_state.get(f"revealed_{lab_id}") or room_pages.hold(lab_id, setting, predict_slot):
        st.subheader("What the question claims")
        targets_table(q)
        return

    try:
        with st.spinner(runs.queue_text("Simulating…")):
            result = run_lab(lab_id, setting, seed)
    except ParamError as e:
        st.warning(f"These settings do not make a valid run: {e}", icon=":material/warning:")
        return
    except Exception as e:
        st.error(f"The lab failed to run at these settings: {type(e).__name__}: {e}")
        return

    with predict_slot:
        prediction_feedback(lab_id, q, result, setting, seed)
        exercise_answers(lab, q, result, values, seed)

    arm, key = lab.headline
    unit, name = ex.metric_unit(q, key), metric_name(q, key)
    measured = result.metrics.get(arm, {}).get(key, float("nan"))
    interval = result.intervals.get(arm, {}).get(key)
    st.subheader("Headline")
    met = q.metric(key).met(measured) if key in {m.key for m in q.metrics} else None
    target = q.metric(key).target if met is not None else None
    c1, c2 = st.columns([1, 2])
    c1.metric(f"Headline: {name}", ex.fmt_number(measured, unit),
              help="The number to predict before revealing the run.")
    band = ex.fmt_with_ci(measured, interval, unit)
    c2.markdown(f"**{arm} {name}:** {band}" + (f"  \nTarget {target}: {ex.met_text(met)}" if target else ""))
    if interval is None and ex.is_percentile(key):
        c2.caption("No confidence interval for this percentile at these settings (too few requests).")

    st.subheader("Metrics against the question's targets")
    units = {m.key: m.unit for m in q.metrics}
    st.dataframe(ex.metric_rows(result.metric_table(q), units), hide_index=True, width="stretch", height="content")

    st.subheader("Claims")

    def request_check():
        st.session_state.setdefault(CHECKED, set()).add((lab_id, setting, seed))

    regions = checked_regions(lab_id, setting, seed)
    n_runs = lab.check_size()
    st.button("Find where each claim holds", key=f"check_{lab_id}", on_click=request_check,
              help=f"Sweeps each claim's parameter (up to {n_runs} runs; the first time takes a while).",
              disabled=regions is not None)
    writeup = lab.writeup()
    for v in result.claims:
        claim_card(v, (regions or {}).get(v.id), writeup.get(v.id, ""))

    st.subheader("Plots")
    for kind, payload in lab_plots(lab_id, setting, seed):
        if kind == "vega":
            st.vega_lite_chart(payload, width="stretch")
        else:
            st.image(payload, width="stretch")

    if lab.profiles:
        profiles_box(lab)

    with st.expander("Everything this run measured"):
        st.dataframe(ex.all_measurements(result.metrics, result.intervals), hide_index=True, width="stretch", height="content")
    st.subheader("Notes")
    for n in result.notes:
        st.markdown(f"- {n}")
    if result.assumptions:
        st.markdown("**Assumptions of the model**")
        for n in result.assumptions:
            st.markdown(f"- {n}")
    if writeup.get("Arms"):
        st.markdown("**The arms**")
        st.markdown(writeup["Arms"])
    st.caption(f"Seed {result.seed}; the simulation took {result.elapsed_s:.2f} s (cached afterwards).")


def profiles_box(lab):
    """The measured latency profiles the lab reads, and the same models timed on this machine."""
    from labs.plotting import profile_comparison

    st.subheader("Measured inference times")
    refs = [lab_profiles.reference(name) for name in lab.profiles]
    prov = refs[0].provenance
    st.markdown(f"The lab uses stored profiles measured on {prov.get('cpu', '?')} ({prov.get('date', '?')[:10]}, "
                f"torch {prov.get('torch', '?')}, {prov.get('torch_threads', '?')} thread, load "
                f"{prov.get('loadavg_1m_before', '?')}), so every machine gets the same numbers.")
    key = f"measure_{lab.id}"
    if st.button("Measure on this machine", key=key,
                 help="Times the same models here (a few seconds; the first time also trains them)."):
        st.session_state[key + "_done"] = True
    if st.session_state.get(key + "_done"):
        with st.spinner("Timing the models on this machine…"):
            table = pd.concat([lab_profiles.compare(ref, live_profile(ref.model)) for ref in refs], ignore_index=True)
        st.dataframe(table.round(2), hide_index=True, width="stretch", height="content")
        import matplotlib.pyplot as plt

        fig = profile_comparison(table)
        st.pyplot(fig)
        plt.close(fig)


def exercises_box(lab):
    """The lab's exercises: each sets up one change and asks for a prediction of the number it moves."""
    if not lab.exercises:
        return

    def set_up(exercise):
        for name, value in exercise.changes.items():
            st.session_state[name] = lab.param(name).validate(value)
        st.session_state[f"watch_{lab.id}"] = tuple(exercise.watch)
        st.session_state[f"revealed_{lab.id}"] = False
        st.session_state.pop(f"predict_{lab.id}", None)

    with st.expander("Exercises: change one thing, predict, then run"):
        for k, exercise in enumerate(lab.exercises):
            c1, c2 = st.columns([5, 1])
            changes = ", ".join(f"`{n}` = {v}" for n, v in exercise.changes.items())
            c1.markdown(f"**{k + 1}.** {exercise.prompt}  \n*Sets {changes}; you predict the "
                        f"{exercise.watch[0]} arm's `{exercise.watch[1]}`.*")
            c2.button("Set it up", key=f"exercise_{lab.id}_{k}", on_click=set_up, args=(exercise,))


def exercise_answers(lab, q: Question, result, values: dict, seed: int):
    """Once a run is shown at an exercise's setting, that exercise's answer and the reason for it."""
    defaults = lab.defaults()
    for k, exercise in enumerate(lab.exercises):
        target = {**defaults, **{n: lab.param(n).validate(v) for n, v in exercise.changes.items()}}
        if target != values or target == defaults:
            continue
        before = run_lab(lab.id, default_setting(lab.id), seed)
        text = exercise_answer(exercise, before, result, ex.metric_unit(q, exercise.watch[1]))
        st.info(f"**Exercise {k + 1}.** {text}", icon=":material/lightbulb:")


def predict_box(lab_id: str, watch: tuple, name: str, unit: str, setting: tuple, seed: int):
    guess_key = f"predict_{lab_id}"

    def reveal():
        room_pages.on_predict(lab_id, watch, setting, st.session_state.get(guess_key))  # a room member's goes to the room
        st.session_state[f"revealed_{lab_id}"] = True
        st.session_state[f"revealed_at_{lab_id}"] = (setting, seed)
        st.session_state[f"prediction_{lab_id}"] = {"value": st.session_state.get(guess_key), "watch": watch,
                                                    "setting": setting, "seed": seed}

    def skip():
        st.session_state[f"revealed_{lab_id}"] = True
        st.session_state[f"revealed_at_{lab_id}"] = (setting, seed)
        st.session_state.pop(f"prediction_{lab_id}", None)

    with st.container(border=True):
        st.subheader("Predict first")
        st.markdown(f"Before the run is shown: what will the **{watch[0]}** arm's **{name}** be at these settings? "
                    "Write your guess down, then reveal.")
        guess = st.number_input(f"Your prediction ({unit})" if unit else "Your prediction", value=None,
                                key=guess_key, placeholder="type a number")
        c1, c2, _ = st.columns([1, 1, 3])
        c1.button("Reveal", key=f"reveal_{lab_id}", type="primary", on_click=reveal, disabled=guess is None)
        c2.button("Skip prediction", key=f"skip_{lab_id}", on_click=skip)


def prediction_feedback(lab_id: str, q: Question, result, setting: tuple, seed: int):
    pred = st.session_state.get(f"prediction_{lab_id}")

    def again():
        st.session_state[f"revealed_{lab_id}"] = False

    with st.container(border=True):
        if pred is None or pred["value"] is None:
            st.markdown("You skipped the prediction. Change a setting, then predict the next run.")
        elif pred["setting"] == setting and pred["seed"] == seed:
            arm, key = pred["watch"]
            unit = ex.metric_unit(q, key)
            measured = result.metrics.get(arm, {}).get(key, float("nan"))
            check = ex.check_prediction(pred["value"], measured, result.intervals.get(arm, {}).get(key))
            st.markdown(f"**Your prediction: {arm} {metric_name(q, key)}**")
            (st.success if check.inside_ci else st.info)(check.sentence(unit))
            if pred.setdefault("saved", None) is None:  # store it once, with how far off it was
                pred["saved"] = record_prediction(lab_id, arm, key, pred["value"], measured,
                                                  result.intervals.get(arm, {}).get(key), dict(setting)) or "ok"
        else:
            st.markdown(f"Your prediction ({ex.fmt_number(pred['value'], ex.metric_unit(q, pred['watch'][1]))}) "
                        "was for other settings. Predict again for these ones.")
        st.button("Predict again", key=f"again_{lab_id}", on_click=again)


def room_page():
    """/room: open or join a workshop room (faces/room_pages.py), reading runs through this app's caches."""
    room_pages.room_page(run_lab)
