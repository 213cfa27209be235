"""`serd dashboard` in a real browser: headless Chromium (Debian's) driven by Playwright.

`serd run` plays examples/demo.flac in real time and publishes over ipc://;
`serd dashboard` subscribes to it and to a test PUB socket (for the device
with hostile text in its fields). The page must show the device, move its bars, grow its
timeline, show the daemon's final "stopping" and then "stale", analyse an
uploaded recording, and render the hostile text as text.

Never downloads a browser: it uses /usr/bin/chromium (CI: apt-get install chromium)
and skips with a reason if that or Playwright is missing.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from conftest import RAVDESS_FIXTURES
from serd.messages import EmotionMessage, StatusMessage, encode

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]
REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO = REPO_ROOT / "examples" / "demo.flac"
# Not Actor 6 shouting (strong angry): no voice to Silero, the speech gate (benchmarks/RESULTS.md).
CLIP = RAVDESS_FIXTURES / "Actor_18/03-01-06-02-02-02-18.flac"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
XSS_NAME = "<img src=x onerror=alert(1)>"
"""Markup in every free-text field a publisher controls (`detail`, `model`, a label name): it must show
as text. (A device name like this is refused at decode since issue 13: names are 1-64 of A-Z a-z 0-9 _.:-)"""
HOSTILE_ROOM = "hostile-room"
LABELS = ("neutral", "happy", "sad", "angry", "fearful", "disgust")
STALE_AFTER_S = 3.0
START_TIMEOUT_S = 60.0
"""Generous: start-up includes loading a TFLite model on a machine that may be busy training."""
WAIT_MS = 60_000

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

if sync_playwright is None:
    pytest.skip("Playwright for Python is not installed (pip install playwright; never `playwright install`)",
                allow_module_level=True)
if not CHROMIUM.is_file():
    pytest.skip(f"{CHROMIUM} not found (apt-get install chromium)", allow_module_level=True)


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.pop("SERD_DASHBOARD_TOKEN", None)
    return env


class Child:
    """A `python -m serd ...` subprocess whose stderr is collected on a thread (so it can never block)."""

    def __init__(self, args: list[str]) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "serd", *args], cwd=REPO_ROOT, env=child_env(),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line)

    def wait_for_line(self, pattern: str, timeout: float = START_TIMEOUT_S) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                match = re.search(pattern, line)
                if match:
                    return match
            if self.process.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r}; stderr:\n{self.output}")

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=5)
        return self.process.returncode


@pytest.fixture(scope="module")
def ipc_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ipc")


@pytest.fixture(scope="module")
def test_publisher() -> Iterator[tuple[zmq.Socket, str]]:
    context = zmq.Context()
    socket = context.socket(zmq.PUB)
    socket.setsockopt(zmq.LINGER, 0)
    socket.bind("tcp://127.0.0.1:*")
    yield socket, socket.getsockopt_string(zmq.LAST_ENDPOINT)
    socket.close()
    context.term()


def synthetic_room(device: str, seq: int, phase: float) -> EmotionMessage:
    """A calm, slowly drifting room (for the overview and the screenshots); every 12th-15th window is silence."""
    now = time.time()
    speech = seq % 15 < 12
    weights = [1.2 + math.sin(seq / 9 + phase + k * 1.1) for k in range(len(LABELS))]
    total = sum(weights)
    probs = {label: w / total for label, w in zip(LABELS, weights)} if speech else None
    top = max(probs, key=probs.get) if probs else None
    return EmotionMessage(device=device, seq=seq, time=now, captured_at=now, start_s=seq * 0.5, end_s=seq * 0.5 + 2,
                          speech=speech, level_dbfs=-32.0 if speech else -62.0, probs=probs, smoothed=probs,
                          label=top, confidence=probs[top] if probs else None, model="test-model")


@pytest.fixture(scope="module")
def background_rooms(ipc_dir: Path) -> Iterator[str]:
    """Two more rooms publishing every 0.5 s for the whole module, from a thread that owns its own socket."""
    endpoint = f"ipc://{ipc_dir / 'rooms.ipc'}"
    stop = threading.Event()
    bound = threading.Event()

    def publish() -> None:
        context = zmq.Context()
        socket = context.socket(zmq.PUB)
        socket.setsockopt(zmq.LINGER, 0)
        socket.bind(endpoint)
        bound.set()
        rooms = {"room-2.14": 0.0, "music-room": 2.0}
        seq = 0
        while not stop.wait(0.5):
            for device, phase in rooms.items():
                if seq % 10 == 0:
                    socket.send_multipart(encode(StatusMessage(
                        device=device, seq=seq // 10, time=time.time(), state="running", uptime_s=seq * 0.5,
                        source="mic", model="test-model", windows=seq, published=seq, cpu_percent=11.5, rss_mb=61.0)))
                socket.send_multipart(encode(synthetic_room(device, seq, phase)))
            seq += 1
        socket.close()
        context.term()

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    bound.wait(10)
    yield endpoint
    stop.set()
    thread.join(10)


@pytest.fixture(scope="module")
def dashboard(ipc_dir: Path, test_publisher, background_rooms: str, tiny_model_int8: Path) -> Iterator[tuple[str, str]]:
    """`serd dashboard` subscribed to the daemon's ipc:// endpoint and the test publishers; (url, daemon endpoint)."""
    daemon_endpoint = f"ipc://{ipc_dir / 'serd.ipc'}"
    child = Child(["dashboard", "--connect", daemon_endpoint, "--connect", test_publisher[1],
                   "--connect", background_rooms,
                   "--listen", "127.0.0.1:0", "--stale-after", str(STALE_AFTER_S), "--history", "60",
                   "--model", str(tiny_model_int8)])
    url = child.wait_for_line(r"serving on (http://\S+/)").group(1)
    yield url, daemon_endpoint
    assert child.stop() == 0, child.output
    assert "Traceback" not in child.output


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def dialogs() -> list[str]:
    return []


@pytest.fixture
def page(browser, dashboard, dialogs: list[str]):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    def on_console(message) -> None:
        # Chromium logs every non-2xx fetch; the refused upload below is one on purpose.
        if message.type == "error" and "Failed to load resource" not in message.text:
            problems.append(f"console {message.type}: {message.text}")

    page.on("console", on_console)
    page.goto(dashboard[0])
    yield page
    context.close()
    assert problems == [], problems


def tile(name: str) -> str:
    """A selector for the tile of `name` (an attribute value, so any characters work)."""
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'.tile[data-device="{escaped}"]'


def bar_values(page, name: str) -> list[str]:
    return page.eval_on_selector_all(f"{tile(name)} .bar-row", "rows => rows.map(r => r.dataset.value)")


def points(page, name: str) -> int:
    return int(page.get_attribute(f"{tile(name)} canvas", "data-points") or 0)


def wait_until(page, predicate, what: str, timeout_s: float = WAIT_MS / 1000) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        page.wait_for_timeout(100)


def screenshot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(path, ARTIFACTS / f"{name}.png")
    return path


def test_live_daemon_shows_up_updates_and_goes_stale(page, dashboard, tiny_model_int8: Path, tmp_path: Path):
    _, endpoint = dashboard
    daemon = Child(["run", "--source", str(DEMO), "--bind", endpoint, "--model", str(tiny_model_int8),
                    "--device-id", "room-1"])
    try:
        page.wait_for_selector(tile("room-1"), timeout=WAIT_MS)
        page.wait_for_selector(f'{tile("room-1")}[data-state="running"]', timeout=WAIT_MS)
        assert page.text_content(f"{tile('room-1')} .device-name") == "room-1"
        assert page.get_attribute("#connection", "data-state") == "live"
        # The timeline grows with every window (one per 0.5 s hop)...
        first = points(page, "room-1")
        wait_until(page, lambda: points(page, "room-1") >= first + 4, "the timeline to grow")
        # ...and the bars follow the speech in the recording.
        page.wait_for_selector(f'{tile("room-1")} .bar-row[data-value]:not([data-value="0.00000"])', timeout=WAIT_MS)
        before = bar_values(page, "room-1")
        assert len(before) == len(LABELS)
        wait_until(page, lambda: bar_values(page, "room-1") != before, "the bars to change")
        assert re.fullmatch(r"last heard \d+ s ago", page.text_content(f"{tile('room-1')} .heard"))
        screenshot(page, tmp_path, "dashboard-live")
    finally:
        code = daemon.stop()
    assert code == 0, daemon.output
    # The daemon's final status, then nothing: "stopping", and after the stale timeout "stale".
    page.wait_for_selector(f'{tile("room-1")}[data-state="stopping"]', timeout=WAIT_MS)
    assert page.text_content(f"{tile('room-1')} .badge-text") == "stopping"
    page.wait_for_selector(f'{tile("room-1")}[data-state="stale"]', timeout=WAIT_MS)
    assert page.text_content(f"{tile('room-1')} .badge-text") == "stale"


def publish_hostile_device(socket: zmq.Socket, seq: int) -> None:
    now = time.time()
    socket.send_multipart(encode(StatusMessage(device=HOSTILE_ROOM, seq=seq, time=now, state="running", uptime_s=seq,
                                               source="test", model=XSS_NAME, windows=seq, published=seq,
                                               detail=XSS_NAME)))
    probs = {label: 0.1 for label in LABELS if label != "sad"} | {"happy": 0.25, "neutral": 0.25, XSS_NAME: 0.1}
    socket.send_multipart(encode(EmotionMessage(
        device=HOSTILE_ROOM, seq=seq, time=now, captured_at=now, start_s=seq * 0.5, end_s=seq * 0.5 + 2,
        speech=seq % 4 != 3, level_dbfs=-30.0, probs=probs if seq % 4 != 3 else None,
        smoothed=probs if seq % 4 != 3 else None, label="happy" if seq % 4 != 3 else None,
        confidence=0.25 if seq % 4 != 3 else None, model=XSS_NAME)))


def test_hostile_text_renders_as_text(page, dialogs: list[str], test_publisher, tmp_path: Path):
    socket, _ = test_publisher
    seq = 0
    deadline = time.monotonic() + WAIT_MS / 1000
    while page.query_selector(tile(HOSTILE_ROOM)) is None:  # the subscription needs a moment to reach the publisher
        assert time.monotonic() < deadline, "the hostile device never appeared"
        publish_hostile_device(socket, seq)
        seq += 1
        page.wait_for_timeout(200)
    for _ in range(8):
        publish_hostile_device(socket, seq)
        seq += 1
    page.wait_for_selector(f"{tile(HOSTILE_ROOM)} canvas[data-points]", timeout=WAIT_MS)
    assert page.text_content(f"{tile(HOSTILE_ROOM)} .device-name") == HOSTILE_ROOM
    assert page.text_content(f"{tile(HOSTILE_ROOM)} .detail") == XSS_NAME
    assert XSS_NAME in page.text_content(f"{tile(HOSTILE_ROOM)} .bars")
    assert XSS_NAME in page.text_content(tile(HOSTILE_ROOM))  # the model id in the meta line
    assert page.eval_on_selector_all("main img", "images => images.length") == 0
    page.wait_for_timeout(500)  # an onerror handler would have fired by now
    assert dialogs == []
    page.set_viewport_size({"width": 390, "height": 844})
    screenshot(page, tmp_path, "dashboard-phone")


def test_arousal_gauge_shows_the_rooms_smoothed_arousal(page, test_publisher, tmp_path: Path):
    """The calm <-> activated gauge: hidden for a daemon that sends no arousal, at the reading for one that does."""
    socket, _ = test_publisher
    probs = {"neutral": 0.05, "happy": 0.3, "sad": 0.05, "angry": 0.4, "fearful": 0.1, "disgust": 0.1}

    def publish(device: str, seq: int, arousal: float | None) -> None:
        now = time.time()
        socket.send_multipart(encode(EmotionMessage(
            device=device, seq=seq, time=now, captured_at=now, start_s=seq * 0.5, end_s=seq * 0.5 + 2, speech=True,
            level_dbfs=-30.0, probs=probs, smoothed=probs, label="angry", confidence=0.4, model="m",
            arousal=arousal, smoothed_arousal=arousal)))

    for device, arousal in (("gauge-room", 0.8), ("old-daemon", None)):
        seq, deadline = 0, time.monotonic() + WAIT_MS / 1000
        while page.query_selector(f'{tile(device)}[data-label="angry"]') is None:
            assert time.monotonic() < deadline, f"{device} never appeared"
            publish(device, seq, arousal)
            seq += 1
            page.wait_for_timeout(200)
    gauge = f"{tile('gauge-room')} .arousal"
    page.wait_for_selector(f'{gauge}[data-value="0.80000"]', timeout=WAIT_MS)
    assert page.text_content(f"{gauge} .arousal-value") == "80 % activated"
    track = page.eval_on_selector(f"{gauge} .arousal-track", "t => t.getBoundingClientRect().toJSON()")
    marker = page.eval_on_selector(f"{gauge} .arousal-marker", "m => m.getBoundingClientRect().toJSON()")
    at = (marker["x"] + marker["width"] / 2 - track["x"]) / track["width"]
    assert abs(at - 0.8) < 0.03, at  # drawn where the reading is
    assert page.is_hidden(f"{tile('old-daemon')} .arousal")
    page.locator(tile("gauge-room")).screenshot(path=str(tmp_path / "arousal.png"))
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(tmp_path / "arousal.png", ARTIFACTS / "dashboard-arousal.png")


def test_upload_shows_a_result(page, tmp_path: Path):
    page.set_input_files("#upload-file", str(CLIP))
    page.click("#upload-button")
    page.wait_for_selector("#upload-result:not([hidden])", timeout=WAIT_MS)
    label = page.get_attribute("#upload-result", "data-label")
    assert label in LABELS
    assert int(page.get_attribute("#upload-result", "data-windows")) > 0
    assert page.text_content("#upload-result .result-file") == CLIP.name
    assert int(page.get_attribute("#upload-result canvas", "data-points")) > 0
    assert len(page.query_selector_all("#upload-result .bar-row")) == len(LABELS)
    # A file that is not audio: a one-line message, no result.
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio\n")
    page.set_input_files("#upload-file", str(bad))
    page.click("#upload-button")
    page.wait_for_selector('#upload-status[data-kind="error"]', timeout=WAIT_MS)
    assert "not a readable audio file" in page.text_content("#upload-status")
    assert page.is_hidden("#upload-result")
    # The full picture for a person to look at: live tiles, the hostile name as text, an upload result.
    page.set_input_files("#upload-file", str(CLIP))
    page.click("#upload-button")
    page.wait_for_selector("#upload-result:not([hidden])", timeout=WAIT_MS)
    page.click("#howto summary")
    screenshot(page, tmp_path, "dashboard")
