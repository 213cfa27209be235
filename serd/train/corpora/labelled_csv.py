"""Your own recordings: a CSV of `path, speaker, emotion` (and optionally `gender`).

Paths are relative to the CSV's folder (or absolute). A header row is required. A
speaker must keep one name across the file: splits keep each speaker on one side.
"""

from __future__ import annotations

import csv
from pathlib import Path

from serd.train.corpora.base import Clip, emotion_name

REQUIRED = ("path", "speaker", "emotion")


def find_clips(table: Path | str, name: str = "csv") -> list[Clip]:
    table = Path(table)
    if not table.is_file():
        raise ValueError(f"{table}: no such file (expected a CSV with columns path, speaker, emotion)")
    clips = []
    with table.open(newline="", encoding="utf-8-sig") as f:
        rows = csv.DictReader(f)
        fields = [c.strip().lower() for c in rows.fieldnames or ()]
        missing = [c for c in REQUIRED if c not in fields]
        if missing:
            raise ValueError(f"{table}:1: missing column(s) {', '.join(missing)} (header must name path, speaker, emotion)")
        rows.fieldnames = fields
        for line, row in enumerate(rows, start=2):
            values = {k: (row.get(k) or "").strip() for k in (*REQUIRED, "gender")}
            empty = [k for k in REQUIRED if not values[k]]
            if empty:
                raise ValueError(f"{table}:{line}: empty {', '.join(empty)}")
            path = Path(values["path"])
            path = path if path.is_absolute() else table.parent / path
            if not path.is_file():
                raise ValueError(f"{table}:{line}: {values['path']}: no such file")
            try:
                emotion = emotion_name(values["emotion"])
            except ValueError as exc:
                raise ValueError(f"{table}:{line}: {exc}") from None
            gender = values["gender"].lower()
            clips.append(Clip(path=path, emotion=emotion, corpus=name, speaker=values["speaker"],
                              gender=gender if gender in ("male", "female") else ""))
    if not clips:
        raise ValueError(f"{table}: no rows")
    return clips
