"""nEMO (Polish, 9 actors): `data.tsv` beside `samples/` (see the dataset README)."""

from __future__ import annotations

import csv
from pathlib import Path

from serd.train.corpora.base import Clip, emotion_name

NAME = "nemo"
COLUMNS = ("file_id", "emotion", "speaker_id", "gender")


def find_clips(root: Path | str) -> list[Clip]:
    """Every clip listed in `root/data.tsv` whose file exists in `root/samples/` (or `root/`)."""
    root = Path(root)
    table = root / "data.tsv"
    if not table.is_file():
        raise ValueError(f"{root}: no data.tsv (expected nEMO's layout: data.tsv and samples/)")
    audio_dir = root / "samples" if (root / "samples").is_dir() else root
    clips = []
    with table.open(newline="", encoding="utf-8") as f:
        rows = csv.DictReader(f, delimiter="\t")
        missing = [c for c in COLUMNS if c not in (rows.fieldnames or ())]
        if missing:
            raise ValueError(f"{table}: missing column(s) {', '.join(missing)}")
        for line, row in enumerate(rows, start=2):
            path = audio_dir / row["file_id"]
            if not path.is_file():  # a subset of the corpus (e.g. test fixtures) lists only what it has
                path = path.with_suffix(".flac")
                if not path.is_file():
                    continue
            try:
                emotion = emotion_name(row["emotion"])
            except ValueError as exc:
                raise ValueError(f"{table}:{line}: {exc}") from None
            gender = row["gender"].strip().lower()
            clips.append(Clip(path=path, emotion=emotion, corpus=NAME, speaker=row["speaker_id"].strip(),
                              gender=gender if gender in ("male", "female") else ""))
    if not clips:
        raise ValueError(f"{root}: data.tsv lists no clip found under {audio_dir}")
    return sorted(clips, key=lambda c: c.path.name)
