"""The ZeroMQ PUB socket: bind, HWM, optional CURVE, never blocks, clean close.

Used by one thread only (the daemon's worker). A subscriber that does not read
fills its own queue up to `sndhwm`; after that ZeroMQ drops *its* messages
(it sees a `seq` gap) while everyone else keeps receiving.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
from pathlib import Path

import zmq

from serd.config import PublisherSettings, is_loopback_endpoint
from serd.messages import Message, encode

_LOGGER = logging.getLogger(__name__)


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


class Publisher:
    def __init__(self, settings: PublisherSettings, context: zmq.Context | None = None) -> None:
        self.settings = settings
        self._own_context = context is None
        self._context = context or zmq.Context()
        self._auth = None
        self.sent = 0
        self.dropped = 0
        self._socket = self._context.socket(zmq.PUB)
        try:
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

    def send(self, message: Message) -> bool:
        """Queue a message without ever blocking; False (and counted) if it could not be queued."""
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
