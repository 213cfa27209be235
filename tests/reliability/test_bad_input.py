"""Bad input: malformed and extreme audio to `serd analyze`, the file source and the stdin source.

Each input gives a clear one-line error or a sane result (see `bad_inputs.py`), never a
traceback and never a hang (every subprocess has a timeout), and bad input never takes a
running daemon down.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import zmq

from bad_inputs import EITHER, ERROR, NO_SPEECH, SPEECH, assert_sane_analysis, assert_sane_probs, cases, write_all
from helpers_daemon import Labels, assert_no_traceback, run_serd, serd_lines, short_tmpdir
from helpers_reliability import (
    DEMO_FLAC, RATE, Daemon, SeqTracker, expected_windows, free_tcp_port, stdin_daemon, sub_socket, wait_readable,
)
from serd.messages import EmotionMessage, StatusMessage, decode

pytestmark = pytest.mark.reliability

CASES = cases()
CASE_IDS = [case.name for case in CASES]
ANALYZE_TIMEOUT_S = 180.0
RUN_TIMEOUT_S = 60.0
"""Bounds for failing (a hang), not figures: each of these finishes in about a second."""


@pytest.fixture(scope="module")
def bad_dir():
    with short_tmpdir("serd-bad-") as path:
        write_all(path)
        yield path


@pytest.fixture(scope="module")
def analyzed(tiny_model_int8, bad_dir) -> dict[str, dict]:
    """`serd analyze --json` over every case in one run: {file name: its JSON object}."""
    names = [case.name for case in CASES]
    done = run_serd(["analyze", "--json", "--model", tiny_model_int8, *names], cwd=bad_dir,
                    timeout=ANALYZE_TIMEOUT_S)
    assert_no_traceback(done.stderr)
    assert done.returncode == 1, f"some files are unreadable, so exit 1; got {done.returncode}\n{done.stderr}"
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["file"] for r in results] == names, "one object per file, in order"
    return {r["file"]: r for r in results}


def one_line(text: str) -> None:
    assert text and "\n" not in text and "Traceback" not in text, repr(text)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_analyze_gives_an_error_or_a_sane_result(case, analyzed, tiny_model_int8):
    result = analyzed[case.name]
    if "error" in result:
        assert case.expect in (ERROR, EITHER), f"{case.name} ({case.why}): refused: {result['error']}"
        one_line(result["error"])
        assert result["error"].startswith(f"{case.name}: "), result["error"]
    else:
        assert case.expect != ERROR, f"{case.name} ({case.why}) was accepted: {result}"
        assert_sane_analysis(result, Labels.of(tiny_model_int8).names, case.expect)


def test_analyze_human_output_has_one_line_per_bad_file(tiny_model_int8, bad_dir, analyzed):
    names = [case.name for case in CASES]
    done = run_serd(["analyze", "--model", tiny_model_int8, *names], cwd=bad_dir, timeout=ANALYZE_TIMEOUT_S)
    assert_no_traceback(done.stderr)
    assert done.returncode == 1
    failed = [name for name in names if "error" in analyzed[name]]
    errors = serd_lines(done.stderr)
    assert errors == [f"serd: {analyzed[name]['error']}" for name in failed], done.stderr
    for name in names:
        if name not in failed:
            assert re.search(rf"^{re.escape(name)}: ", done.stdout, re.MULTILINE), f"no result line for {name}"


STOPPED = re.compile(r"stopping after (\d+) windows")


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_file_source_agrees_with_analyze(case, analyzed, tiny_model_int8, bad_dir):
    """`serd run --source FILE --fast`: the same reader as analyze, so the same verdict and window count."""
    with short_tmpdir("serd-badrun-") as tmp:
        done = run_serd(["run", "--fast", "--source", case.name, "--bind", f"ipc://{tmp}/p.ipc",
                         "--model", tiny_model_int8], cwd=bad_dir, timeout=RUN_TIMEOUT_S)
    assert_no_traceback(done.stderr)
    assert "Fatal Python error" not in done.stderr, done.stderr
    reference = analyzed[case.name]
    if "error" in reference:
        assert done.returncode == 1, f"exit {done.returncode}\n{done.stderr}"
        lines = serd_lines(done.stderr)
        if lines[0].startswith("serd: "):  # refused before it starts (bad header): that one line only
            assert lines == [f"serd: {reference['error']}"], done.stderr
        else:  # failed part-way through decoding: the daemon's log says so
            errors = [line for line in lines if line.startswith("ERROR")]
            assert len(errors) == 1 and reference["error"] in errors[0], done.stderr
    else:
        assert done.returncode == 0, f"exit {done.returncode}\n{done.stderr}"
        windows = [int(n) for n in STOPPED.findall(done.stderr)]
        assert windows == [len(reference["windows"])], done.stderr


# -- stdin ------------------------------------------------------------------------------------------

def _speech_pcm(rate: int) -> bytes:
    import soxr

    audio, source_rate = soundfile.read(str(DEMO_FLAC), dtype="float32")
    clip = audio[8 * source_rate: 13 * source_rate]
    if rate != source_rate:
        clip = soxr.resample(clip, source_rate, rate)
    return np.clip(np.round(clip * 32768.0), -32768, 32767).astype("<i2").tobytes()


def _six_channels_96k() -> bytes:
    mono = np.frombuffer(_speech_pcm(96000), dtype="<i2")
    frames = np.stack([mono, mono, np.zeros_like(mono), np.zeros_like(mono), mono // 2, mono // 2], axis=1)
    return frames.astype("<i2").tobytes() + b"\x01\x02\x03"  # and a partial frame at the end


RANDOM_BYTES = np.random.default_rng(11).integers(0, 256, 5 * 2 * RATE + 1, dtype=np.uint8).tobytes()
STDIN_CASES = {
    # name: (bytes, extra flags, rate, channels, expect)
    "empty": (b"", (), RATE, 1, NO_SPEECH),
    "one-byte": (b"\x7f", (), RATE, 1, NO_SPEECH),
    "three-bytes": (b"\x10\x00\x00", (), RATE, 1, NO_SPEECH),  # one quiet sample, then half a frame
    "window-and-a-byte": (_speech_pcm(RATE)[: 2 * 2 * RATE + 1], (), RATE, 1, SPEECH),
    "random-bytes-odd-count": (RANDOM_BYTES, (), RATE, 1, SPEECH),
    "speech-8k": (_speech_pcm(8000), ("--rate", "8000"), 8000, 1, SPEECH),
    "six-channels-96k-partial-frame": (_six_channels_96k(), ("--rate", "96000", "--channels", "6"), 96000, 6, SPEECH),
}


@pytest.fixture
def workdir():
    with short_tmpdir("serd-rel-") as path:
        yield path


@pytest.mark.parametrize("name", list(STDIN_CASES))
def test_stdin_source_takes_odd_input(name, tiny_model_int8, workdir):
    data, flags, rate, channels, expect = STDIN_CASES[name]
    frames = len(data) // (2 * channels)
    model_samples = frames * RATE // rate
    labels = Labels.of(tiny_model_int8).names
    endpoint = f"ipc://{workdir}/stdin.ipc"
    context = zmq.Context()
    try:
        daemon = Daemon(["--source", "-", *flags, "--bind", endpoint, "--model", tiny_model_int8,
                         "--config", _fast_heartbeat(workdir)], workdir, stdin=subprocess.PIPE)
        try:
            sub = sub_socket(context, endpoint)
            wait_readable(sub, daemon, what="heartbeat before the audio")
            daemon.process.stdin.write(data)
            daemon.process.stdin.close()
            emotions, final = _collect(sub, daemon)
            code = daemon.wait(RUN_TIMEOUT_S)
            stderr = daemon.stderr_text()
        finally:
            daemon.close()
    finally:
        context.destroy(linger=0)
    assert code == 0, stderr
    assert_no_traceback(stderr)
    expected = expected_windows(model_samples)
    # A resampling stream holds back its last few milliseconds, which may cost the last window.
    assert expected - (rate != RATE) <= len(emotions) <= expected, (len(emotions), expected)
    assert final["windows"] == final["published"] == len(emotions) and final["dropped"] == 0, final
    assert [m.seq for m in emotions] == list(range(len(emotions)))
    for m in emotions:
        if m.speech:
            assert_sane_probs(m.probs, labels, f"{name} seq {m.seq}")
            assert_sane_probs(m.smoothed, labels, f"{name} seq {m.seq} smoothed")
    assert any(m.speech for m in emotions) == (expect == SPEECH), [(m.speech, m.level_dbfs) for m in emotions]


def _fast_heartbeat(workdir: Path) -> Path:
    path = workdir / "heartbeat.yaml"
    path.write_text("publisher:\n  status_interval_s: 0.2\n")
    return path


def _collect(sub: zmq.Socket, daemon: Daemon, timeout_s: float = RUN_TIMEOUT_S):
    emotions, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not sub.poll(500):
            if daemon.poll() is not None and not sub.poll(1000):
                break
            continue
        message = decode(sub.recv_multipart())
        if isinstance(message, EmotionMessage):
            emotions.append(message)
        elif isinstance(message, StatusMessage) and message.state == "stopping":
            return emotions, message.to_dict()
    raise AssertionError(f"no final status (exit {daemon.poll()}):\n{daemon.stderr_text()}")


# -- a running daemon and bad input around it ---------------------------------------------------------

FEED_SPEED = 5.0
"""Times real time: the running daemon is still running while the bad input is thrown at it."""


def test_bad_input_never_takes_a_running_daemon_down(tiny_model_int8, bad_dir, workdir):
    """A daemon on stdin gets speech, then 5 s of random bytes of an odd length (the rest of the stream
    is misaligned by a byte from there on, as from a broken producer), then speech again; meanwhile
    `serd analyze` and `serd run` chew on every bad file. It publishes every window, in order, sane."""
    speech = _speech_pcm(RATE)
    stream = speech * 3 + RANDOM_BYTES + speech * 3
    expected = expected_windows(len(stream) // 2)
    labels = Labels.of(tiny_model_int8).names
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    context = zmq.Context()
    try:
        with stdin_daemon(tiny_model_int8, workdir, "victim", endpoint) as (daemon, pipe):
            sub = sub_socket(context, endpoint)
            wait_readable(sub, daemon, what="heartbeat before the audio")
            feeder = threading.Thread(target=_feed, args=(pipe, stream, FEED_SPEED), daemon=True)
            feeder.start()
            bystanders, outcomes = _bad_neighbours(tiny_model_int8, bad_dir, workdir)
            seq, final = SeqTracker(), None
            deadline = time.monotonic() + RUN_TIMEOUT_S + len(stream) / (2 * RATE * FEED_SPEED)
            while final is None and time.monotonic() < deadline:
                if not sub.poll(500):
                    assert daemon.poll() is None or sub.poll(1000), f"serd died:\n{daemon.stderr_text()}"
                    continue
                message = decode(sub.recv_multipart())
                if isinstance(message, EmotionMessage):
                    seq.add(message.seq)
                    if message.speech:
                        assert_sane_probs(message.probs, labels, f"seq {message.seq}")
                elif message.state == "stopping":
                    final = message.to_dict()
            feeder.join(timeout=10)
            code = daemon.wait()
            stderr = daemon.stderr_text()
            for thread in bystanders:
                thread.join(timeout=ANALYZE_TIMEOUT_S)
    finally:
        context.destroy(linger=0)
    # The neighbours really ran, and failed the way they should (exit 1, no traceback).
    assert sorted(outcomes) == sorted(["analyze", "random.wav", "truncated.flac", "rate-1hz.wav", "nan-inf.wav"])
    for what, done in outcomes.items():
        assert_no_traceback(done.stderr)
        assert done.returncode == (0 if what == "nan-inf.wav" else 1), (what, done.stderr)
    assert code == 0, stderr
    assert_no_traceback(stderr)
    assert seq.first == 0 and not seq.gaps and seq.count == expected, (seq.count, expected, seq.gaps[:5])
    assert final and final["windows"] == final["published"] == expected and final["dropped"] == 0, final


def _feed(pipe, data: bytes, speed: float) -> None:
    """Write `data` (s16le 16 kHz) at `speed` times real time, in odd-sized pieces, then close: EOF."""
    import os

    piece = 3001
    started = time.monotonic()
    for offset in range(0, len(data), piece):
        os.write(pipe.fd, data[offset: offset + piece])
        ahead = (offset + piece) / (2 * RATE * speed) - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(ahead)
    pipe.close()


def _bad_neighbours(model: Path, bad_dir: Path, workdir: Path):
    """`serd analyze` of every bad file, and `serd run` of a few, in threads beside the daemon.

    Returns the threads and {what: CompletedProcess}, filled in as they finish."""
    names = [case.name for case in CASES]
    outcomes: dict[str, subprocess.CompletedProcess] = {}

    def analyze() -> None:
        outcomes["analyze"] = run_serd(["analyze", "--model", model, *names], cwd=bad_dir, timeout=ANALYZE_TIMEOUT_S)

    def run_bad() -> None:
        for name in ("random.wav", "truncated.flac", "rate-1hz.wav", "nan-inf.wav"):
            outcomes[name] = run_serd(["run", "--fast", "--source", name, "--bind", f"ipc://{workdir}/other.ipc",
                                       "--model", model], cwd=bad_dir, timeout=RUN_TIMEOUT_S)

    threads = [threading.Thread(target=analyze, daemon=True), threading.Thread(target=run_bad, daemon=True)]
    for thread in threads:
        thread.start()
    return threads, outcomes
