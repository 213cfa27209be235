"""N keeping-up subscribers in one process, for the load run (`helpers_reliability.load`).

    python tests/reliability/sub_swarm.py ENDPOINT N

Prints `ready` once every socket has received a message (its subscription reached the
daemon), then reads all sockets until each has seen the final `stopping` status (or
nothing came for IDLE_S), and prints one JSON line per socket: emotion messages, first and
last `seq`, the gaps, whether it saw the stop; socket 0 also reports the latency
(receipt - `captured_at`) over the first and the last fifth of the run. A separate process,
so that its decoding does not share a GIL with the test that watches the daemon.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import zmq

IDLE_S = 60.0
READY_S = 60.0


def latency_summary(latencies: list[float]) -> dict:
    fifth = max(1, len(latencies) // 5)

    def stats(values: list[float]) -> dict:
        ms = 1000.0 * np.asarray(values)
        return {"p50": round(float(np.median(ms)), 2), "p95": round(float(np.percentile(ms, 95)), 2),
                "max": round(float(ms.max()), 2)}

    return {"first_fifth": stats(latencies[:fifth]), "last_fifth": stats(latencies[-fifth:])} if latencies else {}


def main() -> int:
    endpoint, n = sys.argv[1], int(sys.argv[2])
    context = zmq.Context()
    sockets = []
    for _ in range(n):
        sock = context.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.setsockopt(zmq.SUBSCRIBE, b"serd.")
        sock.connect(endpoint)
        sockets.append(sock)
    deadline = time.monotonic() + READY_S
    for sock in sockets:  # a waiting message proves the subscription; it is read below with the rest
        if not sock.poll(max(0, int(1000 * (deadline - time.monotonic())))):
            print("not ready: a subscriber heard nothing", flush=True)
            return 1
    print("ready", flush=True)

    poller = zmq.Poller()
    for sock in sockets:
        poller.register(sock, zmq.POLLIN)
    index = {sock: i for i, sock in enumerate(sockets)}
    stats = [{"emotions": 0, "first": None, "last": None, "gaps": 0, "missing": 0, "stopped": False}
             for _ in sockets]
    latencies: list[float] = []
    last_message = time.monotonic()
    while not all(s["stopped"] for s in stats) and time.monotonic() - last_message < IDLE_S:
        for sock, _ in poller.poll(1000):
            i = index[sock]
            while True:
                try:
                    topic, body = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                now = time.time()
                message = json.loads(body)
                s = stats[i]
                if topic.startswith(b"serd.emotion."):
                    seq = message["seq"]
                    if s["first"] is None:
                        s["first"] = seq
                    elif seq != s["last"] + 1:
                        s["gaps"] += 1
                        s["missing"] += seq - s["last"] - 1
                    s["last"] = seq
                    s["emotions"] += 1
                    if i == 0:
                        latencies.append(now - message["captured_at"])
                elif message["state"] == "stopping":
                    s["stopped"] = True
                    poller.unregister(sock)
                    break
            last_message = time.monotonic()
    stats[0]["latency_ms"] = latency_summary(latencies)
    for s in stats:
        print(json.dumps(s), flush=True)
    context.destroy(linger=0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
