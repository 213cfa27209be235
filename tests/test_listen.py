"""`serd listen`: against a running daemon, and against a PUB socket of the test's own.

The test's own publisher sends real `serd.messages` frames (and some that are not), so the
subscriber is tested on exactly what reaches it, including malformed input and a live TTY view.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import time

import pytest
import zmq

from helpers_daemon import (
    DEMO_FLAC,
    DaemonProcess,
    assert_no_traceback,
    emotion_count_at_least,
    free_tcp_port,
    serd_cmd,
    serd_env,
    short_tmpdir,
    stopped,
    Subscriber,
)
from hostile_messages import HOSTILE, OVERSIZE
from serd.messages import EmotionMessage, StatusMessage, encode

DEVICE = "test-dev"
LABELS = ("neutral", "happy", "sad", "angry", "fearful", "disgust")
TIMEOUT_S = 60.0


@pytest.fixture
def workdir():
    with short_tmpdir() as path:
        yield path


def emotion(seq: int, speech: bool = True, device: str = DEVICE) -> EmotionMessage:
    probs = dict(zip(LABELS, (0.05, 0.6, 0.1, 0.1, 0.1, 0.05))) if speech else None
    return EmotionMessage(device=device, seq=seq, time=time.time(), captured_at=time.time(), start_s=seq * 0.5,
                          end_s=seq * 0.5 + 2.0, speech=speech, level_dbfs=-20.0 if speech else -70.0, probs=probs,
                          smoothed=probs, label="happy" if speech else None, confidence=0.6 if speech else None,
                          model="tiny")


def status(seq: int, state: str = "running", device: str = DEVICE) -> StatusMessage:
    return StatusMessage(device=device, seq=seq, time=time.time(), state=state, uptime_s=1.0 + seq, source="file:x",
                         model="tiny", windows=seq, published=seq, cpu_percent=0.5, rss_mb=40.0)


class OwnPublisher:
    """A PUB socket in the test; `wait_for_listener` publishes heartbeats until the subscriber prints."""

    def __init__(self) -> None:
        self.endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
        self.socket = zmq.Context.instance().socket(zmq.PUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(self.endpoint)
        self.status_seq = 0

    def send(self, frames: list[bytes]) -> None:
        self.socket.send_multipart(frames)

    def heartbeat(self, device: str = DEVICE) -> None:
        self.send(encode(status(self.status_seq, device=device)))
        self.status_seq += 1

    def close(self) -> None:
        self.socket.close(linger=0)


def read_line(fd: int, buffer: bytearray, timeout_s: float) -> str | None:
    deadline = time.monotonic() + timeout_s
    while b"\n" not in buffer:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            return None
        buffer.extend(chunk)
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return line.decode("utf-8")


def start_listen(args: list, cwd) -> subprocess.Popen:
    return subprocess.Popen(serd_cmd("listen", *args), cwd=cwd, env=serd_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def wait_for_listener(pub: OwnPublisher, listen: subprocess.Popen, buffer: bytearray) -> str:
    """Heartbeats until the first line comes out: from then on the subscription is surely in place."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        pub.heartbeat()
        line = read_line(listen.stdout.fileno(), buffer, 0.1)
        if line is not None:
            return line
        assert listen.poll() is None, listen.stderr.read().decode()
    raise AssertionError("serd listen printed nothing")


def finish(listen: subprocess.Popen) -> tuple[int, str, str]:
    try:
        out, err = listen.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        listen.kill()
        out, err = listen.communicate(timeout=10)
        raise AssertionError(f"serd listen did not exit: {err.decode()}") from None
    return listen.returncode, out.decode(), err.decode()


# -- against the daemon --------------------------------------------------------------------------

@pytest.mark.slow
def test_listen_json_against_a_running_daemon(tiny_model_int8, workdir):
    endpoint = f"ipc://{workdir}/pub.ipc"
    count = 3
    with Subscriber(endpoint) as probe:
        with DaemonProcess(["run", "--source", DEMO_FLAC, "--bind", endpoint, "--model", tiny_model_int8,
                            "--device-id", DEVICE], cwd=workdir) as daemon:
            listen = start_listen(["--json", "--count", str(count), "--connect", endpoint], workdir)
            code, out, err = finish(listen)
            probe.collect_until(emotion_count_at_least(1), process=daemon)  # the daemon was really publishing
            daemon.send_signal(signal.SIGTERM)
            probe.collect_until(stopped, process=daemon)
            assert daemon.wait(timeout_s=30) == 0
    assert code == 0, err
    assert_no_traceback(err)
    objects = [json.loads(line) for line in out.splitlines()]
    emotions = [o for o in objects if o["schema"] == "serd.emotion/1"]
    assert len(emotions) == count
    assert all(o["schema"] in ("serd.emotion/1", "serd.status/1") and o["device"] == DEVICE for o in objects)
    assert objects[-1] is emotions[-1], "listen --count stops right after the last emotion message"
    seqs = [o["seq"] for o in emotions]
    assert seqs == list(range(seqs[0], seqs[0] + count))
    for o in emotions:
        assert o["end_s"] - o["start_s"] == pytest.approx(2.0)
        assert o["model"] == "tiny-emotion6-int8"


@pytest.mark.slow
def test_listen_summary_lines_when_not_a_terminal(tiny_model_int8, workdir):
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    with DaemonProcess(["run", "--source", DEMO_FLAC, "--bind", endpoint, "--model", tiny_model_int8,
                        "--device-id", DEVICE], cwd=workdir) as daemon:
        listen = start_listen(["--count", "2", "--connect", endpoint], workdir)
        code, out, err = finish(listen)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout_s=30) == 0
    assert code == 0, err
    emotion_line = re.compile(rf"^{DEVICE} +\d+\.\d\d- +\d+\.\d\ds (\w+ +\d+%|\(no speech\)) level -?\d+ dBFS$")
    status_line = re.compile(rf"^{DEVICE} status (starting|running|stopping) windows=\d+ published=\d+$")
    lines = out.splitlines()
    assert sum(bool(emotion_line.match(line)) for line in lines) == 2, out
    assert all(emotion_line.match(line) or status_line.match(line) for line in lines), out
    assert "\x1b[" not in out  # no terminal control codes into a pipe


# -- against the test's own publisher ----------------------------------------------------------------

def test_listen_skips_malformed_messages_and_carries_on(workdir):
    pub = OwnPublisher()
    try:
        listen = start_listen(["--json", "--count", "2", "--connect", pub.endpoint], workdir)
        buffer = bytearray()
        first = json.loads(wait_for_listener(pub, listen, buffer))
        assert first["schema"] == "serd.status/1"
        pub.send([b"serd.emotion.x", b"{not json"])
        pub.send([b"serd.emotion.x", json.dumps({"schema": "serd.emotion/99"}).encode()])
        pub.send([b"serd.only-one-frame"])
        pub.send(encode(emotion(0)))
        pub.send(encode(emotion(1, speech=False)))
        code, out, err = finish(listen)
    finally:
        pub.close()
    assert code == 0, err
    assert_no_traceback(err)
    assert "skipped 1 malformed message(s) (last: undecodable" in err, err
    assert "skipped 3 malformed message(s) in all" in err, err
    objects = [json.loads(line) for line in (buffer.decode() + out).splitlines()]
    emotions = [o for o in objects if o["schema"] == "serd.emotion/1"]
    assert [o["seq"] for o in emotions] == [0, 1]
    assert emotions[0]["label"] == "happy" and emotions[1]["probs"] is None


@pytest.mark.parametrize("mode", [["--json"], []], ids=["json", "summary-lines"])
def test_listen_survives_every_hostile_message(workdir, mode):
    """Issue 13: mistyped, non-finite, deep, huge and oversized messages; listen counts and carries on."""
    pub, hostile = OwnPublisher(), OwnPublisher()
    try:
        listen = start_listen([*mode, "--count", "2", "--connect", pub.endpoint, "--connect", hostile.endpoint],
                              workdir)
        buffer = bytearray()
        wait_for_listener(pub, listen, buffer)
        counted = [name for name in HOSTILE if name not in OVERSIZE]
        # The hostile socket needs its subscription too: a bad heartbeat until stderr shows it arrived.
        deadline = time.monotonic() + TIMEOUT_S
        err = bytearray()
        while b"skipped 1 malformed" not in err and time.monotonic() < deadline:
            hostile.send(HOSTILE["uptime-as-string"])
            if select.select([listen.stderr], [], [], 0.1)[0]:
                err.extend(os.read(listen.stderr.fileno(), 65536))
        assert b"skipped 1 malformed" in err, err
        for name in counted:
            hostile.send(HOSTILE[name])
        valid_but_odd = emotion(0)
        valid_but_odd.confidence = None  # typed correctly, yet nothing to show as a percentage
        hostile.send(encode(valid_but_odd))  # same connection: arrives after every bad one
        for name in sorted(OVERSIZE):  # ZeroMQ drops the hostile peer here
            hostile.send(HOSTILE[name])
        time.sleep(1.0)  # not a timing assertion: lets the big frames arrive before the last good one
        pub.send(encode(emotion(1, speech=False)))
        code, out, rest = finish(listen)
    finally:
        pub.close()
        hostile.close()
    err_text = err.decode() + rest
    assert code == 0, err_text
    assert_no_traceback(err_text)
    total = int(re.search(r"skipped (\d+) malformed message\(s\) in all", err_text).group(1))
    assert total >= len(counted) + 1, err_text  # every counted case, plus at least one probe
    lines = (buffer.decode() + out).splitlines()
    assert sum(1 for line in lines if '"seq": 1' in line or "(no speech)" in line) >= 1, lines


def test_listen_topic_filter_and_timeout(workdir):
    pub = OwnPublisher()
    try:
        listen = start_listen(["--json", "--topic", "serd.status.", "--timeout", "3", "--connect", pub.endpoint],
                              workdir)
        buffer = bytearray()
        wait_for_listener(pub, listen, buffer)
        for seq in range(5):
            pub.send(encode(emotion(seq)))
        pub.heartbeat()
        code, out, err = finish(listen)  # --timeout ends it
    finally:
        pub.close()
    assert code == 0, err
    objects = [json.loads(line) for line in (buffer.decode() + out).splitlines()]
    assert objects and all(o["schema"] == "serd.status/1" for o in objects)


def test_listen_live_view_on_a_terminal(workdir):
    pub = OwnPublisher()
    leader, follower = pty.openpty()
    try:
        listen = subprocess.Popen(serd_cmd("listen", "--count", "3", "--connect", pub.endpoint), cwd=workdir,
                                  env=serd_env(TERM="xterm"), stdout=follower, stderr=subprocess.PIPE)
        os.close(follower)
        screen = bytearray()
        deadline = time.monotonic() + TIMEOUT_S
        while b"running" not in screen and time.monotonic() < deadline:  # the first heartbeat drawn
            pub.heartbeat()
            if select.select([leader], [], [], 0.2)[0]:
                screen.extend(os.read(leader, 65536))
            assert listen.poll() is None, listen.stderr.read().decode()
        assert b"running" in screen, bytes(screen)
        pub.send(encode(emotion(0)))
        pub.send(encode(emotion(2)))  # seq 1 lost on the way: counted as a gap
        time.sleep(0.3)  # the view redraws at most every 0.2 s; the final draw must see both
        pub.send(encode(emotion(3)))
        deadline = time.monotonic() + TIMEOUT_S
        while listen.poll() is None and time.monotonic() < deadline:
            if select.select([leader], [], [], 0.2)[0]:
                try:
                    screen.extend(os.read(leader, 65536))
                except OSError:
                    break
        assert listen.wait(timeout=10) == 0
        try:
            while select.select([leader], [], [], 0.2)[0]:
                screen.extend(os.read(leader, 65536))
        except OSError:
            pass  # the terminal closed with the process
    finally:
        os.close(leader)
        pub.close()
    text = screen.decode("utf-8", "replace")
    assert "\x1b[H\x1b[J" in text  # redrawn in place
    assert "serd listen" in text and f"■ {DEVICE}" in text
    assert "HAPPY 60%" in text
    assert re.search(r"happy +60% █{18}", text), text  # a bar per emotion, 30 cells at 100 %
    assert "lost here 1" in text
