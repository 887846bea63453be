"""A workshop room in a real browser: one instructor and three participants, each in their own browser context."""
from __future__ import annotations

import csv
import io
import os
import re

import pytest

from test_browser import CHROMIUM, RUN_TIMEOUT_MS, browser, server, settle  # noqa: F401  (fixtures)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian chromium at /usr/bin/chromium"),
]
HEADLINE = '[data-testid="stMetricValue"]'
NAMES = ("Ann", "Bo", "Cy")
GUESSES = ("150", "3000", "31000")


def _context(browser, size=(1280, 1600)):
    from playwright.sync_api import expect

    expect.set_options(timeout=RUN_TIMEOUT_MS)
    ctx = browser.new_context(viewport={"width": size[0], "height": size[1]}, accept_downloads=True)
    page = ctx.new_page()
    page.set_default_timeout(RUN_TIMEOUT_MS)
    return ctx, page


def _open(page, url, heading):
    page.goto(url, timeout=RUN_TIMEOUT_MS, wait_until="domcontentloaded")  # the CONNECTED state is what counts
    page.wait_for_selector("[data-test-connection-state=CONNECTED]", timeout=RUN_TIMEOUT_MS)
    page.get_by_role("heading", name=heading).first.wait_for(timeout=RUN_TIMEOUT_MS)
    settle(page)


def test_instructor_and_three_participants(server, browser, tmp_path):  # noqa: F811
    from playwright.sync_api import expect

    contexts = []
    try:
        ctx, teacher = _context(browser)
        contexts.append(ctx)
        # 1. the instructor opens a room on q08
        _open(teacher, f"{server}/room?lab=q08", "Workshop room")  # the link picks the lab
        expect(teacher.get_by_role("combobox", name="Lab")).to_have_value(re.compile(r"^Q08 · "))
        teacher.get_by_role("button", name="Open a room").click()
        teacher.get_by_role("heading", name=re.compile(r"^Room [A-Z0-9]{6}")).wait_for()
        settle(teacher)
        m = re.search(r"room=([A-Z0-9]{6})&key=([^&]+)", teacher.url)
        assert m, teacher.url
        code = m.group(1)
        expect(teacher.get_by_text("Keep this page's link")).to_be_visible()
        qr = teacher.locator('[data-testid="stImage"] img').first  # the QR code of the join link, drawn
        expect(qr).to_be_visible()
        assert qr.evaluate("i => i.complete && i.naturalWidth") >= 100

        # 2. three participants join by the link and predict
        people = []
        for name, guess in zip(NAMES, GUESSES):
            ctx, p = _context(browser, (1024, 1400))
            contexts.append(ctx)
            _open(p, f"{server}/room?room={code.lower()}", f"Room {code}")
            p.get_by_role("textbox", name=re.compile("Your name")).fill(name)
            p.get_by_role("button", name="Join").click()
            box = p.get_by_role("spinbutton", name=re.compile(r"pattern · p99_ms"))
            box.wait_for()
            box.fill(guess)
            p.get_by_role("button", name="Send to the room").click()
            expect(p.get_by_text("Sent to the room")).to_be_visible()
            expect(p.get_by_text("Waiting for the instructor to reveal")).to_be_visible()
            people.append(p)

        # 3. the instructor's histogram counts 3
        expect(teacher.get_by_role("heading", name="3 predictions · 3 of 3 joined have answered")).to_be_visible()
        expect(teacher.locator('[data-testid="stVegaLiteChart"]').first).to_be_visible()
        for name in NAMES:
            expect(teacher.get_by_text(re.compile(rf"Answered: .*\b{name}\b"))).to_be_visible()
        teacher.screenshot(path=str(tmp_path / "instructor.png"), full_page=True)

        # 4. nothing is shown until the reveal, then everyone sees the same result
        for p in people:
            expect(p.locator(HEADLINE)).to_have_count(0)
        for p in people[1:]:
            expect(p.get_by_text(re.compile(r"\bAnn\b"))).to_have_count(0)  # nobody sees another's name
        teacher.get_by_role("button", name="Reveal to everyone").click()
        settle(teacher)
        shown = []
        for p in people:
            p.locator(HEADLINE).first.wait_for(timeout=RUN_TIMEOUT_MS)
            shown.append(p.locator(HEADLINE).first.inner_text())
            expect(p.get_by_text(re.compile(r"Your prediction: .* (is right|too (low|high))"))).to_be_visible()
        assert len(set(shown)) == 1 and re.search(r"\d", shown[0]), shown
        people[0].screenshot(path=str(tmp_path / "participant.png"), full_page=True)

        # the presenter view at projector size
        ctx, screen = _context(browser, (1024, 768))
        contexts.append(ctx)
        _open(screen, teacher.url + "&view=present", f"Room {code}")
        expect(screen.locator(HEADLINE).first).to_have_text(shown[0])
        expect(screen.get_by_text("3 predictions from 3 joined")).to_be_visible()
        expect(screen.locator('[data-testid="stImage"] img').first).to_be_visible()  # the QR code on the projector
        screen.screenshot(path=str(tmp_path / "presenter.png"))

        # 5. the CSV export has the three rows
        with teacher.expect_download() as dl:
            teacher.get_by_role("button", name="Export answers (CSV)").click()
        rows = list(csv.DictReader(io.StringIO(open(dl.value.path(), encoding="utf-8").read())))
        preds = sorted((r["name"], float(r["stated"])) for r in rows if r["kind"] == "prediction")
        assert preds == sorted(zip(NAMES, map(float, GUESSES)))
    except Exception as e:  # say what each page showed: a timeout alone names only the element it waited for
        shown = []
        for i, c in enumerate(contexts):
            for pg in c.pages:
                pg.screenshot(path=str(tmp_path / f"failed-{i}.png"), full_page=True)
                shown.append(f"--- page {i} at {pg.url}:\n{pg.inner_text('body')[:1500]}")
        raise AssertionError("\n".join([str(e).splitlines()[0], *shown])) from e
    finally:
        for ctx in contexts:
            ctx.close()
