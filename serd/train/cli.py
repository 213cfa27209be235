"""`serd train` and `serd evaluate`: argument parsing and the summary table."""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

from serd.subcommand import add_command

_LOGGER = logging.getLogger(__name__)
DEFAULT_DATA = "ravdess=../shared/data/ravdess"


def add_train_parser(subparsers) -> None:
    p = add_command(
        subparsers, "train", "train, export and score models on one or more corpora (needs the train extra)",
        "Train the CNN on labelled corpora (RAVDESS, nEMO, your own CSV) with speaker-disjoint folds or "
        "leave-one-corpus-out, export each model to int8 TFLite and score it through serd's runtime, per corpus. "
        "Needs pip install '.[train]'.",
        ("serd train --data ravdess=../shared/data/ravdess --data nemo=../shared/data/nemo --steps 3000 --out runs/cv",
         "serd train --data ravdess=../shared/data/ravdess --data nemo=../shared/data/nemo --protocol loco --out runs/loco",
         "serd train --data ravdess=../shared/data/ravdess --data csv:school=labels.csv --protocol final --name mine --out runs/final",
         "serd train --actors 1,2,3 --folds 3 --only-folds 1 --epochs 2 --out runs/smoke"),
    )
    p.add_argument("--data", action="append", default=None, metavar="KIND=PATH",
                   help="a corpus: ravdess=DIR, nemo=DIR, csv=FILE (columns path, speaker, emotion) or csv:NAME=FILE; "
                        f"repeat for several (default: {DEFAULT_DATA})")
    p.add_argument("--protocol", choices=("cv", "seed", "final", "loco"), default="cv",
                   help="cv: speaker-disjoint folds over all corpora; seed: the study's 180-clip RAVDESS split; "
                        "final: everyone but a few calibration speakers; loco: leave one corpus out, each in turn")
    p.add_argument("--network", choices=("serd_cnn", "serd_cnn_wide", "study"), default="serd_cnn",
                   help="serd_cnn: the shipped network; serd_cnn_wide: twice the channels (4x the multiply-adds); "
                        "study: the original study's (default: %(default)s)")
    p.add_argument("--label-set", choices=("emotion5", "emotion6", "emotion8", "seed12"), default="emotion5",
                   help="emotion5: calm->neutral, surprised->happy, no disgust (only RAVDESS has it: it became the "
                        "answer for anything unfamiliar); emotion6: with disgust; emotion8: all eight; "
                        "seed12: emotion6 x gender (default: %(default)s)")
    p.add_argument("--folds", type=int, default=6, help="number of speaker-disjoint folds (default: %(default)s)")
    p.add_argument("--only-folds", default="", help="comma-separated fold numbers to run (default: all)")
    p.add_argument("--actors", default="", help="comma-separated RAVDESS actors to use (default: all)")
    p.add_argument("--val-actors", default="11,12", help="RAVDESS calibration actors for --protocol final (default: %(default)s)")
    p.add_argument("--val-per-corpus", type=int, default=1,
                   help="validation speakers per non-RAVDESS corpus in cv/final, and per training corpus in loco x2 (default: %(default)s)")
    p.add_argument("--test-corpus", default="", help="loco: only this held-out corpus (default: each in turn)")
    p.add_argument("--epochs", type=int, default=40, help="passes over the training clips (default: %(default)s)")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps instead of --epochs (more data needs fewer passes)")
    p.add_argument("--crops-per-clip", type=int, default=2, help="training windows per clip per epoch (default: %(default)s)")
    p.add_argument("--reverb-rt60", default="0.2,0.8", help="reverberation RT60 range in seconds (default: %(default)s)")
    p.add_argument("--band-mean", action="store_true",
                   help="features: remove each mel band's mean per window (the channel's and voice's fixed colouring)")
    p.add_argument("--batch-size", type=int, default=None, help="default: 32 (serd_cnn), 16 (study)")
    p.add_argument("--learning-rate", type=float, default=None, help="default: 2e-3 (serd_cnn), 1e-3 (study)")
    p.add_argument("--no-class-mask", dest="class_mask", action="store_false",
                   help="a class a corpus has no clips of counts as a wrong answer for its clips (default: masked "
                        "out of their loss)")
    p.add_argument("--arousal-weight", type=float, default=0.0,
                   help="also train the arousal reading (activated vs calm) with this weight (default: %(default)s, off)")
    p.add_argument("--arousal-head", type=float, default=0.0, metavar="WEIGHT",
                   help="train an arousal output beside the emotions, its loss times WEIGHT (training only; default: off)")
    p.add_argument("--mixstyle", type=float, default=0.0, metavar="P",
                   help="mix the early layers' feature statistics between windows on a share P of them (MixStyle; default: off)")
    p.add_argument("--corpus-adversary", type=float, default=0.0, metavar="STRENGTH",
                   help="train a corpus classifier behind a gradient reversal of this strength, so that the features "
                        "stop telling the corpora apart (DANN; training only, two corpora or more; default: off)")
    p.add_argument("--augment-off", default="", help="comma-separated augmentations to switch off, or 'all'")
    p.add_argument("--augment-on", default="", help="comma-separated augmentations off by default to switch on (warp, phone, agc, ambient)")
    p.add_argument("--noise-eval", action="store_true", help="also score the int8 model at 20/10/5 dB pink/babble")
    p.add_argument("--no-export", action="store_true", help="skip TFLite export (Keras float scores only)")
    p.add_argument("--name", default=None, help="model file stem for --protocol final/seed (default: <split>-<network>-<labels>)")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed: weights, augmentation, and the split of --protocol seed (default: %(default)s)")
    p.add_argument("--out", type=Path, default=Path("runs/latest"), help="output folder (default: %(default)s)")
    p.set_defaults(func=run_train)


def add_evaluate_parser(subparsers) -> None:
    p = add_command(
        subparsers, "evaluate", "score a .tflite model on labelled corpora via serd's runtime",
        "Classify every clip of the given corpora through the same code as `serd analyze`, and print accuracy, "
        "UAR, calibration error and the confusion matrix, then per corpus its UAR, 4-class UAR and arousal UAR.",
        ("serd evaluate models/serd-emotion5-int8.tflite ../shared/data/ravdess",
         "serd evaluate models/serd-emotion5-int8.tflite nemo=../shared/data/nemo --conditions",
         "serd evaluate runs/final/serd-emotion5-int8.tflite csv=labels.csv --json"),
    )
    p.add_argument("model", type=Path, help="path to a .tflite with its .json sidecar")
    p.add_argument("data", nargs="*", metavar="KIND=PATH",
                   help=f"corpora as for train --data (ravdess=DIR, nemo=DIR, csv=FILE; a bare DIR is RAVDESS; default {DEFAULT_DATA})")
    p.add_argument("--conditions", action="store_true", help="also score every microphone/room condition of the model card")
    p.add_argument("--hop", type=float, default=0.5, help="window hop in seconds (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    p.set_defaults(func=run_evaluate)


def comma_ints(text: str) -> list[int]:
    """`--actors 1,2,3` and the like; a bad number ends the command in one line."""
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise SystemExit(f"serd: expected comma-separated numbers, got {text!r}") from None


def run_train(args: argparse.Namespace) -> int:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ chatter hides the progress lines
    from serd.features import FeatureParams
    from serd.train.augment import AUGMENTATIONS, AugmentSettings
    from serd.train.corpora import parse_spec
    from serd.train.data import Corpus
    from serd.train.fit import FitSettings, train_split
    from serd.train.splits import corpus_holdout, cv_folds, holdout_actors, holdout_speakers, seed_protocol

    params = FeatureParams(band_mean=args.band_mean)
    off = [a for a in args.augment_off.split(",") if a]
    try:
        specs = [parse_spec(text) for text in (args.data or [DEFAULT_DATA])]
        augment = AugmentSettings.none() if off == ["all"] else AugmentSettings().without(off)
        augment = augment.with_([a for a in args.augment_on.split(",") if a])
        for flag, value in (("--arousal-weight", args.arousal_weight), ("--arousal-head", args.arousal_head),
                            ("--corpus-adversary", args.corpus_adversary)):
            if value < 0:
                raise ValueError(f"{flag}: expected 0 or more, got {value}")
        if not 0 <= args.mixstyle <= 1:
            raise ValueError(f"--mixstyle: expected a share from 0 to 1, got {args.mixstyle}")
        if (args.mixstyle or args.arousal_head or args.corpus_adversary) and args.network == "study":
            raise ValueError("--mixstyle, --arousal-head and --corpus-adversary need --network serd_cnn or serd_cnn_wide")
        if args.corpus_adversary and len({spec.name for spec in specs}) < 2:
            raise ValueError("--corpus-adversary needs two corpora or more (--data NAME=PATH, twice)")
        rt60 = tuple(float(v) for v in args.reverb_rt60.split(","))
        if len(rt60) != 2 or not 0 < rt60[0] <= rt60[1]:
            raise ValueError(f"--reverb-rt60: expected MIN,MAX seconds, got {args.reverb_rt60}")
    except ValueError as exc:
        print(f"serd: {exc}", file=sys.stderr)
        return 2
    # After the flags are checked: a mistyped flag is one line, not seconds of TensorFlow
    # loading and its start-up chatter (TensorFlow 2.21 prints some whatever TF_CPP_MIN_LOG_LEVEL says).
    try:
        import tensorflow  # noqa: F401  (fail early with a useful hint)
    except ImportError:
        print("serd train: TensorFlow is missing; install the extra: pip install 'serd[train]'", file=sys.stderr)
        return 1
    augment = dataclasses.replace(augment, rt60_s=rt60)
    study = args.network == "study"
    settings = FitSettings(
        network=args.network,
        epochs=args.epochs,
        batch_size=args.batch_size or (16 if study else 32),
        learning_rate=args.learning_rate or (1e-3 if study else 2e-3),
        crops_per_clip=args.crops_per_clip,
        steps=args.steps,
        seed=args.seed,
        class_mask=args.class_mask,
        arousal_weight=args.arousal_weight,
        arousal_head=args.arousal_head,
        mixstyle=args.mixstyle,
        corpus_adversary=args.corpus_adversary,
        augment=augment,
    )
    actors = set(comma_ints(args.actors)) or None
    try:
        corpus = Corpus.from_specs(specs, args.label_set, params.sample_rate, actors)
        ravdess_only = corpus.corpora == ["ravdess"]
        if args.protocol == "cv":
            splits = cv_folds(corpus.clips, args.folds, args.val_per_corpus)
            only = set(comma_ints(args.only_folds))
            splits = [s for k, s in enumerate(splits, 1) if not only or k in only]
        elif args.protocol == "seed":
            if not ravdess_only:
                raise ValueError("--protocol seed is the study's RAVDESS split: give only ravdess data")
            splits = [seed_protocol(corpus.clips, args.seed)]
        elif args.protocol == "loco":
            tests = [args.test_corpus] if args.test_corpus else corpus.corpora
            splits = [corpus_holdout(corpus.clips, name, 2 * args.val_per_corpus) for name in tests]
        elif ravdess_only:
            splits = [holdout_actors(corpus.clips, tuple(comma_ints(args.val_actors)))]
        else:
            splits = [holdout_speakers(corpus.clips, args.val_per_corpus, tuple(comma_ints(args.val_actors)))]
    except ValueError as exc:
        print(f"serd: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results: dict = {}
    for split in splits:
        _LOGGER.info("%s: train %d, val %d, test %d clips (test actors %s)", split.name, len(split.train),
                     len(split.val), len(split.test), list(split.test_actors))
        result = train_split(corpus, split, params, settings, args.out, args.label_set,
                             export=not args.no_export, noise_eval=args.noise_eval,
                             name=args.name if len(splits) == 1 else None)
        results = _add_result(results_path, split.name, result)
    print(summary_table(results, corpus.labels))
    print(corpus_table(results))
    print(f"results: {results_path}")
    _ = AUGMENTATIONS
    return 0


def _add_result(results_path: Path, split_name: str, result: dict) -> dict:
    """Merge one split's result into results.json and return all of them.

    Read under a lock at write time, not once at the start, so that runs writing to the same
    folder at once (folds or held-out corpora run in parallel) keep each other's results; the
    file is replaced whole, so a reader never sees half of it.
    """
    with open(results_path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = json.loads(results_path.read_text()) if results_path.exists() else {}
        results[split_name] = result
        partial = results_path.with_suffix(".json.part")
        partial.write_text(json.dumps(results, indent=1))
        os.replace(partial, results_path)
    return results


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


def corpus_table(results: dict) -> str:
    """Per split and test corpus: the readings that predict a classroom (int8, through the runtime)."""
    rows = ["| split | test corpus | clips | classes | UAR | 4-class UAR | arousal UAR |", "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        for corpus, sc in r.get("int8", {}).get("by_corpus", {}).items():
            rows.append(f"| {name} | {corpus} | {sc['clips']} | {len(sc['classes'])} | {sc['uar']:.3f} | "
                        f"{sc.get('uar4', float('nan')):.3f} | {sc.get('arousal_uar', float('nan')):.3f} |")
    return "\n".join(rows)


def run_evaluate(args: argparse.Namespace) -> int:
    from serd.analysis import GateSettings
    from serd.train.corpora import parse_spec
    from serd.train.evaluate import evaluate_data

    started = time.monotonic()
    try:
        specs = [parse_spec(text) for text in (args.data or [DEFAULT_DATA])]
        scores = evaluate_data(args.model, specs, args.hop, GateSettings(), conditions=args.conditions)
    except ValueError as exc:
        print(f"serd: {exc}", file=sys.stderr)
        return 2
    scores["seconds"] = round(time.monotonic() - started, 1)
    if args.json:
        scores.pop("predicted", None)
        print(json.dumps(scores))
        return 0
    print(f"{args.model}: {scores['clips']} clips, speakers {scores['speakers']}")
    print(f"accuracy {scores['accuracy']:.3f}  UAR {scores['uar']:.3f}  ECE {scores['ece']:.3f}  "
          f"({scores['no_speech_clips']} clips without speech; {scores['backend']}; {scores['seconds']} s)")
    width = max(len(label) for label in scores["labels"])
    print(" " * (width + 2) + " ".join(f"{label[:7]:>7}" for label in scores["labels"]))
    for label, row in zip(scores["labels"], scores["confusion"]):
        print(f"{label:>{width}}  " + " ".join(f"{v:7d}" for v in row))
    for name, sc in scores["by_corpus"].items():
        print(f"{name}: {sc['clips']} clips, classes {', '.join(sc['classes'])}: UAR {sc['uar']:.3f}  "
              f"4-class UAR {sc.get('uar4', float('nan')):.3f}  arousal UAR {sc.get('arousal_uar', float('nan')):.3f}")
    for condition, sc in scores.get("conditions", {}).items():
        print(f"  {condition:<16} UAR {sc['uar']:.3f}  " + "  ".join(
            f"{name} {c['uar']:.3f}" for name, c in sc["by_corpus"].items()))
    return 0
