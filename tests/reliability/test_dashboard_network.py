"""Issue 13, findings 5 and 6: the dashboard on `--listen 127.0.0.1:PORT` with a token, under attack.

A real `python -m serd dashboard` subprocess. Attackers connect from other loopback
addresses (all of 127/8 reaches a socket on 127.0.0.1), as another machine on the school
network would, and the legitimate client from 127.0.0.1:

- Slowloris: hundreds of connections from many addresses, each trickling one header byte
  at a time and reconnecting when cut (before: 1019 threads, legitimate requests timed out);
- stalled uploads: 26 uploads that declare 20 MB, send 1 MB and stall (before: 566 MB held
  for ever).

Every loop here is bounded in count and in time. Legitimate requests must be answered at
all within a generous bound; their latency is printed (and reported in
benchmarks/RELIABILITY.md), not asserted.
"""

from __future__ import annotations

import http.client
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq

from helpers_reliability import REPO_ROOT, percentile, rss_mb, serd_env

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

TOKEN = "reliability-token-0123456789"
ANSWER_BOUND_S = 10.0
"""A legitimate request must be answered within this (generous: the machine is shared)."""
ATTACK_S = 15.0
SLOW_ADDRESSES = 20
SLOW_PER_ADDRESS = 15
TRICKLE_EVERY_S = 1.0
UPLOADS = 26
UPLOAD_DECLARED = 20 * 1024 * 1024
UPLOAD_SENT = 1024 * 1024
UPLOAD_RSS_BOUND_MB = 80.0
"""Two uploads received at once (2 x 20 MB) plus slack; before: 566 MB."""
STARTUP_S = 60.0


def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise RuntimeError("no Threads line")


@pytest.fixture
def dashboard():
    """`serd dashboard --listen 127.0.0.1:0` with the token from the environment; (process, port)."""
    context = zmq.Context()
    pub = context.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind("tcp://127.0.0.1:*")
    endpoint = pub.getsockopt_string(zmq.LAST_ENDPOINT)
    process = subprocess.Popen([sys.executable, "-m", "serd", "dashboard", "--connect", endpoint,
                                "--listen", "127.0.0.1:0", "--model", "none"],
                               cwd=REPO_ROOT, env=serd_env(SERD_DASHBOARD_TOKEN=TOKEN), stderr=subprocess.PIPE,
                               text=True)
    port = None
    deadline = time.monotonic() + STARTUP_S
    for line in process.stderr:
        match = re.search(r"serving on http://127\.0\.0\.1:(\d+)/", line)
        if match:
            port = int(match.group(1))
            break
        assert time.monotonic() < deadline, "the dashboard did not start"
    assert port is not None, "the dashboard did not start"
    try:
        yield process, port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        pub.close(linger=0)
        context.term()


def legit_request(port: int, method: str = "GET", path: str = "/api/state") -> tuple[int | None, float]:
    """(status or None, seconds) of one authorised request from 127.0.0.1."""
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=ANSWER_BOUND_S)
    try:
        conn.request(method, path, headers={"Authorization": f"Bearer {TOKEN}"})
        status = conn.getresponse().status
    except OSError:
        status = None
    finally:
        conn.close()
    return status, time.monotonic() - started


class SlowClient:
    """One Slowloris connection from `address`: a request line, then one header byte at a time."""

    PAYLOAD = b"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 4096

    def __init__(self, port: int, address: str) -> None:
        self.port, self.address = port, address
        self.sock: socket.socket | None = None
        self.sent = 0
        self.cut = 0

    def step(self) -> None:
        if self.sock is None:
            try:
                self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=1.0,
                                                     source_address=(self.address, 0))
                self.sent = 0
            except OSError:
                self.sock = None
                return
        try:
            self.sock.send(self.PAYLOAD[self.sent:self.sent + 1])
            self.sent = (self.sent + 1) % len(self.PAYLOAD)
        except OSError:  # the server closed it: reconnect next time, as an attacker would
            self.cut += 1
            self.close()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def test_slowloris_from_many_addresses_leaves_legitimate_requests_answered(dashboard):
    process, port = dashboard
    idle_threads = threads(process.pid)
    slow = [SlowClient(port, f"127.0.0.{2 + a}") for a in range(SLOW_ADDRESSES) for _ in range(SLOW_PER_ADDRESS)]
    latencies, failures, peak_threads = [], [], idle_threads
    try:
        started = time.monotonic()
        next_trickle = started
        while time.monotonic() - started < ATTACK_S:
            if time.monotonic() >= next_trickle:
                for client in slow:
                    client.step()
                next_trickle += TRICKLE_EVERY_S
            status, seconds = legit_request(port)
            (latencies if status == 200 else failures).append(seconds if status == 200 else status)
            peak_threads = max(peak_threads, threads(process.pid))
            time.sleep(0.2)
    finally:
        for client in slow:
            client.close()
    cuts = sum(c.cut for c in slow)
    print(f"slowloris: {len(slow)} connections from {SLOW_ADDRESSES} addresses for {ATTACK_S:.0f} s; "
          f"{len(latencies)} legitimate requests answered, {len(failures)} not; latency p50 "
          f"{percentile(latencies, 50) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms; threads {idle_threads} -> "
          f"peak {peak_threads}; {cuts} attacker connections cut")
    assert process.poll() is None
    assert not failures, failures
    assert latencies and max(latencies) < ANSWER_BOUND_S
    from serd.dashboard.guard import MAX_CONNECTIONS, MAX_EVICTING

    # Admitted connections, plus evicted ones whose threads are still ending (bounded too).
    assert peak_threads <= idle_threads + MAX_CONNECTIONS + MAX_EVICTING, peak_threads


def test_stalled_uploads_hold_bounded_memory_and_the_page_stays_up(dashboard):
    process, port = dashboard
    baseline = rss_mb(process.pid)
    stalled: list[socket.socket] = []
    head = (f"POST /api/analyze HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"X-Filename: big.wav\r\nContent-Length: {UPLOAD_DECLARED}\r\n\r\n").encode()
    chunk = b"\0" * UPLOAD_SENT
    peak = baseline
    latencies, failures = [], []
    try:
        for i in range(UPLOADS):
            sock = socket.create_connection(("127.0.0.1", port), timeout=ANSWER_BOUND_S,
                                            source_address=(f"127.0.0.{2 + i % 8}", 0))
            sock.sendall(head)
            try:
                sock.sendall(chunk)
            except OSError:
                pass  # refused as busy and closed: fine
            stalled.append(sock)
        started = time.monotonic()
        while time.monotonic() - started < ATTACK_S:
            peak = max(peak, rss_mb(process.pid))
            status, seconds = legit_request(port)
            (latencies if status == 200 else failures).append(seconds if status == 200 else status)
            time.sleep(0.5)
        busy = 0
        for sock in stalled:  # the refused ones got 503 (after a bounded drain) or were closed
            sock.settimeout(0.5)
            try:
                busy += b" 503 " in sock.recv(200)
            except OSError:
                pass
    finally:
        for sock in stalled:
            sock.close()
    print(f"stalled uploads: {UPLOADS} x {UPLOAD_DECLARED >> 20} MB declared, {UPLOAD_SENT >> 20} MB sent; RSS "
          f"{baseline:.1f} -> peak {peak:.1f} MiB; {busy} answered 503 busy; {len(latencies)} legitimate requests "
          f"answered (max {max(latencies) * 1000:.0f} ms), {len(failures)} not")
    assert process.poll() is None
    assert not failures, failures
    assert peak - baseline < UPLOAD_RSS_BOUND_MB, (baseline, peak)
    assert busy >= UPLOADS - 2 - 2, f"only {busy} uploads were refused as busy"
