"""The fixture clips in the repository: complete, in the corpora's layout, and copies of the originals."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import soundfile

from conftest import FIXTURE_AUDIO, NEMO_FIXTURES, RAVDESS_FIXTURES, SAMPLE_CLIPS
from serd.train.corpora.ravdess import find_clips

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


def test_ravdess_fixtures_are_byte_copies_of_the_corpus(ravdess_root: Path):
    for name in copy_fixtures.RAVDESS_CLIPS:
        assert (RAVDESS_FIXTURES / name).read_bytes() == (ravdess_root / name).read_bytes(), name


def test_nemo_fixtures_match_their_manifest():
    """The nEMO clips are FLAC copies of the corpus's earlier FLAC release (the corpus is now Opus)."""
    listed = {}
    for line in (NEMO_FIXTURES / "MANIFEST.sha256").read_text(encoding="utf-8").splitlines():
        digest, name = line.split(maxsplit=1)
        listed[name] = digest
    wanted = {f"samples/{name}" for name in copy_fixtures.NEMO_CLIPS} | {"data.tsv"}
    assert set(listed) == wanted
    for name, digest in listed.items():
        assert hashlib.sha256((NEMO_FIXTURES / name).read_bytes()).hexdigest() == digest, name


def test_nemo_fixtures_are_clips_of_the_corpus(nemo_root: Path):
    """Each fixture is a corpus clip: the same row of data.tsv (file id aside) and the same audio."""
    corpus_rows = {}
    for line in (nemo_root / "data.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        file_id, rest = line.split("\t", 1)
        corpus_rows[Path(file_id).stem] = (file_id, rest)
    for line in (NEMO_FIXTURES / "data.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        file_id, rest = line.split("\t", 1)
        corpus_id, corpus_rest = corpus_rows[Path(file_id).stem]
        assert corpus_rest == rest, file_id
        ours, _ = soundfile.read(NEMO_FIXTURES / "samples" / file_id, dtype="float32")
        theirs, _ = soundfile.read(nemo_root / "samples" / corpus_id, dtype="float32")
        # A lossy re-encoding of the same recording: lengths within a codec frame, and the
        # waveforms strongly correlated once aligned (Opus adds a small delay).
        assert abs(len(ours) - len(theirs)) <= 960, file_id
        n = min(len(ours), len(theirs))
        lag = _best_lag(ours[:n], theirs[:n])
        a, b = (ours[: n - lag], theirs[lag:n]) if lag >= 0 else (ours[-lag:n], theirs[: n + lag])
        assert np.corrcoef(a, b)[0, 1] > 0.9, file_id


def _best_lag(a: np.ndarray, b: np.ndarray, max_lag: int = 480) -> int:
    """The shift of b against a (in samples, b later when positive) that lines them up best."""
    core = a[max_lag : len(a) - max_lag]
    scores = [float(np.dot(core, b[max_lag + lag : max_lag + lag + len(core)])) for lag in range(-max_lag, max_lag + 1)]
    return int(np.argmax(scores)) - max_lag
