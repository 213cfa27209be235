"""One window at a time: level -> gate (level, then voice) -> features -> model -> smoothing.

The daemon's per-window step. `serd/analysis.py` runs the same gate, features
and model over a whole file, so `run` and `analyze` agree on the same audio.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from serd.config import AnalysisSettings
from serd.features import StreamingLogMel, level_dbfs
from serd.gate import make_speech_gate
from serd.smoothing import Smoother
from serd.windows import Window


@dataclass(frozen=True)
class WindowOutcome:
    start_s: float
    end_s: float
    speech: bool
    level_dbfs: float
    probs: np.ndarray | None
    smoothed: np.ndarray | None
    reason: str | None = None
    """Why not speech: `below_gate` or `no_voice` (serd.gate)."""


class WindowPipeline:
    def __init__(self, model, settings: AnalysisSettings) -> None:
        self.model = model
        self.params = model.params
        self.logmel = StreamingLogMel(model.params)
        self.gate = make_speech_gate(settings.gate_dbfs, settings.hangover_windows, settings.vad,
                                     settings.vad_threshold, model.params.sample_rate)
        self.smoother = Smoother(settings.smoothing_alpha, settings.smoothing_reset_s)
        self.invalid_outputs = 0
        self._warm_up()

    def _warm_up(self) -> None:
        """Pay the stages' one-off first-call costs now, on silence, not on the first speech window.

        The runtime packs its weights, numpy sets up its FFT and the detector its products on
        first use: that made the first speech window after start (or a reload) 2-3x as slow as
        any other (14.6 ms against 7 at worst later, benchmarks/RESULTS.md). Nothing is kept:
        the frontend is reset and the detector's stream state was never touched.
        """
        silence = np.zeros(self.params.window_samples, dtype=np.float32)
        self.model.predict(self.logmel.window_features(silence, 0))
        self.logmel.reset()
        if self.gate.voice is not None:
            self.gate.voice.vad.chunk_probs(silence)

    def reset(self) -> None:
        """After a gap in the audio (e.g. the microphone came back)."""
        self.gate.reset()
        self.smoother.reset()
        self.logmel.reset()

    def process(self, window: Window) -> WindowOutcome:
        rate = self.params.sample_rate
        start_s, end_s = window.start_s(rate), window.end_s(rate)
        level = level_dbfs(window.samples)
        decision = self.gate.update(level, window.samples, window.start_sample)
        speech = decision.speech
        probs = self.model.predict(self.logmel.window_features(window.samples, window.start_sample)) if speech else None
        if probs is not None and not np.isfinite(probs).all():
            self.invalid_outputs += 1  # a broken model must not poison the moving average
            probs = None
        smoothed = self.smoother.update(probs, end_s)
        return WindowOutcome(start_s, end_s, speech, level, probs, smoothed, decision.reason)
