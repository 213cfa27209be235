"""A labelled corpus in memory, and the windows each training epoch draws from it."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from serd.features import FeatureParams, LogMel
from serd.labels import LABEL_SETS, label_for
from serd.train.augment import AugmentSettings, augment_wave, spec_augment, warp_frequency
from serd.train.corpora import Clip, DataSpec, find_clips, load_audio
from serd.train.phone import ambient_pool

_LOGGER = logging.getLogger(__name__)

SPEECH_FRAME_S = 0.02
SPEECH_BELOW_PEAK_DB = 35.0
"""Frames within this many dB of the clip's loudest frame count as speech when cropping."""


@dataclass
class Corpus:
    """The clips of one or more corpora, decoded, with their class and the classes their corpus covers."""

    clips: list[Clip]
    audio: list[np.ndarray]
    labels: tuple[str, ...]
    y: np.ndarray  # class index per clip
    speech: np.ndarray  # (n, 2) first and last speech sample per clip
    covers: np.ndarray  # (n, n_classes) bool: the classes the clip's corpus has at all
    _ambient: dict = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, root: Path | str, label_set: str, sample_rate: int, actors: set[int] | None = None) -> "Corpus":
        """A RAVDESS-layout folder (the single-corpus protocols: cv, seed, final)."""
        return cls.from_specs([DataSpec("ravdess", "ravdess", Path(root))], label_set, sample_rate, actors)

    @classmethod
    def from_specs(cls, specs: list[DataSpec], label_set: str, sample_rate: int,
                   ravdess_actors: set[int] | None = None) -> "Corpus":
        if label_set not in LABEL_SETS:
            raise ValueError(f"unknown label set {label_set!r}; expected one of {sorted(LABEL_SETS)}")
        labels = LABEL_SETS[label_set]
        clips: list[Clip] = []
        for spec in specs:
            found = find_clips(spec, ravdess_actors)  # never empty: a reader raises instead
            if found[0].corpus in {c.corpus for c in clips}:
                raise ValueError(f"--data {spec.kind}={spec.path}: corpus {found[0].corpus!r} given twice")
            clips.extend(found)
        names = [label_for(label_set, c.emotion, c.gender) for c in clips]
        left_out = Counter(c.emotion for c, name in zip(clips, names) if name is None)
        if left_out:
            _LOGGER.info("label set %s leaves out %s", label_set, ", ".join(f"{n} {e} clips" for e, n in left_out.items()))
            clips = [c for c, name in zip(clips, names) if name is not None]
            names = [name for name in names if name is not None]
        if not clips:
            raise ValueError(f"no clips left: label set {label_set} has none of the corpora's emotions")
        y = np.array([labels.index(name) for name in names])
        _LOGGER.info("decoding %d clips (%s)", len(clips), ", ".join(f"{s.name}: {s.path}" for s in specs))
        audio = load_audio(clips, sample_rate)
        speech = np.array([speech_bounds(a, sample_rate) for a in audio])
        # A class a corpus never has (nEMO: disgust) is masked out of its clips' loss:
        # "not disgust" is not what those clips say, only that the corpus did not record it.
        covered: dict[str, set[int]] = {}
        for clip, k in zip(clips, y.tolist()):
            covered.setdefault(clip.corpus, set()).add(k)
        covers = np.array([[k in covered[c.corpus] for k in range(len(labels))] for c in clips], dtype=bool)
        return cls(clips, audio, labels, y, speech, covers)

    def ambient(self, indices: list[int] | tuple[int, ...], sample_rate: int) -> list[np.ndarray]:
        """The background stretches of these clips (`serd.train.phone.ambient_pool`), found once per clip set."""
        key = (tuple(indices), sample_rate)
        cache = self._ambient
        if key not in cache:
            cache[key] = ambient_pool([self.audio[i] for i in indices], sample_rate)
            _LOGGER.info("ambient pool: %d stretches, %.0f s, from %d clips",
                         len(cache[key]), sum(p.shape[0] for p in cache[key]) / sample_rate, len(indices))
        return cache[key]

    @property
    def corpora(self) -> list[str]:
        return list(dict.fromkeys(c.corpus for c in self.clips))

    def classes_of(self, corpus: str) -> list[str]:
        """Labels the corpus has clips of (its metrics average over these only)."""
        rows = [i for i, c in enumerate(self.clips) if c.corpus == corpus]
        return [label for k, label in enumerate(self.labels) if self.covers[rows[0], k]] if rows else []

    def class_weights(self, indices: list[int] | tuple[int, ...]) -> np.ndarray:
        """Per-clip weights (mean 1): every corpus weighs the same, and within it every class it has.

        Inverse frequency so that UAR, not accuracy, is optimised; per corpus so that
        nEMO's 3,812 clips do not drown RAVDESS's 1,440 (nor a user's 50 recordings).
        """
        indices = list(indices)
        keys = [(self.clips[i].corpus, int(self.y[i])) for i in indices]
        clips_of = Counter(keys)  # clips per (corpus, class)
        classes_of = Counter(corpus for corpus, _ in clips_of)  # classes per corpus
        weights = np.array([1.0 / (len(classes_of) * classes_of[key[0]] * clips_of[key]) for key in keys])
        return weights * (len(indices) / weights.sum()) if len(indices) else weights


def speech_bounds(audio: np.ndarray, sample_rate: int) -> tuple[int, int]:
    """First and last sample of the frames within SPEECH_BELOW_PEAK_DB of the loudest."""
    frame = int(SPEECH_FRAME_S * sample_rate)
    n = audio.shape[0] // frame
    if n == 0:
        return 0, audio.shape[0]
    energy = 10 * np.log10(np.mean(audio[: n * frame].reshape(n, frame) ** 2, axis=1) + 1e-12)
    loud = np.flatnonzero(energy >= energy.max() - SPEECH_BELOW_PEAK_DB)
    return int(loud[0] * frame), int((loud[-1] + 1) * frame)


def crop(audio: np.ndarray, bounds: tuple[int, int], window_samples: int, rng: np.random.Generator | None) -> np.ndarray:
    """A window around speech: centred on a random speech sample (or the middle without rng)."""
    first, last = bounds
    centre = (first + last) // 2 if rng is None else int(rng.integers(first, max(first + 1, last)))
    if audio.shape[0] <= window_samples:
        out = np.zeros(window_samples, dtype=np.float32)
        out[: audio.shape[0]] = audio
        return out
    start = int(np.clip(centre - window_samples // 2, 0, audio.shape[0] - window_samples))
    return audio[start : start + window_samples]


def epoch_arrays(
    corpus: Corpus,
    indices: list[int] | tuple[int, ...],
    params: FeatureParams,
    augment: AugmentSettings,
    rng: np.random.Generator,
    crops_per_clip: int = 2,
    logmel: LogMel | None = None,
    class_mask: bool = True,
    corpus_column: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, targets and sample weights for one epoch of training windows.

    Targets are (class index, covered-class mask...) rows for `masked_cross_entropy`; without
    `class_mask` every class counts for every clip (a class the corpus lacks is a wrong answer).
    `corpus_column` appends the clip's corpus (its index in `corpus.corpora`) for a corpus adversary.
    """
    logmel = logmel or LogMel(params)
    weight_of = dict(zip(indices, corpus.class_weights(indices)))
    pool = [corpus.audio[i] for i in indices] if augment.babble else None
    places = corpus.ambient(indices, params.sample_rate) if augment.ambient else None
    order = [i for i in indices for _ in range(crops_per_clip)]
    x = np.empty((len(order), *params.shape, 1), dtype=np.float32)
    for row, i in enumerate(order):
        window = crop(corpus.audio[i], tuple(corpus.speech[i]), params.window_samples, rng if augment.shift else None)
        window = augment_wave(window, augment, rng, pool, params.sample_rate, places)
        features = logmel(window)
        if augment.warp and rng.random() < augment.warp_p:
            features = warp_frequency(features, float(rng.uniform(*augment.warp_range)), params)
        if augment.specaugment and rng.random() < 0.5:
            features = spec_augment(features, rng)
        x[row, :, :, 0] = features
    covers = corpus.covers[order] if class_mask else np.ones_like(corpus.covers[order])
    columns = [corpus.y[order, None], covers]
    if corpus_column:
        index_of = {name: k for k, name in enumerate(corpus.corpora)}
        columns.append(np.array([[index_of[corpus.clips[i].corpus]] for i in order]))
    targets = np.concatenate(columns, axis=1).astype(np.float32)
    return x, targets, np.array([weight_of[i] for i in order], dtype=np.float32)
