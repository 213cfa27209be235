"""The batched writer: a bounded queue in front of the database, drained by one thread.

The subscriber only calls `offer()`, which never blocks. The writer commits one transaction
per `flush_s` or per `batch_rows` rows, and retries a transient failure (a locked file, a
lost server) with a short bounded backoff (a returning database is written to within
`RETRY_MAX_S`), one log line per change of error or per minute, never per attempt in a loop.
During a long outage, a half-full queue is moved to the journal (journal.py) in the state
directory; rows the journal cannot take either stay queued, and when the queue is full new
rows are dropped, counted, and recorded as a gap with reason "dropped" (never silently). On
a permanent failure (a full disk, a read-only file) it stops with `error` set. Whatever is
not written when it stops (a stop during an outage, a permanent failure) goes to the journal;
the next start replays it, oldest first. Only rows the journal could not take either are
lost, and `lost` says how many. A row the database refuses (a constraint, a value beyond its
range) is dropped and counted, and the rest of its batch written row by row: one bad row never
stops the recorder (nor sits in the journal for ever). Before each commit it checks that the
database file is still the one at its path (a deleted file would swallow every row). It also
runs retention every `prune_every_s`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from serd.record.journal import Journal, JournalError
from serd.record.rows import DROPPED
from serd.record.store import Store, StoreError
from serd.record.writes import Batch, prune, write_batch

_LOGGER = logging.getLogger(__name__)

RETRY_FIRST_S = 0.25
RETRY_MAX_S = 2.0
"""Backoff bounds while the database cannot take a batch: each attempt is one connection or one
lock wait, and a database that comes back is written to at most this long afterwards."""
RETRY_LOG_EVERY_S = 60.0
"""While the same error repeats, it is logged once a minute (a new error at once)."""
STOP_FLUSH_S = 5.0
"""On shutdown, how long the writer keeps trying to commit what is queued before journaling it."""
PRUNE_RETRY_S = 30.0
"""Retention postponed by a busy database is tried again this much later."""
SPILL_FRACTION = 0.5
"""During an outage, the queue moves to the journal once it is this full (the rest of the queue
takes what arrives until the writer's next attempt)."""
KINDS = ("sessions", "windows", "statuses", "gaps")
"""A batch's tables in the order rows are journaled and written one by one (a session before its windows)."""
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
    spooled: int = 0
    """Rows moved to the journal (the database could not take them in time), to be written later."""


class BatchWriter(threading.Thread):
    def __init__(self, store: Store, settings: WriterSettings, journal: Journal | None = None) -> None:
        super().__init__(name="serd-record-writer", daemon=True)
        self.store = store
        self.settings = settings
        self.journal = journal
        self.counts = WriterCounts()
        self.error: StoreError | None = None
        self.kept = 0
        """Rows left in the journal when this run stopped (the next start writes them)."""
        self.lost = 0
        """Rows that neither the database nor the journal took."""
        self.lost_reason = ""
        self._queue: deque[tuple[str, tuple]] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop_requested = threading.Event()
        # (device, topic) -> [session, seq before the first dropped one, count, time of the first]
        self._dropped: dict[tuple[str, str], list] = {}
        self._next_prune = 0.0
        self._last_start: dict[tuple[str, int], float] = {}
        """(device, session) -> the last written window's start_s: how far each window advances the recording."""
        self._batch: Batch | None = None
        """The batch being written, kept for the final journaling if it never is."""
        self._from_journal = False
        self._skip_written = False
        self._failing_since: float | None = None
        self._attempts = 0
        self._last_error = ""
        self._logged = ("", 0.0)

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
        """Commit what is queued (for up to STOP_FLUSH_S), then journal whatever is left. Called once the
        subscriber has stopped offering rows."""
        self._stop_requested.set()
        self._wake.set()
        if self.is_alive():
            self.join(timeout)
        self._keep_unwritten()

    def replay_journal(self) -> int:
        """At start, before subscribing: write every journaled row (so that sessions and seqs carry on
        from them). Returns the rows written; a StoreError leaves the journal for the next try."""
        written = 0
        while self.journal is not None and self.journal.pending():
            batch = self.journal.next_batch(self.settings.batch_rows)
            if not batch:
                self.journal.replayed()
                continue
            written += self._write(batch, skip_written=True)
        if written:
            _LOGGER.info("wrote %d rows kept in %s by an earlier run", written, self.journal.path)
        return written

    def outcome(self) -> str | None:
        """One line for the user when rows are lost or the database failed for good; None otherwise."""
        if self.error is None and not self.lost:
            return None
        what = [str(self.error)] if self.error is not None else []
        if self.kept:
            what.append(f"{self.kept} rows kept in {self.journal.path} for the next serd record")
        if self.lost:
            cause = f" ({self.lost_reason})" if self.lost_reason else ""
            if self.error is None:
                cause = f" (the database: {self._last_error}; {self.lost_reason or 'no journal'})"
            what.append(f"{self.lost} rows lost{cause}")
        return "; ".join(what)

    # -- the writer's side -------------------------------------------------------------------
    def run(self) -> None:
        delay = RETRY_FIRST_S
        stop_deadline: float | None = None
        while True:
            if self._stop_requested.is_set() and stop_deadline is None:
                stop_deadline = time.monotonic() + STOP_FLUSH_S
            if self._batch is None:
                self._batch = self._next_batch()
            batch = self._batch
            if not batch:
                self._batch = None
                if stop_deadline is not None:
                    break
                self._maybe_prune()
                self._wake.wait(self.settings.flush_s)
                self._wake.clear()
                continue
            try:
                if self.store.reopen_if_replaced():
                    self.counts.reopened += 1
                self._write(batch, self._skip_written)
            except StoreError as exc:
                if not exc.transient:
                    self.error = exc  # the recorder reports it, once, and exits 1
                    break
                self.counts.retries += 1
                self._skip_written = True  # a failed COMMIT may have gone through: never count a row twice
                self._note_failure(exc)
                if stop_deadline is not None and time.monotonic() >= stop_deadline:
                    break
                self._spill_if_filling()
                if stop_deadline is None:
                    self._stop_requested.wait(delay)  # a stop cuts the wait short, once
                else:
                    time.sleep(max(0.0, min(delay, stop_deadline - time.monotonic())))
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            except Exception as exc:  # a row the driver cannot take: report it and exit 1, never die silently
                self.error = StoreError(f"cannot write a batch of {len(batch)} rows: {type(exc).__name__}: {exc}")
                break
            if self._failing_since is not None:
                _LOGGER.warning("the database is back after %.1f s (%d attempts): writing %d queued rows",
                                time.monotonic() - self._failing_since, self._attempts, self.queued)
                self._failing_since = None
            delay = RETRY_FIRST_S
            self.counts.batches += 1
            self._batch = None
            self._skip_written = False
            if not self._from_journal and stop_deadline is None and len(self._queue) < self.settings.batch_rows:
                # Wait for the rest of this second's rows: one transaction per flush_s, not per row.
                self._wake.wait(self.settings.flush_s)
                self._wake.clear()

    def _write(self, batch: Batch, skip_written: bool) -> int:
        """Commit a batch; if the database refuses a row of it, write it row by row without that row.
        Returns (and counts) the rows written."""
        try:
            write_batch(self.store, batch, self._last_start, skip_written=skip_written)
        except StoreError as exc:
            if not exc.refused:
                raise
        except UNBINDABLE:
            pass
        else:
            self.counts.written += len(batch)
            return len(batch)
        return self._write_each(batch, skip_written)

    def _write_each(self, batch: Batch, skip_written: bool) -> int:
        # Rows leave `batch` as they are done, so a transient failure half-way retries only the rest
        # (and a stop journals only the rest).
        written = 0
        try:
            for kind in KINDS:
                rows = getattr(batch, kind)
                while rows:
                    try:
                        write_batch(self.store, Batch(**{kind: rows[:1]}), self._last_start,
                                    skip_written=skip_written)
                    except StoreError as exc:
                        if not exc.refused:
                            raise
                        self._refuse(kind, str(exc))
                    except UNBINDABLE as exc:
                        self._refuse(kind, f"{type(exc).__name__}: {exc}")
                    else:
                        written += 1
                    del rows[0]
        finally:
            self.counts.written += written
        return written

    def _refuse(self, kind: str, reason: str) -> None:
        refused = self.counts.refused[kind] = self.counts.refused.get(kind, 0) + 1
        if refused == 1:  # once per kind; the recorder's summary counts the rest
            _LOGGER.warning("the database refused a row of %s and it was dropped (%s); further refused rows "
                            "are counted in the summary", kind, reason)

    def _next_batch(self) -> Batch:
        """Journaled rows first (they are older than anything queued), then the queue."""
        while self.journal is not None and self.journal.pending():
            batch = self.journal.next_batch(self.settings.batch_rows)
            if batch:
                self._from_journal = self._skip_written = True
                return batch
            self.journal.replayed()
        self._from_journal = False
        return self._take()

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

    def _note_failure(self, exc: StoreError) -> None:
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since, self._attempts = now, 0
        self._attempts += 1
        self._last_error = str(exc)
        text, at = self._logged
        if self._last_error != text or now - at >= RETRY_LOG_EVERY_S:
            self._logged = (self._last_error, now)
            _LOGGER.warning("cannot write to the database: %s (attempt %d, retrying every %.0f s at most; "
                            "%d rows queued)", exc, self._attempts, RETRY_MAX_S, self.queued)

    def _spill_if_filling(self) -> None:
        """During an outage: move the queue to the journal before it fills up and rows are dropped."""
        if self.journal is None or len(self._queue) < self.settings.queue_rows * SPILL_FRACTION:
            return
        with self._lock:
            rows = list(self._queue)
            self._queue.clear()
        kept = self._journal(rows)
        if kept < len(rows):
            with self._lock:  # older than anything queued since: back at the front
                self._queue.extendleft(reversed(rows[kept:]))
        else:
            _LOGGER.warning("moved %d queued rows to %s (the database is still away)", kept, self.journal.path)

    def _keep_unwritten(self) -> None:
        """After the thread has stopped: the batch it was writing and the queue go to the journal."""
        rows: list[tuple[str, tuple]] = []
        if self._batch is not None and not self._from_journal:  # a journaled batch is still in its file
            rows += [(kind, row) for kind in KINDS for row in getattr(self._batch, kind)]
        self._batch = None
        batch = self._take()
        rows += [(kind, row) for kind in KINDS for row in getattr(batch, kind)]
        kept = self._journal(rows) if rows else 0
        if kept < len(rows):
            self.lost += len(rows) - kept
            self.lost_reason = self.lost_reason or "no journal"
        if self.journal is not None:
            self.kept = self.journal.rows_waiting()
        if self.kept and self.error is None and not self.lost:
            _LOGGER.warning("the database did not take %d rows before the stop (%s): they are kept in %s, and the "
                            "next serd record writes them", self.kept, self._last_error or "no answer",
                            self.journal.path)

    def _journal(self, rows: list[tuple[str, tuple]]) -> int:
        """Append rows to the journal; how many it took (the rest: lost_reason says why)."""
        if self.journal is None:
            return 0
        try:
            kept = self.journal.append(rows)
        except JournalError as exc:
            kept = exc.kept
            self.lost_reason = f"the journal: {exc}"
            _LOGGER.error("cannot keep %d rows in the journal: %s", len(rows) - kept, exc)
        self.counts.spooled += kept
        return kept

    def _maybe_prune(self) -> None:
        now = time.monotonic()
        if now < self._next_prune:
            return
        self._next_prune = now + self.settings.prune_every_s
        try:
            removed = prune(self.store, time.time(), self.settings.keep_days, self.settings.keep_aggregate_days)
            if any(removed.values()):
                freed = self.store.reclaim_space()
                _LOGGER.info("retention removed %s%s", ", ".join(f"{n} {table}" for table, n in removed.items() if n),
                             f"; {freed / 1e6:.1f} MB of disk given back" if freed else "")
        except StoreError as exc:
            if not exc.transient:
                self.error = exc
                self._stop_requested.set()
            else:
                _LOGGER.warning("retention postponed: %s", exc)
                self._next_prune = now + PRUNE_RETRY_S
