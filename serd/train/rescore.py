"""Re-calibrate and re-score the exported models of a training run (no retraining).

    python -m serd.train.rescore runs/cv_serd [--data ../shared/data/ravdess] [--noise-eval]

Rebuilds each split from its name exactly as `serd train` did, fits the
temperature on its validation actors and scores its test actors through the
runtime path, then rewrites results.json and the sidecars.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from serd.features import FeatureParams
from serd.train.data import Corpus
from serd.train.fit import FitSettings, calibrate_and_score
from serd.train.splits import actor_folds, holdout_actors, seed_protocol

_LOGGER = logging.getLogger(__name__)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ravdess"))
    parser.add_argument("--noise-eval", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    results_path = args.run_dir / "results.json"
    results = json.loads(results_path.read_text())
    corpora: dict[str, Corpus] = {}
    for name, result in results.items():
        models = sorted(args.run_dir.glob(f"{name}-*-int8.tflite")) + sorted(args.run_dir.glob(f"{name}-*-float.tflite"))
        if not models:
            continue
        sidecar = json.loads(models[0].with_suffix(".json").read_text())
        label_set = sidecar["label_set"]
        if label_set not in corpora:
            corpora[label_set] = Corpus.load(args.data, label_set, FeatureParams().sample_rate)
        corpus = corpora[label_set]
        seed = int(result["settings"]["seed"])
        if name.startswith("fold"):
            n_folds = 24 // len(result["test_actors"])
            split = actor_folds(corpus.clips, n_folds)[int(name[4:]) - 1]
        elif name == "seed":
            split = seed_protocol(corpus.clips, seed)
        else:
            split = holdout_actors(corpus.clips, tuple(result["val_actors"]))
        settings = FitSettings(seed=seed)
        for path in models:
            kind = path.stem.rsplit("-", 1)[1]
            _LOGGER.info("rescoring %s", path.name)
            result[kind] = calibrate_and_score(path, corpus, split, settings, args.noise_eval and kind == "int8")
        if "float" in result and "int8" in result and split.test:
            result["int8_float_agreement"] = float(
                np.mean(np.array(result["float"]["predicted"]) == np.array(result["int8"]["predicted"]))
            )
        results_path.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
