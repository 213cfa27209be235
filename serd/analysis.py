"""Classifying a whole recording: windows -> gate -> features -> model -> averaged probs.

Used by `serd analyze`, `serd evaluate`, training validation and the dashboard's
upload panel. The daemon runs the very same steps one window at a time
(`serd/pipeline.py`), so the same audio gives the same probabilities.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from serd.features import FeatureParams, StreamingLogMel, level_dbfs
from serd.gate import SpeechGate
from serd.labels import arousal_of
from serd.windows import Window, WindowBuffer

PredictMany = Callable[[np.ndarray], np.ndarray]
"""(n, n_mels, n_frames) features -> (n, n_labels) probabilities."""


@dataclass(frozen=True)
class GateSettings:
    threshold_dbfs: float = -55.0
    hangover: int = 1


@dataclass
class WindowResult:
    start_s: float
    end_s: float
    speech: bool
    level_dbfs: float
    probs: np.ndarray | None = None


@dataclass
class AnalysisResult:
    labels: tuple[str, ...]
    windows: list[WindowResult] = field(default_factory=list)

    @property
    def speech_probs(self) -> np.ndarray:
        rows = [w.probs for w in self.windows if w.probs is not None]
        return np.stack(rows) if rows else np.zeros((0, len(self.labels)), dtype=np.float32)

    @property
    def probs(self) -> np.ndarray | None:
        """Mean probabilities over speech windows; None when no window held speech."""
        rows = self.speech_probs
        return rows.mean(axis=0) if rows.shape[0] else None

    @property
    def label(self) -> str | None:
        probs = self.probs
        return None if probs is None else self.labels[int(np.argmax(probs))]


def iter_file_windows(blocks: Iterable[np.ndarray], params: FeatureParams, hop_s: float) -> Iterator[Window]:
    """Windows of a recording, exactly as the daemon's ring buffer cuts them, as they complete.

    A recording shorter than one window is zero-padded to one window, so that
    short files still get an answer.
    """
    buffer = WindowBuffer(params.window_samples, hop_samples(params, hop_s))
    head: list[np.ndarray] = []
    any_window = False
    for block in blocks:
        if buffer.received < params.window_samples:
            head.append(block)
        for window in buffer.push(block):
            any_window = True
            yield window
    if not any_window and head:
        samples = np.concatenate(head)
        if samples.size:
            padded = np.zeros(params.window_samples, dtype=np.float32)
            padded[: samples.size] = samples
            yield Window(0, padded)


def file_windows(blocks: Iterable[np.ndarray], params: FeatureParams, hop_s: float) -> list[Window]:
    """All windows of a recording (see `iter_file_windows`)."""
    return list(iter_file_windows(blocks, params, hop_s))


def hop_samples(params: FeatureParams, hop_s: float) -> int:
    if hop_s <= 0:
        raise ValueError(f"hop_s must be > 0, got {hop_s}")
    return max(1, int(round(hop_s * params.sample_rate)))


def gated(
    windows: Iterable[Window], params: FeatureParams, gate: GateSettings = GateSettings()
) -> Iterator[tuple[WindowResult, np.ndarray | None]]:
    """Per window: its result so far (level, speech decision) and its features if it is speech."""
    logmel = StreamingLogMel(params)  # fresh per recording, like the daemon's per stream
    speech_gate = SpeechGate(gate.threshold_dbfs, gate.hangover)
    for window in windows:
        level = level_dbfs(window.samples)
        speech = speech_gate.update(level)
        result = WindowResult(window.start_s(params.sample_rate), window.end_s(params.sample_rate), speech, level)
        features = logmel.window_features(window.samples, window.start_sample) if speech else None
        yield result, features


def gate_windows(
    windows: Iterable[Window],
    params: FeatureParams,
    labels: tuple[str, ...],
    gate: GateSettings = GateSettings(),
) -> tuple[AnalysisResult, np.ndarray]:
    """Level and speech decision per window, and the features of the speech windows.

    Split from prediction so that training can batch many clips into one call.
    """
    result = AnalysisResult(labels)
    speech_features = []
    for window_result, features in gated(windows, params, gate):
        result.windows.append(window_result)
        if features is not None:
            speech_features.append(features)
    stacked = np.stack(speech_features) if speech_features else np.zeros((0, *params.shape), dtype=np.float32)
    return result, stacked


def attach_probs(result: AnalysisResult, probs: np.ndarray) -> AnalysisResult:
    """Give each speech window of `result` its row of `probs` (in order)."""
    rows = iter(np.asarray(probs, dtype=np.float32))
    for w in result.windows:
        if w.speech:
            w.probs = next(rows)
    return result


def analyze_windows(
    windows: list[Window],
    params: FeatureParams,
    labels: tuple[str, ...],
    predict_many: PredictMany,
    gate: GateSettings = GateSettings(),
) -> AnalysisResult:
    result, features = gate_windows(windows, params, labels, gate)
    if features.shape[0]:
        attach_probs(result, predict_many(features))
    return result


def model_predict_many(model) -> PredictMany:
    """Adapter: a one-window-at-a-time `serd.model.Model` as a batch predictor."""

    def predict_many(features: np.ndarray) -> np.ndarray:
        return np.stack([model.predict(f) for f in features])

    return predict_many


def analyze_file(path, model, hop_s: float, gate: GateSettings = GateSettings()) -> AnalysisResult:
    """`serd analyze` for one file: decode, window, gate, classify. Raises AudioFileError."""
    from serd.audiofile import iter_blocks

    params = model.params
    # Streamed: only the per-window results are kept, never the audio of a long file.
    result = AnalysisResult(model.labels)
    windows = iter_file_windows(iter_blocks(path, params.sample_rate), params, hop_s)
    for window_result, features in gated(windows, params, gate):
        if features is not None:
            probs = model.predict(features)
            window_result.probs = probs if np.isfinite(probs).all() else None  # as the daemon does
        result.windows.append(window_result)
    return result


def result_to_json(result: AnalysisResult, name: str) -> dict:
    """The JSON object `serd analyze --json` prints for one file (also used by the dashboard)."""
    probs = result.probs
    return {
        "file": name,
        "label": result.label,
        "probs": None if probs is None else {k: round(float(p), 5) for k, p in zip(result.labels, probs)},
        "arousal": _rounded(arousal_of(probs, result.labels)),
        "windows": [
            {
                "start": round(w.start_s, 4),
                "end": round(w.end_s, 4),
                "speech": w.speech,
                "level_dbfs": round(w.level_dbfs, 2),
                "probs": None if w.probs is None else {k: round(float(p), 5) for k, p in zip(result.labels, w.probs)},
                "arousal": _rounded(arousal_of(w.probs, result.labels)),
            }
            for w in result.windows
        ],
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 5)
