"""A labelled corpus in memory, and the windows each training epoch draws from it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serd.features import FeatureParams, LogMel
from serd.labels import LABEL_SETS, label_for
from serd.train.augment import AugmentSettings, augment_wave, spec_augment
from serd.train.ravdess import ClipInfo, find_clips, load_audio

_LOGGER = logging.getLogger(__name__)

SPEECH_FRAME_S = 0.02
SPEECH_BELOW_PEAK_DB = 35.0
"""Frames within this many dB of the clip's loudest frame count as speech when cropping."""


@dataclass
class Corpus:
    clips: list[ClipInfo]
    audio: list[np.ndarray]
    labels: tuple[str, ...]
    y: np.ndarray  # class index per clip
    speech: np.ndarray  # (n, 2) first and last speech sample per clip

    @classmethod
    def load(cls, root: Path | str, label_set: str, sample_rate: int, actors: set[int] | None = None) -> "Corpus":
        if label_set not in LABEL_SETS:
            raise ValueError(f"unknown label set {label_set!r}; expected one of {sorted(LABEL_SETS)}")
        clips = find_clips(root, actors)
        labels = LABEL_SETS[label_set]
        _LOGGER.info("decoding %d clips from %s", len(clips), root)
        audio = load_audio(clips, sample_rate)
        y = np.array([labels.index(label_for(label_set, c.emotion, c.gender)) for c in clips])
        speech = np.array([speech_bounds(a, sample_rate) for a in audio])
        return cls(clips, audio, labels, y, speech)

    def class_weights(self, indices: list[int] | tuple[int, ...]) -> np.ndarray:
        """Inverse-frequency weights (mean 1) so that UAR, not accuracy, is optimised."""
        counts = np.bincount(self.y[list(indices)], minlength=len(self.labels)).astype(float)
        weights = np.where(counts > 0, counts.sum() / (len(self.labels) * np.maximum(counts, 1)), 0.0)
        return weights


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
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, labels and sample weights for one epoch of training windows."""
    logmel = logmel or LogMel(params)
    weights = corpus.class_weights(indices)
    pool = [corpus.audio[i] for i in indices] if augment.babble else None
    order = [i for i in indices for _ in range(crops_per_clip)]
    x = np.empty((len(order), *params.shape, 1), dtype=np.float32)
    for row, i in enumerate(order):
        window = crop(corpus.audio[i], tuple(corpus.speech[i]), params.window_samples, rng if augment.shift else None)
        window = augment_wave(window, augment, rng, pool, params.sample_rate)
        features = logmel(window)
        if augment.specaugment and rng.random() < 0.5:
            features = spec_augment(features, rng)
        x[row, :, :, 0] = features
    y = corpus.y[order]
    return x, y, weights[y].astype(np.float32)
