"""Generate a tiny, real TFLite model (int8 and float) for fast unit tests.

The network is `serd_cnn` from `serd.train.networks`, built for the default
`FeatureParams()` input with the six `EMOTION6` labels. Its weights are random
but seeded (no training: the tests check plumbing, not accuracy), and it goes
through the very export path a trained model takes (`to_tflite` + `save_model`),
so the .tflite and its sidecar are exactly what the runtime has to load.

The int8 variant is calibrated on seeded random windows drawn like standardised
log-mel features (mean 0, std 1), so it needs no dataset.

    python tests/make_tiny_model.py OUT_DIR [--kind int8|float|both]

needs the `train` extra (TensorFlow). The tests run it once per session in a
subprocess (see `conftest.py`), so TensorFlow never shares the test process
with the TFLite interpreters.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

if __name__ == "__main__":  # run as a script: make `serd` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serd.features import FeatureParams  # noqa: E402
from serd.labels import EMOTION6  # noqa: E402

KINDS = ("int8", "float")
NETWORK = "serd_cnn"
SEED = 1234
REPRESENTATIVE_WINDOWS = 16
"""Calibration windows for int8: few is enough for a model nobody asks to be accurate."""
LOGIT_GAIN = 8.0
"""Scale on the classifier weights: at Keras' default init the logits barely differ,
the probabilities all sit near 1/6 and a test comparing outputs would learn little."""


def tiny_model_stem(kind: str) -> str:
    return f"tiny-emotion6-{kind}"


def _keras_model(params: FeatureParams):
    import keras

    keras.utils.set_random_seed(SEED)
    from serd.train.networks import build

    model = build(NETWORK, params.shape, len(EMOTION6))
    logits = model.get_layer("logits")
    kernel, bias = logits.get_weights()
    rng = np.random.default_rng(SEED)
    logits.set_weights([kernel * LOGIT_GAIN, rng.normal(0.0, 0.5, size=bias.shape).astype(bias.dtype)])
    return model


def _representative(params: FeatureParams) -> np.ndarray:
    rng = np.random.default_rng(SEED + 1)
    return rng.standard_normal((REPRESENTATIVE_WINDOWS, *params.shape, 1)).astype(np.float32)


def make_tiny_model(out_dir: Path, kind: str = "int8") -> Path:
    """Write `tiny-emotion6-<kind>.tflite` and its sidecar into `out_dir`; return the .tflite path."""
    return make_tiny_models(out_dir, (kind,))[kind]


def make_tiny_models(out_dir: Path, kinds: tuple[str, ...] = KINDS) -> dict[str, Path]:
    """Several variants from one set of weights (one TensorFlow start-up for all)."""
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown model kind(s) {sorted(unknown)}; expected some of {KINDS}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from serd.train.export import save_model, to_tflite

    params = FeatureParams()
    model = _keras_model(params)
    out_dir = Path(out_dir)
    paths = {}
    for kind in kinds:
        # Fresh Keras name counters: the exported graph's tensor names (and so its bytes)
        # then do not depend on which variants were built before in this process.
        keras.backend.clear_session()
        representative = _representative(params) if kind == "int8" else None
        tflite_bytes = to_tflite(model, NETWORK, params, len(EMOTION6), representative)
        paths[kind] = save_model(
            out_dir / f"{tiny_model_stem(kind)}.tflite",
            tflite_bytes,
            labels=EMOTION6,
            label_set="emotion6",
            params=params,
            temperature=1.0,
            training={"data": "none: random seeded weights, for tests only", "network": NETWORK, "seed": SEED},
            metrics={},
        )
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--kind", choices=(*KINDS, "both"), default="both")
    args = parser.parse_args(argv)
    kinds = KINDS if args.kind == "both" else (args.kind,)
    for kind, path in make_tiny_models(args.out_dir, kinds).items():
        print(f"{kind}\t{path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
