"""Exponential moving average of probabilities over speech windows, reset after silence."""

from __future__ import annotations

import numpy as np


class Smoother:
    def __init__(self, alpha: float, reset_after_s: float) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha
        self.reset_after_s = reset_after_s
        self._state: np.ndarray | None = None
        self._last_speech_end_s: float | None = None

    def reset(self) -> None:
        self._state = None
        self._last_speech_end_s = None

    def update(self, probs: np.ndarray | None, end_s: float) -> np.ndarray | None:
        """Feed one window (probs None = not speech); the smoothed probs, or None for non-speech."""
        if probs is None:
            if self._last_speech_end_s is not None and end_s - self._last_speech_end_s >= self.reset_after_s:
                self._state = None
            return None
        if self._state is None:
            self._state = probs.astype(np.float32, copy=True)
        else:
            self._state = self.alpha * probs + (1.0 - self.alpha) * self._state
        self._last_speech_end_s = end_s
        return self._state.copy()
