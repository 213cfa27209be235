"""`serd run`: settings from config + flags, then model, source, publisher, daemon."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from serd import config
from serd.config import EX_CONFIG, ConfigError, Settings
from serd.subcommand import add_command

_LOGGER = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    p = add_command(
        subparsers, "run", "capture, classify and publish (the daemon)",
        "Listen to a microphone, a file or raw PCM on stdin; classify every 2 s window (every 0.5 s) and "
        "publish the emotion probabilities on a ZeroMQ socket. Ctrl-C stops it (exit 130), SIGTERM too (exit 0).",
        ("serd run                                  # default microphone, tcp://127.0.0.1:5556",
         "serd run --source examples/demo.flac      # replay a recording in real time",
         "arecord -f S16_LE -r 16000 -c 1 | serd run --source -",
         "serd run --config /etc/serd/config.yaml --device-id room-101"),
    )
    p.add_argument("--config", type=Path, default=None, help="YAML config file (default: built-in defaults)")
    p.add_argument("--source", default=None, help="mic, a file path, or - for raw s16le PCM on stdin")
    p.add_argument("--input-device", default=None, help="microphone index or name substring")
    p.add_argument("--fast", action="store_true", help="file source: as fast as possible, not real time")
    p.add_argument("--bind", default=None, help="ZeroMQ endpoint (default tcp://127.0.0.1:5556)")
    p.add_argument("--device-id", default=None, help="name of this daemon in topics and messages")
    p.add_argument("--model", default=None, help="model name or .tflite path")
    p.add_argument("--rate", type=int, default=None, help="stdin source: sample rate (default 16000)")
    p.add_argument("--channels", type=int, default=None, help="stdin/mic: channel count (default 1)")
    p.add_argument("--metrics", default=None, metavar="HOST:PORT",
                   help="serve Prometheus /metrics there (needs serd[metrics]; default: metrics.bind, off)")
    p.set_defaults(func=run_command)


def cli_overrides(args: argparse.Namespace) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if args.source is not None:
        if args.source == "mic":
            changes["source.kind"] = "mic"
        elif args.source == "-":
            changes["source.kind"] = "stdin"
        else:
            changes["source.kind"] = "file"
            changes["source.path"] = args.source
    if args.input_device is not None:
        changes["source.input_device"] = int(args.input_device) if args.input_device.isdigit() else args.input_device
    if args.fast:
        changes["source.realtime"] = False
    if args.bind is not None:
        changes["publisher.bind"] = args.bind
    if args.device_id is not None:
        changes["device_id"] = args.device_id
    if args.model is not None:
        changes["model"] = args.model
    if args.rate is not None:
        changes["source.stdin_rate"] = args.rate
    if args.channels is not None:
        changes["source.channels"] = args.channels
    if args.metrics is not None:
        changes["metrics.bind"] = args.metrics
    return changes


def load_settings(args: argparse.Namespace) -> Settings:
    return config.override(config.load(args.config), cli_overrides(args))


def run_command(args: argparse.Namespace) -> int:
    from serd.audiofile import AudioFileError, file_duration_s
    from serd.daemon import Daemon
    from serd.model import Model, ModelError, resolve_model_path
    from serd.publisher import Publisher, PublisherError
    from serd.sources import make_source
    from serd.subcommand import import_extra
    from serd.vad import VadError, make_detector

    try:
        settings = load_settings(args)
    except ConfigError as exc:
        print(f"serd: config error: {exc}", file=sys.stderr)
        return EX_CONFIG
    logging.getLogger("serd").setLevel(settings.log_level.upper())
    metrics = None
    if settings.metrics.bind is not None:
        try:
            metrics = import_extra("serd.metrics", "metrics", "metrics.bind")
        except ImportError as exc:
            print(f"serd: {exc}", file=sys.stderr)
            return EX_CONFIG
    if settings.source.kind == "file":
        try:  # before anything starts or logs: a bad file is one line, as in `serd analyze`
            file_duration_s(settings.source.path)
        except AudioFileError as exc:
            print(f"serd: {exc}", file=sys.stderr)
            return 1
    try:
        model = Model(resolve_model_path(settings.model))
        make_detector(settings.analysis.vad, model.params.sample_rate, settings.analysis.vad_threshold)
    except (ModelError, VadError) as exc:
        print(f"serd: model error: {exc}", file=sys.stderr)
        return EX_CONFIG
    source = make_source(settings.source, model.params.sample_rate)
    try:
        publisher = Publisher(settings.publisher, settings.device_id)
    except PublisherError as exc:
        print(f"serd: {exc}", file=sys.stderr)
        return EX_CONFIG if exc.config_error else 1
    server = None
    try:
        daemon = Daemon(settings, model, source, publisher)
        if args.config is not None:
            daemon.reload_hook = lambda: load_settings(args)
        if metrics is not None:
            daemon_metrics = metrics.DaemonMetrics(settings.metrics.room_arousal)
            daemon_metrics.attach(daemon)
            try:
                server = metrics.serve(daemon_metrics.registry, settings.metrics.bind, "metrics.bind")
            except metrics.MetricsError as exc:
                print(f"serd: {exc}", file=sys.stderr)
                return 1
        daemon.install_signal_handlers()
        _LOGGER.info("serd: model %s (%s), source %s, device %s", model.model_id, model.backend,
                     source.description, settings.device_id)
        return daemon.run()
    finally:
        if server is not None:
            server.stop()
        publisher.close()  # idempotent; also when a SIGTERM during start-up raised SystemExit (no ipc file left)
