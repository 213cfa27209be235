"""Rows the database could not take, kept in a local file until it can.

When `serd record` stops while the database is down (or cannot take rows at all), and when its
queue fills up during a long outage, the rows go to a journal in the state directory instead of
being lost: JSON lines, one row each (`["windows", [device, session, seq, ...]]`), holding only
what the daemons published (the same columns as the tables; never audio). The writer replays the
journal before anything newer, in the order it was written, so the history comes out as if the
database had never been away; a row already in the database (a replay cut short, a COMMIT whose
answer was lost) is recognised and skipped.

Two files per database: `NAME.jsonl` takes new rows; replaying renames it to `NAME.replay.jsonl`
first, so that rows spilled while a replay runs land in a fresh file, after it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from serd.record.writes import Batch

_LOGGER = logging.getLogger(__name__)

JOURNAL_PREFIX = "unwritten-"
KINDS = ("windows", "statuses", "sessions", "gaps")
CHUNK_ROWS = 1000
"""Rows written (and synced) at a time: a write that fails is cut back to the last whole chunk."""


class JournalError(OSError):
    """The journal could not take rows: `kept` of them made it, the rest did not."""

    def __init__(self, message: str, kept: int) -> None:
        super().__init__(message)
        self.kept = kept


def journal_path(state_dir: Path, database: str) -> Path:
    """One journal per database (`database`: its identity, without a password), in the state directory."""
    digest = hashlib.sha256(database.encode()).hexdigest()[:12]
    return state_dir / f"{JOURNAL_PREFIX}{digest}.jsonl"


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.replay_path = path.with_suffix(".replay.jsonl")
        self._lock = threading.Lock()
        self._reader: Iterator[tuple[str, list]] | None = None
        self.skipped = 0
        """Lines that were not a whole row (a write cut off by a crash): skipped on replay, and said so."""

    def pending(self) -> bool:
        """Whether rows are waiting to be replayed."""
        return self._reader is not None or any(_size(p) > 0 for p in (self.replay_path, self.path))

    def rows_waiting(self) -> int:
        """How many rows the files hold (counted by lines; for messages, not on the hot path)."""
        total = 0
        for p in (self.replay_path, self.path):
            try:
                with open(p, "rb") as f:
                    total += sum(1 for _ in f)
            except FileNotFoundError:
                pass
        return total

    def append(self, rows: Iterable[tuple[str, tuple]]) -> int:
        """Add (kind, row) pairs; returns how many were kept. On a failure (a full or read-only disk)
        the file is cut back to its last whole chunk and JournalError says how many made it."""
        kept = 0
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            except OSError as exc:
                raise JournalError(f"{self.path}: {exc.strerror or exc}", 0) from None
            try:
                chunk: list[str] = []
                for kind, row in rows:
                    chunk.append(json.dumps([kind, list(row)], separators=(",", ":"), allow_nan=False))
                    if len(chunk) >= CHUNK_ROWS:
                        kept += self._write(fd, chunk, kept)
                        chunk = []
                if chunk:
                    kept += self._write(fd, chunk, kept)
            finally:
                os.close(fd)
                if _size(self.path) == 0:
                    self.path.unlink(missing_ok=True)  # no empty file left to look like a journal
        return kept

    def _write(self, fd: int, lines: list[str], kept: int) -> int:
        data = ("\n".join(lines) + "\n").encode()
        good = os.lseek(fd, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError as exc:
            try:
                os.ftruncate(fd, good)  # no half chunk: what is in the file is whole rows
            except OSError:
                pass
            raise JournalError(f"{self.path}: {exc.strerror or exc}", kept) from None
        return len(lines)

    def next_batch(self, rows: int) -> Batch:
        """The next `rows` rows to replay, oldest first; an empty batch once the journal is done."""
        batch = Batch()
        if self._reader is None:
            if not self.replay_path.exists():
                if _size(self.path) == 0:
                    return batch
                os.replace(self.path, self.replay_path)
            self._reader = self._read(self.replay_path)
        for kind, row in self._reader:
            getattr(batch, kind).append(tuple(row))
            if len(batch) >= rows:
                break
        return batch

    def replayed(self) -> None:
        """Every row of the replay file is in the database: drop the file."""
        self._reader = None
        try:
            self.replay_path.unlink()
        except FileNotFoundError:
            pass
        if self.skipped:
            _LOGGER.warning("%s: skipped %d lines that were not a whole row", self.replay_path, self.skipped)
            self.skipped = 0

    def _read(self, path: Path) -> Iterator[tuple[str, list]]:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    kind, row = json.loads(line)
                except ValueError:
                    self.skipped += 1
                    continue
                if kind in KINDS and isinstance(row, list):
                    yield kind, row
                else:
                    self.skipped += 1


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
