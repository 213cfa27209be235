"""`serd listen`: a subscriber with a live terminal view, or JSON lines."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from serd.config import EX_INTERRUPTED
from serd.messages import EmotionMessage, MessageError, StatusMessage, decode
from serd.subcommand import add_command
from serd.subscriber import Subscriber

BAR_WIDTH = 30
REDRAW_S = 0.2
STALE_AFTER_S = 15.0
MALFORMED_REPORT_EVERY = 1000
"""After the first malformed message, one line per this many (a flood must not flood stderr)."""


def add_parser(subparsers) -> None:
    p = add_command(
        subparsers, "listen", "subscribe and show results live (or as JSON lines)",
        "Subscribe to one or more serd daemons: a live view per device on a terminal, one summary line per "
        "message in a pipe, or every message as a JSON line with --json.",
        ("serd listen",
         "serd listen --connect tcp://192.168.1.20:5556 --server-key server.key --client-key client.key_secret",
         "serd listen --json --count 10 --timeout 30 > messages.jsonl"),
    )
    p.add_argument("--connect", action="append", default=None, help="endpoint (repeatable; default tcp://127.0.0.1:5556)")
    p.add_argument("--topic", action="append", default=None, help="topic prefix (repeatable; default: serd.)")
    p.add_argument("--json", action="store_true", help="print every message as one JSON line")
    p.add_argument("--count", type=int, default=0, help="exit after this many emotion messages (0: never)")
    p.add_argument("--timeout", type=float, default=0.0, help="exit after this many seconds (0: never)")
    p.add_argument("--exit-on-stop", action="store_true", help="exit when a daemon reports it is stopping")
    p.add_argument("--server-key", type=Path, default=None, help="CURVE: the server's public key file")
    p.add_argument("--client-key", type=Path, default=None, help="CURVE: this client's secret key file")
    p.set_defaults(func=listen_command)


@dataclass
class DeviceView:
    emotion: EmotionMessage | None = None
    last_speech: EmotionMessage | None = None
    """The latest window with speech: shown (marked as past) while the room is quiet."""
    status: StatusMessage | None = None
    last_heard: float = field(default_factory=time.time)
    gaps: int = 0


def _percent(p: float | None) -> str:
    return "?" if p is None else f"{p:.0%}"


def render(devices: dict[str, DeviceView], now: float, endpoints: str = "") -> str:
    lines = [f"serd listen — {time.strftime('%H:%M:%S', time.localtime(now))}   (Ctrl-C to quit)", ""]
    if not devices:
        lines.append(waiting_line(endpoints))
    for name, view in sorted(devices.items()):
        stale = now - view.last_heard > STALE_AFTER_S
        state = "stale" if stale else (view.status.state if view.status else "?")
        e, last = view.emotion, view.last_speech
        head = f"■ {name}  [{state}]"
        if e is not None:
            if e.speech and e.label:
                head += f"  {e.label.upper()} {_percent(e.confidence)}"
            elif last is not None and last.label:
                head += f"  (quiet now; last speech {last.label} {_percent(last.confidence)}, {e.end_s - last.end_s:.0f} s ago)"
            else:
                head += "  (no speech yet)"
            head += f"  level {e.level_dbfs:.0f} dBFS"
        lines.append(head)
        if last is not None and last.smoothed:
            bar = "█" if e is last else "░"  # solid: now; light: the last speech heard
            for label, p in last.smoothed.items():
                lines.append(f"   {label:<9} {p:5.0%} {bar * int(round(p * BAR_WIDTH))}")
            if last.smoothed_arousal is not None:
                lines.append("   " + arousal_gauge(last.smoothed_arousal))
        if view.status is not None:
            s = view.status
            lines.append(
                f"   windows {s.windows}  published {s.published}  overruns {s.overruns}  dropped {s.dropped}  "
                f"cpu {s.cpu_percent:.1f}%  rss {s.rss_mb:.0f} MB  up {s.uptime_s:.0f} s  lost here {view.gaps}"
            )
        lines.append("")
    return "\n".join(lines)


def listen_command(args: argparse.Namespace) -> int:
    import zmq

    endpoints = args.connect or ["tcp://127.0.0.1:5556"]
    topics = args.topic or ["serd."]
    try:
        sub = Subscriber(endpoints, topics, args.server_key, args.client_key)
    except (ValueError, OSError, zmq.ZMQError) as exc:
        print(f"serd listen: {exc}", file=sys.stderr)
        return 1
    live_view = sys.stdout.isatty() and not args.json
    where = ", ".join(endpoints)
    devices: dict[str, DeviceView] = {}
    last_seq: dict[str, int] = {}
    emotions = 0
    malformed = 0
    started = time.monotonic()
    next_draw = 0.0
    try:
        # Inside the try: a Ctrl-C right after this line (a script waits for it) still ends in 130.
        if not live_view:  # stderr: JSON lines on stdout stay clean
            print(waiting_line(where), file=sys.stderr, flush=True)
        while True:
            if args.timeout and time.monotonic() - started >= args.timeout:
                if not last_seq:  # not one message: say so, rather than exit as if all were well
                    print(f"serd: {where}: nothing received within {args.timeout:g} s (is serd run publishing "
                          "there? see --connect)", file=sys.stderr)
                    return 1
                break
            if not sub.poll(int(REDRAW_S * 1000)):
                if live_view:
                    print("\x1b[H\x1b[J" + render(devices, time.time(), where), end="", flush=True)
                continue
            frames = sub.recv_multipart()
            try:
                message = decode(frames)
            except MessageError as exc:
                malformed += 1
                if malformed == 1 or malformed % MALFORMED_REPORT_EVERY == 0:
                    print(f"serd listen: skipped {malformed} malformed message(s) (last: {exc})", file=sys.stderr)
                continue
            topic = message.topic
            gap = message.seq - last_seq[topic] - 1 if topic in last_seq else 0
            last_seq[topic] = message.seq
            view = devices.setdefault(message.device, DeviceView())
            view.last_heard = time.time()
            view.gaps += max(0, gap)
            if isinstance(message, EmotionMessage):
                view.emotion = message
                if message.speech and message.smoothed:
                    view.last_speech = message
                emotions += 1
            else:
                view.status = message
            if args.json:
                print(json.dumps(message.to_dict()), flush=True)
            elif live_view:
                if time.monotonic() >= next_draw:
                    print("\x1b[H\x1b[J" + render(devices, time.time(), where), end="", flush=True)
                    next_draw = time.monotonic() + REDRAW_S
            else:
                print(summary_line(message), flush=True)
            if args.count and emotions >= args.count:
                break
            if args.exit_on_stop and isinstance(message, StatusMessage) and message.state == "stopping":
                if live_view:
                    print("\x1b[H\x1b[J" + render(devices, time.time(), where), flush=True)
                break
    except KeyboardInterrupt:
        return EX_INTERRUPTED
    finally:
        sub.close()
    if malformed:
        print(f"serd listen: skipped {malformed} malformed message(s) in all", file=sys.stderr)
    if sub.dropped:
        print(f"serd listen: {sub.dropped} publisher connection(s) dropped by ZeroMQ and reconnected "
              "(a frame over the size limit, or a failed handshake)", file=sys.stderr)
    return 0


def arousal_gauge(arousal: float, width: int = BAR_WIDTH) -> str:
    """calm ──●── activated, the marker at the arousal probability."""
    at = min(width - 1, int(arousal * width))
    return f"{'calm':<9} {'─' * at}●{'─' * (width - 1 - at)} activated ({arousal:.0%})"


def waiting_line(endpoints: str) -> str:
    return f"waiting for messages on {endpoints} …" if endpoints else "waiting for messages…"


def summary_line(message) -> str:
    if isinstance(message, StatusMessage):
        return f"{message.device} status {message.state} windows={message.windows} published={message.published}"
    if message.speech and message.label:
        return (f"{message.device} {message.start_s:7.2f}-{message.end_s:7.2f}s {message.label:<8} "
                f"{_percent(message.confidence)}"
                + (f" arousal {message.smoothed_arousal:.0%}" if message.smoothed_arousal is not None else "")
                + f" level {message.level_dbfs:.0f} dBFS")
    return f"{message.device} {message.start_s:7.2f}-{message.end_s:7.2f}s (no speech) level {message.level_dbfs:.0f} dBFS"

