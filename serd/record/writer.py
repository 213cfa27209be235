"""The batched writer: a bounded queue in front of the database, drained by one thread.

The subscriber only calls `offer()`, which never blocks: when the queue is full (a slow or
locked database) the row is dropped and counted per device, and the next batch records
the loss as a gap with reason "dropped" (never silently). The writer commits one
transaction per `flush_s` or per `batch_rows` rows, retries a transient failure (a locked
file, a lost server) with backoff while the queue absorbs what arrives, and stops on a
permanent one (a full disk, a read-only file) with `error` set for the recorder to report.
A row the database refuses (a constraint, a value beyond its range) is dropped and counted,
and the rest of its batch written row by row: one bad row never stops the recorder.
Before each commit it checks that the database file is still the one at its path (a deleted
file would swallow every row). It also runs retention every `prune_every_s`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from serd.record.rows import DROPPED
from serd.record.store import Store, StoreError
from serd.record.writes import Batch, prune, write_batch

_LOGGER = logging.getLogger(__name__)

RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0
STOP_FLUSH_S = 10.0
"""On shutdown, how long the writer keeps trying to commit what is queued."""
BATCH_KINDS = ("sessions", "windows", "statuses", "gaps")
"""The rows of a batch, in the order they are written (a window's session first)."""
UNBINDABLE = (OverflowError, ValueError)
"""What a driver raises for a value it cannot send at all (sqlite3: an integer over 64 bits)."""


@dataclass(frozen=True)
class WriterSettings:
    flush_s: float = 1.0
    batch_rows: int = 1000
    queue_rows: int = 100_000
    keep_days: float = 14.0
    keep_aggregate_days: float = 365.0
    prune_every_s: float = 3600.0


@dataclass
class WriterCounts:
    written: int = 0
    dropped: int = 0
    batches: int = 0
    retries: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    """Rows the database refused, by kind (windows, statuses, sessions, gaps): dropped."""
    reopened: int = 0
    """Times the database file was found deleted or replaced, and a new one opened."""


class BatchWriter(threading.Thread):
    def __init__(self, store: Store, settings: WriterSettings) -> None:
        super().__init__(name="serd-record-writer", daemon=True)
        self.store = store
        self.settings = settings
        self.counts = WriterCounts()
        self.error: StoreError | None = None
        self._queue: deque[tuple[str, tuple]] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop_requested = threading.Event()
        # (device, topic) -> [session, seq before the first dropped one, count, time of the first]
        self._dropped: dict[tuple[str, str], list] = {}
        self._next_prune = 0.0
        self._last_start: dict[tuple[str, int], float] = {}
        """(device, session) -> the last written window's start_s: how far each window advances the recording."""

    # -- the subscriber's side ---------------------------------------------------------------
    def offer(self, kind: str, row: tuple, device: str = "", topic: str = "", session: int = 0, seq: int = 0,
              at: float = 0.0) -> bool:
        """Queue a row (kind: windows, statuses, sessions, gaps); False if the queue was full (counted)."""
        with self._lock:
            if len(self._queue) < self.settings.queue_rows:
                self._queue.append((kind, row))
                if len(self._queue) >= self.settings.batch_rows:
                    self._wake.set()
                return True
            self.counts.dropped += 1
            entry = self._dropped.setdefault((device, topic), [session, seq - 1, 0, at])
            entry[2] += 1
            return False

    @property
    def queued(self) -> int:
        return len(self._queue)

    def stop(self, timeout: float = STOP_FLUSH_S + 5.0) -> None:
        self._stop_requested.set()
        self._wake.set()
        if self.is_alive():
            self.join(timeout)

    # -- the writer's side -------------------------------------------------------------------
    def run(self) -> None:
        delay = RETRY_FIRST_S
        batch: Batch | None = None
        stop_deadline: float | None = None
        while True:
            if self._stop_requested.is_set() and stop_deadline is None:
                stop_deadline = time.monotonic() + STOP_FLUSH_S
            if batch is None:
                batch = self._take()
            if not batch:
                batch = None
                if stop_deadline is not None:
                    break
                self._maybe_prune()
                self._wake.wait(self.settings.flush_s)
                self._wake.clear()
                continue
            try:
                if self.store.reopen_if_replaced():
                    self.counts.reopened += 1
                self._write(batch)
            except StoreError as exc:
                if not exc.transient:
                    self.error = exc  # the recorder reports it, once, and exits 1
                    break
                self.counts.retries += 1
                if stop_deadline is not None and time.monotonic() > stop_deadline:
                    _LOGGER.error("stopping with %d rows not written: %s", len(batch) + self.queued, exc)
                    break
                _LOGGER.warning("database busy, retrying in %.1f s (%d rows queued): %s", delay, self.queued, exc)
                self._stop_requested.wait(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            except Exception as exc:  # a row the driver cannot take: report it and exit 1, never die silently
                self.error = StoreError(f"cannot write a batch of {len(batch)} rows: {type(exc).__name__}: {exc}")
                break
            delay = RETRY_FIRST_S
            self.counts.batches += 1
            batch = None
            if stop_deadline is None and len(self._queue) < self.settings.batch_rows:
                # Wait for the rest of this second's rows: one transaction per flush_s, not per row.
                self._wake.wait(self.settings.flush_s)
                self._wake.clear()

    def _write(self, batch: Batch) -> None:
        """Commit a batch; if the database refuses a row of it, write it row by row without that row."""
        try:
            write_batch(self.store, batch, self._last_start)
        except StoreError as exc:
            if not exc.refused:
                raise
        except UNBINDABLE:
            pass
        else:
            self.counts.written += len(batch)
            return
        self._write_each(batch)

    def _write_each(self, batch: Batch) -> None:
        # Rows leave `batch` as they are done, so a transient failure half-way retries only the rest.
        for kind in BATCH_KINDS:
            rows = getattr(batch, kind)
            while rows:
                try:
                    write_batch(self.store, Batch(**{kind: rows[:1]}), self._last_start)
                except StoreError as exc:
                    if not exc.refused:
                        raise
                    self._refuse(kind, str(exc))
                except UNBINDABLE as exc:
                    self._refuse(kind, f"{type(exc).__name__}: {exc}")
                else:
                    self.counts.written += 1
                del rows[0]

    def _refuse(self, kind: str, reason: str) -> None:
        refused = self.counts.refused[kind] = self.counts.refused.get(kind, 0) + 1
        if refused == 1:  # once per kind; the recorder's summary counts the rest
            _LOGGER.warning("the database refused a row of %s and it was dropped (%s); further refused rows "
                            "are counted in the summary", kind, reason)

    def _take(self) -> Batch:
        batch = Batch()
        with self._lock:
            for _ in range(min(self.settings.batch_rows, len(self._queue))):
                kind, row = self._queue.popleft()
                getattr(batch, kind).append(row)
            dropped, self._dropped = self._dropped, {}
        for (device, topic), (session, after_seq, count, at) in dropped.items():
            batch.gaps.append((device, session, topic, DROPPED, after_seq, count, at))
            _LOGGER.warning("%s: dropped %d %s messages (the database fell behind)", device, count, topic)
        return batch

    def _maybe_prune(self) -> None:
        now = time.monotonic()
        if now < self._next_prune:
            return
        self._next_prune = now + self.settings.prune_every_s
        try:
            prune(self.store, time.time(), self.settings.keep_days, self.settings.keep_aggregate_days)
        except StoreError as exc:
            if not exc.transient:
                self.error = exc
                self._stop_requested.set()
            else:
                _LOGGER.warning("retention postponed: %s", exc)
                self._next_prune = now + RETRY_MAX_S
