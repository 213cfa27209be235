"""The speech gate: which windows are worth classifying.

A window is speech when its level reaches `threshold_dbfs`; after a speech
window, the next `hangover` windows count as speech too, so a pause between
words does not chop a sentence into pieces.
"""

from __future__ import annotations


class SpeechGate:
    def __init__(self, threshold_dbfs: float, hangover: int) -> None:
        if hangover < 0:
            raise ValueError(f"hangover must be >= 0 windows, got {hangover}")
        self.threshold_dbfs = threshold_dbfs
        self.hangover = hangover
        self._remaining = 0

    def reset(self) -> None:
        self._remaining = 0

    def update(self, level_dbfs: float) -> bool:
        """Decide for the next window, given its level."""
        if level_dbfs >= self.threshold_dbfs:
            self._remaining = self.hangover
            return True
        if self._remaining > 0:
            self._remaining -= 1
            return True
        return False
