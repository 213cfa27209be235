"""Load: 20 subscribers and a stalled one on one daemon; subscribers that come and go.

ZeroMQ's PUB socket keeps a queue per subscriber and drops, for that subscriber only, what
does not fit under `publisher.sndhwm`: the daemon never blocks and never learns about it,
so a stalled subscriber's losses are visible only to it (gaps in `seq`, a missing final
status). The status counter `dropped` counts audio blocks and refused sends, which PUB
never refuses: it stays 0 here, and the test says so.

The load run uses ipc:// so that the stalled subscriber's path buffers a bounded amount
(unix socket buffers, ~200 KB each way); over TCP loopback the kernel's send-buffer
autotuning absorbs up to ~4 MB first (`benchmarks/reliability.py` runs that).
"""

from __future__ import annotations

import pytest

from helpers_daemon import short_tmpdir
from helpers_reliability import churn, load

pytestmark = pytest.mark.reliability

LOAD_HOURS = 0.5
LOAD_SPEED = 40.0
"""Times real time: 80 windows/s to 21 subscribers (about 45 s of wall time)."""
SUBSCRIBERS = 20
CPU_RATIO_MAX = 2.0
"""Daemon CPU per window, second half over first half: generous (the machine is shared)."""
LOAD_RSS_GROWTH_MAX_MB = 4.0
"""The stalled subscriber's queue holds at most sndhwm (1000) messages of ~0.5 KB, plus slack."""
CHURN_CYCLES = 1000
CHURN_RSS_GROWTH_MAX_MB = 1.0
"""Over 1000 cycles after the warm-up (helpers_reliability.CHURN_WARMUP): a leak of 1 KB per
connection would show as 1 MiB."""


def test_twenty_subscribers_get_everything_and_a_stalled_one_only_loses_its_own(tiny_model_int8):
    with short_tmpdir("serd-load-") as workdir:
        r = load(tiny_model_int8, workdir, LOAD_HOURS, LOAD_SPEED, SUBSCRIBERS, transport="ipc")
    early, late = r.cpu_per_window_ms
    print(f"load: {r.expected} windows to {SUBSCRIBERS} subscribers in {r.wall_s:.1f} s; CPU per window "
          f"{early:.2f} -> {late:.2f} ms; RSS {r.rss_mb[0]:.2f} -> {r.rss_mb[1]:.2f} MiB; latency {r.latency_ms}; "
          f"stalled got {r.stalled_emotions} of {r.expected} (seq {r.stalled_first_seq}..{r.stalled_last_seq})")
    assert r.exit_code == 0, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert r.final["windows"] == r.final["published"] == r.expected, r.final
    assert r.final["dropped"] == 0, "PUB drops per subscriber silently; serd's counter cannot see it"
    for i, s in enumerate(r.subscribers):
        assert (s["emotions"], s["first"], s["gaps"], s["stopped"]) == (r.expected, 0, 0, True), (i, s)
    # The stalled one, read once the audio is over: what its path held arrived, in order from seq 0; what
    # came after its queue filled was dropped, for it alone.
    assert r.stalled_emotions < r.expected, "the stalled subscriber was never stalled: no premise"
    assert r.stalled_last_seq is not None and r.stalled_last_seq < r.expected - 1, r.stalled_last_seq
    assert r.stalled_first_seq == 0 and r.stalled_gaps == 0
    # The daemon's loop did not slow down (per-window CPU), and its memory stayed bounded.
    assert r.cpu_ratio < CPU_RATIO_MAX, r.cpu_per_window_ms
    assert r.rss_mb[1] - r.rss_mb[0] < LOAD_RSS_GROWTH_MAX_MB, r.rss_mb


def test_subscribers_that_come_and_go_leave_nothing_behind(tiny_model_int8):
    with short_tmpdir("serd-churn-") as workdir:
        r = churn(tiny_model_int8, workdir, CHURN_CYCLES)
    print(f"churn: {r.warmup} + {r.cycles} connect/receive/close cycles in {r.wall_s:.1f} s; RSS "
          f"{r.rss_before_warmup_mb:.2f} MiB before the warm-up, then {r.rss_mb}; fds {r.fd_baseline}, then {r.fds}")
    assert r.exit_code == 0, r.stderr
    assert r.fd_growth == 0, (r.fd_baseline, r.fds)
    assert r.rss_growth_mb < CHURN_RSS_GROWTH_MAX_MB, r.rss_mb
