"""The dashboard's ZeroMQ subscriber: one thread owns the SUB socket (sockets are not thread-safe)."""

from __future__ import annotations

import logging
import threading

from serd.dashboard.settings import DashboardError, DashboardSettings
from serd.dashboard.state import DashboardState
from serd.messages import EMOTION_PREFIX, STATUS_PREFIX, MessageError, decode

_LOGGER = logging.getLogger(__name__)

ZMQ_POLL_MS = 250
"""The subscriber wakes at least this often to check staleness and whether to stop."""
ZMQ_BATCH = 1000
"""Messages taken per wake-up before checking staleness again."""


class StreamReader(threading.Thread):
    """Owns the SUB socket from creation to close; nothing else touches it."""

    def __init__(self, settings: DashboardSettings, state: DashboardState) -> None:
        super().__init__(name="serd-dashboard-zmq", daemon=True)
        self.settings = settings
        self.state = state
        self.error: str | None = None
        self._stop_requested = threading.Event()
        self._connected = threading.Event()

    def start_and_wait(self, timeout: float = 10.0) -> None:
        self.start()
        if not self._connected.wait(timeout):
            raise DashboardError("the ZeroMQ subscriber did not start")
        if self.error:
            raise DashboardError(self.error)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop_requested.set()
        if self.is_alive():
            self.join(timeout)

    def run(self) -> None:
        import zmq

        from serd.subscriber import Subscriber

        try:
            sub = Subscriber(list(self.settings.connect), [EMOTION_PREFIX, STATUS_PREFIX],
                             self.settings.server_key, self.settings.client_key)
        except (ValueError, OSError, zmq.ZMQError) as exc:
            self.error = f"cannot subscribe to {', '.join(self.settings.connect)}: {exc}"
            self._connected.set()
            return
        self._connected.set()
        try:
            while not self._stop_requested.is_set():
                if sub.poll(ZMQ_POLL_MS):
                    for _ in range(ZMQ_BATCH):
                        try:
                            frames = sub.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self._handle(frames)
                self.state.dropped_connections = sub.dropped
                self.state.check_stale()
        except zmq.ZMQError as exc:  # the context was terminated under us: nothing more to read
            _LOGGER.error("ZeroMQ subscriber stopped: %s", exc)
        finally:
            sub.close()

    def _handle(self, frames: list[bytes]) -> None:
        try:
            message = decode(frames)
        except MessageError as exc:
            self.state.count_malformed()
            log = _LOGGER.warning if self.state.malformed == 1 else _LOGGER.debug
            log("skipped a malformed message (%s)", exc)
            return
        try:
            self.state.apply(message)
        except Exception:  # a bug in handling one message must not end the live view for everyone
            self.state.count_malformed()
            _LOGGER.exception("could not apply a message from %s; skipped", message.device)
