"""The speech gate: which windows are worth classifying.

Two stages. The level gate first: a window quieter than `threshold_dbfs` is not
speech (`below_gate`), for almost no work. A loud window then goes to the
voice-activity detector (`serd/vad.py`), if one is configured: loud sound
without a voice in it (a fan, a door, music) is not speech either (`no_voice`).
After a speech window, the next `hangover` windows count as speech too, so a
pause between words does not chop a sentence into pieces.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from serd.vad import VoiceStream, make_detector, voiced_shares
from serd.windows import Window

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
        voice = None
        if level_dbfs >= self.threshold_dbfs and self.voice is not None:
            voice = window is not None and self.voice.is_voice(window, start_sample)
        return self.decide(level_dbfs, voice)

    def decide(self, level_dbfs: float, voice: bool | None) -> GateDecision:
        """Decide for the next window, given its level and, if it passed the level gate, the detector's answer.

        `voice` is None when there is no detector (or the window was too quiet to ask it).
        """
        if level_dbfs < self.threshold_dbfs:
            reason = BELOW_GATE
        elif voice is False:
            reason = NO_VOICE
        else:
            self._remaining = self.hangover
            return SPEECH
        if self._remaining > 0:
            self._remaining -= 1
            return SPEECH
        return GateDecision(False, reason)


def update_many(requests: Sequence[tuple[SpeechGate, Sequence[float], Sequence[Window]]]) -> list[list[GateDecision]]:
    """`SpeechGate.update` for many windows of many streams: (gate, levels, windows) each, in stream order.

    The windows that pass the level gate go to the detector in one call for all
    streams (`serd.vad.voiced_shares`); the decisions are those of one `update` per window.
    """
    asked = [(gate, [(w.samples, w.start_sample) for w, level in zip(windows, levels) if level >= gate.threshold_dbfs])
             for gate, levels, windows in requests if gate.voice is not None]
    shares = iter(voiced_shares([(gate.voice, windows) for gate, windows in asked]))
    decisions = []
    for gate, levels, _ in requests:
        voiced = iter(next(shares)) if gate.voice is not None else iter(())
        decisions.append([gate.decide(level, next(voiced) >= gate.voice.threshold
                                      if gate.voice is not None and level >= gate.threshold_dbfs else None)
                          for level in levels])
    return decisions


def make_speech_gate(threshold_dbfs: float, hangover: int, vad: str, vad_threshold: float, sample_rate: int) -> SpeechGate:
    """The gate `analysis.*` describes, with a fresh detector state (one per stream or recording)."""
    detector = make_detector(vad, sample_rate, vad_threshold)
    return SpeechGate(threshold_dbfs, hangover, None if detector is None else VoiceStream(detector))
