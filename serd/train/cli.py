"""`serd train` and `serd evaluate`: argument parsing and the summary table."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from serd.subcommand import add_command

_LOGGER = logging.getLogger(__name__)
DEFAULT_DATA = Path("../shared/data/ravdess")


def add_train_parser(subparsers) -> None:
    p = add_command(
        subparsers, "train", "train, export and score models on RAVDESS (needs the train extra)",
        "Train the CNN on a RAVDESS-layout folder with speaker-independent folds, export each fold's model to "
        "int8 TFLite and score it through serd's runtime. Needs pip install '.[train]'.",
        ("serd train --data ../shared/data/ravdess --out runs/cv",
         "serd train --protocol final --name serd-emotion6 --out runs/final",
         "serd train --actors 1,2,3 --folds 3 --only-folds 1 --epochs 2 --out runs/smoke"),
    )
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="RAVDESS-layout folder (default: %(default)s)")
    p.add_argument("--protocol", choices=("cv", "seed", "final"), default="cv",
                   help="cv: actor-disjoint folds; seed: the study's 180-clip split; final: all actors but --val-actors")
    p.add_argument("--network", choices=("serd_cnn", "study"), default="serd_cnn",
                   help="serd_cnn: the shipped network; study: the original study's (default: %(default)s)")
    p.add_argument("--label-set", choices=("emotion6", "emotion8", "seed12"), default="emotion6",
                   help="emotion6: calm->neutral, surprised->happy; emotion8: all eight; seed12: emotion x gender "
                        "(default: %(default)s)")
    p.add_argument("--folds", type=int, default=6, help="number of actor-disjoint folds (default: %(default)s)")
    p.add_argument("--only-folds", default="", help="comma-separated fold numbers to run (default: all)")
    p.add_argument("--actors", default="", help="comma-separated actors to use (default: all)")
    p.add_argument("--val-actors", default="11,12", help="calibration actors for --protocol final (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=40, help="training epochs per fold (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=None, help="default: 32 (serd_cnn), 16 (study)")
    p.add_argument("--learning-rate", type=float, default=None, help="default: 2e-3 (serd_cnn), 1e-3 (study)")
    p.add_argument("--augment-off", default="", help="comma-separated augmentations to switch off, or 'all'")
    p.add_argument("--noise-eval", action="store_true", help="also score the int8 model at 20/10/5 dB pink/babble")
    p.add_argument("--no-export", action="store_true", help="skip TFLite export (Keras float scores only)")
    p.add_argument("--name", default=None, help="model file stem for --protocol final/seed (default: <split>-<network>-<labels>)")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed: weights, augmentation, and the split of --protocol seed (default: %(default)s)")
    p.add_argument("--out", type=Path, default=Path("runs/latest"), help="output folder (default: %(default)s)")
    p.set_defaults(func=run_train)


def add_evaluate_parser(subparsers) -> None:
    p = add_command(
        subparsers, "evaluate", "score a .tflite model on a RAVDESS-layout folder via serd's runtime",
        "Classify every clip of a RAVDESS-layout folder (Actor_NN/*.flac) through the same code as "
        "`serd analyze`, and print accuracy, UAR, calibration error and the confusion matrix.",
        ("serd evaluate models/serd-emotion6-int8.tflite ../shared/data/ravdess",
         "serd evaluate runs/final/serd-emotion6-int8.tflite ../shared/data/ravdess --json"),
    )
    p.add_argument("model", type=Path, help="path to a .tflite with its .json sidecar")
    p.add_argument("data", type=Path, nargs="?", default=DEFAULT_DATA,
                   help="RAVDESS-layout folder (default: %(default)s)")
    p.add_argument("--hop", type=float, default=0.5, help="window hop in seconds (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    p.set_defaults(func=run_evaluate)


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise SystemExit(f"serd: expected comma-separated numbers, got {text!r}") from None


def run_train(args: argparse.Namespace) -> int:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ chatter hides the progress lines
    try:
        import tensorflow  # noqa: F401  (fail early with a useful hint)
    except ImportError:
        print("serd train: TensorFlow is missing; install the extra: pip install 'serd[train]'", file=sys.stderr)
        return 1
    from serd.features import FeatureParams
    from serd.train.augment import AUGMENTATIONS, AugmentSettings
    from serd.train.data import Corpus
    from serd.train.fit import FitSettings, train_split
    from serd.train.splits import actor_folds, holdout_actors, seed_protocol

    params = FeatureParams()
    off = [a for a in args.augment_off.split(",") if a]
    augment = AugmentSettings.none() if off == ["all"] else AugmentSettings().without(off)
    study = args.network == "study"
    settings = FitSettings(
        network=args.network,
        epochs=args.epochs,
        batch_size=args.batch_size or (16 if study else 32),
        learning_rate=args.learning_rate or (1e-3 if study else 2e-3),
        seed=args.seed,
        augment=augment,
    )
    actors = set(_ints(args.actors)) or None
    corpus = Corpus.load(args.data, args.label_set, params.sample_rate, actors)
    if args.protocol == "cv":
        splits = actor_folds(corpus.clips, args.folds)
        only = set(_ints(args.only_folds))
        splits = [s for k, s in enumerate(splits, 1) if not only or k in only]
    elif args.protocol == "seed":
        splits = [seed_protocol(corpus.clips, args.seed)]
    else:
        splits = [holdout_actors(corpus.clips, tuple(_ints(args.val_actors)))]
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for split in splits:
        _LOGGER.info("%s: train %d, val %d, test %d clips (test actors %s)", split.name, len(split.train),
                     len(split.val), len(split.test), list(split.test_actors))
        results[split.name] = train_split(corpus, split, params, settings, args.out, args.label_set,
                                          export=not args.no_export, noise_eval=args.noise_eval,
                                          name=args.name if len(splits) == 1 else None)
        results_path.write_text(json.dumps(results, indent=1))
    print(summary_table(results, corpus.labels))
    print(f"results: {results_path}")
    _ = AUGMENTATIONS
    return 0


def summary_table(results: dict, labels) -> str:
    rows = ["| split | test actors | Keras float acc / UAR | TFLite float acc / UAR | int8 acc / UAR | int8=float | T | ECE before → after | train s |",
            "|---|---|---|---|---|---|---|---|---|"]
    uars = []
    for name, r in results.items():
        def cell(key):
            s = r.get(key)
            return f"{s['accuracy']:.3f} / {s['uar']:.3f}" if s and "uar" in s else "–"
        int8 = r.get("int8", {})
        if "uar" in int8:
            uars.append((int8["accuracy"], int8["uar"]))
        ece = f"{int8['ece_before']:.3f} → {int8['ece']:.3f}" if "ece" in int8 else "–"
        rows.append(
            f"| {name} | {r.get('test_actors')} | {cell('keras_float')} | {cell('float')} | {cell('int8')} | "
            f"{r.get('int8_float_agreement', float('nan')):.3f} | {int8.get('temperature', '–')} | {ece} | {r['train_seconds']} |"
        )
    if uars:
        arr = np.array(uars)
        rows.append(f"| mean ± std | | | | {arr[:, 0].mean():.3f} ± {arr[:, 0].std():.3f} / "
                    f"{arr[:, 1].mean():.3f} ± {arr[:, 1].std():.3f} | | | | |")
    return "\n".join(rows)


def run_evaluate(args: argparse.Namespace) -> int:
    from serd.analysis import GateSettings
    from serd.train.evaluate import evaluate_folder

    started = time.monotonic()
    scores = evaluate_folder(args.model, args.data, args.hop, GateSettings())
    scores["seconds"] = round(time.monotonic() - started, 1)
    if args.json:
        scores.pop("predicted", None)
        print(json.dumps(scores))
        return 0
    print(f"{args.model}: {scores['clips']} clips, actors {scores['actors']}")
    print(f"accuracy {scores['accuracy']:.3f}  UAR {scores['uar']:.3f}  ECE {scores['ece']:.3f}  "
          f"({scores['no_speech_clips']} clips without speech; {scores['backend']}; {scores['seconds']} s)")
    width = max(len(label) for label in scores["labels"])
    print(" " * (width + 2) + " ".join(f"{label[:7]:>7}" for label in scores["labels"]))
    for label, row in zip(scores["labels"], scores["confusion"]):
        print(f"{label:>{width}}  " + " ".join(f"{v:7d}" for v in row))
    return 0
