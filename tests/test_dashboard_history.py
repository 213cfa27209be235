"""`serd dashboard --db URL`: the history endpoints (HTTP, JSON) and the history page in headless
Chromium, on a real SQLite history written by the recorder's own code."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from helpers_record import emotion
from helpers_service import get_json
from serd.messages import encode
from serd.record.recorder import Recorder
from serd.record.store import open_store, sqlite_url
from serd.record.when import local_midnight
from serd.record.writer import WriterSettings
from serd.record.writes import write_batch
from test_dashboard_browser import CHROMIUM, CHROMIUM_ARGS, Child, screenshot, sync_playwright

pytestmark = pytest.mark.slow
ROOMS = ("room-a", "room-b")
HOP_S = 0.5
SPEECH_EVERY = 4
"""Every 4th window is silent: 3/4 of the recorded time has speech."""


def build_history(path: Path) -> dict:
    """Yesterday 09:00-09:30 local time in both rooms, as `serd record` would have written it."""
    store = open_store(sqlite_url(path), create=True)
    store.migrate()
    recorder = Recorder(store, ["tcp://127.0.0.1:1"], WriterSettings())
    yesterday = local_midnight(local_midnight(time.time()) - 3600)
    start = yesterday + 9 * 3600
    last_start: dict = {}
    for r, room in enumerate(ROOMS):
        for i in range(int(1800 / HOP_S)):
            recorder.handle(encode(emotion(room, i, start + i * HOP_S, speech=i % SPEECH_EVERY != 0,
                                           arousal=None if i % SPEECH_EVERY == 0 else 0.25 + 0.5 * r)))
            if recorder.writer.queued >= 1000:
                write_batch(store, recorder.writer._take(), last_start)
    write_batch(store, recorder.writer._take(), last_start)
    store.close()
    return {"yesterday": yesterday}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("history")
    facts = build_history(tmp / "history.sqlite3")
    child = Child(["dashboard", "--db", sqlite_url(tmp / "history.sqlite3"), "--connect", f"ipc://{tmp}/none",
                   "--listen", "127.0.0.1:0"])
    url = child.wait_for_line(r"serving on (http://\S+/)").group(1)
    yield url, facts
    assert child.stop() == 0, child.output
    assert "Traceback" not in child.output


def test_endpoints_answer_from_the_database(served):
    url, facts = served
    status, rooms = get_json(url + "api/history/rooms")
    assert status == 200 and [r["device"] for r in rooms["rooms"]] == list(ROOMS)
    day = time.strftime("%Y-%m-%d", time.localtime(facts["yesterday"]))
    status, room = get_json(url + f"api/history/room?device=room-b&day={day}&every=1h")
    assert status == 200
    (hour,) = room["buckets"]
    assert hour["windows"] == 3600 and hour["speech_windows"] == 2700
    assert hour["speech_fraction"] == pytest.approx(0.75, abs=0.01) and hour["arousal"] == pytest.approx(0.75)
    status, table = get_json(url + "api/history/table?days=7")
    assert status == 200 and len(table["days"]) == 7
    cells = {row["device"]: row["days"] for row in table["rows"]}
    assert cells["room-a"][-2]["speech_s"] == pytest.approx(1800 * 0.75, abs=1) and cells["room-a"][-1] is None
    status, week = get_json(url + "api/history/room?device=room-a&days=7&every=1m")  # the largest answer: a week per minute
    assert status == 200 and sum(b["windows"] for b in week["buckets"]) == 3600 and week["gaps_truncated"] is False
    for bad in ("room?device=room-a&day=yesterday", "room?device=room-a&every=5m", "table?days=400", "room?day=2026-01-01",
                "room?device=room-a&days=31&every=1m"):  # 44,640 steps: bounded, ask per hour
        status, body = get_json(url + "api/history/" + bad)
        assert status == 400 and body["error"], bad


def test_the_history_page_shows_the_stored_day(served, tmp_path):
    url, facts = served
    day = time.strftime("%Y-%m-%d", time.localtime(facts["yesterday"]))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(url)
        page.wait_for_selector("#history-link:not([hidden])")  # the live page links to history with --db
        page.click("#history-link")
        page.wait_for_selector("#room option", state="attached")
        page.select_option("#room", "room-b")
        page.select_option("#span", "day")
        page.fill("#day", day)
        page.dispatch_event("#day", "change")
        page.wait_for_function("document.getElementById('summary').textContent.includes('" + day + "')")
        summary = page.text_content("#summary")
        # 3/4 of 30 minutes had speech: 22.5 min, shown rounded to the minute
        assert "room-b" in summary and re.search(r"2[23] min of speech in 30 min recorded", summary), summary
        assert "mean arousal 0.75" in summary
        # Per minute: 30 steps with speech drawn, and the arousal line through all of them.
        assert page.get_attribute("#bands", "data-buckets") == "30"
        assert page.get_attribute("#lines", "data-arousal-points") == "30"
        painted = page.evaluate("""() => {
            const c = document.getElementById('bands'); const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n / (d.length / 4); }""")
        assert 0.01 < painted < 0.2, painted  # half an hour of a 24-hour day
        page.wait_for_selector("#table tr[data-device='room-a']")
        cells = page.eval_on_selector_all("#table tr[data-device='room-a'] td", "tds => tds.map(t => t.textContent)")
        assert len(cells) == 7 and re.search(r"2[23] min", cells[-2]) and "arousal 0.25" in cells[-2], cells
        assert cells[-1] == "–"
        screenshot(page, tmp_path, "dashboard-history")
        browser.close()
    assert errors == []
