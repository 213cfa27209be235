"""The SUB socket every serd consumer reads from (`listen`, `record`, the dashboard), and its recovery.

Each refuses frames over `MAX_MESSAGE_BYTES` inside ZeroMQ (ZMQ_MAXMSGSIZE): libzmq drops
that publisher before the frame is buffered. But libzmq treats the oversized frame as a
protocol error and ends that connection's session for good: it never reconnects, so one
bad frame (a 100 MB one, or a 70 KB one) left the endpoint deaf to every later publisher,
with no log line and no count. libzmq reconnects by itself only after a connection error,
and then says so at once on the socket monitor (CONNECT_RETRIED right after DISCONNECTED).
So a `Subscriber` watches its monitor, and a disconnection not followed by a retry within
`RETRY_GRACE_S` is counted (`dropped`), logged, and repaired by connecting afresh.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import zmq
import zmq.auth
from zmq.utils.monitor import recv_monitor_message

from serd.messages import MAX_MESSAGE_BYTES

_LOGGER = logging.getLogger(__name__)

RETRY_GRACE_S = 1.0
"""libzmq announces its own reconnection at once (same I/O thread, in order); this is ample on a busy Pi."""
DROP_LOG_EVERY = 100
"""After the first, one warning per this many dropped connections (a hostile publisher must not flood the log)."""
_WATCHED = zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED | zmq.EVENT_CONNECT_DELAYED | zmq.EVENT_CONNECTED
_RETRYING = zmq.EVENT_CONNECT_RETRIED | zmq.EVENT_CONNECT_DELAYED | zmq.EVENT_CONNECTED


class Subscriber:
    """A SUB socket connected and subscribed (CURVE when both key files are given), owned by one thread.

    Read it with `poll` and `recv_multipart`; `poll` also repairs connections libzmq gave up on.
    """

    def __init__(self, endpoints: list[str], topics: list[str], server_key: Path | None = None,
                 client_key: Path | None = None, context: zmq.Context | None = None) -> None:
        self.endpoints = list(endpoints)
        self.topics = list(topics)
        self.dropped = 0
        """Connections libzmq ended for good (a frame over MAX_MESSAGE_BYTES, a failed handshake), reconnected."""
        self._context = context or zmq.Context.instance()
        self._curve = _curve_keys(server_key, client_key)
        self._given_up: dict[str, float] = {}
        """Endpoint -> when its disconnection counts as final unless libzmq retries before."""
        self.socket, self._monitor = self._open()

    def _open(self) -> tuple[zmq.Socket, zmq.Socket]:
        sock = self._context.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        if self._curve is not None:
            sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = self._curve
        for topic in self.topics:
            sock.setsockopt(zmq.SUBSCRIBE, topic.encode("utf-8"))
        monitor = sock.get_monitor_socket(_WATCHED)
        try:
            for endpoint in self.endpoints:
                sock.connect(endpoint)
        except zmq.ZMQError:
            self._close(sock, monitor)
            raise
        return sock, monitor

    def poll(self, timeout_ms: int) -> bool:
        """True if a message is waiting; repairs given-up connections meanwhile."""
        deadline = time.monotonic() + timeout_ms / 1000.0
        while True:
            self._watch()
            now = time.monotonic()
            wait_s = min([deadline, *self._given_up.values()]) - now
            if self.socket.poll(max(0, int(wait_s * 1000))):
                return True
            if time.monotonic() >= deadline:
                self._watch()
                return False

    def recv_multipart(self, flags: int = 0) -> list[bytes]:
        return self.socket.recv_multipart(flags)

    def _watch(self) -> None:
        while self._monitor.poll(0):
            event = recv_monitor_message(self._monitor)
            endpoint = event["endpoint"].decode("utf-8", "replace")
            if event["event"] == zmq.EVENT_DISCONNECTED:
                self._given_up[endpoint] = time.monotonic() + RETRY_GRACE_S
            elif event["event"] & _RETRYING:
                self._given_up.pop(endpoint, None)
        if self._given_up and min(self._given_up.values()) <= time.monotonic():
            self._reconnect([e for e, at in self._given_up.items() if at <= time.monotonic()])

    def _reconnect(self, endpoints: list[str]) -> None:
        for endpoint in endpoints:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % DROP_LOG_EVERY == 0:
                _LOGGER.warning("%s: connection dropped (a frame over %d bytes, or a failed handshake) and ZeroMQ "
                                "will not retry it: reconnecting (%d so far)", endpoint, MAX_MESSAGE_BYTES, self.dropped)
        # Only the dropped endpoints are connected afresh: a new socket would also cut the healthy
        # publishers for a moment and lose what they sent meanwhile. libzmq names an endpoint as it
        # resolved it, which need not be the string it was given (a host name); only then is the
        # whole socket opened afresh.
        self._given_up.clear()
        if not set(endpoints) <= set(self.endpoints):
            self._close(self.socket, self._monitor)
            self.socket, self._monitor = self._open()
            return
        for endpoint in endpoints:
            try:
                self.socket.disconnect(endpoint)
            except zmq.ZMQError:
                pass  # libzmq may have forgotten the ended session already; connecting again is what matters
            self.socket.connect(endpoint)

    @staticmethod
    def _close(sock: zmq.Socket, monitor: zmq.Socket) -> None:
        try:
            sock.disable_monitor()
        except zmq.ZMQError:
            pass
        monitor.close(linger=0)
        sock.close(linger=0)

    def close(self) -> None:
        self._close(self.socket, self._monitor)


def _curve_keys(server_key: Path | None, client_key: Path | None) -> tuple[bytes, bytes, bytes] | None:
    """(server public, client public, client secret) from key files; None without CURVE; ValueError if half given."""
    if not (server_key or client_key):
        return None
    if not (server_key and client_key):
        raise ValueError("CURVE needs both --server-key and --client-key")
    server_public, _ = zmq.auth.load_certificate(server_key)
    client_public, client_secret = zmq.auth.load_certificate(client_key)
    if client_secret is None:
        raise ValueError(f"{client_key}: holds no secret key (use the .key_secret file)")
    return server_public, client_public, client_secret
