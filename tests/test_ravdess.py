"""RAVDESS file names -> clip info and labels, on the real dataset's names."""

from __future__ import annotations

import shutil
from collections import Counter

import pytest

from serd.labels import EMOTION6, EMOTION8, LABEL_SETS, SEED12, emotion_of, label_for
from serd.train.corpora.ravdess import find_clips, parse_name

N_CLIPS = 1440
N_ACTORS = 24
CLIPS_PER_ACTOR = 60
# From the dataset README: neutral has no strong intensity.
README_EMOTION_COUNTS = {
    "neutral": 96,
    "calm": 192,
    "happy": 192,
    "sad": 192,
    "angry": 192,
    "fearful": 192,
    "disgust": 192,
    "surprised": 192,
}


@pytest.fixture(scope="module")
def clips(ravdess_root):
    return find_clips(ravdess_root)


def test_every_file_in_the_dataset_parses(ravdess_root):
    paths = sorted(ravdess_root.rglob("*.flac"))
    assert len(paths) == N_CLIPS
    infos = [parse_name(p) for p in paths]
    assert all(p.parent.name == f"Actor_{i.actor:02d}" for p, i in zip(paths, infos))


def test_find_clips_finds_all_1440_sorted(clips):
    assert len(clips) == N_CLIPS
    assert [c.path for c in clips] == sorted(c.path for c in clips)
    assert len({c.stem for c in clips}) == N_CLIPS


def test_counts_per_emotion_match_the_readme(clips):
    assert Counter(c.emotion for c in clips) == README_EMOTION_COUNTS
    assert not any(c.emotion == "neutral" and c.intensity == "strong" for c in clips)


def test_every_actor_has_60_clips_and_gender_follows_parity(clips):
    per_actor = Counter(c.actor for c in clips)
    assert sorted(per_actor) == list(range(1, N_ACTORS + 1))
    assert set(per_actor.values()) == {CLIPS_PER_ACTOR}
    for c in clips:
        assert c.gender == ("male" if c.actor % 2 == 1 else "female")
    assert Counter(c.gender for c in clips) == {"male": N_CLIPS // 2, "female": N_CLIPS // 2}


def test_the_readme_example():
    info = parse_name("Actor_12/03-01-05-01-02-01-12.flac")
    assert (info.emotion, info.intensity, info.statement, info.repetition, info.actor, info.gender) == (
        "angry",
        "normal",
        2,
        1,
        12,
        "female",
    )
    assert info.stem == "03-01-05-01-02-01-12"
    strong = parse_name("03-01-08-02-01-02-07.wav")
    assert (strong.emotion, strong.intensity, strong.statement, strong.repetition, strong.gender) == (
        "surprised",
        "strong",
        1,
        2,
        "male",
    )


@pytest.mark.parametrize(
    "name",
    [
        "03-02-05-01-02-01-12.flac",  # song, not speech
        "03-01-09-01-02-01-12.flac",  # emotion 9
        "03-01-00-01-02-01-12.flac",  # emotion 0
        "03-01-05-03-02-01-12.flac",  # intensity 3
        "03-01-05-01-03-01-12.flac",  # statement 3
        "03-01-05-01-02-03-12.flac",  # repetition 3
        "03-01-05-01-02-01-00.flac",  # actor 0
        "03-01-05-01-02-01.flac",  # six fields
        "03-01-05-01-02-01-12-01.flac",  # eight fields
        "03-01-05-01-02-01-1.flac",  # one digit
        "03-01-05-01-02-01-012.flac",  # three digits
        "03-01-05-01-02-01-1a.flac",
        "03_01_05_01_02_01_12.flac",
        "recording.wav",
        "",
    ],
)
def test_non_ravdess_names_are_rejected(name):
    with pytest.raises(ValueError, match="RAVDESS|song|out of range"):
        parse_name(name)


def test_find_clips_skips_other_files_and_filters_actors(ravdess_fixtures, tmp_path):
    for name in ("Actor_03/03-01-04-02-01-01-03.flac", "Actor_04/03-01-04-02-01-01-04.flac"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        shutil.copyfile(ravdess_fixtures / name, tmp_path / name)
    (tmp_path / "notes.flac").write_bytes(b"")
    (tmp_path / "Actor_03" / "03-02-04-02-01-01-03.wav").write_bytes(b"")  # song
    (tmp_path / "Actor_03" / "03-01-04-02-01-01-03.txt").write_text("not audio")
    assert [c.actor for c in find_clips(tmp_path)] == [3, 4]
    assert [c.actor for c in find_clips(tmp_path, actors={4})] == [4]


def test_find_clips_without_clips_is_an_error(tmp_path):
    (tmp_path / "song.flac").write_bytes(b"")
    with pytest.raises(ValueError, match="no RAVDESS speech clips"):
        find_clips(tmp_path)
    with pytest.raises(ValueError, match="not a directory"):
        find_clips(tmp_path / "missing")


# --- label sets -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "label_set, emotion, gender, expected",
    [
        ("emotion6", "calm", "male", "neutral"),
        ("emotion6", "surprised", "female", "happy"),
        ("emotion6", "neutral", "male", "neutral"),
        ("emotion6", "disgust", "female", "disgust"),
        ("emotion5", "calm", "male", "neutral"),
        ("emotion5", "surprised", "female", "happy"),
        ("emotion8", "calm", "male", "calm"),
        ("emotion8", "surprised", "female", "surprised"),
        ("seed12", "calm", "female", "female_neutral"),
        ("seed12", "surprised", "male", "male_happy"),
        ("seed12", "fearful", "male", "male_fearful"),
    ],
)
def test_label_mapping(label_set, emotion, gender, expected):
    label = label_for(label_set, emotion, gender)
    assert label == expected
    assert label in LABEL_SETS[label_set]


def test_label_sets():
    assert EMOTION6 == ("neutral", "happy", "sad", "angry", "fearful", "disgust")
    assert LABEL_SETS["emotion5"] == EMOTION6[:5]
    assert label_for("emotion5", "disgust", "female") is None  # left out, not mapped onto another class
    assert EMOTION8 == tuple(README_EMOTION_COUNTS)
    assert len(SEED12) == 12 and {emotion_of(label) for label in SEED12} == set(EMOTION6)
    assert emotion_of("female_sad") == "sad" and emotion_of("sad") == "sad"
    with pytest.raises(ValueError, match="unknown label set"):
        label_for("emotion7", "sad", "male")


def test_label_counts_on_the_dataset(clips):
    """calm joins neutral (96 + 192) and surprised joins happy (192 + 192)."""
    emotion6 = Counter(label_for("emotion6", c.emotion, c.gender) for c in clips)
    assert emotion6 == {"neutral": 288, "happy": 384, "sad": 192, "angry": 192, "fearful": 192, "disgust": 192}
    emotion8 = Counter(label_for("emotion8", c.emotion, c.gender) for c in clips)
    assert emotion8 == README_EMOTION_COUNTS
    seed12 = Counter(label_for("seed12", c.emotion, c.gender) for c in clips)
    assert set(seed12) == set(SEED12)
    assert seed12["female_neutral"] == seed12["male_neutral"] == 144
    assert seed12["female_sad"] == seed12["male_sad"] == 96
