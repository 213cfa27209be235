"""`serd mqtt`: settings from the `mqtt:` section and flags, then the bridge (or `--forget`)."""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from serd import config
from serd.config import EX_CONFIG, ConfigError, MqttSettings
from serd.subcommand import add_command

_LOGGER = logging.getLogger(__name__)
MAX_PASSWORD_BYTES = 4096


def add_parser(subparsers) -> None:
    p = add_command(
        subparsers, "mqtt", "publish each room's state to an MQTT broker (Home Assistant)",
        "Subscribe to one or more serd daemons and publish, per room and every 10 s (not every window), a "
        "retained JSON state (latest label, mean arousal, share of time with speech, level, the daemon's "
        "status) with Home Assistant discovery, so that each room appears as a device with sensors. "
        "Needs pip install 'serd[mqtt]'. Settings come from the mqtt: section of the config file; flags win.",
        ("serd mqtt --broker mqtt://127.0.0.1:1883",
         "serd mqtt --connect tcp://pi-room1:5556 --connect tcp://pi-room2:5556 --broker mqtts://ha.lan \\\n"
         "      --username serd --password-file /etc/serd/mqtt.password",
         "serd mqtt --config /etc/serd/config.yaml",
         "serd mqtt --config /etc/serd/config.yaml --forget room-101   # remove a room from Home Assistant"),
    )
    p.add_argument("--config", type=Path, default=None, help="YAML config file: its mqtt: section")
    p.add_argument("--connect", action="append", default=None, metavar="ADDR",
                   help="publisher endpoint (repeatable; default tcp://127.0.0.1:5556)")
    p.add_argument("--broker", default=None, metavar="URL",
                   help="mqtt://HOST[:PORT] or mqtts://HOST[:PORT] (default mqtt://127.0.0.1:1883)")
    p.add_argument("--username", default=None, help="broker user name")
    p.add_argument("--password-file", default=None, metavar="FILE", help="file holding the broker password")
    p.add_argument("--client-id", default=None, help="MQTT client id (default serd-mqtt-<hostname>)")
    p.add_argument("--publish-every", type=float, default=None, metavar="S",
                   help="seconds between a room's states (default 10)")
    p.add_argument("--server-key", default=None, help="CURVE: the publishers' public key file")
    p.add_argument("--client-key", default=None, help="CURVE: this bridge's secret key file")
    p.add_argument("--forget", action="append", default=None, metavar="ROOM",
                   help="remove ROOM's device from Home Assistant (empty its retained topics) and exit")
    p.set_defaults(func=mqtt_command)


FLAGS = (("connect", "connect"), ("broker", "broker"), ("username", "username"), ("password_file", "password_file"),
         ("client_id", "client_id"), ("publish_every", "publish_every_s"), ("server_key", "server_key"),
         ("client_key", "client_key"))


def load_mqtt_settings(args: argparse.Namespace) -> MqttSettings:
    changes: dict[str, Any] = {}
    for flag, key in FLAGS:
        value = getattr(args, flag)
        if value is not None:
            changes[f"mqtt.{key}"] = tuple(value) if isinstance(value, list) else value
    return config.override(config.load(args.config), changes).mqtt


def read_password(path: str) -> str:
    """The first line of the password file; ConfigError if it cannot be read or is empty."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_PASSWORD_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"mqtt.password_file: {path}: {exc.strerror or exc}") from None
    lines = raw.decode("utf-8", "replace").splitlines()
    if len(raw) > MAX_PASSWORD_BYTES or not lines or not lines[0]:
        raise ConfigError(f"mqtt.password_file: {path}: expected the password on its first line")
    return lines[0]


def mqtt_command(args: argparse.Namespace) -> int:
    from serd.subcommand import import_extra

    try:
        settings = load_mqtt_settings(args)
        password = read_password(settings.password_file) if settings.password_file else None
        import_extra("paho.mqtt.client", "mqtt", "serd mqtt")
    except (ConfigError, ImportError) as exc:
        print(f"serd: config error: {exc}" if isinstance(exc, ConfigError) else f"serd: {exc}", file=sys.stderr)
        return EX_CONFIG
    from serd.mqtt.bridge import Bridge, forget_rooms

    client_id = settings.client_id or f"serd-mqtt-{socket.gethostname()}"[:64]
    if args.forget:
        error = forget_rooms(settings, client_id, password, args.forget)
        if error:
            print(f"serd: {error}", file=sys.stderr)
            return 1
        print(f"forgot {', '.join(args.forget)}")
        return 0
    try:
        bridge = Bridge(settings, client_id, password, settings.server_key and Path(settings.server_key),
                        settings.client_key and Path(settings.client_key))
    except (ValueError, OSError) as exc:  # a CA file that cannot be read or is not a certificate
        print(f"serd: config error: {exc}", file=sys.stderr)
        return EX_CONFIG
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, bridge.request_stop)
    try:
        return bridge.run()
    except (ValueError, OSError) as exc:  # CURVE key files: missing, unreadable, not a key
        print(f"serd: config error: {exc}", file=sys.stderr)
        return EX_CONFIG
