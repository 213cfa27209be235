"""RAVDESS file names and clips: `MM-VV-EE-II-SS-RR-AA.flac` (see the dataset README)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serd.labels import RAVDESS_EMOTIONS

_LOGGER = logging.getLogger(__name__)
AUDIO_SUFFIXES = (".flac", ".wav")


@dataclass(frozen=True)
class ClipInfo:
    """What a RAVDESS file name says about the clip."""

    path: Path
    emotion: str
    intensity: str  # "normal" | "strong"
    statement: int  # 1: "Kids are talking by the door", 2: "Dogs are sitting by the door"
    repetition: int
    actor: int
    gender: str  # odd actors are male, even actors female

    @property
    def stem(self) -> str:
        return self.path.stem


def parse_name(path: Path | str) -> ClipInfo:
    """Parse a RAVDESS file name; ValueError if it is not one."""
    path = Path(path)
    parts = path.stem.split("-")
    if len(parts) != 7 or not all(p.isdigit() and len(p) == 2 for p in parts):
        raise ValueError(f"{path.name}: not a RAVDESS name (expected MM-VV-EE-II-SS-RR-AA)")
    modality, channel, emotion, intensity, statement, repetition, actor = map(int, parts)
    if channel != 1:
        raise ValueError(f"{path.name}: vocal channel {channel:02d} is song, not speech")
    if emotion not in RAVDESS_EMOTIONS or intensity not in (1, 2) or statement not in (1, 2):
        raise ValueError(f"{path.name}: emotion/intensity/statement code out of range")
    if not 1 <= actor <= 99 or repetition not in (1, 2):
        raise ValueError(f"{path.name}: actor or repetition out of range")
    return ClipInfo(
        path=path,
        emotion=RAVDESS_EMOTIONS[emotion],
        intensity="strong" if intensity == 2 else "normal",
        statement=statement,
        repetition=repetition,
        actor=actor,
        gender="male" if actor % 2 else "female",
    )


def find_clips(root: Path | str, actors: set[int] | None = None) -> list[ClipInfo]:
    """All RAVDESS speech clips under `root` (any depth), sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: not a directory")
    clips = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES):
        try:
            info = parse_name(path)
        except ValueError as exc:
            _LOGGER.debug("skipping %s", exc)
            continue
        if actors is None or info.actor in actors:
            clips.append(info)
    if not clips:
        raise ValueError(f"{root}: no RAVDESS speech clips found (names like 03-01-05-01-02-01-12.flac)")
    return clips


def load_audio(clips: list[ClipInfo], sample_rate: int) -> list[np.ndarray]:
    """Decode clips to float32 mono at `sample_rate`, through serd's own file reader."""
    from serd.audiofile import read_audio

    return [read_audio(c.path, sample_rate) for c in clips]
