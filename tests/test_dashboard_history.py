"""`serd dashboard --db URL`: the history endpoints (HTTP, JSON) and the history page in headless
Chromium, on a real SQLite history written by the recorder's own code."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from pathlib import Path

import pytest

from helpers_record import emotion
from helpers_service import get_json
from serd.config import DEFAULT_MODEL
from serd.messages import encode
from serd.model import resolve_model_path
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


class RecordedHistory:
    """A SQLite history written as `serd record` writes it: each message through the recorder, the batches
    through write_batch; one session per room, its windows HOP_S apart."""

    def __init__(self, path: Path) -> None:
        self.store = open_store(sqlite_url(path), create=True)
        self.store.migrate()
        self.recorder = Recorder(self.store, ["tcp://127.0.0.1:1"], WriterSettings())
        self.last_start: dict = {}  # as the recorder's writer keeps it between batches
        self.seqs: dict[str, int] = {}

    def add(self, room: str, start: float, speech: list[bool], arousal: float | None = None) -> None:
        """One window per entry of `speech` from `start` on, continuing the room's session; then written."""
        for i, is_speech in enumerate(speech):
            seq = self.seqs.get(room, 0)
            self.seqs[room] = seq + 1
            self.recorder.handle(encode(emotion(room, seq, start + i * HOP_S, speech=is_speech,
                                                arousal=arousal if is_speech else None)))
            if self.recorder.writer.queued >= 1000:
                self.flush()
        self.flush()

    def flush(self) -> None:
        write_batch(self.store, self.recorder.writer._take(), self.last_start)

    def close(self) -> None:
        self.store.close()


def build_history(path: Path) -> dict:
    """Yesterday 09:00-09:30 local time in both rooms, as `serd record` would have written it."""
    history = RecordedHistory(path)
    yesterday = local_midnight(local_midnight(time.time()) - 3600)
    half_hour = [i % SPEECH_EVERY != 0 for i in range(int(1800 / HOP_S))]
    for r, room in enumerate(ROOMS):
        history.add(room, yesterday + 9 * 3600, half_hour, arousal=0.25 + 0.5 * r)
    history.close()
    return {"yesterday": yesterday}


def serve(db: Path, tmp: Path) -> tuple[Child, str]:
    """`serd dashboard --db` on the history at `db`, and the URL it serves."""
    child = Child(["dashboard", "--db", sqlite_url(db), "--connect", f"ipc://{tmp}/none", "--listen", "127.0.0.1:0"])
    return child, child.wait_for_line(r"serving on (http://\S+/)").group(1)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("history")
    facts = build_history(tmp / "history.sqlite3")
    child, url = serve(tmp / "history.sqlite3", tmp)
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
        # a function, not a bare expression: Playwright runs an expression through the page's own
        # eval, which the dashboard's Content-Security-Policy (no 'unsafe-eval') refuses
        page.wait_for_function("(day) => document.getElementById('summary').textContent.includes(day)", arg=day)
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


# --- the page as a person reads it (issue 18, item 7) ---------------------------------------------------

WEEKDAY = r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun) \d{1,2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
DESKTOP = {"width": 1280, "height": 1000}
PHONE = {"width": 390, "height": 844}


def open_history(playwright, url: str, viewport: dict, query: str = "", **page_options):
    """The history page once it has its rooms, and the list its errors go to: page errors and console errors
    (a script or style the Content-Security-Policy refuses is one)."""
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    page = browser.new_page(viewport=viewport, **page_options)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda message: message.type == "error" and errors.append(f"console: {message.text}"))
    page.goto(url + "history.html" + query)
    page.wait_for_selector("#room option", state="attached")
    return browser, page, errors


def show_day(page, room: str, day: str) -> None:
    page.select_option("#room", room)
    page.select_option("#span", "day")
    page.fill("#day", day)
    page.dispatch_event("#day", "change")
    wait_for_summary(page, f"{room}, ", day)


def wait_for_summary(page, *parts: str, timeout_ms: float = 30_000) -> None:
    """Until the summary holds every one of `parts` (a function, not a string: the page's CSP forbids eval)."""
    page.wait_for_function("(parts) => parts.every(p => document.getElementById('summary').textContent.includes(p))",
                           arg=list(parts), timeout=timeout_ms)


def chart_layout(page, canvas_id: str) -> dict:
    """The plot area, the axis labels' boxes, and the coloured pixels drawn outside the plot area."""
    return page.evaluate("""(id) => {
        const c = document.getElementById(id);
        const plot = JSON.parse(c.dataset.plot), labels = JSON.parse(c.dataset.labelBoxes);
        const ratio = c.width / c.getBoundingClientRect().width;
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let colouredOutside = 0, colouredInside = 0;
        for (let y = 0; y < c.height; y++) for (let x = 0; x < c.width; x++) {
            const i = (y * c.width + x) * 4;
            const spread = Math.max(d[i], d[i + 1], d[i + 2]) - Math.min(d[i], d[i + 1], d[i + 2]);
            if (d[i + 3] < 128 || spread < 60) continue;  // text and gridlines are grey; the bands are colours
            const cx = x / ratio, cy = y / ratio;
            const inside = cx >= plot.x - 1 && cx <= plot.x + plot.w + 1 && cy >= plot.y - 1 && cy <= plot.y + plot.h + 1;
            if (inside) colouredInside++; else colouredOutside++;
        }
        const box = c.getBoundingClientRect();
        return {plot, labels, colouredOutside, colouredInside, ratio, dpr: window.devicePixelRatio,
                cssWidth: box.width, cssHeight: box.height, pixels: [c.width, c.height], viewport: window.innerWidth};
    }""", canvas_id)


def overlaps(a: dict, b: dict) -> bool:
    return a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"] and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"]


def assert_labels_beside_the_plot(chart: dict) -> None:
    """Every axis label beside the plot area and clear of the others, and no band drawn outside the plot."""
    plot = chart["plot"]
    for box in chart["labels"]:
        assert not overlaps(box, plot), (box, plot)  # every label beside the plot, none over the bands
    for i, a in enumerate(chart["labels"]):
        assert not any(overlaps(a, b) for b in chart["labels"][i + 1:]), a
    assert chart["colouredOutside"] == 0, chart


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_charts_have_scales_with_their_labels_beside_the_bands_and_fill_a_phone(served, viewport):
    url, facts = served
    day = time.strftime("%Y-%m-%d", time.localtime(facts["yesterday"]))
    with sync_playwright() as playwright:
        browser, page, errors = open_history(playwright, url, viewport)
        show_day(page, "room-b", day)
        bands, lines = chart_layout(page, "bands"), chart_layout(page, "lines")
        browser.close()
    assert errors == []
    texts = {"bands": [b["text"] for b in bands["labels"]], "lines": [b["text"] for b in lines["labels"]]}
    assert {"0 %", "50 %", "100 %"} <= set(texts["bands"]), texts  # the y scale of the stacked probabilities
    assert {"0 %", "100 %", "0", "1"} <= set(texts["lines"]), texts  # speech share left, arousal right
    assert any(re.fullmatch(r"\d\d:00", t) for t in texts["bands"]), texts  # the time axis
    for chart in (bands, lines):
        assert_labels_beside_the_plot(chart)
        # The canvas is drawn at its size on the page (12-pixel labels stay 12 pixels), as wide as the page allows.
        assert chart["ratio"] == pytest.approx(chart["dpr"], rel=0.02), chart
        assert chart["cssWidth"] >= 0.9 * chart["viewport"] or viewport is DESKTOP, chart
    assert bands["colouredInside"] > 0, bands  # (the lines chart is greys: speech share and arousal)


def test_the_steps_control_shows_the_step_the_chart_uses(served):
    url, facts = served
    with sync_playwright() as playwright:
        browser, page, errors = open_history(playwright, url, DESKTOP)
        page.select_option("#room", "room-a")
        page.select_option("#span", "week")
        wait_for_summary(page, "the 7 days to")
        every = page.eval_on_selector("#every", "s => ({value: s.value, disabled: s.disabled, "
                                      "text: s.options[s.selectedIndex].text, "
                                      "minute: s.querySelector(\"option[value='1m']\").disabled})")
        assert every == {"value": "1h", "disabled": False, "text": "per hour", "minute": True}, every
        assert page.get_attribute("#bands", "data-buckets") == "1"  # half an hour: one hour's step
        page.select_option("#span", "today")  # per minute again, as it was before the week
        page.wait_for_function("() => document.getElementById('every').value === '1m'")
        assert not page.eval_on_selector("#every option[value='1m']", "o => o.disabled")
        browser.close()
    assert errors == []


def test_table_days_have_weekdays_and_open_that_day_in_the_charts(served):
    url, facts = served
    day = time.strftime("%Y-%m-%d", time.localtime(facts["yesterday"]))
    with sync_playwright() as playwright:
        browser, page, errors = open_history(playwright, url, PHONE)
        page.wait_for_selector("#table tr[data-device='room-b'] button.day-cell")
        headers = page.eval_on_selector_all("#table tr:first-child th", "ths => ths.map(t => t.textContent)")
        assert len(headers) == 8 and all(re.fullmatch(WEEKDAY, h) for h in headers[1:]), headers
        page.select_option("#room", "room-a")  # another room and range are showing...
        page.click(f"#table tr[data-device='room-b'] button.day-cell[data-day='{day}']")  # ...a tap opens this one
        wait_for_summary(page, "room-b, ", day)
        summary = page.text_content("#summary")
        assert re.search(WEEKDAY + f" \\({day}\\)", summary), summary
        assert page.input_value("#room") == "room-b" and page.input_value("#span") == "day"
        assert page.get_attribute("#bands", "data-buckets") == "30"
        browser.close()
    assert errors == []


@pytest.fixture
def live_history(tmp_path):
    """A room with 37 s of speech in the last two minutes, and a dashboard reading it."""
    history = RecordedHistory(tmp_path / "live.sqlite3")
    now = time.time()
    history.add("short", now - 120, [True] * 74)  # 74 windows of 0.5 s with speech: 37 s
    child, url = serve(tmp_path / "live.sqlite3", tmp_path)
    yield url, history, now
    history.close()
    assert child.stop() == 0, child.output


def test_short_durations_show_seconds_and_the_page_refreshes_itself(live_history):
    url, history, now = live_history
    with sync_playwright() as playwright:
        browser, page, errors = open_history(playwright, url, DESKTOP, "?refresh=2")
        page.select_option("#room", "short")
        wait_for_summary(page, "short, ")
        summary = page.text_content("#summary")
        assert "37 s of speech in 37 s recorded" in summary, summary  # not "1 min"
        assert "refreshes every 2 s" in page.text_content("#updated")
        history.add("short", now - 120 + 74 * HOP_S, [True] * 40)  # 20 s more, written while the page is open
        wait_for_summary(page, "57 s of speech")
        assert page.input_value("#room") == "short" and page.input_value("#span") == "today"
        cell = page.text_content("#table tr[data-device='short'] td:last-child")
        assert cell.startswith("57 s"), cell  # the table's today column too
        browser.close()
    assert errors == []


def shipped_sidecar() -> dict:
    """The shipped model's sidecar (its labels, among others)."""
    return json.loads(resolve_model_path(DEFAULT_MODEL).with_suffix(".json").read_text())


def test_the_live_pages_model_text_describes_the_shipped_model(served):
    """"How to read this" named the first model (RAVDESS only, six emotions, 57 %) long after it was replaced."""
    import urllib.request

    url, _ = served
    sidecar = shipped_sidecar()
    with urllib.request.urlopen(url, timeout=30) as response:
        page = response.read().decode()
    limits = page[page.index("Limits of the model"):page.index("</details>")]
    words = {5: "five", 6: "six", 7: "seven", 8: "eight"}
    assert f"{words[len(sidecar['labels'])]} emotions" in limits
    assert all(label in limits for label in sidecar["labels"]), sidecar["labels"]
    assert all(corpus in limits for corpus in ("RAVDESS", "nEMO", "EmoSpeech")), limits
    assert "57 %" not in limits and "six emotions" not in limits


SCALE_VALUES = {"0 %": 0.0, "50 %": 0.5, "100 %": 1.0, "0": 0.0, "0.5": 0.5, "1": 1.0}
ENGLISH_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def test_on_a_phone_at_three_pixels_per_point_the_charts_are_crisp_and_nothing_scrolls_sideways(served, tmp_path):
    url, facts = served
    day = time.strftime("%Y-%m-%d", time.localtime(facts["yesterday"]))
    _, table = get_json(url + "api/history/table?days=7")
    short_days = [f"{ENGLISH_WEEKDAYS[d.weekday()]} {d.day}" for d in map(datetime.fromtimestamp, table["days"])]
    with sync_playwright() as playwright:
        browser, page, errors = open_history(playwright, url, PHONE, device_scale_factor=3, is_mobile=True,
                                             has_touch=True)
        show_day(page, "room-b", day)
        charts = {"day": {name: chart_layout(page, name) for name in ("bands", "lines")}}
        page.select_option("#span", "week")
        wait_for_summary(page, "room-b, the 7 days to")
        charts["week"] = {name: chart_layout(page, name) for name in ("bands", "lines")}
        width = page.evaluate("""() => ({scroll: document.scrollingElement.scrollWidth, inner: window.innerWidth,
                                         scale: window.visualViewport.scale})""")
        screenshot(page, tmp_path, "dashboard-history-phone-dpr3")
        browser.close()
    assert errors == []
    assert width == {"scroll": PHONE["width"], "inner": PHONE["width"], "scale": 1}, width  # no sideways scrolling
    for span, both in charts.items():
        for name, chart in both.items():
            where = (span, name, chart)
            assert chart["dpr"] == 3 and chart["cssWidth"] >= 0.9 * PHONE["width"], where
            # Drawn at the screen's own resolution: three pixels per CSS pixel each way, not a picture stretched.
            assert abs(chart["pixels"][0] - 3 * chart["cssWidth"]) <= 1, where
            assert abs(chart["pixels"][1] - 3 * chart["cssHeight"]) <= 1, where
            assert_labels_beside_the_plot(chart)
            plot, labels = chart["plot"], chart["labels"]
            for box in labels:  # on the canvas, not cut off at its edge
                assert box["x"] >= 0 and box["x"] + box["w"] <= chart["cssWidth"] + 0.5, (span, name, box)
                assert box["y"] >= 0 and box["y"] + box["h"] <= chart["cssHeight"] + 0.5, (span, name, box)
            scale = [box for box in labels if box["y"] + box["h"] <= plot["y"] + plot["h"] + 4]
            expected = {"bands": {"0 %", "50 %", "100 %"}, "lines": {"0 %", "50 %", "100 %", "0", "0.5", "1"}}[name]
            assert {box["text"] for box in scale} == expected, where
            for box in scale:  # each value beside its own gridline
                line = plot["y"] + (1 - SCALE_VALUES[box["text"]]) * plot["h"]
                assert box["y"] - 1 <= line <= box["y"] + box["h"] + 1, (span, name, box, plot)
            times = [box["text"] for box in labels if box not in scale]
            if span == "day":
                assert len(times) >= 3 and all(re.fullmatch(r"\d\d:00", t) for t in times), where
            else:  # a week: its days by weekday, in order (some left out where they would touch)
                assert len(times) >= 3 and all(t in short_days for t in times), (times, short_days)
                assert [short_days.index(t) for t in times] == sorted(short_days.index(t) for t in times), times


def test_a_step_the_person_chose_is_kept_across_the_week(served):
    url, facts = served
    day = time.strftime("%Y-%m-%d", time.localtime(facts["yesterday"]))
    with sync_playwright() as playwright:
        browser, page, errors = open_history(playwright, url, DESKTOP)
        show_day(page, "room-a", day)
        assert page.get_attribute("#bands", "data-buckets") == "30"
        page.select_option("#every", "1h")
        page.wait_for_function("() => document.getElementById('bands').dataset.buckets === '1'", timeout=30_000)
        page.select_option("#span", "week")  # per hour there anyway...
        wait_for_summary(page, "room-a, the 7 days to")
        page.select_option("#span", "day")  # ...and still per hour back on the day: the person's choice
        wait_for_summary(page, "room-a, ", day)
        assert page.input_value("#every") == "1h" and page.get_attribute("#bands", "data-buckets") == "1"
        browser.close()
    assert errors == []


def test_a_refresh_updates_the_page_in_place_keeping_the_choices_and_adding_new_rooms(tmp_path):
    history = RecordedHistory(tmp_path / "live.sqlite3")
    now = time.time()
    history.add("room-a", now - 600, [True] * 20, arousal=0.3)
    history.add("room-b", now - 600, [True] * 20, arousal=0.6)
    child, url = serve(tmp_path / "live.sqlite3", tmp_path)
    try:
        with sync_playwright() as playwright:
            browser, page, errors = open_history(playwright, url, DESKTOP, "?refresh=2")
            page.select_option("#room", "room-b")  # not what the page opens with: a reload would lose both
            page.select_option("#span", "week")
            wait_for_summary(page, "room-b, the 7 days to", ": 10 s of speech")
            page.evaluate("() => { window.sameDocument = true; }")  # gone if the page reloaded
            history.add("room-b", now, [True] * 200, arousal=0.6)  # 100 s more in the room shown
            history.add("room-new", now, [True] * 20)  # and a room that was not there
            wait_for_summary(page, "room-b, the 7 days to", ": 1 min 50 s of speech")
            page.wait_for_selector("#table tr[data-device='room-new']", timeout=30_000)
            page.wait_for_function("() => Array.from(document.getElementById('room').options, o => o.value)"
                                   ".includes('room-new')", timeout=30_000)
            assert page.evaluate("() => window.sameDocument") is True
            assert page.input_value("#room") == "room-b" and page.input_value("#span") == "week"
            assert "refreshes every 2 s" in page.text_content("#updated")
            browser.close()
        assert errors == []
    finally:
        history.close()
        assert child.stop() == 0, child.output


def test_the_history_page_links_to_how_to_read_this_on_the_live_view(served):
    url, _ = served
    labels = shipped_sidecar()["labels"]
    with sync_playwright() as playwright:
        browser, page, errors = open_history(playwright, url, PHONE)
        note = " ".join(page.text_content(".history-limits").split())
        assert "guesses per 2-second window" in note and "never a judgement of a person" in note, note
        page.click(".history-limits a:has-text('How to read this')")
        # The live view, with its "How to read this" open at the model's limits and scrolled to them.
        page.wait_for_function("""() => { const h = document.getElementById('model-limits');
            if (!h || !h.closest('details').open) return false;
            const box = h.getBoundingClientRect();
            return box.height > 0 && box.bottom > 0 && box.top < innerHeight; }""",
                               timeout=30_000)
        limits = page.evaluate("() => document.getElementById('model-limits').nextElementSibling.textContent")
        browser.close()
    assert errors == []
    assert all(label in limits for label in labels), (labels, limits)
