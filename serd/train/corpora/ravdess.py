"""RAVDESS file names and clips: `MM-VV-EE-II-SS-RR-AA.flac` (see the dataset README)."""

from __future__ import annotations

import logging
from pathlib import Path

from serd.labels import RAVDESS_EMOTIONS
from serd.train.corpora.base import AUDIO_SUFFIXES, Clip

_LOGGER = logging.getLogger(__name__)
NAME = "ravdess"

# What a RAVDESS file name says: intensity "normal" | "strong"; statement 1 "Kids are talking
# by the door", 2 "Dogs are sitting by the door"; odd actors are male, even actors female.


def parse_name(path: Path | str) -> Clip:
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
    return Clip(
        path=path,
        corpus=NAME,
        speaker=f"{actor:02d}",
        emotion=RAVDESS_EMOTIONS[emotion],
        intensity="strong" if intensity == 2 else "normal",
        statement=statement,
        repetition=repetition,
        actor=actor,
        gender="male" if actor % 2 else "female",
    )


def find_clips(root: Path | str, actors: set[int] | None = None) -> list[Clip]:
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
