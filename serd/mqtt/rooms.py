"""Per-room state between two MQTT publications: what the windows of the period add up to.

A daemon publishes a window every 0.5 s; the bridge publishes a room's state every
`publish_every_s` (10 s by default): the share of windows with speech, the mean level, the mean
smoothed arousal of the speech windows, the latest label, and the daemon's last status.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field

from serd.messages import EmotionMessage, Message, StatusMessage

NODE_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
"""Home Assistant's node ids take letters, digits, _ and -; serd device ids also `.` and `:`."""
ONLINE, OFFLINE = "online", "offline"


def node_id(device: str) -> str:
    """The room's Home Assistant node id: `serd_<device>`, a short hash added where characters were replaced
    (so that `room.1` and `room_1` stay two devices)."""
    safe = NODE_UNSAFE.sub("_", device)
    if safe != device:
        safe += "_" + hashlib.sha1(device.encode("utf-8")).hexdigest()[:6]
    return f"serd_{safe}"


@dataclass
class Room:
    device: str
    last_heard: float = field(default_factory=time.monotonic)
    """Monotonic time of the room's last message (window or heartbeat)."""
    windows: int = 0
    speech_windows: int = 0
    level_sum: float = 0.0
    arousal_sum: float = 0.0
    arousal_windows: int = 0
    last_label: str | None = None
    status: str = "unknown"
    model: str = ""
    version: str = ""
    available: str | None = None
    """What was last published on the room's availability topic (None: nothing yet)."""
    next_publish: float = 0.0

    @property
    def node(self) -> str:
        return node_id(self.device)

    def add(self, message: Message, now: float) -> None:
        self.last_heard = now
        self.model = message.model or self.model
        if isinstance(message, StatusMessage):
            self.status = message.state
            self.version = message.version or self.version
            return
        assert isinstance(message, EmotionMessage)
        self.windows += 1
        self.level_sum += message.level_dbfs
        if message.speech:
            self.speech_windows += 1
            self.last_label = message.label or self.last_label
            if message.smoothed_arousal is not None:
                self.arousal_sum += message.smoothed_arousal
                self.arousal_windows += 1

    def availability(self, now: float, stale_after_s: float) -> str:
        """Offline once the daemon said it is stopping, or was silent for `stale_after_s`."""
        if self.status == "stopping" or now - self.last_heard > stale_after_s:
            return OFFLINE
        return ONLINE

    def take_state(self, now_unix: float, period_s: float) -> dict:
        """The period's state (for the state topic), and start a new period."""
        state = {
            "status": self.status,
            "last_label": self.last_label,
            "arousal": _round(self.arousal_sum / self.arousal_windows, 4) if self.arousal_windows else None,
            "arousal_pct": _round(100 * self.arousal_sum / self.arousal_windows, 1) if self.arousal_windows else None,
            "speech_share_pct": _round(100 * self.speech_windows / self.windows, 1) if self.windows else None,
            "level_dbfs": _round(self.level_sum / self.windows, 1) if self.windows else None,
            "windows": self.windows,
            "period_s": period_s,
            "model": self.model,
            "time": round(now_unix, 3),
        }
        self.windows = self.speech_windows = self.arousal_windows = 0
        self.level_sum = self.arousal_sum = 0.0
        return state


def _round(value: float, digits: int) -> float:
    return round(float(value), digits)
