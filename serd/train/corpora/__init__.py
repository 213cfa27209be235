"""Corpora: one reader per layout behind one small interface (`find_clips(kind, path) -> [Clip]`).

- `ravdess=PATH`: RAVDESS's `Actor_NN/MM-VV-EE-II-SS-RR-AA.flac` names;
- `nemo=PATH`: nEMO's `data.tsv` + `samples/`;
- `csv=FILE` (or `csv:NAME=FILE`): your own recordings, a CSV of `path, speaker, emotion`.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from serd.train.corpora import labelled_csv, nemo, ravdess
from serd.train.corpora.base import EMOTIONS, Clip, emotion_name, load_audio

KINDS = ("ravdess", "nemo", "csv")

__all__ = ["KINDS", "EMOTIONS", "Clip", "DataSpec", "emotion_name", "find_clips", "load_audio", "parse_spec"]


class DataSpec(NamedTuple):
    """One `--data` argument; `name` tells corpora apart in reports (csv:NAME=..., default the kind)."""

    kind: str
    name: str
    path: Path


def parse_spec(text: str) -> DataSpec:
    """`KIND=PATH` (or `csv:NAME=PATH`); a bare path means RAVDESS, as before `--data` took kinds."""
    if "=" not in text:
        return DataSpec("ravdess", "ravdess", Path(text))
    kind, _, path = text.partition("=")
    kind, _, name = kind.partition(":")
    if kind not in KINDS:
        raise ValueError(f"--data {text}: unknown corpus kind {kind!r}; expected one of {', '.join(KINDS)} (KIND=PATH)")
    if name and kind != "csv":
        raise ValueError(f"--data {text}: only csv corpora take a name (csv:NAME=FILE)")
    if not path:
        raise ValueError(f"--data {text}: no path after '='")
    return DataSpec(kind, name or kind, Path(path))


def find_clips(spec: DataSpec, ravdess_actors: set[int] | None = None) -> list[Clip]:
    """The clips of one corpus; ValueError with a one-line reason if it cannot be read."""
    if spec.kind == "ravdess":
        return ravdess.find_clips(spec.path, ravdess_actors)
    if spec.kind == "nemo":
        return nemo.find_clips(spec.path)
    return labelled_csv.find_clips(spec.path, spec.name)
