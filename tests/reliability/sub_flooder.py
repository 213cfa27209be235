"""Subscription attackers for the flood tests (`test_subscription_size.py`), in their own process.

    python tests/reliability/sub_flooder.py ENDPOINT --bytes N --topics K [--sockets S]
                                            [--reconnect-s R] [--for-s D]

S XSUB sockets each send K distinct subscriptions of N bytes (SNDHWM 0: every one goes out).
With `--reconnect-s`, each socket is closed and a fresh one sends the whole list again that
often; without it the sockets stay (an XSUB reconnects by itself after a cut and re-sends its
list). Prints `sent` once the first list is queued, and exits after D seconds (the attacker
leaves). A separate process, so that its memory and CPU are not the test's.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import zmq

SUBSCRIBE = b"\x01"


def topics(count: int, size: int) -> list[bytes]:
    """Distinct subscriptions of `size` bytes: a different head on each, so that no two share a trie path."""
    filler = b"x" * max(0, size - 12)
    return [SUBSCRIBE + f"{i:012d}".encode()[:size] + filler for i in range(count)]


def flooder(context: zmq.Context, endpoint: str, frames: list[bytes]) -> zmq.Socket:
    sock = context.socket(zmq.XSUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RECONNECT_IVL, 10)  # back at once after each cut (default 100 ms)
    sock.connect(endpoint)
    for frame in frames:
        sock.send(frame)
    return sock


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("endpoint")
    parser.add_argument("--bytes", type=int, required=True)
    parser.add_argument("--topics", type=int, required=True)
    parser.add_argument("--sockets", type=int, default=1)
    parser.add_argument("--reconnect-s", type=float, default=0.0)
    parser.add_argument("--for-s", type=float, required=True)
    args = parser.parse_args()
    frames = topics(args.topics, args.bytes)
    context = zmq.Context()
    socks = [flooder(context, args.endpoint, frames) for _ in range(args.sockets)]
    print("sent", flush=True)
    started = time.monotonic()
    while time.monotonic() - started < args.for_s:
        time.sleep(args.reconnect_s or 0.1)
        if args.reconnect_s:
            for i, sock in enumerate(socks):
                sock.close(linger=0)
                socks[i] = flooder(context, args.endpoint, frames)
    # Leave without closing: libzmq frees a subscription trie recursively, one level per byte, and a
    # socket that sent a 1 MB subscription overflows the stack doing so (a segfault at exit).
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
