"""Loading real .tflite models with their sidecars, and running them on both interpreters."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from conftest import RAVDESS_FIXTURES, SAMPLE_CLIPS, SHIPPED_INT8, speech_like, subprocess_env
from serd.audiofile import read_audio
from serd.features import FeatureParams, LogMel
from serd.labels import EMOTION6
from serd.model import BACKEND_ENV, Model, ModelError, interpreter_class, resolve_model_path, sha256_of, softmax

CHILD_TIMEOUT_S = 120
INT8_FLOAT_TOLERANCE = 0.05
"""Probability: measured <= 0.03 for the tiny model on speech; a wrong scale or zero point is far off."""


def windows_for(params: FeatureParams, n_synthetic: int = 3) -> list[np.ndarray]:
    """Windows to feed a model: synthetic speech-like ones, plus real RAVDESS fixture clips."""
    signals = [speech_like(params.window_s + 0.5, params.sample_rate, seed) for seed in range(n_synthetic)]
    signals += [read_audio(RAVDESS_FIXTURES / name, params.sample_rate) for name in SAMPLE_CLIPS]
    windows = []
    for signal in signals:
        padded = np.zeros(max(signal.shape[0], params.window_samples), dtype=np.float32)
        padded[: signal.shape[0]] = signal
        start = (padded.shape[0] - params.window_samples) // 2
        windows.append(padded[start : start + params.window_samples])
    return windows


def features_for(params: FeatureParams) -> np.ndarray:
    logmel = LogMel(params)
    return np.stack([logmel(w) for w in windows_for(params)])


def copy_model(source: Path, directory: Path) -> Path:
    target = directory / source.name
    shutil.copyfile(source, target)
    shutil.copyfile(source.with_suffix(".json"), target.with_suffix(".json"))
    return target


def edit_sidecar(path: Path, change: Callable[[dict], None]) -> None:
    sidecar_path = path.with_suffix(".json")
    sidecar = json.loads(sidecar_path.read_text())
    change(sidecar)
    sidecar_path.write_text(json.dumps(sidecar))


@pytest.fixture(params=["int8", "float"])
def tiny_model(request) -> Path:
    return request.getfixturevalue(f"tiny_model_{request.param}")


# --- loading and predicting ------------------------------------------------------------------


def test_loads_with_the_sidecar_labels_and_params(tiny_model):
    model = Model(tiny_model, backend="ai-edge-litert")
    assert model.labels == EMOTION6
    assert model.params == FeatureParams()
    assert model.backend == "ai-edge-litert"
    assert model.is_int8 == tiny_model.stem.endswith("int8")
    assert model.model_id == tiny_model.stem
    assert model.describe() == {
        "model_id": tiny_model.stem,
        "path": str(tiny_model),
        "backend": "ai-edge-litert",
        "labels": list(EMOTION6),
    }


def test_probabilities_are_a_distribution_over_the_labels(tiny_model):
    model = Model(tiny_model)
    for features in features_for(model.params):
        probs = model.predict(features)
        assert probs.shape == (len(model.labels),) == (6,)
        assert probs.dtype == np.float32
        assert np.all(probs >= 0)
        assert float(probs.sum()) == pytest.approx(1.0, abs=1e-5)


def test_output_depends_on_the_input(tiny_model):
    model = Model(tiny_model)
    probs = np.stack([model.predict(f) for f in features_for(model.params)])
    spread = np.abs(probs - probs[0]).max(axis=1)
    assert np.all(spread[1:] > 1e-3), f"different windows gave the same output: {spread}"


def test_same_input_same_output(tiny_model):
    model = Model(tiny_model)
    features = features_for(model.params)
    first = [model.predict(f) for f in features]
    again = [model.predict(f) for f in features]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))


def test_int8_agrees_with_float(tiny_model_int8, tiny_model_float):
    """Same weights, so the int8 model (with serd's (de)quantisation) must stay close to the float one."""
    int8, float_ = Model(tiny_model_int8), Model(tiny_model_float)
    assert int8.is_int8 and not float_.is_int8
    for features in features_for(int8.params):
        np.testing.assert_allclose(int8.predict(features), float_.predict(features), rtol=0, atol=INT8_FLOAT_TOLERANCE)


def test_logits_follow_the_tflite_quantisation_spec(tiny_model):
    """Against the bare interpreter: real = (q - zero_point) * scale, q = round(real / scale) + zero_point."""
    from ai_edge_litert.interpreter import Interpreter

    model = Model(tiny_model, backend="ai-edge-litert")
    interpreter = Interpreter(model_path=str(tiny_model))
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    for features in features_for(model.params):
        x = features[None, :, :, None]
        if model.is_int8:
            scale, zero_point = inp["quantization"]
            x = np.clip(np.round(x / scale) + zero_point, -128, 127).astype(np.int8)
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"])[0]
        if model.is_int8:
            scale, zero_point = out["quantization"]
            y = (y.astype(np.float32) - zero_point) * scale
        np.testing.assert_allclose(model.logits(features), y, rtol=1e-6, atol=0)


def test_predict_is_softmax_of_logits_over_temperature(tiny_model, tmp_path):
    path = copy_model(tiny_model, tmp_path)
    edit_sidecar(path, lambda s: s.update(temperature=2.5))  # the SHA covers the .tflite only
    model = Model(path)
    assert model.temperature == 2.5
    features = features_for(model.params)[0]
    np.testing.assert_allclose(model.predict(features), softmax(model.logits(features) / 2.5), rtol=1e-6)
    plain = Model(tiny_model)
    np.testing.assert_array_equal(model.logits(features), plain.logits(features))


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_non_positive_temperature_is_refused(tiny_model_int8, tmp_path, temperature):
    path = copy_model(tiny_model_int8, tmp_path)
    edit_sidecar(path, lambda s: s.update(temperature=temperature))
    with pytest.raises(ModelError, match="temperature"):
        Model(path)


@pytest.mark.parametrize("shape", [(64, 196), (196, 64), (64, 197, 1), (1, 64, 197)])
def test_wrong_feature_shape_is_refused_at_predict(tiny_model_int8, shape):
    with pytest.raises(ValueError, match="expected features of shape"):
        Model(tiny_model_int8).predict(np.zeros(shape, dtype=np.float32))


def test_extreme_features_saturate_int8_instead_of_wrapping(tiny_model_int8):
    """Inputs beyond the int8 range are clipped to it, not wrapped around to the other sign."""
    model = Model(tiny_model_int8)
    scale, zero_point = model.sidecar["input"]["scale"], model.sidecar["input"]["zero_point"]
    features = features_for(model.params)[0] * 1000.0
    assert np.abs(features).max() > 200 * scale, "precondition: beyond the int8 range"
    in_range = np.clip(features, (-128 - zero_point) * scale, (127 - zero_point) * scale)
    np.testing.assert_array_equal(model.logits(features), model.logits(in_range))


# --- refusing models that do not match their sidecar -----------------------------------------


def test_flipped_byte_is_refused_by_sha(tiny_model_int8, tmp_path):
    path = copy_model(tiny_model_int8, tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="SHA-256") as info:
        Model(path)
    assert str(path) in str(info.value)


def test_sidecar_with_another_sha_is_refused(tiny_model_float, tmp_path):
    path = copy_model(tiny_model_float, tmp_path)
    edit_sidecar(path, lambda s: s.update(sha256="0" * 64))
    with pytest.raises(ModelError, match="SHA-256"):
        Model(path)


def test_missing_sidecar_is_refused(tiny_model_int8, tmp_path):
    path = tmp_path / tiny_model_int8.name
    shutil.copyfile(tiny_model_int8, path)
    with pytest.raises(ModelError, match="sidecar not found"):
        Model(path)


def test_missing_model_is_refused(tmp_path):
    with pytest.raises(ModelError, match="model file not found"):
        Model(tmp_path / "nothing.tflite")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s["features"].update(n_mels=40), "input shape"),
        (lambda s: s["features"].update(window_s=3.0), "input shape"),
        (lambda s: s.update(labels=s["labels"][:5]), "output shape"),
        (lambda s: s.update(schema="serd.model/0"), "schema"),
        (lambda s: s.pop("labels"), "missing key 'labels'"),
        (lambda s: s["features"].pop("hop_length"), "bad feature parameters"),
    ],
    ids=["n_mels", "window_s", "labels", "schema", "no-labels", "no-hop"],
)
def test_sidecar_that_does_not_match_the_graph_is_refused(tiny_model, tmp_path, change, message):
    path = copy_model(tiny_model, tmp_path)
    edit_sidecar(path, change)
    with pytest.raises(ModelError, match=message):
        Model(path)


@pytest.mark.parametrize("role", ["input", "output"])
def test_sidecar_with_the_wrong_dtype_is_refused(tiny_model, tmp_path, role):
    path = copy_model(tiny_model, tmp_path)

    def swap_dtype(sidecar: dict) -> None:
        entry = sidecar[role]
        entry.update(dtype="float32") if entry["dtype"] == "int8" else entry.update(dtype="int8", scale=0.1, zero_point=0)

    edit_sidecar(path, swap_dtype)
    with pytest.raises(ModelError, match=f"{role} dtype"):
        Model(path)


@pytest.mark.parametrize("role, field, value", [("input", "scale", 0.5), ("output", "zero_point", 7)])
def test_int8_quantisation_that_does_not_match_is_refused(tiny_model_int8, tmp_path, role, field, value):
    path = copy_model(tiny_model_int8, tmp_path)
    edit_sidecar(path, lambda s: s[role].update({field: value}))
    with pytest.raises(ModelError, match=f"{role} quantisation"):
        Model(path)


def test_sidecar_that_is_not_json_is_refused(tiny_model_int8, tmp_path):
    path = copy_model(tiny_model_int8, tmp_path)
    path.with_suffix(".json").write_text("{ not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        Model(path)


def write_with_matching_sha(path: Path, data: bytes) -> None:
    """Replace the model bytes and make the sidecar vouch for them (a sidecar from a broken build)."""
    path.write_bytes(data)
    edit_sidecar(path, lambda s: s.update(sha256=sha256_of(path)))


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda data: np.random.default_rng(0).bytes(len(data)),
        lambda data: data[: len(data) // 2],
        lambda data: b"",
        lambda data: b"this is not a model\n",
    ],
    ids=["garbage", "truncated", "empty", "text"],
)
def test_corrupt_tflite_is_a_model_error_not_a_crash(tiny_model_int8, tmp_path, corrupt):
    path = copy_model(tiny_model_int8, tmp_path)
    write_with_matching_sha(path, corrupt(path.read_bytes()))
    with pytest.raises(ModelError, match="not a loadable TFLite model"):
        Model(path, backend="ai-edge-litert")


def test_corrupt_tflite_is_a_model_error_on_tflite_runtime_too(tiny_model_int8, tmp_path):
    """Garbage bytes only: tflite-runtime 2.14 does not verify the flatbuffer and
    crashes (SIGSEGV) on a truncated model; ai-edge-litert refuses it (test above)."""
    if importlib.util.find_spec("tflite_runtime") is None:
        pytest.skip("tflite-runtime not installed (the Pi fallback interpreter)")
    path = copy_model(tiny_model_int8, tmp_path)
    write_with_matching_sha(path, np.random.default_rng(0).bytes(path.stat().st_size))
    code = (
        "import sys\n"
        "from serd.model import Model, ModelError\n"
        "try:\n"
        "    Model(sys.argv[1])\n"
        "except ModelError as exc:\n"
        "    print('ModelError:', exc)\n"
    )
    done = run_child(code, str(path))
    assert done.returncode == 0, f"child died ({done.returncode}): {done.stderr[-2000:]}"
    assert done.stdout.startswith("ModelError:") and "not a loadable TFLite model" in done.stdout, done.stdout


def test_unknown_backend_is_refused(tiny_model_int8):
    with pytest.raises(ModelError, match="unknown TFLite backend"):
        Model(tiny_model_int8, backend="onnx")


def test_ai_edge_litert_is_preferred(monkeypatch):
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    assert interpreter_class()[1] == "ai-edge-litert"


def test_resolve_model_path(tmp_path):
    assert resolve_model_path("serd-emotion6-int8", tmp_path) == tmp_path / "serd-emotion6-int8.tflite"
    assert resolve_model_path(tmp_path / "x.tflite") == tmp_path / "x.tflite"


# --- both interpreters give the same answers ---------------------------------------------------

CHILD_PREDICT = """
import sys
import numpy as np
from serd.model import Model
model = Model(sys.argv[1])  # backend from SERD_TFLITE_BACKEND
assert "ai_edge_litert" not in sys.modules, "both interpreters in one process"
features = np.load(sys.argv[2])
np.save(sys.argv[3], np.stack([model.logits(f) for f in features]))
print(model.backend)
"""


def run_child(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=subprocess_env(**{BACKEND_ENV: "tflite-runtime"}),
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
    )


@pytest.fixture(params=["tiny-int8", "tiny-float", "shipped-int8"])
def any_model(request) -> Path:
    if request.param == "shipped-int8":
        if not SHIPPED_INT8.is_file():
            pytest.skip(f"no shipped model at {SHIPPED_INT8} yet")
        return SHIPPED_INT8
    return request.getfixturevalue(f"tiny_model_{request.param.split('-')[1]}")


def test_both_backends_give_the_same_outputs(any_model, tmp_path):
    """tflite-runtime runs in a child process, so the two native libraries never share one.

    int8: the outputs are int8 tensors, so logits may differ by whole quantisation
    steps; allowed: at most one step (observed: one step on a few outputs). Probabilities then differ
    by at most half a step (softmax's gradient sums to <= 1/2 in absolute value).
    float: different kernels may sum in another order; allowed 1e-4 on logits.
    """
    if importlib.util.find_spec("tflite_runtime") is None:  # find, not import: it must not load here
        pytest.skip("tflite-runtime not installed (the Pi fallback interpreter)")
    model = Model(any_model, backend="ai-edge-litert")
    assert "tflite_runtime" not in sys.modules, "this test process must not load tflite-runtime"
    features = features_for(model.params)
    np.save(tmp_path / "features.npy", features)
    done = run_child(CHILD_PREDICT, str(any_model), str(tmp_path / "features.npy"), str(tmp_path / "logits.npy"))
    assert done.returncode == 0, f"tflite-runtime child failed ({done.returncode}):\n{done.stderr[-3000:]}"
    assert done.stdout.strip() == "tflite-runtime"
    theirs = np.load(tmp_path / "logits.npy")
    ours = np.stack([model.logits(f) for f in features])
    assert theirs.shape == ours.shape == (len(features), len(model.labels))
    probs_ours = softmax(ours / model.temperature)
    probs_theirs = softmax(theirs / model.temperature)
    if model.is_int8:
        step = model.sidecar["output"]["scale"]
        assert np.abs(theirs - ours).max() <= step * 1.001
        assert np.abs(probs_theirs - probs_ours).max() <= 0.5 * step / model.temperature + 1e-6
    else:
        np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-4)
        np.testing.assert_allclose(probs_theirs, probs_ours, rtol=0, atol=1e-4)
