"""Decoded messages -> table rows, and what a message's `seq` says: same session, a gap, or a restart.

Only fields the daemons publish are kept (no audio, no features): the privacy promise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from serd.messages import EmotionMessage, StatusMessage

EMOTION = "emotion"
STATUS = "status"
LOST = "lost"
"""Gap reason: a seq jump on the socket (the daemon or the network lost messages, or the recorder was down)."""
DROPPED = "dropped"
"""Gap reason: the recorder received the messages but had to drop them (its queue was full)."""


def _probs_json(probs: dict[str, float] | None) -> str | None:
    return None if probs is None else json.dumps(probs, separators=(",", ":"))


WINDOW_COLUMNS = ("device", "session", "seq", "time", "captured_at", "start_s", "end_s", "speech", "level_dbfs",
                  "probs", "smoothed", "label", "confidence", "model", "arousal", "smoothed_arousal")
STATUS_COLUMNS = ("device", "session", "seq", "time", "state", "uptime_s", "source", "model", "windows", "published",
                  "overruns", "dropped", "cpu_percent", "rss_mb", "detail", "version")
SESSION_COLUMNS = ("device", "session", "started_at", "first_seq")
GAP_COLUMNS = ("device", "session", "topic", "reason", "after_seq", "missing", "time")


def window_row(m: EmotionMessage, session: int) -> tuple:
    return (m.device, session, m.seq, m.time, m.captured_at, m.start_s, m.end_s, bool(m.speech), m.level_dbfs,
            _probs_json(m.probs), _probs_json(m.smoothed), m.label, m.confidence, m.model,
            m.arousal, m.smoothed_arousal)


def status_row(m: StatusMessage, session: int) -> tuple:
    return (m.device, session, m.seq, m.time, m.state, m.uptime_s, m.source, m.model, m.windows, m.published,
            m.overruns, m.dropped, m.cpu_percent, m.rss_mb, m.detail, m.version)


@dataclass
class Position:
    """Where one device's topic stands: its session and the last seq seen."""

    session: int
    seq: int


@dataclass
class Tracker:
    """Per device and topic: which session a message belongs to, and the gaps before it.

    `seq` going back (to 0 after a daemon restart) on either topic starts a new session,
    which the other topic then joins when its own seq goes back; a jump forward is a gap
    of that many messages. Seeded from the database, so a recorder restart continues
    the sessions it had (and counts what it missed while down as gaps).
    """

    positions: dict[tuple[str, str], Position] = field(default_factory=dict)
    sessions: dict[str, int] = field(default_factory=dict)

    def place(self, device: str, topic: str, seq: int, time: float) -> tuple[int, list[tuple], list[tuple]]:
        """(session, new session rows, gap rows) for a message."""
        key = (device, topic)
        last = self.positions.get(key)
        new_sessions: list[tuple] = []
        gaps: list[tuple] = []
        session = self.sessions.get(device)
        restarted = last is not None and seq <= last.seq
        if session is None or (restarted and last.session == session):
            session = self._new_session(device, time, seq)
            new_sessions.append((device, session, time, seq))
        elif last is not None and last.session == session and seq > last.seq + 1:
            gaps.append((device, session, topic, LOST, last.seq, seq - last.seq - 1, time))
        self.positions[key] = Position(session, seq)
        return session, new_sessions, gaps

    def _new_session(self, device: str, time: float, seq: int) -> int:
        session = int(round(time * 1000))
        previous = self.sessions.get(device)
        if previous is not None and session <= previous:
            session = previous + 1  # a clock that stepped back must not merge two sessions
        self.sessions[device] = session
        return session
