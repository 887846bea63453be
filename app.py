"""ArchLab explorer: every question as a page, every built lab as an experiment you can steer.

Run with ``streamlit run app.py``. This file is the navigation only: the pages
come from ``faces/`` (``faces.pages`` for home, claims and the question pages,
``faces.drill`` for the interview drill, ``faces.progress`` for your progress).
Pages: Home, Claims, one page per question (``/q01`` .. ``/q30``), Interview
drill, Your progress and the workshop room (``faces.room_pages``). A built lab's widgets are bound to the URL
(``bind="query-params"``), so ``/q08?client_timeout_s=1`` reproduces a view.
"""
from __future__ import annotations

import streamlit as st

from faces.drill import drill_page
from faces.pages import (CURRENT_PAGE, ICON_BUILT, PAGES, PREVIOUS_PAGE, claims_page, home_page,
                         question_page, room_page)
from faces.progress import progress_page
from labs.catalog import load_catalog
from labs.registry import built_ids


# --------------------------------------------------------------------------- navigation
def main(start: str | None = None):
    """Build the navigation and run the chosen page; ``start`` opens a page by url path (tests)."""
    st.set_page_config(page_title="ArchLab", page_icon=ICON_BUILT, layout="wide")
    cat = load_catalog()
    built = set(built_ids())
    PAGES.clear()
    PAGES["home"] = st.Page(home_page, title="Home", url_path="home", icon=":material/home:",
                            default=start in (None, "home"))
    PAGES["claims"] = st.Page(claims_page, title="Claims", url_path="claims", icon=":material/balance:",
                              default=start == "claims")
    for q in cat:
        PAGES[q.id] = question_page(q, q.id in built, default=start == q.id)
    PAGES["drill"] = st.Page(drill_page, title="Interview drill", url_path="drill", icon=":material/timer:",
                             default=start == "drill")
    PAGES["progress"] = st.Page(progress_page, title="Your progress", url_path="progress",
                                icon=":material/insights:", default=start == "progress")
    PAGES["room"] = st.Page(room_page, title="Workshop room", url_path="room",
                            icon=":material/groups:", default=start == "room")
    sections = {"ArchLab": [PAGES["home"], PAGES["claims"], PAGES["drill"], PAGES["progress"], PAGES["room"]]}
    for topic, questions in cat.by_topic().items():
        sections[topic.name] = [PAGES[q.id] for q in questions]
    page = st.navigation(sections)
    st.session_state[PREVIOUS_PAGE] = st.session_state.get(CURRENT_PAGE)
    st.session_state[CURRENT_PAGE] = next((k for k, p in PAGES.items() if p.title == page.title), None)
    page.run()


if __name__ == "__main__":
    main()
