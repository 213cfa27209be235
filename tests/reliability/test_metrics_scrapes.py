"""Hostile scrapes of `serd run --metrics`: many parallel fast scrapers and Slowloris connections
(headers trickled a byte a second from many loopback addresses) against a daemon replaying a file in
real time. The daemon must keep real-time pace, its threads stay bounded (the server's connection
caps), its memory flat-ish, and a legitimate scrape still gets answered. Every loop is bounded in
count and time; figures are printed (benchmarks/RESULTS.md), bounds are generous."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from pathlib import Path

import pytest

from helpers_reliability import DEMO_FLAC, Daemon, cpu_s, free_tcp_port, rss_mb
from test_dashboard_network import threads

pytestmark = [pytest.mark.reliability, pytest.mark.slow]
pytest.importorskip("prometheus_client")

ATTACK_S = 12.0
FAST_SCRAPERS = 8
SLOW_ADDRESSES = 10
SLOW_PER_ADDRESS = 6
MAX_CONNECTIONS, MAX_EVICTING = 8, 16  # serd.metrics.MAX_CONNECTIONS, serd.dashboard.guard.MAX_EVICTING
THREAD_BOUND = 10 + MAX_CONNECTIONS + MAX_EVICTING
"""The daemon's own threads (worker, publisher I/O, file reader, metrics server...) plus the caps."""
RSS_GROWTH_BOUND_MB = 40.0
PACE_SHARE = 0.8
"""Windows made during the attack, as a share of what real time allows (0.5 s hop; the page may be up to
1 s old at either end, so 2 windows of slack are added)."""
STARTUP_S = 60.0


def scrape(port: int, timeout: float = 10.0, source: str = "127.0.0.1") -> bytes:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=(source, 0))
    try:
        connection.request("GET", "/metrics")
        return connection.getresponse().read()
    finally:
        connection.close()


def windows_total(body: bytes) -> float:
    for line in body.decode().splitlines():
        if line.startswith("serd_windows_total "):
            return float(line.split()[1])
    raise AssertionError("no serd_windows_total")


def test_hostile_scrapes_do_not_hurt_the_daemon(tmp_path: Path):
    port = free_tcp_port()
    daemon = Daemon(["--source", DEMO_FLAC, "--bind", f"tcp://127.0.0.1:{free_tcp_port()}",
                     "--metrics", f"127.0.0.1:{port}"], tmp_path)
    stop = threading.Event()
    fast_done, slow_cut, failures = [0], [0], []
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            try:
                start_windows = windows_total(scrape(port))
                break
            except OSError:
                assert daemon.poll() is None and time.monotonic() < deadline, daemon.stderr_text()
                time.sleep(0.2)
        rss_before = rss_mb(daemon.pid)

        def fast(address: str) -> None:
            while not stop.is_set():
                try:
                    scrape(port, timeout=5.0, source=address)
                    fast_done[0] += 1
                except (OSError, http.client.HTTPException):  # refused over the budget: closed unanswered
                    failures.append(1)

        def slow(address: str) -> None:
            while not stop.is_set():
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=5.0, source_address=(address, 0)) as s:
                        for byte in b"GET /metrics HTTP/1.1\r\nHost: x\r\n":
                            if stop.is_set():
                                return
                            s.sendall(bytes([byte]))
                            time.sleep(1.0)
                except OSError:
                    slow_cut[0] += 1
                    time.sleep(0.1)

        # Attackers from other loopback addresses (as other machines would be); the legitimate scraper
        # from 127.0.0.1.
        workers = [threading.Thread(target=fast, args=(f"127.0.2.{i % 2 + 1}",), daemon=True)
                   for i in range(FAST_SCRAPERS)]
        workers += [threading.Thread(target=slow, args=(f"127.0.1.{a + 1}",), daemon=True)
                    for a in range(SLOW_ADDRESSES) for _ in range(SLOW_PER_ADDRESS)]
        started, cpu_before = time.monotonic(), cpu_s(daemon.pid)
        for worker in workers:
            worker.start()
        max_threads, max_rss, legit = 0, 0.0, []
        while time.monotonic() - started < ATTACK_S:
            t0 = time.monotonic()
            try:
                scrape(port, timeout=10.0)
                legit.append(time.monotonic() - t0)
            except (OSError, http.client.HTTPException):
                legit.append(float("inf"))
            max_threads = max(max_threads, threads(daemon.pid))
            max_rss = max(max_rss, rss_mb(daemon.pid))
            time.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))
        elapsed = time.monotonic() - started
        cpu_share = (cpu_s(daemon.pid) - cpu_before) / elapsed
        end_windows = windows_total(scrape(port, timeout=10.0))
        stop.set()
        for worker in workers:
            worker.join(10.0)
        answered = [s for s in legit if s != float("inf")]
        print(f"\nmetrics under attack: {fast_done[0]} fast scrapes answered ({fast_done[0] / elapsed:.0f}/s), "
              f"{slow_cut[0]} slow connections cut, {len(failures)} fast failures; daemon threads max {max_threads}, "
              f"RSS {rss_before:.1f} -> max {max_rss:.1f} MB; windows {end_windows - start_windows:.0f} in "
              f"{elapsed:.1f} s, daemon CPU {cpu_share:.0%} of a core; legitimate scrapes answered {len(answered)}/{len(legit)}, slowest "
              f"{max(answered, default=float('nan')):.2f} s")
        assert daemon.poll() is None, daemon.stderr_text()
        assert max_threads <= THREAD_BOUND, f"{max_threads} threads"
        assert max_rss - rss_before <= RSS_GROWTH_BOUND_MB
        assert end_windows - start_windows + 2 >= PACE_SHARE * elapsed / 0.5, "the daemon fell behind"
        assert len(answered) >= len(legit) // 2 and fast_done[0] > 0, "legitimate scrapes went unanswered"
    finally:
        stop.set()
        daemon.close()
