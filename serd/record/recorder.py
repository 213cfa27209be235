"""`serd record`'s subscriber loop: SUB socket -> decode -> rows -> the writer's bounded queue.

The loop (main thread, so signals are handled between its steps) is the only user of the
SUB socket and never waits on the database: `BatchWriter.offer` never blocks.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass

from serd.config import EX_INTERRUPTED
from serd.messages import EMOTION_PREFIX, STATUS_PREFIX, EmotionMessage, MessageError, decode
from serd.notify import SystemdNotifier
from serd.record.rows import EMOTION, STATUS, Tracker, status_row, window_row
from serd.record.journal import Journal
from serd.record.store import Store, describe_url
from serd.record.writer import BatchWriter, WriterSettings
from serd.record.writes import load_tracker

_LOGGER = logging.getLogger(__name__)

POLL_MS = 250
RECV_BATCH = 1000
"""Messages taken per wake-up before checking the writer, the report and signals."""
REPORT_EVERY_S = 60.0
"""How often the recorder logs (and tells systemd) what it received, wrote and dropped."""


@dataclass
class RecorderCounts:
    received: int = 0
    malformed: int = 0
    gaps: int = 0
    missing: int = 0
    sessions: int = 0
    replayed: int = 0
    """Messages whose seq and time went back for their device: ignored."""


class Recorder:
    def __init__(self, store: Store, endpoints: list[str], writer_settings: WriterSettings,
                 server_key=None, client_key=None, notifier: SystemdNotifier | None = None,
                 journal: Journal | None = None) -> None:
        self.store = store
        self.endpoints = endpoints
        self.server_key = server_key
        self.client_key = client_key
        self.notifier = notifier or SystemdNotifier()
        self.counts = RecorderCounts()
        self.writer = BatchWriter(store, writer_settings, journal)
        self.writer.replay_journal()  # what an earlier run could not write, before the tracker reads the database
        self.tracker: Tracker = load_tracker(store)
        self._stop = threading.Event()
        self.interrupted = False
        self.subscriber = None
        """The Subscriber while running (it counts the connections ZeroMQ dropped and it repaired)."""

    def request_stop(self, signum: int | None = None, _frame=None) -> None:
        # Ctrl-C: a clean stop all the same, but the exit code says it was interrupted (as every serd command).
        self.interrupted = self.interrupted or signum == signal.SIGINT
        self._stop.set()

    def handle(self, frames: list[bytes]) -> None:
        """One message: decode (the one place), place it in its session, queue its rows."""
        try:
            message = decode(frames)
        except MessageError as exc:
            self.counts.malformed += 1
            log = _LOGGER.warning if self.counts.malformed == 1 else _LOGGER.debug
            log("skipped a malformed message (%s)", exc)
            return
        self.counts.received += 1
        topic = EMOTION if isinstance(message, EmotionMessage) else STATUS
        placed = self.tracker.place(message.device, topic, message.seq, message.time)
        if placed is None:
            self.counts.replayed += 1
            log = _LOGGER.warning if self.counts.replayed == 1 else _LOGGER.debug
            log("%s: ignored a %s message whose seq and time went back (seq %d): a replay or a duplicate",
                message.device, topic, message.seq)
            return
        for row in placed.sessions:
            self.counts.sessions += 1
            self.writer.offer("sessions", row)
        for row in placed.gaps:
            self.counts.gaps += 1
            self.counts.missing += row[5]
            self.writer.offer("gaps", row)
        row = window_row(message, placed.session) if topic == EMOTION else status_row(message, placed.session)
        self.writer.offer("windows" if topic == EMOTION else "statuses", row, message.device, topic, placed.session,
                          message.seq, message.time)

    def summary(self) -> str:
        c, w = self.counts, self.writer.counts
        return (f"{len(self.tracker)} rooms, received {c.received}, written {w.written}, queued {self.writer.queued}, "
                f"dropped {w.dropped}, lost on the way {c.missing} in {c.gaps} gaps, malformed {c.malformed}, "
                f"replayed {c.replayed}, refused by the database {sum(w.refused.values())}, "
                f"connections dropped by ZeroMQ {self.subscriber.dropped if self.subscriber else 0}")

    def run(self) -> int:
        """Until SIGTERM (0), SIGINT (130) or a database that cannot be written (1)."""
        import zmq

        from serd.subscriber import Subscriber

        sub = self.subscriber = Subscriber(self.endpoints, [EMOTION_PREFIX, STATUS_PREFIX], self.server_key, self.client_key)
        self.writer.start()
        self.notifier.ready("recording")
        _LOGGER.info("recording %s into %s", ", ".join(self.endpoints), describe_url(self.store.url))
        next_report = time.monotonic() + REPORT_EVERY_S
        watchdog_s = self.notifier.watchdog_interval_s()
        next_ping = 0.0
        try:
            while not self._stop.is_set() and self.writer.error is None and self.writer.is_alive():
                if sub.poll(POLL_MS):
                    for _ in range(RECV_BATCH):
                        try:
                            frames = sub.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self.handle(frames)
                if watchdog_s and time.monotonic() >= next_ping:
                    self.notifier.watchdog()
                    next_ping = time.monotonic() + watchdog_s
                if time.monotonic() >= next_report:
                    next_report = time.monotonic() + REPORT_EVERY_S
                    _LOGGER.info("%s", self.summary())
                    self.notifier.status(self.summary())
        finally:
            sub.close()
            self.notifier.stopping()
            self.writer.stop()
            _LOGGER.info("stopped: %s", self.summary())
        if self.writer.error is not None or self.writer.lost:
            return 1
        return EX_INTERRUPTED if self.interrupted else 0
