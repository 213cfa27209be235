"""`serd dashboard`: the server on real sockets, fed by a real ZeroMQ publisher.

The dashboard runs in-process (its own threads, a free port) or as a
`python -m serd dashboard` subprocess; messages are built with
`serd.messages` and published on a real PUB socket over loopback TCP.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq
from hostile_messages import HOSTILE, OVERSIZE

from conftest import RAVDESS_FIXTURES
from serd.analysis import GateSettings, analyze_file, result_to_json
from serd.dashboard.server import Dashboard, DashboardSettings, parse_listen
from serd.dashboard.state import MAX_DEVICES, DashboardState, Subscription
from serd.messages import EmotionMessage, StatusMessage, encode
from serd.model import Model

REPO_ROOT = Path(__file__).resolve().parents[1]
CLIP = RAVDESS_FIXTURES / "Actor_01/03-01-01-01-01-01-01.flac"
LABELS = ("neutral", "happy", "sad", "angry", "fearful", "disgust")
WAIT_S = 20.0
"""Deadline for something that should happen within a fraction of a second (the machine may be busy)."""
TOKEN = "test-token_0123456789"


def wait_for(condition: Callable[[], object], what: str, timeout: float = WAIT_S, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(step)


def emotion(device: str, seq: int, speech: bool = True, top: str = "happy") -> EmotionMessage:
    probs = {label: (0.5 if label == top else 0.1) for label in LABELS} if speech else None
    return EmotionMessage(
        device=device, seq=seq, time=time.time(), captured_at=time.time(), start_s=seq * 0.5, end_s=seq * 0.5 + 2.0,
        speech=speech, level_dbfs=-30.0 if speech else -70.0, probs=probs, smoothed=probs,
        label=top if speech else None, confidence=0.5 if speech else None, model="test-model",
    )


def status(device: str, seq: int, state: str = "running", detail: str = "") -> StatusMessage:
    return StatusMessage(device=device, seq=seq, time=time.time(), state=state, uptime_s=seq * 5.0, source="test",
                         model="test-model", windows=seq * 10, published=seq * 10, detail=detail)


class Publisher:
    """A real PUB socket on loopback TCP, as a serd daemon would have."""

    def __init__(self) -> None:
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.PUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind("tcp://127.0.0.1:*")
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.status_seq: dict[str, int] = {}

    def send(self, message) -> None:
        self.socket.send_multipart(encode(message))

    def send_raw(self, frames: list[bytes]) -> None:
        self.socket.send_multipart(frames)

    def announce(self, base_url: str, device: str, state: str = "running", headers: dict | None = None) -> dict:
        """Send status until the dashboard has it: a new subscription takes a moment to reach the publisher."""

        def seen():
            seq = self.status_seq.get(device, 0)
            self.status_seq[device] = seq + 1
            self.send(status(device, seq, state))
            return find_device(get_json(base_url, "/api/state", headers)[1], device)

        return wait_for(seen, f"the dashboard to hear {device}")

    def close(self) -> None:
        self.socket.close()
        self.context.term()


def request(base_url: str, method: str, path: str, body: bytes | None = None,
            headers: dict | None = None) -> tuple[int, dict[str, str], bytes]:
    url = urllib.parse.urlsplit(base_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def get_json(base_url: str, path: str, headers: dict | None = None) -> tuple[int, dict]:
    code, _, body = request(base_url, "GET", path, headers=headers)
    return code, json.loads(body)


def upload(base_url: str, data: bytes, filename: str, headers: dict | None = None) -> tuple[int, dict]:
    code, _, body = request(base_url, "POST", "/api/analyze", data,
                            {"X-Filename": urllib.parse.quote(filename), "Content-Type": "application/octet-stream",
                             **(headers or {})})
    return code, json.loads(body)


def find_device(snapshot: dict, name: str) -> dict | None:
    return next((d for d in snapshot.get("devices", []) if d["device"] == name), None)


def read_sse_event(stream) -> tuple[str, dict]:
    """The next `event:`/`data:` block of a Server-Sent Events stream (comments and `retry:` skipped)."""
    event, data = None, []
    while True:
        line = stream.readline()
        if not line:
            raise AssertionError("event stream ended")
        line = line.decode("utf-8").rstrip("\n")
        if line == "":
            if data:
                return event or "message", json.loads("\n".join(data))
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)


def open_events(base_url: str, headers: dict | None = None):
    url = urllib.parse.urlsplit(base_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=WAIT_S)
    conn.request("GET", "/events", headers=headers or {})
    response = conn.getresponse()
    return conn, response


@pytest.fixture
def publisher() -> Iterator[Publisher]:
    pub = Publisher()
    yield pub
    pub.close()


@pytest.fixture
def start_dashboard(publisher: Publisher, tiny_model_int8: Path):
    """Start an in-process dashboard on a free port; stopped at teardown."""
    started: list[Dashboard] = []

    def start(**overrides) -> Dashboard:
        settings = DashboardSettings(
            **{"connect": (publisher.endpoint,), "host": "127.0.0.1", "port": 0, "model": str(tiny_model_int8),
               **overrides}
        )
        dashboard = Dashboard(settings)
        dashboard.start()
        started.append(dashboard)
        return dashboard

    yield start
    for dashboard in started:
        dashboard.stop()


# -- live state -----------------------------------------------------------------------------------


def test_api_state_reflects_published_messages(start_dashboard, publisher: Publisher):
    dashboard = start_dashboard()
    base = dashboard.url
    publisher.announce(base, "room-1")
    for seq in range(3):
        publisher.send(emotion("room-1", seq, top="angry"))
    publisher.send(emotion("room-1", 5, speech=False))  # seq 3 and 4 never arrive

    def has_four_points():
        device = find_device(get_json(base, "/api/state")[1], "room-1")
        return device if device["n_points"] == 4 else None

    device = wait_for(has_four_points, "four timeline points")
    assert device["state"] == "running"
    assert device["stale"] is False
    assert device["labels"] == list(LABELS)
    assert device["lost"] == 2
    assert device["emotion"]["seq"] == 5 and device["emotion"]["speech"] is False
    assert device["status"]["state"] == "running" and device["status"]["model"] == "test-model"
    points = device["points"]
    assert [p["speech"] for p in points] == [True, True, True, False]
    assert points[0]["smoothed"]["angry"] == pytest.approx(0.5)
    assert points[-1]["smoothed"] is None and points[-1]["level_dbfs"] == -70.0
    assert all(set(p) == {"t", "speech", "level_dbfs", "smoothed", "smoothed_arousal"} for p in points)
    assert [p["t"] for p in points] == sorted(p["t"] for p in points)


def test_events_stream_sends_snapshot_then_updates(start_dashboard, publisher: Publisher):
    dashboard = start_dashboard()
    base = dashboard.url
    publisher.announce(base, "room-1")
    conn, response = open_events(base)
    try:
        assert response.status == 200
        assert response.getheader("Content-Type").startswith("text/event-stream")
        event, snapshot = read_sse_event(response)
        assert event == "snapshot"
        assert find_device(snapshot, "room-1")["state"] == "running"
        publisher.send(emotion("room-1", 0, top="sad"))
        event, update = read_sse_event(response)
        while update["point"] is None:  # a heartbeat may come first
            event, update = read_sse_event(response)
        assert event == "update"
        assert update["device"]["device"] == "room-1"
        assert update["device"]["emotion"]["label"] == "sad"
        assert update["point"]["smoothed"]["sad"] == pytest.approx(0.5)
        publisher.send(status("room-1", 99, "source_lost", "no audio for 5.0 s"))
        event, update = read_sse_event(response)
        while update["device"]["state"] != "source_lost":
            event, update = read_sse_event(response)
        assert update["device"]["status"]["detail"] == "no audio for 5.0 s"
        assert update["point"] is None
    finally:
        conn.close()


def test_a_device_without_messages_turns_stale_and_back(start_dashboard, publisher: Publisher):
    dashboard = start_dashboard(stale_after_s=0.5)
    base = dashboard.url
    publisher.announce(base, "room-1", state="stopping")
    device = wait_for(lambda: find_device(get_json(base, "/api/state")[1], "room-1")["stale"] or None,
                      "room-1 to turn stale")
    snapshot = get_json(base, "/api/state")[1]
    device = find_device(snapshot, "room-1")
    assert device["state"] == "stale"
    assert device["status"]["state"] == "stopping"  # the last word from the daemon is kept
    assert device["age_s"] > 0.5
    publisher.send(status("room-1", 1000, "running"))
    wait_for(lambda: find_device(get_json(base, "/api/state")[1], "room-1")["state"] == "running",
             "room-1 to be running again")


def test_timeline_keeps_only_the_history_window(start_dashboard, publisher: Publisher):
    dashboard = start_dashboard(history_s=1.0, stale_after_s=60)
    base = dashboard.url
    publisher.announce(base, "room-1")
    publisher.send(emotion("room-1", 0))
    wait_for(lambda: find_device(get_json(base, "/api/state")[1], "room-1")["emotion"], "the emotion message")
    wait_for(lambda: find_device(get_json(base, "/api/state")[1], "room-1")["n_points"] == 0,
             "the point to age out of the history")


def test_malformed_messages_are_counted_and_skipped(start_dashboard, publisher: Publisher):
    dashboard = start_dashboard()
    base = dashboard.url
    publisher.announce(base, "room-1")
    publisher.send_raw([b"serd.emotion.room-1", b"{not json"])
    publisher.send_raw([b"serd.emotion.room-1", b'{"schema": "serd.emotion/9"}'])
    publisher.send_raw([b"serd.status.other", encode(status("room-1", 7))[1]])  # topic/device mismatch
    publisher.send(emotion("room-1", 0))
    snapshot = wait_for(lambda: (s := get_json(base, "/api/state")[1])["malformed"] == 3 and
                        find_device(s, "room-1")["n_points"] == 1 and s, "malformed count and the good message")
    assert [d["device"] for d in snapshot["devices"]] == ["room-1"]


def test_hostile_messages_are_counted_and_the_view_stays_live(start_dashboard, publisher: Publisher):
    """Issue 13, findings 1, 2 and 4: every mistyped, non-finite or oversized message, then valid ones."""
    hostile = Publisher()
    try:
        dashboard = start_dashboard(connect=(publisher.endpoint, hostile.endpoint))
        base = dashboard.url
        publisher.announce(base, "room-1")
        hostile.announce(base, "r")
        counted = [name for name in HOSTILE if name not in OVERSIZE]
        for name in counted:
            hostile.send_raw(HOSTILE[name])
        publisher.send(emotion("room-1", 0))
        snapshot = wait_for(lambda: (s := get_json(base, "/api/state")[1])["malformed"] == len(counted) and
                            find_device(s, "room-1")["n_points"] == 1 and s, "every bad message counted, the good one shown")
        assert sorted(d["device"] for d in snapshot["devices"]) == ["r", "room-1"]
        # An oversized frame makes ZeroMQ drop that publisher before buffering it; the others are unaffected.
        for name in sorted(OVERSIZE):
            hostile.send_raw(HOSTILE[name])
        hostile.send_raw([b"serd.status.big", b"x" * (10 * 1024 * 1024)])
        for seq in range(1, 4):
            publisher.send(emotion("room-1", seq))
        wait_for(lambda: find_device(get_json(base, "/api/state")[1], "room-1")["n_points"] == 4,
                 "messages after the big frames")
        assert dashboard.reader.is_alive()
        body = request(base, "GET", "/api/state")[2]
        strict = json.loads(body, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
        assert strict["malformed"] == len(counted)
    finally:
        hostile.close()


def test_a_forgotten_device_is_removed_from_open_pages(start_dashboard):
    """Finding 4: 2000 devices left 2003 tiles; the page is now told when the server forgets one."""
    dashboard = start_dashboard()
    dashboard.state.apply(status("first", 0), received_at=time.time() - 60)
    for i in range(MAX_DEVICES - 1):
        dashboard.state.apply(status(f"d{i:03d}", 0))
    conn, response = open_events(dashboard.url)
    try:
        assert len(read_sse_event(response)[1]["devices"]) == MAX_DEVICES
        dashboard.state.apply(status("one-too-many", 0))
        events = [read_sse_event(response) for _ in range(2)]
        assert ("forget", "first") in [(event, data["device"]) for event, data in events]
        assert find_device(dashboard.state.snapshot(), "first") is None
    finally:
        conn.close()
    page = (REPO_ROOT / "serd/dashboard/static/app.js").read_text()
    assert 'addEventListener("forget"' in page


def test_the_last_guard_answers_instead_of_dropping_the_connection(start_dashboard):
    dashboard = start_dashboard()
    dashboard.state.info["broken"] = float("nan")  # cannot come from a message any more; the guard stays
    code, _, body = request(dashboard.url, "GET", "/api/state")
    assert code == 500 and json.loads(body)["error"]


def test_a_client_that_does_not_read_never_stalls_the_subscriber(start_dashboard, publisher: Publisher):
    dashboard = start_dashboard()
    base = dashboard.url
    publisher.announce(base, "room-1")
    # An event stream whose reader never reads: its socket buffers fill, its queue drops the oldest.
    stalled = socket.create_connection(("127.0.0.1", urllib.parse.urlsplit(base).port))
    stalled.sendall(b"GET /events HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
    try:
        wait_for(lambda: dashboard.state.client_count == 1, "the stalled client to subscribe")
        batch, batches = 100, 40
        for first in range(0, batch * batches, batch):
            for seq in range(first, first + batch):
                publisher.send(emotion("room-1", seq))
            # Paced by what the dashboard has taken in, so ZeroMQ's high-water marks never drop anything.
            wait_for(lambda: (find_device(dashboard.state.snapshot(), "room-1")["emotion"] or {}).get("seq")
                     == first + batch - 1,
                     f"message {first + batch - 1} to be processed despite the stalled client")
        assert dashboard.state.dropped_events > 0, "the stalled client's queue should have overflowed"
        assert find_device(get_json(base, "/api/state")[1], "room-1")["lost"] == 0
    finally:
        stalled.close()


def test_subscription_drops_oldest_and_resyncs_with_a_snapshot():
    state = DashboardState(stale_after_s=15, history_s=300)
    subscription = state.subscribe(maxlen=4)
    assert state.next_event(subscription, 0.1)[0] == "snapshot"
    for seq in range(10):
        state.apply(emotion("room-1", seq))
    assert subscription.dropped == 6
    event, data = state.next_event(subscription, 0.1)
    assert event == "snapshot"  # the holes are replaced by the whole picture
    assert find_device(data, "room-1")["n_points"] == 10
    assert state.next_event(subscription, 0.05) is None
    state.unsubscribe(subscription)
    assert state.client_count == 0


def test_subscription_get_returns_after_close():
    subscription = Subscription(maxlen=2)
    subscription.close()
    assert subscription.get(timeout=5.0) is None


def test_subscribes_with_curve_keys(tmp_path: Path, tiny_model_int8: Path):
    """A CURVE-encrypted publisher (serd's own, with `serd keys`): only the key holder's dashboard hears it."""
    from serd.config import CurveSettings, PublisherSettings
    from serd.keys import make_keys
    from serd.publisher import Publisher as SerdPublisher

    keys = make_keys(tmp_path / "keys")
    curve = CurveSettings(enabled=True, server_secret_key=str(keys["server_secret"]),
                          authorized_clients=str(keys["authorized"]))
    serd_publisher = SerdPublisher(PublisherSettings(bind="tcp://127.0.0.1:*", curve=curve, linger_ms=0), "room-1")
    dashboard = Dashboard(DashboardSettings(connect=(serd_publisher.endpoint,), port=0, model=str(tiny_model_int8),
                                            server_key=keys["server_public"], client_key=keys["client_secret"]))
    dashboard.start()
    try:
        seq = 0

        def heard():
            nonlocal seq
            serd_publisher.send(status("secure-room", seq))
            seq += 1
            return find_device(get_json(dashboard.url, "/api/state")[1], "secure-room")

        assert wait_for(heard, "the encrypted status")["state"] == "running"
    finally:
        dashboard.stop()
        serd_publisher.close()


# -- the page and its protection ------------------------------------------------------------------


def test_page_assets_and_security_headers(start_dashboard):
    base = start_dashboard().url
    code, headers, body = request(base, "GET", "/")
    assert code == 200
    assert headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    html = body.decode("utf-8")
    assert re.search(r"<script[^>]*>\s*[^<\s]", html) is None, "no inline script (the CSP forbids it anyway)"
    assert "http://" not in html and "https://" not in html, "no asset from elsewhere"
    for path, kind in (("/app.js", "text/javascript"), ("/style.css", "text/css")):
        code, headers, body = request(base, "GET", path)
        assert code == 200 and headers["content-type"].startswith(kind)
        assert headers["x-content-type-options"] == "nosniff"
    code, _, script = request(base, "GET", "/app.js")
    assert b"innerHTML" not in script and b"insertAdjacentHTML" not in script and b"document.write" not in script
    code, headers, body = request(base, "GET", "/../serd/dashboard/server.py")
    assert code == 404 and json.loads(body)["error"]


def test_loopback_dashboard_refuses_foreign_host_names(start_dashboard):
    base = start_dashboard().url
    assert request(base, "GET", "/api/state", headers={"Host": "attacker.example:8080"})[0] == 403
    assert request(base, "GET", "/api/state", headers={"Host": "localhost:8080"})[0] == 200


def test_token_is_required_when_set(start_dashboard, publisher: Publisher):
    base = start_dashboard(token=TOKEN).url
    code, headers, body = request(base, "GET", "/api/state")
    assert code == 401
    assert "bearer" in headers["www-authenticate"].lower()
    assert json.loads(body)["error"]
    assert request(base, "GET", "/", headers={"Authorization": "Bearer wrong"})[0] == 401
    assert request(base, "GET", "/events")[0] == 401
    assert request(base, "POST", "/api/analyze", b"x", {"X-Filename": "a.wav"})[0] == 401
    assert request(base, "GET", "/api/state", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200

    # First load with ?token=: a cookie the page's scripts cannot read, and the token leaves the address bar.
    code, headers, _ = request(base, "GET", f"/?token={TOKEN}")
    assert code == 303
    assert headers["location"] == "/"
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert request(base, "GET", "/?token=wrong")[0] == 401
    jar = cookie.split(";", 1)[0]
    assert request(base, "GET", "/api/state", headers={"Cookie": jar})[0] == 200
    assert request(base, "GET", "/api/state", headers={"Cookie": "serd_dashboard_token=wrong"})[0] == 401


def test_exposed_without_token_is_refused(publisher: Publisher):
    from serd.dashboard.server import DashboardError

    with pytest.raises(DashboardError, match="--token"):
        Dashboard(DashboardSettings(connect=(publisher.endpoint,), host="0.0.0.0", port=0))


def test_parse_listen():
    assert parse_listen("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_listen("[::1]:0") == ("::1", 0)
    assert parse_listen("9000") == ("127.0.0.1", 9000)
    for bad in ("localhost", "host:port", ":80", "1.2.3.4:70000"):
        with pytest.raises(ValueError, match="--listen"):
            parse_listen(bad)


# -- the upload panel -----------------------------------------------------------------------------


@pytest.fixture
def clip() -> Path:
    return CLIP


def test_upload_returns_the_same_result_as_serd_analyze(start_dashboard, clip: Path, tiny_model_int8: Path):
    base = start_dashboard().url
    code, result = upload(base, clip.read_bytes(), clip.name)
    assert code == 200, result
    defaults = DashboardSettings()  # the upload panel's gate: level, then the voice detector, as `serd analyze`
    gate = GateSettings(defaults.gate_dbfs, 1, defaults.vad, defaults.vad_threshold)
    expected = result_to_json(analyze_file(clip, Model(tiny_model_int8), 0.5, gate), clip.name)
    assert result["file"] == clip.name
    assert result["label"] == expected["label"] and result["label"] in LABELS
    assert result["probs"] == pytest.approx(expected["probs"], abs=1e-4)
    assert len(result["windows"]) == len(expected["windows"]) > 0
    assert result["speech_windows"] == sum(w["speech"] for w in expected["windows"])
    assert result["labels"] == list(LABELS)
    assert sum(result["probs"].values()) == pytest.approx(1.0, abs=1e-3)
    assert result["duration_s"] == pytest.approx(3.3, abs=0.1)


def test_upload_rejects_what_is_not_audio(start_dashboard):
    base = start_dashboard().url
    text = b"this is a text file, not a recording\n" * 20
    code, body = upload(base, text, "notes.txt")
    assert code == 400 and ".txt" in body["error"] and "\n" not in body["error"]
    code, body = upload(base, text, "disguised.wav")
    assert code == 400 and "not a readable audio file" in body["error"] and "\n" not in body["error"]
    assert "disguised.wav" in body["error"]
    code, _, raw = request(base, "POST", "/api/analyze", text, {"Content-Type": "application/octet-stream"})
    assert code == 400 and "X-Filename" in json.loads(raw)["error"]


def test_upload_over_the_limit_is_413(start_dashboard, clip: Path):
    base = start_dashboard().url  # the default limit, 20 MB
    code, body = upload(base, bytes(20 * 1024 * 1024 + 1), "long.wav")
    assert code == 413 and "the limit is 20 MB" in body["error"]
    small = start_dashboard(max_upload_bytes=16 * 1024).url
    data = clip.read_bytes()
    assert len(data) > 16 * 1024
    code, body = upload(small, data, clip.name)
    assert code == 413 and "limit" in body["error"]


def test_upload_of_a_too_long_recording_is_413(start_dashboard):
    import io

    import numpy as np
    import soundfile

    from serd.dashboard.server import MAX_UPLOAD_DURATION_S

    rate = 8000
    wav = io.BytesIO()
    soundfile.write(wav, np.zeros(int((MAX_UPLOAD_DURATION_S + 1) * rate), dtype=np.int16), rate, format="WAV")
    code, body = upload(start_dashboard().url, wav.getvalue(), "lecture.wav")
    assert code == 413 and "too long" in body["error"] and "lecture.wav" in body["error"]


def test_upload_without_a_model_says_so(start_dashboard, clip: Path):
    dashboard = start_dashboard(model="no-such-model")
    snapshot = get_json(dashboard.url, "/api/state")[1]
    assert snapshot["info"]["model_available"] is False
    code, body = upload(dashboard.url, clip.read_bytes(), clip.name)
    assert code == 503 and "model not available" in body["error"] and "--model" in body["error"]


def test_uploads_never_touch_the_disk(start_dashboard, clip: Path, tmp_path: Path, monkeypatch):
    scratch, workdir = tmp_path / "tmp", tmp_path / "cwd"
    scratch.mkdir()
    workdir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.chdir(workdir)
    base = start_dashboard().url
    assert upload(base, clip.read_bytes(), clip.name)[0] == 200
    assert upload(base, b"RIFF\x00\x00junk" * 100, "broken.wav")[0] == 400
    assert list(scratch.iterdir()) == [] and list(workdir.iterdir()) == []


# -- the command ----------------------------------------------------------------------------------


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.pop("SERD_DASHBOARD_TOKEN", None)
    env.update(extra)
    return env


def start_command(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """`python -m serd dashboard ARGS`, and the URL it reports once it serves."""
    process = subprocess.Popen([sys.executable, "-m", "serd", "dashboard", *args], cwd=REPO_ROOT, env=env,
                               stderr=subprocess.PIPE, text=True)
    lines = []
    for line in process.stderr:
        lines.append(line)
        match = re.search(r"serving on (http://\S+/)", line)
        if match:
            return process, match.group(1)
    process.wait(timeout=WAIT_S)
    raise AssertionError("dashboard did not start:\n" + "".join(lines))


def test_command_serves_and_stops_cleanly_on_sigterm(publisher: Publisher):
    process, base = start_command(["--connect", publisher.endpoint, "--listen", "127.0.0.1:0", "--model", "none"],
                                  subprocess_env(SERD_DASHBOARD_TOKEN=TOKEN))
    try:
        assert request(base, "GET", "/api/state")[0] == 401  # the token from the environment applies
        assert request(base, "GET", "/api/state", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200
        conn, response = open_events(base, {"Authorization": f"Bearer {TOKEN}"})  # an open stream must not hang shutdown
        assert read_sse_event(response)[0] == "snapshot"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=WAIT_S) == 0
        conn.close()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    rest = process.stderr.read()
    assert "Traceback" not in rest
    assert TOKEN not in rest


def test_command_refuses_a_network_address_without_token(publisher: Publisher):
    done = subprocess.run([sys.executable, "-m", "serd", "dashboard", "--connect", publisher.endpoint,
                           "--listen", "0.0.0.0:0"], cwd=REPO_ROOT, env=subprocess_env(), capture_output=True,
                          text=True, timeout=WAIT_S)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--token" in lines[0] and "--allow-insecure" in lines[0]


@pytest.mark.parametrize("flag", ["--history", "--stale-after", "--max-upload-mb"])
@pytest.mark.parametrize("value", ["inf", "nan", "0"])
def test_command_refuses_non_finite_flags_in_one_line(publisher: Publisher, flag: str, value: str):
    done = subprocess.run([sys.executable, "-m", "serd", "dashboard", "--connect", publisher.endpoint,
                           "--listen", "127.0.0.1:0", flag, value], cwd=REPO_ROOT, env=subprocess_env(),
                          capture_output=True, text=True, timeout=WAIT_S)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and flag in lines[0], done.stderr


def test_command_reports_a_busy_port_in_one_line(publisher: Publisher):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "serd", "dashboard", "--connect", publisher.endpoint,
                               "--listen", f"127.0.0.1:{port}"], cwd=REPO_ROOT, env=subprocess_env(),
                              capture_output=True, text=True, timeout=WAIT_S)
    assert done.returncode == 1
    errors = [line for line in done.stderr.strip().splitlines() if not line.startswith(("INFO", "WARNING"))]
    assert len(errors) == 1 and f"127.0.0.1:{port}" in errors[0] and "Traceback" not in done.stderr


def test_timeline_points_are_bounded_over_all_devices():
    """Finding 4: memory bounded by a total, not by a per-device count times any number of devices."""
    from serd.dashboard.state import MAX_TOTAL_POINTS

    state = DashboardState()
    devices = MAX_DEVICES
    per_device = MAX_TOTAL_POINTS // devices + 50
    for seq in range(per_device):
        for d in range(devices):
            state.apply(emotion(f"d{d:03d}", seq))
    counts = [d["n_points"] for d in state.snapshot()["devices"]]
    assert len(counts) == devices and sum(counts) == MAX_TOTAL_POINTS
    assert max(counts) - min(counts) <= 1, "the longest timelines give way first"


# -- the token policy (issue 13, finding 7) ---------------------------------------------------------


def test_a_short_token_is_refused():
    from serd.dashboard.server import DashboardError

    with pytest.raises(DashboardError, match="16-256 characters"):
        Dashboard(DashboardSettings(host="127.0.0.1", port=0, token="a"))


def bearer(token: str, **more: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **more}


def test_wrong_tokens_are_throttled_per_client_and_the_owner_still_gets_in(start_dashboard):
    """Issue 19, item 7: throttled, a client's wrong tokens get 429, but a right token or a valid cookie from the
    same address gets in (a guesser behind the same NAT or proxy must not lock the teacher out)."""
    from serd.dashboard.guard import MAX_BAD_TOKENS

    base = start_dashboard(token=TOKEN).url
    cookie = request(base, "GET", f"/?token={TOKEN}")[1]["set-cookie"].split(";", 1)[0]
    codes = [request(base, "GET", "/api/state", headers=bearer(f"guess{i:012d}"))[0] for i in range(MAX_BAD_TOKENS + 2)]
    assert codes[:MAX_BAD_TOKENS] == [401] * MAX_BAD_TOKENS and codes[MAX_BAD_TOKENS:] == [429, 429], codes
    assert request(base, "GET", "/api/state", headers=bearer(TOKEN))[0] == 200
    assert request(base, "GET", "/api/state", headers={"Cookie": cookie})[0] == 200
    assert request(base, "GET", f"/?token={TOKEN}")[0] == 303
    assert request(base, "GET", "/?token=guess-000000000099")[0] == 429
    assert request(base, "GET", "/api/state", headers=bearer("guess-000000000098"))[0] == 429
    # Another client address (all of 127/8 is loopback) is not affected.
    url = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60, source_address=("127.0.0.2", 0))
    try:
        conn.request("GET", "/api/state", headers=bearer("guess-000000000097"))
        assert conn.getresponse().status == 401
    finally:
        conn.close()


def test_a_stale_cookie_is_not_a_guess(start_dashboard):
    """An expired cookie, or one made with a token since changed, is what the owner's browser sends: 401, uncounted."""
    from serd.dashboard.guard import COOKIE_MAX_AGE_S, MAX_BAD_TOKENS, session_cookie

    base = start_dashboard(token=TOKEN).url
    expired = session_cookie(TOKEN, now=time.time() - COOKIE_MAX_AGE_S - 10)
    rotated = session_cookie("the-token-before-0123456789")
    for value in [expired, rotated] * MAX_BAD_TOKENS:
        code, _, body = request(base, "GET", "/api/state", headers={"Cookie": f"serd_dashboard_token={value}"})
        assert code == 401 and b"expired" in body, (code, body)
    assert request(base, "GET", "/api/state", headers=bearer("guess-000000000001"))[0] == 401  # not throttled


def test_behind_a_trusted_proxy_the_throttle_counts_the_address_it_forwards(start_dashboard):
    from serd.dashboard.guard import MAX_BAD_TOKENS

    proxied = start_dashboard(token=TOKEN, trusted_proxy="127.0.0.1").url
    for i in range(MAX_BAD_TOKENS):
        assert request(proxied, "GET", "/api/state", headers=bearer(f"guess{i:012d}", **{
            "X-Forwarded-For": "203.0.113.5"}))[0] == 401
    assert request(proxied, "GET", "/api/state", headers=bearer("guess-000000000099", **{
        "X-Forwarded-For": "203.0.113.5"}))[0] == 429
    # The entry the proxy appended counts, not what the client put before it.
    assert request(proxied, "GET", "/api/state", headers=bearer("guess-000000000098", **{
        "X-Forwarded-For": "198.51.100.7, 203.0.113.5"}))[0] == 429
    assert request(proxied, "GET", "/api/state", headers=bearer("guess-000000000097", **{
        "X-Forwarded-For": "203.0.113.5, 203.0.113.6"}))[0] == 401
    assert request(proxied, "GET", "/api/state", headers=bearer(TOKEN, **{"X-Forwarded-For": "203.0.113.5"}))[0] == 200
    # Without a trusted proxy, X-Forwarded-For is the client's word: ignored.
    direct = start_dashboard(token=TOKEN).url
    codes = [request(direct, "GET", "/api/state", headers=bearer(f"guess{i:012d}", **{
        "X-Forwarded-For": f"203.0.113.{i}"}))[0] for i in range(MAX_BAD_TOKENS + 1)]
    assert codes[-1] == 429, codes


def test_a_trusted_proxy_is_not_held_to_the_per_address_connection_cap(start_dashboard):
    """Every client behind the proxy shares its address: 16 open event streams must not be the limit for all."""
    from serd.dashboard.guard import MAX_PER_CLIENT

    base = start_dashboard(trusted_proxy="127.0.0.1").url
    streams = [open_events(base) for _ in range(MAX_PER_CLIENT + 4)]
    try:
        assert [response.status for _, response in streams] == [200] * (MAX_PER_CLIENT + 4)
        assert all(response.readline() for _, response in streams)  # each stream is served
    finally:
        for conn, _ in streams:
            conn.close()


def test_trusted_proxy_must_be_an_ip_address(publisher: Publisher):
    result = subprocess.run([sys.executable, "-m", "serd", "dashboard", "--connect", publisher.endpoint,
                             "--trusted-proxy", "proxy.example"], env=subprocess_env(), capture_output=True,
                            text=True, timeout=WAIT_S)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "serd dashboard: --trusted-proxy 'proxy.example': expected an IP address, e.g. 127.0.0.1"]


def test_the_cookie_proves_the_token_without_carrying_it_and_expires(start_dashboard):
    from serd.dashboard.guard import COOKIE_MAX_AGE_S, cookie_ok, session_cookie

    base = start_dashboard(token=TOKEN).url
    code, headers, _ = request(base, "GET", f"/?token={TOKEN}")
    cookie = headers["set-cookie"]
    assert code == 303 and TOKEN not in cookie and f"Max-Age={COOKIE_MAX_AGE_S}" in cookie
    assert request(base, "GET", "/api/state", headers={"Cookie": cookie.split(";", 1)[0]})[0] == 200
    old = session_cookie(TOKEN, now=time.time() - COOKIE_MAX_AGE_S - 10)
    assert not cookie_ok(TOKEN, old)
    assert request(base, "GET", "/api/state", headers={"Cookie": f"serd_dashboard_token={old}"})[0] == 401
    assert not cookie_ok("another-token-0123456789", session_cookie(TOKEN))


def test_command_reads_the_token_from_a_file_and_warns_about_a_command_line_token(publisher: Publisher, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    process, base = start_command(["--connect", publisher.endpoint, "--listen", "127.0.0.1:0", "--model", "none",
                                   "--token-file", str(token_file)], subprocess_env())
    try:
        assert request(base, "GET", "/api/state")[0] == 401
        assert request(base, "GET", "/api/state", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=WAIT_S)
    process, base = start_command(["--connect", publisher.endpoint, "--listen", "127.0.0.1:0", "--model", "none",
                                   "--token", TOKEN], subprocess_env())
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=WAIT_S)
    assert "visible to every user" in process.stderr.read()
