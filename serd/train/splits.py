"""Train/validation/test splits that never let one speaker (or one recording) straddle them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from serd.train.corpora.base import Clip as ClipInfo

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
            _by_actor(clips, f"fold{k + 1}", test_actors, val_actors)
        )
    return splits


def speaker_folds(clips: list[ClipInfo], n_folds: int = 6, val_per_corpus: int = 1) -> list[Split]:
    """k folds over several corpora at once: every speaker tested exactly once.

    Each corpus's speakers (sorted) are cut into k consecutive blocks, and fold k
    tests the k-th block of every corpus, so each fold has voices of each corpus.
    Validation: per corpus, the next `val_per_corpus` speakers after the test block
    (wrapping). With RAVDESS alone and 2 validation actors this is `actor_folds`.
    A pooled speaker id (EmoSpeech's `unknown`) is in no block: it always trains.
    """
    by_corpus = known_speakers(clips)
    for name, speakers in by_corpus.items():
        speakers.sort()
        if n_folds < 2 or n_folds > len(speakers):
            raise ValueError(f"need 2..{len(speakers)} folds for the {len(speakers)} speakers of {name}, got {n_folds}")
    splits = []
    for k in range(n_folds):
        test_keys, val_keys = [], []
        for name, speakers in by_corpus.items():
            blocks = np.array_split(np.array(speakers), n_folds)
            block = [str(s) for s in blocks[k]]
            after = speakers[speakers.index(block[-1]) + 1 :] + speakers
            rest = list(dict.fromkeys(s for s in after if s not in block))
            test_keys += [f"{name}/{s}" for s in block]
            val_keys += [f"{name}/{s}" for s in rest[: max(0, min(val_per_corpus, len(rest) - 1))]]
        splits.append(_by_key(clips, f"fold{k + 1}", test_keys, val_keys))
    return splits


def cv_folds(clips: list[ClipInfo], n_folds: int = 6, val_per_corpus: int = 1) -> list[Split]:
    """The cross-validation folds of `serd train --protocol cv` (and of calibration across them).

    RAVDESS alone keeps the model card's actor folds (2 validation actors); several corpora fold together.
    """
    if {c.corpus for c in clips} == {"ravdess"}:
        return actor_folds(clips, n_folds)
    return speaker_folds(clips, n_folds, val_per_corpus)


def corpus_holdout(clips: list[ClipInfo], test_corpus: str, val_per_corpus: int = 2) -> Split:
    """Leave one corpus out: train on the others, test on every clip of `test_corpus`.

    The cross-corpus figure: a model that never heard those voices, that language or
    that studio. Validation: the last `val_per_corpus` speakers of each training corpus.
    """
    corpora = list(dict.fromkeys(c.corpus for c in clips))
    if test_corpus not in corpora or len(corpora) < 2:
        raise ValueError(f"leave-one-corpus-out needs {test_corpus!r} and at least one other corpus; have {corpora}")
    test_keys = sorted({c.key for c in clips if c.corpus == test_corpus})
    val_keys = []
    known = known_speakers(clips)
    for name in corpora:
        if name != test_corpus:
            speakers = known.get(name, [])
            if 0 < val_per_corpus < len(speakers):
                val_keys += [f"{name}/{s}" for s in speakers[-val_per_corpus:]]
    return _by_key(clips, f"to-{test_corpus}", test_keys, val_keys)


def holdout_speakers(clips: list[ClipInfo], val_per_corpus: int = 1, ravdess_val_actors: tuple[int, ...] = (11, 12)) -> Split:
    """Train on everyone but a few calibration speakers per corpus (RAVDESS: `ravdess_val_actors`)."""
    val_keys = []
    for name, speakers in known_speakers(clips).items():
        if name == "ravdess":
            val_keys += [f"ravdess/{a:02d}" for a in ravdess_val_actors]
        elif 0 < val_per_corpus < len(speakers):
            val_keys += [f"{name}/{s}" for s in speakers[-val_per_corpus:]]
    return _by_key(clips, "final", [], val_keys)


def known_speakers(clips: list[ClipInfo]) -> dict[str, list[str]]:
    """Per corpus, its speakers sorted, without pooled ids (`Clip.speaker_known`): those only train."""
    by_corpus: dict[str, set[str]] = {}
    for c in clips:
        speakers = by_corpus.setdefault(c.corpus, set())
        if c.speaker_known:
            speakers.add(c.speaker)
    return {name: sorted(speakers) for name, speakers in by_corpus.items()}


def _by_key(clips, name, test_keys, val_keys) -> Split:
    return _partition(clips, name, lambda c: c.key, test_keys, val_keys)


def holdout_actors(clips: list[ClipInfo], val_actors: tuple[int, ...]) -> Split:
    """Train on everyone but `val_actors` (used for calibration); no test set."""
    return _by_actor(clips, "final", (), val_actors)


def _by_actor(clips, name, test_actors, val_actors) -> Split:
    return _partition(clips, name, lambda c: c.actor, test_actors, val_actors)


def _partition(clips, name, speaker_of, test_ids, val_ids) -> Split:
    """Each clip to test, validation or training by its speaker (`speaker_of`: actor number or corpus/speaker key)."""
    test_set, val_set = set(test_ids), set(val_ids)
    train, val, test = [], [], []
    for i, c in enumerate(clips):
        speaker = speaker_of(c)
        (test if speaker in test_set else val if speaker in val_set else train).append(i)
    return Split(name, tuple(train), tuple(val), tuple(test), tuple(test_ids), tuple(val_ids))


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
