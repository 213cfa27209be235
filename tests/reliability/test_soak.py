"""Soak: hours of audio through `serd run --source -` to a keeping-up subscriber.

The generator (`pcm_generator.py`: the demo recording looped with silence, loud noise and
a noise floor between) writes as fast as the pipe takes it, so the daemon's queue is full
all run long and the stdin source waits on it (it never drops: `BlockQueue.put`). The
suite runs SOAK_HOURS of audio (about 20 s here); `benchmarks/reliability.py` runs 24 h.
"""

from __future__ import annotations

import pytest

from helpers_daemon import short_tmpdir
from helpers_reliability import soak

pytestmark = pytest.mark.reliability

SOAK_HOURS = 3.0
RSS_GROWTH_MAX_MB = 2.0
"""Peak RSS of the last hour of audio over the first hour's (the issue's bound)."""


def test_soak_loses_nothing_and_stays_flat(tiny_model_int8):
    with short_tmpdir("serd-soak-") as workdir:
        r = soak(tiny_model_int8, workdir, SOAK_HOURS)
    print(f"soak {SOAK_HOURS} h: {r.seq.count} windows in {r.wall_s:.1f} s ({r.windows_per_s:.0f} windows/s, "
          f"{r.speed:.0f}x real time); RSS first hour {r.rss_first_hour_mb:.2f} MiB, last hour "
          f"{r.rss_last_hour_mb:.2f} MiB; fds {r.fd_start} -> {r.fd_end}")
    assert r.exit_code == 0, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    # Every window, in order, from seq 0: the subscription was in place before the first byte.
    assert r.seq.first == 0 and not r.seq.gaps, r.seq.gaps[:10]
    assert r.seq.count == r.expected, (r.seq.count, r.expected)
    assert r.final.get("state") == "stopping", r.final
    assert r.final["windows"] == r.final["published"] == r.expected, r.final
    assert r.final["dropped"] == 0 and r.final["overruns"] == 0, r.final
    assert 0.2 * r.expected < r.speech_windows < 0.8 * r.expected, "the premise: speech and non-speech windows"
    # Memory: enough heartbeats in both hours to see a trend, and none.
    assert len(r.rss_in_hour(0.0)) >= 5 and len(r.rss_in_hour(SOAK_HOURS - 1.0)) >= 5, r.rss_series
    assert r.rss_growth_mb < RSS_GROWTH_MAX_MB, r.rss_series
    assert r.fd_end == r.fd_start, (r.fd_start, r.fd_end)
