"""The speech gate: which windows are worth classifying.

Two stages. The level gate first: a window quieter than `threshold_dbfs` is not
speech (`below_gate`), for almost no work. A loud window then goes to the
voice-activity detector (`serd/vad.py`), if one is configured: loud sound
without a voice in it (a fan, a door, music) is not speech either (`no_voice`).
After a speech window, the next `hangover` windows count as speech too, so a
pause between words does not chop a sentence into pieces.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from serd.vad import VoiceStream, make_detector

BELOW_GATE = "below_gate"
NO_VOICE = "no_voice"


@dataclass(frozen=True)
class GateDecision:
    speech: bool
    reason: str | None = None
    """Why the window is not speech: `below_gate` (too quiet) or `no_voice` (loud, but no voice in it)."""


SPEECH = GateDecision(True)


class SpeechGate:
    def __init__(self, threshold_dbfs: float, hangover: int, voice: VoiceStream | None = None) -> None:
        if hangover < 0:
            raise ValueError(f"hangover must be >= 0 windows, got {hangover}")
        self.threshold_dbfs = threshold_dbfs
        self.hangover = hangover
        self.voice = voice
        self._remaining = 0

    @property
    def name(self) -> str:
        """The gate in use, as status messages report it: `energy` or the detector's name."""
        return "energy" if self.voice is None else self.voice.vad.name

    def reset(self) -> None:
        self._remaining = 0
        if self.voice is not None:
            self.voice.reset()

    def update(self, level_dbfs: float, window: np.ndarray | None = None, start_sample: int = 0) -> GateDecision:
        """Decide for the next window, given its level (and its samples, for the detector)."""
        if level_dbfs < self.threshold_dbfs:
            reason = BELOW_GATE
        elif self.voice is not None and (window is None or not self.voice.is_voice(window, start_sample)):
            reason = NO_VOICE
        else:
            self._remaining = self.hangover
            return SPEECH
        if self._remaining > 0:
            self._remaining -= 1
            return SPEECH
        return GateDecision(False, reason)


def make_speech_gate(threshold_dbfs: float, hangover: int, vad: str, vad_threshold: float, sample_rate: int) -> SpeechGate:
    """The gate `analysis.*` describes, with a fresh detector state (one per stream or recording)."""
    detector = make_detector(vad, sample_rate, vad_threshold)
    return SpeechGate(threshold_dbfs, hangover, None if detector is None else VoiceStream(detector))
