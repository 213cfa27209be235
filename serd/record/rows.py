"""Decoded messages -> table rows, and what a message's `seq` says: same session, a gap, or a restart.

Only fields the daemons publish are kept (no audio, no features): the privacy promise.
"""

from __future__ import annotations

import json
from collections import OrderedDict
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


MAX_TRACKED_DEVICES = 1024
"""Devices whose session and last `seq` the recorder holds in memory (a few hundred bytes each). Beyond
this the least recently heard one is forgotten: its rows are in the database, and if it speaks again its
messages open a new session. Like the dashboard's `MAX_DEVICES` (256), higher because one recorder may
keep a whole school; it also bounds what a restarted recorder reads back (`writes.load_tracker`)."""


@dataclass
class Position:
    """Where one device's topic stands: its session, and the seq and time of its last message."""

    session: int
    seq: int
    time: float


@dataclass
class Track:
    """One device: its current session and where each topic stands."""

    session: int
    positions: dict[str, Position] = field(default_factory=dict)


@dataclass
class Placement:
    """Where a message goes: its session, and the session and gap rows it opens."""

    session: int
    sessions: list[tuple] = field(default_factory=list)
    gaps: list[tuple] = field(default_factory=list)


class Tracker:
    """Per device and topic: which session a message belongs to, and the gaps before it.

    `seq` going back (to 0 after a daemon restart) while time goes on, on either topic, starts a
    new session, which the other topic then joins when its own seq goes back; a jump forward is
    a gap of that many messages. A message whose seq *and* time both go back is an old message
    replayed (or a duplicate): it is refused (`place` returns None) rather than taken for a
    restart, which would open a session and then record an invented gap. Seeded from the
    database, so a recorder restart continues the sessions it had (and counts what it missed
    while down as gaps). Holds at most `max_devices` devices, the most recently heard.
    """

    def __init__(self, max_devices: int = MAX_TRACKED_DEVICES) -> None:
        self.max_devices = max_devices
        self.devices: OrderedDict[str, Track] = OrderedDict()
        self.forgotten = 0
        """Devices dropped from memory to stay within `max_devices`."""

    def __len__(self) -> int:
        return len(self.devices)

    @property
    def sessions(self) -> dict[str, int]:
        return {device: track.session for device, track in self.devices.items()}

    def seed(self, device: str, session: int, topic: str | None = None, seq: int = 0, time: float = 0.0) -> None:
        """What the database says (a recorder restart): the device's session and a topic's last message."""
        track = self._hear(device, session)
        if topic is not None:
            track.positions[topic] = Position(session, seq, time)

    def place(self, device: str, topic: str, seq: int, time: float) -> Placement | None:
        """Where a message goes; None for a replayed one (seq and time both went back)."""
        track = self.devices.get(device)
        last = track.positions.get(topic) if track is not None else None
        if last is not None and seq <= last.seq and time <= last.time:
            return None
        if track is None or (last is not None and seq <= last.seq and last.session == track.session):
            session = self._new_session(track, time)
            track = self._hear(device, session)
            placement = Placement(session, sessions=[(device, session, time, seq)])
        else:
            self.devices.move_to_end(device)
            placement = Placement(track.session)
            if last is not None and last.session == track.session and seq > last.seq + 1:
                placement.gaps.append((device, track.session, topic, LOST, last.seq, seq - last.seq - 1, time))
        track.positions[topic] = Position(track.session, seq, time)
        return placement

    def _hear(self, device: str, session: int) -> Track:
        track = self.devices.get(device)
        if track is None:
            track = self.devices[device] = Track(session)
            while len(self.devices) > self.max_devices:
                self.devices.popitem(last=False)
                self.forgotten += 1
        else:
            track.session = session
            self.devices.move_to_end(device)
        return track

    @staticmethod
    def _new_session(track: Track | None, time: float) -> int:
        session = int(round(time * 1000))
        if track is not None and session <= track.session:
            session = track.session + 1  # a clock that stepped back must not merge two sessions
        return session
