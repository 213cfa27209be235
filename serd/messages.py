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
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

EMOTION_PREFIX = "serd.emotion."
STATUS_PREFIX = "serd.status."
EMOTION_SCHEMA = "serd.emotion/1"
STATUS_SCHEMA = "serd.status/1"
STATES = ("starting", "running", "source_lost", "stopping")
MAX_DEVICE_CHARS = 64
"""The longest device name: the config, encode and decode all take their limit from here."""
DEVICE_ID_PATTERN = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9_.:-]{{0,{MAX_DEVICE_CHARS - 1}}}$")
"""A device name: safe in a topic, a file name, a log line and a web page (use `fullmatch`)."""
DEVICE_RULE = f"1-{MAX_DEVICE_CHARS} letters, digits or _.:- (starting with a letter or digit)"

# Bounds checked at decode, so that no peer can make a consumer hold more than this per message.
# A real emotion message is ~0.5 KB and a status ~0.4 KB; the bounds leave room for growth.
MAX_MESSAGE_BYTES = 64 * 1024
"""Largest frame accepted; also every SUB socket's ZMQ_MAXMSGSIZE (a bigger frame drops the peer)."""
MAX_TOPIC_BYTES = max(len(EMOTION_PREFIX), len(STATUS_PREFIX)) + MAX_DEVICE_CHARS
"""The longest topic: the longest prefix and the longest device name (ASCII: one byte a character)."""
MAX_LABELS = 32
MAX_LABEL_CHARS = 32
MAX_MODEL_CHARS = 128
MAX_SOURCE_CHARS = 512
MAX_DETAIL_CHARS = 512
MAX_STATE_CHARS = 32
MAX_VERSION_CHARS = 64
MAX_COUNT = 2**63 - 1
"""Counters and `seq` are non-negative 64-bit integers (what a C or Rust subscriber can hold)."""
MAX_INT_DIGITS = 19
MAX_UNIX_TIME = 1e11
"""`time` and `captured_at` are Unix seconds in [0, 1e11) (the year 5138): anything else is a broken
clock or a hostile peer, and a consumer that derives integers from times (milliseconds) must not overflow."""
MAX_EXTRA_KEYS = 32
MAX_EXTRA_DEPTH = 4

# Physical ranges, checked at decode so that sums of many values (the recorder's per-minute
# aggregates, a dashboard's means) stay finite and every database takes them.
MIN_LEVEL_DBFS = -200.0
"""Below the quietest level a window can have: serd's own floor is -120 dBFS (power 1e-12)."""
MAX_LEVEL_DBFS = 20.0
"""Above the loudest: a full-scale square wave is 0 dBFS; a float source may overshoot a little."""
MAX_ELAPSED_S = MAX_UNIX_TIME
"""`start_s`, `end_s`, `uptime_s`: seconds since a start, in [0, this] (no stream outlasts the clock)."""
MAX_CPU_PERCENT = 100.0 * 1024
"""`cpu_percent` is % of one core: at most 1024 cores busy."""
MAX_RSS_MB = 1024.0**3
"""`rss_mb`: at most a pebibyte."""
SILENT_DBFS = -120.0
"""What a window's level is sent as when it could not be measured (NaN, infinite)."""


class MessageError(ValueError):
    """Frames that are not a serd message."""


def _clip(text: str, limit: int) -> str:
    # What serd itself sends stays within what every consumer accepts (a long file path, say).
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _round_probs(probs: dict[str, float] | None) -> dict[str, float] | None:
    # A broken model can emit NaN; JSON cannot carry it, and a message must never fail to encode.
    if probs is None or not all(math.isfinite(float(v)) for v in probs.values()):
        return None
    return {k: round(float(v), 5) for k, v in probs.items()}


def _round_unit(value: float | None) -> float | None:
    if value is None or not math.isfinite(float(value)):
        return None
    return round(min(1.0, max(0.0, float(value))), 5)


def _within(value: float, low: float, high: float, default: float) -> float:
    # What serd sends is always what every consumer accepts: non-finite -> default, else clamped.
    number = float(value)
    return min(high, max(low, number)) if math.isfinite(number) else default


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
        d["start_s"] = round(_within(self.start_s, 0.0, MAX_ELAPSED_S, 0.0), 4)
        d["end_s"] = round(_within(self.end_s, 0.0, MAX_ELAPSED_S, 0.0), 4)
        d["level_dbfs"] = round(_within(self.level_dbfs, MIN_LEVEL_DBFS, MAX_LEVEL_DBFS, SILENT_DBFS), 2)
        d["probs"] = _round_probs(self.probs)
        d["smoothed"] = _round_probs(self.smoothed)
        d["confidence"] = None if self.confidence is None or d["smoothed"] is None else round(float(self.confidence), 5)
        if d["smoothed"] is None:
            d["label"] = None
        d["arousal"] = _round_unit(self.arousal) if d["probs"] is not None else None
        d["smoothed_arousal"] = _round_unit(self.smoothed_arousal) if d["smoothed"] is not None else None
        d["model"] = _clip(self.model, MAX_MODEL_CHARS)
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
    gate: str = ""
    """The speech gate in use: `energy` (level only) or `silero` (level, then a voice detector); "" from older serd."""
    schema: str = STATUS_SCHEMA
    extra: dict[str, Any] = field(default_factory=dict)
    PREFIX: ClassVar[str] = STATUS_PREFIX

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["time"] = round(self.time, 6)
        d["uptime_s"] = round(_within(self.uptime_s, 0.0, MAX_ELAPSED_S, 0.0), 3)
        d["cpu_percent"] = round(_within(self.cpu_percent, 0.0, MAX_CPU_PERCENT, 0.0), 2)
        d["rss_mb"] = round(_within(self.rss_mb, 0.0, MAX_RSS_MB, 0.0), 2)
        d["source"] = _clip(self.source, MAX_SOURCE_CHARS)
        d["detail"] = _clip(self.detail, MAX_DETAIL_CHARS)
        d["model"] = _clip(self.model, MAX_MODEL_CHARS)
        if not d["extra"]:
            d.pop("extra")
        return {"schema": d.pop("schema"), **d}


Message = EmotionMessage | StatusMessage


def encode(message: Message) -> list[bytes]:
    """Two frames: topic and compact JSON. MessageError for a device name no consumer would accept."""
    if not isinstance(message.device, str) or not DEVICE_ID_PATTERN.fullmatch(message.device):
        raise MessageError(f"device: expected {DEVICE_RULE}, got {str(message.device)[:40]!r}")
    body = json.dumps(message.to_dict(), separators=(",", ":"), allow_nan=False)
    return [message.topic.encode("utf-8"), body.encode("utf-8")]


# -- decoding: every value typed, finite and bounded, or a MessageError -------------------------


def _refuse_constant(name: str) -> Any:
    raise MessageError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses to inf
        raise MessageError(f"number {text[:20]} out of range")
    return value


def _short_int(text: str) -> int:
    # Checked before int(): a 5000-digit number would cost quadratic time (or hit Python's limit).
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise MessageError(f"integer of {len(text)} digits out of range")
    return int(text)


def _parse_body(raw: bytes) -> Any:
    if len(raw) > MAX_MESSAGE_BYTES:
        raise MessageError(f"body of {len(raw)} bytes is over the {MAX_MESSAGE_BYTES}-byte limit")
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant,
                          parse_float=_finite_float, parse_int=_short_int)
    except MessageError:
        raise
    except RecursionError:
        raise MessageError("JSON nested too deeply") from None
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise MessageError(f"undecodable frames: {exc}") from None


Check = Callable[[str, Any], Any]
"""Takes a field's name and raw value; returns the typed value or raises MessageError."""


def _fail(name: str, expected: str, value: Any) -> MessageError:
    shown = type(value).__name__ if isinstance(value, (dict, list)) else repr(value)[:40]
    return MessageError(f"{name}: expected {expected}, got {shown}")


def _text(limit: int) -> Check:
    def check(name: str, value: Any) -> str:
        if not isinstance(value, str) or len(value) > limit:
            raise _fail(name, f"a string of at most {limit} characters", value)
        return value
    return check


def _device(name: str, value: Any) -> str:
    if not isinstance(value, str) or not DEVICE_ID_PATTERN.fullmatch(value):
        raise _fail(name, DEVICE_RULE, value)
    return value


def _count(name: str, value: Any) -> int:
    if type(value) is not int or not 0 <= value <= MAX_COUNT:
        raise _fail(name, "an integer 0..2**63-1", value)
    return value


def _real(name: str, value: Any) -> float:
    # bool is an int in Python but not a number on the wire; NaN/inf never get this far.
    if type(value) not in (int, float):
        raise _fail(name, "a number", value)
    return float(value)


def _unix_time(name: str, value: Any) -> float:
    number = _real(name, value)
    if not 0.0 <= number < MAX_UNIX_TIME:
        raise _fail(name, "Unix seconds in [0, 1e11)", value)
    return number


def _within_range(low: float, high: float) -> Check:
    def check(name: str, value: Any) -> float:
        number = _real(name, value)
        if not low <= number <= high:
            raise _fail(name, f"a number in [{low:g}, {high:g}]", value)
        return number
    return check


_unit = _within_range(0.0, 1.0)
_level = _within_range(MIN_LEVEL_DBFS, MAX_LEVEL_DBFS)
_elapsed = _within_range(0.0, MAX_ELAPSED_S)


def _flag(name: str, value: Any) -> bool:
    if type(value) is not bool:
        raise _fail(name, "true or false", value)
    return value


def _optional(check: Check) -> Check:
    def optional(name: str, value: Any) -> Any:
        return None if value is None else check(name, value)
    return optional


def _probs(name: str, value: Any) -> dict[str, float]:
    if not isinstance(value, dict) or not 0 < len(value) <= MAX_LABELS:
        raise _fail(name, f"an object of 1-{MAX_LABELS} labels", value)
    label = _text(MAX_LABEL_CHARS)
    return {label(f"{name} label", k): _unit(f"{name}.{k[:MAX_LABEL_CHARS]}", v) for k, v in value.items()}


def _extra(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or len(value) > MAX_EXTRA_KEYS:
        raise _fail(name, f"an object of at most {MAX_EXTRA_KEYS} keys", value)
    # Iterative, so no nesting depth can exhaust the stack; numbers are already finite.
    pending = [(value, 1)]
    while pending:
        node, depth = pending.pop()
        if depth > MAX_EXTRA_DEPTH:
            raise MessageError(f"{name}: nested deeper than {MAX_EXTRA_DEPTH}")
        children = node.values() if isinstance(node, dict) else node
        pending.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return value


_COMMON: dict[str, Check] = {"device": _device, "seq": _count, "time": _unix_time}
_FIELDS: dict[str, dict[str, Check]] = {
    EMOTION_SCHEMA: {
        **_COMMON,
        "captured_at": _unix_time,
        "start_s": _elapsed,
        "end_s": _elapsed,
        "speech": _flag,
        "level_dbfs": _level,
        "probs": _optional(_probs),
        "smoothed": _optional(_probs),
        "label": _optional(_text(MAX_LABEL_CHARS)),
        "confidence": _optional(_unit),
        "arousal": _optional(_unit),
        "smoothed_arousal": _optional(_unit),
        "model": _text(MAX_MODEL_CHARS),
    },
    STATUS_SCHEMA: {
        **_COMMON,
        "state": _text(MAX_STATE_CHARS),
        "uptime_s": _elapsed,
        "source": _text(MAX_SOURCE_CHARS),
        "model": _text(MAX_MODEL_CHARS),
        "windows": _count,
        "published": _count,
        "overruns": _count,
        "dropped": _count,
        "cpu_percent": _within_range(0.0, MAX_CPU_PERCENT),
        "rss_mb": _within_range(0.0, MAX_RSS_MB),
        "detail": _text(MAX_DETAIL_CHARS),
        "version": _text(MAX_VERSION_CHARS),
        "gate": _text(MAX_STATE_CHARS),
        "extra": _extra,
    },
}
"""What each schema's fields must hold. Fields a message lacks take the dataclass default (or are
an error if it has none); fields the dataclass lacks are checked and then left out, so a newer
minor addition (e.g. `arousal`) is accepted by an older reader."""


def decode(frames: list[bytes]) -> Message:
    """Parse frames from a SUB socket; MessageError for anything that is not a serd message.

    Every field is checked for type, finiteness and size, so a consumer can format and
    re-encode what it gets without further checks.
    """
    if len(frames) != 2:
        raise MessageError(f"expected 2 frames, got {len(frames)}")
    if len(frames[0]) > MAX_TOPIC_BYTES:
        raise MessageError(f"topic of {len(frames[0])} bytes is over the {MAX_TOPIC_BYTES}-byte limit")
    try:
        topic = frames[0].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MessageError(f"undecodable frames: {exc}") from None
    body = _parse_body(frames[1])
    if not isinstance(body, dict):
        raise MessageError("body is not a JSON object")
    schema = body.get("schema")
    cls = EmotionMessage if schema == EMOTION_SCHEMA else StatusMessage if schema == STATUS_SCHEMA else None
    if cls is None:
        raise MessageError(f"unknown schema {str(schema)[:40]!r}")
    if not topic.startswith(cls.PREFIX):
        raise MessageError(f"topic {topic!r} does not match schema {schema}")
    names = set(cls.__dataclass_fields__) - {"PREFIX"}
    values = {name: check(name, body[name]) for name, check in _FIELDS[schema].items() if name in body}
    try:
        message = cls(schema=schema, **{k: v for k, v in values.items() if k in names})
    except TypeError as exc:
        raise MessageError(f"{schema}: {exc}") from None
    if message.topic != topic:
        raise MessageError(f"topic {topic!r} does not match device {message.device!r}")
    return message


def is_emotion(message: Message) -> bool:
    return isinstance(message, EmotionMessage)


def is_status(message: Message) -> bool:
    return isinstance(message, StatusMessage)
