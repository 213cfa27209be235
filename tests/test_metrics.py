"""Prometheus /metrics of `serd run` and `serd record`: a real daemon (stdin source, so the test
decides when windows happen), scraped with a real HTTP client and parsed with prometheus_client's
own parser; the counters move with the windows the subscriber receives."""

from __future__ import annotations

import http.client
import signal
import subprocess
import time

import numpy as np
import pytest

from conftest import speech_like
from helpers_daemon import (
    DEMO_FLAC,
    DaemonProcess,
    Subscriber,
    as_pcm16,
    assert_no_traceback,
    emotion_count_at_least,
    free_tcp_port,
    noise,
    run_serd,
    write_config,
)
from helpers_record import TestPublisher, emotion, start_recorder, status, wait_for_rows
from serd.config import EX_CONFIG, from_dict
from serd.daemon import Daemon
from serd.model import Model
from serd.publisher import Publisher
from serd.record.store import sqlite_url
from serd.sources import make_source

parser = pytest.importorskip("prometheus_client.parser", reason="pip install -e '.[metrics]'")

RATE = 16000
RENDER_EVERY_S = 1.0  # serd.metrics.RENDER_EVERY_S: a scrape sooner than this may get the previous page
POLL_S = 0.5
"""Between scrapes while waiting: well under serd.metrics.REQUESTS_PER_ADDRESS_PER_S (5), which closes more."""
SCRAPE_WAIT_S = 60.0
HEARD_FAST = "analysis: {vad: energy}\npublisher: {status_interval_s: 0.2}\n"
"""Every loud window is speech (the tests' sound is speech-like, not speech); a heartbeat soon after the
subscriber connects, so that it knows it is subscribed before any window is made."""


def scrape(port: int, path: str = "/metrics") -> tuple[int, str, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read().decode("utf-8")
    finally:
        connection.close()


def parsed(text: str) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) -> value, parsed by prometheus_client's parser."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in parser.text_string_to_metric_families(text) for s in family.samples}


def samples(port: int) -> dict[tuple[str, tuple], float]:
    """A scrape of the page, parsed."""
    status_code, content_type, text = scrape(port)
    assert status_code == 200 and content_type.startswith("text/plain; version=0.0.4"), (status_code, content_type)
    return parsed(text)


def value(scraped: dict, name: str, **labels) -> float:
    return scraped[(name, tuple(sorted(labels.items())))]


def wait_metric(port: int, name: str, expected: float, process: DaemonProcess, **labels) -> dict:
    deadline = time.monotonic() + SCRAPE_WAIT_S
    while True:
        scraped = samples(port)
        if scraped.get((name, tuple(sorted(labels.items())))) == expected:
            return scraped
        assert process.poll() is None, process.stderr_text()
        assert time.monotonic() < deadline, f"{name} {scraped.get((name, tuple(sorted(labels.items()))))} != {expected}"
        time.sleep(POLL_S)


def pcm(samples_f32: np.ndarray) -> bytes:
    return as_pcm16(samples_f32).tobytes()


def test_daemon_counters_move_with_windows(workdir):
    port, endpoint = free_tcp_port(), f"tcp://127.0.0.1:{free_tcp_port()}"
    args = ["run", "--source", "-", "--bind", endpoint, "--device-id", "room-m", "--metrics", f"127.0.0.1:{port}",
            "--config", write_config(workdir / "c.yaml", HEARD_FAST)]
    with DaemonProcess(args, cwd=workdir, stdin=subprocess.PIPE) as daemon, Subscriber(endpoint) as sub:
        sub.collect_until(lambda ms: len(ms) > 0, process=daemon)  # subscribed: no window is missed
        # Quiet first: 4 s of a -70 dBFS floor = windows at 0, 0.5, ..., 2.0 s (5 windows), all below the gate.
        daemon.process.stdin.write(pcm(noise(4.0, -70.0)))
        daemon.process.stdin.flush()
        first = 5
        sub.collect_until(emotion_count_at_least(first), process=daemon)
        scraped = wait_metric(port, "serd_windows_total", first, daemon)
        assert value(scraped, "serd_speech_windows_total") == 0
        assert value(scraped, "serd_gated_windows_total", reason="below_gate") == first
        assert value(scraped, "serd_state", state="running") == 1
        assert value(scraped, "serd_model_info", backend=scraped_backend(scraped), model="serd-emotion5-int8",
                     sha256=scraped_sha(scraped)) == 1
        assert value(scraped, "process_resident_memory_bytes") > 10e6
        assert value(scraped, "serd_last_window_age_seconds") >= 0

        # Then 4 s of speech-like sound: more windows, now with speech (the energy gate), each one inferred.
        daemon.process.stdin.write(pcm(speech_like(4.0, RATE, seed=3) * 4))
        daemon.process.stdin.flush()
        sub.collect_until(emotion_count_at_least(first + 8), process=daemon)  # 8 s in all: 13 windows
        emotions = sub.emotions
        assert len(emotions) == first + 8
        speech = sum(m.speech for m in emotions)
        assert speech > 0
        scraped = wait_metric(port, "serd_windows_total", len(emotions), daemon)
        assert value(scraped, "serd_speech_windows_total") == speech
        gated = sum(v for (name, _), v in scraped.items() if name == "serd_gated_windows_total")
        assert gated + speech == len(emotions)
        assert value(scraped, "serd_inference_seconds_count") == speech
        assert value(scraped, "serd_window_latency_seconds_count") == len(emotions)
        assert value(scraped, "serd_window_latency_seconds_bucket", le="+Inf") == len(emotions)
        assert value(scraped, "serd_messages_published_total") >= len(emotions) + len(sub.statuses)
        assert value(scraped, "serd_messages_dropped_total") == 0
        assert value(scraped, "serd_audio_overflows_total") == 0
        assert ("serd_room_arousal", (("device", "room-m"),)) not in scraped, "arousal is opt-in"

        status_code, _, _ = scrape(port, "/")
        assert status_code == 404
        daemon.process.stdin.close()
        assert daemon.wait() == 0
        assert_no_traceback(daemon.stderr_text())


def scraped_backend(scraped: dict) -> str:
    return next(dict(labels)["backend"] for (name, labels) in scraped if name == "serd_model_info")


def scraped_sha(scraped: dict) -> str:
    return next(dict(labels)["sha256"] for (name, labels) in scraped if name == "serd_model_info")


def test_room_arousal_is_an_opt_in_gauge(workdir):
    port, endpoint = free_tcp_port(), f"tcp://127.0.0.1:{free_tcp_port()}"
    config = write_config(workdir / "c.yaml", HEARD_FAST + f"metrics: {{bind: '127.0.0.1:{port}', "
                                                           "room_arousal: true}\n")
    with DaemonProcess(["run", "--source", "-", "--bind", endpoint, "--device-id", "room-a", "--config", config],
                       cwd=workdir, stdin=subprocess.PIPE) as daemon, Subscriber(endpoint) as sub:
        sub.collect_until(lambda ms: len(ms) > 0, process=daemon)
        daemon.process.stdin.write(pcm(speech_like(3.0, RATE, seed=5) * 4))
        daemon.process.stdin.flush()
        sub.collect_until(emotion_count_at_least(3), process=daemon)  # 3 s: windows at 0, 0.5 and 1 s
        last = [m for m in sub.emotions if m.speech][-1]
        wait_metric(port, "serd_windows_total", 3, daemon)
        gauge = value(samples(port), "serd_room_arousal", device="room-a")
        assert gauge == pytest.approx(last.smoothed_arousal, abs=1e-4)  # messages carry 5 decimals
        daemon.process.stdin.close()
        assert daemon.wait() == 0


def test_a_scrape_never_counts_a_window_before_its_figures(tiny_model_int8, workdir):
    """/metrics is read on the HTTP server's thread while the worker makes windows. Here a page is
    rendered at the worst moment, inside the worker, after a window is published and before the
    metrics hear of it: that page must not count the window yet, or it shows a count its speech and
    gated counts and room arousal do not add up to (a CI run once scraped the gauge one window late)."""
    from prometheus_client import generate_latest  # an optional extra: the module skips without it

    from serd.metrics import DaemonMetrics

    settings = from_dict({"device_id": "room-a", "analysis": {"vad": "energy"},
                          "source": {"kind": "file", "path": str(DEMO_FLAC), "realtime": False},
                          "publisher": {"bind": f"tcp://127.0.0.1:{free_tcp_port()}"}})
    model = Model(tiny_model_int8)
    publisher = Publisher(settings.publisher, settings.device_id)
    try:
        daemon = Daemon(settings, model, make_source(settings.source, model.params.sample_rate), publisher)
        daemon_metrics = DaemonMetrics(room_arousal=True)
        daemon_metrics.attach(daemon)
        metrics_hook, pages, messages = daemon.window_hook, [], []

        def scrape_then_hook(outcome, message) -> None:
            pages.append(parsed(generate_latest(daemon_metrics.registry).decode("utf-8")))
            metrics_hook(outcome, message)
            messages.append(message)

        daemon.window_hook = scrape_then_hook
        assert daemon.run() == 0
    finally:
        publisher.close()
    speech = [m for m in messages if m.speech]
    assert len(pages) == daemon.counters.windows > 10 and 0 < len(speech) < len(messages)
    for done, page in enumerate(pages):  # `done` windows were complete when this page was made
        spoken = [m for m in messages[:done] if m.speech]
        gated = sum(v for (name, _), v in page.items() if name == "serd_gated_windows_total")
        assert value(page, "serd_windows_total") == done, "a window counted before its figures"
        assert value(page, "serd_speech_windows_total") == len(spoken) and gated == done - len(spoken)
        shown = value(page, "serd_room_arousal", device="room-a")
        assert np.isnan(shown) if not spoken else shown == pytest.approx(spoken[-1].smoothed_arousal, abs=1e-9)


def test_recorder_counts_rows_written(workdir):
    port, endpoint = free_tcp_port(), f"tcp://127.0.0.1:{free_tcp_port()}"
    url = sqlite_url(workdir / 'h.sqlite3')
    publisher = TestPublisher(endpoint)
    with start_recorder(workdir, url, endpoint, "--metrics", f"127.0.0.1:{port}") as recorder:
        publisher.wait_subscribed()
        publisher.send(status("room-r", 0, 1_800_000_000.0))
        for seq in range(30):
            publisher.send(emotion("room-r", seq, 1_800_000_000.0 + seq * 0.5))
        publisher.send(emotion("room-r", 35, 1_800_000_020.0))  # 30..34 lost on the way
        publisher.send_raw([b"serd.emotion.room-r", b"{broken"])
        wait_for_rows(url, "room-r", 31, recorder)
        wait_metric(port, "serd_record_messages_received_total", 32, recorder)
        # 31 windows, a status, the session and the gap: all committed, nothing left queued.
        scraped = wait_metric(port, "serd_record_rows_written_total", 34, recorder)
        assert value(scraped, "serd_record_queue_rows") == 0
        assert value(scraped, "serd_record_messages_malformed_total") == 1
        assert value(scraped, "serd_record_messages_missing_total") == 5
        assert value(scraped, "serd_record_gaps_total") == 1
        assert value(scraped, "serd_record_rows_dropped_total") == 0
        assert value(scraped, "serd_record_rows_spooled_total") == value(scraped, "serd_record_rows_lost_total") == 0
        assert value(scraped, "serd_record_database_failed") == 0
        assert value(scraped, "serd_record_rooms") == 1
        recorder.send_signal(signal.SIGTERM)
        assert recorder.wait() == 0
    publisher.close()


def test_non_loopback_metrics_need_an_explicit_opt_in(workdir):
    done = run_serd(["run", "--source", "-", "--metrics", "0.0.0.0:9750"], cwd=workdir, timeout=60)
    assert done.returncode == EX_CONFIG
    assert "metrics.bind: 0.0.0.0:9750 is reachable from the network" in done.stderr
    assert "metrics.allow_insecure" in done.stderr
    done = run_serd(["record", "--metrics", "9751"], cwd=workdir, timeout=60)
    assert done.returncode == EX_CONFIG and "metrics.record_bind: expected HOST:PORT" in done.stderr, done.stderr
    assert_no_traceback(done.stderr)
