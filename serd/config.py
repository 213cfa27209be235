"""Settings: typed, frozen, documented per field; loaded from YAML and validated at the edge.

A bad value raises `ConfigError` naming its key path and what was expected; the
command line turns that into one line on stderr and exit code 78 (EX_CONFIG,
which the systemd unit tells systemd not to restart on).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serd.messages import DEVICE_ID_PATTERN, DEVICE_RULE  # one definition: the wire format owns it
from serd.vad import DEFAULT_THRESHOLD, DEFAULT_VAD, VAD_KINDS

EX_CONFIG = 78
EX_INTERRUPTED = 130
"""Ctrl-C (SIGINT), by the shell's convention 128 + 2, for every command; SIGTERM is a clean stop (0)."""
MAX_CONFIG_BYTES = 64 * 1024
"""A serd config is a few hundred bytes; a bigger file is refused before it is parsed."""
SHOWN_VALUE_CHARS = 60
"""Error messages show at most this much of a bad value (a line, never a dump)."""


class ConfigError(ValueError):
    """An invalid configuration; the message names the key path."""


@dataclass(frozen=True)
class SourceSettings:
    kind: str = "mic"
    """Where audio comes from: `mic`, `file` or `stdin`."""
    path: str | None = None
    """Audio file for kind `file` (wav, flac, ogg; any rate and channel count)."""
    input_device: str | int | None = None
    """Microphone: device index or a substring of its name; null = the system default."""
    capture_rate: int | None = None
    """Microphone capture rate in Hz; null = the device's default (resampled to the model rate)."""
    channels: int = 1
    """Channels to capture (mic) or to expect on stdin; averaged to mono."""
    stdin_rate: int = 16000
    """Sample rate of raw s16le PCM on stdin."""
    block_s: float = 0.1
    """Seconds of audio per block from the source."""
    realtime: bool = True
    """File source: pace at real time (false = as fast as possible, like --fast)."""
    queue_blocks: int = 100
    """Blocks the audio queue holds before dropping (mic) or waiting (file/stdin)."""
    reconnect_max_s: float = 30.0
    """Longest wait between attempts to reopen a lost microphone (backoff doubles up to this)."""
    stall_timeout_s: float = 5.0
    """A microphone delivering nothing for this long counts as lost."""


@dataclass(frozen=True)
class AnalysisSettings:
    hop_s: float = 0.5
    """Seconds between window starts (the window length comes from the model)."""
    gate_dbfs: float = -55.0
    """Windows quieter than this RMS level (dBFS) are not classified (the cheap first stage)."""
    vad: str = DEFAULT_VAD
    """Second stage for windows above gate_dbfs: `silero` (a voice detector) or `energy` (none: every loud window)."""
    vad_threshold: float = DEFAULT_THRESHOLD
    """Share of a window's 32 ms chunks the detector must hear a voice in for the window to be speech."""
    hangover_windows: int = 1
    """Windows after a speech window that still count as speech."""
    smoothing_alpha: float = 0.3
    """Weight of the newest window in the moving average (1 = no smoothing)."""
    smoothing_reset_s: float = 5.0
    """Seconds of non-speech after which the moving average starts afresh."""


@dataclass(frozen=True)
class CurveSettings:
    enabled: bool = False
    """Encrypt and authenticate with CURVE (needs the two key settings)."""
    server_secret_key: str | None = None
    """Server secret-key file made by `serd keys` (zmq.auth certificate format)."""
    authorized_clients: str | None = None
    """Directory of client public-key files allowed to subscribe."""


@dataclass(frozen=True)
class PublisherSettings:
    bind: str = "tcp://127.0.0.1:5556"
    """ZeroMQ endpoint to bind; loopback by default (tcp://, ipc://)."""
    sndhwm: int = 1000
    """Messages queued per subscriber before ZeroMQ drops for that subscriber."""
    linger_ms: int = 500
    """How long closing waits to flush the final status."""
    status_interval_s: float = 5.0
    """Seconds between status heartbeats."""
    allow_insecure: bool = False
    """Allow a non-loopback bind without CURVE (anyone on the network can read the stream)."""
    curve: CurveSettings = field(default_factory=CurveSettings)


@dataclass(frozen=True)
class RecordSettings:
    """`serd record`: what to subscribe to, where to store it and for how long."""

    connect: tuple[str, ...] = ("tcp://127.0.0.1:5556",)
    """Publishers to record (ZeroMQ endpoints; one recorder can take many rooms)."""
    db: str | None = None
    """History database: sqlite:////ABS/PATH, sqlite:///REL/PATH or postgresql://USER@HOST/DB; null = history.sqlite3 in the state directory."""
    keep_days: float = 14.0
    """Days raw windows and status messages are kept."""
    keep_aggregate_days: float = 365.0
    """Days the per-minute aggregates (and gaps, sessions) are kept."""
    flush_s: float = 1.0
    """Seconds between transactions (a kill -9 loses at most this much)."""
    batch_rows: int = 1000
    """Rows per transaction at most (a burst is written in several)."""
    queue_rows: int = 100000
    """Rows queued for a slow or absent database; half full, they move to the journal in the state directory
    (written when it is back); new rows are dropped (and counted as gaps) only if the journal fails too."""
    server_key: str | None = None
    """CURVE: the publishers' public key file."""
    client_key: str | None = None
    """CURVE: this recorder's secret key file."""


DEFAULT_MODEL = "serd-emotion5-int8"
"""The shipped model every command uses unless told otherwise (models/README.md)."""


@dataclass(frozen=True)
class MetricsSettings:
    """Prometheus `/metrics` of `serd run` and `serd record` (pip install 'serd[metrics]'); off by default."""

    bind: str | None = None
    """`serd run`'s HOST:PORT for /metrics (e.g. 127.0.0.1:9750); null = no metrics server."""
    record_bind: str | None = None
    """`serd record`'s HOST:PORT for /metrics (e.g. 127.0.0.1:9751); null = none (they share this file)."""
    allow_insecure: bool = False
    """Allow a non-loopback metrics address (plain HTTP, no authentication: anyone who reaches it can scrape)."""
    room_arousal: bool = False
    """Also export each room's smoothed arousal as a gauge (off: a reading about people, kept out of monitoring)."""


@dataclass(frozen=True)
class MqttSettings:
    """`serd mqtt`: the bridge from daemons to an MQTT broker (Home Assistant); pip install 'serd[mqtt]'."""

    connect: tuple[str, ...] = ("tcp://127.0.0.1:5556",)
    """Publishers to bridge (ZeroMQ endpoints; one bridge can take many rooms)."""
    broker: str = "mqtt://127.0.0.1:1883"
    """The MQTT broker: mqtt://HOST[:PORT] (1883) or mqtts://HOST[:PORT] (TLS, 8883)."""
    username: str | None = None
    """Broker user name; null = anonymous."""
    password_file: str | None = None
    """File holding the broker password (one line), never the password itself in this file."""
    client_id: str | None = None
    """MQTT client id; null = serd-mqtt-<hostname>."""
    ca_file: str | None = None
    """mqtts: CA certificate file to trust; null = the system's CAs."""
    topic_prefix: str = "serd"
    """State and availability topics: <topic_prefix>/<room>/state, .../availability, <topic_prefix>/bridge/availability."""
    discovery_prefix: str = "homeassistant"
    """Home Assistant's MQTT discovery prefix."""
    publish_every_s: float = 10.0
    """Seconds between a room's state messages (a summary of its windows, not one message per window)."""
    stale_after_s: float = 30.0
    """A room silent this long (no window, no heartbeat) is marked unavailable."""
    forget_after_days: float = 7.0
    """A room silent this long is forgotten: its Home Assistant device is removed."""
    max_rooms: int = 64
    """Rooms bridged at most; messages of further devices are counted and ignored."""
    server_key: str | None = None
    """CURVE: the publishers' public key file."""
    client_key: str | None = None
    """CURVE: this bridge's secret key file."""


@dataclass(frozen=True)
class Settings:
    device_id: str = "serd"
    """Name of this daemon in topics and messages (letters, digits, `_.:-`)."""
    model: str = DEFAULT_MODEL
    """Model name in the models directory, or a path to a .tflite (its .json sidecar beside it)."""
    source: SourceSettings = field(default_factory=SourceSettings)
    analysis: AnalysisSettings = field(default_factory=AnalysisSettings)
    publisher: PublisherSettings = field(default_factory=PublisherSettings)
    record: RecordSettings = field(default_factory=RecordSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    log_level: str = "info"
    """debug, info, warning or error."""


def _describe(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    return {str: "a string", int: "an integer", float: "a number", bool: "true/false"}.get(tp, getattr(tp, "__name__", str(tp)))


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN_VALUE_CHARS else text[: SHOWN_VALUE_CHARS - 1] + "…"


def _coerce(value: Any, tp: Any, path: str) -> Any:
    if dataclasses.is_dataclass(tp):
        if value is None:
            return tp()
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__}")
        return _build(tp, value, path)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, path)
            except ConfigError:
                continue
        raise ConfigError(f"{path}: expected {_describe(tp)}, got {_shown(value)}")
    if origin is tuple:  # tuple[X, ...]: a YAML list
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {_shown(value)}")
        return tuple(_coerce(item, typing.get_args(tp)[0], f"{path}[{i}]") for i, item in enumerate(value))
    if tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an integer beyond the float range (10**309)
                number = float("inf")
            if number != number or number in (float("inf"), float("-inf")):
                raise ConfigError(f"{path}: expected a finite number, got {_shown(value)}")
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{path}: expected {_describe(tp)}, got {_shown(value)}")


def _build(cls: type, data: dict, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            # repr for "", blanks and control characters, so the error stays one visible line,
            # and for a key with ':' in it, so the path still ends at the first ': '
            plain = isinstance(key, str) and key.isprintable() and key.strip() and ":" not in key
            name = key if plain else repr(key)
            where = f"{prefix}.{name}" if prefix else name
            raise ConfigError(f"{where}: unknown key (expected one of: {', '.join(sorted(known))})")
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            path = f"{prefix}.{f.name}" if prefix else f.name
            values[f.name] = _coerce(data[f.name], hints[f.name], path)
    return cls(**values)


def _check(cond: bool, path: str, expected: str, value: Any) -> None:
    if not cond:
        raise ConfigError(f"{path}: expected {expected}, got {_shown(value)}")


def is_loopback_endpoint(endpoint: str) -> bool:
    """True for ipc:// and inproc://, and tcp:// on 127.0.0.0/8, ::1 or localhost."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    host = endpoint.removeprefix("tcp://").rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "*", interface names and host names may reach the network


def validate(s: Settings) -> Settings:
    """Checks of values (types are already checked); raises ConfigError."""
    # fullmatch: `$` would also match before a trailing newline ("room\n" in a topic).
    _check(bool(DEVICE_ID_PATTERN.fullmatch(s.device_id)), "device_id", DEVICE_RULE, s.device_id)
    _check(bool(s.model.strip()), "model", "a model name or path", s.model)
    src = s.source
    _check(src.kind in ("mic", "file", "stdin"), "source.kind", "mic, file or stdin", src.kind)
    device = src.input_device
    _check(device is None or (device >= 0 if isinstance(device, int) else bool(device.strip())), "source.input_device",
           "a device index >= 0, part of a device name, or null", device)
    if src.kind == "file":
        _check(bool(src.path), "source.path", "an audio file path for source.kind file", src.path)
    _check(src.capture_rate is None or 4000 <= src.capture_rate <= 384000, "source.capture_rate",
           "null or 4000..384000 Hz", src.capture_rate)
    _check(1 <= src.channels <= 32, "source.channels", "1..32", src.channels)
    _check(4000 <= src.stdin_rate <= 384000, "source.stdin_rate", "4000..384000 Hz", src.stdin_rate)
    _check(0.005 <= src.block_s <= 2.0, "source.block_s", "0.005..2.0 seconds", src.block_s)
    _check(2 <= src.queue_blocks <= 100000, "source.queue_blocks", "2..100000", src.queue_blocks)
    _check(0.5 <= src.reconnect_max_s <= 3600, "source.reconnect_max_s", "0.5..3600 seconds", src.reconnect_max_s)
    _check(0.5 <= src.stall_timeout_s <= 3600, "source.stall_timeout_s", "0.5..3600 seconds", src.stall_timeout_s)
    a = s.analysis
    _check(0.05 <= a.hop_s <= 10.0, "analysis.hop_s", "0.05..10 seconds", a.hop_s)
    _check(-120.0 <= a.gate_dbfs <= 0.0, "analysis.gate_dbfs", "-120..0 dBFS", a.gate_dbfs)
    _check(a.vad in VAD_KINDS, "analysis.vad", " or ".join(VAD_KINDS), a.vad)
    _check(0.0 < a.vad_threshold <= 1.0, "analysis.vad_threshold", "a share in (0, 1]", a.vad_threshold)
    _check(0 <= a.hangover_windows <= 100, "analysis.hangover_windows", "0..100", a.hangover_windows)
    _check(0.0 < a.smoothing_alpha <= 1.0, "analysis.smoothing_alpha", "a number in (0, 1]", a.smoothing_alpha)
    _check(0.0 <= a.smoothing_reset_s <= 3600, "analysis.smoothing_reset_s", "0..3600 seconds", a.smoothing_reset_s)
    p = s.publisher
    _check(p.bind.startswith(("tcp://", "ipc://")), "publisher.bind", "a tcp:// or ipc:// endpoint", p.bind)
    if p.bind.startswith("tcp://"):
        port = p.bind.rsplit(":", 1)[1] if ":" in p.bind[6:] else ""
        # isascii: str.isdigit() also accepts "²" (int() fails) and full-width digits (ZeroMQ fails).
        _check(port.isascii() and port.isdigit() and 0 < int(port) < 65536,
               "publisher.bind", "tcp://HOST:PORT with a port 1..65535", p.bind)
    else:
        _check(len(p.bind) > len("ipc://"), "publisher.bind", "ipc://PATH", p.bind)
    _check(1 <= p.sndhwm <= 1_000_000, "publisher.sndhwm", "1..1000000 messages", p.sndhwm)
    _check(0 <= p.linger_ms <= 60000, "publisher.linger_ms", "0..60000 ms", p.linger_ms)
    _check(0.2 <= p.status_interval_s <= 3600, "publisher.status_interval_s", "0.2..3600 seconds", p.status_interval_s)
    if p.curve.enabled:
        _check(bool(p.curve.server_secret_key), "publisher.curve.server_secret_key",
               "a key file (make one with: serd keys DIR)", p.curve.server_secret_key)
        _check(bool(p.curve.authorized_clients), "publisher.curve.authorized_clients",
               "a directory of client public keys", p.curve.authorized_clients)
    if not is_loopback_endpoint(p.bind) and not p.curve.enabled and not p.allow_insecure:
        raise ConfigError(
            f"publisher.bind: {p.bind} is reachable from the network; turn on publisher.curve "
            "or set publisher.allow_insecure: true to publish unencrypted"
        )
    validate_record(s.record)
    validate_metrics(s.metrics)
    validate_mqtt(s.mqtt)
    _check(s.log_level in ("debug", "info", "warning", "error"), "log_level", "debug, info, warning or error", s.log_level)
    return s


def validate_record(r: RecordSettings) -> None:
    _check(len(r.connect) > 0, "record.connect", "a list of one or more endpoints", list(r.connect))
    for i, endpoint in enumerate(r.connect):
        _check(endpoint.startswith(("tcp://", "ipc://")) and len(endpoint) > len("tcp://"), f"record.connect[{i}]",
               "a tcp:// or ipc:// endpoint", endpoint)
    _check(r.db is None or bool(r.db.strip()), "record.db", "sqlite:////ABS/PATH, postgresql://... or null", r.db)
    _check(0 < r.keep_days <= 3650, "record.keep_days", "a number of days in (0, 3650]", r.keep_days)
    _check(0 < r.keep_aggregate_days <= 36500, "record.keep_aggregate_days", "a number of days in (0, 36500]",
           r.keep_aggregate_days)
    # Summaries outlive raw windows: `serd history --csv` takes its probability columns from them.
    # Both keys are named: either may be the one the user set (--keep-days is record.keep_days).
    if r.keep_days > r.keep_aggregate_days:
        raise ConfigError(
            f"record.keep_days (--keep-days): expected at most record.keep_aggregate_days "
            f"({r.keep_aggregate_days:g} days; raw windows are not kept longer than their summaries), "
            f"got {r.keep_days:g}; lower it, or raise record.keep_aggregate_days in the config file")
    _check(0.05 <= r.flush_s <= 60, "record.flush_s", "0.05..60 seconds", r.flush_s)
    _check(1 <= r.batch_rows <= 100_000, "record.batch_rows", "1..100000", r.batch_rows)
    _check(r.batch_rows <= r.queue_rows <= 10_000_000, "record.queue_rows", "record.batch_rows..10000000",
           r.queue_rows)
    _check((r.server_key is None) == (r.client_key is None), "record.client_key",
           "both record.server_key and record.client_key (CURVE), or neither", r.client_key)


def parse_host_port(value: str, path: str) -> tuple[str, int]:
    """`HOST:PORT` or `[IPv6]:PORT` -> (host, port); ConfigError naming `path` otherwise."""
    from serd.dashboard.settings import parse_listen  # the dashboard's --listen rule, one definition

    try:
        host, port = parse_listen(value)
    except ValueError:
        raise ConfigError(f"{path}: expected HOST:PORT (e.g. 127.0.0.1:9750), got {_shown(value)}") from None
    if value.strip().isdigit():  # a bare port: say where, do not assume
        raise ConfigError(f"{path}: expected HOST:PORT (e.g. 127.0.0.1:{port}), got {_shown(value)}")
    return host, port


def validate_metrics(m: MetricsSettings) -> None:
    from serd.dashboard.settings import is_loopback_host

    for key in ("bind", "record_bind"):
        value = getattr(m, key)
        if value is None:
            continue
        host, _ = parse_host_port(value, f"metrics.{key}")
        if not is_loopback_host(host) and not m.allow_insecure:
            raise ConfigError(
                f"metrics.{key}: {value} is reachable from the network (plain HTTP, no authentication); "
                "scrape through a tunnel, or set metrics.allow_insecure: true"
            )


MQTT_SCHEMES = {"mqtt": 1883, "mqtts": 8883}
"""Broker URL schemes and their default ports (TLS on mqtts)."""
MQTT_TOPIC_PART = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*")
"""A topic prefix: plain levels, no wildcard (+ #), no empty level."""


def parse_broker(url: str, path: str = "mqtt.broker") -> tuple[str, int, bool]:
    """mqtt://HOST[:PORT] or mqtts://HOST[:PORT] -> (host, port, tls); ConfigError otherwise."""
    import urllib.parse

    expected = "mqtt://HOST[:PORT] or mqtts://HOST[:PORT]"
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigError(f"{path}: expected {expected}, got {_shown(url)}") from None
    _check(parts.scheme in MQTT_SCHEMES and bool(parts.hostname) and parts.path in ("", "/")
           and not parts.query and not parts.fragment, path, expected, url)
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"{path}: no user or password in the URL; use mqtt.username and mqtt.password_file")
    return parts.hostname, port or MQTT_SCHEMES[parts.scheme], parts.scheme == "mqtts"


def validate_mqtt(q: MqttSettings) -> None:
    _check(len(q.connect) > 0, "mqtt.connect", "a list of one or more endpoints", list(q.connect))
    for i, endpoint in enumerate(q.connect):
        _check(endpoint.startswith(("tcp://", "ipc://")) and len(endpoint) > len("tcp://"), f"mqtt.connect[{i}]",
               "a tcp:// or ipc:// endpoint", endpoint)
    parse_broker(q.broker)
    _check(q.username is None or bool(q.username.strip()), "mqtt.username", "a user name or null", q.username)
    _check(q.password_file is None or q.username is not None, "mqtt.password_file",
           "null, or a file together with mqtt.username", q.password_file)
    # MQTT 3.1.1 servers must accept 1..23 characters; longer ids work on Mosquitto but not everywhere.
    _check(q.client_id is None or 1 <= len(q.client_id) <= 64 and q.client_id.isprintable(), "mqtt.client_id",
           "1-64 printable characters or null", q.client_id)
    for key in ("topic_prefix", "discovery_prefix"):
        value = getattr(q, key)
        _check(len(value) <= 64 and bool(MQTT_TOPIC_PART.fullmatch(value)), f"mqtt.{key}",
               "topic levels of letters, digits, _.- separated by / (no + or #)", value)
    _check(1.0 <= q.publish_every_s <= 3600, "mqtt.publish_every_s", "1..3600 seconds", q.publish_every_s)
    _check(1.0 <= q.stale_after_s <= 86400, "mqtt.stale_after_s", "1..86400 seconds", q.stale_after_s)
    _check(q.stale_after_s / 86400 < q.forget_after_days <= 3650, "mqtt.forget_after_days",
           "days, longer than mqtt.stale_after_s, up to 3650", q.forget_after_days)
    _check(1 <= q.max_rooms <= 10000, "mqtt.max_rooms", "1..10000", q.max_rooms)
    _check((q.server_key is None) == (q.client_key is None), "mqtt.client_key",
           "both mqtt.server_key and mqtt.client_key (CURVE), or neither", q.client_key)


def from_dict(data: dict | None) -> Settings:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"top level: expected a mapping of settings, got {type(data).__name__}")
    return validate(_build(Settings, data, ""))


def _loader_class():
    """PyYAML's SafeLoader, refusing aliases and duplicate keys.

    Nested aliases expand exponentially (a 413-byte file took 18 s and 2.2 GB before
    MemoryError); a serd config never needs them, so they are refused while composing,
    before anything is expanded. A key given twice in one mapping silently took the last
    value (PyYAML's default): an edit lower down could undo one above unseen.
    """
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise yaml.composer.ComposerError(None, None, "aliases (*name) are not supported in serd's config",
                                                  event.start_mark)
            return super().compose_node(parent, index)

        def construct_mapping(self, node, deep=False):
            first_line: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<:` merges a mapping; not a key of this one
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    line = first_line.get(key)
                except TypeError:  # an unhashable key: PyYAML's own check refuses it below
                    continue
                if line is not None:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {_shown(key)}, first given at line {line}", key_node.start_mark)
                first_line[key] = key_node.start_mark.line + 1
            return super().construct_mapping(node, deep)

    return StrictLoader


def load(path: Path | str | None) -> Settings:
    """Settings from a YAML file (None: the defaults)."""
    if path is None:
        return from_dict({})
    import yaml

    path = Path(path)
    try:
        if path.exists() and not path.is_file():  # a FIFO would block, a device never end
            raise ConfigError(f"{path}: not a regular file")
        with path.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: config file over {MAX_CONFIG_BYTES // 1024} KB; is this the right file?")
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config ({exc})") from None
    try:
        data = yaml.load(text, Loader=_loader_class())  # noqa: S506 (a SafeLoader without aliases or duplicates)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        reason = " ".join(str(getattr(exc, "problem", None) or exc).split())  # one line (a ReaderError has several)
        raise ConfigError(f"{path}: not valid YAML{where} ({reason})") from None
    except ValueError as exc:  # PyYAML builds dates and ints with Python's own checks: `2024-13-45`, 5000 digits
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    try:
        return from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def override(settings: Settings, changes: dict[str, Any]) -> Settings:
    """Apply dotted-key changes (from the command line) and validate again."""
    data = dataclasses.asdict(settings)
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split(".")
        for key in parents:
            if not isinstance(node.get(key), dict):
                raise ConfigError(f"{dotted}: unknown key")
            node = node[key]
        node[last] = value
    return from_dict(data)
