"""The ZeroMQ publisher socket: bind, HWM, optional CURVE, never blocks, clean close.

Used by one thread only (the daemon's worker). A subscriber that does not read
fills its own queue up to `sndhwm`; after that ZeroMQ drops *its* messages
(it sees a `seq` gap) while everyone else keeps receiving.

It is an XPUB socket with manual subscriptions (ZMQ_XPUB_MANUAL), not a PUB: a PUB
keeps every subscription any peer sends in a trie (30,000 distinct ones took a
daemon from 62 MB to 1.44 GB). Here the worker reads the subscriptions itself, a
few at each send, and accepts only prefixes of this daemon's own two topics
(`serd.`, `serd.emotion.<device>`, ...), so a well-behaved subscriber holds at most
a few dozen. libzmq still records each subscription it receives until that
connection closes (one trie node per byte), so what a connection can make it hold is
bounded two ways: a frame over `SUBSCRIPTION_MAXMSGSIZE` drops the connection inside
libzmq before it is assembled (with CURVE, a larger limit that the handshake needs, for
authorized clients only); and a connection that sends more than `MAX_REFUSED_PER_PEER`
other subscriptions, or more than `MAX_REFUSED_BYTES_PER_PEER` bytes of them, is cut
(its socket shut down; libzmq then frees what it recorded).
Each cut connection leaves 40-55 KB of freed-but-kept heap behind in glibc (measured),
so after cuts the publisher hands free heap back to the OS (`TRIM_EVERY_S`); see
benchmarks/RELIABILITY.md, "Hostile input".
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import time
from pathlib import Path

import zmq

from serd.config import PublisherSettings, is_loopback_endpoint
from serd.messages import EMOTION_PREFIX, STATUS_PREFIX, Message, encode
from serd.procstats import release_free_memory

_LOGGER = logging.getLogger(__name__)

MAX_REFUSED_PER_PEER = 32
"""Subscriptions to anything but serd's own topics one connection may send before it is cut off."""
MAX_REFUSED_BYTES_PER_PEER = 2048
"""...and their bytes: libzmq keeps each one (a trie node per byte, ~50 bytes each) until the connection ends."""
SUBSCRIPTION_MAXMSGSIZE = 128
"""The XPUB's ZMQ_MAXMSGSIZE: libzmq drops a connection on the header of a bigger frame, before it is
assembled or recorded (one 20 MB subscription took the daemon to 2.2 GB before). serd's longest topic is
77 bytes (`serd.emotion.` and a 64-character device), its subscription 78; handshake commands count too
(NULL's READY is ~30 bytes)."""
CURVE_SUBSCRIPTION_MAXMSGSIZE = 512
"""The same with CURVE, whose INITIATE command from a SUB socket is ~300 bytes (measured: 256 refused
it, 300 let it through). Only authorized clients get past the handshake to send a subscription."""
SUBSCRIPTIONS_PER_SECOND = 1000
"""Subscription messages read per second at most (a real subscriber sends one or two), so that a flood
costs the worker little, and is cut at a bounded pace: about 30 connections a second, each leaving
40-55 KB for the next trim. Unread ones wait inside libzmq, a few per connection (`SUBSCRIPTION_RCVHWM`)."""
FRAMES_PER_CALL = 5000
"""Subscription messages read in one call at most, unsubscriptions included (a few ms of work)."""
SUBSCRIPTION_RCVHWM = 10
"""Subscription messages libzmq takes from one connection ahead of the worker reading them (a real
subscriber sends one or two; more just wait in TCP). Small, because each one libzmq takes in is also
recorded by it until that connection ends: with 100, a flooder reconnecting after every cut cost the
daemon +53 MB in 18 s; with 10, +5 MB (measured with 30,000 subscriptions re-sent on each reconnect)."""
TRIM_EVERY_S = 0.25
"""After cuts, free heap is handed back to the OS at most this often (a trim takes 1-5 ms here)."""
TRIM_FOR_S = 2.0
"""...and until this long after the last cut: libzmq ends a cut connection, and frees what it held,
only as the socket is next used, so a trim at the moment of the cut would find little to give back."""
CUT_LOG_EVERY = 100
"""After the first, one warning per this many connections cut (a flood must not flood the log)."""
SUBSCRIBE, UNSUBSCRIBE = 1, 0
"""First byte of a subscription message."""


def _ipc_path(endpoint: str) -> str:
    """The socket file of an ipc:// endpoint; "" for other transports, wildcards and abstract sockets."""
    path = endpoint.removeprefix("ipc://") if endpoint.startswith("ipc://") else ""
    return "" if not path or path == "*" or path.startswith("@") else path


def _ipc_in_use(endpoint: str) -> bool:
    """True if a process is listening on the unix socket of an ipc:// endpoint.

    For ipc://, ZeroMQ's bind removes an existing socket file and binds afresh, so a
    second daemon would silently steal the endpoint from a running one.
    """
    path = _ipc_path(endpoint)
    if not path:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:  # no file, or a stale one nobody listens on: ZeroMQ may replace it
            return False
    return True


class PublisherError(RuntimeError):
    """The socket cannot be set up (address in use, bad keys); one line for the user.

    `config_error`: the configuration is wrong (a key file), so restarting cannot help.
    """

    def __init__(self, message: str, config_error: bool = False) -> None:
        super().__init__(message)
        self.config_error = config_error


def topic_prefixes(device_id: str) -> frozenset[bytes]:
    """Every subscription this daemon accepts: the prefixes of its own topics ("" and "serd." included)."""
    topics = [(prefix + device_id).encode("utf-8") for prefix in (EMOTION_PREFIX, STATUS_PREFIX)]
    return frozenset(topic[:n] for topic in topics for n in range(len(topic) + 1))


class Publisher:
    def __init__(self, settings: PublisherSettings, device_id: str, context: zmq.Context | None = None) -> None:
        self.settings = settings
        self._own_context = context is None
        self._context = context or zmq.Context()
        self._auth = None
        self.sent = 0
        self.dropped = 0
        self.refused_subscriptions = 0
        self.cut_peers = 0
        self._accepted = topic_prefixes(device_id)
        self._refused_by_fd: dict[int, list[int]] = {}
        """Refused subscriptions and their bytes, by the descriptor of the connection that sent them."""
        self._budget_second = 0
        self._budget_left = SUBSCRIPTIONS_PER_SECOND
        self._trim_until: float | None = None
        """Hand free heap back to the OS until then (monotonic seconds; set by a cut); None: nothing to do."""
        self._trimmed_at = 0.0
        self._client_by_fd: dict[int, str] = {}
        """CURVE: the client key (z85) behind each connection that subscribed, to cut revoked ones on reload.
        Keyed by descriptor, so it holds at most one entry per descriptor number the process can have."""
        self._socket = self._context.socket(zmq.XPUB)
        try:
            self._socket.setsockopt(zmq.XPUB_MANUAL, 1)
            self._socket.setsockopt(zmq.RCVHWM, SUBSCRIPTION_RCVHWM)
            self._socket.setsockopt(zmq.MAXMSGSIZE, CURVE_SUBSCRIPTION_MAXMSGSIZE if settings.curve.enabled
                                    else SUBSCRIPTION_MAXMSGSIZE)
            self._socket.setsockopt(zmq.SNDHWM, settings.sndhwm)
            self._socket.setsockopt(zmq.LINGER, settings.linger_ms)
            if settings.curve.enabled:
                self._start_curve()
            elif not is_loopback_endpoint(settings.bind):
                _LOGGER.warning("publishing UNENCRYPTED on %s: anyone who can reach it can read the stream", settings.bind)
            if _ipc_in_use(settings.bind):
                # ZeroMQ would unlink the live socket file and take the endpoint over silently.
                raise zmq.ZMQError(zmq.EADDRINUSE)
            self._socket.bind(settings.bind)
        except zmq.ZMQError as exc:
            self.close()
            hint = " (another serd running? choose another publisher.bind)" if exc.errno == zmq.EADDRINUSE else ""
            raise PublisherError(f"cannot bind {settings.bind}: {exc.strerror}{hint}") from None
        except PublisherError:
            self.close()
            raise
        self.endpoint = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        _LOGGER.info("publishing on %s%s", self.endpoint, " (CURVE)" if settings.curve.enabled else "")

    def _start_curve(self) -> None:
        import zmq.auth
        from zmq.auth.thread import ThreadAuthenticator

        curve = self.settings.curve
        secret_file = Path(curve.server_secret_key or "")
        clients = Path(curve.authorized_clients or "")
        if not secret_file.is_file():
            raise PublisherError(f"publisher.curve.server_secret_key: {secret_file} not found (make keys with: serd keys DIR)", config_error=True)
        if not clients.is_dir():
            raise PublisherError(f"publisher.curve.authorized_clients: {clients} is not a directory", config_error=True)
        try:
            public, secret = zmq.auth.load_certificate(secret_file)
        except (ValueError, OSError) as exc:
            raise PublisherError(f"publisher.curve.server_secret_key: {secret_file}: {exc}", config_error=True) from None
        if secret is None:
            raise PublisherError(f"publisher.curve.server_secret_key: {secret_file} holds no secret key", config_error=True)
        # Authentication runs before anything reaches the socket: only listed client keys get in.
        self._auth = ThreadAuthenticator(self._context, log=logging.getLogger("serd.auth"))
        self._auth.start()
        self._auth.configure_curve(domain="*", location=str(clients))
        self._socket.curve_secretkey = secret
        self._socket.curve_publickey = public
        self._socket.curve_server = True  # must precede bind

    def serve_subscriptions(self) -> None:
        """Accept or refuse the subscriptions that arrived (at most `SUBSCRIPTIONS_PER_SECOND`); never blocks."""
        self._release_memory_of_cut_peers()
        second = int(time.monotonic())
        if second != self._budget_second:
            self._budget_second, self._budget_left = second, SUBSCRIPTIONS_PER_SECOND
        for _ in range(FRAMES_PER_CALL):
            if self._budget_left <= 0:
                return
            try:
                frame = self._socket.recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            body = frame.bytes
            kind, topic = (body[0], body[1:]) if body else (None, b"")
            if kind != UNSUBSCRIBE:
                # Unsubscriptions are libzmq's own, for the subscriptions of ended connections: draining
                # them is cheap and frees them, so only the rest is rationed.
                self._budget_left -= 1
            if kind in (SUBSCRIBE, UNSUBSCRIBE) and topic in self._accepted:
                # Applies to the connection this subscription came from (libzmq's "last pipe").
                self._socket.setsockopt(zmq.SUBSCRIBE if kind == SUBSCRIBE else zmq.UNSUBSCRIBE, topic)
                if kind == SUBSCRIBE and self._auth is not None:
                    self._remember_client(frame)
            elif kind != UNSUBSCRIBE:  # libzmq sends unsubscriptions itself for closed connections
                self._refuse(frame)

    def _remember_client(self, frame: zmq.Frame) -> None:
        try:
            fd, client = frame.get(zmq.SRCFD), frame.get("User-Id")  # User-Id: the z85 key, set by ZAP
        except zmq.ZMQError:
            return
        if fd >= 0 and client:
            self._client_by_fd[fd] = client

    def reload_clients(self) -> int:
        """CURVE: re-read `authorized_clients` and cut the connections of keys no longer in it.

        ZeroMQ authenticates a client only when it connects, so re-reading the list alone would
        leave a revoked client receiving until it reconnects. Returns the connections cut.

        A list that cannot be read (the directory deleted, a key file broken) is an empty list,
        not the old one (pyzmq's `configure_curve` keeps the old list and only logs): every
        connection is cut and nobody gets in until it is readable and serd reloaded again. Then
        PublisherError says so, for the daemon to refuse the reload.
        """
        if self._auth is None:
            return 0
        import zmq.auth

        self.serve_subscriptions()  # know every connection that subscribed so far
        location = str(self.settings.curve.authorized_clients)
        problem = None
        try:
            certs = zmq.auth.load_certificates(location)
        except (OSError, ValueError) as exc:
            certs, problem = {}, str(exc) if Path(location).is_dir() else "not a directory (deleted?)"
        self._auth.certs["*"] = certs  # what configure_curve sets; the authenticator reads it per handshake
        allowed = {key.decode("ascii") if isinstance(key, bytes) else str(key) for key in certs}
        revoked = [fd for fd, client in self._client_by_fd.items() if client not in allowed]
        for fd in revoked:
            self._client_by_fd.pop(fd, None)
            self._shutdown(fd)
        if problem is not None:
            raise PublisherError(f"publisher.curve.authorized_clients: {location}: {problem}; no client is "
                                 f"authorized until it is readable and serd reloaded (SIGHUP); "
                                 f"{len(revoked)} connection(s) closed", config_error=True)
        _LOGGER.info("CURVE: %d authorized client key(s) re-read from %s; %d connection(s) of removed keys closed",
                     len(allowed), location, len(revoked))
        return len(revoked)

    def _refuse(self, frame: zmq.Frame) -> None:
        self.refused_subscriptions += 1
        try:
            fd = frame.get(zmq.SRCFD)
        except zmq.ZMQError:
            return
        if fd < 0:
            return
        refused = self._refused_by_fd.setdefault(fd, [0, 0])
        refused[0] += 1
        refused[1] += len(frame)
        if refused[0] > MAX_REFUSED_PER_PEER or refused[1] > MAX_REFUSED_BYTES_PER_PEER:
            self._cut(fd)
        if len(self._refused_by_fd) > 4 * MAX_REFUSED_PER_PEER:  # fds are reused; old counts do not matter
            self._refused_by_fd.clear()

    def _cut(self, fd: int) -> None:
        """Shut down a flooding connection; libzmq notices, ends it and frees its subscriptions."""
        self.cut_peers += 1
        if self.cut_peers == 1 or self.cut_peers % CUT_LOG_EVERY == 0:
            _LOGGER.warning("a subscriber sent more than %d subscriptions (or %d bytes of them) to other topics: "
                            "disconnected it (%d connection(s) cut so far)", MAX_REFUSED_PER_PEER,
                            MAX_REFUSED_BYTES_PER_PEER, self.cut_peers)
        self._shutdown(fd)
        self._refused_by_fd.pop(fd, None)
        self._trim_until = time.monotonic() + TRIM_FOR_S

    def _release_memory_of_cut_peers(self) -> None:
        """After cuts, give back the heap libzmq freed: a flood must not raise resident memory for good."""
        now = time.monotonic()
        if self._trim_until is None or now - self._trimmed_at < TRIM_EVERY_S:
            return
        if now >= self._trim_until:
            self._trim_until = None  # the last trim: the cut connections have ended by now
        self._trimmed_at = now
        release_free_memory()

    @staticmethod
    def _shutdown(fd: int) -> None:
        try:
            # shutdown() acts on the connection, not the descriptor, so a duplicate can do it without
            # taking the descriptor away from libzmq (which closes it when it ends the connection).
            peer = socket.socket(fileno=os.dup(fd))
        except OSError:
            return
        try:
            peer.shutdown(socket.SHUT_RDWR)
        except OSError:  # already gone, or (reused) not a socket: nothing to cut
            pass
        finally:
            peer.close()

    def send(self, message: Message) -> bool:
        """Queue a message without ever blocking; False (and counted) if it could not be queued."""
        self.serve_subscriptions()
        try:
            self._socket.send_multipart(encode(message), flags=zmq.NOBLOCK)
        except zmq.Again:
            self.dropped += 1
            return False
        self.sent += 1
        return True

    def close(self) -> None:
        if self._socket is not None and not self._socket.closed:
            self._socket.close()
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._own_context and not self._context.closed:
            self._context.term()
        self._remove_ipc_file()

    def _remove_ipc_file(self) -> None:
        """libzmq leaves an ipc:// socket file behind when it closes: remove ours.

        Only once our socket is gone (context terminated) and only if nobody listens on
        the file, so that an endpoint some other process took over is never pulled away.
        """
        path = _ipc_path(getattr(self, "endpoint", ""))
        if not path or not self._context.closed or _ipc_in_use(self.endpoint):
            return
        try:
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)
        except OSError as exc:  # already gone, or a directory we may not write to: nothing to tidy
            _LOGGER.debug("could not remove %s: %s", path, exc)
