"""The workshop room's pages in the explorer (``/room``): open or join a room, the instructor's and the
presenter's views, the participant's view, and the hooks that send a lab page's or a drill's answers
to the room the learner has joined.

URLs: ``/room`` (open or join), ``/room?room=CODE`` (a participant: the join link and its QR code),
``/room?room=CODE&key=SECRET`` (the instructor; the secret is shown once, in this link),
``/room?room=CODE&key=SECRET&view=present`` (the presenter view for a 1024×768 projector).
Rooms and answers live in ``faces.room``; the numbers come from the lab's run through the app's
cached ``run_lab`` (passed in by ``faces.pages``), so a room's reveal costs one run for everyone.
"""
from __future__ import annotations

import math
from typing import Callable
from urllib.parse import urlsplit

import pandas as pd
import streamlit as st

from faces import explorer as ex
from faces import runs
from faces.room import VOTES, Room, RoomError, RoomStore, room_servers
from labs.registry import built_ids, get_lab

MEMBER = "_archlab_room"  # session state: {"code": ..., "pid": ..., "name": ...} once a participant joined
POLL_S = 2.0  # how often open room pages look for new answers and the reveal
VOTE_COLOURS = {"holds": "#2e7d32", "fails": "#c62828", "conditional": "#ef6c00"}


# --------------------------------------------------------------------------- pure helpers (tested without a browser)
def histogram(values: list[float], interval: tuple | None = None, measured: float | None = None,
              bins: int = 12) -> tuple[pd.DataFrame, bool]:
    """Counts of ``values`` in bins (log-spaced when all are positive and span more than 20×): (frame, log)."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    extra = [float(x) for x in (*(interval or ()), measured) if x is not None and math.isfinite(float(x))]
    span = vals + extra
    if not vals:
        return pd.DataFrame(columns=["low", "high", "count"]), False
    lo, hi = min(span), max(span)
    log = lo > 0 and hi / lo > 20
    if hi == lo:
        lo, hi = (lo * 0.9, hi * 1.1) if lo > 0 else (lo - 1, hi + 1)
    if log:
        a, b = math.log10(lo), math.log10(hi)
        edges = [10 ** (a + (b - a) * k / bins) for k in range(bins + 1)]
    else:
        edges = [lo + (hi - lo) * k / bins for k in range(bins + 1)]
    counts = [0] * bins
    for v in vals:
        k = bins - 1
        for j in range(bins):
            if v < edges[j + 1]:
                k = j
                break
        counts[max(k, 0)] += 1
    return pd.DataFrame({"low": edges[:-1], "high": edges[1:], "count": counts}), log


def histogram_chart(values, interval=None, measured=None, title: str = "", height: int = 260, show_truth=True):
    """Bars of the room's predictions; the simulated 95% interval as a band and the measured value as a rule."""
    import altair as alt

    frame, log = histogram(values, interval if show_truth else None, measured if show_truth else None)
    scale = alt.Scale(type="log") if log else alt.Scale(zero=False)
    bars = alt.Chart(frame).mark_bar(color="#5c6bc0").encode(
        x=alt.X("low:Q", scale=scale, title=title), x2="high:Q",
        y=alt.Y("count:Q", title="predictions", axis=alt.Axis(tickMinStep=1)),
        tooltip=["low:Q", "high:Q", "count:Q"])
    layers = [bars]
    if show_truth and interval is not None and all(x is not None and math.isfinite(float(x)) for x in interval):
        band = pd.DataFrame([{"low": float(interval[0]), "high": float(interval[1])}])
        layers.insert(0, alt.Chart(band).mark_rect(color="#2e7d32", opacity=0.18).encode(x="low:Q", x2="high:Q"))
    if show_truth and measured is not None and math.isfinite(float(measured)):
        layers.append(alt.Chart(pd.DataFrame([{"measured": float(measured)}])).mark_rule(
            color="#2e7d32", strokeWidth=3).encode(x="measured:Q"))
    return alt.layer(*layers).properties(height=height)


def votes_frame(votes: dict, claims) -> pd.DataFrame:
    """One row per claim and verdict: how many in the room voted it."""
    rows = []
    for k, c in enumerate(claims, 1):
        counts = votes.get(c.id, {})
        for v in VOTES:
            rows.append({"claim": f"C{k}", "text": c.text, "vote": v, "count": int(counts.get(v, 0))})
    return pd.DataFrame(rows, columns=["claim", "text", "vote", "count"])


def votes_chart(frame: pd.DataFrame, height: int = 200):
    import altair as alt

    return alt.Chart(frame).mark_bar().encode(
        y=alt.Y("claim:N", sort=None, title=None), x=alt.X("count:Q", title="votes", axis=alt.Axis(tickMinStep=1)),
        color=alt.Color("vote:N", scale=alt.Scale(domain=list(VOTE_COLOURS), range=list(VOTE_COLOURS.values()))),
        tooltip=["text:N", "vote:N", "count:Q"]).properties(height=height)


def room_setting(room: Room) -> tuple:
    """The round's full setting as the app's caches key it."""
    return ex.params_key(get_lab(room.qid).validate(room.changes))


def base_url() -> str:
    """scheme://host:port of the page being served (for the links and QR codes handed out)."""
    try:
        url = st.context.url
    except Exception:
        url = None
    if not url:
        return "http://localhost:8501"
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


_STORES: dict[str, RoomStore] = {}


def store() -> RoomStore:
    """The rooms file of this process's data folder (opened, and its schema checked, once per process)."""
    from faces.progress import data_dir

    key = str(data_dir())
    if key not in _STORES:
        _STORES[key] = RoomStore()
    return _STORES[key]


# --------------------------------------------------------------------------- the /room page
def room_page(run: Callable):
    """``run(lab_id, setting, seed)`` is the app's cached ``run_lab``."""
    query = st.query_params
    code, key, view = query.get("room"), query.get("key"), query.get("view")
    if not code:
        return lobby()
    try:
        s = store()
        room = s.authorise(code, key) if key else s.get(code)
    except RoomError as e:
        st.title("Workshop room")
        st.error(str(e), icon=":material/error:")
        st.markdown("[Open or join another room](/room)")
        return
    if key:
        (presenter_view if view == "present" else instructor_view)(s, room, key, run)
    else:
        participant_view(s, room, run)


def lobby():
    st.title("Workshop room")
    st.markdown("An instructor opens a room on one lab; participants join with its code, predict, and vote on "
                "each claim; the instructor reveals the run for everyone at once.")
    c1, c2 = st.columns(2)
    with c1.container(border=True):
        st.subheader("Join a room")
        with st.form("room_join"):
            code = st.text_input("Room code", max_chars=12, placeholder="e.g. K7QF3M")
            name = st.text_input("Your name (only the instructor sees it)", max_chars=60)
            go = st.form_submit_button("Join", type="primary")
        if go:
            try:
                s = store()
                room = s.get(code)
                pid = s.join(room.code, name)
            except RoomError as e:
                st.error(str(e), icon=":material/error:")
            else:
                st.session_state[MEMBER] = {"code": room.code, "pid": pid, "name": name.strip()}
                st.query_params.clear()
                st.query_params["room"] = room.code
                st.rerun()
    with c2.container(border=True):
        st.subheader("Open a room (instructor)")
        built = built_ids()
        wanted = str(st.query_params.get("lab", "")).strip().lower()  # /room?lab=q08 picks the lab ahead
        with st.form("room_create"):
            qid = st.selectbox("Lab", built, index=built.index(wanted) if wanted in built else 0,
                               format_func=lambda i: ex.page_title(get_lab(i).question))
            title = st.text_input("Session title (optional)", max_chars=80)
            made = st.form_submit_button("Open a room")
        if made:
            try:
                room, secret = store().create(qid, title=title)
            except RoomError as e:
                st.error(str(e))
            else:
                st.session_state[f"room_new_{room.code}"] = True
                st.query_params.clear()
                st.query_params.update({"room": room.code, "key": secret})
                st.rerun()


def _join_form(s: RoomStore, room: Room):
    with st.form(f"room_join_{room.code}"):
        name = st.text_input("Your name (only the instructor sees it)", max_chars=60)
        go = st.form_submit_button("Join", type="primary")
    if go:
        try:
            pid = s.join(room.code, name)
        except RoomError as e:
            st.error(str(e), icon=":material/error:")
            return
        st.session_state[MEMBER] = {"code": room.code, "pid": pid, "name": name.strip()}
        st.rerun()


def _header(room: Room):
    q = get_lab(room.qid).question
    st.title(f"Room {room.code}" + (f" · {room.title}" if room.title else ""))
    st.markdown(f"**{ex.page_title(q)}** — round {room.round}"
                + (f", exercise {room.exercise + 1}" if room.exercise is not None else ", the defaults"))
    st.markdown(q.summary)
    changes = ", ".join(f"`{n}` = {v}" for n, v in room.changes.items())
    st.info(room.prompt + (f"  \nSettings changed from the defaults: {changes}." if changes else ""),
            icon=":material/help:")


def _result(room: Room, run: Callable):
    with st.spinner(runs.queue_text("Running the lab for the room…")):
        return run(room.qid, room_setting(room), room.seed)


def participant_view(s: RoomStore, room: Room, run: Callable):
    me = st.session_state.get(MEMBER)
    _header(room)
    if not me or me["code"] != room.code:
        st.markdown("Join with a name to send your predictions to the room.")
        _join_form(s, room)
        return
    q = get_lab(room.qid).question
    arm, metric = room.watch
    unit = ex.metric_unit(q, metric)
    try:
        mine = s.mine(room.code, me["pid"])
    except RoomError as e:
        st.error(str(e))
        return
    st.caption(f"You joined as {me['name']}.")
    if not room.revealed:
        with st.form(f"room_answer_{room.code}_{room.round}"):
            st.subheader("Predict first")
            value = st.number_input(f"{arm} · {metric}" + (f" ({unit})" if unit else ""),
                                    value=mine["prediction"], placeholder="type a number",
                                    key=f"room_pred_{room.code}_{room.round}")
            st.markdown("**Your verdict on each claim** (optional)")
            votes = {}
            for k, c in enumerate(q.claims, 1):
                old = mine["votes"].get(c.id)
                votes[c.id] = st.radio(f"C{k}. {c.text}", VOTES, horizontal=True,
                                       key=f"room_vote_{room.code}_{room.round}_{c.id}",
                                       index=VOTES.index(old) if old in VOTES else None)
            sent = st.form_submit_button("Send to the room", type="primary")
        if sent:
            try:
                if value is not None:
                    s.predict(room.code, me["pid"], value)
                for cid, v in votes.items():
                    if v is not None:
                        s.vote(room.code, me["pid"], cid, v)
            except RoomError as e:
                st.error(str(e))
            else:
                mine = s.mine(room.code, me["pid"])
                st.success("Sent to the room. You can change it until the instructor reveals.")
    _participant_live(s, room, me, run, mine)


def _participant_live(s: RoomStore, room: Room, me: dict, run: Callable, mine: dict):
    @st.fragment(run_every=None if room.revealed else POLL_S)
    def live():
        try:
            now = s.get(room.code)
        except RoomError as e:
            st.error(str(e))
            return
        if (now.round, now.revealed) != (room.round, room.revealed):
            st.rerun(scope="app")
        if not room.revealed:
            shown = mine["prediction"]
            st.info("Waiting for the instructor to reveal the run. "
                    + (f"Your prediction: {ex.fmt_number(shown)}." if shown is not None else "You have not predicted yet."),
                    icon=":material/hourglass_top:")
    live()
    if room.revealed:
        participant_result(room, run, mine)


def participant_result(room: Room, run: Callable, mine: dict):
    from labs.workshop import score_number, score_verdict

    q = get_lab(room.qid).question
    arm, metric = room.watch
    unit = ex.metric_unit(q, metric)
    result = _result(room, run)
    measured = result.metrics.get(arm, {}).get(metric, float("nan"))
    interval = result.intervals.get(arm, {}).get(metric)
    st.subheader("Revealed")
    st.metric(f"Headline · {arm} · {metric}", ex.fmt_number(measured, unit))
    st.markdown(f"**{arm} {metric}:** {ex.fmt_with_ci(measured, interval, unit)}")
    if mine["prediction"] is not None:
        sc = score_number(mine["prediction"], measured, interval, unit)
        (st.success if sc.inside else st.warning)(f"Your prediction: {sc.sentence()}")
    st.subheader("Claims")
    for k, v in enumerate(result.claims, 1):
        said = mine["votes"].get(v.id)
        graded = f" — you said {said}: {score_verdict(said, v).sentence()}" if said else ""
        colour = ex.VERDICT_COLOUR.get(v.verdict, "gray")
        st.markdown(f"C{k}. :{colour}[**{v.verdict.replace('_', ' ')}**] · {v.text}{graded}")
        st.caption(v.detail)


def _presenter_link(room: Room, secret: str) -> str:
    return f"{base_url()}/room?room={room.code}&key={secret}&view=present"


def join_links(room: Room) -> list[str]:
    """One join link per explorer process serving the room: ``ARCHLAB_ROOM_SERVERS`` lists their base URLs
    (comma-separated, processes sharing one ``ARCHLAB_DATA``), so each half of a large room uses its own core;
    unset, the one serving this page."""
    return [f"{b}/room?room={room.code}" for b in (room_servers() or [base_url()])]


def _join_codes(room: Room, where, width: int):
    """The join link(s) and QR code(s): with several servers, one per part of the room."""
    from faces.handout import qr_png

    links = join_links(room)
    cols = where.columns(len(links))
    for k, (col, link) in enumerate(zip(cols, links)):
        col.image(qr_png(link), width=width, caption=f"Part {k + 1} of the room" if len(links) > 1 else None)
        col.code(link, language=None, wrap_lines=True)


def instructor_view(s: RoomStore, room: Room, secret: str, run: Callable):
    present = _presenter_link(room, secret)
    _header(room)
    if st.session_state.pop(f"room_new_{room.code}", False):
        st.warning("Keep this page's link: it holds the instructor key, shown only now. Anyone with it can "
                   "reveal and export.", icon=":material/key:")
    c1, c2 = st.columns([1, 2])
    parts = " (one per part of the room, each served by its own process)" if len(join_links(room)) > 1 else ""
    c1.markdown(f"Participants join by the link or by scanning its code{parts}.  \nPresenter view: [{present}]({present})")
    _join_codes(room, c2, 160)
    lab = get_lab(room.qid)
    b1, b2, b3 = st.columns(3)
    if b1.button("Reveal to everyone", type="primary", disabled=room.revealed, key="room_reveal"):
        s.reveal(room.code, secret)
        st.rerun()
    options = [None, *range(len(lab.exercises))]
    pick = b2.selectbox("Next round", options, key="room_next_pick",
                        format_func=lambda k: "the defaults" if k is None else f"exercise {k + 1}")
    if b2.button("Start the next round", key="room_next"):
        s.next_round(room.code, secret, pick)
        st.rerun()
    b3.download_button("Export answers (CSV)", s.export_csv(room.code, secret), file_name=f"room_{room.code}.csv",
                       mime="text/csv", key="room_export")
    result = _result(room, run)  # the instructor's view pays for the run, so the reveal is a cache hit
    instructor_live(s, room, secret, result)
    with st.expander("Instructor guide: timing and what to record"):
        from faces.handout import timing

        for a, b, what in timing(len(lab.exercises)):
            st.markdown(f"- **{a:02d}–{b:02d} min** {what}")
        st.caption(f"The full guide (common wrong predictions, prompts, answers): archlab handout {room.qid} "
                   "--out DIR --answer-key")


def _live_summary(s: RoomStore, room: Room, secret: str):
    summary = s.summary(room.code, secret)
    now = summary["room"]
    if (now.round, now.revealed) != (room.round, room.revealed):
        st.rerun(scope="app")
    return summary


def instructor_live(s: RoomStore, room: Room, secret: str, result):
    arm, metric = room.watch
    q = get_lab(room.qid).question

    @st.fragment(run_every=POLL_S)
    def live():
        summary = _live_summary(s, room, secret)
        n = len(summary["predictions"])
        st.subheader(f"{n} prediction{'s' if n != 1 else ''} · {len(summary['answered'])} of {summary['joined']} "
                     "joined have answered")
        st.markdown("Answered: " + (", ".join(summary["answered"]) or "nobody yet")
                    + "  \nWaiting: " + (", ".join(summary["waiting"]) or "nobody"))
        measured = result.metrics.get(arm, {}).get(metric)
        interval = result.intervals.get(arm, {}).get(metric)
        if n:
            st.altair_chart(histogram_chart(summary["predictions"], interval, measured,
                                            f"{arm} {metric} ({ex.metric_unit(q, metric)})"), width="stretch")
            st.caption(f"Green: the simulated 95% interval {ex.fmt_with_ci(measured, interval)} and the measured "
                       f"value ({'revealed' if room.revealed else 'not revealed to participants yet'}).")
        frame = votes_frame(summary["votes"], q.claims)
        if frame["count"].sum():
            st.markdown("**Verdict votes per claim**")
            st.altair_chart(votes_chart(frame), width="stretch")
            st.dataframe(verdict_table(frame, result, q.claims, show=True), hide_index=True, width="stretch")

    live()


def verdict_table(frame: pd.DataFrame, result, claims, show: bool) -> pd.DataFrame:
    wide = frame.pivot_table(index="claim", columns="vote", values="count", aggfunc="sum", sort=False).reindex(
        columns=list(VOTES), fill_value=0)
    lab_v = {v.id: v.verdict.replace("_", " ") for v in result.claims}
    rows = []
    for k, c in enumerate(claims, 1):
        r = {"claim": f"C{k}", "text": c.text, **{v: int(wide.loc[f"C{k}", v]) for v in VOTES}}
        if show:
            r["lab says"] = lab_v.get(c.id, "")
        rows.append(r)
    return pd.DataFrame(rows)


PRESENTER_CSS = """<style>
[data-testid="stSidebar"], [data-testid="stSidebarCollapsedControl"] {display: none;}
.block-container {padding: 3.75rem 1.5rem 1rem; max-width: 1024px;}
h1 {font-size: 2.6rem !important;} h2, h3 {font-size: 1.9rem !important;}
[data-testid="stMetricValue"] {font-size: 4rem !important;}
[data-testid="stMarkdownContainer"] p {font-size: 1.3rem;}
</style>"""


def presenter_view(s: RoomStore, room: Room, secret: str, run: Callable):
    """For a 1024×768 projector: the code, the count, one large chart per row, the headline after the reveal."""
    st.markdown(PRESENTER_CSS, unsafe_allow_html=True)
    q = get_lab(room.qid).question
    c1, c2 = st.columns([1, 1])
    c1.title(f"Room {room.code}")
    c1.markdown(f"**{ex.page_title(q)}**")
    _join_codes(room, c2, 180)
    st.markdown(f"### {room.prompt}")
    result = _result(room, run)
    arm, metric = room.watch

    @st.fragment(run_every=POLL_S)
    def live():
        summary = _live_summary(s, room, secret)
        n = len(summary["predictions"])
        measured = result.metrics.get(arm, {}).get(metric)
        interval = result.intervals.get(arm, {}).get(metric)
        if room.revealed:
            st.metric(f"Headline · {arm} · {metric}", ex.fmt_number(measured, ex.metric_unit(q, metric)))
            st.markdown(f"95% interval: **{ex.fmt_with_ci(measured, interval, ex.metric_unit(q, metric))}**")
        st.markdown(f"## {n} prediction{'s' if n != 1 else ''} from {summary['joined']} joined")
        if n:
            st.altair_chart(histogram_chart(summary["predictions"], interval, measured,
                                            f"{arm} {metric} ({ex.metric_unit(q, metric)})", height=380,
                                            show_truth=room.revealed), width="stretch")
        frame = votes_frame(summary["votes"], q.claims)
        if frame["count"].sum():
            st.markdown("## Verdict votes")
            st.altair_chart(votes_chart(frame, height=260), width="stretch")
            st.table(verdict_table(frame, result, q.claims, show=room.revealed))

    live()


# --------------------------------------------------------------------------- hooks for the lab and drill pages
def _membership(lab_id: str):
    me = st.session_state.get(MEMBER)
    if not me:
        return None, None
    try:
        room = store().get(me["code"])
    except RoomError:
        return None, None
    return (me, room) if room.qid == lab_id else (None, None)


def on_predict(lab_id: str, watch: tuple, setting: tuple, value) -> None:
    """A prediction made on a lab page goes to the learner's room when it is the room's question and setting."""
    me, room = _membership(lab_id)
    if room is None or value is None or tuple(watch) != room.watch or setting != room_setting(room):
        return
    try:
        store().predict(room.code, me["pid"], value)
    except RoomError:
        pass


def hold(lab_id: str, setting: tuple, where) -> bool:
    """While the learner's room has not revealed this setting, the lab page keeps its results back (True)."""
    me, room = _membership(lab_id)
    if room is None or room.revealed or setting != room_setting(room):
        return False
    if store().mine(room.code, me["pid"])["prediction"] is None:
        return False  # not predicted yet: the page's own predict box asks first

    @st.fragment(run_every=POLL_S)
    def waiting():
        try:
            now = store().get(room.code)
        except RoomError:
            return
        if now.revealed or now.round != room.round:
            st.rerun(scope="app")
        st.info(f"Your prediction went to room {room.code}. The results appear when the instructor reveals.",
                icon=":material/hourglass_top:")

    with where:
        waiting()
    return True


def on_drill(qid: str, graded) -> None:
    """A drill's stated numbers and verdicts go to the learner's room when it is the room's question."""
    me, room = _membership(qid)
    if room is None:
        return
    s = store()
    for g in graded:
        try:
            if g.item.kind == "number" and g.stated:
                s.submit(room.code, me["pid"], "drill_number", g.item.metric, stated=float(g.stated.replace(",", "")),
                         arm=g.item.arm, changes=g.item.changes)
            elif g.item.kind == "verdict" and g.stated:
                s.submit(room.code, me["pid"], "drill_verdict", g.item.claim, text=g.stated)
        except (RoomError, ValueError):
            continue
