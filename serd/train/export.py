"""Keras -> TFLite (float and full-int8), the sidecar, and what ended up in the graph."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from serd.features import FeatureParams
from serd.model import write_sidecar
from serd.train.networks import TRAINING_ONLY_LAYERS, build

_LOGGER = logging.getLogger(__name__)
LICENCE = "CC BY-NC-SA 4.0"
CREDITS = {
    "ravdess": "RAVDESS: Livingstone & Russo (2018), The Ryerson Audio-Visual Database of Emotional "
               "Speech and Song, PLoS ONE 13(5): e0196391, CC BY-NC-SA 4.0",
    "nemo": "nEMO: Christop (2024), nEMO: Dataset of Emotional Speech in Polish, LREC-COLING 2024, "
            "pp. 12111-12116, CC BY-NC-SA 4.0",
    # Read as a CSV corpus (`--data csv:emospeech=.../emospeech.csv`); its folder carries the licence, no paper.
    "emospeech": "Indian EmoSpeech Command: spoken keywords with calm, happy, angry and fearful voices, recorded "
                 "on phones in real places in India, CC BY-NC-SA 4.0",
}


def attribution(corpora: list[str]) -> str:
    """Credit for every corpus a model learnt from (a user's own CSV corpora: their own terms)."""
    known = [CREDITS[c] for c in corpora if c in CREDITS]
    own = [c for c in corpora if c not in CREDITS]
    text = "Trained on " + "; ".join(known + [f"{c} (the trainer's own recordings)" for c in own]) + "."
    if known:
        text += " This model carries the same licence (CC BY-NC-SA 4.0: non-commercial, share-alike, with credit)."
    return text




def to_tflite(model, network: str, params: FeatureParams, n_classes: int, representative: np.ndarray | None) -> bytes:
    """Convert with a fixed batch-1 input; full int8 when `representative` windows are given."""
    import tensorflow as tf

    fixed = build(network, params.shape, n_classes, batch_size=1)
    # The training graph may carry parts the export leaves out (an arousal head, a corpus
    # adversary; MixStyle, which has no weights): take the other layers' weights in order, and check.
    fixed.set_weights([w for layer in model.layers if layer.name not in TRAINING_ONLY_LAYERS for w in layer.get_weights()])
    probe = np.random.default_rng(0).standard_normal((1, *params.shape, 1)).astype(np.float32)
    if not np.allclose(np.asarray(model(probe, training=False))[:, :n_classes], np.asarray(fixed(probe)), atol=1e-4):
        raise RuntimeError(f"the export graph of {network} does not reproduce the trained model")
    with tempfile.TemporaryDirectory() as tmp:
        # Export to a SavedModel first: from_keras_model's calibration fails on some
        # Keras 3 graphs (READ_VARIABLE ... variable != nullptr).
        spec = tf.TensorSpec([1, *params.shape, 1], tf.float32, name="features")
        fixed.export(tmp, format="tf_saved_model", input_signature=[spec], verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        if representative is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]

            def data():
                for row in representative:
                    yield [row[None, ...].astype(np.float32)]

            converter.representative_dataset = data
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        return converter.convert()


def op_list(tflite_path: Path) -> list[str]:
    """Builtin op names in the graph, sorted (ELU or DEQUANTIZE here means not full int8)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tflite_path))
    ops = {d["op_name"] for d in interpreter._get_ops_details()}  # no public API for this
    return sorted(ops)


def io_details(tflite_path: Path) -> dict[str, Any]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tflite_path))
    out = {}
    for role, detail in (("input", interpreter.get_input_details()[0]), ("output", interpreter.get_output_details()[0])):
        scale, zero_point = detail["quantization"]
        entry = {"shape": [int(s) for s in detail["shape"]], "dtype": np.dtype(detail["dtype"]).name}
        if entry["dtype"] == "int8":
            entry.update(scale=float(scale), zero_point=int(zero_point))
        if role == "output":
            entry["kind"] = "logits"
        out[role] = entry
    return out


def multiply_adds(model) -> int:
    """Multiply-adds of one window through Conv2D and Dense layers."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            kh, kw = layer.kernel_size
            total += h * w * c_out * kh * kw * layer.input.shape[-1]
        elif isinstance(layer, keras.layers.Dense):
            total += layer.input.shape[-1] * layer.units
    return int(total)


def save_model(
    path: Path,
    tflite_bytes: bytes,
    *,
    labels: tuple[str, ...],
    label_set: str,
    params: FeatureParams,
    temperature: float,
    training: dict[str, Any],
    metrics: dict[str, Any],
) -> Path:
    """Write `<path>.tflite` and its sidecar; return the .tflite path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tflite_bytes)
    sidecar = {
        "model_id": path.stem,
        "labels": list(labels),
        "label_set": label_set,
        "features": params.to_dict(),
        **io_details(path),
        "temperature": temperature,
        "ops": op_list(path),
        "size_bytes": path.stat().st_size,
        "training": training,
        "metrics": metrics,
        "licence": LICENCE,
        "attribution": attribution(training.get("corpora", ["ravdess"])),
    }
    write_sidecar(path, sidecar)
    return path
