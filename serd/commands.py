"""Small commands: `serd analyze`, `serd devices`, `serd keys`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from serd.config import DEFAULT_MODEL, EX_CONFIG
from serd.subcommand import add_command
from serd.vad import DEFAULT_THRESHOLD, DEFAULT_VAD, VAD_KINDS


def add_parsers(subparsers) -> None:
    p = add_command(
        subparsers, "analyze", "classify recorded files (the original tool's file analysis)",
        "Classify whole recordings: per file the top emotion and the probabilities averaged over the windows "
        "with speech. Bad files are reported (one line each) and skipped; the exit code is 1 if any failed.",
        ("serd analyze examples/demo.flac",
         "serd analyze --json recordings/*.wav > results.jsonl"),
    )
    p.add_argument("files", nargs="+", type=Path, help="wav, flac or ogg files")
    p.add_argument("--json", action="store_true", help="one JSON object per file per line")
    p.add_argument("--model", default=DEFAULT_MODEL, help="model name or .tflite path (default: %(default)s)")
    p.add_argument("--hop", type=float, default=0.5, help="seconds between windows (default: %(default)s)")
    p.add_argument("--gate-dbfs", type=float, default=-55.0, help="speech gate level (default: %(default)s)")
    p.add_argument("--vad", choices=VAD_KINDS, default=DEFAULT_VAD,
                   help="voice detector after the level gate, as analysis.vad (default: %(default)s)")
    p.add_argument("--vad-threshold", type=float, default=DEFAULT_THRESHOLD,
                   help="share of a window's chunks that must hold a voice (default: %(default)s)")
    p.set_defaults(func=analyze_command)

    p = add_command(
        subparsers, "devices", "list audio input devices and their sample rates",
        "List the microphones PortAudio can see, with their channels and the sample rates that work; "
        "give one to `serd run --input-device` by index or by part of its name.",
        ("serd devices", "serd run --input-device USB"),
    )
    p.add_argument("--json", action="store_true", help="print the list as one JSON array")
    p.set_defaults(func=devices_command)

    p = add_command(
        subparsers, "keys", "make CURVE key pairs for the server and a client",
        "Write a CURVE key pair for the daemon and one for a client into DIRECTORY, for publishing "
        "encrypted and authenticated beyond loopback (see the README's Security and privacy section).",
        ("serd keys /etc/serd/keys", "serd keys /etc/serd/keys --client-name dashboard"),
    )
    p.add_argument("directory", type=Path, help="where to write the key files (created if missing)")
    p.add_argument("--client-name", default="client",
                   help="file name stem of the client's key pair (default: %(default)s)")
    p.set_defaults(func=keys_command)


def analyze_command(args: argparse.Namespace) -> int:
    from serd.analysis import GateSettings, analyze_file, result_to_json
    from serd.audiofile import AudioFileError
    from serd.gate import BELOW_GATE
    from serd.labels import arousal_of
    from serd.model import Model, ModelError, resolve_model_path
    from serd.vad import VadError, make_detector

    if not args.hop > 0:
        print(f"serd: --hop must be > 0 seconds, got {args.hop}", file=sys.stderr)
        return 2
    if not 0.0 < args.vad_threshold <= 1.0:
        print(f"serd: --vad-threshold must be a share in (0, 1], got {args.vad_threshold}", file=sys.stderr)
        return 2
    try:
        model = Model(resolve_model_path(args.model))
        make_detector(args.vad, model.params.sample_rate, args.vad_threshold)
    except (ModelError, VadError) as exc:
        print(f"serd: model error: {exc}", file=sys.stderr)
        return EX_CONFIG
    gate = GateSettings(args.gate_dbfs, 1, args.vad, args.vad_threshold)
    failed = 0
    for path in args.files:
        try:
            result = analyze_file(path, model, args.hop, gate)
        except AudioFileError as exc:
            failed += 1
            if args.json:
                print(json.dumps({"file": str(path), "error": str(exc)}), flush=True)
            else:
                print(f"serd: {exc}", file=sys.stderr)  # the message starts with the path
            continue
        if args.json:
            print(json.dumps(result_to_json(result, str(path))), flush=True)
            continue
        speech = sum(w.speech for w in result.windows)
        if result.probs is None:
            quiet = sum(w.reason == BELOW_GATE for w in result.windows)
            print(f"{path}: no speech ({len(result.windows)} windows: {quiet} below {args.gate_dbfs} dBFS, "
                  f"{len(result.windows) - quiet} without a voice)")
            continue
        ranked = sorted(zip(model.labels, result.probs), key=lambda kv: -kv[1])
        print(f"{path}: {result.label} ({ranked[0][1]:.0%}; {speech}/{len(result.windows)} windows with speech)")
        for label, p in ranked:
            print(f"  {label:<9} {p:6.1%} {'█' * int(round(p * 30))}")
        arousal = arousal_of(result.probs, model.labels)
        if arousal is not None:
            print(f"  arousal   {arousal:6.1%} (calm 0 % … activated 100 %)")
    return 1 if failed else 0


def devices_command(args: argparse.Namespace) -> int:
    from serd.sources import SourceError, input_devices

    try:
        devices = input_devices()
    except SourceError as exc:
        print(f"serd: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(devices))
        return 0
    if not devices:
        print("no audio input devices found")
    for d in devices:
        rates = ", ".join(str(r) for r in d["rates"]) or "none of the common rates"
        print(f"{d['index']:3d}  {d['name']}  ({d['channels']} ch, default {d['default_rate']} Hz; works at {rates})")
    return 0


def keys_command(args: argparse.Namespace) -> int:
    from serd.keys import make_keys

    try:
        made = make_keys(args.directory, args.client_name)
    except (FileExistsError, OSError) as exc:
        print(f"serd: {exc}", file=sys.stderr)
        return 1
    for role, path in made.items():
        print(f"{role:<16} {path}")
    print("server config: publisher.curve.server_secret_key and publisher.curve.authorized_clients (above);")
    print(f"client: serd listen --server-key {made['server_public']} --client-key {made[args.client_name + '_secret']}")
    return 0
