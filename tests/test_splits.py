"""Speaker-independent folds and the study's seed protocol, on the real RAVDESS clip list."""

from __future__ import annotations

import pytest

from serd.train.corpora.ravdess import find_clips
from serd.train.splits import DUPLICATE_GROUPS, actor_folds, holdout_actors, seed_protocol

DUPLICATE_PAIR = ("03-01-03-01-02-01-07", "03-01-03-01-02-02-07")
SEEDS = range(200)


@pytest.fixture(scope="module")
def clips(ravdess_root):
    return find_clips(ravdess_root)


def actors_of(clips, indices) -> set[int]:
    return {clips[i].actor for i in indices}


def test_the_duplicate_pair_is_really_byte_identical(ravdess_root):
    a, b = (ravdess_root / "Actor_07" / f"{stem}.flac" for stem in DUPLICATE_PAIR)
    assert a.read_bytes() == b.read_bytes()
    assert DUPLICATE_PAIR in DUPLICATE_GROUPS


# --- actor folds --------------------------------------------------------------------------------


def test_default_folds_are_six_blocks_of_four_consecutive_actors(clips):
    splits = actor_folds(clips)
    assert [s.name for s in splits] == [f"fold{k}" for k in range(1, 7)]
    assert [s.test_actors for s in splits] == [tuple(range(a, a + 4)) for a in range(1, 25, 4)]
    for split in splits:
        assert actors_of(clips, split.test) == set(split.test_actors)
        assert len(split.test) == 4 * 60


def test_fold_roles_are_disjoint_by_actor_and_cover_every_clip(clips):
    for split in actor_folds(clips):
        test, val, train = (actors_of(clips, part) for part in (split.test, split.val, split.train))
        assert not (test & val) and not (test & train) and not (val & train), split.name
        assert test | val | train == set(range(1, 25))
        indices = split.train + split.val + split.test
        assert sorted(indices) == list(range(len(clips))), f"{split.name}: a clip missing or in two roles"
        assert actors_of(clips, split.val) == set(split.val_actors) and len(split.val_actors) == 2


def test_validation_actors_follow_the_test_block_and_wrap(clips):
    val_actors = [s.val_actors for s in actor_folds(clips)]
    assert val_actors == [(5, 6), (9, 10), (13, 14), (17, 18), (21, 22), (1, 2)]


def test_every_clip_is_tested_exactly_once(clips):
    tested = [i for split in actor_folds(clips) for i in split.test]
    assert sorted(tested) == list(range(len(clips)))


@pytest.mark.parametrize("n_folds", [2, 4, 5, 24])
def test_other_fold_counts_still_test_every_actor_once(clips, n_folds):
    splits = actor_folds(clips, n_folds=n_folds)
    assert len(splits) == n_folds
    tested = [a for s in splits for a in s.test_actors]
    assert sorted(tested) == list(range(1, 25))
    for split in splits:
        assert not actors_of(clips, split.train) & (set(split.test_actors) | set(split.val_actors))
        assert split.train, f"{split.name}: nothing to train on"


@pytest.mark.parametrize("n_folds", [1, 25])
def test_impossible_fold_counts_are_refused(clips, n_folds):
    with pytest.raises(ValueError, match="folds"):
        actor_folds(clips, n_folds=n_folds)


def test_holdout_actors(clips):
    split = holdout_actors(clips, (11, 12))
    assert split.test == ()
    assert actors_of(clips, split.val) == {11, 12}
    assert actors_of(clips, split.train) == set(range(1, 25)) - {11, 12}
    assert len(split.train) + len(split.val) == len(clips)


# --- the study's seed protocol ------------------------------------------------------------------


def test_seed_protocol_tests_all_of_actor_24_plus_120_others(clips):
    for seed in (0, 1, 42):
        split = seed_protocol(clips, seed)
        assert len(split.test) == 180
        of_24 = [i for i in split.test if clips[i].actor == 24]
        assert len(of_24) == 60
        assert sum(1 for c in clips if c.actor == 24) == 60
        assert len(split.test) - len(of_24) == 120
        assert actors_of(clips, split.train) | actors_of(clips, split.val) == set(range(1, 24))
        assert sorted(split.train + split.val + split.test) == list(range(len(clips)))
        assert abs(len(split.val) - round(0.1 * (len(clips) - 180))) <= 1


def test_seed_protocol_is_deterministic_per_seed(clips):
    assert seed_protocol(clips, 3) == seed_protocol(clips, 3)
    tests = {seed_protocol(clips, seed).test for seed in range(5)}
    assert len(tests) == 5, "different seeds should draw different test clips"


def test_duplicate_pair_is_on_the_same_side_for_every_seed(clips):
    index = {c.stem: i for i, c in enumerate(clips)}
    a, b = (index[stem] for stem in DUPLICATE_PAIR)
    sides_seen = set()
    for seed in SEEDS:
        split = seed_protocol(clips, seed)
        side = {role: (a in part, b in part) for role, part in (("train", split.train), ("val", split.val), ("test", split.test))}
        placed = [role for role, (has_a, has_b) in side.items() if has_a or has_b]
        assert len(placed) == 1 and side[placed[0]] == (True, True), f"seed {seed}: pair split across {side}"
        sides_seen.add(placed[0])
    assert "test" in sides_seen and "train" in sides_seen, "the check never saw the pair in test and in train"
