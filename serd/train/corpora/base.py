"""What every corpus reader returns: clips with a speaker, an emotion and the corpus they came from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

AUDIO_SUFFIXES = (".flac", ".wav", ".ogg")

# serd's emotion names are RAVDESS's eight; other corpora's names map onto them.
EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
SYNONYMS = {
    "anger": "angry", "fear": "fearful", "afraid": "fearful", "happiness": "happy", "joy": "happy",
    "sadness": "sad", "disgusted": "disgust", "surprise": "surprised", "neu": "neutral", "hap": "happy",
    "sad": "sad", "ang": "angry", "fea": "fearful", "dis": "disgust", "sur": "surprised",
}


def emotion_name(text: str) -> str:
    """serd's name for an emotion label (case-insensitive, common synonyms); ValueError otherwise."""
    key = text.strip().lower()
    name = key if key in EMOTIONS else SYNONYMS.get(key)
    if name is None:
        raise ValueError(f"unknown emotion {text!r}; expected one of {', '.join(EMOTIONS)} (or a synonym such as anger, fear, happiness, sadness)")
    return name


POOLED_SPEAKERS = frozenset({"unknown", "unk", "?", "-", "na", "n/a"})
"""Speaker ids that stand for many people: such clips only ever train (a split by speaker cannot
keep them on one side), and never validate or test."""


@dataclass(frozen=True)
class Clip:
    """One labelled recording.

    `speaker` is unique within its corpus; `key` (corpus/speaker) across corpora. The
    RAVDESS-only fields (actor number, intensity, statement, repetition) stay 0/"" elsewhere.
    """

    path: Path
    emotion: str
    corpus: str
    speaker: str
    gender: str = ""
    actor: int = 0
    intensity: str = ""
    statement: int = 0
    repetition: int = 0

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def key(self) -> str:
        return f"{self.corpus}/{self.speaker}"

    @property
    def speaker_known(self) -> bool:
        """False for a pooled id such as EmoSpeech's `unknown` (two thirds of its clips, many voices)."""
        return self.speaker.strip().lower() not in POOLED_SPEAKERS


def load_audio(clips: list[Clip], sample_rate: int) -> list[np.ndarray]:
    """Decode clips to float32 mono at `sample_rate`, through serd's own file reader."""
    from serd.audiofile import read_audio

    return [read_audio(c.path, sample_rate) for c in clips]
