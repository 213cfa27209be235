"""Issue 19, item 1: subscriptions that are few but big, against a real `serd run`.

libzmq keeps every subscription a connection sends (one trie node per byte, ~50 bytes each)
until that connection ends, and copies it for the application to read. Counting refused
subscriptions did not bound that: before, one 20 MB subscription took the daemon from
60 to 2,289 MiB (2,249 after the client left), 30 of 1 MB to 1,496 MiB without a cut, and
three flooders re-sending 3,000 subscriptions of 1 KB every 0.3 s +150 MiB. Now the XPUB
refuses frames over `SUBSCRIPTION_MAXMSGSIZE` inside libzmq (it drops the connection on the
frame's header), and the publisher cuts a connection at its first subscription over
`MAX_SUBSCRIPTION_BYTES` or past `MAX_REFUSED_BYTES_PER_PEER` of refused ones. Each attack
runs in its own process (`sub_flooder.py`); the daemon's RSS comes from /proc and must stay
within +20 MB at peak and after the attacker left, while windows keep flowing at real time.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import zmq

from helpers_daemon import short_tmpdir
from helpers_record import emotion
from helpers_reliability import (
    DEMO_FLAC,
    HERE,
    Daemon,
    emotions_in,
    free_tcp_port,
    rss_mb,
    serd_env,
    stop_process,
    sub_socket,
    write_config,
)
from serd.config import PublisherSettings
from serd.messages import EMOTION_PREFIX, decode
from serd.publisher import SUBSCRIPTION_MAXMSGSIZE, Publisher

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

FLOODER = HERE / "sub_flooder.py"
RSS_GROWTH_MAX_MB = 20.0
MIN_WINDOWS_SHARE = 0.5
"""Of the windows real time gives during the attack (2 per second at a 0.5 s hop): generous, the machine is shared."""
SETTLE_S = 4.0
STARTUP_S = 60.0
MB = 1_000_000

ATTACKS = {
    # name: (flooder arguments, seconds the attacker stays)
    "one 20 MB subscription": (["--bytes", str(20 * MB), "--topics", "1"], 10.0),
    "30 subscriptions of 1 MB": (["--bytes", str(MB), "--topics", "30"], 10.0),
    "3 flooders x 3000 of 1 KB, reconnecting every 0.3 s": (
        ["--bytes", "1000", "--topics", "3000", "--sockets", "3", "--reconnect-s", "0.3"], 25.0),
}
JUST_UNDER = "3 flooders x 3000 just under the XPUB's frame limit, reconnecting every 0.3 s"
ATTACKS[JUST_UNDER] = (["--bytes", str(SUBSCRIPTION_MAXMSGSIZE - 1), "--topics", "3000", "--sockets", "3",
                        "--reconnect-s", "0.3"], 25.0)
KNOWN_LIMIT = pytest.mark.xfail(reason="known limit (benchmarks/RELIABILITY.md): frames libzmq accepts pile up "
                                       "faster than the worker reads them; +80 to +92 MiB measured", strict=False)



@pytest.mark.parametrize("attack", [pytest.param(name, marks=KNOWN_LIMIT) if name == JUST_UNDER else name
                                    for name in ATTACKS])
def test_big_subscriptions_cost_the_daemon_little_and_windows_keep_flowing(tiny_model_int8, attack):
    flooder_args, attack_s = ATTACKS[attack]
    context = zmq.Context()
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    flooder = None
    with short_tmpdir("serd-bigsub-") as workdir:
        daemon = Daemon(["--config", write_config(workdir, "bigsub", None), "--source", DEMO_FLAC,
                         "--bind", endpoint, "--model", tiny_model_int8], workdir)
        sub = sub_socket(context, endpoint)
        try:
            deadline = time.monotonic() + STARTUP_S
            while not emotions_in(sub, 0.5):
                assert daemon.poll() is None and time.monotonic() < deadline, daemon.stderr_text()
            baseline = rss_mb(daemon.pid)
            flooder = subprocess.Popen([sys.executable, str(FLOODER), endpoint, *flooder_args, "--for-s", str(attack_s)],
                                       env=serd_env(), stdout=subprocess.PIPE, text=True)
            assert flooder.stdout.readline().strip() == "sent"
            peak = [baseline]
            windows = emotions_in(sub, attack_s, on_tick=lambda: peak.append(rss_mb(daemon.pid)))
            assert flooder.wait(timeout=30) == 0  # the attacker has left
            emotions_in(sub, SETTLE_S, on_tick=lambda: peak.append(rss_mb(daemon.pid)))
            settled = rss_mb(daemon.pid)
            assert daemon.poll() is None, daemon.stderr_text()
            stderr = daemon.stderr_text()
        finally:
            stop_process(flooder)
            sub.close(linger=0)
            daemon.close()
            context.term()
    print(f"{attack}: RSS {baseline:.1f} -> peak {max(peak):.1f} MiB (+{max(peak) - baseline:.1f}), "
          f"{SETTLE_S:.0f} s after the attacker left {settled:.1f} MiB (+{settled - baseline:.1f}); "
          f"{windows} windows in {attack_s:.0f} s (real time: {attack_s * 2:.0f})")
    assert "Traceback" not in stderr, stderr
    assert max(peak) - baseline < RSS_GROWTH_MAX_MB, (baseline, max(peak))
    assert settled - baseline < RSS_GROWTH_MAX_MB, (baseline, settled)
    assert windows >= MIN_WINDOWS_SHARE * attack_s * 2, windows


def test_the_longest_topic_serd_sends_can_still_be_subscribed_to():
    """The size limits leave room for a subscription to exactly the longest topic (a 64-character device)."""
    device = "d" * 64
    topic = (EMOTION_PREFIX + device).encode()
    publisher = Publisher(PublisherSettings(bind="tcp://127.0.0.1:*", linger_ms=0), device)
    context = zmq.Context()
    sub = sub_socket(context, publisher.endpoint, topic=topic)
    try:
        deadline, seq = time.monotonic() + 10.0, 0
        while not sub.poll(50):
            assert time.monotonic() < deadline, "the subscription to the longest topic never took effect"
            publisher.send(emotion(device, seq, time.time()))
            seq += 1
        assert decode(sub.recv_multipart()).topic.encode() == topic
        assert publisher.cut_peers == 0 and publisher.refused_subscriptions == 0
    finally:
        sub.close(linger=0)
        context.term()
        publisher.close()
