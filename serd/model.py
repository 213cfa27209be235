"""Loading a `.tflite` model with its sidecar JSON, and running it on features.

The sidecar (`models/<name>.json`) carries what the runtime needs to reproduce the
training features and read the output. A model whose sidecar does not match it
(hash, shapes, dtypes, quantisation) is refused with `ModelError`.

Interpreter: ai-edge-litert (maintained, numpy 2), else tflite-runtime 2.14 (its
last release: Python <= 3.11, numpy < 2). Both expose the same `Interpreter`.
"""

from __future__ import annotations

import faulthandler
import hashlib
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from serd.features import FeatureParams

_LOGGER = logging.getLogger(__name__)

SIDECAR_SCHEMA = "serd.model/1"
BACKENDS = ("ai-edge-litert", "tflite-runtime")
BACKEND_ENV = "SERD_TFLITE_BACKEND"
"""Set to one of BACKENDS to force an interpreter (used by the tests of both)."""


BENIGN_RUNTIME_LINE = re.compile(r"^INFO: (Created TensorFlow Lite XNNPACK delegate for CPU|Initialized TensorFlow Lite runtime)\.$")
"""What the TFLite C++ runtime writes to fd 2 on every successful load: noise, not news."""
BATCH_WINDOWS = 32
"""Windows per interpreter call in `predict_many` (tflite-runtime: 1.3x faster a window than one a call; ai-edge-litert: the same)."""
DRAIN_TIMEOUT_S = 5.0
"""Bound on waiting for the captured stderr once the runtime is loaded (it is at its end by then)."""


class ModelError(ValueError):
    """A model that cannot be used; the message is one line for the user."""


@contextmanager
def quiet_runtime_stderr() -> Iterator[None]:
    """Hold back the TFLite runtime's INFO lines on fd 2 (C++ writes there, not to `sys.stderr`).

    fd 2 points at a pipe for the duration (a pipe, not a temporary file: serd writes no
    files), drained by a thread so that a chatty runtime can never block on it; afterwards
    everything captured except the known benign lines is written to stderr again, so a
    real warning or error from the runtime is never lost.
    """
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 at all: nothing to keep quiet
        yield
        return
    crash_reports = faulthandler.is_enabled()
    if crash_reports:  # a crash inside the runtime must still reach the real stderr (the journal)
        faulthandler.enable(file=saved)
    read_fd, write_fd = os.pipe()
    chunks: list[bytes] = []
    drain = threading.Thread(target=_drain, args=(read_fd, chunks), name="serd-stderr-drain", daemon=True)
    drain.start()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    try:
        yield
    finally:
        os.dup2(saved, 2)  # the pipe's last writer is gone: the drain sees its end
        if crash_reports:
            faulthandler.enable()  # back to sys.stderr, before `saved` closes
        os.close(saved)
        drain.join(timeout=DRAIN_TIMEOUT_S)
        os.close(read_fd)
        lines = b"".join(chunks).decode("utf-8", errors="replace").splitlines()
        kept = [line for line in lines if not BENIGN_RUNTIME_LINE.match(line)]
        if kept:
            sys.stderr.write("\n".join(kept) + "\n")
            sys.stderr.flush()


def _drain(fd: int, chunks: list[bytes]) -> None:
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except OSError:  # closed under us after DRAIN_TIMEOUT_S: what came so far is kept
        return


def _import_interpreter(backend: str):
    if backend == "ai-edge-litert":
        from ai_edge_litert.interpreter import Interpreter
    elif backend == "tflite-runtime":
        from tflite_runtime.interpreter import Interpreter
    else:
        raise ModelError(f"unknown TFLite backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    return Interpreter


def interpreter_class(backend: str | None = None) -> tuple[type, str]:
    """The Interpreter class and the backend name it came from."""
    wanted = backend or os.environ.get(BACKEND_ENV) or None
    candidates = [wanted] if wanted else list(BACKENDS)
    errors = []
    for name in candidates:
        try:
            return _import_interpreter(name), name
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
    raise ModelError(
        "no TFLite interpreter found (" + "; ".join(errors) + "); install one: pip install ai-edge-litert"
    )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sidecar_path_for(tflite_path: Path) -> Path:
    return tflite_path.with_suffix(".json")


def resolve_model_path(name_or_path: str | Path, models_dir: Path | None = None) -> Path:
    """A path to a .tflite, or a bare name looked up in the models directory."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".tflite" or candidate.exists():
        return candidate
    return (models_dir or default_models_dir()) / f"{name_or_path}.tflite"


def default_models_dir() -> Path:
    """`models/` of a source checkout, else the copy installed inside the package."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "models", here / "models"):
        if candidate.is_dir():
            return candidate
    return here.parent / "models"


def available_models(directory: Path | None = None) -> list[str]:
    """Names of the models in `directory` (default: the models directory): a .tflite with its sidecar."""
    directory = directory or default_models_dir()
    if not directory.is_dir():
        return []
    return sorted(p.stem for p in directory.glob("*.tflite") if sidecar_path_for(p).is_file())


@dataclass(frozen=True)
class Quantisation:
    scale: float
    zero_point: int

    @classmethod
    def of(cls, detail: dict[str, Any]) -> "Quantisation | None":
        scale, zero_point = detail.get("quantization", (0.0, 0))
        return cls(float(scale), int(zero_point)) if scale else None


class Model:
    """A loaded model: `predict(features) -> probs` in the order of `labels`."""

    def __init__(self, tflite_path: Path | str, backend: str | None = None, num_threads: int = 1) -> None:
        self.path = Path(tflite_path)
        self.sidecar_path = sidecar_path_for(self.path)
        self.sidecar = _read_sidecar(self.path, self.sidecar_path)
        self.labels: tuple[str, ...] = tuple(self.sidecar["labels"])
        self.params = FeatureParams.from_dict(self.sidecar["features"])
        self.temperature = float(self.sidecar.get("temperature", 1.0))
        if not self.temperature > 0:
            raise ModelError(f"{self.sidecar_path}: temperature must be > 0, got {self.temperature}")
        self.model_id = str(self.sidecar.get("model_id") or self.path.stem)
        interpreter_cls, self.backend = interpreter_class(backend)
        try:
            with quiet_runtime_stderr():  # the XNNPACK delegate announces itself in allocate_tensors
                self._interpreter = interpreter_cls(model_path=str(self.path), num_threads=num_threads)
                self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{self.path}: not a loadable TFLite model ({str(exc).splitlines()[0]})") from None
        self._interpreter_cls, self._num_threads = interpreter_cls, num_threads
        self._batch_interpreter: Any = None
        """Made on the first `predict_many`: the same graph with a batch of windows (None: not made yet, False: cannot)."""
        self._check_io()

    def _check_io(self) -> None:
        inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(f"{self.path}: expected one input and one output, got {len(inputs)} and {len(outputs)}")
        self._in, self._out = inputs[0], outputs[0]
        expected_in = [1, *self.params.shape, 1]
        if list(self._in["shape"]) != expected_in:
            raise ModelError(
                f"{self.path}: input shape {list(self._in['shape'])} does not match the sidecar features {expected_in}"
            )
        if list(self._out["shape"]) != [1, len(self.labels)]:
            raise ModelError(f"{self.path}: output shape {list(self._out['shape'])} does not match {len(self.labels)} labels")
        for role, detail in (("input", self._in), ("output", self._out)):
            declared = self.sidecar.get(role, {})
            dtype = np.dtype(detail["dtype"]).name
            if declared.get("dtype") != dtype:
                raise ModelError(f"{self.path}: {role} dtype {dtype} but the sidecar says {declared.get('dtype')}")
            quant = Quantisation.of(detail)
            if dtype == "int8":
                if quant is None:
                    raise ModelError(f"{self.path}: int8 {role} without quantisation parameters")
                if not np.isclose(declared.get("scale", 0.0), quant.scale, rtol=1e-6) or declared.get(
                    "zero_point"
                ) != quant.zero_point:
                    raise ModelError(f"{self.path}: {role} quantisation does not match the sidecar")
        self._in_quant = Quantisation.of(self._in) if np.dtype(self._in["dtype"]) == np.int8 else None
        self._out_quant = Quantisation.of(self._out) if np.dtype(self._out["dtype"]) == np.int8 else None
        self._in_buffer = np.zeros(expected_in, dtype=self._in["dtype"])

    @property
    def is_int8(self) -> bool:
        return self._in_quant is not None

    def logits(self, features: np.ndarray) -> np.ndarray:
        """Raw network output (logits) for one window's `(n_mels, n_frames)` features."""
        if features.shape != self.params.shape:
            raise ValueError(f"expected features of shape {self.params.shape}, got {features.shape}")
        self._in_buffer[0, :, :, 0] = self._quantise(features)
        self._interpreter.set_tensor(self._in["index"], self._in_buffer)
        self._interpreter.invoke()
        return self._dequantise(self._interpreter.get_tensor(self._out["index"])[0])

    def logits_many(self, features: np.ndarray) -> np.ndarray:
        """`logits` of (n, n_mels, n_frames) windows, up to BATCH_WINDOWS per interpreter call: the same numbers."""
        if features.ndim != 3 or features.shape[1:] != self.params.shape:
            raise ValueError(f"expected features of shape (n, {', '.join(map(str, self.params.shape))}), got {features.shape}")
        interpreter = self._batched()
        if interpreter is None:
            return np.stack([self.logits(f) for f in features]).reshape(-1, len(self.labels))
        out = np.empty((features.shape[0], len(self.labels)), dtype=np.float32)
        for at in range(0, features.shape[0], BATCH_WINDOWS):
            piece = features[at : at + BATCH_WINDOWS]
            if interpreter.get_input_details()[0]["shape"][0] != piece.shape[0]:
                interpreter.resize_tensor_input(self._in["index"], [piece.shape[0], *self.params.shape, 1])
                interpreter.allocate_tensors()
            interpreter.set_tensor(self._in["index"], self._quantise(piece)[..., None])
            interpreter.invoke()
            out[at : at + piece.shape[0]] = self._dequantise(interpreter.get_tensor(self._out["index"]))
        return out

    def _quantise(self, features: np.ndarray) -> np.ndarray:
        if self._in_quant is None:
            return features.astype(self._in["dtype"], copy=False)
        q = np.round(features / self._in_quant.scale) + self._in_quant.zero_point
        return np.clip(q, -128, 127).astype(np.int8)

    def _dequantise(self, out: np.ndarray) -> np.ndarray:
        if self._out_quant is not None:
            return (out.astype(np.float32) - self._out_quant.zero_point) * self._out_quant.scale
        return out.astype(np.float32)

    def _batched(self) -> Any:
        """An interpreter of this model for a batch of windows, or None if its graph is fixed at batch 1."""
        if self._batch_interpreter is None:
            self._batch_interpreter = False
            content = open_batch(self.path.read_bytes(), self._interpreter)
            if content is not None:
                try:
                    with quiet_runtime_stderr():
                        interpreter = self._interpreter_cls(model_content=content, num_threads=self._num_threads)
                        interpreter.resize_tensor_input(self._in["index"], [BATCH_WINDOWS, *self.params.shape, 1])
                        interpreter.allocate_tensors()
                    self._batch_interpreter = interpreter
                except (ValueError, RuntimeError) as exc:
                    _LOGGER.info("%s: one window per call (%s)", self.path.name, str(exc).splitlines()[0])
        return self._batch_interpreter or None

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (softmax of logits / temperature), in `labels` order."""
        return softmax(self.logits(features) / self.temperature)

    def predict_many(self, features: np.ndarray) -> np.ndarray:
        """`predict` of (n, n_mels, n_frames) windows at once: (n, labels) probabilities, the same numbers."""
        return softmax(self.logits_many(features) / self.temperature)

    def describe(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "path": str(self.path), "backend": self.backend, "labels": list(self.labels)}


def open_batch(content: bytes, interpreter: Any) -> bytes | None:
    """The model's flatbuffer with its batch opened, or None if it needs no change or cannot be changed safely.

    The converter writes Keras' Flatten as a RESHAPE to a constant shape `[1, features]`,
    which pins the graph to one window a call; `[-1, features]` is the same graph for any
    batch. The constant is found by value (an int32 vector `[1, f]` of a RESHAPE, stored
    as a flatbuffer vector: its length in bytes, then the values) and changed only if that
    byte pattern occurs exactly once. int8 outputs stay identical to one window a call (tested).
    """
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    patched = content
    for op in interpreter._get_ops_details():
        if op["op_name"] != "RESHAPE" or len(op["inputs"]) < 2 or op["inputs"][1] not in tensors:
            continue
        try:
            shape = np.asarray(interpreter.get_tensor(op["inputs"][1]))
        except ValueError:  # not a constant
            return None
        if shape.dtype != np.int32 or shape.ndim != 1 or shape.size < 2:
            return None
        if shape[0] == -1:  # already open
            continue
        if shape[0] != 1:
            return None
        pattern = np.concatenate(([4 * shape.size], shape)).astype("<i4").tobytes()
        if patched.count(pattern) != 1:
            return None
        at = patched.index(pattern) + 4
        patched = patched[:at] + np.array([-1], "<i4").tobytes() + patched[at + 4 :]
    return patched


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - np.max(logits, axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)


def _read_sidecar(tflite_path: Path, sidecar_path: Path) -> dict[str, Any]:
    if not tflite_path.is_file():
        # Say what does exist: a mistyped --model name is the usual cause.
        known = available_models(tflite_path.parent) or available_models()
        hint = f"; models that exist: {', '.join(known)} (or give a path to a .tflite)" if known else ""
        raise ModelError(f"{tflite_path}: model file not found{hint}")
    if not sidecar_path.is_file():
        raise ModelError(f"{sidecar_path}: sidecar not found (every .tflite needs its .json)")
    try:
        sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{sidecar_path}: not valid JSON ({exc})") from None
    if not isinstance(sidecar, dict) or sidecar.get("schema") != SIDECAR_SCHEMA:
        raise ModelError(f"{sidecar_path}: schema is not {SIDECAR_SCHEMA!r}")
    for key in ("labels", "features", "sha256", "input", "output"):
        if key not in sidecar:
            raise ModelError(f"{sidecar_path}: missing key {key!r}")
    actual = sha256_of(tflite_path)
    if sidecar["sha256"] != actual:
        raise ModelError(
            f"{tflite_path}: SHA-256 {actual[:12]}… does not match its sidecar ({str(sidecar['sha256'])[:12]}…); "
            "the model and sidecar are from different builds"
        )
    try:
        FeatureParams.from_dict(sidecar["features"])
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{sidecar_path}: bad feature parameters ({exc})") from None
    return sidecar


def write_sidecar(tflite_path: Path, sidecar: dict[str, Any]) -> Path:
    """Write `sidecar` next to the model, with the schema and the model's SHA-256 filled in."""
    out = dict(sidecar)
    out["schema"] = SIDECAR_SCHEMA
    out["sha256"] = sha256_of(tflite_path)
    path = sidecar_path_for(tflite_path)
    path.write_text(json.dumps(out, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path
