"""The fixture clips in the repository: complete, in the corpora's layout, and copies of the originals."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import soundfile

from conftest import FIXTURE_AUDIO, NEMO_FIXTURES, RAVDESS_FIXTURES, SAMPLE_CLIPS
from serd.train.ravdess import find_clips

_spec = importlib.util.spec_from_file_location("copy_fixtures", FIXTURE_AUDIO / "copy_fixtures.py")
copy_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(copy_fixtures)

MAX_FIXTURE_BYTES = 4_000_000
"""The fixtures ship in every clone: keep them a few MB."""


def nemo_rows() -> list[dict[str, str]]:
    with open(NEMO_FIXTURES / "data.tsv", encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def test_exactly_the_listed_clips_are_there_and_small():
    ravdess = sorted(str(p.relative_to(RAVDESS_FIXTURES)) for p in RAVDESS_FIXTURES.rglob("*.flac"))
    assert ravdess == sorted(copy_fixtures.RAVDESS_CLIPS)
    nemo = sorted(p.name for p in (NEMO_FIXTURES / "samples").iterdir())
    assert nemo == sorted(copy_fixtures.NEMO_CLIPS)
    assert set(SAMPLE_CLIPS) <= set(copy_fixtures.RAVDESS_CLIPS)
    assert sum(p.stat().st_size for p in FIXTURE_AUDIO.rglob("*") if p.is_file()) < MAX_FIXTURE_BYTES
    for note in ("README.md", "LICENSE"):
        assert (FIXTURE_AUDIO / note).is_file()
    assert "CC BY-NC-SA 4.0" in (FIXTURE_AUDIO / "README.md").read_text(encoding="utf-8")


def test_ravdess_fixtures_read_as_a_ravdess_folder():
    clips = find_clips(RAVDESS_FIXTURES)
    assert len(clips) == len(copy_fixtures.RAVDESS_CLIPS)
    assert {c.emotion for c in clips} == {"neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"}
    assert {c.gender for c in clips} == {"male", "female"}


def test_nemo_fixtures_have_one_row_per_sample_and_real_audio():
    rows = nemo_rows()
    assert sorted(r["file_id"] for r in rows) == sorted(copy_fixtures.NEMO_CLIPS)
    assert {r["emotion"] for r in rows} == {"anger", "fear", "happiness", "neutral", "sadness"}
    assert {r["gender"] for r in rows} == {"male", "female"}
    for row in rows:
        info = soundfile.info(NEMO_FIXTURES / "samples" / row["file_id"])
        assert (info.samplerate, info.channels) == (16000, 1) and info.duration > 1.0


def test_fixtures_are_byte_copies_of_the_corpora(ravdess_root: Path, nemo_root: Path):
    for name in copy_fixtures.RAVDESS_CLIPS:
        assert (RAVDESS_FIXTURES / name).read_bytes() == (ravdess_root / name).read_bytes(), name
    for name in copy_fixtures.NEMO_CLIPS:
        assert (NEMO_FIXTURES / "samples" / name).read_bytes() == (nemo_root / "samples" / name).read_bytes(), name
    corpus_rows = {line.split("\t", 1)[0]: line for line in (nemo_root / "data.tsv").read_text(encoding="utf-8").splitlines()}
    for line in (NEMO_FIXTURES / "data.tsv").read_text(encoding="utf-8").splitlines():
        assert corpus_rows[line.split("\t", 1)[0]] == line
