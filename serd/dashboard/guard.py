"""What keeps the dashboard's web server up when a peer is hostile: caps, deadlines, throttles.

The standard-library server gives every connection a thread and a timeout per `recv`,
so a client trickling one byte every few seconds holds a thread for ever (Slowloris).
Here:

- `ConnectionGuard`: at most `MAX_CONNECTIONS` open connections, `MAX_PER_CLIENT` per
  address. A new connection over a cap takes the place of the oldest one still sending
  its headers (a slow client competes with itself, a real browser's request gets in);
  if none is, the new one is closed at once, before it costs a thread.
- `DeadlineReader`: reads against a total deadline (headers, then body), not per `recv`.
- `GuessThrottle`: a client that presents wrong tokens `MAX_BAD_TOKENS` times within
  `BAD_TOKEN_WINDOW_S` has its further wrong tokens answered 429 until the window passes.
  It throttles failures only: a right token or a valid cookie always gets in, so that a
  guesser behind the same NAT or proxy cannot lock the owner out (guessing itself is
  stopped by the token's length). A wrong cookie is never a guess: it carries an HMAC,
  not the token, and a stale one (expired, or made with a token since changed) is what
  the owner's browser sends.
- `client_key`: the address the throttle counts: the peer, or behind a trusted proxy the
  last X-Forwarded-For entry (the one that proxy added).
- `session_cookie` / `cookie_ok`: the cookie carries an issue time and an HMAC made with the
  token, not the token itself, and expires after `COOKIE_MAX_AGE_S`.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import ipaddress
import socket
import threading
import time

MAX_CONNECTIONS = 64
"""Open connections in all (each is a thread): event streams, page loads, uploads."""
MAX_PER_CLIENT = 16
"""Open connections from one address (a browser opens up to 6, an event stream keeps one)."""
MAX_EVICTING = 16
"""Evicted connections whose threads have not ended yet; while this many are, new ones are closed at once
(so threads never exceed MAX_CONNECTIONS + MAX_EVICTING)."""
HEADER_DEADLINE_S = 10.0
"""From the first byte of a request (or the end of the previous one) to the end of its headers."""
MAX_BAD_TOKENS = 10
BAD_TOKEN_WINDOW_S = 60.0
MAX_THROTTLED_CLIENTS = 4096
"""Addresses remembered by the throttle; beyond this the oldest windows are forgotten."""
COOKIE_MAX_AGE_S = 7 * 24 * 3600
COOKIE_CLOCK_SLACK_S = 60.0


class DeadlineReader(io.RawIOBase):
    """The socket's read side, with a total deadline (None: only the socket's own timeout)."""

    def __init__(self, sock: socket.socket, idle_timeout_s: float) -> None:
        super().__init__()
        self._sock = sock
        self._idle_timeout_s = idle_timeout_s
        self.deadline: float | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("deadline passed")
            self._sock.settimeout(min(left, self._idle_timeout_s))
        try:
            return self._sock.recv_into(buffer)
        finally:
            if self.deadline is not None:
                self._sock.settimeout(self._idle_timeout_s)  # writes keep the idle timeout


class ConnectionGuard:
    """Open connections by socket: the client's address, since when, whether still in its headers."""

    def __init__(self, max_connections: int = MAX_CONNECTIONS, max_per_client: int = MAX_PER_CLIENT,
                 trusted_proxy: str | None = None) -> None:
        self.max_connections = max_connections
        self.max_per_client = max_per_client
        self.trusted_proxy = trusted_proxy
        """Every client behind it shares its address: only the total cap applies to it."""
        self._lock = threading.Lock()
        self._open: dict[socket.socket, list] = {}  # sock -> [address, since, in_headers, evicted]
        self.refused = 0
        self.evicted = 0

    def admit(self, sock: socket.socket, address: str) -> bool:
        """Room for a new connection (evicting a slow one if need be); False: close it at once."""
        with self._lock:
            live = [s for s, entry in self._open.items() if not entry[3]]
            mine = [s for s in live if self._open[s][0] == address]
            if len(self._open) - len(live) >= MAX_EVICTING:
                victim = None  # evicted threads still ending: no room for more churn
            elif len(live) >= self.max_connections:
                victim = self._oldest_in_headers(live)
            elif len(mine) >= self.max_per_client and not (
                    self.trusted_proxy is not None and _same_address(address, self.trusted_proxy)):
                victim = self._oldest_in_headers(mine)
            else:
                victim = False
            if victim is None:
                self.refused += 1
                return False
            if victim:
                self._open[victim][3] = True  # counted until its thread releases it
                self.evicted += 1
                _shutdown(victim)
            self._open[sock] = [address, time.monotonic(), True, False]
            return True

    def _oldest_in_headers(self, socks) -> socket.socket | None:
        waiting = [s for s in socks if self._open[s][2]]
        return min(waiting, key=lambda s: self._open[s][1]) if waiting else None

    def headers_started(self, sock: socket.socket) -> None:
        with self._lock:
            if sock in self._open:
                self._open[sock][1] = time.monotonic()
                self._open[sock][2] = True

    def headers_done(self, sock: socket.socket) -> None:
        with self._lock:
            if sock in self._open:
                self._open[sock][2] = False

    def release(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.pop(sock, None)

    @property
    def open_count(self) -> int:
        """Connections with a thread: admitted ones and evicted ones still ending."""
        with self._lock:
            return len(self._open)


def _shutdown(sock: socket.socket) -> None:
    # Wakes the thread blocked reading it (it sees the end of the stream); that thread closes it.
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class GuessThrottle:
    """Wrong tokens per client address in a fixed window."""

    def __init__(self, limit: int = MAX_BAD_TOKENS, window_s: float = BAD_TOKEN_WINDOW_S) -> None:
        self.limit = limit
        self.window_s = window_s
        self._lock = threading.Lock()
        self._failures: dict[str, list[float]] = {}  # address -> [window start, count]

    def blocked(self, address: str) -> bool:
        with self._lock:
            entry = self._failures.get(address)
            return entry is not None and time.monotonic() - entry[0] < self.window_s and entry[1] >= self.limit

    def failed(self, address: str) -> bool:
        """Count a wrong token; True when this one reaches the limit (the client is throttled from now)."""
        now = time.monotonic()
        with self._lock:
            entry = self._failures.get(address)
            if entry is None or now - entry[0] >= self.window_s:
                if len(self._failures) >= MAX_THROTTLED_CLIENTS:
                    self._failures = {a: e for a, e in self._failures.items() if now - e[0] < self.window_s}
                    if len(self._failures) >= MAX_THROTTLED_CLIENTS:  # all current: forget the oldest half
                        keep = sorted(self._failures.items(), key=lambda item: item[1][0])[MAX_THROTTLED_CLIENTS // 2:]
                        self._failures = dict(keep)
                self._failures[address] = entry = [now, 0]
            entry[1] += 1
            return entry[1] == self.limit


def client_key(peer: str, forwarded_for: list[str], trusted_proxy: str | None) -> str:
    """Whom to throttle: the peer address, unless the peer is the trusted proxy.

    Then the last X-Forwarded-For entry: the address the proxy itself saw and appended (entries
    before it come from the client and may be forged). A missing or unreadable one counts as
    the proxy's own address, so such requests share one budget rather than escape it.
    """
    if trusted_proxy is None or not forwarded_for or not _same_address(peer, trusted_proxy):
        return peer
    last = forwarded_for[-1].split(",")[-1].strip()
    try:
        return str(ipaddress.ip_address(last))
    except ValueError:
        return peer


def _same_address(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a.removeprefix("::ffff:")) == ipaddress.ip_address(b)
    except ValueError:
        return False


def _cookie_mac(token: str, issued: int) -> str:
    return hmac.new(token.encode("utf-8"), f"serd-dashboard-cookie:{issued}".encode(), hashlib.sha256).hexdigest()


def session_cookie(token: str, now: float | None = None) -> str:
    """`ISSUED.MAC`: proves the token was presented at ISSUED without carrying it."""
    issued = int(time.time() if now is None else now)
    return f"{issued}.{_cookie_mac(token, issued)}"


def cookie_ok(token: str, value: str, now: float | None = None) -> bool:
    issued_text, _, mac = value.partition(".")
    if not issued_text.isdigit() or len(issued_text) > 12:
        return False
    issued = int(issued_text)
    age = (time.time() if now is None else now) - issued
    if not -COOKIE_CLOCK_SLACK_S <= age <= COOKIE_MAX_AGE_S:
        return False
    return hmac.compare_digest(mac.encode("ascii", "replace"), _cookie_mac(token, issued).encode("ascii"))
