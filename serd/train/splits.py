"""Train/validation/test splits that never let one speaker (or one recording) straddle them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from serd.train.ravdess import ClipInfo

# Byte-identical in the original release (same recording, two repetition numbers).
DUPLICATE_GROUPS = (("03-01-03-01-02-01-07", "03-01-03-01-02-02-07"),)


@dataclass(frozen=True)
class Split:
    name: str
    train: tuple[int, ...]  # indices into the clip list
    val: tuple[int, ...]
    test: tuple[int, ...]
    test_actors: tuple[int, ...] = ()
    val_actors: tuple[int, ...] = ()


def actor_folds(clips: list[ClipInfo], n_folds: int = 6, val_actors_per_fold: int = 2) -> list[Split]:
    """k folds of consecutive actors (6 folds: 1-4, 5-8, ..., 21-24).

    Validation actors come from the training side: the first actors after the
    test block (wrapping), one by one, so no actor is in two roles of one fold.
    """
    actors = sorted({c.actor for c in clips})
    if n_folds < 2 or n_folds > len(actors):
        raise ValueError(f"need 2..{len(actors)} folds for {len(actors)} actors, got {n_folds}")
    blocks = np.array_split(np.array(actors), n_folds)
    splits = []
    for k, block in enumerate(blocks):
        test_actors = tuple(int(a) for a in block)
        rest = [a for a in actors[actors.index(test_actors[-1]) + 1 :] + actors if a not in test_actors]
        rest = list(dict.fromkeys(rest))
        # keep at least one actor to train on
        val_actors = tuple(rest[: max(0, min(val_actors_per_fold, len(rest) - 1))])
        splits.append(
            _by_actor(clips, f"fold{k + 1}", set(test_actors), set(val_actors), test_actors, val_actors)
        )
    return splits


def holdout_actors(clips: list[ClipInfo], val_actors: tuple[int, ...]) -> Split:
    """Train on everyone but `val_actors` (used for calibration); no test set."""
    return _by_actor(clips, "final", set(), set(val_actors), (), val_actors)


def _by_actor(clips, name, test_set, val_set, test_actors, val_actors) -> Split:
    train, val, test = [], [], []
    for i, c in enumerate(clips):
        (test if c.actor in test_set else val if c.actor in val_set else train).append(i)
    return Split(name, tuple(train), tuple(val), tuple(test), tuple(test_actors), tuple(val_actors))


def seed_protocol(clips: list[ClipInfo], seed: int, unseen_actor: int = 24, random_test: int = 120, val_share: float = 0.1) -> Split:
    """The original study's split: all of one unseen actor plus random clips of the others.

    Speaker-dependent for the random part (those actors are also in training);
    kept only to compare with the study's 68.88 %. Validation (for temperature
    only) is a random share of the remaining clips.
    """
    rng = np.random.default_rng(seed)
    groups = _groups(clips)
    unseen = [g for g in groups if clips[g[0]].actor == unseen_actor]
    others = [g for g in groups if clips[g[0]].actor != unseen_actor]
    order = rng.permutation(len(others))
    test = [i for g in unseen for i in g]
    picked = 0
    rest_groups = []
    for j in order:
        g = others[j]
        if picked + len(g) <= random_test:
            test.extend(g)
            picked += len(g)
        else:
            rest_groups.append(g)
    n_val = int(round(val_share * sum(len(g) for g in rest_groups)))
    val, train = [], []
    for g in rest_groups:
        (val if len(val) < n_val else train).extend(g)
    return Split("seed", tuple(sorted(train)), tuple(sorted(val)), tuple(sorted(test)), (unseen_actor,), ())


def _groups(clips: list[ClipInfo]) -> list[list[int]]:
    """Clip indices grouped so that duplicates travel together."""
    index = {c.stem: i for i, c in enumerate(clips)}
    grouped: set[int] = set()
    groups = []
    for names in DUPLICATE_GROUPS:
        members = [index[n] for n in names if n in index]
        if members:
            groups.append(members)
            grouped.update(members)
    groups.extend([i] for i in range(len(clips)) if i not in grouped)
    return groups
