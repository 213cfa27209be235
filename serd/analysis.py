"""Classifying a whole recording: windows -> gate (level, then voice) -> features -> model -> averaged probs.

Used by `serd analyze`, `serd evaluate`, training validation and the dashboard's
upload panel. The daemon runs the very same steps one window at a time
(`serd/pipeline.py`), so the same audio gives the same probabilities.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from serd.audiofile import AudioInput
from serd.config import AnalysisSettings
from serd.features import FeatureParams, StreamingLogMel, level_dbfs
from serd.gate import make_speech_gate, update_many
from serd.labels import arousal_of
from serd.vad import DEFAULT_THRESHOLD
from serd.windows import Window, WindowBuffer

_LOGGER = logging.getLogger(__name__)

PredictMany = Callable[[np.ndarray], np.ndarray]
"""(n, n_mels, n_frames) features -> (n, n_labels) probabilities."""


@dataclass(frozen=True)
class GateSettings:
    threshold_dbfs: float = -55.0
    hangover: int = 1
    vad: str = "energy"
    """`energy` here by default: training and the model card's evaluation keep the level gate alone
    (their clips are clean speech); `serd analyze`, `serd run` and the dashboard pass `analysis.vad`."""
    vad_threshold: float = DEFAULT_THRESHOLD

    @classmethod
    def from_analysis(cls, settings: AnalysisSettings) -> "GateSettings":
        """The gate of the daemon's `analysis.*` settings."""
        return cls(settings.gate_dbfs, settings.hangover_windows, settings.vad, settings.vad_threshold)


@dataclass
class WindowResult:
    start_s: float
    end_s: float
    speech: bool
    level_dbfs: float
    probs: np.ndarray | None = None
    reason: str | None = None
    """Why not speech: `below_gate` or `no_voice` (serd.gate)."""


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


BATCH_WINDOWS = 128
"""Windows (of one or many recordings) through the gate, detector and model per batched step: 16 MB of audio."""


class _Recording:
    """One recording on its way through the batched stages: its windows still to come, its gate and features state."""

    def __init__(self, windows: Iterable[Window], params: FeatureParams, labels: tuple[str, ...], gate: GateSettings) -> None:
        self.windows = iter(windows)
        self.logmel = StreamingLogMel(params)  # fresh per recording, like the daemon's per stream
        self.gate = make_speech_gate(gate.threshold_dbfs, gate.hangover, gate.vad, gate.vad_threshold, params.sample_rate)
        self.result = AnalysisResult(labels)
        self.error: Exception | None = None
        self.done = False

    def take(self, n: int) -> list[Window]:
        """Up to `n` more windows; `done` once there are no more (or the audio could not be read)."""
        from serd.audiofile import AudioFileError

        taken: list[Window] = []
        try:
            for window in self.windows:
                taken.append(window)
                if len(taken) == n:
                    return taken
        except AudioFileError as exc:
            self.error = exc
        self.done = True
        return taken


def _gate_and_features(
    batch: list[tuple[_Recording, list[Window]]], params: FeatureParams
) -> tuple[list[WindowResult], list[np.ndarray]]:
    """Append each window's result to its recording; the speech windows' results and features, in order."""
    rate = params.sample_rate
    levels = [[level_dbfs(w.samples) for w in windows] for _, windows in batch]
    decisions = update_many([(rec.gate, lv, windows) for (rec, windows), lv in zip(batch, levels)])
    speech, features = [], []
    for (rec, windows), window_levels, window_decisions in zip(batch, levels, decisions):
        for window, level, decision in zip(windows, window_levels, window_decisions):
            result = WindowResult(window.start_s(rate), window.end_s(rate), decision.speech, level, reason=decision.reason)
            rec.result.windows.append(result)
            if decision.speech:
                speech.append(result)
                features.append(rec.logmel.window_features(window.samples, window.start_sample))
    return speech, features


def analyze_recordings(
    recordings: Iterable[Iterable[Window]],
    params: FeatureParams,
    labels: tuple[str, ...],
    predict_many: PredictMany,
    gate: GateSettings = GateSettings(),
    batch_windows: int = BATCH_WINDOWS,
) -> Iterator[AnalysisResult | Exception]:
    """Per recording (its windows, read lazily), in order: its result, or the AudioFileError that stopped it.

    The windows of consecutive recordings go through the stages together, up to
    `batch_windows` at a time (a long recording in stretches of that many): the
    detector steps all their chunks at once and the model takes them in batches.
    Each recording keeps its own gate and feature state, so every window gets
    what the daemon's one-window-a-time path gives it (tests/test_batch.py).
    """
    sources = iter(recordings)
    pending: deque[_Recording] = deque()
    more = True
    while more or pending:
        budget = batch_windows
        batch = []
        for rec in pending:
            if budget <= 0:
                break
            if not rec.done:
                batch.append((rec, rec.take(budget)))
                budget -= len(batch[-1][1])
        while more and budget > 0:
            windows = next(sources, None)
            if windows is None:
                more = False
                break
            pending.append(_Recording(windows, params, labels, gate))
            batch.append((pending[-1], pending[-1].take(budget)))
            budget -= len(batch[-1][1])
        speech, features = _gate_and_features(batch, params)
        if features:
            for result, probs in zip(speech, predict_many(np.stack(features))):
                result.probs = probs if np.isfinite(probs).all() else None  # as the daemon does
        while pending and pending[0].done:
            rec = pending.popleft()
            yield rec.error if rec.error is not None else rec.result


def gate_windows(
    windows: Iterable[Window],
    params: FeatureParams,
    labels: tuple[str, ...],
    gate: GateSettings = GateSettings(),
) -> tuple[AnalysisResult, np.ndarray]:
    """Level and speech decision per window, and the features of the speech windows.

    Split from prediction so that training can batch many clips into one call.
    """
    rec = _Recording((), params, labels, gate)
    _, features = _gate_and_features([(rec, list(windows))], params)
    stacked = np.stack(features) if features else np.zeros((0, *params.shape), dtype=np.float32)
    return rec.result, stacked


def analyze_windows(
    windows: Iterable[Window],
    params: FeatureParams,
    labels: tuple[str, ...],
    predict_many: PredictMany,
    gate: GateSettings = GateSettings(),
) -> AnalysisResult:
    """One recording's windows through the batched stages (`analyze_recordings`)."""
    return next(analyze_recordings([windows], params, labels, predict_many, gate))


def analyze_files(
    paths: Iterable[AudioInput], model, hop_s: float, gate: GateSettings = GateSettings(), batch_windows: int = BATCH_WINDOWS
) -> Iterator[AnalysisResult | Exception]:
    """`serd analyze` of files, in order: per file its result or its AudioFileError.

    Streamed: each file is decoded block by block as its windows are needed, and
    only the per-window results are kept, never the audio of a long file.
    """
    from serd.audiofile import iter_blocks

    params = model.params
    recordings = (iter_file_windows(iter_blocks(path, params.sample_rate), params, hop_s) for path in paths)
    return analyze_recordings(recordings, params, model.labels, model.predict_many, gate, batch_windows)


GROUP_FILES = 32
"""Most files a worker of `analyze_paths` takes at a time: enough to batch, few enough to share the work out."""


def file_groups(paths: Sequence[AudioInput], jobs: int) -> list[list[AudioInput]]:
    """Consecutive groups for `jobs` workers, smaller towards the end (each half of what is left per
    worker): big groups batch well, and small last ones keep one worker from finishing alone while
    the others wait (with equal groups of 30 files, the last group cost 2 workers up to a tenth of the time)."""
    groups: list[list[AudioInput]] = []
    at = 0
    while at < len(paths):
        left = len(paths) - at
        size = min(GROUP_FILES, -(-left // (2 * max(1, jobs))))
        groups.append(list(paths[at : at + size]))
        at += size
    return groups


def default_jobs() -> int:
    """All the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def analyze_paths(
    paths: Sequence[AudioInput], model, hop_s: float, gate: GateSettings = GateSettings(), jobs: int = 1
) -> Iterator[AnalysisResult | Exception]:
    """`analyze_files` over `jobs` processes: consecutive groups of files, each worker with its own model.

    The same path in every worker; results come back in the files' order, as soon
    as the files before them are done. Ended early (Ctrl-C, a closed pipe), it
    stops the workers before returning.
    """
    paths = list(paths)
    groups = file_groups(paths, jobs)
    if jobs <= 1 or len(groups) < 2:
        yield from analyze_files(paths, model, hop_s, gate)
        return
    from serd.procmap import ordered_map

    given = 0
    try:
        for outcomes in ordered_map(_analyze_group, groups, jobs, _start_worker,
                                    (str(model.path), model.backend, model.temperature, hop_s, gate)):
            given += len(outcomes)
            yield from outcomes
    except OSError as exc:
        if given:
            raise
        # No worker processes to be had (a process limit): the same results from this process, only slower.
        _LOGGER.warning("cannot start %d worker processes (%s): analysing in this one", jobs, exc)
        yield from analyze_files(paths, model, hop_s, gate)


_WORKER: dict = {}
"""A worker process's model and settings (`analyze_paths`)."""


def _start_worker(model_path: str, backend: str, temperature: float, hop_s: float, gate: GateSettings) -> None:
    import signal

    from serd.model import Model

    # Ctrl-C reaches the whole process group: the parent stops the workers (SIGKILL), they do not report it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    model = Model(model_path, backend=backend)
    model.temperature = temperature
    _WORKER.update(model=model, hop_s=hop_s, gate=gate)


def _analyze_group(paths: list[AudioInput]) -> list[AnalysisResult | Exception]:
    return list(analyze_files(paths, _WORKER["model"], _WORKER["hop_s"], _WORKER["gate"]))


def analyze_file(path: AudioInput, model, hop_s: float, gate: GateSettings = GateSettings()) -> AnalysisResult:
    """`serd analyze` for one file: decode, window, gate, classify. Raises AudioFileError."""
    outcome = next(analyze_files([path], model, hop_s, gate))
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def result_to_json(result: AnalysisResult, name: str) -> dict:
    """The JSON object `serd analyze --json` prints for one file (also used by the dashboard)."""
    probs = result.probs
    return {
        "file": name,
        "label": result.label,
        "probs": None if probs is None else {k: round(float(p), 5) for k, p in zip(result.labels, probs)},
        "arousal": _rounded(arousal_of(probs, result.labels)),
        "windows": [window_json(w, result.labels) for w in result.windows],
    }


def window_json(w: WindowResult, labels: tuple[str, ...]) -> dict:
    out = {
        "start": round(w.start_s, 4),
        "end": round(w.end_s, 4),
        "speech": w.speech,
        "level_dbfs": round(w.level_dbfs, 2),
        "probs": None if w.probs is None else {k: round(float(p), 5) for k, p in zip(labels, w.probs)},
        "arousal": _rounded(arousal_of(w.probs, labels)),
    }
    if w.reason is not None:  # so a user can tell a too-high gate_dbfs from a too-strict vad_threshold
        out["reason"] = w.reason
    return out


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 5)
