"""The wire format: the one place that encodes and decodes serd's messages.

Every message is two ZeroMQ frames, `[topic, json]`, both UTF-8:

- `serd.emotion.<device>`: one per window (every hop), schema `serd.emotion/1`;
- `serd.status.<device>`: heartbeat and state changes, schema `serd.status/1`.

Subscribe to `serd.emotion.` for every device's results. `seq` counts per topic
from 0; a gap means messages were lost. Times are Unix seconds (wall clock);
`start_s`/`end_s` are seconds since the audio stream began.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

EMOTION_PREFIX = "serd.emotion."
STATUS_PREFIX = "serd.status."
EMOTION_SCHEMA = "serd.emotion/1"
STATUS_SCHEMA = "serd.status/1"
STATES = ("starting", "running", "source_lost", "stopping")


class MessageError(ValueError):
    """Frames that are not a serd message."""


def _round_probs(probs: dict[str, float] | None) -> dict[str, float] | None:
    # A broken model can emit NaN; JSON cannot carry it, and a message must never fail to encode.
    if probs is None or not all(math.isfinite(float(v)) for v in probs.values()):
        return None
    return {k: round(float(v), 5) for k, v in probs.items()}


def _round_unit(value: float | None) -> float | None:
    if value is None or not math.isfinite(float(value)):
        return None
    return round(min(1.0, max(0.0, float(value))), 5)


def _finite(value: float, default: float = 0.0) -> float:
    return float(value) if math.isfinite(float(value)) else default


class _Topical:
    """The topic of a message: its kind's prefix plus the device name."""

    PREFIX: ClassVar[str]
    device: str

    @property
    def topic(self) -> str:
        return self.PREFIX + self.device


@dataclass
class EmotionMessage(_Topical):
    """The result for one window."""

    device: str
    seq: int
    time: float
    """Wall-clock time of publishing."""
    captured_at: float
    """Wall-clock time the window's last sample reached serd (latency = receive time - captured_at)."""
    start_s: float
    end_s: float
    speech: bool
    level_dbfs: float
    probs: dict[str, float] | None
    """Calibrated probabilities of this window, by label; None for non-speech windows."""
    smoothed: dict[str, float] | None
    """Exponential moving average over recent speech windows; None for non-speech windows."""
    label: str | None
    """Top label of `smoothed`."""
    confidence: float | None
    """Probability of `label` in `smoothed`."""
    model: str
    arousal: float | None = None
    """P(activated voice: angry, happy, fearful | activated or calm: neutral, sad) of this window; None for non-speech."""
    smoothed_arousal: float | None = None
    """The same from `smoothed`. Both added in serd 0.2 (absent from older publishers: None)."""
    schema: str = EMOTION_SCHEMA
    PREFIX: ClassVar[str] = EMOTION_PREFIX

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["time"] = round(self.time, 6)
        d["captured_at"] = round(self.captured_at, 6)
        d["start_s"] = round(self.start_s, 4)
        d["end_s"] = round(self.end_s, 4)
        d["level_dbfs"] = round(self.level_dbfs, 2) if math.isfinite(self.level_dbfs) else -120.0
        d["probs"] = _round_probs(self.probs)
        d["smoothed"] = _round_probs(self.smoothed)
        d["confidence"] = None if self.confidence is None or d["smoothed"] is None else round(float(self.confidence), 5)
        if d["smoothed"] is None:
            d["label"] = None
        d["arousal"] = _round_unit(self.arousal) if d["probs"] is not None else None
        d["smoothed_arousal"] = _round_unit(self.smoothed_arousal) if d["smoothed"] is not None else None
        return {"schema": d.pop("schema"), **d}


@dataclass
class StatusMessage(_Topical):
    """Heartbeat and state changes of one daemon."""

    device: str
    seq: int
    time: float
    state: str
    uptime_s: float
    source: str
    model: str
    windows: int = 0
    """Windows processed since start."""
    published: int = 0
    """Emotion messages handed to ZeroMQ since start."""
    overruns: int = 0
    """Input overflows reported by the sound card (audio lost before serd saw it)."""
    dropped: int = 0
    """Audio blocks serd dropped because its worker fell behind."""
    cpu_percent: float = 0.0
    """Process CPU time over the last interval, % of one core."""
    rss_mb: float = 0.0
    detail: str = ""
    """Human-readable reason for the state (e.g. why the source was lost)."""
    version: str = ""
    schema: str = STATUS_SCHEMA
    extra: dict[str, Any] = field(default_factory=dict)
    PREFIX: ClassVar[str] = STATUS_PREFIX

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["time"] = round(self.time, 6)
        d["uptime_s"] = round(_finite(self.uptime_s), 3)
        d["cpu_percent"] = round(_finite(self.cpu_percent), 2)
        d["rss_mb"] = round(_finite(self.rss_mb), 2)
        if not d["extra"]:
            d.pop("extra")
        return {"schema": d.pop("schema"), **d}


Message = EmotionMessage | StatusMessage


def encode(message: Message) -> list[bytes]:
    """Two frames: topic and compact JSON."""
    body = json.dumps(message.to_dict(), separators=(",", ":"), allow_nan=False)
    return [message.topic.encode("utf-8"), body.encode("utf-8")]


def decode(frames: list[bytes]) -> Message:
    """Parse frames from a SUB socket; MessageError for anything that is not a serd message."""
    if len(frames) != 2:
        raise MessageError(f"expected 2 frames, got {len(frames)}")
    try:
        topic = frames[0].decode("utf-8")
        body = json.loads(frames[1].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MessageError(f"undecodable frames: {exc}") from None
    if not isinstance(body, dict):
        raise MessageError("body is not a JSON object")
    schema = body.get("schema")
    cls = EmotionMessage if schema == EMOTION_SCHEMA else StatusMessage if schema == STATUS_SCHEMA else None
    if cls is None:
        raise MessageError(f"unknown schema {schema!r}")
    if not topic.startswith(cls.PREFIX):
        raise MessageError(f"topic {topic!r} does not match schema {schema}")
    names = set(cls.__dataclass_fields__) - {"PREFIX"}
    try:
        message = cls(**{k: v for k, v in body.items() if k in names})
    except TypeError as exc:
        raise MessageError(f"{schema}: {exc}") from None
    if message.topic != topic:
        raise MessageError(f"topic {topic!r} does not match device {message.device!r}")
    return message


def is_emotion(message: Message) -> bool:
    return isinstance(message, EmotionMessage)


def is_status(message: Message) -> bool:
    return isinstance(message, StatusMessage)
