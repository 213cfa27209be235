"""systemd service notifications (sd_notify) without an extra dependency.

A `Type=notify` service tells systemd how it is doing by sending small text
datagrams (``READY=1``, ``STATUS=...``, ``WATCHDOG=1``, ...) to the unix socket
named in ``$NOTIFY_SOCKET``. This module speaks that protocol with the standard
library only (see ``sd_notify(3)`` and ``sd_watchdog_enabled(3)``).

Outside systemd (``$NOTIFY_SOCKET`` unset) every call is a no-op, so the daemon
calls it unconditionally. A send never blocks and never raises: the worker loop
calls `SystemdNotifier.watchdog` on its hot path, and a notification that cannot
be delivered must not stop the audio. Failures are logged at debug level.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

_LOGGER = logging.getLogger(__name__)

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV = "WATCHDOG_USEC"
WATCHDOG_PID_ENV = "WATCHDOG_PID"

USEC_PER_S = 1_000_000
WATCHDOG_PING_FRACTION = 0.5
"""Ping at half the watchdog timeout, as sd_watchdog_enabled(3) recommends."""


def _socket_address(value: str) -> str | None:
    """The address to send to for a ``$NOTIFY_SOCKET`` value, or None if unusable.

    ``/path`` is a filesystem socket; ``@name`` is a Linux abstract socket, whose
    address starts with a NUL byte instead of the ``@``. Other forms (``vsock:``,
    used by VMs) are not supported here.
    """
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    return None


def _one_line(text: str) -> str:
    """Status text on one line: a newline would start a new ``KEY=VALUE`` field."""
    return " ".join(text.splitlines())


class SystemdNotifier:
    """Sends sd_notify messages to systemd, or does nothing outside systemd.

    ``$NOTIFY_SOCKET`` (and the watchdog variables) are read once, when the
    notifier is made. Safe to share between threads: each message is one
    datagram, sent with a single non-blocking ``sendto``.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        """Read the notify socket and watchdog settings.

        Args:
            environ: the environment to read (default ``os.environ``); tests pass
                their own mapping.
        """
        env = os.environ if environ is None else environ
        self._address: str | None = None
        self._sock: socket.socket | None = None
        self._watchdog_usec = _watchdog_usec(env)

        raw = env.get(NOTIFY_SOCKET_ENV, "")
        if not raw:
            return
        address = _socket_address(raw)
        if address is None:
            _LOGGER.debug("unsupported %s=%r; systemd notifications are off", NOTIFY_SOCKET_ENV, raw)
            return
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.setblocking(False)
        except OSError as exc:
            _LOGGER.debug("cannot open a notify socket (%s); systemd notifications are off", exc)
            return
        self._address = address
        self._sock = sock

    @property
    def enabled(self) -> bool:
        """True when running under systemd with a usable ``$NOTIFY_SOCKET``."""
        return self._sock is not None

    def watchdog_interval_s(self) -> float | None:
        """How often to call `watchdog`, in seconds, or None when no watchdog is asked for.

        Half of ``$WATCHDOG_USEC``. None when it is unset or invalid, when
        ``$WATCHDOG_PID`` names another process (the watchdog is not ours), or
        when notifications are off (a ping could not reach systemd anyway).
        """
        if self._watchdog_usec is None or not self.enabled:
            return None
        return self._watchdog_usec * WATCHDOG_PING_FRACTION / USEC_PER_S

    def ready(self, status: str = "") -> bool:
        """Startup is finished (for serd: audio flows); optionally with a status line."""
        fields = ["READY=1"]
        if status:
            fields.append("STATUS=" + _one_line(status))
        return self.send(*fields)

    def status(self, text: str) -> bool:
        """A one-line, human-readable state shown by ``systemctl status``."""
        return self.send("STATUS=" + _one_line(text))

    def watchdog(self) -> bool:
        """The service is alive: resets systemd's ``WatchdogSec=`` timer."""
        return self.send("WATCHDOG=1")

    def stopping(self) -> bool:
        """The service has begun to shut down."""
        return self.send("STOPPING=1")

    def reloading(self) -> bool:
        """The service has begun to reload its configuration; call `ready` when done.

        systemd requires ``MONOTONIC_USEC=`` (CLOCK_MONOTONIC, in microseconds) with
        ``RELOADING=1`` to tell this reload apart from earlier ones.
        """
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}")

    def extend_timeout(self, seconds: float) -> bool:
        """Ask systemd for more time in the current start/stop phase (slow model load)."""
        return self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * USEC_PER_S)}")

    def send(self, *fields: str) -> bool:
        """Send ``KEY=VALUE`` fields in one datagram; True if it was handed to the kernel.

        Never blocks and never raises: a failure is logged at debug level.
        """
        sock, address = self._sock, self._address  # one read: `close` may run in another thread
        if sock is None or address is None:
            return False
        message = "\n".join(fields).encode("utf-8")
        try:
            sock.sendto(message, address)
        except OSError as exc:  # ENOENT, ECONNREFUSED, EAGAIN (queue full), closed socket...
            _LOGGER.debug("systemd notification %r not sent: %s", fields, exc)
            return False
        return True

    def close(self) -> None:
        """Close the socket; later calls are no-ops."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def __enter__(self) -> SystemdNotifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    """``$WATCHDOG_USEC`` when it is valid and meant for this process, else None."""
    raw_usec = env.get(WATCHDOG_USEC_ENV, "")
    if not raw_usec:
        return None
    try:
        usec = int(raw_usec)
    except ValueError:
        _LOGGER.debug("ignoring invalid %s=%r", WATCHDOG_USEC_ENV, raw_usec)
        return None
    if usec <= 0:
        return None
    raw_pid = env.get(WATCHDOG_PID_ENV, "")
    if raw_pid:
        try:
            pid = int(raw_pid)
        except ValueError:
            _LOGGER.debug("ignoring invalid %s=%r", WATCHDOG_PID_ENV, raw_pid)
            return None
        if pid != os.getpid():
            # systemd set the watchdog for another process (we were forked or
            # started by a wrapper): pinging would be wrong.
            return None
    return usec
