"""A temperature for the training recipe, fitted across folds rather than on two speakers.

Each fold's validation set holds only a few speakers: a temperature fitted
there swings from fold to fold and made test calibration worse. Here every
cross-validation model scores its own test speakers through the runtime
(out-of-fold: every clip of every corpus once); the temperature for fold k is
fitted on the other folds' clips, and ECE is measured on fold k's, so each
figure is honest. The temperature fitted on all folds is what the shipped model gets.

    python -m serd.train.calibrate runs/cv_rel [--kind int8] [--apply models/serd-emotion5-int8.json]
    python -m serd.train.calibrate runs/cv_v2 --data ravdess=../shared/data/ravdess --data nemo=../shared/data/nemo

Give the same `--data` (and `--folds`, `--val-per-corpus`) as the `serd train --protocol cv` run.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from serd.analysis import GateSettings, file_windows, gate_windows
from serd.features import FeatureParams
from serd.train import metrics
from serd.train.cli import DEFAULT_DATA, comma_ints
from serd.train.corpora import DataSpec, parse_spec
from serd.train.data import Corpus
from serd.train.splits import cv_folds

_LOGGER = logging.getLogger(__name__)


def clip_logits(model_path: Path, corpus: Corpus, indices, hop_s: float, gate: GateSettings) -> list[np.ndarray]:
    """Per clip, the logits of its speech windows, cut and gated exactly as `serd analyze` does."""
    from serd.model import Model

    model = Model(model_path)
    out = []
    for i in indices:
        windows = file_windows([corpus.audio[i]], model.params, hop_s)
        _, features = gate_windows(windows, model.params, model.labels, gate)
        out.append(np.stack([model.logits(f) for f in features]) if features.shape[0] else np.zeros((0, len(model.labels))))
    return out


def clip_probs(logits: list[np.ndarray], temperature: float, n_classes: int) -> np.ndarray:
    rows = []
    for window_logits in logits:
        if not len(window_logits):
            rows.append(np.full(n_classes, 1.0 / n_classes))
            continue
        z = window_logits / temperature
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        rows.append(p.mean(axis=0))
    return np.stack(rows)


def cross_fold(run_dir: Path, data: list[DataSpec], kind: str, hop_s: float = 0.5, n_folds: int = 6,
               val_per_corpus: int = 1, actors: set[int] | None = None, also: tuple[float, ...] = ()) -> dict:
    """The report; `also`: fixed temperatures (a shipped sidecar's) whose pooled ECE is reported too."""
    results = json.loads((run_dir / "results.json").read_text())
    folds = sorted((k for k in results if k.startswith("fold")), key=lambda k: int(k[4:]))
    first = next(run_dir.glob(f"{folds[0]}-*-{kind}.tflite"))
    label_set = json.loads(first.with_suffix(".json").read_text())["label_set"]
    corpus = Corpus.from_specs(data, label_set, FeatureParams().sample_rate, actors)
    by_name = {s.name: s for s in cv_folds(corpus.clips, n_folds, val_per_corpus)}
    splits = [by_name[name] for name in folds]
    per_fold = {}
    for name, split in zip(folds, splits):
        path = next(run_dir.glob(f"{name}-*-{kind}.tflite"))
        _LOGGER.info("%s: scoring %d test clips with %s", name, len(split.test), path.name)
        per_fold[name] = (clip_logits(path, corpus, split.test, hop_s, GateSettings()), corpus.y[list(split.test)])
    n_classes = len(corpus.labels)
    report = {"kind": kind, "folds": {}}
    pooled_before, pooled_after, pooled_y = [], [], []
    for name in folds:
        others = [n for n in folds if n != name]
        t = metrics.fit_clip_temperature(
            [l for n in others for l in per_fold[n][0]], np.concatenate([per_fold[n][1] for n in others])
        )
        logits, y = per_fold[name]
        pooled_before.append(clip_probs(logits, 1.0, n_classes))
        pooled_after.append(clip_probs(logits, t, n_classes))
        pooled_y.append(y)
        report["folds"][name] = {
            "temperature": round(t, 4),
            "ece_uncalibrated": metrics.ece(clip_probs(logits, 1.0, n_classes), y),
            "ece": metrics.ece(clip_probs(logits, t, n_classes), y),
        }
    all_logits = [l for n in folds for l in per_fold[n][0]]
    all_y = np.concatenate([per_fold[n][1] for n in folds])
    report["temperature_all_folds"] = round(metrics.fit_clip_temperature(all_logits, all_y), 4)
    eces = [f["ece"] for f in report["folds"].values()]
    before = [f["ece_uncalibrated"] for f in report["folds"].values()]
    # Over all out-of-fold clips at once: per-fold ECE also carries each fold's own
    # accuracy shift (some speakers are harder) and the sampling noise of a few hundred clips.
    y_all = np.concatenate(pooled_y)
    report["pooled_ece_uncalibrated"] = metrics.ece(np.concatenate(pooled_before), y_all)
    report["pooled_ece"] = metrics.ece(np.concatenate(pooled_after), y_all)
    corpus_of = np.array([corpus.clips[i].corpus for split in splits for i in split.test])

    def by_corpus(probs: np.ndarray) -> dict[str, float]:
        return {name: metrics.ece(probs[corpus_of == name], y_all[corpus_of == name]) for name in sorted(set(corpus_of))}

    if len(set(corpus_of)) > 1:
        report["pooled_ece_by_corpus"] = by_corpus(np.concatenate(pooled_after))
        report["pooled_ece_uncalibrated_by_corpus"] = by_corpus(np.concatenate(pooled_before))
    for t in also:
        probs = clip_probs(all_logits, t, n_classes)
        report.setdefault("pooled_ece_at", {})[str(t)] = {"all": metrics.ece(probs, all_y), **by_corpus(probs)}
    report["ece_mean"], report["ece_std"] = float(np.mean(eces)), float(np.std(eces))
    report["ece_uncalibrated_mean"], report["ece_uncalibrated_std"] = float(np.mean(before)), float(np.std(before))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--data", action="append", metavar="KIND=PATH",
                        help=f"the cv run's corpora, as for serd train (default: {DEFAULT_DATA})")
    parser.add_argument("--actors", default="", help="comma-separated RAVDESS actors, if the cv run had --actors")
    parser.add_argument("--folds", type=int, default=6)
    parser.add_argument("--also-temperature", type=float, action="append", default=[],
                        help="also report the pooled ECE at this fixed temperature (e.g. a shipped sidecar's)")
    parser.add_argument("--val-per-corpus", type=int, default=1)
    parser.add_argument("--kind", choices=("int8", "float"), default="int8")
    parser.add_argument("--apply", type=Path, nargs="*", default=[], help="sidecars to give the all-folds temperature")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        specs = [parse_spec(text) for text in (args.data or [DEFAULT_DATA])]
    except ValueError as exc:
        parser.error(str(exc))
    actors = set(comma_ints(args.actors)) or None
    report = cross_fold(args.run_dir, specs, args.kind, n_folds=args.folds, val_per_corpus=args.val_per_corpus,
                        actors=actors, also=tuple(args.also_temperature))
    (args.run_dir / f"calibration-{args.kind}.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    for sidecar_path in args.apply:
        sidecar = json.loads(sidecar_path.read_text())
        sidecar["temperature"] = report["temperature_all_folds"]
        sidecar.setdefault("training", {})["calibration"] = (
            f"temperature fitted on the out-of-fold clip predictions of the {len(report['folds'])} cross-validation models "
            f"({args.run_dir.name}, {args.kind}); per-fold held-out ECE {report['ece_mean']:.3f} ± {report['ece_std']:.3f}"
        )
        sidecar_path.write_text(json.dumps(sidecar, indent=2) + "\n")
        _LOGGER.info("%s: temperature %.4f", sidecar_path, report["temperature_all_folds"])


if __name__ == "__main__":
    main()
