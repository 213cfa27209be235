"""What the dashboard knows: per device, the last messages and a few minutes of history.

One writer (the ZeroMQ thread) and many readers (HTTP threads) share a
`DashboardState` under one lock. Every change is also handed to each live-update
client as an event in its own bounded queue: a slow browser loses its oldest
events (and is then sent a fresh snapshot), it never holds up the writer.

Times are the dashboard's own wall clock (`time.time()`) at receipt, so that
"last heard" and staleness do not depend on the daemons' clocks being right.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from serd.messages import EmotionMessage, Message, StatusMessage

STALE_AFTER_S = 15.0
"""A device with no message (emotion or status) for this long is shown as stale."""
HISTORY_S = 300.0
"""Seconds of points kept per device for the timeline."""
MAX_POINTS = 3000
"""Hard cap on points per device (300 s at a 0.1 s hop), whatever a publisher sends."""
CLIENT_QUEUE_EVENTS = 256
"""Events queued per live-update client before its oldest are dropped."""
MAX_DEVICES = 256
"""Devices tracked at once; beyond this the least recently heard is forgotten (and the page told)."""
MAX_TOTAL_POINTS = 20_000
"""Timeline points kept over all devices (~2.5 KB each at worst): a publisher inventing devices at a
high rate costs at most ~50 MB, while 20 real devices keep 300 s at a 0.5 s hop. Beyond it the device
with the longest timeline loses its oldest point."""


@dataclass
class DeviceState:
    name: str
    last_heard: float
    emotion: dict[str, Any] | None = None
    """The last `serd.emotion/1` message, as sent."""
    status: dict[str, Any] | None = None
    """The last `serd.status/1` message, as sent."""
    labels: list[str] = field(default_factory=list)
    """Label names in the model's order (from the last message with probabilities)."""
    points: deque = field(default_factory=lambda: deque(maxlen=MAX_POINTS))
    lost: int = 0
    """Messages missed, from gaps in `seq` (per topic)."""
    stale: bool = False
    last_seq: dict[str, int] = field(default_factory=dict)

    def state(self) -> str:
        if self.stale:
            return "stale"
        return self.status["state"] if self.status else "unknown"

    def summary(self, now: float) -> dict[str, Any]:
        return {
            "device": self.name,
            "state": self.state(),
            "stale": self.stale,
            "last_heard": round(self.last_heard, 3),
            "age_s": round(max(0.0, now - self.last_heard), 3),
            "labels": self.labels,
            "emotion": self.emotion,
            "status": self.status,
            "lost": self.lost,
            "n_points": len(self.points),
        }


def point_of(message: EmotionMessage, received_at: float) -> dict[str, Any]:
    """One timeline point: when, speech or not, how loud, the smoothed probabilities and arousal."""
    d = message.to_dict()
    return {"t": round(received_at, 3), "speech": d["speech"], "level_dbfs": d["level_dbfs"], "smoothed": d["smoothed"],
            "smoothed_arousal": d["smoothed_arousal"]}


class Subscription:
    """One live-update client's bounded queue of `(event, data)`; drop-oldest when full."""

    def __init__(self, maxlen: int = CLIENT_QUEUE_EVENTS) -> None:
        self._events: deque[tuple[str, dict[str, Any]]] = deque(maxlen=maxlen)
        self._ready = threading.Condition(threading.Lock())
        self.dropped = 0
        self.overflowed = False
        """Events were dropped since the last snapshot: the client's picture has holes."""
        self.closed = False

    def put(self, event: str, data: dict[str, Any]) -> None:
        with self._ready:
            if len(self._events) == self._events.maxlen:
                self.dropped += 1
                self.overflowed = True
            self._events.append((event, data))
            self._ready.notify()

    def replace_all(self, event: str, data: dict[str, Any]) -> None:
        """Forget everything queued and queue just this (a fresh snapshot)."""
        with self._ready:
            self._events.clear()
            self.overflowed = False
            self._events.append((event, data))
            self._ready.notify()

    def get(self, timeout: float) -> tuple[str, dict[str, Any]] | None:
        """The oldest queued event, or None after `timeout` seconds or once closed."""
        with self._ready:
            if not self._events and not self.closed:
                self._ready.wait(timeout)
            if self.closed or not self._events:
                return None
            return self._events.popleft()

    def close(self) -> None:
        with self._ready:
            self.closed = True
            self._ready.notify_all()


class DashboardState:
    """Devices by name, their history, and the live-update clients; thread-safe."""

    def __init__(
        self,
        stale_after_s: float = STALE_AFTER_S,
        history_s: float = HISTORY_S,
        clock: Callable[[], float] = time.time,
        info: dict[str, Any] | None = None,
    ) -> None:
        for name, value in (("stale_after_s", stale_after_s), ("history_s", history_s)):
            if not (value > 0 and math.isfinite(value)):  # inf would reach the page as non-standard JSON
                raise ValueError(f"{name} must be a finite number > 0, got {value}")
        self.stale_after_s = stale_after_s
        self.history_s = history_s
        self.clock = clock
        self.info = dict(info or {})
        """Static facts for the page (model name, upload limit), sent with every snapshot."""
        self._lock = threading.Lock()
        self._devices: dict[str, DeviceState] = {}
        self._subscriptions: set[Subscription] = set()
        self.messages = 0
        self.malformed = 0
        self.dropped_connections = 0
        """Publisher connections ZeroMQ dropped for good (a frame over the size limit) and the reader re-made."""
        self._points_total = 0

    # -- writer side (the ZeroMQ thread) ---------------------------------------------------
    def apply(self, message: Message, received_at: float | None = None) -> None:
        """Record one decoded message and tell every client."""
        now = self.clock() if received_at is None else received_at
        with self._lock:
            self.messages += 1
            device = self._devices.get(message.device)
            if device is None:
                device = self._devices[message.device] = DeviceState(message.device, now)
                self._forget_oldest_beyond_limit()
            topic = message.topic
            if topic in device.last_seq:
                device.lost += max(0, message.seq - device.last_seq[topic] - 1)
            device.last_seq[topic] = message.seq
            device.last_heard = now
            device.stale = False
            point = None
            if isinstance(message, EmotionMessage):
                device.emotion = message.to_dict()
                names = message.smoothed or message.probs
                if names:
                    device.labels = list(names)
                point = point_of(message, now)
                self._add_point(device, point)
                self._prune(device, now)
            elif isinstance(message, StatusMessage):
                device.status = message.to_dict()
            self._broadcast("update", {"server_time": round(now, 3), "device": device.summary(now), "point": point})

    def count_malformed(self) -> None:
        with self._lock:
            self.malformed += 1

    def check_stale(self, now: float | None = None) -> list[str]:
        """Mark devices unheard for `stale_after_s` as stale (and tell clients); the names newly stale."""
        now = self.clock() if now is None else now
        newly = []
        with self._lock:
            for device in self._devices.values():
                if not device.stale and now - device.last_heard > self.stale_after_s:
                    device.stale = True
                    newly.append(device.name)
                    self._broadcast("update", {"server_time": round(now, 3), "device": device.summary(now), "point": None})
        return newly

    def _add_point(self, device: DeviceState, point: dict[str, Any]) -> None:
        if len(device.points) == device.points.maxlen:
            device.points.popleft()
            self._points_total -= 1
        device.points.append(point)
        self._points_total += 1
        while self._points_total > MAX_TOTAL_POINTS:
            longest = max(self._devices.values(), key=lambda d: len(d.points))
            longest.points.popleft()
            self._points_total -= 1

    def _prune(self, device: DeviceState, now: float) -> None:
        horizon = now - self.history_s
        while device.points and device.points[0]["t"] < horizon:
            device.points.popleft()
            self._points_total -= 1

    def _forget_oldest_beyond_limit(self) -> None:
        while len(self._devices) > MAX_DEVICES:
            oldest = min(self._devices.values(), key=lambda d: d.last_heard)
            del self._devices[oldest.name]
            self._points_total -= len(oldest.points)
            self._broadcast("forget", {"server_time": round(self.clock(), 3), "device": oldest.name})

    def _broadcast(self, event: str, data: dict[str, Any]) -> None:
        for subscription in self._subscriptions:
            subscription.put(event, data)

    # -- reader side (HTTP threads) --------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Everything the page needs to draw from scratch (also `GET /api/state`)."""
        with self._lock:
            return self._snapshot_locked(self.clock())

    def _snapshot_locked(self, now: float) -> dict[str, Any]:
        for device in self._devices.values():
            self._prune(device, now)
        return {
            "server_time": round(now, 3),
            "stale_after_s": self.stale_after_s,
            "history_s": self.history_s,
            "info": self.info,
            "messages": self.messages,
            "malformed": self.malformed,
            "dropped_connections": self.dropped_connections,
            "devices": [
                {**d.summary(now), "points": list(d.points)} for d in sorted(self._devices.values(), key=lambda d: d.name)
            ],
        }

    def subscribe(self, maxlen: int = CLIENT_QUEUE_EVENTS) -> Subscription:
        """A new client, its queue starting with a snapshot (taken atomically: no event is missed)."""
        subscription = Subscription(maxlen)
        with self._lock:
            subscription.put("snapshot", self._snapshot_locked(self.clock()))
            self._subscriptions.add(subscription)
        return subscription

    def next_event(self, subscription: Subscription, timeout: float) -> tuple[str, dict[str, Any]] | None:
        """The client's next event; after an overflow, a fresh snapshot instead of the holey rest."""
        if subscription.overflowed:
            with self._lock:
                subscription.replace_all("snapshot", self._snapshot_locked(self.clock()))
        return subscription.get(timeout)

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscriptions.discard(subscription)
        subscription.close()

    def close_all(self) -> None:
        """Wake and end every client (shutdown)."""
        with self._lock:
            subscriptions, self._subscriptions = self._subscriptions, set()
        for subscription in subscriptions:
            subscription.close()

    @property
    def client_count(self) -> int:
        with self._lock:
            return len(self._subscriptions)

    @property
    def dropped_events(self) -> int:
        """Events dropped so far for the connected clients that fell behind."""
        with self._lock:
            return sum(s.dropped for s in self._subscriptions)
